//! What operators see without reading logs: `/metrics` in Prometheus's format after a scripted
//! session (turns, model calls with a retry, tokens, tool calls, policy decisions, instances),
//! where it is served (its own address without a token; the API's port to admins only), logs
//! as JSON lines, and traces exported over OTLP to a collector (a receiver of the test's own).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

#[path = "support/client.rs"]
mod client;
#[path = "support/process.rs"]
mod process;
mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::fake_llm::{self, FakeLlm, Script};
use support::{Backend, TestServer};
use toolhost::plugins::PluginLimitsPatch;

/// One sample of a scrape: `name{labels} value`.
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap();
                    (key.to_string(), value.trim_matches('"').to_string())
                })
                .collect();
            Sample { name: name.to_string(), labels, value: value.parse().unwrap() }
        })
        .collect()
}

/// The sum of `name`'s samples whose labels include `wanted`.
fn total(text: &str, name: &str, wanted: &[(&str, &str)]) -> f64 {
    samples(text)
        .into_iter()
        .filter(|s| s.name == name && wanted.iter().all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v)))
        .map(|s| s.value)
        .sum()
}

async fn scrape(server: &TestServer, token: Option<&str>) -> (StatusCode, String) {
    let mut request = server.http.get(server.url("/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.text().await.unwrap())
}

/// A model call that fails with a server error (retried by the turn).
fn overloaded() -> Script {
    Script::Status(503, json!({"error": {"message": "try again", "type": "server_error"}}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_session_is_counted_in_the_metrics() {
    // A short call limit, so that `spin` is stopped soon.
    let limits = PluginLimitsPatch { timeout_ms: Some(300), ..PluginLimitsPatch::default() };
    let server = TestServer::builder().fixtures(&["hostile"]).plugin_limits("hostile", limits).start().await;
    let admin = server.user("root", true).await;
    let alice = server.user("alice", false).await;
    let policy = format!(
        "{}\n@id(\"no-huge\")\nforbid (principal, action == Action::\"call_tool\", resource) when {{ resource.name == \"huge\" }};",
        toolhost::policy::DEFAULT_POLICY
    );
    let saved = server.http.put(server.url("/api/v1/policy")).bearer_auth(&admin).json(&json!({"policy": policy}));
    let saved = saved.send().await.unwrap();
    assert_eq!(saved.status(), StatusCode::OK, "{}", saved.text().await.unwrap());

    server.llm.script([
        overloaded(),
        fake_llm::tool_calls(&[("c1", "echo", r#"{"path": "ping"}"#), ("c2", "huge", r#"{"bytes": 3}"#)]),
        fake_llm::text("done"),
    ]);
    let (status, chat) =
        server.post(&alice, "/api/v1/chats", json!({"content": [{"type": "text", "text": "go"}]})).await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    server.wait_for_status(&alice, chat["id"].as_str().unwrap(), "waiting").await;

    let (status, _) = scrape(&server, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the API's port serves metrics to admins' tokens only");
    let (status, _) = scrape(&server, Some(&alice)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, text) = scrape(&server, Some(&admin)).await;
    assert_eq!(status, StatusCode::OK, "{text}");

    assert_eq!(total(&text, "toolhost_turns_total", &[("outcome", "completed")]), 1.0, "{text}");
    let model = [("gen_ai_request_model", "test-model"), ("gen_ai_provider_name", "fake")];
    let calls = "gen_ai_client_operation_duration_seconds_count";
    assert_eq!(total(&text, calls, &model), 3.0, "the failed attempt and two answers: {text}");
    assert_eq!(total(&text, calls, &[("error_type", "server")]), 1.0, "{text}");
    assert_eq!(total(&text, "toolhost_model_retries_total", &[("error_type", "server")]), 1.0, "{text}");
    assert_eq!(total(&text, "gen_ai_client_operation_time_to_first_chunk_seconds_count", &model), 2.0, "{text}");
    // The fake reports 30 prompt and 10 completion tokens for its tool calls, 20 and 5 for text.
    let tokens = "gen_ai_client_token_usage_sum";
    assert_eq!(total(&text, tokens, &[("gen_ai_token_type", "input")]), 50.0, "{text}");
    assert_eq!(total(&text, tokens, &[("gen_ai_token_type", "output")]), 15.0, "{text}");

    let tool = |text: &str, name, outcome| {
        total(
            text,
            "gen_ai_execute_tool_duration_seconds_count",
            &[("gen_ai_tool_name", name), ("plugin", "hostile"), ("outcome", outcome)],
        )
    };
    assert_eq!(tool(&text, "echo", "ok"), 1.0, "{text}");
    assert_eq!(total(&text, "gen_ai_execute_tool_duration_seconds_count", &[("gen_ai_tool_name", "huge")]), 0.0);
    let decisions = "toolhost_policy_decisions_total";
    assert_eq!(total(&text, decisions, &[("action", "call_tool"), ("decision", "allow")]), 1.0, "{text}");
    assert_eq!(total(&text, decisions, &[("action", "call_tool"), ("decision", "deny")]), 1.0, "{text}");
    assert_eq!(total(&text, "toolhost_plugin_instantiation_seconds_count", &[("plugin", "hostile")]), 1.0);
    assert!(total(&text, "toolhost_plugin_compile_cache_total", &[]) >= 1.0, "plugins were loaded: {text}");
    assert!(total(&text, "toolhost_database_connections", &[]) >= 1.0, "{text}");
    assert!(text.contains("# TYPE toolhost_stream_subscribers gauge"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"));

    // A plugin stopped by a limit is counted by the limit.
    server.llm.script([fake_llm::tool_calls(&[("c3", "spin", "{}")]), fake_llm::text("stopped")]);
    let (_, chat) = server.post(&alice, "/api/v1/chats", json!({"content": [{"type": "text", "text": "spin"}]})).await;
    server.wait_for_status(&alice, chat["id"].as_str().unwrap(), "waiting").await;
    let (_, text) = scrape(&server, Some(&admin)).await;
    assert_eq!(
        total(&text, "toolhost_plugin_limits_hit_total", &[("plugin", "hostile"), ("limit", "timeout")]),
        1.0,
        "{text}"
    );
    assert_eq!(tool(&text, "spin", "timeout"), 1.0, "{text}");
    assert_eq!(total(&text, "toolhost_turns_total", &[("outcome", "completed")]), 2.0);
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_serves_metrics_without_a_token_on_its_own_address_and_logs_json() {
    let data = tempfile::tempdir().unwrap();
    let (deployment, _database) = process::deployment(Backend::Sqlite, data.path()).await;
    let server =
        deployment.serve("http://127.0.0.1:9/v1", &[("TOOLHOST_LOG_FORMAT", "json"), ("RUST_LOG", "toolhost=info")]);
    let client = reqwest::Client::new();
    let url = server.metrics.clone().expect("serve says where its metrics are");
    assert_ne!(url, server.url("/metrics"), "off the API's port");
    let response = client.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = response.text().await.unwrap();
    // A fresh data directory: the bundled plugins were compiled, none came from the cache.
    assert!(total(&text, "toolhost_plugin_compile_cache_total", &[("result", "miss")]) >= 5.0, "{text}");
    assert!(total(&text, "toolhost_database_connections", &[]) >= 1.0, "{text}");
    let elsewhere = client.get(url.replace("/metrics", "/api/v1/chats")).send().await.unwrap();
    assert_eq!(elsewhere.status(), StatusCode::NOT_FOUND, "the metrics address serves metrics only");
    let api = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);

    // Logs are JSON lines carrying their fields.
    let loaded: Vec<Value> = server
        .said
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|log| log["fields"]["message"] == "plugin loaded")
        .collect();
    assert!(loaded.iter().any(|log| log["fields"]["plugin"] == "files" && log["level"] == "INFO"), "{:?}", server.said);

    let refused = deployment.command().env("TOOLHOST_LOG_FORMAT", "xml").arg("migrate").output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("use `text` (the default) or `json`"));
}

/// An OTLP/HTTP collector of the test's own: it keeps every `POST /v1/traces` body (JSON).
async fn collector() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::routing::post;
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                kept.lock().unwrap().push(serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null));
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), received)
}

/// The spans of the exports received: (name, trace id, span id, parent span id, attributes).
fn spans(exports: &[Value]) -> Vec<Value> {
    let mut spans = Vec::new();
    for export in exports {
        for resource in export["resourceSpans"].as_array().into_iter().flatten() {
            let service = attribute(&resource["resource"], "service.name");
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    let mut span = span.clone();
                    span["service"] = service.clone();
                    spans.push(span);
                }
            }
        }
    }
    spans
}

/// An attribute's value, as a string or a number.
fn attribute(holder: &Value, key: &str) -> Value {
    let found = holder["attributes"].as_array().into_iter().flatten().find(|a| a["key"] == key);
    let Some(value) = found.map(|a| &a["value"]) else { return Value::Null };
    match (&value["stringValue"], &value["intValue"]) {
        (Value::String(text), _) => json!(text),
        (_, Value::String(number)) => json!(number.parse::<i64>().unwrap()),
        (_, number) => number.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_is_traced_over_otlp_with_its_model_and_tool_calls() {
    let (endpoint, received) = collector().await;
    let data = tempfile::tempdir().unwrap();
    let (deployment, _database) = process::deployment(Backend::Sqlite, data.path()).await;
    let token = deployment.user_token("alice");
    let llm = FakeLlm::start().await;
    llm.script([fake_llm::tool_calls(&[("t1", "list_templates", "{}")]), fake_llm::text("Two templates.")]);
    let mut server = deployment.serve(
        &llm.base_url,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_SERVICE_NAME", "toolhost-test"),
        ],
    );
    let chat = client::create_chat(&server.base, &token, "which templates are there?").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let state = client::chat_state(&server.base, &token, &chat).await;
        if state["status"] == "waiting" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the turn ends: {state}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // A clean stop exports what the batch still holds.
    server.stop();

    let spans = spans(&received.lock().unwrap());
    let named =
        |name: &str| spans.iter().find(|s| s["name"] == name).unwrap_or_else(|| panic!("no `{name}` in {spans:#?}"));
    let turn = named("turn");
    assert_eq!(attribute(turn, "gen_ai.conversation.id"), json!(chat));
    assert_eq!(turn["service"], "toolhost-test");
    let model_calls: Vec<&Value> = spans.iter().filter(|s| s["name"] == "chat test-model").collect();
    assert_eq!(model_calls.len(), 2, "one per step: {spans:#?}");
    for call in &model_calls {
        assert_eq!(call["traceId"], turn["traceId"], "in the turn's trace");
        assert_eq!(call["parentSpanId"], turn["spanId"], "a child of the turn");
        assert_eq!(call["kind"], 3, "a client span");
        assert_eq!(attribute(call, "gen_ai.operation.name"), "chat");
        assert_eq!(attribute(call, "gen_ai.request.model"), "test-model");
        assert_eq!(attribute(call, "gen_ai.provider.name"), "openai");
    }
    let input: Vec<Value> = model_calls.iter().map(|c| attribute(c, "gen_ai.usage.input_tokens")).collect();
    assert!(input.contains(&json!(30)) && input.contains(&json!(20)), "the fake's usage: {input:?}");
    let tool = named("execute_tool list_templates");
    assert_eq!(tool["traceId"], turn["traceId"]);
    assert_eq!(attribute(tool, "gen_ai.tool.name"), "list_templates");
    assert_eq!(attribute(tool, "gen_ai.tool.call.id"), "t1");
    assert_eq!(attribute(tool, "plugin"), "workspaces");
    assert_eq!(attribute(tool, "outcome"), "ok");
    assert_eq!(attribute(tool, "chat_id"), json!(chat));
}
