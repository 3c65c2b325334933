//! Outbound HTTP from plugins (`wasi:http/outgoing-handler`, capability `http`): every request's
//! origin checked by the policy, names resolved by the host and private addresses refused
//! unless granted by `ip:port`, redirects re-checked hop by hop, `Host` not the guest's to set,
//! and time and size limits per plugin; every policy refusal in the audit log. The plugin is
//! the `fetcher` fixture, called through a chat; the destination is a local test server.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect};
use axum::routing::get;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{TestServer, fake_llm};
use toolhost::domain::parts::MessagePart;
use toolhost::plugins::PluginLimitsPatch;

/// Every `authorization` header the destination received.
static AUTHORIZATIONS: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// The destination: `/hello`, `/headers` (echoes the request's headers), `/redirect` (to
/// `to`), `/slow` (answers after 5 s), `/huge` (3 MiB), `/huge-stream` (3 MiB of unannounced
/// length), `/trickle` (a byte every half second for 10 s).
async fn destination() -> (SocketAddr, SocketAddr) {
    async fn headers(headers: HeaderMap) -> axum::Json<HashMap<String, String>> {
        let map: HashMap<String, String> =
            headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string())).collect();
        if let Some(authorization) = map.get("authorization") {
            AUTHORIZATIONS.lock().unwrap().push(authorization.clone());
        }
        axum::Json(map)
    }
    async fn redirect(axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>) -> impl IntoResponse {
        Redirect::temporary(&q["to"])
    }
    async fn slow() -> &'static str {
        tokio::time::sleep(Duration::from_secs(5)).await;
        "late"
    }
    async fn huge() -> Vec<u8> {
        vec![b'x'; 3 * 1024 * 1024]
    }
    // No length announced: stopped while it is read.
    async fn huge_stream() -> axum::body::Body {
        let chunks = (0..48).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 64 * 1024]));
        axum::body::Body::from_stream(futures::stream::iter(chunks))
    }
    // Headers at once, then a byte every half second.
    async fn trickle() -> axum::body::Body {
        let chunks = futures::stream::unfold(0, |n| async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            (n < 20).then_some((Ok::<_, std::io::Error>(vec![b'.']), n + 1))
        });
        axum::body::Body::from_stream(chunks)
    }
    let app =
        axum::Router::new()
            .route("/hello", get(|| async { "hello from the destination" }))
            .route(
                "/echo",
                get(|axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>| async move {
                    q["text"].clone()
                }),
            )
            .route("/headers", get(headers))
            .route("/redirect", get(redirect))
            .route("/slow", get(slow))
            .route("/huge", get(huge))
            .route("/huge-stream", get(huge_stream))
            .route("/trickle", get(trickle));
    let mut addresses = Vec::new();
    for _ in 0..2 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        addresses.push(listener.local_addr().unwrap());
        let app = app.clone();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    }
    (addresses[0], addresses[1])
}

/// The default policy, and: `fetcher` may log; may reach `http://localhost:GRANTED`,
/// `http://localhost:UNGRANTED`, 10.255.255.1 and the metadata address by origin; and may
/// connect to the private address `127.0.0.1:GRANTED` only.
fn policy(granted: u16, ungranted: u16) -> String {
    format!(
        r#"{default}
@id("fetcher-logs-and-asks-for-secrets")
permit (principal, action == Action::"use_capability", resource)
when {{ context.plugin.name == "fetcher" && ["log", "secrets"].contains(resource.name) }};

@id("fetcher-reaches-its-origins")
permit (principal, action == Action::"use_capability", resource == Capability::"http")
when {{
    context.plugin.name == "fetcher" && context has scope &&
    ["http://localhost:{granted}", "http://localhost:{ungranted}", "http://10.255.255.1:80",
     "http://169.254.169.254:80"].contains(context.scope)
}};

@id("fetcher-reaches-the-test-server")
permit (principal, action == Action::"use_capability", resource == Capability::"http-private-address")
when {{ context.plugin.name == "fetcher" && context has scope && context.scope == "127.0.0.1:{granted}" }};
"#,
        default = toolhost::policy::DEFAULT_POLICY
    )
}

const SECRET: &str = "s3cr3t-value-123";

async fn put(server: &TestServer, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    let response = server.http.put(server.url(path)).bearer_auth(token).json(&body).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Each tool result of the chat by its call id, as JSON.
fn results(messages: &[toolhost::store::Message]) -> HashMap<String, (Value, bool)> {
    messages
        .iter()
        .flat_map(|m| m.content.iter())
        .filter_map(|part| match part {
            MessagePart::ToolResult { tool_call_id, result, is_error, .. } => {
                let value = match result {
                    Value::String(text) => serde_json::from_str(text).unwrap_or(Value::String(text.clone())),
                    other => other.clone(),
                };
                Some((tool_call_id.clone(), (value, *is_error)))
            }
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_reach_only_what_the_policy_grants_within_their_limits() {
    let (granted, ungranted) = destination().await;
    let limits = PluginLimitsPatch {
        http_timeout_ms: Some(1_000),
        http_max_response_kib: Some(1024),
        ..PluginLimitsPatch::default()
    };
    let server = TestServer::builder().fixtures(&["fetcher"]).plugin_limits("fetcher", limits).start().await;
    let admin = server.user("root", true).await;
    let (status, saved) =
        put(&server, &admin, "/api/v1/policy", json!({"policy": policy(granted.port(), ungranted.port())})).await;
    assert_eq!(status, StatusCode::OK, "{saved}");
    assert_eq!(saved["warnings"], json!([]), "capability names are not taken for tool names: {saved}");

    let (g, u) = (granted.port(), ungranted.port());

    // Secrets: stored by admins, bound to plugins and hosts, never returned.
    // Over plain HTTP only because the binding says `http://` (the destination has no TLS).
    let secret = json!({"value": SECRET, "plugins": ["fetcher"], "hosts": [format!("http://localhost:{g}")]});
    let (status, stored) = put(&server, &admin, "/api/v1/secrets/weather-key", secret.clone()).await;
    assert_eq!(status, StatusCode::OK, "{stored}");
    assert_eq!(stored["plugins"], json!(["fetcher"]));
    let elsewhere = json!({"value": "other-value-456", "plugins": ["someone-else"], "hosts": ["localhost"]});
    assert_eq!(put(&server, &admin, "/api/v1/secrets/other-key", elsewhere).await.0, StatusCode::OK);
    let bad = json!({"value": "v", "plugins": ["fetcher"], "hosts": ["https://api.example.com/v1"]});
    let (status, refused) = put(&server, &admin, "/api/v1/secrets/bad", bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("is not a host"), "{refused}");
    let alice = server.user("alice", false).await;
    assert_eq!(put(&server, &alice, "/api/v1/secrets/weather-key", secret).await.0, StatusCode::FORBIDDEN);
    let (status, listed) = server.get(&admin, "/api/v1/secrets").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(listed["secrets"].as_array().unwrap().len(), 2, "{listed}");
    assert!(!listed.to_string().contains(SECRET) && listed["secrets"][0].get("value").is_none(), "{listed}");
    let fetch = |url: String, extra: Value| {
        let mut args = json!({"url": url});
        args.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        args.to_string()
    };
    let calls = [
        ("allowed", fetch(format!("http://localhost:{g}/hello"), json!({}))),
        ("host-not-granted", fetch(format!("http://127.0.0.1:{g}/hello"), json!({}))),
        ("address-not-granted", fetch(format!("http://localhost:{u}/hello"), json!({}))),
        ("private", fetch("http://10.255.255.1/".into(), json!({}))),
        ("metadata", fetch("http://169.254.169.254/latest/meta-data/".into(), json!({}))),
        (
            "redirect-to-refused",
            fetch(format!("http://localhost:{g}/redirect?to=http://127.0.0.1:{g}/hello"), json!({"max_redirects": 3})),
        ),
        ("redirect-allowed", fetch(format!("http://localhost:{g}/redirect?to=/hello"), json!({"max_redirects": 0}))),
        ("slow", fetch(format!("http://localhost:{g}/slow"), json!({}))),
        ("huge", fetch(format!("http://localhost:{g}/huge"), json!({}))),
        ("huge-stream", fetch(format!("http://localhost:{g}/huge-stream"), json!({}))),
        ("trickle", fetch(format!("http://localhost:{g}/trickle"), json!({}))),
        ("headers", fetch(format!("http://localhost:{g}/headers"), json!({}))),
        ("host-header", fetch(format!("http://localhost:{g}/headers"), json!({"headers": [["host", "evil.example"]]}))),
        (
            "secret",
            fetch(format!("http://localhost:{g}/headers"), json!({"secret_header": ["authorization", "weather-key"]})),
        ),
        (
            "secret-elsewhere",
            fetch(format!("http://localhost:{u}/headers"), json!({"secret_header": ["authorization", "weather-key"]})),
        ),
        ("echo-foreign-secret", fetch(format!("http://localhost:{g}/echo?text=other-value-456"), json!({}))),
        ("userinfo", fetch(format!("http://evil.example:80@localhost:{g}/hello"), json!({}))),
        (
            "secret-of-another-plugin",
            fetch(format!("http://localhost:{g}/headers"), json!({"secret_header": ["authorization", "other-key"]})),
        ),
    ];
    let script: Vec<(&str, &str, &str)> = calls.iter().map(|(id, args)| (*id, "fetch", args.as_str())).collect();
    server.llm.script([fake_llm::tool_calls(&script), fake_llm::text("done")]);
    let (status, chat) =
        server.post(&alice, "/api/v1/chats", json!({"content": [{"type": "text", "text": "fetch them"}]})).await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    let messages = server.finished(chat["id"].as_str().unwrap()).await;
    let results = results(&messages);
    let result = |id: &str| results.get(id).unwrap_or_else(|| panic!("no result for {id}: {results:?}")).clone();

    let (allowed, is_error) = result("allowed");
    assert!(!is_error, "{allowed}");
    assert_eq!((allowed["status"].as_u64(), allowed["body"].as_str()), (Some(200), Some("hello from the destination")));

    for (id, expected) in [
        ("host-not-granted", "denied"),
        ("address-not-granted", "private_address"),
        ("private", "private_address"),
        ("metadata", "private_address"),
        ("redirect-to-refused", "denied"),
        ("slow", "timeout"),
        ("huge", "too_large"),
        ("huge-stream", "too_large"),
        ("trickle", "timeout"),
    ] {
        let (value, is_error) = result(id);
        assert!(is_error, "{id}: {value}");
        assert_eq!(value["error"], expected, "{id}: {value}");
    }
    let (redirected, _) = result("redirect-to-refused");
    assert_eq!(redirected["redirects"], json!([format!("http://127.0.0.1:{g}/hello")]), "the first hop was followed");
    let (redirect, is_error) = result("redirect-allowed");
    assert!(!is_error, "{redirect}");
    assert_eq!(redirect["status"], 307, "the host never follows a redirect itself: {redirect}");

    let (headers, is_error) = result("headers");
    assert!(!is_error, "{headers}");
    let echoed: HashMap<String, String> = serde_json::from_str(headers["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["host"], format!("localhost:{g}"), "Host is the URL's authority");
    let (spoofed, is_error) = result("host-header");
    assert!(is_error, "a guest may not set Host: {spoofed}");
    assert!(spoofed["message"].as_str().unwrap().contains("host"), "{spoofed}");

    // The secret reached the host it is bound to, and only it; the plugin never saw it.
    assert_eq!(*AUTHORIZATIONS.lock().unwrap(), vec![format!("Bearer {SECRET}")], "sent once, to its host");
    let (echoed, is_error) = result("secret");
    assert!(!is_error, "{echoed}");
    assert!(!echoed.to_string().contains(SECRET), "the echo is masked: {echoed}");
    assert!(echoed["body"].as_str().unwrap().contains("Bearer toolhost-secret-weather-key-"), "{echoed}");
    let (elsewhere, is_error) = result("secret-elsewhere");
    assert!(is_error && elsewhere["error"] == "denied", "a secret goes only to its hosts: {elsewhere}");
    let (echoed, is_error) = result("echo-foreign-secret");
    assert!(!is_error, "{echoed}");
    assert_eq!(
        echoed["body"], "toolhost-secret-other-key-masked",
        "any secret's value is masked, whoever it is bound to"
    );
    let (userinfo, is_error) = result("userinfo");
    assert!(
        is_error && ["failed", "invalid_url"].contains(&userinfo["error"].as_str().unwrap()),
        "userinfo is refused: {userinfo}"
    );
    let (foreign, is_error) = result("secret-of-another-plugin");
    assert!(is_error, "{foreign}");
    assert!(foreign.to_string().contains("no secret named `other-key` is bound to plugin `fetcher`"), "{foreign}");
    assert!(!messages.iter().any(|m| serde_json::to_string(m).unwrap().contains(SECRET)), "the chat never holds it");

    // Every policy refusal is in the audit log, with what was asked.
    let (status, page) = server.get(&admin, "/api/v1/policy/audit?limit=100").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let denials = page["denials"].as_array().unwrap();
    let denied = |capability: &str, scope: &str| {
        denials.iter().any(|d| d["capability"] == capability && d["scope"] == scope && d["plugin"] == "fetcher")
    };
    assert!(denied("http", &format!("http://127.0.0.1:{g}")), "{page}");
    assert!(denied("http-private-address", &format!("127.0.0.1:{u}")), "{page}");
    assert!(denied("http-private-address", "10.255.255.1:80"), "{page}");
    assert!(denied("http-private-address", "169.254.169.254:80"), "{page}");
    assert!(denied("secrets", &format!("weather-key to http://localhost:{u}")), "{page}");
    assert!(denied("http", &format!("http://localhost:{g}")), "limits are recorded too: {page}");

    // Explain shows what a plugin that imports `http` may use, the per-use capability included.
    let (status, explained) = server.post(&admin, "/api/v1/policy/explain", json!({"kind": "root"})).await;
    assert_eq!(status, StatusCode::OK, "{explained}");
    let capabilities: Vec<&str> = explained["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["plugin"] == "fetcher")
        .map(|c| c["capability"].as_str().unwrap())
        .collect();
    assert!(capabilities.contains(&"http") && capabilities.contains(&"http-private-address"), "{explained}");
    let (status, _) = server.get(&admin, "/healthz").await;
    assert_eq!(status, StatusCode::OK, "the server lives on");
    server.finish().await;
}
