//! One configuration, assembled from a TOML file, then the environment, then flags (flags win).
//! The environment and flags are read by clap (`TOOLHOST_*` variables); this module reads the
//! file and fills in the defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::plugins::{LimitsConfig, PluginLimits, PluginLimitsPatch, RuntimeOptions};

/// The TOML file, e.g.:
///
/// ```toml
/// data_dir = "/var/lib/toolhost"
/// plugins_dir = "/etc/toolhost/plugins"
///
/// [plugins]
/// max_concurrent_calls = 128
///
/// [plugins.defaults]
/// timeout_ms = 30000
/// memory_mib = 128
///
/// [plugins.limits.files]
/// timeout_ms = 10000
///
/// [providers.work-anthropic]
/// kind = "anthropic"
/// api_key_env = "WORK_ANTHROPIC_KEY"   # the variable holding the key; never the key itself
///
/// [models.sonnet]
/// provider = "work-anthropic"
/// model = "claude-sonnet-4-5"
/// context_window = 200000
/// pricing = { input = 3.0, output = 15.0, cache_read = 0.3, cache_write = 3.75 }
/// default = true
/// computer_use_model = true         # computer-use subagents run on it
/// computer_tool = "computer_20250124"   # Anthropic's native computer tool version it takes
///
/// [workspaces]
/// templates_dir = "/etc/toolhost/templates"   # default: <data_dir>/templates
/// sandbox = "bubblewrap"                      # or "unsandboxed" (commands get the server's rights)
/// max_command_seconds = 1800
///
/// [workspaces.limits]
/// cpu_seconds = 600      # per process
/// memory_mib = 4096      # address space per process
/// processes = 256        # at once, per sandbox
/// file_size_mib = 1024   # largest file a command writes
/// tmp_mib = 512          # the private /tmp
/// disk_mib = 4096        # the whole workspace
/// output_kib = 1024      # output kept per command
///
/// [agents]
/// max_depth = 1                 # root chats spawn children; children spawn none
/// max_concurrent_per_root = 8   # children of one tree running at once
/// max_spawns_per_turn = 16      # children one chat spawns in one turn
///
/// [approvals]                   # tool calls the policy's `require_approval` holds
/// timeout_secs = 900            # unanswered this long, a call is denied
///
/// [replicas]                    # several servers on one PostgreSQL database
/// relay_address = "http://10.0.0.5:7420"   # where the other replicas reach this one
/// stale_after_secs = 30         # a replica silent this long is gone: its chats run elsewhere
/// heartbeat_secs = 5
/// ```
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub plugins_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub listen: Option<String>,
    pub model: Option<String>,
    /// The key that seals provider API keys at rest (see `secrets`).
    pub secret_key_file: Option<PathBuf>,
    pub plugins: PluginsConfig,
    pub api: ApiConfig,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub models: BTreeMap<String, ModelConfig>,
    pub workspaces: crate::workspace::WorkspacesConfig,
    pub agents: AgentsConfig,
    pub approvals: ApprovalsConfig,
    pub replicas: ReplicasConfig,
}

/// How long a tool call waits for a person's approval unless configured: long enough to
/// answer from another room, short enough that a forgotten chat does not hold its turn all day.
pub const DEFAULT_APPROVAL_TIMEOUT_SECS: u64 = 900;

/// `[approvals]`: tool calls that the policy's `require_approval` holds for a person.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// Unanswered this long, a call is denied (the model is told nobody approved it).
    pub timeout_secs: u64,
}

impl Default for ApprovalsConfig {
    fn default() -> ApprovalsConfig {
        ApprovalsConfig { timeout_secs: DEFAULT_APPROVAL_TIMEOUT_SECS }
    }
}

/// How replicas sharing a PostgreSQL database find and trust each other (see `relay`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicasConfig {
    /// The base URL other replicas reach this one's relay endpoints at (its API address, as
    /// the other machines see it). Default: the listening address, when it names one host.
    pub relay_address: Option<String>,
    /// A replica whose heartbeat is this old is gone: its entry expires, and a chat it was
    /// running (which its database session no longer proves alive) runs elsewhere.
    pub stale_after_secs: u64,
    pub heartbeat_secs: u64,
}

impl Default for ReplicasConfig {
    fn default() -> ReplicasConfig {
        ReplicasConfig { relay_address: None, stale_after_secs: 30, heartbeat_secs: 5 }
    }
}

impl ReplicasConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat_secs == 0 || self.stale_after_secs < (self.heartbeat_secs * 2).max(3) {
            return Err(
                "[replicas] heartbeat_secs must be at least 1 and stale_after_secs at least twice it (and at least 3)"
                    .into(),
            );
        }
        if let Some(address) = &self.relay_address
            && !(address.starts_with("http://") || address.starts_with("https://"))
        {
            return Err(format!(
                "[replicas] relay_address `{address}` is not an http:// or https:// URL (such as http://10.0.0.5:7420)"
            ));
        }
        Ok(())
    }
}

/// A provider seeded at start (`source: config`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub kind: crate::llm::ProviderKind,
    pub base_url: Option<String>,
    /// The environment variable that holds the API key (default: the kind's own,
    /// `OPENAI_API_KEY` or `ANTHROPIC_API_KEY`).
    pub api_key_env: Option<String>,
}

/// A model config seeded at start (`source: config`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    pub provider: String,
    /// The provider's name for the model (default: the config's name).
    pub model: Option<String>,
    pub context_window: Option<i64>,
    pub max_output_tokens: Option<i64>,
    pub thinking_budget_tokens: Option<i64>,
    pub compaction_threshold: Option<f64>,
    pub pricing: Option<crate::store::Pricing>,
    #[serde(default)]
    pub default: bool,
    /// Use this model to write chat titles.
    #[serde(default)]
    pub title_model: bool,
    /// Run computer-use subagents on this model.
    #[serde(default)]
    pub computer_use_model: bool,
    /// Anthropic models: the computer tool version the model takes (`computer_20250124`,
    /// `computer_20251124`, `computer_toolset_20260801`).
    #[serde(default)]
    pub computer_tool: Option<crate::domain::ComputerTool>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Largest user message, all parts together.
    pub max_message_kib: usize,
    /// Longest a SIGTERM takes: the worker hands its chats back, streams get their `shutdown`
    /// event and close, and the process exits, at most this long after the signal.
    pub shutdown_timeout_secs: u64,
    /// How long a browser stays signed in.
    pub session_days: u64,
    /// Mark the session cookie `Secure` (sent over HTTPS only): set it when people reach the
    /// server through HTTPS, as they should from anywhere but this machine.
    pub secure_cookies: bool,
    /// Where `/metrics` is served without a token (Prometheus's scrape), off the public port;
    /// `off` for nowhere. The API's port serves it to admins' tokens either way.
    pub metrics_listen: String,
}

impl Default for ApiConfig {
    fn default() -> ApiConfig {
        ApiConfig {
            max_message_kib: 256,
            shutdown_timeout_secs: 10,
            session_days: 14,
            secure_cookies: false,
            metrics_listen: crate::metrics::DEFAULT_LISTEN.to_string(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    pub max_concurrent_calls: u32,
    /// Calls waiting on subagents, which give their running slot back while they wait.
    pub max_waiting_calls: u32,
    pub defaults: PluginLimits,
    /// Limits by plugin name; unset fields come from `defaults`.
    pub limits: BTreeMap<String, PluginLimitsPatch>,
}

impl Default for PluginsConfig {
    fn default() -> PluginsConfig {
        PluginsConfig {
            max_concurrent_calls: 128,
            max_waiting_calls: 256,
            defaults: PluginLimits::default(),
            limits: BTreeMap::new(),
        }
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where Toolhost keeps its state (database, caches).
    pub data_dir: PathBuf,
    /// Extra plugins: every `*.wasm` in it.
    pub plugins_dir: Option<PathBuf>,
    /// `postgres://...`, or `None` for SQLite in the data directory.
    pub database_url: Option<String>,
    /// Address `serve` listens on.
    pub listen: String,
    /// The model new chats use unless they name one.
    pub model: Option<String>,
    pub secret_key_file: Option<PathBuf>,
    pub plugins: PluginsConfig,
    pub api: ApiConfig,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub models: BTreeMap<String, ModelConfig>,
    pub workspaces: crate::workspace::WorkspacesConfig,
    pub agents: AgentsConfig,
    pub approvals: ApprovalsConfig,
    pub replicas: ReplicasConfig,
}

/// Values given on the command line or in the environment, which beat the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config_file: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub plugins_dir: Option<PathBuf>,
    pub database_url: Option<String>,
    pub listen: Option<String>,
    pub model: Option<String>,
    pub relay_address: Option<String>,
    pub metrics_listen: Option<String>,
}

/// Where `serve` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7420";

impl Config {
    pub fn load(overrides: &Overrides) -> anyhow::Result<Config> {
        let file = match &overrides.config_file {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        let data_dir = overrides.data_dir.clone().or(file.data_dir).unwrap_or_else(default_data_dir);
        let config = Config {
            data_dir,
            plugins_dir: overrides.plugins_dir.clone().or(file.plugins_dir),
            database_url: overrides.database_url.clone().or(file.database_url),
            listen: overrides.listen.clone().or(file.listen).unwrap_or_else(|| DEFAULT_LISTEN.to_string()),
            model: overrides.model.clone().or(file.model),
            secret_key_file: file.secret_key_file,
            plugins: file.plugins,
            api: ApiConfig {
                metrics_listen: overrides.metrics_listen.clone().unwrap_or(file.api.metrics_listen.clone()),
                ..file.api
            },
            providers: file.providers,
            models: file.models,
            workspaces: file.workspaces,
            agents: file.agents,
            approvals: file.approvals,
            replicas: ReplicasConfig {
                relay_address: overrides.relay_address.clone().or(file.replicas.relay_address),
                ..file.replicas
            },
        };
        config.replicas.validate().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
        config.limits().validate().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
        config.workspaces.limits.validate().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
        config.agents.validate().map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
        if config.approvals.timeout_secs == 0 {
            anyhow::bail!("configuration: approvals.timeout_secs must be at least 1");
        }
        if config.api.shutdown_timeout_secs == 0 {
            anyhow::bail!("configuration: api.shutdown_timeout_secs must be at least 1");
        }
        if config.plugins.max_concurrent_calls == 0 {
            anyhow::bail!("configuration: plugins.max_concurrent_calls must be at least 1");
        }
        Ok(config)
    }

    /// This configuration as a file would state it, for a server process to be started with
    /// exactly it (`toolhost serve --config FILE`).
    pub fn to_toml(&self) -> anyhow::Result<String> {
        let file = FileConfig {
            data_dir: Some(self.data_dir.clone()),
            plugins_dir: self.plugins_dir.clone(),
            database_url: self.database_url.clone(),
            listen: Some(self.listen.clone()),
            model: self.model.clone(),
            secret_key_file: self.secret_key_file.clone(),
            plugins: self.plugins.clone(),
            api: self.api.clone(),
            providers: self.providers.clone(),
            models: self.models.clone(),
            workspaces: self.workspaces.clone(),
            agents: self.agents.clone(),
            approvals: self.approvals.clone(),
            replicas: self.replicas.clone(),
        };
        Ok(toml::to_string(&file)?)
    }

    /// The database to use: the configured URL, or SQLite in the data directory.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| crate::store::Store::sqlite_url(&self.data_dir))
    }

    pub fn limits(&self) -> LimitsConfig {
        LimitsConfig { defaults: self.plugins.defaults.clone(), per_plugin: self.plugins.limits.clone() }
    }

    /// Compiled plugin code, keyed by component and engine.
    pub fn component_cache_dir(&self) -> PathBuf {
        self.data_dir.join("cache").join("components")
    }

    pub fn runtime_options(&self) -> RuntimeOptions {
        RuntimeOptions {
            cache_dir: Some(self.component_cache_dir()),
            plugins_dir: self.plugins_dir.clone(),
            include_bundled: true,
            limits: self.limits(),
            max_concurrent_calls: self.plugins.max_concurrent_calls,
            max_waiting_calls: self.plugins.max_waiting_calls,
        }
    }
}

/// `[agents]` in the configuration file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    /// How deep a tree may grow below its root chat: 1 lets root chats spawn children, and
    /// children none.
    pub max_depth: i64,
    /// Children of one tree whose turn is pending or running at once.
    pub max_concurrent_per_root: i64,
    /// Children one chat may spawn in one turn.
    pub max_spawns_per_turn: i64,
}

impl Default for AgentsConfig {
    fn default() -> AgentsConfig {
        AgentsConfig { max_depth: 1, max_concurrent_per_root: 8, max_spawns_per_turn: 16 }
    }
}

impl AgentsConfig {
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("max_depth", self.max_depth),
            ("max_concurrent_per_root", self.max_concurrent_per_root),
            ("max_spawns_per_turn", self.max_spawns_per_turn),
        ] {
            if value < 0 {
                return Err(format!("[agents] {name} must not be negative"));
            }
        }
        Ok(())
    }
}

fn read_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read the config file `{}`: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("the config file `{}` is invalid: {e}", path.display()))
}

/// `$XDG_DATA_HOME/toolhost` (usually `~/.local/share/toolhost`), or `./toolhost-data`.
fn default_data_dir() -> PathBuf {
    dirs::data_local_dir().map(|d| d.join("toolhost")).unwrap_or_else(|| PathBuf::from("toolhost-data"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_configuration_written_as_a_file_loads_as_the_same_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("toolhost.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9\"\n[plugins.limits.files]\ntimeout_ms = 10\n[agents]\nmax_depth = 3\n[workspaces.limits]\ntmp_mib = 7\n[providers.p]\nkind = \"anthropic\"\n[models.m]\nprovider = \"p\"\ndefault = true\n",
        )
        .unwrap();
        let loaded = Config::load(&Overrides { config_file: Some(file.clone()), ..Default::default() }).unwrap();
        let written = loaded.to_toml().unwrap();
        std::fs::write(&file, &written).unwrap();
        let again = Config::load(&Overrides { config_file: Some(file), ..Default::default() }).unwrap();
        assert_eq!(again.to_toml().unwrap(), written);
        for expected in
            ["max_depth = 3", "tmp_mib = 7", "timeout_ms = 10", "listen = \"127.0.0.1:9\"", "kind = \"anthropic\""]
        {
            assert!(written.contains(expected), "{expected} in:\n{written}");
        }
    }

    use super::*;

    #[test]
    fn flags_beat_the_file_and_per_plugin_limits_inherit_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("toolhost.toml");
        std::fs::write(
            &file,
            "data_dir = \"/from/file\"\nplugins_dir = \"/plugins/file\"\n[plugins.defaults]\nmemory_mib = 64\n[plugins.limits.files]\ntimeout_ms = 500\n",
        )
        .unwrap();
        let overrides =
            Overrides { config_file: Some(file), data_dir: Some("/from/flag".into()), ..Default::default() };
        let config = Config::load(&overrides).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(config.plugins_dir, Some(PathBuf::from("/plugins/file")));
        let files = config.limits().for_plugin("files");
        assert_eq!((files.timeout_ms, files.memory_mib), (500, 64));
    }

    #[test]
    fn an_unknown_key_or_an_impossible_limit_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "[plugins.defaults]\nmemory_gib = 1\n").unwrap();
        let err = Config::load(&Overrides { config_file: Some(file.clone()), ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("memory_gib"), "{err}");
        std::fs::write(&file, "[plugins.defaults]\nmemory_mib = 999999\n").unwrap();
        let err = Config::load(&Overrides { config_file: Some(file), ..Default::default() }).unwrap_err();
        assert!(err.to_string().contains("memory_mib"), "{err}");
    }
}
