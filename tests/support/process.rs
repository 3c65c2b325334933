#![allow(dead_code)]
//! Real `toolhost` processes, started and stopped as an operator does: for what only a whole
//! process shows (signals, crashes, restarts). Included by the tests that use it
//! (`#[path = "support/process.rs"] mod process;`), not by `support`: the benchmarks share
//! `support`, and only tests know where the built binary is.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where a server keeps its state: a data directory, and a PostgreSQL database if given.
#[derive(Clone)]
pub struct Deployment {
    pub data_dir: PathBuf,
    pub database_url: Option<String>,
    /// A configuration file every command is given (`--config`).
    pub config_file: Option<PathBuf>,
}

impl Deployment {
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_toolhost"));
        command.arg("--data-dir").arg(&self.data_dir).env_remove("DATABASE_URL").env_remove("TOOLHOST_CONFIG");
        if let Some(file) = &self.config_file {
            command.arg("--config").arg(file);
        }
        if let Some(url) = &self.database_url {
            command.arg("--database-url").arg(url);
        }
        command
    }

    /// Runs a command such as `users create alice`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("toolhost runs")
    }

    /// A new user and a token for them, made with the command line.
    pub fn user_token(&self, name: &str) -> String {
        let created = self.run(&["users", "create", name]);
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
        let token = self.run(&["tokens", "create", name]);
        assert!(token.status.success(), "{}", String::from_utf8_lossy(&token.stderr));
        String::from_utf8(token.stdout).unwrap().trim().to_string()
    }

    /// Starts `serve` on an ephemeral port, its model at `model_url` (OpenAI wire format).
    pub fn serve(&self, model_url: &str, env: &[(&str, &str)]) -> Served {
        let mut command = self.command();
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--model", "test-model"])
            .env("OPENAI_BASE_URL", model_url)
            .env_remove("OPENAI_API_KEY")
            // Each server its own metrics port (the default one is a single machine-wide port).
            .env("TOOLHOST_METRICS_LISTEN", "127.0.0.1:0")
            .stderr(Stdio::piped())
            .stdout(Stdio::null());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().unwrap();
        let mut said = Vec::new();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        // It listens at once and loads plugins in the background: the tests start once both
        // are done, as an operator's server is after its first start.
        let (mut base, mut plugins_ready, mut metrics) = (None, false, None);
        while base.is_none() || !plugins_ready {
            let line = lines.next().expect("serve says where it listens and when its plugins are ready").unwrap();
            if let Some(rest) = line.strip_prefix("toolhost: listening on ") {
                base = Some(rest.split_whitespace().next().unwrap().to_string());
            }
            if let Some(rest) = line.strip_prefix("toolhost: metrics on ") {
                metrics = Some(rest.trim().to_string());
            }
            plugins_ready |= line.starts_with("toolhost: plugins ready");
            said.push(line);
        }
        let base = base.unwrap();
        // Keep draining what the server says, as a terminal would, and echo it for failures.
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                eprintln!("[server] {line}");
            }
        });
        Served { child: Some(child), base, metrics, said }
    }
}

/// A running `serve`; killed when dropped.
pub struct Served {
    child: Option<Child>,
    pub base: String,
    /// Its `/metrics` URL on the metrics address, unless the environment turned that off.
    pub metrics: Option<String>,
    /// What it printed until it listened and its plugins were ready.
    pub said: Vec<String>,
}

impl Served {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or_default()
    }

    /// SIGKILL: the process dies at once, in the middle of whatever it does.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status().unwrap();
        assert!(status.success());
    }

    /// Waits for the process to exit (up to `limit`); its status and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<(std::process::ExitStatus, Duration)> {
        let started = Instant::now();
        let child = self.child.as_mut()?;
        while started.elapsed() < limit {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some((status, started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGTERM, and the process must exit cleanly within a minute.
    pub fn stop(&mut self) {
        if self.child.is_some() {
            self.terminate();
            let (status, _) = self.wait_exit(Duration::from_secs(60)).expect("the server exits after SIGTERM");
            assert!(status.success(), "SIGTERM shuts down cleanly: {status}");
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A fresh data directory (and, for PostgreSQL, a fresh database) for one test.
pub async fn deployment(
    backend: crate::support::Backend,
    data_dir: &Path,
) -> (Deployment, crate::support::TestDatabase) {
    let database = crate::support::TestDatabase::create(backend).await;
    let database_url = matches!(backend, crate::support::Backend::Postgres).then(|| database.url.clone());
    (Deployment { data_dir: data_dir.to_path_buf(), database_url, config_file: None }, database)
}

/// A deployment configured as `builder` configures its in-process server, through a
/// configuration file: what several real replicas of one test server are started with.
pub async fn deployment_of(
    builder: &crate::support::TestServerBuilder,
    backend: crate::support::Backend,
    data_dir: &Path,
) -> (Deployment, crate::support::TestDatabase) {
    let (mut deployment, database) = deployment(backend, data_dir).await;
    let config = builder.config(data_dir, &database.url, None);
    let file = data_dir.join("toolhost.toml");
    std::fs::write(&file, config.to_toml().unwrap()).unwrap();
    deployment.config_file = Some(file);
    (deployment, database)
}
