//! `toolhost plugin install | enable | disable | remove`: plugins administered on a running
//! server through its API (`/api/v1/plugins`), so that every replica follows.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{ServerArgs, refuse};
use crate::config::Config;

/// How long `install` follows the server's compile before giving up (the plugin keeps going).
const FOLLOW_LIMIT: Duration = Duration::from_secs(600);

struct Server {
    client: reqwest::Client,
    base: String,
    token: String,
}

impl Server {
    fn new(config: &Config, args: &ServerArgs) -> anyhow::Result<Server> {
        let base = args.url.clone().unwrap_or_else(|| format!("http://{}", super::mcp::local_address(&config.listen)));
        Ok(Server {
            client: reqwest::Client::builder().build()?,
            base: base.trim_end_matches('/').to_string(),
            token: args.token.clone(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1/plugins{path}", self.base)
    }

    /// The answer's JSON, or the API's error message.
    async fn send(&self, request: reqwest::RequestBuilder) -> anyhow::Result<Result<(u16, Value), String>> {
        let response = request.bearer_auth(&self.token).send().await.map_err(|e| {
            anyhow::anyhow!("cannot reach the server at {} ({e}); is it running? Name it with --url", self.base)
        })?;
        let status = response.status().as_u16();
        let body: Value = if status == 204 { Value::Null } else { response.json().await.unwrap_or(Value::Null) };
        if status >= 400 {
            let message = body["error"]["message"].as_str().unwrap_or("the server refused").to_string();
            return Ok(Err(format!("{message} (HTTP {status})")));
        }
        Ok(Ok((status, body)))
    }
}

/// Uploads a component, then follows its check and compile on the server with a spinner.
pub(super) async fn install(
    config: &Config,
    file: &Path,
    args: &ServerArgs,
    disabled: bool,
) -> anyhow::Result<ExitCode> {
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        Err(e) => return refuse(format!("cannot read {}: {e}", file.display())),
    };
    let server = Server::new(config, args)?;
    let upload = server
        .client
        .post(server.url(&format!("?enabled={}", !disabled)))
        .header(reqwest::header::CONTENT_TYPE, "application/wasm")
        .body(bytes);
    let (status, plugin) = match server.send(upload).await? {
        Ok(answer) => answer,
        Err(message) => return refuse(message),
    };
    if status == 200 {
        eprintln!("toolhost: these bytes were uploaded before; following the plugin as it stands");
    }
    let Some(sha256) = plugin["sha256"].as_str().map(str::to_string) else {
        return refuse("the server's answer names no sha256");
    };
    let plugin = follow(&server, &sha256, plugin).await?;
    report(&plugin)
}

/// Polls the plugin until it is loaded, refused, failed or disabled, showing where it stands.
async fn follow(server: &Server, sha256: &str, mut plugin: Value) -> anyhow::Result<Value> {
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(120));
    let started = Instant::now();
    while matches!(plugin["state"].as_str(), Some("checking" | "loading" | "compiling"))
        && started.elapsed() < FOLLOW_LIMIT
    {
        let doing = if plugin["state"] == "compiling" { "compiling on the server" } else { "waiting to be checked" };
        spinner.set_message(format!("{doing} ({:.1} s)", started.elapsed().as_secs_f64()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        match server.send(server.client.get(server.url(&format!("/{sha256}")))).await? {
            Ok((_, latest)) => plugin = latest,
            Err(message) => {
                spinner.finish_and_clear();
                anyhow::bail!("{message}");
            }
        }
    }
    spinner.finish_and_clear();
    Ok(plugin)
}

fn report(plugin: &Value) -> anyhow::Result<ExitCode> {
    let name = plugin["name"].as_str().unwrap_or("the plugin");
    let sha = plugin["sha256"].as_str().unwrap_or("");
    let short = &sha[..sha.len().min(12)];
    match plugin["state"].as_str().unwrap_or("") {
        "loaded" => {
            let tools: Vec<&str> =
                plugin["tools"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
            let version = plugin["version"].as_str().unwrap_or("");
            println!("installed {name} {version} ({short}): {}", tools.join(", "));
            Ok(ExitCode::SUCCESS)
        }
        "disabled" => {
            println!("stored {short}, disabled: `toolhost plugin enable {sha}` loads it");
            Ok(ExitCode::SUCCESS)
        }
        "refused" | "failed" => refuse(format!("refused: {}", plugin["problem"].as_str().unwrap_or("no reason given"))),
        state => refuse(format!(
            "the server is still at `{state}` after {} s; `toolhost plugin list --url ...` or GET /api/v1/plugins/{sha} follows it",
            FOLLOW_LIMIT.as_secs()
        )),
    }
}

/// Enables or disables an uploaded plugin on every replica.
pub(super) async fn set_enabled(
    config: &Config,
    plugin: &str,
    args: &ServerArgs,
    enabled: bool,
) -> anyhow::Result<ExitCode> {
    let server = Server::new(config, args)?;
    let request = server.client.patch(server.url(&format!("/{plugin}"))).json(&json!({ "enabled": enabled }));
    let (_, view) = match server.send(request).await? {
        Ok(answer) => answer,
        Err(message) => return refuse(message),
    };
    if !enabled {
        println!("disabled {}", view["name"].as_str().unwrap_or(plugin));
        return Ok(ExitCode::SUCCESS);
    }
    let sha256 = view["sha256"].as_str().unwrap_or(plugin).to_string();
    let view = follow(&server, &sha256, view).await?;
    report(&view)
}

/// Removes an uploaded plugin from every replica.
pub(super) async fn remove(config: &Config, plugin: &str, args: &ServerArgs) -> anyhow::Result<ExitCode> {
    let server = Server::new(config, args)?;
    match server.send(server.client.delete(server.url(&format!("/{plugin}")))).await? {
        Ok(_) => {
            println!("removed {plugin}");
            Ok(ExitCode::SUCCESS)
        }
        Err(message) => refuse(message),
    }
}
