//! Signing in from a browser, over HTTP: a name and password give an `HttpOnly`,
//! `SameSite=Strict` session cookie; requests that change something need the session's CSRF
//! token as well; a WebSocket opened with the cookie must come from this server's pages;
//! attempts are limited; people make and revoke their own API tokens; the operator sets
//! passwords from the command line. And the app's pages are served at `/`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

#[path = "support/process.rs"]
mod process;
mod support;

use reqwest::StatusCode;
use reqwest::header::{COOKIE, SET_COOKIE};
use serde_json::{Value, json};
use support::{Backend, TestServer};

const PASSWORD: &str = "correct horse battery staple";

/// A browser's view of the server: the cookie it holds and the CSRF token its page read.
struct Browser {
    base: String,
    http: reqwest::Client,
    cookie: String,
    csrf: String,
}

impl Browser {
    async fn sign_in(server: &TestServer, name: &str, password: &str) -> Result<Browser, (StatusCode, Value)> {
        let http = reqwest::Client::new();
        let response = http
            .post(server.url("/api/v1/auth/sign-in"))
            .json(&json!({"name": name, "password": password}))
            .send()
            .await
            .unwrap();
        let status = response.status();
        let set_cookie = response.headers().get(SET_COOKIE).map(|v| v.to_str().unwrap().to_string());
        let body: Value = response.json().await.unwrap();
        if status != StatusCode::OK {
            return Err((status, body));
        }
        let set_cookie = set_cookie.expect("a session cookie");
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(set_cookie.contains(attribute), "{set_cookie}");
        }
        let cookie = set_cookie.split(';').next().unwrap().to_string();
        let csrf = body["csrf_token"].as_str().unwrap().to_string();
        Ok(Browser { base: server.base.clone(), http, cookie, csrf })
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>, csrf: bool) -> (StatusCode, Value) {
        let mut request = self.http.request(method, format!("{}{path}", self.base)).header(COOKIE, &self.cookie);
        if csrf {
            request = request.header("x-csrf-token", &self.csrf);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None, false).await
    }
}

async fn with_password(server: &TestServer, name: &str, admin: bool) {
    server.user(name, admin).await;
    let user = server.store.find_user(name).await.unwrap().unwrap();
    let hash = toolhost::accounts::hash_password(PASSWORD).unwrap();
    server.store.set_password_hash(&user.id, Some(&hash)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_browser_acts_only_with_its_csrf_token_and_signing_out_ends_the_session() {
    let server = TestServer::start(Backend::Sqlite).await;
    with_password(&server, "alice", false).await;
    let browser = Browser::sign_in(&server, "alice", PASSWORD).await.unwrap();

    let (status, session) = browser.get("/api/v1/auth/session").await;
    assert_eq!(status, StatusCode::OK, "{session}");
    assert_eq!(
        (session["user"]["name"].as_str(), session["csrf_token"].as_str()),
        (Some("alice"), Some(browser.csrf.as_str()))
    );
    assert_eq!(browser.get("/api/v1/chats").await.0, StatusCode::OK, "reads need the cookie only");

    let chat = json!({"content": [{"type": "text", "text": "hello"}]});
    let (status, refused) = browser.send(reqwest::Method::POST, "/api/v1/chats", Some(chat.clone()), false).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("x-csrf-token"), "{refused}");
    let (status, created) = browser.send(reqwest::Method::POST, "/api/v1/chats", Some(chat), true).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");

    let (status, _) = browser.send(reqwest::Method::POST, "/api/v1/auth/sign-out", None, true).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, ended) = browser.get("/api/v1/chats").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old cookie opens nothing: {ended}");
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_names_and_passwords_are_refused_alike_and_attempts_are_limited() {
    let server = TestServer::start(Backend::Sqlite).await;
    with_password(&server, "alice", false).await;
    server.user("tokens-only", false).await;
    let (wrong_password, a) = Browser::sign_in(&server, "alice", "not it at all").await.err().unwrap();
    let (no_such_user, b) = Browser::sign_in(&server, "nobody", PASSWORD).await.err().unwrap();
    let (no_password, c) = Browser::sign_in(&server, "tokens-only", PASSWORD).await.err().unwrap();
    assert_eq!(
        (wrong_password, no_such_user, no_password),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    assert!(a == b && b == c, "one answer for all three: {a} {b} {c}");

    // Ten attempts a minute per name: the eleventh waits, even with the right password.
    for _ in 0..9 {
        let _ = Browser::sign_in(&server, "alice", "still not it").await;
    }
    let response = reqwest::Client::new()
        .post(server.url("/api/v1/auth/sign-in"))
        .json(&json!({"name": "alice", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_attempts", "{body}");
    assert!(
        Browser::sign_in(&server, "someone-else", PASSWORD).await.is_err_and(|(s, _)| s == StatusCode::UNAUTHORIZED),
        "other names are not held up"
    );
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_make_and_revoke_their_own_api_tokens() {
    let server = TestServer::start(Backend::Sqlite).await;
    with_password(&server, "alice", false).await;
    let mallory = server.user("mallory", false).await;
    let browser = Browser::sign_in(&server, "alice", PASSWORD).await.unwrap();
    let (status, created) = browser
        .send(reqwest::Method::POST, "/api/v1/users/me/tokens", Some(json!({"label": "laptop script"})), true)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let token = created["token"].as_str().unwrap().to_string();
    let id = created["id"].as_str().unwrap().to_string();
    let (status, _) = server.get(&token, "/api/v1/chats").await;
    assert_eq!(status, StatusCode::OK, "the new token works for scripts");

    let (_, listed) = browser.get("/api/v1/users/me/tokens").await;
    let labels: Vec<&str> = listed["tokens"].as_array().unwrap().iter().map(|t| t["label"].as_str().unwrap()).collect();
    assert!(labels.contains(&"laptop script"), "{listed}");
    assert!(!listed.to_string().contains(&token), "a listed token never shows the token itself");

    let (status, _) = server.delete(&mallory, &format!("/api/v1/users/me/tokens/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nobody revokes another's token");
    let (status, _) = browser.send(reqwest::Method::DELETE, &format!("/api/v1/users/me/tokens/{id}"), None, true).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = server.get(&token, "/api/v1/chats").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "a revoked token opens nothing");
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_add_users_give_them_passwords_and_roles_and_revoke_their_tokens_sqlite() {
    admins_manage_users(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_add_users_give_them_passwords_and_roles_and_revoke_their_tokens_postgres() {
    admins_manage_users(Backend::Postgres).await;
}

async fn admins_manage_users(backend: Backend) {
    let server = TestServer::start(backend).await;
    with_password(&server, "root", true).await;
    let member = server.user("mallory", false).await;
    let admin = Browser::sign_in(&server, "root", PASSWORD).await.unwrap();
    let post = |path: &'static str, body: Value| admin.send(reqwest::Method::POST, path, Some(body), true);

    let (status, carol) = post("/api/v1/users", json!({"name": "carol", "password": "carol's passphrase"})).await;
    assert_eq!(status, StatusCode::CREATED, "{carol}");
    assert_eq!(carol["is_admin"], false);
    let carol_id = carol["id"].as_str().unwrap().to_string();
    let carol_browser = Browser::sign_in(&server, "carol", "carol's passphrase").await.expect("carol signs in");
    let (status, taken) = post("/api/v1/users", json!({"name": "carol"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{taken}");
    let (status, short) = post("/api/v1/users", json!({"name": "dave", "password": "short"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{short}");
    assert!(short["error"]["message"].as_str().unwrap().contains("at least 8"), "{short}");
    assert!(server.store.find_user("dave").await.unwrap().is_none(), "a refused user is not half made");

    let (status, listed) = admin.get("/api/v1/users").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let carol_row = listed["users"].as_array().unwrap().iter().find(|u| u["name"] == "carol").unwrap().clone();
    assert_eq!((carol_row["has_password"].as_bool(), carol_row["tokens"].as_i64()), (Some(true), Some(0)), "{listed}");
    let mallory_row = listed["users"].as_array().unwrap().iter().find(|u| u["name"] == "mallory").unwrap().clone();
    assert_eq!((mallory_row["has_password"].as_bool(), mallory_row["tokens"].as_i64()), (Some(false), Some(1)));
    assert!(!listed.to_string().contains("argon2"), "no password hash is ever shown: {listed}");

    // A new password signs the user's browsers out; a role is given and taken.
    let patch = |id: String, body: Value| {
        let admin = &admin;
        async move { admin.send(reqwest::Method::PATCH, &format!("/api/v1/users/{id}"), Some(body), true).await }
    };
    let (status, _) = patch(carol_id.clone(), json!({"password": "a brand new passphrase"})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(carol_browser.get("/api/v1/chats").await.0, StatusCode::UNAUTHORIZED, "her old session ended");
    assert!(Browser::sign_in(&server, "carol", "a brand new passphrase").await.is_ok());
    let (status, promoted) = patch(carol_id.clone(), json!({"admin": true})).await;
    assert_eq!((status, promoted["is_admin"].as_bool()), (StatusCode::OK, Some(true)), "{promoted}");
    let root_id = server.store.find_user("root").await.unwrap().unwrap().id;
    let (status, refused) = patch(root_id, json!({"admin": false})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(refused["error"]["message"].as_str().unwrap().contains("another admin"), "{refused}");
    let (status, _) = patch("no-such-user".into(), json!({"admin": true})).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A member's leaked token is stopped by an admin.
    let mallory_id = mallory_row["id"].as_str().unwrap();
    let (_, tokens) = admin.get(&format!("/api/v1/users/{mallory_id}/tokens")).await;
    let token_id = tokens["tokens"][0]["id"].as_str().unwrap();
    let revoke = format!("/api/v1/users/{mallory_id}/tokens/{token_id}");
    assert_eq!(admin.send(reqwest::Method::DELETE, &revoke, None, true).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        server.get(&member, "/api/v1/chats").await.0,
        StatusCode::UNAUTHORIZED,
        "the revoked token opens nothing"
    );

    // Members reach none of it.
    let alice = server.user("alice", false).await;
    for path in ["/api/v1/users", &format!("/api/v1/users/{carol_id}/tokens")] {
        assert_eq!(server.get(&alice, path).await.0, StatusCode::FORBIDDEN, "{path}");
    }
    assert_eq!(server.post(&alice, "/api/v1/users", json!({"name": "eve"})).await.0, StatusCode::FORBIDDEN);
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_cookie_opens_no_admin_api_and_no_websocket_from_another_site() {
    let server = TestServer::start(Backend::Sqlite).await;
    with_password(&server, "alice", false).await;
    let browser = Browser::sign_in(&server, "alice", PASSWORD).await.unwrap();
    let (status, refused) = browser.get("/api/v1/policy").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{refused}");

    let url = server.url("/api/v1/chats/watch").replace("http://", "ws://");
    let open = |origin: Option<&str>| {
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
        request.headers_mut().insert("cookie", browser.cookie.parse().unwrap());
        if let Some(origin) = origin {
            request.headers_mut().insert("origin", origin.parse().unwrap());
        }
        tokio_tungstenite::connect_async(request)
    };
    let foreign = open(Some("https://evil.example")).await.expect_err("refused");
    assert!(foreign.to_string().contains("403"), "{foreign}");
    let own = open(Some(&server.base)).await;
    assert!(own.is_ok(), "the server's own page opens it: {:?}", own.err());
    server.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_is_served_at_the_root_and_its_routes_fall_back_to_its_page() {
    let server = TestServer::start(Backend::Sqlite).await;
    let http = reqwest::Client::new();
    let page = http.get(server.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(policy.contains("default-src 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
    let html = page.text().await.unwrap();
    let scripts: Vec<&str> = html.split("src=\"").skip(1).filter_map(|s| s.split('"').next()).collect();
    let script = scripts.iter().find(|s| s.starts_with("/assets/")).unwrap_or_else(|| panic!("{html}")).to_string();
    // The theme is applied before the first paint by a file whose name stays: never cached stale.
    let theme = http.get(server.url("/theme.js")).send().await.unwrap();
    assert_eq!(theme.status(), StatusCode::OK);
    assert_eq!(theme.headers()["cache-control"], "no-cache");

    let asset = http.get(server.url(&script)).send().await.unwrap();
    assert_eq!(asset.status(), StatusCode::OK);
    assert!(asset.headers()["cache-control"].to_str().unwrap().contains("immutable"));
    assert!(asset.headers()["content-type"].to_str().unwrap().contains("javascript"));

    let route = http.get(server.url("/chats/some-chat")).send().await.unwrap();
    assert_eq!(route.status(), StatusCode::OK, "an app route gets the app's page");
    assert_eq!(route.text().await.unwrap(), html);
    for missing in ["/assets/missing.js", "/favicon.ico", "/api/v1/nothing-here", "/internal/v1/nothing"] {
        let response = http.get(server.url(missing)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{missing}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found", "{missing}: {body}");
    }
    server.finish().await;
}

#[test]
fn the_operator_sets_passwords_from_the_command_line() {
    let data = tempfile::tempdir().unwrap();
    let deployment = process::Deployment { data_dir: data.path().to_path_buf(), database_url: None, config_file: None };
    let with_stdin = |args: &[&str], input: &str| {
        use std::io::Write;
        let mut child = deployment
            .command()
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let short = with_stdin(&["users", "create", "bob", "--password"], "short\n");
    assert_eq!(short.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 8 characters"));
    let created = with_stdin(&["users", "create", "bob", "--password"], &format!("{PASSWORD}\n"));
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let changed = with_stdin(&["users", "set-password", "bob"], "another long password\n");
    assert!(changed.status.success(), "{}", String::from_utf8_lossy(&changed.stderr));
    let nobody = with_stdin(&["users", "set-password", "nobody"], "another long password\n");
    assert_eq!(nobody.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&nobody.stderr).contains("users create nobody --password"));

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let store = toolhost::store::Store::open(&toolhost::store::Store::sqlite_url(data.path())).await.unwrap();
        let accounts = toolhost::accounts::Accounts::new(store.clone(), std::time::Duration::from_secs(60));
        assert!(accounts.sign_in("bob", PASSWORD, None).await.is_err(), "the old password no longer opens");
        assert!(accounts.sign_in("bob", "another long password", None).await.is_ok());
        store.close().await;
    });
}
