//! Computer use end to end, with the fake model: a root chat spawns a computer-use agent on
//! its workspace's desktop, the agent drives it with the bundled `computer` plugin, and the
//! root chat's `wait_agent` gets its report. Speaking Anthropic, the agent's requests declare
//! Anthropic's own computer tool with the scaled display size and carry the screenshots as
//! image blocks in tool results; speaking OpenAI, `computer` is a function and each screenshot
//! follows its tool message as a user image part. The desktop WebSocket: RFB for the owner, 404
//! for anyone else, and a take-over the next agent is told of.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::rfb::Viewer;
use support::{Backend, TestServer, fake_llm, tool_results};
use toolhost::catalog::{ModelInput, NewProvider};
use toolhost::domain::{ComputerTool, ProviderKind};
use toolhost::store::Source;
use toolhost::workspace::desktop::picture::Scaling;

const ROOT_PROMPT: &str = "ROOT: have the desktop typed on";
const CHILD_PROMPT: &str = "CHILD: click the screen and type hi";
const REPORT: &str = "CHILD REPORT: clicked and typed hi";

/// A server whose workspaces of template `desk` have a 1920x1200 desktop, and a model marked
/// for computer use speaking `kind`.
async fn server_with_computer_use_model(kind: ProviderKind) -> TestServer {
    let server = TestServer::start(Backend::Sqlite).await;
    server.require_sandbox();
    let folder = server.data.path().join("templates/desk");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("template.toml"), "name = 'Desk'\n[desktop]\nwidth = 1920\nheight = 1200\n").unwrap();
    server.workspaces.reload_templates();
    let provider = match kind {
        ProviderKind::Anthropic => {
            let anthropic = NewProvider {
                name: "fake-anthropic".into(),
                kind: ProviderKind::Anthropic,
                base_url: Some(server.llm.anthropic_base_url()),
                api_key: Some("test-key".into()),
            };
            server.catalog.create_provider(anthropic, Source::Api).await.unwrap();
            "fake-anthropic"
        }
        _ => "fake",
    };
    let model = ModelInput {
        name: Some("desk-model".into()),
        provider: Some(provider.into()),
        context_window: Some(100_000),
        computer_use_model: Some(true),
        computer_tool: Some((kind == ProviderKind::Anthropic).then_some(ComputerTool::Computer20251124)),
        ..ModelInput::default()
    };
    server.catalog.save_model(None, model, Source::Api).await.unwrap();
    server
}

/// The root chat's script: spawn the agent, wait for it (by the id the spawn returned), end.
fn root_script(server: &TestServer) {
    root_script_for(server, ROOT_PROMPT, CHILD_PROMPT);
}

/// The script of a root chat saying `root_prompt`, which spawns an agent told `child_prompt`.
fn root_script_for(server: &TestServer, root_prompt: &str, child_prompt: &str) {
    let spawn = json!({"prompt": child_prompt, "title": "typist"}).to_string();
    server.llm.script_for(
        root_prompt,
        [
            fake_llm::tool_calls(&[("root-1", "spawn_computer_use_agent", &spawn)]),
            fake_llm::computed(|request| {
                let body = request.to_string();
                let at = body.find("chat_id").expect("the spawn's result names the child");
                let id: String = body[at..].split('"').nth(2).unwrap().trim_end_matches('\\').to_string();
                let wait = json!({"chat_ids": [id], "timeout_seconds": 120}).to_string();
                fake_llm::tool_calls(&[("root-2", "wait_agent", &wait)])
            }),
            fake_llm::text("the agent typed hi"),
        ],
    );
}

/// An Anthropic answer calling `computer` with `input`.
fn anthropic_computer(id: &str, input: Value) -> fake_llm::Script {
    fake_llm::anthropic_thinking_tool_use(id, "computer", &input.to_string())
}

async fn run_root_chat(server: &TestServer) -> (String, String) {
    let token = server.user("alice", false).await;
    let workspace = server.ready_workspace(&token, "desk", json!({})).await;
    let id = run_root_chat_on(server, &token, workspace["id"].as_str().unwrap(), ROOT_PROMPT).await;
    (token, id)
}

/// Runs a root chat saying `prompt` on the workspace until it waits: its id.
async fn run_root_chat_on(server: &TestServer, token: &str, workspace_id: &str, prompt: &str) -> String {
    let body = json!({"content": [{"type": "text", "text": prompt}], "workspace_id": workspace_id});
    let (status, chat) = server.post(token, "/api/v1/chats", body).await;
    assert_eq!(status, reqwest::StatusCode::CREATED, "{chat}");
    let id = chat["id"].as_str().unwrap().to_string();
    let mut root = Value::Null;
    for _ in 0..600 {
        let (_, now) = server.get(token, &format!("/api/v1/chats/{id}")).await;
        if now["status"] == "waiting" || now["status"] == "error" {
            root = now;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(root["status"], "waiting", "{root}");
    id
}

fn requests_of_the_agent(server: &TestServer) -> Vec<Value> {
    server
        .llm
        .requests()
        .into_iter()
        .filter(|r| r.to_string().contains("CHILD: click"))
        .filter(|r| !r.to_string().contains("ROOT:"))
        .collect()
}

async fn the_report_reached_the_root(server: &TestServer, root: &str) {
    let results = tool_results(&server.store.messages(root, 0).await.unwrap());
    let waited = results.iter().find(|(name, _, _)| name == "wait_agent").expect("the root waited");
    assert!(waited.1.contains(REPORT), "wait_agent returned the agent's report: {waited:?}");
    let spawned = results.iter().find(|(name, _, _)| name == "spawn_computer_use_agent").unwrap();
    assert!(!spawned.2, "{spawned:?}");
    let root_request = server.llm.requests().into_iter().find(|r| r.to_string().contains(ROOT_PROMPT)).unwrap();
    assert!(
        root_request.to_string().contains("\"spawn_computer_use_agent\""),
        "with a model marked for computer use, root chats are offered the agent on a desktop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaking_anthropic_the_agent_gets_the_native_computer_tool_and_screenshots_as_image_blocks() {
    let server = server_with_computer_use_model(ProviderKind::Anthropic).await;
    root_script(&server);
    server.llm.script([
        anthropic_computer("cu-1", json!({"action": "screenshot"})),
        anthropic_computer("cu-2", json!({"action": "left_click", "coordinate": [670, 418]})),
        anthropic_computer("cu-3", json!({"action": "type", "text": "hi"})),
        fake_llm::anthropic_text(REPORT),
    ]);
    let (_, root) = run_root_chat(&server).await;
    the_report_reached_the_root(&server, &root).await;

    let requests = requests_of_the_agent(&server);
    assert_eq!(requests.len(), 4, "one request per step of the agent");
    let view = Scaling::of_display(1920, 1200);
    for request in &requests {
        assert_eq!(
            request["tools"],
            json!([{"type": "computer_20251124", "name": "computer", "display_width_px": view.model_width, "display_height_px": view.model_height, "enable_zoom": true}]),
            "a computer-use chat sees only `computer`, declared natively at the scaled size"
        );
    }
    // The screenshot after each action travels as an image block inside its tool result.
    let last = &requests[3]["messages"];
    let results: Vec<&Value> = last
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|m| m["content"].as_array().into_iter().flatten())
        .filter(|block| block["type"] == "tool_result")
        .collect();
    assert_eq!(results.len(), 3);
    for result in &results {
        let image = result["content"].as_array().unwrap().iter().find(|b| b["type"] == "image").expect("a screenshot");
        assert_eq!(image["source"]["media_type"], "image/png");
        let png = base64_decode(image["source"]["data"].as_str().unwrap());
        assert!(png.starts_with(b"\x89PNG"));
    }
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaking_openai_computer_is_a_function_and_screenshots_follow_as_user_image_parts() {
    let server = server_with_computer_use_model(ProviderKind::Openai).await;
    root_script(&server);
    server.llm.script_for(
        CHILD_PROMPT,
        [
            fake_llm::tool_calls(&[("cu-1", "computer", r#"{"action": "left_click", "coordinate": [10, 10]}"#)]),
            fake_llm::tool_calls(&[("cu-2", "computer", r#"{"action": "key", "text": "ctrl+l"}"#)]),
            fake_llm::text(REPORT),
        ],
    );
    let (token, root) = run_root_chat(&server).await;
    the_report_reached_the_root(&server, &root).await;

    let requests = requests_of_the_agent(&server);
    assert_eq!(requests.len(), 3);
    let tools = requests[0]["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 1, "a computer-use chat sees only `computer`: {tools:?}");
    assert_eq!(tools[0]["function"]["name"], "computer");
    assert!(tools[0]["function"]["parameters"]["properties"]["action"].is_object());
    let messages = requests[2]["messages"].as_array().unwrap();
    let tool_at = messages.iter().position(|m| m["role"] == "tool").unwrap();
    let after = &messages[tool_at + 1];
    assert_eq!(after["role"], "user", "the screenshot follows the tool message: {after}");
    let image = after["content"].as_array().unwrap().iter().find(|p| p["type"] == "image_url").unwrap();
    assert!(image["image_url"]["url"].as_str().unwrap().starts_with("data:image/png;base64,"));

    // The desktop WebSocket: the RFB handshake, and a framebuffer update, for the owner.
    let child = server.store.children(&root).await.unwrap().into_iter().next().unwrap();
    let mut watcher = Viewer::connect(&server.base, &token, &child.id, false).await.unwrap();
    assert_eq!((watcher.width, watcher.height), (1920, 1200), "ServerInit names the real display");
    assert_eq!(watcher.framebuffer_update().await, 0, "a FramebufferUpdate arrives");
    let mallory = server.user("mallory", false).await;
    let refused = Viewer::connect(&server.base, &mallory, &child.id, false).await.err().unwrap();
    assert!(refused.contains("404"), "another user's chat does not exist for them: {refused}");

    // A watcher's input goes nowhere; a take-over moves the pointer, and the next agent on the
    // desktop is told of it in its first `computer` result, which shows the pointer where the
    // person left it.
    watcher.point(100, 100, 0).await;
    let mut controller = Viewer::connect(&server.base, &token, &child.id, true).await.unwrap();
    controller.point(600, 300, 0).await;
    assert_eq!(controller.framebuffer_update().await, 0);
    const SECOND_ROOT: &str = "ROOT: look again";
    const SECOND_CHILD: &str = "SECOND CHILD: where is the pointer";
    root_script_for(&server, SECOND_ROOT, SECOND_CHILD);
    server.llm.script_for(
        SECOND_CHILD,
        [fake_llm::tool_calls(&[("cu-3", "computer", r#"{"action": "cursor_position"}"#)]), fake_llm::text(REPORT)],
    );
    let workspace = server.store.chat(&root).await.unwrap().unwrap().workspace_id.unwrap();
    let second = run_root_chat_on(&server, &token, &workspace, SECOND_ROOT).await;
    let agent = server.store.children(&second).await.unwrap().into_iter().next().unwrap();
    let results = tool_results(&server.store.messages(&agent.id, 0).await.unwrap());
    let (_, told, failed) = results.iter().find(|(name, _, _)| name == "computer").unwrap();
    assert!(!failed, "{told}");
    assert!(told.contains("a person used this desktop"), "the take-over is in the result: {told}");
    let (x, y) = Scaling::of_display(1920, 1200).to_model(600, 300);
    assert!(told.contains(&format!("X={x}, Y={y}")), "the pointer is where the person left it: {told}");
    drop((watcher, controller));
    server.finish().await;
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(text).unwrap()
}
