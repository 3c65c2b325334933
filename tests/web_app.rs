//! The web app in a real browser: the server (as `serve` builds it, the app's files built into
//! it) with the fake model, and Debian's Chromium driven by Playwright through
//! `web/tests/app.e2e.mjs`: sign in, stream, reload mid-stream, edit, queue and promote,
//! interrupt, a tool call, a subagent, the git diff of a write, the desktop in noVNC (watch, take
//! over, give back), API tokens, a member kept out of
//! administration, an admin's policy refused at its line then saved, explain, versions and
//! restore, sign out. Screenshots land in `target/web-screenshots/`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use std::path::PathBuf;
use std::time::Duration;

use support::{Backend, TestServer, fake_llm};

const STORY: &str = "Once upon a time a small agent read every file twice and wrote each answer once, and everyone who reloaded the page saw every word of it exactly one time. The end.";
const AGAIN: &str = "The second telling is shorter.";
const PASSWORD: &str = "correct horse battery staple";
const ADMIN_PASSWORD: &str = "the admin's own long passphrase";

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn script_the_model(server: &TestServer) {
    let llm = &server.llm;
    llm.script_for("STORY:", [fake_llm::slow_text(STORY, Duration::from_millis(60)), fake_llm::text(AGAIN)]);
    let long = |words: usize| format!("Slowly {} THE END", "word ".repeat(words));
    llm.script_for(
        "QUEUE:",
        [
            fake_llm::slow_text(&long(600), Duration::from_millis(50)),
            fake_llm::text("the answer to the second"),
            fake_llm::text("the answer to the first"),
        ],
    );
    llm.script_for("INTERRUPT:", [fake_llm::slow_text(&long(600), Duration::from_millis(50))]);
    llm.script_for(
        "TOOL:",
        [fake_llm::tool_calls(&[("t1", "list_templates", "{}")]), fake_llm::text("There is a blank template.")],
    );
    llm.script_for(
        "APPROVE:",
        [fake_llm::tool_calls(&[("p1", "list_templates", "{}")]), fake_llm::text("Listed, once you approved.")],
    );
    let spawn = serde_json::json!({"prompt": "CHILD: write the report", "title": "helper"}).to_string();
    llm.script_for(
        "AGENT:",
        [fake_llm::tool_calls(&[("a1", "spawn_agent", &spawn)]), fake_llm::text("The helper is on it.")],
    );
    llm.script_for("CHILD:", [fake_llm::text("the helper's report")]);
    llm.script_for(
        "GIT:",
        [
            fake_llm::tool_calls(&[(
                "g1",
                "create_workspace",
                r#"{"template_id": "starter", "parameters": {"project": "demo"}}"#,
            )]),
            fake_llm::tool_calls(&[(
                "g2",
                "write_file",
                r#"{"path": "notes.txt", "content": "hello from the agent\n"}"#,
            )]),
            fake_llm::text("Notes written."),
        ],
    );
}

async fn with_password(server: &TestServer, name: &str, admin: bool, password: &str) {
    server.user(name, admin).await;
    let user = server.store.find_user(name).await.unwrap().unwrap();
    let hash = toolhost::accounts::hash_password(password).unwrap();
    server.store.set_password_hash(&user.id, Some(&hash)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_real_browser_a_person_signs_in_chats_steers_and_never_sees_a_word_twice() {
    let server = TestServer::start(Backend::Sqlite).await;
    server.require_sandbox();
    with_password(&server, "alice", false, PASSWORD).await;
    with_password(&server, "root", true, ADMIN_PASSWORD).await;
    script_the_model(&server);

    let screenshots = workspace_root().join("target/web-screenshots");
    let run = tokio::process::Command::new("node")
        .arg(workspace_root().join("web/tests/app.e2e.mjs"))
        .env("BASE_URL", &server.base)
        .env("NAME", "alice")
        .env("PASSWORD", PASSWORD)
        .env("ADMIN_NAME", "root")
        .env("ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("SCREENSHOTS", &screenshots)
        .env("STORY", STORY)
        .env("AGAIN", AGAIN)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the browser run ends within 5 minutes")
        .expect("run `bash .ci/system-deps` to install Node.js and Chromium");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    println!("{said}");
    assert!(output.status.success(), "the browser run failed (screenshots in {}):\n{said}", screenshots.display());
    assert!(said.contains("all steps passed"), "{said}");
    server.finish().await;
}
