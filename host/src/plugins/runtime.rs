//! The plugin runtime: one engine, one pre-linked instance template per plugin, and a fresh
//! store and instance for every call, so calls never share state and run concurrently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tracing::Instrument;
use wasmtime::component::Linker;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::workspace::confined::WorkspaceRoot;

use super::bindings::toolhost::plugin::types as wit;
use super::bindings::{Tool, ToolPre};
use super::bundled::BUNDLED;
use super::cache::ComponentCache;
use super::errors::ToolErrorKind;
use super::inspect::{SUPPORTED_WIT_VERSION, inspect};
use super::limits::MAX_MEMORY_MIB;
use super::output::{convert, result_size};
use super::registry::{PluginInfo, PluginSource, RuntimeOptions, check_description};
use super::slots::CallSlots;
use super::{
    CallError, CallLimiter, LimitHit, LimitsConfig, LoadError, PluginLimits, PluginLimitsPatch, Refusal, ToolOutput,
};
use crate::domain::{ChatKind, ToolInfo};
use crate::plugins::capabilities::settings::Settings;
use crate::plugins::capabilities::{self, CallIdentity, CallSetup, CallState, Capability, Grants, ProgressSink};

/// Wasm stack available to a call; deeper recursion traps as a stack overflow.
const MAX_WASM_STACK_BYTES: usize = 512 * 1024;
/// How often the epoch advances; a running guest yields to the scheduler at each tick, which
/// is also how a CPU-bound loop is stopped when its call's time is up.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// Guest output (stdout and stderr) kept per call, to explain crashes.
const GUEST_OUTPUT_BYTES: usize = 64 * 1024;
/// Memory, table and stack bytes of a pooled slot kept resident between calls.
const KEEP_RESIDENT_BYTES: usize = 2 * 1024 * 1024;

/// Who is calling, on behalf of which chat.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CallContext {
    pub chat_id: String,
    pub root_chat_id: String,
    pub parent_chat_id: Option<String>,
    pub kind: ChatKind,
    pub user_id: String,
    pub call_id: String,
}

impl CallContext {
    fn to_wit(&self) -> wit::CallContext {
        wit::CallContext {
            chat_id: self.chat_id.clone(),
            root_chat_id: self.root_chat_id.clone(),
            parent_chat_id: self.parent_chat_id.clone(),
            kind: match self.kind {
                // An MCP client is a person's own agent, at the root of its conversation; the
                // WIT contract's kinds stay as they are so that built plugins keep loading.
                ChatKind::Root | ChatKind::Mcp => wit::ChatKind::Root,
                ChatKind::Subagent => wit::ChatKind::Subagent,
                ChatKind::ComputerUse => wit::ChatKind::ComputerUse,
            },
            user_id: self.user_id.clone(),
            call_id: self.call_id.clone(),
        }
    }
}

/// One tool call.
#[derive(Clone)]
pub struct CallRequest {
    pub tool: String,
    pub arguments: serde_json::Value,
    pub context: CallContext,
    /// The chat's workspace root, if it has one.
    pub workspace: Option<WorkspaceRoot>,
    /// The chat's services (workspaces, commands, agents) and the chat tree; `None` outside a
    /// chat.
    pub chat: Option<capabilities::ChatServices>,
    /// Capabilities granted for this call; `None` grants what the plugin imports.
    pub grants: Option<Grants>,
    pub progress: Option<ProgressSink>,
}

/// A plugin ready to be called. Never changed in place: new limits make a new one, so a call
/// keeps the plugin it started with.
struct LoadedPlugin {
    info: PluginInfo,
    source: PluginSource,
    pre: ToolPre<CallState>,
    limits: PluginLimits,
    /// What an admin set for it (capability `settings`).
    settings: Arc<serde_json::Value>,
    /// What `describe` returned, kept to re-derive the plugin with other limits.
    tools: Vec<ToolEntryParts>,
}

#[derive(Clone)]
struct ToolEntryParts {
    name: String,
    validator: Arc<jsonschema::Validator>,
}

#[derive(Clone)]
struct ToolEntry {
    plugin: Arc<LoadedPlugin>,
    validator: Arc<jsonschema::Validator>,
}

/// What to run inside a fresh instance.
enum Operation<'a> {
    Describe,
    Invoke { context: &'a wit::CallContext, tool: &'a str, arguments: &'a str },
}

enum Outcome {
    Described(wit::PluginDescription),
    Invoked(Result<wit::ToolResult, wit::ToolError>),
}

/// The plugins in service at one moment. Replaced whole when a plugin comes or goes, so a
/// call, a tool list or a policy sees one consistent set.
#[derive(Clone, Default)]
pub struct PluginSet {
    plugins: Vec<Arc<LoadedPlugin>>,
    tools: BTreeMap<String, ToolEntry>,
    refused: Vec<Refusal>,
}

impl PluginSet {
    /// The loaded plugins, in load order.
    pub fn plugins(&self) -> impl Iterator<Item = &PluginInfo> {
        self.plugins.iter().map(|p| &p.info)
    }

    /// Every tool of every loaded plugin.
    pub fn tools(&self) -> impl Iterator<Item = &ToolInfo> {
        self.plugins.iter().flat_map(|p| p.info.tools.iter())
    }

    pub fn plugin(&self, name: &str) -> Option<&PluginInfo> {
        self.plugins().find(|p| p.name == name)
    }

    pub fn tool(&self, name: &str) -> Option<&ToolInfo> {
        self.tools.get(name).and_then(|entry| entry.plugin.info.tools.iter().find(|t| t.name == name))
    }

    /// Plugins that were not loaded, and why.
    pub fn refused(&self) -> &[Refusal] {
        &self.refused
    }

    fn closest_tool(&self, name: &str) -> Option<String> {
        self.tools
            .keys()
            .map(|candidate| (strsim::levenshtein(name, candidate), candidate))
            .filter(|(distance, _)| *distance <= 3)
            .min()
            .map(|(_, candidate)| candidate.clone())
    }

    /// This set with `plugin` added, in place of the plugin named `replaces` if given.
    fn with(&self, plugin: LoadedPlugin, replaces: Option<&str>) -> PluginSet {
        let mut next = self.without(|p| Some(p.info.name.as_str()) == replaces);
        let plugin = Arc::new(plugin);
        for tool in &plugin.tools {
            next.tools
                .insert(tool.name.clone(), ToolEntry { plugin: plugin.clone(), validator: tool.validator.clone() });
        }
        next.plugins.push(plugin);
        next
    }

    fn without(&self, remove: impl Fn(&LoadedPlugin) -> bool) -> PluginSet {
        let plugins: Vec<Arc<LoadedPlugin>> = self.plugins.iter().filter(|p| !remove(p)).cloned().collect();
        let tools =
            self.tools.iter().filter(|(_, e)| !remove(&e.plugin)).map(|(k, e)| (k.clone(), e.clone())).collect();
        PluginSet { plugins, tools, refused: self.refused.clone() }
    }
}

/// A component compiled, linked and described, not yet in service.
pub struct Prepared {
    source: PluginSource,
    settings: Arc<serde_json::Value>,
    description: wit::PluginDescription,
    pre: ToolPre<CallState>,
    facts: super::ComponentFacts,
    sha256: String,
    from_cache: bool,
}

impl Prepared {
    /// The name its `describe` gave.
    pub fn name(&self) -> &str {
        &self.description.name
    }

    pub fn version(&self) -> &str {
        &self.description.version
    }
}

/// A plugin being compiled, for the lists that say what is not ready yet.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Compiling {
    /// The file, `bundled:NAME` or `uploaded:SHA256`.
    pub source: String,
    /// Milliseconds since the epoch at which compiling started.
    pub since_ms: i64,
}

/// Loaded plugins and the machinery to call their tools.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<CallState>,
    cache: ComponentCache,
    limits: LimitsConfig,
    set: std::sync::RwLock<Arc<PluginSet>>,
    compiling: std::sync::Mutex<Vec<Compiling>>,
    /// Bumped at every change of the set; what follows it (the policy's inventory) listens.
    changes: watch::Sender<u64>,
    /// `true` once the plugins configured at start are loaded (or refused).
    started: watch::Sender<bool>,
    slots: CallSlots,
    metrics: super::metrics::RuntimeMetrics,
}

impl PluginRuntime {
    /// Sets up the engine and loads the bundled plugins and every `*.wasm` of the plugins
    /// directory, returning when all are loaded. A plugin that fails a check is refused (see
    /// [`PluginSet::refused`]) and the others still load.
    pub async fn load(options: RuntimeOptions) -> Result<PluginRuntime, LoadError> {
        let runtime = PluginRuntime::new(&options)?;
        runtime.load_configured(options.include_bundled, Self::configured_files(&options)?).await;
        runtime.mark_started();
        Ok(runtime)
    }

    /// The component files to load at start: the plugins directory's `*.wasm`, by name.
    pub fn configured_files(options: &RuntimeOptions) -> Result<Vec<PathBuf>, LoadError> {
        match &options.plugins_dir {
            Some(dir) => wasm_files(dir),
            None => Ok(Vec::new()),
        }
    }

    /// Loads the bundled plugins (if `bundled`), then `files`, each put in service as soon as
    /// it is ready.
    pub async fn load_configured(&self, bundled: bool, files: Vec<PathBuf>) {
        if bundled {
            for (name, bytes) in BUNDLED {
                self.add(PluginSource::Bundled(name), bytes.to_vec()).await;
            }
        }
        for path in files {
            match std::fs::read(&path) {
                Ok(bytes) => self.add(PluginSource::File(path), bytes).await,
                Err(e) => self.refuse(PluginSource::File(path), format!("it cannot be read: {e}")),
            }
        }
    }

    /// Says that the plugins to load at start are loaded (or refused): calls of unknown tools
    /// stop waiting for them.
    pub fn mark_started(&self) {
        self.started.send_replace(true);
    }

    /// The limits a plugin named `name` gets: the configured ones, with `extra` on top.
    pub fn limits_for(&self, name: &str, extra: Option<&PluginLimitsPatch>) -> PluginLimits {
        self.limits.for_plugin_with(name, extra)
    }

    /// Loads one component file on its own, for `plugin inspect`.
    pub async fn inspect_file(options: &RuntimeOptions, path: &Path) -> Result<Result<PluginInfo, Refusal>, LoadError> {
        let runtime = PluginRuntime::new(options)?;
        runtime.mark_started();
        let source = PluginSource::File(path.to_path_buf());
        match std::fs::read(path) {
            Ok(bytes) => runtime.add(source, bytes).await,
            Err(e) => runtime.refuse(source, format!("it cannot be read: {e}")),
        }
        let set = runtime.loaded();
        Ok(match (set.refused.last(), set.plugins.first()) {
            (Some(refusal), _) => Err(refusal.clone()),
            (None, Some(plugin)) => Ok(plugin.info.clone()),
            (None, None) => unreachable!("a component is either loaded or refused"),
        })
    }

    /// A runtime with no plugins yet.
    pub fn new(options: &RuntimeOptions) -> Result<PluginRuntime, LoadError> {
        options.limits.validate().map_err(LoadError::Limits)?;
        let engine = new_engine(options.max_concurrent_calls + options.max_waiting_calls)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        capabilities::add_all_to_linker(&mut linker).map_err(|e| LoadError::Engine(e.to_string()))?;
        start_epoch_ticker(&engine)
            .map_err(|e| LoadError::Engine(format!("cannot start the epoch thread that enforces time limits: {e}")))?;
        Ok(PluginRuntime {
            cache: ComponentCache::new(&engine, options.cache_dir.clone()),
            engine,
            linker,
            limits: options.limits.clone(),
            set: Default::default(),
            compiling: Default::default(),
            changes: watch::Sender::new(0),
            started: watch::Sender::new(false),
            slots: CallSlots::new(options.max_concurrent_calls as usize, options.max_waiting_calls as usize),
            metrics: super::metrics::RuntimeMetrics::new(),
        })
    }

    /// Adds the runtime's metrics (tool calls, instantiation, compile cache, limits hit) to a
    /// server's registry.
    pub fn register_metrics(&self, registry: &mut crate::metrics::Registry) {
        self.metrics.register(registry);
    }

    /// Calls that wait on other chats in a waiting slot right now (their chats wait on
    /// subagents, so the worker does not count them either).
    pub fn waiting_calls(&self) -> usize {
        self.slots.waiting()
    }

    /// The plugins in service now.
    pub fn loaded(&self) -> Arc<PluginSet> {
        self.set.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Plugins being compiled now.
    pub fn compiling(&self) -> Vec<Compiling> {
        self.compiling.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether the plugins configured at start are all loaded (or refused).
    pub fn started(&self) -> bool {
        *self.started.borrow()
    }

    /// Waits until the plugins configured at start are loaded (or refused).
    pub async fn wait_started(&self) {
        let mut started = self.started.subscribe();
        let _ = started.wait_for(|done| *done).await;
    }

    /// Changes whenever the set of plugins in service does.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// How many times the set of plugins in service has changed.
    pub fn generation(&self) -> u64 {
        *self.changes.borrow()
    }

    fn swap(&self, change: impl FnOnce(&PluginSet) -> Result<PluginSet, String>) -> Result<(), String> {
        let mut set = self.set.write().unwrap_or_else(|p| p.into_inner());
        *set = Arc::new(change(&set)?);
        drop(set);
        self.changes.send_modify(|generation| *generation += 1);
        Ok(())
    }

    fn refuse(&self, source: PluginSource, reason: String) {
        let refusal = Refusal { source: source.label(), reason };
        tracing::error!(source = %refusal.source, reason = %refusal.reason, "plugin refused");
        let _ = self.swap(|set| {
            let mut next = set.clone();
            next.refused.retain(|r| r.source != refusal.source);
            next.refused.push(refusal);
            Ok(next)
        });
    }

    /// Compiles, checks and puts a component in service; a failure is recorded as a refusal.
    async fn add(&self, source: PluginSource, bytes: Vec<u8>) {
        let outcome = match self.prepare(source.clone(), bytes, serde_json::json!({})).await {
            Ok(prepared) => self.insert(prepared, None).map(|_| ()),
            Err(reason) => Err(reason),
        };
        if let Err(reason) = outcome {
            self.refuse(source, reason);
        }
    }

    /// Compiles (or loads from cache, off the async threads), inspects, links and describes a
    /// component with its `settings` (an object; `{}` for none). Nothing is put in service.
    pub async fn prepare(
        &self,
        source: PluginSource,
        bytes: Vec<u8>,
        settings: serde_json::Value,
    ) -> Result<Prepared, String> {
        let label = source.label();
        let since_ms = crate::store::now_ms();
        self.compiling.lock().unwrap_or_else(|p| p.into_inner()).push(Compiling { source: label.clone(), since_ms });
        let prepared = self.compile_and_describe(source, bytes, Arc::new(settings)).await;
        self.compiling.lock().unwrap_or_else(|p| p.into_inner()).retain(|c| c.source != label);
        prepared
    }

    async fn compile_and_describe(
        &self,
        source: PluginSource,
        bytes: Vec<u8>,
        settings: Arc<serde_json::Value>,
    ) -> Result<Prepared, String> {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        super::inspect::check_imports(&bytes)?;
        let (engine, cache, key) = (self.engine.clone(), self.cache.clone(), sha256.clone());
        let compiled = tokio::task::spawn_blocking(move || cache.load_or_compile(&engine, &bytes, &key))
            .await
            .map_err(|e| format!("compiling it failed: {e}"))?;
        let (component, from_cache) =
            compiled.map_err(|e| format!("it is not a valid WebAssembly component: {}", e.root_cause()))?;
        self.metrics.compiled(from_cache);
        let facts = inspect(&self.engine, &component)?;
        let instance_pre =
            self.linker.instantiate_pre(&component).map_err(|e| format!("it cannot be linked: {}", e.root_cause()))?;
        let pre = ToolPre::new(instance_pre)
            .map_err(|e| format!("it does not match the `tool` world: {}", e.root_cause()))?;
        let identity = CallIdentity {
            plugin: source.label(),
            tool: "describe".into(),
            chat_id: String::new(),
            call_id: String::new(),
        };
        let limits = self.limits.defaults.clone();
        let environment = CallEnvironment { settings: settings.clone(), ..CallEnvironment::default() };
        // No chat asks for a description, so no policy decides: it may read its own settings
        // (what it offers may depend on them), and nothing else.
        let grants = Grants::of(facts.capabilities.iter().filter(|c| *c == Settings::NAME).cloned());
        let description = match self.run(&pre, identity, grants, environment, &limits, Operation::Describe).await {
            Ok(Outcome::Described(description)) => description,
            Ok(Outcome::Invoked(_)) => unreachable!("describe returns a description"),
            Err(e) => return Err(format!("its `describe` failed: {e}")),
        };
        Ok(Prepared { source, settings, description, pre, facts, sha256, from_cache })
    }

    /// Puts a prepared plugin in service under the configured limits with `extra` on top,
    /// after checking its description against the plugins in service. An uploaded plugin
    /// replaces the uploaded plugin of the same name (a new version); any other clash refuses it.
    pub fn insert(&self, prepared: Prepared, extra: Option<&PluginLimitsPatch>) -> Result<PluginInfo, String> {
        let Prepared { source, settings, description, pre, facts, sha256, from_cache } = prepared;
        let limits = self.limits.for_plugin_with(&description.name, extra);
        limits.validate(&format!("limits of plugin `{}`", description.name))?;
        let mut info = None;
        self.swap(|set| {
            let uploaded = matches!(source, PluginSource::Uploaded { .. });
            let replaces = set
                .plugins
                .iter()
                .find(|p| {
                    uploaded && p.info.name == description.name && matches!(p.source, PluginSource::Uploaded { .. })
                })
                .map(|p| p.info.name.clone());
            let others = set.without(|p| Some(&p.info.name) == replaces.as_ref());
            let loaded_names: Vec<&str> = others.plugins.iter().map(|p| p.info.name.as_str()).collect();
            let tools = check_description(&description, &loaded_names, |tool| {
                others.tools.get(tool).map(|entry| entry.plugin.info.name.clone())
            })?;
            let plugin_info = PluginInfo {
                name: description.name.clone(),
                version: description.version.clone(),
                summary: description.summary.clone(),
                source: source.label(),
                sha256: sha256.clone(),
                wit_version: SUPPORTED_WIT_VERSION.to_string(),
                capabilities: facts.capabilities.clone(),
                system_imports: facts.system_imports.clone(),
                tools: tools.iter().map(|t| t.info.clone()).collect(),
                limits: limits.clone(),
                from_cache,
            };
            let parts = tools
                .into_iter()
                .map(|t| ToolEntryParts { name: t.info.name, validator: Arc::new(t.validator) })
                .collect();
            info = Some(plugin_info.clone());
            let plugin = LoadedPlugin {
                info: plugin_info,
                source: source.clone(),
                pre: pre.clone(),
                limits,
                settings: settings.clone(),
                tools: parts,
            };
            let mut next = set.with(plugin, replaces.as_deref());
            next.refused.retain(|r| r.source != source.label());
            Ok(next)
        })?;
        let info = info.unwrap_or_else(|| unreachable!("set by the swap that succeeded"));
        tracing::info!(plugin = %info.name, source = %info.source, from_cache = info.from_cache, "plugin loaded");
        Ok(info)
    }

    /// Takes the plugin named `name` out of service; calls already running finish.
    pub fn remove(&self, name: &str) -> bool {
        let mut removed = false;
        let _ = self.swap(|set| {
            removed = set.plugin(name).is_some();
            Ok(set.without(|p| p.info.name == name))
        });
        if removed {
            tracing::info!(plugin = name, "plugin removed");
        }
        removed
    }

    /// Gives the plugin named `name` the configured limits with `extra` on top, for the calls
    /// that start from now on.
    pub fn set_limits(&self, name: &str, extra: Option<&PluginLimitsPatch>) -> Result<(), String> {
        let limits = self.limits.for_plugin_with(name, extra);
        limits.validate(&format!("limits of plugin `{name}`"))?;
        self.swap(|set| {
            let Some(current) = set.plugins.iter().find(|p| p.info.name == name) else { return Ok(set.clone()) };
            let mut info = current.info.clone();
            info.limits = limits.clone();
            let (source, pre, tools) = (current.source.clone(), current.pre.clone(), current.tools.clone());
            let settings = current.settings.clone();
            Ok(set.with(LoadedPlugin { info, source, pre, limits, settings, tools }, Some(name)))
        })
    }

    /// The settings the plugin named `name` is in service with.
    pub fn settings_of(&self, name: &str) -> Option<Arc<serde_json::Value>> {
        self.loaded().plugins.iter().find(|p| p.info.name == name).map(|p| p.settings.clone())
    }

    /// The sources of uploaded plugins in service, by name: what a sync compares with the
    /// stored list.
    pub fn uploaded(&self) -> BTreeMap<String, String> {
        self.loaded()
            .plugins
            .iter()
            .filter_map(|p| match &p.source {
                PluginSource::Uploaded { sha256 } => Some((p.info.name.clone(), sha256.clone())),
                _ => None,
            })
            .collect()
    }

    /// Runs one tool call: checks the tool and its arguments, then runs it in a fresh
    /// instance under the plugin's limits. While the plugins configured at start are still
    /// loading, a call of a tool not known yet waits for them rather than failing.
    pub async fn call(&self, request: CallRequest) -> Result<ToolOutput, CallError> {
        let mut set = self.loaded();
        if !set.tools.contains_key(&request.tool) && !self.started() {
            self.wait_started().await;
            set = self.loaded();
        }
        let Some(entry) = set.tools.get(&request.tool) else {
            return Err(CallError::UnknownTool { suggestion: set.closest_tool(&request.tool), tool: request.tool });
        };
        let problems: Vec<String> = entry
            .validator
            .iter_errors(&request.arguments)
            .take(10)
            .map(|e| {
                let at = e.instance_path().to_string();
                if at.is_empty() { e.to_string() } else { format!("at `{at}`: {e}") }
            })
            .collect();
        if !problems.is_empty() {
            return Err(CallError::InvalidArguments { tool: request.tool, problems });
        }
        let plugin = entry.plugin.clone();
        // Named and attributed as the GenAI conventions' `execute_tool` span.
        let span = tracing::info_span!("tool_call", plugin = %plugin.info.name, tool = %request.tool,
            chat_id = %request.context.chat_id, call_id = %request.context.call_id,
            "otel.name" = %format!("execute_tool {}", request.tool),
            "gen_ai.operation.name" = "execute_tool", "gen_ai.tool.name" = %request.tool,
            "gen_ai.tool.call.id" = %request.context.call_id, outcome = tracing::field::Empty);
        let tool = request.tool.clone();
        let started = std::time::Instant::now();
        let called = self.invoke(&plugin, request).instrument(span.clone()).await;
        let outcome = self.count_call(&plugin.info.name, &tool, &called, started.elapsed());
        span.record("outcome", outcome);
        called
    }

    /// Counts a finished call; returns its outcome (`ok`, `tool_error` or the error's code).
    fn count_call(
        &self,
        plugin: &str,
        tool: &str,
        called: &Result<ToolOutput, CallError>,
        took: Duration,
    ) -> &'static str {
        let outcome = match called {
            Ok(output) if output.is_error => "tool_error",
            Ok(_) => "ok",
            Err(error) => error.code(),
        };
        self.metrics.tool_call(plugin, tool, outcome, took);
        if let Err(CallError::LimitExceeded { limit, .. }) = called {
            self.metrics.limit_hit(plugin, limit.code());
        }
        outcome
    }

    async fn invoke(&self, plugin: &LoadedPlugin, request: CallRequest) -> Result<ToolOutput, CallError> {
        let name = &plugin.info.name;
        let grants = request.grants.unwrap_or_else(|| Grants::of(plugin.info.capabilities.iter().cloned()));
        let identity = CallIdentity {
            plugin: name.clone(),
            tool: request.tool.clone(),
            chat_id: request.context.chat_id.clone(),
            call_id: request.context.call_id.clone(),
        };
        let context = request.context.to_wit();
        let arguments = request.arguments.to_string();
        let operation = Operation::Invoke { context: &context, tool: &request.tool, arguments: &arguments };
        let started = std::time::Instant::now();
        let environment = CallEnvironment {
            workspace: request.workspace,
            chat: request.chat,
            progress: request.progress,
            settings: plugin.settings.clone(),
        };
        let outcome = self.run(&plugin.pre, identity, grants, environment, &plugin.limits, operation).await;
        let result = match outcome? {
            Outcome::Invoked(result) => result,
            Outcome::Described(_) => unreachable!("invoke returns a tool result"),
        };
        tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, "tool call finished");
        let tool = request.tool;
        match result {
            Ok(result) => {
                let size_bytes = result_size(&result);
                let limit_bytes = plugin.limits.max_result_bytes();
                if size_bytes > limit_bytes {
                    let limit = LimitHit::ResultSize { size_bytes, limit_bytes };
                    return Err(CallError::LimitExceeded { plugin: name.clone(), tool, limit });
                }
                convert(result).map_err(|detail| CallError::BadResult { plugin: name.clone(), tool, detail })
            }
            Err(error) => {
                let (kind, message) = match error {
                    wit::ToolError::InvalidArguments(m) => (ToolErrorKind::InvalidArguments, m),
                    wit::ToolError::Denied(m) => (ToolErrorKind::Denied, m),
                    wit::ToolError::NotFound(m) => (ToolErrorKind::NotFound, m),
                    wit::ToolError::Failed(m) => (ToolErrorKind::Failed, m),
                };
                Err(CallError::Tool { plugin: name.clone(), tool, kind, message })
            }
        }
    }

    /// Runs `operation` in a fresh store and instance, within `limits`.
    async fn run(
        &self,
        pre: &ToolPre<CallState>,
        identity: CallIdentity,
        grants: Grants,
        environment: CallEnvironment,
        limits: &PluginLimits,
        operation: Operation<'_>,
    ) -> Result<Outcome, CallError> {
        let plugin = identity.plugin.clone();
        let tool = identity.tool.clone();
        let output = MemoryOutputPipe::new(GUEST_OUTPUT_BYTES);
        let CallEnvironment { workspace, chat, progress, settings } = environment;
        // The slot is taken before the store is made, so that it is given back only after the
        // store (and the instance it holds in the engine's pool) is gone.
        let Ok(slot) = tokio::time::timeout(limits.timeout(), self.slots.acquire()).await else {
            return Err(CallError::Busy { plugin, waited_ms: limits.timeout_ms });
        };
        let setup = CallSetup {
            identity,
            grants,
            workspace,
            chat,
            progress,
            limits: limits.clone(),
            issued_secrets: Default::default(),
            settings,
        };
        let state = CallState::new(setup, CallLimiter::new(limits), output.clone(), slot.clone());
        let host_waits = state.host_waits.clone();
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        // Instances made for calls are counted (a load's `describe` runs under the file's name).
        let counted = matches!(operation, Operation::Invoke { .. }).then_some(&self.metrics);
        let work = async {
            let instantiating = std::time::Instant::now();
            let instance: Tool = pre.instantiate_async(&mut store).await?;
            if let Some(metrics) = counted {
                metrics.instantiated(&plugin, instantiating.elapsed());
            }
            let tools = instance.toolhost_plugin_tools();
            Ok::<_, wasmtime::Error>(match operation {
                Operation::Describe => Outcome::Described(tools.call_describe(&mut store).await?),
                Operation::Invoke { context, tool, arguments } => {
                    Outcome::Invoked(tools.call_invoke(&mut store, context, tool, arguments).await?)
                }
            })
        };
        match within_time_limit(work, limits.timeout(), &host_waits).await {
            Some(Ok(outcome)) => Ok(outcome),
            Some(Err(error)) => Err(classify_failure(plugin, tool, &error, &output)),
            None => {
                let limit = LimitHit::Timeout { limit_ms: limits.timeout_ms };
                Err(CallError::LimitExceeded { plugin, tool, limit })
            }
        }
    }
}

/// What a call may reach besides its grants: the chat's workspace, progress reporting and the
/// plugin's settings.
#[derive(Default)]
struct CallEnvironment {
    workspace: Option<WorkspaceRoot>,
    chat: Option<capabilities::ChatServices>,
    progress: Option<ProgressSink>,
    settings: Arc<serde_json::Value>,
}

/// Runs `work` until it ends or has used `limit` of its own time; time spent waiting on the
/// host (see [`capabilities::HostWaits`]) is not counted. `None` when the limit was hit.
async fn within_time_limit<F: Future>(
    work: F,
    limit: Duration,
    host_waits: &capabilities::HostWaits,
) -> Option<F::Output> {
    let started = tokio::time::Instant::now();
    let mut work = std::pin::pin!(work);
    loop {
        let mut deadline = started + limit + host_waits.total();
        if host_waits.waiting() {
            // The wait itself is bounded elsewhere; look again a little later rather than spin
            // on a deadline the clock is already past.
            deadline = deadline.max(tokio::time::Instant::now() + Duration::from_millis(50));
        }
        tokio::select! {
            done = &mut work => return Some(done),
            _ = tokio::time::sleep_until(deadline) => {
                if !host_waits.waiting() && tokio::time::Instant::now() >= started + limit + host_waits.total() {
                    return None;
                }
            }
        }
    }
}

/// Turns a trap or host error into the error the model sees.
fn classify_failure(plugin: String, tool: String, error: &wasmtime::Error, output: &MemoryOutputPipe) -> CallError {
    for cause in error.chain() {
        if let Some(limit) = cause.downcast_ref::<LimitHit>() {
            return CallError::LimitExceeded { plugin, tool, limit: limit.clone() };
        }
    }
    let trap = error.downcast_ref::<Trap>();
    match trap {
        Some(Trap::StackOverflow) => {
            let limit = LimitHit::Stack { limit_bytes: MAX_WASM_STACK_BYTES };
            CallError::LimitExceeded { plugin, tool, limit }
        }
        Some(Trap::Interrupt) => {
            // Only reachable if an epoch deadline is configured to trap; kept for completeness.
            CallError::Crashed { plugin, tool, detail: "it was interrupted".into() }
        }
        Some(Trap::MemoryOutOfBounds) => {
            // Languages that keep their stack in linear memory (Rust, C) overflow it this way.
            let said = guest_output_summary(&output.contents());
            let hint = "an out-of-bounds memory access, which is how a plugin written in Rust or C reports a stack overflow or memory corruption";
            let detail = if said.is_empty() { hint.to_string() } else { format!("{said} ({hint})") };
            CallError::Crashed { plugin, tool, detail }
        }
        _ => {
            let what = match trap {
                Some(trap) => trap.to_string(),
                None => error.root_cause().to_string(),
            };
            let said = guest_output_summary(&output.contents());
            let detail = if said.is_empty() { what } else { format!("{said} ({what})") };
            CallError::Crashed { plugin, tool, detail }
        }
    }
}

/// The guest's own last words (a panic message, usually), on one line.
fn guest_output_summary(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<&str> =
        text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("note: run with")).collect();
    let joined = lines.join(" ");
    let start = joined.len().saturating_sub(1000);
    let start = (start..joined.len()).find(|&i| joined.is_char_boundary(i)).unwrap_or(joined.len());
    joined[start..].to_string()
}

/// `*.wasm` files of `dir`, sorted by name so load order (and conflict resolution) is stable.
fn wasm_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let entries =
        std::fs::read_dir(dir).map_err(|source| LoadError::PluginsDir { path: dir.display().to_string(), source })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "wasm") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

fn new_engine(max_concurrent_calls: u32) -> wasmtime::Result<Engine> {
    let slots = max_concurrent_calls.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots * 16)
        .total_memories(slots * 2)
        .total_tables(slots * 16)
        .total_stacks(slots)
        // Reset a reused slot by restoring only its dirty pages (found with the PAGEMAP_SCAN
        // ioctl where the kernel has it) instead of returning them to the kernel: the next call
        // then neither page-faults through a fresh heap nor forces TLB shootdowns.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
        .table_keep_resident(KEEP_RESIDENT_BYTES)
        .async_stack_keep_resident(KEEP_RESIDENT_BYTES)
        .max_memory_size((MAX_MEMORY_MIB * 1024 * 1024) as usize);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .max_wasm_stack(MAX_WASM_STACK_BYTES)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Advances the engine's epoch every tick for as long as the engine lives. Without it a
/// CPU-bound guest would never yield, and its time limit could not fire.
fn start_epoch_ticker(engine: &Engine) -> std::io::Result<()> {
    let engine = engine.weak();
    std::thread::Builder::new().name("toolhost-epoch".into()).spawn(move || {
        loop {
            std::thread::sleep(EPOCH_TICK);
            match engine.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => return,
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn time_spent_waiting_on_the_host_is_not_charged_to_the_plugin() {
        let waits = capabilities::HostWaits::default();
        let limit = Duration::from_millis(100);
        let waited = waits.clone();
        let host_bound = async move { waited.during(tokio::time::sleep(Duration::from_millis(300))).await };
        assert!(within_time_limit(host_bound, limit, &waits).await.is_some(), "a 300 ms host wait fits a 100 ms limit");
        assert!(waits.total() >= Duration::from_millis(300));

        let waits = capabilities::HostWaits::default();
        let own_work = tokio::time::sleep(Duration::from_millis(300));
        assert!(within_time_limit(own_work, limit, &waits).await.is_none(), "300 ms of its own does not");
    }
}
