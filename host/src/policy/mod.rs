//! Tool policy: which tools each chat's model sees and may call, and which capabilities each
//! tool may use, decided by an admin's Cedar policy (deny by default; a `forbid` beats any
//! `permit`).
//!
//! The active policy is the latest stored version, or the built-in default (`default.cedar`)
//! while none is stored. Every replica checks the stored version number before each model
//! step and loads a newer one, so a change applies to the next step of running chats
//! everywhere. Decisions are cached per policy and principal; a new policy starts with empty
//! caches.

pub mod check;
pub mod entities;
pub mod rules;

use crate::metrics::{Counter, EncodeLabelSet};
use prometheus_client::metrics::family::Family;
use std::sync::{Arc, RwLock};

use cedar_policy::Schema;
use serde::Serialize;
use tokio::sync::mpsc;

pub use check::{Invalid, MAX_NESTING, MAX_OPERATORS_PER_RULE, MAX_POLICY_BYTES, Problem};
pub use entities::{Inventory, Principal};
pub use rules::{Action, Attendance, Decision, Explanation, NO_RULE_PERMITS, Rules};

use crate::domain::ChatKind;
use crate::plugins::capabilities::{Grants, ScopeCheck};
use crate::store::{Chat, Denial, Store, StoreError, now_ms};

/// The schema policies are written against.
pub const SCHEMA: &str = include_str!("schema.cedarschema");
/// The policy in force until an admin stores one.
pub const DEFAULT_POLICY: &str = include_str!("default.cedar");

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("policy version {0} does not exist; GET /api/v1/policy/versions lists them")]
    NoSuchVersion(i64),
}

/// The policy in force.
pub struct ActivePolicy {
    /// 0 for the built-in default.
    pub version: i64,
    /// Which inventory (see [`PolicyEngine::set_inventory`]) its rules were built over.
    pub inventory_generation: u64,
    pub text: String,
    pub author: String,
    pub created_at: i64,
    pub rules: Rules,
    /// Why this stored policy is not being applied (every request is denied instead).
    pub problem: Option<String>,
}

/// A policy accepted by [`PolicyEngine::save`], with what looked wrong in it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
pub struct Saved {
    pub version: i64,
    pub warnings: Vec<Problem>,
}

pub struct PolicyEngine {
    schema: Schema,
    /// The plugins in service and their generation: replaced when plugins come and go.
    inventory: RwLock<(u64, Inventory)>,
    /// Where the plugins in service come from, once the server follows them (see
    /// [`PolicyEngine::follow_plugins`]); `None` for a fixed inventory (the CLI).
    plugins: std::sync::OnceLock<Arc<crate::plugins::PluginRuntime>>,
    store: Store,
    active: RwLock<Arc<ActivePolicy>>,
    /// A stored version that failed to load, so that it is not rebuilt before every step.
    failed: std::sync::Mutex<Option<i64>>,
    /// When the stored version was last compared with the one in force.
    checked: std::sync::Mutex<Option<std::time::Instant>>,
    audit: mpsc::Sender<Denial>,
    /// Decisions by action and result, for `/metrics`.
    decisions: Family<DecisionLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    /// `call_tool`, `use_capability` or `require_approval`.
    action: &'static str,
    /// `allow` or `deny`.
    decision: &'static str,
}

/// Denials waiting to be written; beyond this, more are dropped (and counted in the log)
/// rather than held in memory without bound.
const AUDIT_BACKLOG: usize = 10_000;

/// Parses the built-in schema (part of the binary, so a failure is a bug caught by any test).
pub fn schema() -> Schema {
    match Schema::from_cedarschema_str(SCHEMA) {
        Ok((schema, _warnings)) => schema,
        Err(e) => panic!("the built-in policy schema is invalid: {e}"),
    }
}

/// Checks a policy text against the schema and the installed plugins, as `PUT /policy` and
/// `toolhost policy check` do.
pub fn check_text(text: &str, inventory: &Inventory) -> Result<check::Checked, Invalid> {
    check::check(text, &schema(), inventory)
}

impl PolicyEngine {
    /// Loads the active policy and starts the audit writer.
    pub async fn load(store: Store, inventory: Inventory) -> Result<Arc<PolicyEngine>, StoreError> {
        let schema = schema();
        let default = Self::build(&schema, &inventory, 0, DEFAULT_POLICY.to_string(), "built-in".into(), 0)
            .unwrap_or_else(|e| panic!("the built-in default policy is invalid: {e}"));
        let inventory = RwLock::new((0, inventory));
        let (audit, mut denials) = mpsc::channel::<Denial>(AUDIT_BACKLOG);
        let writer_store = store.clone();
        tokio::spawn(async move {
            while let Some(denial) = denials.recv().await {
                if let Err(e) = writer_store.record_denial(&denial).await {
                    tracing::error!(error = %e, chat_id = %denial.chat_id, tool = %denial.tool, "could not record a policy denial");
                }
            }
        });
        let engine = Arc::new(PolicyEngine {
            schema,
            inventory,
            plugins: Default::default(),
            store,
            active: RwLock::new(Arc::new(default)),
            failed: Default::default(),
            checked: Default::default(),
            audit,
            decisions: Family::default(),
        });
        engine.refresh().await?;
        Ok(engine)
    }

    fn build(
        schema: &Schema,
        inventory: &Inventory,
        version: i64,
        text: String,
        author: String,
        created_at: i64,
    ) -> Result<ActivePolicy, Invalid> {
        let checked = check::check(&text, schema, inventory)?;
        Ok(ActivePolicy {
            version,
            inventory_generation: 0,
            text,
            author,
            created_at,
            rules: checked.rules,
            problem: None,
        })
    }

    /// The plugins policy decides about now, and their generation.
    pub fn inventory(&self) -> (u64, Inventory) {
        self.inventory.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The generation of the plugins the policy was last built over (without copying them:
    /// every step and call asks).
    fn inventory_generation(&self) -> u64 {
        self.inventory.read().unwrap_or_else(|p| p.into_inner()).0
    }

    /// From now on, the policy decides over the plugins `runtime` has in service, whichever
    /// they are at the time (plugins load in the background and come and go while it runs).
    pub fn follow_plugins(&self, runtime: Arc<crate::plugins::PluginRuntime>) {
        let _ = self.plugins.set(runtime);
    }

    /// Rebuilds the policy in force over the plugins in service, if they changed since it was
    /// built: a step, a call or an explanation never decides over a stale list.
    async fn catch_up_with_plugins(&self) {
        let Some(runtime) = self.plugins.get() else { return };
        let generation = runtime.generation();
        if generation > self.inventory_generation() {
            self.set_inventory(generation, Inventory::of(runtime.loaded().plugins())).await;
        }
    }

    /// The plugins in service changed (one was installed, removed, or finished compiling): the
    /// policy in force is rebuilt over them, so that rules about a new plugin's tools apply as
    /// soon as it is in service. `generation` orders concurrent changes.
    pub async fn set_inventory(&self, generation: u64, inventory: Inventory) {
        {
            let mut current = self.inventory.write().unwrap_or_else(|p| p.into_inner());
            if generation <= current.0 {
                return;
            }
            *current = (generation, inventory.clone());
        }
        // A save that lands meanwhile was built over the earlier plugins: build again until the
        // policy in force is over these (or a later change takes over).
        loop {
            let current = self.active();
            if current.inventory_generation >= generation || self.inventory_generation() != generation {
                return;
            }
            let schema = self.schema.clone();
            let (text, plugins) =
                (if current.problem.is_some() { String::new() } else { current.text.clone() }, inventory.clone());
            match tokio::task::spawn_blocking(move || check::check(&text, &schema, &plugins)).await {
                Ok(Ok(checked)) => {
                    self.install(ActivePolicy {
                        version: current.version,
                        inventory_generation: generation,
                        text: current.text.clone(),
                        author: current.author.clone(),
                        created_at: current.created_at,
                        rules: checked.rules,
                        problem: current.problem.clone(),
                    });
                }
                // It validated over the earlier plugins, and unknown names are only warnings;
                // it stays in force over the earlier plugins rather than being replaced by nothing.
                Ok(Err(e)) => {
                    return tracing::error!(error = %e, "the tool policy does not validate over the plugins in service");
                }
                Err(e) => return tracing::error!(error = %e, "rebuilding the tool policy failed"),
            }
        }
    }

    /// The policy in force now.
    pub fn active(&self) -> Arc<ActivePolicy> {
        self.active.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Loads the stored policy if it is newer than the one in force (another replica, or an
    /// admin, changed it). One small query; called before each model step.
    pub async fn refresh(&self) -> Result<Arc<ActivePolicy>, StoreError> {
        self.catch_up_with_plugins().await;
        *self.checked.lock().unwrap_or_else(|p| p.into_inner()) = Some(std::time::Instant::now());
        let current = self.active();
        let stored = self.store.policy_version().await?;
        let known_bad = *self.failed.lock().unwrap_or_else(|p| p.into_inner()) == Some(stored);
        if stored <= current.version || known_bad {
            return Ok(current);
        }
        let Some(version) = self.store.policy(stored).await? else { return Ok(current) };
        let (generation, inventory) = self.inventory();
        let schema = self.schema.clone();
        let (text, author, created_at) = (version.text.clone(), version.author.clone(), version.created_at);
        // Parsing, validating and indexing a large policy is CPU work: off the async threads.
        let built = tokio::task::spawn_blocking(move || {
            Self::build(&schema, &inventory, stored, text, author, created_at)
                .map(|policy| ActivePolicy { inventory_generation: generation, ..policy })
        })
        .await;
        match built {
            Ok(Ok(policy)) => {
                tracing::info!(version = policy.version, "tool policy loaded");
                Ok(self.install(policy))
            }
            Ok(Err(e)) => Ok(self.refuse_stored(current, version, e.to_string())),
            Err(e) => Ok(self.refuse_stored(current, version, format!("checking it failed: {e}"))),
        }
    }

    /// A stored policy that was accepted once fails to load now (the plugins or the schema
    /// changed under it). A policy already in force from the store stays; but a server that
    /// has none yet must not fall back to the looser built-in default: it denies everything
    /// until an admin stores a policy that loads.
    fn refuse_stored(
        &self,
        current: Arc<ActivePolicy>,
        version: crate::store::PolicyVersion,
        error: String,
    ) -> Arc<ActivePolicy> {
        *self.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(version.version);
        if current.version > 0 {
            tracing::error!(version = version.version, %error, "the stored tool policy no longer validates; version {} stays in force", current.version);
            return current;
        }
        let problem = format!(
            "stored policy version {} no longer validates ({error}); every tool is denied until an admin stores a valid policy (PUT /api/v1/policy)",
            version.version
        );
        tracing::error!(%problem, "tool policy");
        let (generation, inventory) = self.inventory();
        match check::check("", &self.schema, &inventory) {
            Ok(nothing) => self.install(ActivePolicy {
                version: version.version,
                inventory_generation: generation,
                text: version.text,
                author: version.author,
                created_at: version.created_at,
                rules: nothing.rules,
                problem: Some(problem),
            }),
            Err(_) => current,
        }
    }

    /// The policy in force, compared with the stored version at most once per `within`: for
    /// callers of many small requests (MCP clients), where a query per request would cost more
    /// than the call. A save on this server is in force at once; one on another replica arrives
    /// with its notice, or after `within` at the latest.
    pub async fn recent(&self, within: std::time::Duration) -> Result<Arc<ActivePolicy>, StoreError> {
        let last = *self.checked.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| at.elapsed() < within) {
            self.catch_up_with_plugins().await;
            return Ok(self.active());
        }
        self.refresh().await
    }

    /// Puts a policy in force unless a newer one already is (a slow reload must not undo a
    /// save that finished first, nor a rebuild over older plugins one over newer).
    fn install(&self, policy: ActivePolicy) -> Arc<ActivePolicy> {
        let mut active = self.active.write().unwrap_or_else(|p| p.into_inner());
        if (policy.version, policy.inventory_generation) >= (active.version, active.inventory_generation) {
            *active = Arc::new(policy);
        }
        active.clone()
    }

    /// Validates and stores a new policy, which takes effect at once. An invalid policy is
    /// refused and the one in force is untouched.
    pub async fn save(&self, text: &str, author: &str, note: &str) -> Result<Saved, PolicyError> {
        // Checked (its warnings about unknown names) against the plugins in service now.
        self.catch_up_with_plugins().await;
        let (generation, inventory) = self.inventory();
        let (schema, owned) = (self.schema.clone(), text.to_string());
        let checked =
            tokio::task::spawn_blocking(move || check::check(&owned, &schema, &inventory)).await.map_err(|e| {
                Invalid {
                    problems: vec![Problem {
                        line: 0,
                        column: 0,
                        message: format!("checking the policy failed: {e}"),
                        rule: None,
                    }],
                }
            })??;
        for warning in &checked.warnings {
            tracing::warn!(author, %warning, "the saved tool policy has a warning");
        }
        let stored = self.store.add_policy_version(text, author, note).await?;
        self.install(ActivePolicy {
            version: stored.version,
            inventory_generation: generation,
            text: stored.text,
            author: stored.author,
            created_at: stored.created_at,
            rules: checked.rules,
            problem: None,
        });
        Ok(Saved { version: stored.version, warnings: checked.warnings })
    }

    /// Makes an earlier version (0: the built-in default) the active one, as a new version.
    pub async fn restore(&self, version: i64, author: &str) -> Result<Saved, PolicyError> {
        let text = if version == 0 {
            DEFAULT_POLICY.to_string()
        } else {
            self.store.policy(version).await?.ok_or(PolicyError::NoSuchVersion(version))?.text
        };
        self.save(&text, author, &format!("restored version {version}")).await
    }

    /// How policy sees a chat.
    pub async fn principal(&self, chat: &Chat, model: &str) -> Result<Principal, StoreError> {
        let owner = self.store.user(&chat.owner_id).await?;
        Ok(Principal {
            id: chat.id.clone(),
            kind: chat.kind,
            depth: self.store.chat_depth(chat).await?,
            owner: owner.as_ref().map(|u| u.name.clone()).unwrap_or_default(),
            owner_role: Principal::role_of(owner.is_some_and(|u| u.is_admin)),
            model: model.to_string(),
        })
    }

    /// Adds the decision counts to a server's registry.
    pub fn register_metrics(&self, registry: &mut crate::metrics::Registry) {
        registry.register(
            "toolhost_policy_decisions",
            "Tool call and capability decisions of the tool policy, allowed and denied",
            self.decisions.clone(),
        );
    }

    fn count_decision(&self, action: Action, allowed: bool) {
        let labels = DecisionLabels { action: action.name(), decision: if allowed { "allow" } else { "deny" } };
        self.decisions.get_or_create(&labels).inc();
    }

    /// Records a denial in the audit log (written in the background).
    pub fn record(&self, denial: Denial) {
        if let Err(e) = self.audit.try_send(denial) {
            tracing::warn!(error = %e, "the audit log is falling behind; a denial was not recorded");
        }
    }

    /// Whether `principal` may call `tool` (of `plugin`) now: only if it was shown the tool
    /// (`shown`; a hidden tool is never callable by name) and `call_tool` permits it. A denial is
    /// logged and written to the audit log.
    pub fn decide_call(
        &self,
        policy: &ActivePolicy,
        principal: &Principal,
        shown: bool,
        plugin: &str,
        tool: &str,
    ) -> Decision {
        let decision = if shown {
            policy.rules.call_rights(principal, plugin, tool).0
        } else {
            let seen = policy.rules.decide_tool(principal, Action::SeeTool, tool);
            let audience = if principal.kind == ChatKind::Mcp { "MCP clients" } else { "this chat" };
            Decision { allowed: false, decided_by: format!("{} (not visible to {audience})", seen.decided_by) }
        };
        self.count_decision(Action::CallTool, decision.allowed);
        if decision.allowed {
            return decision;
        }
        tracing::warn!(tool, plugin, chat_id = %principal.id, decided_by = %decision.decided_by, "tool call denied by policy");
        self.record(Denial {
            id: 0,
            chat_id: principal.id.clone(),
            tool: tool.to_string(),
            plugin: plugin.to_string(),
            action: Action::CallTool.name().into(),
            capability: None,
            scope: None,
            decided_by: decision.decided_by.clone(),
            policy_version: policy.version,
            created_at: now_ms(),
        });
        decision
    }

    /// Whether a call that `call_tool` permits needs its chat owner's approval. A call whose
    /// approval rules fail to evaluate is denied (and audited as such): never run unasked.
    pub fn attendance(&self, policy: &ActivePolicy, principal: &Principal, plugin: &str, tool: &str) -> Attendance {
        let attendance = policy.rules.attendance(principal, tool);
        if let Attendance::Undecidable { rule } = &attendance {
            tracing::warn!(tool, plugin, chat_id = %principal.id, decided_by = %rule, "tool call denied: its approval rules cannot be evaluated");
            self.count_decision(Action::RequireApproval, false);
            self.record(Denial {
                id: 0,
                chat_id: principal.id.clone(),
                tool: tool.to_string(),
                plugin: plugin.to_string(),
                action: Action::RequireApproval.name().into(),
                capability: None,
                scope: None,
                decided_by: rule.clone(),
                policy_version: policy.version,
                created_at: now_ms(),
            });
        }
        attendance
    }

    /// The capabilities a call of `tool` may use, decided now, with a check of each scoped use.
    pub fn grants(self: &Arc<Self>, policy: &Arc<ActivePolicy>, principal: &Principal, tool: &str) -> Grants {
        let Some(plugin) = policy.rules.inventory().tool(tool).map(|t| t.plugin.clone()) else { return Grants::none() };
        let (_, granted) = policy.rules.call_rights(principal, &plugin, tool);
        let allowed: Vec<String> = granted.as_ref().clone();
        let gate = CapabilityGate {
            engine: self.clone(),
            policy: policy.clone(),
            principal: principal.clone(),
            plugin,
            tool: tool.to_string(),
        };
        Grants::of(allowed).with_check(Arc::new(gate))
    }
}

/// Checks each use of a capability against the policy the call started under, and records
/// denials.
struct CapabilityGate {
    engine: Arc<PolicyEngine>,
    policy: Arc<ActivePolicy>,
    principal: Principal,
    plugin: String,
    tool: String,
}

/// Runs `job` on the policy thread and waits for it.
///
/// Cedar bounds its recursion by measuring the stack left, which it cannot do on the fibers
/// wasmtime runs host functions on (every decision there fails with "recursion limit
/// reached"). Checks made from inside a plugin call are therefore made on a thread of their own.
fn on_policy_thread<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    type Job = Box<dyn FnOnce() + Send>;
    static JOBS: std::sync::OnceLock<std::sync::Mutex<std::sync::mpsc::Sender<Job>>> = std::sync::OnceLock::new();
    let jobs = JOBS.get_or_init(|| {
        let (sender, receiver) = std::sync::mpsc::channel::<Job>();
        let spawned = std::thread::Builder::new().name("policy".into()).spawn(move || {
            while let Ok(job) = receiver.recv() {
                job();
            }
        });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the policy thread; scoped capability uses will be denied");
        }
        std::sync::Mutex::new(sender)
    });
    let (reply, answer) = std::sync::mpsc::sync_channel(1);
    let sent = jobs.lock().unwrap_or_else(|p| p.into_inner()).send(Box::new(move || {
        let _ = reply.send(job());
    }));
    sent.ok()?;
    answer.recv().ok()
}

impl ScopeCheck for CapabilityGate {
    fn record_refusal(&self, capability: &str, scope: Option<&str>, reason: &str) {
        self.engine.record(Denial {
            id: 0,
            chat_id: self.principal.id.clone(),
            tool: self.tool.clone(),
            plugin: self.plugin.clone(),
            action: Action::UseCapability.name().into(),
            capability: Some(capability.to_string()),
            scope: scope.map(String::from),
            decided_by: reason.to_string(),
            policy_version: self.policy.version,
            created_at: now_ms(),
        });
    }

    fn check(&self, capability: &str, scope: Option<&str>) -> Result<(), String> {
        let (policy, principal, plugin, tool) =
            (self.policy.clone(), self.principal.clone(), self.plugin.clone(), self.tool.clone());
        let (name, scoped) = (capability.to_string(), scope.map(String::from));
        let decision = on_policy_thread(move || {
            policy.rules.decide_capability(&principal, &plugin, &tool, &name, scoped.as_deref())
        })
        .unwrap_or_else(|| Decision { allowed: false, decided_by: "the policy thread is not running".into() });
        self.engine.count_decision(Action::UseCapability, decision.allowed);
        if decision.allowed {
            return Ok(());
        }
        self.record_refusal(capability, scope, &decision.decided_by);
        let what = scope.map_or_else(String::new, |s| format!(" on `{s}`"));
        Err(format!(
            "the tool policy denies plugin `{}` the `{capability}` capability{what} in this chat ({}); an admin can change the policy",
            self.plugin, decision.decided_by
        ))
    }
}

/// A made-up installation for tests and the benchmark: bundled `agents`, `workspaces`,
/// `computer` and `files` plugins with the reference tools, a third-party `weather` plugin, and
/// `extra` tools up to `tools` in all.
pub fn sample_inventory(tools: usize) -> Inventory {
    use crate::plugins::{ToolAnnotations, ToolInfo};
    let plugin = |name: &str, bundled: bool, capabilities: &[&str]| entities::PluginFacts {
        name: name.into(),
        bundled,
        capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
    };
    let annotations = ToolAnnotations { read_only: false, destructive: false, idempotent: false, open_world: false };
    let tool = |name: &str, plugin: &str| ToolInfo {
        name: name.into(),
        plugin: plugin.into(),
        description: String::new(),
        input_schema: serde_json::json!({"type": "object"}),
        annotations,
    };
    let mut inventory = Inventory {
        plugins: vec![
            plugin("agents", true, &["log"]),
            plugin("workspaces", true, &["log"]),
            plugin("computer", true, &["log"]),
            plugin("files", true, &["workspace-fs", "log"]),
            plugin("weather", false, &["log"]),
            plugin("extra", false, &[]),
        ],
        tools: Vec::new(),
    };
    for name in ["spawn_agent", "wait_agent", "message_agent", "close_agent", "spawn_computer_use_agent"] {
        inventory.tools.push(tool(name, "agents"));
    }
    for name in ["list_templates", "read_template", "create_workspace", "start_workspace"] {
        inventory.tools.push(tool(name, "workspaces"));
    }
    inventory.tools.push(tool("computer", "computer"));
    inventory.tools.push(tool("read_file", "files"));
    inventory.tools.push(tool("write_file", "files"));
    inventory.tools.push(tool("forecast", "weather"));
    let mut n = 0;
    while inventory.tools.len() < tools {
        inventory.tools.push(tool(&format!("extra_{n}"), "extra"));
        n += 1;
    }
    inventory
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Texts that overflowed a server thread's stack before there were limits.
    fn hostile_policies() -> Vec<(&'static str, String)> {
        let rule = |condition: String| format!("permit (principal, action, resource)\nwhen {{ {condition} }};\n");
        vec![
            ("nested parentheses", rule(format!("{}true{}", "(".repeat(150), ")".repeat(150)))),
            ("a long && chain", rule(vec!["principal.depth == 0"; 3000].join(" && "))),
            (
                "nested if-then-else",
                rule(format!("{}true{}", "if true then ".repeat(2000), " else false".repeat(2000))),
            ),
            ("a run of negations", rule(format!("{}true", "!".repeat(20_000)))),
            ("nested sets", rule(format!("{}1{} == 1", "[".repeat(500), "]".repeat(500)))),
            ("a long chain of indexing", rule(format!("principal{} == 1", "[\"a\"]".repeat(20_000)))),
            ("too long", rule(format!("principal.model == \"{}\"", "x".repeat(MAX_POLICY_BYTES)))),
        ]
    }

    #[test]
    fn hostile_policy_texts_are_refused_with_a_place_and_never_overflow_the_stack() {
        // A thread with the stack of a tokio worker, as the API's and the CLI's checks have.
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(|| {
                for (what, text) in hostile_policies() {
                    let refused =
                        check_text(&text, &sample_inventory(0)).err().unwrap_or_else(|| panic!("{what} was accepted"));
                    let problem = &refused.problems[0];
                    assert!(problem.line >= 1, "{what}: the problem has a place: {problem:?}");
                    assert!(
                        problem.message.contains("nested")
                            || problem.message.contains("operators")
                            || problem.message.contains("long"),
                        "{what}: {problem}"
                    );
                }
            })
            .unwrap()
            .join()
            .expect("no check overflowed its stack");
    }

    #[test]
    fn a_policy_just_within_the_limits_is_checked_used_and_dropped_on_an_ordinary_thread() {
        std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(|| {
                // Each term is three operators (`.`, `==`, `||`); the rest of the rule a few more.
                let terms = vec!["principal.depth == 0"; (MAX_OPERATORS_PER_RULE - 100 - MAX_NESTING) / 3].join(" || ");
                let nested = format!("{}true{}", "(".repeat(MAX_NESTING - 2), ")".repeat(MAX_NESTING - 2));
                let text = format!("{DEFAULT_POLICY}\n@id(\"long\")\nforbid (principal, action, resource) when {{ {terms} && {nested} && resource.name == \"write_file\" }};\n");
                let rules = check_text(&text, &sample_inventory(0)).unwrap_or_else(|e| panic!("{e}")).rules;
                let decision = rules.decide_tool(&chat(ChatKind::Root), Action::CallTool, "write_file");
                assert!(!decision.allowed, "the long rule is evaluated: {decision:?}");
                drop(rules);
            })
            .unwrap()
            .join()
            .expect("checking, evaluating and dropping the policy fit an ordinary stack");
    }

    #[test]
    fn only_rules_naming_require_approval_ask_forbids_exempt_and_a_failing_rule_is_undecidable() {
        let text = format!(
            "{DEFAULT_POLICY}\n@id(\"allow-all\")\npermit (principal, action, resource);\n\
             @id(\"members-approve-writes\")\npermit (principal, action == Action::\"require_approval\", resource)\n\
             when {{ principal.owner_role == \"member\" && [\"write_file\", \"forecast\"].contains(resource.name) }};\n\
             @id(\"root-chats-forecast-unasked\")\nforbid (principal, action == Action::\"require_approval\", resource == Tool::\"forecast\")\n\
             when {{ principal.kind == \"root\" }};\n\
             @id(\"overflows-below-the-root\")\npermit (principal, action == Action::\"require_approval\", resource == Tool::\"read_file\")\n\
             when {{ principal.depth * 9223372036854775807 * 2 > 0 }};\n"
        );
        let rules = check_text(&text, &sample_inventory(0)).unwrap_or_else(|e| panic!("{e}")).rules;
        let root = chat(ChatKind::Root);
        // `allow-all` names no action: it permits every call, and asks about none.
        assert_eq!(rules.attendance(&root, "list_templates"), Attendance::Unattended);
        assert_eq!(rules.attendance(&root, "write_file"), Attendance::Ask { rule: "members-approve-writes".into() });
        assert_eq!(rules.attendance(&root, "forecast"), Attendance::Unattended, "a forbid exempts");
        let admins = Principal { owner_role: "admin".into(), ..root.clone() };
        assert_eq!(rules.attendance(&admins, "write_file"), Attendance::Unattended);
        // The failing rule could have asked: the call is undecidable, which denies it.
        assert_eq!(rules.attendance(&root, "read_file"), Attendance::Unattended, "no overflow at depth 0");
        let failing = rules.attendance(&chat(ChatKind::Subagent), "read_file");
        assert_eq!(failing, Attendance::Undecidable { rule: "overflows-below-the-root (failed to evaluate)".into() });
        assert_eq!(rules.attendance(&root, "no_such_tool"), Attendance::Unattended, "its call fails anyway");
        let explained = rules.explain(&root);
        let verdict = explained.tools.iter().find(|t| t.tool == "write_file").unwrap();
        assert_eq!(
            (verdict.needs_approval, verdict.approval_decided_by.as_deref()),
            (true, Some("members-approve-writes"))
        );
    }

    fn chat(kind: ChatKind) -> Principal {
        Principal {
            id: format!("{kind:?}"),
            kind,
            depth: i64::from(kind != ChatKind::Root),
            owner: "alice".into(),
            owner_role: "member".into(),
            model: "m".into(),
        }
    }

    fn default_rules() -> Rules {
        check_text(DEFAULT_POLICY, &sample_inventory(0)).map(|c| c.rules).unwrap_or_else(|e| panic!("{e}"))
    }

    const ROOT_ONLY: [&str; 9] = [
        "list_templates",
        "read_template",
        "create_workspace",
        "start_workspace",
        "spawn_agent",
        "wait_agent",
        "message_agent",
        "close_agent",
        "spawn_computer_use_agent",
    ];

    #[test]
    fn root_chats_see_every_tool_but_computer() {
        let rules = default_rules();
        let visible = rules.visible_tools(&chat(ChatKind::Root));
        assert_eq!(visible.len(), rules.inventory().tools.len() - 1);
        assert!(!visible.contains("computer"), "the desktop is driven by computer-use chats");
        assert!(visible.contains("spawn_computer_use_agent"));
    }

    #[test]
    fn subagents_see_neither_workspace_provisioning_nor_agent_tools() {
        let rules = default_rules();
        let subagent = chat(ChatKind::Subagent);
        let visible = rules.visible_tools(&subagent);
        for tool in ROOT_ONLY {
            assert!(!visible.contains(tool), "{tool} is visible to subagents");
            let call = rules.decide_tool(&subagent, Action::CallTool, tool);
            assert_eq!(
                call,
                Decision { allowed: false, decided_by: "subagents-do-not-provision-workspaces-or-spawn-agents".into() }
            );
        }
        for tool in ["read_file", "write_file", "forecast"] {
            assert!(visible.contains(tool), "{tool} is hidden from subagents");
        }
        assert!(!visible.contains("computer"), "a subagent sees `computer` only if the policy says so");
        assert_eq!(rules.decide_tool(&subagent, Action::CallTool, "computer").decided_by, NO_RULE_PERMITS);
    }

    #[test]
    fn mcp_clients_see_the_workspace_tools_but_nothing_that_needs_a_chat() {
        let rules = default_rules();
        let client = chat(ChatKind::Mcp);
        let visible = rules.visible_tools(&client);
        for tool in ROOT_ONLY {
            assert!(!visible.contains(tool), "{tool} is visible to MCP clients");
            assert_eq!(
                rules.decide_tool(&client, Action::CallTool, tool).decided_by,
                "mcp-clients-do-not-provision-workspaces-or-spawn-agents"
            );
        }
        for tool in ["read_file", "write_file", "forecast"] {
            assert!(visible.contains(tool), "{tool} is hidden from MCP clients");
        }
        assert!(!visible.contains("computer"));
        // Third-party plugins still use no capability until an admin grants one.
        assert!(!rules.decide_capability(&client, "weather", "forecast", "log", None).allowed);
    }

    #[test]
    fn computer_use_chats_see_only_computer() {
        let rules = default_rules();
        let visible = rules.visible_tools(&chat(ChatKind::ComputerUse));
        assert_eq!(visible.iter().collect::<Vec<_>>(), ["computer"]);
        assert_eq!(
            rules.decide_tool(&chat(ChatKind::ComputerUse), Action::CallTool, "read_file").decided_by,
            NO_RULE_PERMITS
        );
    }

    #[test]
    fn bundled_plugins_use_what_they_import_and_third_party_plugins_nothing() {
        let rules = default_rules();
        let root = chat(ChatKind::Root);
        assert!(rules.decide_capability(&root, "files", "read_file", "workspace-fs", Some("src/main.rs")).allowed);
        assert!(
            !rules.decide_capability(&root, "agents", "spawn_agent", "workspace-fs", None).allowed,
            "not imported, not granted"
        );
        let third_party = rules.decide_capability(&root, "weather", "forecast", "log", None);
        assert_eq!(third_party, Decision { allowed: false, decided_by: NO_RULE_PERMITS.into() });
    }

    #[test]
    fn a_grant_for_a_third_party_plugin_names_its_rule_and_forbid_beats_it() {
        let text = format!(
            "{DEFAULT_POLICY}\n@id(\"weather-logs\")\npermit (principal, action == Action::\"use_capability\", resource == Capability::\"log\") when {{ context.plugin.name == \"weather\" }};\n\
             @id(\"members-no-weather\")\nforbid (principal, action == Action::\"use_capability\", resource) when {{ principal.owner_role == \"member\" && context.plugin == Plugin::\"weather\" }};"
        );
        let rules = check_text(&text, &sample_inventory(0)).map(|c| c.rules).unwrap_or_else(|e| panic!("{e}"));
        let mut admin = chat(ChatKind::Root);
        admin.owner_role = "admin".into();
        assert_eq!(
            rules.decide_capability(&admin, "weather", "forecast", "log", None),
            Decision { allowed: true, decided_by: "weather-logs".into() }
        );
        assert_eq!(
            rules.decide_capability(&chat(ChatKind::Root), "weather", "forecast", "log", None),
            Decision { allowed: false, decided_by: "members-no-weather".into() }
        );
    }
}
