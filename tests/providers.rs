//! Providers and models: Anthropic end to end, retries, provider faults, administration with
//! sealed keys, usage and cost, and prompts; on SQLite and on PostgreSQL.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test or benchmark fails by panicking

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::fake_llm::{self, Script};
use support::{Backend, TestServer, read_stream};

fn text(t: &str) -> Value {
    json!({"content": [{"type": "text", "text": t}]})
}

async fn create_chat(server: &TestServer, token: &str, body: Value) -> String {
    let (status, chat) = server.post(token, "/api/v1/chats", body).await;
    assert_eq!(status, StatusCode::CREATED, "{chat}");
    chat["id"].as_str().unwrap().to_string()
}

async fn messages(server: &TestServer, token: &str, chat: &str) -> Vec<Value> {
    let (_, body) = server.get(token, &format!("/api/v1/chats/{chat}/messages")).await;
    body["messages"].as_array().unwrap().clone()
}

/// An admin, an Anthropic provider on the fake server, and a priced model `claude-test` on it.
async fn anthropic_setup(server: &TestServer) -> String {
    let admin = server.user("root", true).await;
    let provider = json!({"name": "anthropic", "kind": "anthropic", "base_url": server.llm.anthropic_base_url(), "api_key": "sk-ant-secret-123"});
    let (status, created) = server.post(&admin, "/api/v1/providers", provider).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let model = json!({
        "name": "claude-test", "provider": "anthropic", "model": "claude-sonnet-test", "context_window": 200000,
        "thinking_budget_tokens": 2048,
        "pricing": {"input": 3.0, "output": 15.0, "cache_read": 0.3, "cache_write": 3.75}
    });
    let (status, created) = server.post(&admin, "/api/v1/models", model).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    admin
}

async fn a_chat_runs_end_to_end_on_anthropic_with_thinking_tools_caching_and_cost(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = anthropic_setup(&server).await;
    let alice = server.user("alice", false).await;
    server.llm.script([
        fake_llm::anthropic_thinking_tool_use("toolu_1", "read_file", r#"{"path": "missing.txt"}"#),
        fake_llm::anthropic_text("The file is missing."),
    ]);
    let chat = create_chat(
        &server,
        &alice,
        json!({"content": [{"type": "text", "text": "read missing.txt"}], "model": "claude-test"}),
    )
    .await;
    server.wait_for_status(&alice, &chat, "waiting").await;

    let all = messages(&server, &alice, &chat).await;
    let roles: Vec<&str> = all.iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "tool", "assistant"], "{all:?}");
    assert_eq!(
        all[1]["content"][0],
        json!({"type": "reasoning", "text": "I should read the file."}),
        "signatures stay internal"
    );
    assert_eq!(all[1]["content"][1]["args"], json!({"path": "missing.txt"}));
    assert_eq!(all[2]["content"][0]["is_error"], true);
    assert_eq!(all[3]["content"][0]["text"], "The file is missing.");
    let usage = &all[3]["usage"];
    assert_eq!(
        (
            usage["input_tokens"].as_i64(),
            usage["cache_read_tokens"].as_i64(),
            usage["cache_creation_tokens"].as_i64(),
            usage["output_tokens"].as_i64()
        ),
        (Some(100), Some(1000), Some(50), Some(20))
    );
    // 100 * 3 + 20 * 15 + 1000 * 0.3 + 50 * 3.75 = 1087.5 per million.
    assert!((usage["cost_usd"].as_f64().unwrap() - 0.0010875).abs() < 1e-12, "{usage}");

    let requests = server.llm.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        server.llm.keys().iter().all(|k| k.as_deref() == Some("sk-ant-secret-123")),
        "the sealed key is opened for the provider"
    );
    let second = &requests[1];
    assert_eq!(second["model"], "claude-sonnet-test");
    assert_eq!(second["thinking"]["budget_tokens"], 2048);
    assert_eq!(second["system"][0]["cache_control"]["type"], "ephemeral");
    assert_eq!(
        second["messages"][1]["content"][0],
        json!({"type": "thinking", "thinking": "I should read the file.", "signature": "c2lnbmF0dXJl"}),
        "{second}"
    );
    assert_eq!(second["messages"][2]["content"][0]["type"], "tool_result");
    assert_eq!(second["messages"][2]["content"][0]["cache_control"]["type"], "ephemeral");

    let (status, report) = server.get(&alice, "/api/v1/usage").await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["total"]["calls"], 2);
    assert_eq!(report["by_model"][0]["key"], "claude-test");
    assert_eq!(report["by_root_chat"][0]["key"], chat.as_str());
    assert_eq!(report["by_root_chat"][0]["label"], fake_llm::TITLE, "labelled with the chat's title");
    let (status, _) = server.get(&alice, "/api/v1/usage?user=all").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, everyone) = server.get(&admin, "/api/v1/usage?user=all&from=2020-01-01").await;
    assert_eq!(everyone["by_user"][0]["label"], "alice", "{everyone}");
    let (_, before) = server.get(&admin, "/api/v1/usage?user=alice&from=2020-01-01&to=2020-12-31").await;
    assert_eq!(before["total"]["calls"], 0, "{before}");
    let (status, bad) = server.get(&alice, "/api/v1/usage?from=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    server.finish().await;
}
on_both_backends!(a_chat_runs_end_to_end_on_anthropic_with_thinking_tools_caching_and_cost);

async fn retryable_failures_back_off_publish_retry_events_and_never_duplicate_output(backend: Backend) {
    let server = TestServer::start(backend).await;
    anthropic_setup(&server).await;
    let alice = server.user("alice", false).await;
    server.llm.script([
        Script::StatusRetryAfter(
            429,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}),
            1,
        ),
        fake_llm::anthropic_error_after("Partial answer ", "overloaded_error"),
        fake_llm::anthropic_text("All good."),
    ]);
    let chat =
        create_chat(&server, &alice, json!({"content": [{"type": "text", "text": "hi"}], "model": "claude-test"}))
            .await;
    let events = read_stream(&server, &alice, &chat, None, |events| {
        events.iter().any(|e| e["type"] == "status" && e["status"] == "waiting")
    })
    .await;
    let retries: Vec<&Value> = events.iter().map(|(_, e)| e).filter(|e| e["type"] == "retry").collect();
    assert_eq!(retries.len(), 2, "{events:?}");
    assert_eq!(
        (retries[0]["attempt"].as_i64(), retries[0]["error_kind"].as_str(), retries[0]["discarded_output"].as_bool()),
        (Some(1), Some("rate_limited"), Some(false))
    );
    assert!(retries[0]["delay_ms"].as_u64().unwrap() >= 1000, "retry-after is honoured: {}", retries[0]);
    assert!(
        retries[0]["retrying_at"].as_i64().is_some() && retries[0]["error"].as_str().unwrap().contains("slow down")
    );
    assert_eq!(
        (retries[1]["attempt"].as_i64(), retries[1]["error_kind"].as_str(), retries[1]["discarded_output"].as_bool()),
        (Some(2), Some("overloaded"), Some(true))
    );

    let all = messages(&server, &alice, &chat).await;
    assert_eq!(all.len(), 2, "only the answer that finished is stored: {all:?}");
    assert_eq!(all[1]["content"], json!([{"type": "text", "text": "All good."}]));
    assert_eq!(server.llm.requests().len(), 3);
    server.finish().await;
}
on_both_backends!(retryable_failures_back_off_publish_retry_events_and_never_duplicate_output);

async fn a_storm_of_overload_is_given_up_on_with_a_readable_error(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.user("alice", false).await;
    let overloaded =
        Script::Status(529, json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}));
    server.llm.script(std::iter::repeat_n(overloaded, 4));
    let chat = create_chat(&server, &alice, text("hello")).await;
    let failed = server.wait_for_status(&alice, &chat, "error").await;
    let last_error = failed["last_error"].as_str().unwrap();
    assert!(last_error.contains("Overloaded") && last_error.contains("gave up after 4 attempts"), "{last_error}");
    assert_eq!(server.llm.requests().len(), 4, "the test policy allows 4 attempts");
    assert_eq!(messages(&server, &alice, &chat).await.len(), 1, "nothing half-made is stored");
    server.finish().await;
}
on_both_backends!(a_storm_of_overload_is_given_up_on_with_a_readable_error);

async fn malformed_events_and_invalid_tool_arguments_have_defined_outcomes(backend: Backend) {
    let server = TestServer::start(backend).await;
    anthropic_setup(&server).await;
    let alice = server.user("alice", false).await;
    let truncated_args = fake_llm::anthropic_thinking_tool_use("toolu_9", "read_file", r#"{"path": "a.tx"#);
    server.llm.script([
        truncated_args,
        fake_llm::anthropic_text("Fixed my arguments."),
        Script::Raw("event: message_start\ndata: {\"type\": \"message_start\", \"message\": {}}\n\nevent: content_block_delta\ndata: {this is not json\n\n".into()),
    ]);
    let chat = create_chat(
        &server,
        &alice,
        json!({"content": [{"type": "text", "text": "read a.txt"}], "model": "claude-test"}),
    )
    .await;
    server.wait_for_status(&alice, &chat, "waiting").await;
    let all = messages(&server, &alice, &chat).await;
    assert_eq!(all[2]["role"], "tool");
    assert_eq!(all[2]["content"][0]["is_error"], true);
    assert!(all[2]["content"][0]["result"].as_str().unwrap().contains("not valid JSON"), "{}", all[2]);
    assert_eq!(
        server.llm.requests()[1]["messages"][1]["content"][1]["input"],
        json!({"unparsed_arguments": "{\"path\": \"a.tx"}),
        "the model sees what it sent"
    );

    server.post(&alice, &format!("/api/v1/chats/{chat}/messages"), text("again")).await;
    let failed = server.wait_for_status(&alice, &chat, "error").await;
    assert!(failed["last_error"].as_str().unwrap().contains("unreadable event"), "{failed}");
    assert_eq!(server.llm.requests().len(), 3, "a provider speaking nonsense is not retried");
    server.finish().await;
}
on_both_backends!(malformed_events_and_invalid_tool_arguments_have_defined_outcomes);

async fn admins_administer_providers_and_models_and_keys_never_leave_the_server(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.user("root", true).await;
    let alice = server.user("alice", false).await;
    let provider = json!({"name": "work", "kind": "anthropic", "api_key": "sk-ant-very-secret"});
    let (status, _) = server.post(&alice, "/api/v1/providers", provider.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, created) = server.post(&admin, "/api/v1/providers", provider).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["has_api_key"], true);
    assert!(!created.to_string().contains("sk-ant-very-secret"), "{created}");
    let (_, listed) = server.get(&admin, "/api/v1/providers").await;
    assert!(!listed.to_string().contains("very-secret"), "{listed}");
    let sealed = server.store.provider("work").await.unwrap().unwrap().api_key.unwrap();
    assert!(sealed.starts_with("v1:") && !sealed.contains("very-secret"), "{sealed}");
    let (status, dup) = server.post(&admin, "/api/v1/providers", json!({"name": "work", "kind": "openai"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{dup}");
    let (status, bad) = server.post(&admin, "/api/v1/providers", json!({"name": "x", "kind": "gemini"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");

    // A provider without a key: its models are listed as unusable, with the reason.
    let (_, keyless) = server.post(&admin, "/api/v1/providers", json!({"name": "nokey", "kind": "anthropic"})).await;
    let (status, model) =
        server.post(&admin, "/api/v1/models", json!({"name": "claude-nokey", "provider": "nokey"})).await;
    assert_eq!(status, StatusCode::CREATED, "{model}");
    assert_eq!(model["context_window"], 200000, "guessed from the name");
    let (status, listing) = server.get(&alice, "/api/v1/models").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listing["default_model"], "test-model");
    let nokey = listing["models"].as_array().unwrap().iter().find(|m| m["name"] == "claude-nokey").unwrap();
    assert_eq!(nokey["available"], false);
    assert!(nokey["unavailable_reason"].as_str().unwrap().starts_with("missing_api_key"), "{nokey}");
    let (status, bad) = server
        .post(&admin, "/api/v1/models", json!({"name": "m", "provider": "nokey", "compaction_threshold": 1.5}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(bad["error"]["message"].as_str().unwrap().contains("compaction_threshold"), "{bad}");

    let in_use = server
        .http
        .delete(server.url(&format!("/api/v1/providers/{}", keyless["id"].as_str().unwrap())))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(in_use.status(), StatusCode::CONFLICT, "a provider with models is not deleted");

    // Patching the key makes the models usable; a chat on a deleted model falls back to the default.
    let patched = server
        .http
        .patch(server.url(&format!("/api/v1/providers/{}", keyless["id"].as_str().unwrap())))
        .bearer_auth(&admin)
        .json(&json!({"api_key": "sk-new"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), StatusCode::OK);
    let (_, listing) = server.get(&alice, "/api/v1/models").await;
    assert!(listing["models"].as_array().unwrap().iter().all(|m| m["available"] == true), "{listing}");

    let (status, unknown) = server
        .post(&alice, "/api/v1/chats", json!({"content": [{"type": "text", "text": "hi"}], "model": "nope"}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(unknown["error"]["message"].as_str().unwrap().contains("GET /api/v1/models"), "{unknown}");
    let (status, _) = server
        .post(&admin, "/api/v1/models", json!({"name": "doomed", "provider": "fake", "model": "doomed-model"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, models) = server.get(&admin, "/api/v1/models").await;
    let doomed = models["models"].as_array().unwrap().iter().find(|m| m["name"] == "doomed").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, chat) = server
        .post(&alice, "/api/v1/chats", json!({"content": [{"type": "text", "text": "hi"}], "model": "doomed"}))
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let chat = chat["id"].as_str().unwrap().to_string();
    server.wait_for_status(&alice, &chat, "waiting").await;
    let deleted =
        server.http.delete(server.url(&format!("/api/v1/models/{doomed}"))).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    server.post(&alice, &format!("/api/v1/chats/{chat}/messages"), text("still there?")).await;
    server.wait_for_status(&alice, &chat, "waiting").await;
    let requests = server.llm.requests();
    assert_eq!(requests[requests.len() - 2]["model"], "doomed-model");
    assert_eq!(requests[requests.len() - 1]["model"], "test-model", "the default serves chats whose model was deleted");
    server.finish().await;
}
on_both_backends!(admins_administer_providers_and_models_and_keys_never_leave_the_server);

async fn prompts_are_assembled_in_the_documented_order(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = server.user("root", true).await;
    let alice = server.user("alice", false).await;
    let put =
        |token: &str, path: &str, body: Value| server.http.put(server.url(path)).bearer_auth(token).json(&body).send();
    assert_eq!(
        put(&alice, "/api/v1/settings/system-prompt", json!({"prompt": "nope"})).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        put(&admin, "/api/v1/settings/system-prompt", json!({"prompt": "DEPLOYMENT RULES"})).await.unwrap().status(),
        StatusCode::OK
    );
    let too_long = "x".repeat(128 * 1024 + 1);
    let refused = put(&admin, "/api/v1/settings/system-prompt", json!({"prompt": too_long})).await.unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        put(&alice, "/api/v1/users/me/prompt", json!({"prompt": "ALICE LIKES BREVITY"})).await.unwrap().status(),
        StatusCode::OK
    );
    let (_, mine) = server.get(&alice, "/api/v1/users/me/prompt").await;
    assert_eq!(mine["prompt"], "ALICE LIKES BREVITY");

    let (chat, workspace) = server.chat_with_workspace(&alice, "first").await;
    server.wait_for_status(&alice, &chat, "waiting").await;
    std::fs::write(workspace.join("AGENTS.md"), "WORKSPACE: run make test").unwrap();
    server.post(&alice, &format!("/api/v1/chats/{chat}/messages"), text("second")).await;
    server.wait_for_status(&alice, &chat, "waiting").await;

    let requests = server.llm.requests();
    let system = |request: &Value| request["messages"][0]["content"].as_str().unwrap().to_string();
    let first = system(&requests[0]);
    assert!(
        first.starts_with("DEPLOYMENT RULES") && first.contains("ALICE LIKES BREVITY") && !first.contains("WORKSPACE"),
        "{first}"
    );
    let second = system(&requests[1]);
    let order: Vec<usize> = ["DEPLOYMENT RULES", "WORKSPACE: run make test", "ALICE LIKES BREVITY"]
        .iter()
        .map(|s| second.find(s).unwrap_or(usize::MAX))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]) && order[2] != usize::MAX, "{second}");
    server.finish().await;
}
on_both_backends!(prompts_are_assembled_in_the_documented_order);

async fn a_new_chat_gets_a_generated_title_from_the_title_model_beside_its_turn(backend: Backend) {
    let server = TestServer::start(backend).await;
    let admin = anthropic_setup(&server).await;
    let alice = server.user("alice", false).await;
    let models = server.get(&admin, "/api/v1/models").await.1;
    let claude = models["models"].as_array().unwrap().iter().find(|m| m["name"] == "claude-test").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let marked = server
        .http
        .patch(server.url(&format!("/api/v1/models/{claude}")))
        .bearer_auth(&admin)
        .json(&json!({"title_model": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(marked.status(), StatusCode::OK);
    server.llm.script([fake_llm::text("The answer.")]);
    let chat = create_chat(&server, &alice, text("please help me migrate the billing service to the new queue")).await;
    server.wait_for_status(&alice, &chat, "waiting").await;
    let mut title = Value::Null;
    for _ in 0..100 {
        title = server.get(&alice, &format!("/api/v1/chats/{chat}")).await.1["title"].clone();
        if title == fake_llm::TITLE {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(title, fake_llm::TITLE);
    let titles = server.llm.title_requests();
    assert_eq!(titles.len(), 1);
    assert_eq!(titles[0]["model"], "claude-sonnet-test", "the title model writes titles");
    assert!(titles[0]["messages"][0]["content"][0]["text"].as_str().unwrap().contains("billing service"));
    let answer = messages(&server, &alice, &chat).await;
    assert_eq!(answer[1]["content"][0]["text"], "The answer.", "the turn's answer is its own");

    server.post(&alice, &format!("/api/v1/chats/{chat}/messages"), text("and the tests?")).await;
    server.wait_for_status(&alice, &chat, "waiting").await;
    assert_eq!(server.llm.title_requests().len(), 1, "only the first message is titled");
    server.finish().await;
}
on_both_backends!(a_new_chat_gets_a_generated_title_from_the_title_model_beside_its_turn);

/// The text of each message of an OpenAI request, system prompt included.
fn request_texts(request: &Value) -> Vec<String> {
    request["messages"].as_array().unwrap().iter().map(|m| m["content"].as_str().unwrap_or("").to_string()).collect()
}

fn roles(messages: &[Value]) -> Vec<&str> {
    messages.iter().map(|m| m["role"].as_str().unwrap()).collect()
}

const SUMMARY: &str = "Goal: read missing.txt. It does not exist. Next: tell the user.";

async fn a_chat_past_the_compaction_threshold_continues_from_a_hidden_summary(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.user("alice", false).await;
    // test-model: 100k context, threshold 70%. The first call reports an 80k-token prompt.
    server.llm.script([
        fake_llm::with_prompt_tokens(
            fake_llm::tool_calls(&[("call_1", "read_file", r#"{"path": "missing.txt"}"#)]),
            80_000,
        ),
        fake_llm::text(SUMMARY),
        fake_llm::text("The file is missing."),
    ]);
    let chat = create_chat(&server, &alice, text("read missing.txt")).await;
    server.wait_for_status(&alice, &chat, "waiting").await;

    let all = messages(&server, &alice, &chat).await;
    assert_eq!(roles(&all), ["user", "assistant", "tool", "compaction", "assistant"], "{all:?}");
    let marker = &all[3]["content"][0];
    assert_eq!(marker["type"], "compaction");
    assert_eq!(marker["trigger"], "threshold");
    assert_eq!(marker["through_seq"], all[2]["seq"], "it covers everything up to the tool results");
    assert_eq!(marker["messages_compacted"], 3);
    assert!(
        marker["prompt_tokens"].as_i64().unwrap() >= 80_000,
        "the last call's prompt and what followed it: {marker}"
    );
    assert_eq!(marker["context_window"], 100_000);
    assert!(marker.get("summary").is_none(), "the summary is the model's, not shown to clients: {marker}");
    assert!(all[3]["usage"]["output_tokens"].as_i64().unwrap() > 0, "the summary call's tokens are counted");
    assert_eq!(all[4]["content"][0]["text"], "The file is missing.");

    let requests = server.llm.requests();
    assert_eq!(requests.len(), 3);
    let summarize = &requests[1];
    assert_eq!(summarize["tool_choice"], "none", "tools stay listed (for the prompt cache) but may not be called");
    assert!(summarize["tools"].as_array().is_some_and(|t| !t.is_empty()));
    let asked = request_texts(summarize);
    assert_eq!(asked[0], request_texts(&requests[0])[0], "same system prompt as the chat's calls");
    assert_eq!(asked[1], "read missing.txt");
    assert!(asked.last().unwrap().starts_with("Summarize this conversation"), "{asked:?}");
    assert!(asked.last().unwrap().contains("What remains to be done"), "the summary must keep the next steps");
    let after = request_texts(&requests[2]);
    assert_eq!(after.len(), 2, "system prompt, then the summary alone: {after:?}");
    assert!(after[1].ends_with(SUMMARY) && after[1].contains("summarized"), "{after:?}");

    // The next turn starts from the summary too, and the usage report counts the summary call.
    server.llm.script([fake_llm::text("Created.")]);
    server.post(&alice, &format!("/api/v1/chats/{chat}/messages"), text("then create it")).await;
    server.wait_for_status(&alice, &chat, "waiting").await;
    let next = request_texts(&server.llm.requests()[3]);
    assert_eq!(next[1..].iter().map(|t| t.ends_with(SUMMARY)).collect::<Vec<_>>(), [true, false, false]);
    assert_eq!(next[2..], ["The file is missing.".to_string(), "then create it".to_string()]);
    let (_, report) = server.get(&alice, "/api/v1/usage").await;
    assert_eq!(report["total"]["calls"], 4, "{report}");
    server.finish().await;
}
on_both_backends!(a_chat_past_the_compaction_threshold_continues_from_a_hidden_summary);

async fn a_prompt_refused_as_too_long_is_compacted_and_sent_once_more(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.user("alice", false).await;
    server.llm.script([fake_llm::text("Hello.")]);
    let chat = create_chat(&server, &alice, text("hello")).await;
    server.wait_for_status(&alice, &chat, "waiting").await;

    server.llm.script([
        fake_llm::context_too_long(),
        fake_llm::text(SUMMARY),
        fake_llm::text("Answered after compaction."),
    ]);
    server.post(&alice, &format!("/api/v1/chats/{chat}/messages"), text("now the long part")).await;
    server.wait_for_status(&alice, &chat, "waiting").await;

    let all = messages(&server, &alice, &chat).await;
    assert_eq!(roles(&all), ["user", "assistant", "user", "compaction", "assistant"], "{all:?}");
    let marker = &all[3]["content"][0];
    assert_eq!(marker["trigger"], "context_too_long");
    assert_eq!(marker["through_seq"], all[1]["seq"], "the new message is not summarized");
    assert!(marker["prompt_tokens"].as_i64().unwrap() > 0, "estimated when the provider gives no count");
    assert_eq!(all[4]["content"][0]["text"], "Answered after compaction.");
    let requests = server.llm.requests();
    let summarize = request_texts(&requests[2]);
    assert!(!summarize.iter().any(|t| t == "now the long part"), "only older history is summarized: {summarize:?}");
    let retried = request_texts(&requests[3]);
    assert!(retried[1].ends_with(SUMMARY), "{retried:?}");
    assert_eq!(retried[2], "now the long part", "the new message is sent verbatim");
    server.finish().await;
}
on_both_backends!(a_prompt_refused_as_too_long_is_compacted_and_sent_once_more);

async fn a_prompt_that_cannot_be_compacted_enough_ends_the_turn_with_a_clear_error(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = server.user("alice", false).await;
    // A first message alone is too long: there is nothing older to summarize.
    server.llm.script([fake_llm::context_too_long()]);
    let chat = create_chat(&server, &alice, text("an enormous paste")).await;
    let failed = server.wait_for_status(&alice, &chat, "error").await;
    let error = failed["last_error"].as_str().unwrap();
    assert!(error.contains("maximum context length") && error.contains("no older history"), "{error}");

    // Still too long after compacting: one retry only, then a clear error.
    server.llm.script([fake_llm::text("Hello.")]);
    let chat = create_chat(&server, &alice, text("hello")).await;
    server.wait_for_status(&alice, &chat, "waiting").await;
    let before = server.llm.requests().len();
    server.llm.script([fake_llm::context_too_long(), fake_llm::text(SUMMARY), fake_llm::context_too_long()]);
    server.post(&alice, &format!("/api/v1/chats/{chat}/messages"), text("another enormous paste")).await;
    let failed = server.wait_for_status(&alice, &chat, "error").await;
    let error = failed["last_error"].as_str().unwrap();
    assert!(error.contains("even after compacting") && error.contains("larger context window"), "{error}");
    assert_eq!(server.llm.requests().len() - before, 3, "refused, summarized, refused: no loop");
    server.finish().await;
}
on_both_backends!(a_prompt_that_cannot_be_compacted_enough_ends_the_turn_with_a_clear_error);
