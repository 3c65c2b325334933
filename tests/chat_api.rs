//! The chats API over HTTP, on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{Backend, TestServer};

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

fn assert_error(body: &Value, code: &str, mentions: &str) {
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(mentions), "`{message}` should mention `{mentions}`");
}

async fn every_api_call_needs_a_valid_token(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, body) = json_of(server.http.get(server.url("/api/v1/chats")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(&body, "unauthorized", "Authorization: Bearer");
    let (status, body) =
        json_of(server.http.get(server.url("/api/v1/chats")).bearer_auth("th_wrong").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(&body, "unauthorized", "not valid");
    server.finish().await;
}
on_both_backends!(every_api_call_needs_a_valid_token);

async fn a_created_chat_is_pending_with_its_first_message(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.user("alice", false).await;
    let create = json!({"content": [{"type": "text", "text": "Please fix the failing build in CI today"}]});
    let (status, chat) =
        json_of(server.http.post(server.url("/api/v1/chats")).bearer_auth(&alice).json(&create).send().await.unwrap())
            .await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    assert_eq!(chat["status"], "pending");
    assert_eq!(chat["title"], "Please fix the failing build in");
    assert_eq!(chat["kind"], "root");
    assert_eq!(chat["model"], "test-model");
    assert_eq!(chat["root_chat_id"], chat["id"]);
    let id = chat["id"].as_str().unwrap();

    let (status, got) =
        json_of(server.http.get(server.url(&format!("/api/v1/chats/{id}"))).bearer_auth(&alice).send().await.unwrap())
            .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["id"], id);
    assert!(got.get("messages").is_none(), "get returns metadata only");

    let (_, messages) = json_of(
        server.http.get(server.url(&format!("/api/v1/chats/{id}/messages"))).bearer_auth(&alice).send().await.unwrap(),
    )
    .await;
    assert_eq!(messages["messages"][0]["role"], "user");
    assert_eq!(messages["messages"][0]["content"], create["content"]);
    assert_eq!(messages["queued_messages"], json!([]));

    let (_, list) =
        json_of(server.http.get(server.url("/api/v1/chats")).bearer_auth(&alice).send().await.unwrap()).await;
    assert_eq!(list["chats"].as_array().unwrap().len(), 1);
    let (_, archived) =
        json_of(server.http.get(server.url("/api/v1/chats?archived=true")).bearer_auth(&alice).send().await.unwrap())
            .await;
    assert_eq!(archived["chats"], json!([]));
    server.finish().await;
}
on_both_backends!(a_created_chat_is_pending_with_its_first_message);

async fn other_people_s_chats_are_not_found(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.user("alice", false).await;
    let bob = server.user("bob", true).await;
    let create = json!({"content": [{"type": "text", "text": "private"}]});
    let (_, chat) =
        json_of(server.http.post(server.url("/api/v1/chats")).bearer_auth(&alice).json(&create).send().await.unwrap())
            .await;
    let id = chat["id"].as_str().unwrap();
    for path in [format!("/api/v1/chats/{id}"), format!("/api/v1/chats/{id}/messages")] {
        let (status, body) = json_of(server.http.get(server.url(&path)).bearer_auth(&bob).send().await.unwrap()).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_error(&body, "not_found", id);
    }
    let (_, list) = json_of(server.http.get(server.url("/api/v1/chats")).bearer_auth(&bob).send().await.unwrap()).await;
    assert_eq!(list["chats"], json!([]));
    server.finish().await;
}
on_both_backends!(other_people_s_chats_are_not_found);

async fn bad_requests_get_clear_errors_and_change_nothing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.user("alice", false).await;
    let post = |body: String| {
        server
            .http
            .post(server.url("/api/v1/chats"))
            .bearer_auth(&alice)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases: Vec<(String, StatusCode, &str, &str)> = vec![
        ("{not json".into(), StatusCode::BAD_REQUEST, "invalid_json", "parse"),
        (
            r#"{"content": [{"type": "text", "text": "hi"}], "colour": "red"}"#.into(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_json",
            "colour",
        ),
        (r#"{"content": []}"#.into(), StatusCode::BAD_REQUEST, "bad_request", "empty"),
        (
            r#"{"content": [{"type": "tool-call", "tool_call_id": "1", "tool_name": "x", "args": {}}]}"#.into(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "only the model",
        ),
        (
            json!({"content": [{"type": "text", "text": "x".repeat(70 * 1024)}]}).to_string(),
            StatusCode::BAD_REQUEST,
            "bad_request",
            "over the limit",
        ),
    ];
    for (body, status, code, mentions) in cases {
        let (got, error) = json_of(post(body.clone()).await.unwrap()).await;
        assert_eq!(got, status, "{body:.80}: {error}");
        assert_error(&error, code, mentions);
    }
    let invalid_utf8 = server
        .http
        .post(server.url("/api/v1/chats"))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body(vec![b'{', 0xff, 0xfe, b'}'])
        .send()
        .await
        .unwrap();
    let (status, error) = json_of(invalid_utf8).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(error["error"]["code"], "invalid_json");
    let no_type = server.http.post(server.url("/api/v1/chats")).bearer_auth(&alice).body("{}").send().await.unwrap();
    let (status, error) = json_of(no_type).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_error(&error, "unsupported_media_type", "Content-Type: application/json");
    let (status, error) =
        json_of(server.http.get(server.url("/api/v1/chats?limit=0")).bearer_auth(&alice).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_error(&error, "bad_request", "limit");
    let (_, list) =
        json_of(server.http.get(server.url("/api/v1/chats")).bearer_auth(&alice).send().await.unwrap()).await;
    assert_eq!(list["chats"], json!([]), "no bad request created a chat");
    server.finish().await;
}
on_both_backends!(bad_requests_get_clear_errors_and_change_nothing);

async fn health_and_readiness_probes_answer(backend: Backend) {
    let server = TestServer::start(backend).await;
    assert_eq!(server.http.get(server.url("/healthz")).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(server.http.get(server.url("/readyz")).send().await.unwrap().status(), StatusCode::OK);
    let (status, body) = json_of(server.http.get(server.url("/api/v1/nothing")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_error(&body, "not_found", "/api/v1");
    server.finish().await;
}
on_both_backends!(health_and_readiness_probes_answer);

fn collect_refs(value: &Value, refs: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                refs.push(r.clone());
            }
            map.values().for_each(|v| collect_refs(v, refs));
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, refs)),
        _ => {}
    }
}

async fn the_openapi_document_describes_every_endpoint_and_resolves(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (status, doc) = json_of(server.http.get(server.url("/api/v1/openapi.json")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.0.3");
    for path in [
        "/chats",
        "/chats/watch",
        "/chats/{id}",
        "/chats/{id}/messages",
        "/chats/{id}/messages/{message_id}",
        "/chats/{id}/queue/{queued_id}",
        "/chats/{id}/queue/{queued_id}/promote",
        "/chats/{id}/interrupt",
        "/chats/{id}/archive",
        "/chats/{id}/unarchive",
        "/chats/{id}/stream",
        "/providers",
        "/providers/{id}",
        "/models",
        "/models/{id}",
        "/usage",
        "/settings/system-prompt",
        "/users/me/prompt",
        "/policy",
        "/policy/versions",
        "/policy/versions/{version}",
        "/policy/versions/{version}/restore",
        "/policy/explain",
        "/policy/audit",
        "/templates",
        "/templates/reload",
        "/workspaces",
        "/workspaces/{id}",
        "/workspaces/{id}/start",
        "/workspaces/{id}/stop",
        "/chats/{id}/git/watch",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} is documented");
    }
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("unexpected ref {r}"));
        assert!(doc["components"]["schemas"].get(name).is_some(), "{r} resolves");
    }
    let part = &doc["components"]["schemas"]["MessagePart"];
    assert!(part.to_string().contains("file-reference"), "{part}");
    server.finish().await;
}
on_both_backends!(the_openapi_document_describes_every_endpoint_and_resolves);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejection_is_in_the_one_json_error_shape_and_changes_nothing() {
    let server = TestServer::start(Backend::Sqlite).await;
    let alice = server.user("alice", false).await;
    let admin = server.user("root", true).await;
    let (_, chat) = json_of(
        server
            .http
            .post(server.url("/api/v1/chats"))
            .bearer_auth(&alice)
            .json(&json!({"content": [{"type": "text", "text": "hi"}]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let chat = chat["id"].as_str().unwrap().to_string();
    let (_, provider) = json_of(
        server
            .http
            .post(server.url("/api/v1/providers"))
            .bearer_auth(&admin)
            .json(&json!({"name": "p", "kind": "openai", "base_url": "http://127.0.0.1:9/v1"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let provider = provider["id"].as_str().unwrap_or_else(|| panic!("{provider}")).to_string();
    let http = &server.http;
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            "a path parameter that does not parse",
            http.patch(server.url(&format!("/api/v1/chats/{chat}/messages/abc")))
                .bearer_auth(&alice)
                .json(&json!({"content": [{"type": "text", "text": "x"}]})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "a method the endpoint lacks",
            http.put(server.url("/api/v1/chats")).bearer_auth(&alice),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "a WebSocket endpoint without an upgrade",
            http.get(server.url(&format!("/api/v1/chats/{chat}/git/watch"))).bearer_auth(&alice),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "an array for an object",
            http.patch(server.url(&format!("/api/v1/providers/{provider}")))
                .bearer_auth(&admin)
                .json(&json!([null, null])),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_json",
        ),
        (
            "a string for an object",
            http.post(server.url("/api/v1/chats")).bearer_auth(&alice).json(&json!("hello")),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_json",
        ),
        (
            "a depth below zero",
            http.post(server.url("/api/v1/policy/explain"))
                .bearer_auth(&admin)
                .json(&json!({"kind": "subagent", "depth": -1})),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "a query that does not fit",
            http.get(server.url("/api/v1/policy/audit?limit=many")).bearer_auth(&admin),
            StatusCode::BAD_REQUEST,
            "bad_request",
        ),
        (
            "an unknown endpoint",
            http.get(server.url("/api/v1/nothing-here")).bearer_auth(&alice),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (what, request, status, code) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status, "{what}");
        let content_type =
            response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        assert!(content_type.starts_with("application/json"), "{what}: answered as `{content_type}`");
        let allow = response.headers().get("allow").is_some();
        let body: Value = response.json().await.unwrap_or_else(|e| panic!("{what}: not JSON: {e}"));
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.len() > 10), "{what}: says what to do: {body}");
        if status == StatusCode::METHOD_NOT_ALLOWED {
            assert!(allow, "{what}: the `Allow` header is kept");
        }
    }
    let (_, providers) =
        json_of(http.get(server.url("/api/v1/providers")).bearer_auth(&admin).send().await.unwrap()).await;
    let listed =
        providers["providers"].as_array().unwrap().iter().find(|p| p["id"] == provider.as_str()).cloned().unwrap();
    assert_eq!(listed["base_url"], "http://127.0.0.1:9/v1", "the refused array changed nothing: {listed}");
    server.finish().await;
}
