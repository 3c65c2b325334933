//! Shared test set-up: a real server on an ephemeral port over a real database (SQLite in a
//! temporary folder, or a fresh PostgreSQL database on 127.0.0.1:5432).

#![allow(dead_code)]

pub mod fake_llm;
pub mod rfb;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;
use toolhost::agents::AgentsConfig;
use toolhost::api;
use toolhost::app::{App, Setup};
use toolhost::catalog::{Catalog, ModelInput, NewProvider};
use toolhost::chat::worker::WorkerSettings;
use toolhost::config::{Config, Overrides};
use toolhost::llm::retry::RetryPolicy;
use toolhost::llm::{ModelTimeouts, ProviderKind};
use toolhost::plugins::RuntimeOptions;
use toolhost::secrets::SecretBox;
use toolhost::store::Source;
use toolhost::store::Store;
use toolhost::workspace::WorkspaceService;

use fake_llm::FakeLlm;

#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs one async spec against both backends, as two tests.
#[macro_export]
#[allow(clippy::crate_in_macro_def)] // used only inside the test crate that defines it
macro_rules! on_both_backends {
    ($spec:ident) => {
        mod $spec {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$spec($crate::support::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$spec($crate::support::Backend::Postgres).await
            }
        }
    };
}

/// The PostgreSQL server tests use; CI machines have it on 127.0.0.1:5432 with trust auth.
fn postgres_admin_url() -> String {
    std::env::var("TOOLHOST_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database of its own for one test.
pub struct TestDatabase {
    pub url: String,
    pg_name: Option<String>,
    _dir: TempDir,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> TestDatabase {
        let dir = tempfile::tempdir().unwrap();
        match backend {
            Backend::Sqlite => TestDatabase { url: Store::sqlite_url(dir.path()), pg_name: None, _dir: dir },
            Backend::Postgres => {
                sqlx::any::install_default_drivers();
                let admin = postgres_admin_url();
                let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL tests need a server at {admin} (set TOOLHOST_TEST_POSTGRES_URL to use another): {e}"
                    )
                });
                let name = format!("toolhost_test_{}", uuid::Uuid::now_v7().simple());
                sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await.unwrap();
                let base = admin.rsplit_once('/').map(|(base, _)| base.to_string()).unwrap();
                TestDatabase { url: format!("{base}/{name}"), pg_name: Some(name), _dir: dir }
            }
        }
    }

    /// SQLite in `dir` (a folder the test controls, such as a small disk).
    pub fn sqlite_in(dir: &Path) -> TestDatabase {
        TestDatabase { url: Store::sqlite_url(dir), pg_name: None, _dir: tempfile::tempdir().unwrap() }
    }

    /// Drops the PostgreSQL database (a failed test leaves it behind, named toolhost_test_*).
    pub async fn drop_database(self) {
        if let Some(name) = &self.pg_name {
            let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&postgres_admin_url()).await.unwrap();
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await.unwrap();
        }
    }
}

pub struct TestServer {
    pub base: String,
    pub store: Store,
    pub http: reqwest::Client,
    pub llm: FakeLlm,
    /// The server's data directory: workspaces live in `workspaces/<id>/files` under it.
    pub data: TempDir,
    pub workspaces: Arc<WorkspaceService>,
    /// Third-party plugins the server loaded, kept for as long as it runs.
    _plugins: Option<TempDir>,
    database: TestDatabase,
    task: tokio::task::JoinHandle<()>,
    pub catalog: Arc<Catalog>,
    /// The server as `serve` builds it.
    app: App,
    stop_worker: CancellationToken,
    worker_task: Option<tokio::task::JoinHandle<()>>,
    /// Who its worker is to the database (`chats.worker_id`).
    pub worker_id: String,
    /// Ends its part in the relay (when it has one).
    stop_relay: CancellationToken,
}

/// Makes a [`TestServer`]: `TestServer::builder().backend(..).settings(..).fixtures(..).start()`.
/// The server is built by the same composition root as `serve` ([`App::build`]) from the
/// configuration [`TestServerBuilder::config`] gives, which real server processes can share.
pub struct TestServerBuilder {
    backend: Backend,
    database: Option<TestDatabase>,
    settings: WorkerSettings,
    /// Test fixtures (from tests/fixtures, e.g. `stand-ins`) to load as third-party plugins.
    fixtures: Vec<String>,
    /// Component files to load as third-party plugins besides.
    plugin_files: Vec<std::path::PathBuf>,
    agents: AgentsConfig,
    max_concurrent_calls: u32,
    /// Joins the other replicas on the database through the relay (PostgreSQL).
    relayed: bool,
    /// The database of the server this one is a replica of (which uses its model and drops it).
    replica_of: Option<String>,
    /// Limits by plugin name, as `[plugins.limits.NAME]` sets them.
    plugin_limits: Vec<(String, toolhost::plugins::PluginLimitsPatch)>,
}

impl TestServerBuilder {
    /// The server joins the other replicas of its database through the relay, as `serve` does.
    pub fn relayed(mut self) -> Self {
        self.relayed = true;
        self.backend = Backend::Postgres;
        self
    }

    /// Another replica of `first`'s deployment: its database, its model, the relay.
    pub fn replica_of(mut self, first: &TestServer) -> Self {
        self.replica_of = Some(first.database.url.clone());
        self.relayed()
    }

    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Over an existing test database (instead of a fresh one of the backend).
    pub fn database(mut self, database: TestDatabase) -> Self {
        self.database = Some(database);
        self
    }

    pub fn settings(mut self, settings: WorkerSettings) -> Self {
        self.settings = settings;
        self
    }

    /// Loads these component files as third-party plugins.
    pub fn plugin_files(mut self, files: &[std::path::PathBuf]) -> Self {
        self.plugin_files = files.to_vec();
        self
    }

    pub fn fixtures(mut self, fixtures: &[&str]) -> Self {
        self.fixtures = fixtures.iter().map(|f| f.to_string()).collect();
        self
    }

    pub fn agents(mut self, agents: AgentsConfig) -> Self {
        self.agents = agents;
        self
    }

    /// Limits of plugin `name`, as `[plugins.limits.NAME]` in the configuration file sets them.
    pub fn plugin_limits(mut self, name: &str, limits: toolhost::plugins::PluginLimitsPatch) -> Self {
        self.plugin_limits.push((name.to_string(), limits));
        self
    }

    /// Plugin calls that run at once.
    pub fn max_concurrent_calls(mut self, calls: u32) -> Self {
        self.max_concurrent_calls = calls;
        self
    }

    /// The server's configuration: its data in `data_dir`, its database at `database_url`.
    pub fn config(&self, data_dir: &Path, database_url: &str, plugins_dir: Option<&Path>) -> Config {
        let overrides = Overrides {
            data_dir: Some(data_dir.to_path_buf()),
            database_url: Some(database_url.to_string()),
            plugins_dir: plugins_dir.map(Path::to_path_buf),
            ..Overrides::default()
        };
        let mut config = Config::load(&overrides).unwrap();
        config.plugins.max_concurrent_calls = self.max_concurrent_calls;
        config.plugins.limits.extend(self.plugin_limits.iter().cloned());
        config.agents = self.agents.clone();
        config.api.max_message_kib = 64;
        config
    }

    pub async fn start(mut self) -> TestServer {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .try_init();
        let database = match (self.database.take(), &self.replica_of) {
            (Some(database), _) => database,
            // The first replica's: it drops it.
            (None, Some(url)) => TestDatabase { url: url.clone(), pg_name: None, _dir: tempfile::tempdir().unwrap() },
            (None, None) => TestDatabase::create(self.backend).await,
        };
        let plugins = (!self.fixtures.is_empty() || !self.plugin_files.is_empty()).then(|| {
            let dir = tempfile::tempdir().unwrap();
            for name in &self.fixtures {
                let built =
                    Path::new(env!("TOOLHOST_WASM_DIR")).join(format!("fixture_{}.wasm", name.replace('-', "_")));
                std::fs::copy(&built, dir.path().join(format!("{name}.wasm"))).unwrap();
            }
            for file in &self.plugin_files {
                std::fs::copy(file, dir.path().join(file.file_name().unwrap())).unwrap();
            }
            dir
        });
        let data = tempfile::tempdir().unwrap();
        let config = self.config(data.path(), &database.url, plugins.as_ref().map(TempDir::path));
        let setup = Setup {
            worker: Some(WorkerSettings { poll: Duration::from_millis(100), ..self.settings.clone() }),
            model_timeouts: ModelTimeouts { first_byte: Duration::from_secs(2), silence: Duration::from_secs(2) },
            secrets: Some(SecretBox::from_key([42; 32])),
            // Providers come from the test, never from the machine's environment.
            environment: |_| None,
        };
        let app = App::build(&config, setup).await.unwrap();
        // As `serve` does, plugins load in the background; tests start from a server whose
        // plugins are in service, as they would once an operator's server has loaded them.
        app.runtime.wait_started().await;
        let llm = FakeLlm::start().await;
        // The fake speaks both wire formats: `test-model` is the default on the OpenAI one.
        let fake = NewProvider {
            name: "fake".into(),
            kind: ProviderKind::Openai,
            base_url: Some(llm.base_url.clone()),
            api_key: None,
        };
        if self.replica_of.is_none() {
            app.catalog.create_provider(fake, Source::Api).await.unwrap();
            let model = ModelInput {
                name: Some("test-model".into()),
                provider: Some("fake".into()),
                context_window: Some(100_000),
                ..ModelInput::default()
            };
            app.catalog.save_model(None, model, Source::Api).await.unwrap();
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        let worker = app.worker();
        let worker_id = worker.id().to_string();
        let mut state = app.api_state(Default::default());
        let stop_relay = CancellationToken::new();
        if self.relayed {
            let relay = app.start_relay(&worker, Some(format!("http://{address}")), stop_relay.clone()).await;
            state.relay = relay.unwrap();
        }
        let stop_worker = CancellationToken::new();
        let worker_task = Some(tokio::spawn(worker.run(stop_worker.clone())));
        let task = tokio::spawn(async move {
            let app = api::router(state).into_make_service_with_connect_info::<SocketAddr>();
            axum::serve(listener, app).await.unwrap();
        });
        TestServer {
            base: format!("http://{address}"),
            store: app.store.clone(),
            catalog: app.catalog.clone(),
            http: reqwest::Client::new(),
            llm,
            data,
            workspaces: app.workspaces.clone(),
            database,
            task,
            app,
            stop_worker,
            worker_task,
            worker_id,
            stop_relay,
            _plugins: plugins,
        }
    }
}

/// Worker settings for tests: retries after milliseconds, not seconds.
pub fn test_settings() -> WorkerSettings {
    WorkerSettings {
        retry: RetryPolicy {
            max_attempts: 4,
            max_silent_attempts: 2,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(200),
        },
        ..WorkerSettings::default()
    }
}

impl TestServer {
    pub fn builder() -> TestServerBuilder {
        TestServerBuilder {
            backend: Backend::Sqlite,
            database: None,
            settings: test_settings(),
            fixtures: Vec::new(),
            plugin_files: Vec::new(),
            agents: AgentsConfig::default(),
            max_concurrent_calls: RuntimeOptions::default().max_concurrent_calls,
            relayed: false,
            replica_of: None,
            plugin_limits: Vec::new(),
        }
    }

    pub async fn start(backend: Backend) -> TestServer {
        TestServer::builder().backend(backend).start().await
    }

    /// A server with its worker, talking to a fresh fake model.
    pub async fn start_with(backend: Backend, settings: WorkerSettings) -> TestServer {
        TestServer::builder().backend(backend).settings(settings).start().await
    }

    /// A server that also loads these test fixtures as third-party plugins.
    pub async fn start_with_fixtures(backend: Backend, fixtures: &[&str]) -> TestServer {
        TestServer::builder().backend(backend).fixtures(fixtures).start().await
    }

    /// A server over an existing test database.
    pub async fn start_on(database: TestDatabase, settings: WorkerSettings) -> TestServer {
        TestServer::builder().database(database).settings(settings).start().await
    }

    /// A server whose subagents have these limits.
    pub async fn start_with_agents(backend: Backend, agents: AgentsConfig) -> TestServer {
        TestServer::builder().backend(backend).agents(agents).start().await
    }

    /// A server whose worker runs at most `chats` turns and whose plugins run at most `calls`
    /// calls at once.
    pub async fn start_with_slots(backend: Backend, chats: usize, calls: u32) -> TestServer {
        let settings = WorkerSettings { max_concurrent_chats: chats, ..test_settings() };
        TestServer::builder().backend(backend).settings(settings).max_concurrent_calls(calls).start().await
    }

    /// The PostgreSQL database's name (`None` for SQLite).
    pub fn database_name(&self) -> Option<String> {
        self.database.pg_name.clone()
    }

    /// A connection pool to the PostgreSQL server's admin database, for doing things to the
    /// test's database from outside (refusing connections, ending sessions).
    pub async fn postgres_admin(&self) -> sqlx::AnyPool {
        sqlx::any::install_default_drivers();
        sqlx::any::AnyPoolOptions::new().max_connections(1).connect(&postgres_admin_url()).await.unwrap()
    }

    /// POSTs JSON as `token`; returns the status and the JSON body.
    pub async fn post(&self, token: &str, path: &str, body: Value) -> (reqwest::StatusCode, Value) {
        let response = self.http.post(self.url(path)).bearer_auth(token).json(&body).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, token: &str, path: &str) -> (reqwest::StatusCode, Value) {
        let response = self.http.get(self.url(path)).bearer_auth(token).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn delete(&self, token: &str, path: &str) -> (reqwest::StatusCode, Value) {
        let response = self.http.delete(self.url(path)).bearer_auth(token).send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Waits (up to 20 s) until the chat's status is `status`; returns the chat.
    pub async fn wait_for_status(&self, token: &str, chat_id: &str, status: &str) -> Value {
        for _ in 0..400 {
            let (_, chat) = self.get(token, &format!("/api/v1/chats/{chat_id}")).await;
            if chat["status"] == status {
                return chat;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (_, chat) = self.get(token, &format!("/api/v1/chats/{chat_id}")).await;
        panic!("chat {chat_id} never reached `{status}`: {chat}");
    }

    /// Stops the worker as a shutdown does.
    pub async fn stop_worker(&mut self) {
        self.stop_worker.cancel();
        if let Some(task) = self.worker_task.take() {
            task.await.unwrap();
        }
    }

    /// Stops the worker as a shutdown does, and starts a new one, as a restarted server would,
    /// over the same database and workspaces.
    pub async fn restart_worker(&mut self) {
        self.stop_worker().await;
        self.stop_worker = CancellationToken::new();
        let worker = self.app.worker();
        self.worker_id = worker.id().to_string();
        self.worker_task = Some(tokio::spawn(worker.run(self.stop_worker.clone())));
    }

    /// A new user and a token for them.
    pub async fn user(&self, name: &str, admin: bool) -> String {
        let user = self.store.create_user(name, admin).await.unwrap();
        self.store.create_token(&user, "test").await.unwrap()
    }

    /// Waits (up to a minute) until the chat's turn is over; returns its messages.
    pub async fn finished(&self, chat: &str) -> Vec<toolhost::store::Message> {
        for _ in 0..1200 {
            let found = self.store.chat(chat).await.unwrap().unwrap();
            if matches!(found.status, toolhost::store::ChatStatus::Waiting | toolhost::store::ChatStatus::Error) {
                return self.store.messages(chat, 0).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("chat {chat} never finished its turn");
    }

    /// Where workspace `id` keeps its files, as the server reaches them (on a root server,
    /// inside its own mount namespace, where the workspace's file system is mounted).
    pub fn workspace_files(&self, id: &str) -> std::path::PathBuf {
        self.workspaces.local_files(id).expect("the local backend keeps files on this machine")
    }

    /// Fails (never skips) when this machine cannot run sandboxed commands: the README's test
    /// command installs bubblewrap first.
    pub fn require_sandbox(&self) {
        if let Some(problem) = self.workspaces.sandbox_problem() {
            panic!(
                "workspace commands cannot run here: {problem}. Run `bash .ci/system-deps` (the README's test command does)"
            );
        }
    }

    /// A workspace of `token`'s user made from `template`, ready (its startup script done).
    pub async fn ready_workspace(&self, token: &str, template: &str, parameters: Value) -> Value {
        let (status, workspace) = self
            .post(token, "/api/v1/workspaces", serde_json::json!({"template_id": template, "parameters": parameters}))
            .await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{workspace}");
        let id = workspace["id"].as_str().unwrap().to_string();
        for _ in 0..400 {
            let (_, workspace) = self.get(token, &format!("/api/v1/workspaces/{id}")).await;
            if workspace["status"] != "starting" && workspace["status"] != "created" {
                assert_eq!(workspace["status"], "ready", "{workspace}");
                return workspace;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("workspace {id} never finished starting");
    }

    /// A chat of `token`'s user, started with `text`, in a new ready `blank` workspace; returns
    /// the chat's id and the folder of the workspace's files.
    pub async fn chat_with_workspace(&self, token: &str, text: &str) -> (String, std::path::PathBuf) {
        let workspace = self.ready_workspace(token, "blank", serde_json::json!({})).await;
        let body = serde_json::json!({"content": [{"type": "text", "text": text}], "workspace_id": workspace["id"]});
        let (status, chat) = self.post(token, "/api/v1/chats", body).await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{chat}");
        (chat["id"].as_str().unwrap().to_string(), self.workspace_files(workspace["id"].as_str().unwrap()))
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn finish(mut self) {
        self.stop_worker().await;
        self.stop_relay.cancel();
        self.task.abort();
        self.store.close().await;
        self.database.drop_database().await;
    }
}

/// How many processes on this machine have `needle` in their command line (arguments are
/// separated by NUL bytes).
/// A Python virtual environment under the target folder with `requirement` (a pinned PyPI
/// package, `name==version`) installed from PyPI; made on first use and again when the pin
/// changes. Returns the environment's folder (`bin/` holds its commands).
pub fn python_venv_with(folder: &str, requirement: &str) -> std::path::PathBuf {
    // Benchmarks share this module; only tests have a target temporary folder.
    let parent = option_env!("CARGO_TARGET_TMPDIR").map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let venv = parent.join(folder);
    let installed = venv.join("installed.txt");
    if std::fs::read_to_string(&installed).ok().as_deref() == Some(requirement) && venv.join("bin/python").is_file() {
        return venv;
    }
    let made = std::process::Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .output()
        .expect("python3 runs (bash .ci/system-deps installs it)");
    assert!(
        made.status.success(),
        "a Python virtual environment cannot be made (bash .ci/system-deps installs python3-venv): {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let pip = std::process::Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", requirement])
        .output()
        .unwrap();
    assert!(pip.status.success(), "pip cannot install {requirement}: {}", String::from_utf8_lossy(&pip.stderr));
    std::fs::write(&installed, requirement).unwrap();
    venv
}

pub fn processes_running(needle: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().chars().all(|c| c.is_ascii_digit()))
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle)))
        .count()
}

/// Each tool result of `messages`: (tool, text, is_error), in order.
pub fn tool_results(messages: &[toolhost::store::Message]) -> Vec<(String, String, bool)> {
    messages
        .iter()
        .flat_map(|m| m.content.iter())
        .filter_map(|part| match part {
            toolhost::domain::parts::MessagePart::ToolResult { tool_name, result, is_error, .. } => {
                Some((tool_name.clone(), result.as_str().unwrap_or_default().to_string(), *is_error))
            }
            _ => None,
        })
        .collect()
}

/// A small disk (a tmpfs) to fill up; unmounted when dropped. Mounting needs root, as CI has.
pub struct SmallDisk {
    dir: TempDir,
}

impl SmallDisk {
    pub fn mount(mib: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(
            mounted.success(),
            "this test fills a small tmpfs, which only root can mount: run the tests as root (CI does)"
        );
        SmallDisk { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file until the disk is full; returns its path (remove it to make room).
    pub fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.dir.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        for size in [64 * 1024, 4096, 512] {
            let block = vec![0u8; size];
            while file.write_all(&block).is_ok() {}
        }
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Reads SSE events from the chat's stream until `until` says stop (or 20 s pass).
pub async fn read_stream(
    server: &TestServer,
    token: &str,
    chat: &str,
    after: Option<i64>,
    until: impl Fn(&[Value]) -> bool,
) -> Vec<(Option<i64>, Value)> {
    let mut request = server
        .http
        .get(server.url(&format!("/api/v1/chats/{chat}/stream")))
        .bearer_auth(token)
        .header("accept", "text/event-stream");
    if let Some(after) = after {
        request = request.query(&[("after", after)]);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let mut events: Vec<(Option<i64>, Value)> = Vec::new();
    let mut stream = eventsource_stream::Eventsource::eventsource(response.bytes_stream());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Ok(Some(Ok(event))) = tokio::time::timeout_at(deadline, stream.next()).await {
        if event.data == "ping" || event.event == "ping" {
            continue;
        }
        let value: Value = serde_json::from_str(&event.data).unwrap();
        events.push((event.id.parse().ok(), value));
        let values: Vec<Value> = events.iter().map(|(_, v)| v.clone()).collect();
        if until(&values) {
            break;
        }
    }
    events
}
