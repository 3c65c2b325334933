//! The plugin runtime: one engine, one pre-linked instance template per plugin, and a fresh
//! store and instance for every call, so calls never share state and run concurrently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
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
use super::registry::{CheckedTool, PluginInfo, PluginSource, RuntimeOptions, check_description};
use super::slots::CallSlots;
use super::{CallError, CallLimiter, LimitHit, LimitsConfig, LoadError, PluginLimits, Refusal, ToolOutput};
use crate::domain::{ChatKind, ToolInfo};
use crate::plugins::capabilities::{self, CallIdentity, CallSetup, CallState, Grants, ProgressSink};

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

struct LoadedPlugin {
    info: PluginInfo,
    pre: ToolPre<CallState>,
    limits: PluginLimits,
}

struct ToolEntry {
    plugin: usize,
    validator: jsonschema::Validator,
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

/// Loaded plugins and the machinery to call their tools.
pub struct PluginRuntime {
    engine: Engine,
    linker: Linker<CallState>,
    cache: ComponentCache,
    limits: LimitsConfig,
    plugins: Vec<LoadedPlugin>,
    tools: BTreeMap<String, ToolEntry>,
    refused: Vec<Refusal>,
    slots: CallSlots,
}

impl PluginRuntime {
    /// Sets up the engine and loads the bundled plugins and every `*.wasm` of the plugins
    /// directory. A plugin that fails a check is refused (see [`PluginRuntime::refused`]) and
    /// the others still load.
    pub async fn load(options: RuntimeOptions) -> Result<PluginRuntime, LoadError> {
        let mut runtime = PluginRuntime::empty(&options)?;
        if options.include_bundled {
            for (name, bytes) in BUNDLED {
                runtime.add(PluginSource::Bundled(name), bytes).await;
            }
        }
        if let Some(dir) = &options.plugins_dir {
            for path in wasm_files(dir)? {
                match std::fs::read(&path) {
                    Ok(bytes) => runtime.add(PluginSource::File(path), &bytes).await,
                    Err(e) => runtime.refuse(PluginSource::File(path), format!("it cannot be read: {e}")),
                }
            }
        }
        Ok(runtime)
    }

    /// Loads one component file on its own, for `plugin inspect`.
    pub async fn inspect_file(options: &RuntimeOptions, path: &Path) -> Result<Result<PluginInfo, Refusal>, LoadError> {
        let mut runtime = PluginRuntime::empty(options)?;
        let source = PluginSource::File(path.to_path_buf());
        match std::fs::read(path) {
            Ok(bytes) => runtime.add(source, &bytes).await,
            Err(e) => runtime.refuse(source, format!("it cannot be read: {e}")),
        }
        Ok(match runtime.refused.pop() {
            Some(refusal) => Err(refusal),
            None => Ok(runtime.plugins.remove(0).info),
        })
    }

    fn empty(options: &RuntimeOptions) -> Result<PluginRuntime, LoadError> {
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
            plugins: Vec::new(),
            tools: BTreeMap::new(),
            refused: Vec::new(),
            slots: CallSlots::new(options.max_concurrent_calls as usize, options.max_waiting_calls as usize),
        })
    }

    /// Calls that wait on other chats in a waiting slot right now (their chats wait on
    /// subagents, so the worker does not count them either).
    pub fn waiting_calls(&self) -> usize {
        self.slots.waiting()
    }

    /// The loaded plugins, in load order.
    pub fn plugins(&self) -> impl Iterator<Item = &PluginInfo> {
        self.plugins.iter().map(|p| &p.info)
    }

    /// Every tool of every loaded plugin, by name.
    pub fn tools(&self) -> impl Iterator<Item = &ToolInfo> {
        self.plugins.iter().flat_map(|p| p.info.tools.iter())
    }

    /// Plugins that were not loaded, and why.
    pub fn refused(&self) -> &[Refusal] {
        &self.refused
    }

    fn refuse(&mut self, source: PluginSource, reason: String) {
        let refusal = Refusal { source: source.label(), reason };
        tracing::error!(source = %refusal.source, reason = %refusal.reason, "plugin refused");
        self.refused.push(refusal);
    }

    async fn add(&mut self, source: PluginSource, bytes: &[u8]) {
        match self.prepare(&source, bytes).await {
            Ok((plugin, tools)) => {
                let index = self.plugins.len();
                for tool in tools {
                    self.tools.insert(tool.info.name.clone(), ToolEntry { plugin: index, validator: tool.validator });
                }
                tracing::info!(plugin = %plugin.info.name, source = %plugin.info.source, from_cache = plugin.info.from_cache, "plugin loaded");
                self.plugins.push(plugin);
            }
            Err(reason) => self.refuse(source, reason),
        }
    }

    /// Compiles (or loads from cache), inspects, links and describes a component, and checks
    /// what it describes.
    async fn prepare(&self, source: &PluginSource, bytes: &[u8]) -> Result<(LoadedPlugin, Vec<CheckedTool>), String> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        super::inspect::check_imports(bytes)?;
        let (component, from_cache) = self
            .cache
            .load_or_compile(&self.engine, bytes, &sha256)
            .map_err(|e| format!("it is not a valid WebAssembly component: {}", e.root_cause()))?;
        let facts = inspect(&self.engine, &component)?;
        let instance_pre =
            self.linker.instantiate_pre(&component).map_err(|e| format!("it cannot be linked: {}", e.root_cause()))?;
        let pre = ToolPre::new(instance_pre)
            .map_err(|e| format!("it does not match the `tool` world: {}", e.root_cause()))?;
        let label = source.label();
        let limits = self.limits.defaults.clone();
        let identity = CallIdentity {
            plugin: label.clone(),
            tool: "describe".into(),
            chat_id: String::new(),
            call_id: String::new(),
        };
        let environment = CallEnvironment::default();
        let description =
            match self.run(&pre, identity, Grants::none(), environment, &limits, Operation::Describe).await {
                Ok(Outcome::Described(description)) => description,
                Ok(Outcome::Invoked(_)) => unreachable!("describe returns a description"),
                Err(e) => return Err(format!("its `describe` failed: {e}")),
            };
        let loaded_names: Vec<&str> = self.plugins.iter().map(|p| p.info.name.as_str()).collect();
        let tools = check_description(&description, &loaded_names, |tool| {
            self.tools.get(tool).map(|entry| self.plugins[entry.plugin].info.name.clone())
        })?;
        let limits = self.limits.for_plugin(&description.name);
        let info = PluginInfo {
            name: description.name,
            version: description.version,
            summary: description.summary,
            source: label,
            sha256,
            wit_version: SUPPORTED_WIT_VERSION.to_string(),
            capabilities: facts.capabilities,
            system_imports: facts.system_imports,
            tools: tools.iter().map(|t| t.info.clone()).collect(),
            limits: limits.clone(),
            from_cache,
        };
        Ok((LoadedPlugin { info, pre, limits }, tools))
    }

    /// Runs one tool call: checks the tool and its arguments, then runs it in a fresh
    /// instance under the plugin's limits.
    pub async fn call(&self, request: CallRequest) -> Result<ToolOutput, CallError> {
        let Some(entry) = self.tools.get(&request.tool) else {
            return Err(CallError::UnknownTool { suggestion: self.closest_tool(&request.tool), tool: request.tool });
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
        let plugin = &self.plugins[entry.plugin];
        let span = tracing::info_span!("tool_call", plugin = %plugin.info.name, tool = %request.tool,
            chat_id = %request.context.chat_id, call_id = %request.context.call_id);
        self.invoke(plugin, request).instrument(span).await
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
        let environment =
            CallEnvironment { workspace: request.workspace, chat: request.chat, progress: request.progress };
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
        let CallEnvironment { workspace, chat, progress } = environment;
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
        };
        let state = CallState::new(setup, CallLimiter::new(limits), output.clone(), slot.clone());
        let host_waits = state.host_waits.clone();
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        let work = async {
            let instance: Tool = pre.instantiate_async(&mut store).await?;
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

    fn closest_tool(&self, name: &str) -> Option<String> {
        self.tools
            .keys()
            .map(|candidate| (strsim::levenshtein(name, candidate), candidate))
            .filter(|(distance, _)| *distance <= 3)
            .min()
            .map(|(_, candidate)| candidate.clone())
    }
}

/// What a call may reach besides its grants: the chat's workspace and progress reporting.
#[derive(Default)]
struct CallEnvironment {
    workspace: Option<WorkspaceRoot>,
    chat: Option<capabilities::ChatServices>,
    progress: Option<ProgressSink>,
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
