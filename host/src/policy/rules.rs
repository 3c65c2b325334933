//! One checked policy, ready to decide: Cedar evaluation, with the entities of each principal
//! and its visible tool set cached for as long as this policy is the active one.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use cedar_policy::{
    ActionConstraint, Authorizer, Context, Decision as CedarDecision, Entities, EntityUid, Policy, PolicyId, PolicySet,
    Request, ResourceConstraint, RestrictedExpression, Schema,
};
use serde::Serialize;

use super::entities::{self, Inventory, Principal, uid};

/// Principals whose entities and tool sets are kept; past this the caches start over.
const CACHED_PRINCIPALS: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    SeeTool,
    CallTool,
    UseCapability,
    /// Whether a call waits for a person's approval (a `permit` asks for it).
    RequireApproval,
}

impl Action {
    fn uid(self) -> EntityUid {
        uid("Action", self.name())
    }

    pub fn name(self) -> &'static str {
        match self {
            Action::SeeTool => "see_tool",
            Action::CallTool => "call_tool",
            Action::UseCapability => "use_capability",
            Action::RequireApproval => "require_approval",
        }
    }
}

/// What policy said, and which rules said it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Decision {
    pub allowed: bool,
    /// The `@id`s of the deciding rules (permits when allowed, forbids when denied), or
    /// "no rule permits".
    pub decided_by: String,
}

/// Why a chat sees, calls and uses what it does.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct Explanation {
    pub principal: Principal,
    pub tools: Vec<ToolVerdict>,
    pub capabilities: Vec<CapabilityVerdict>,
}

#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ToolVerdict {
    pub tool: String,
    pub plugin: String,
    /// Whether the model is told about the tool (`see_tool`).
    pub visible: bool,
    pub decided_by: String,
    /// Whether a call runs (`call_tool`).
    pub callable: bool,
    pub call_decided_by: String,
    /// Whether a call waits for the chat owner's approval (`require_approval`); a call whose
    /// approval rules cannot be evaluated is denied.
    pub needs_approval: bool,
    /// The rules that ask for approval (or failed to evaluate), if any.
    pub approval_decided_by: Option<String>,
}

/// Whether a tool may use a capability its plugin imports (`use_capability` without a scope;
/// rules on scopes are decided at each use).
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct CapabilityVerdict {
    pub tool: String,
    pub plugin: String,
    pub capability: String,
    pub allowed: bool,
    pub decided_by: String,
}

/// Whether a permitted call may run unattended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attendance {
    /// No rule asks for approval (or a `forbid` exempts the call).
    Unattended,
    /// The call waits for its chat's owner; `rule` names the rules that asked.
    Ask { rule: String },
    /// A rule about approval failed to evaluate: the call is denied, never run unasked.
    Undecidable { rule: String },
}

/// The label of a denial no rule made.
pub const NO_RULE_PERMITS: &str = "no rule permits";

pub struct Rules {
    set: PolicySet,
    /// The rules that can apply to each (action, installed tool or capability), by their scope.
    index: HashMap<(Action, EntityUid), PolicySet>,
    labels: HashMap<PolicyId, String>,
    schema: Schema,
    inventory: Inventory,
    /// The installation's entities (or why they could not be made), shared by every principal.
    installation: Result<Entities, String>,
    authorizer: Authorizer,
    entities: Mutex<HashMap<Principal, Arc<Entities>>>,
    visible: Mutex<HashMap<Principal, Arc<BTreeSet<String>>>>,
    /// `call_tool` decisions and the capabilities granted at a call's start, by principal and
    /// tool: what a call repeats for every call of the same tool (both depend on nothing else).
    calls: Mutex<HashMap<(Principal, String), CallRights>>,
}

/// Whether a principal may call a tool, and the capabilities the call may use (unscoped).
pub type CallRights = (Decision, Arc<Vec<String>>);

/// Splits the policy by scope: each (action, resource) gets the rules whose action and resource
/// constraints can match it. Admins mostly write rules for one action, often for one tool or
/// plugin, so a decision evaluates a handful of rules instead of all of them; the outcome is
/// the same, since a rule whose scope does not match can neither permit nor forbid.
fn index(set: &PolicySet, inventory: &Inventory) -> HashMap<(Action, EntityUid), PolicySet> {
    let mut resources: Vec<(Action, EntityUid, Vec<EntityUid>)> = Vec::new();
    for tool in &inventory.tools {
        for action in [Action::SeeTool, Action::CallTool, Action::RequireApproval] {
            resources.push((action, uid("Tool", &tool.name), vec![uid("Plugin", &tool.plugin)]));
        }
    }
    let mut capabilities: Vec<&str> = crate::plugins::capabilities::governed().collect();
    capabilities.extend(inventory.plugins.iter().flat_map(|p| p.capabilities.iter().map(String::as_str)));
    capabilities.sort_unstable();
    capabilities.dedup();
    for capability in capabilities {
        resources.push((Action::UseCapability, uid("Capability", capability), Vec::new()));
    }
    let mut index = HashMap::new();
    for (action, resource, parents) in resources {
        let applicable = set.policies().filter(|p| may_apply(p, &action.uid(), &resource, &parents)).cloned();
        match PolicySet::from_policies(applicable) {
            Ok(subset) => drop(index.insert((action, resource), subset)),
            Err(e) => tracing::warn!(error = %e, "cannot index the policy; decisions evaluate every rule"),
        }
    }
    index
}

fn may_apply(policy: &Policy, action: &EntityUid, resource: &EntityUid, parents: &[EntityUid]) -> bool {
    let action_matches = match policy.action_constraint() {
        // Only rules that name `require_approval` ask for approval: `permit (principal, action,
        // resource)`, written to allow everything, must not make every call wait for a person.
        ActionConstraint::Any => *action != Action::RequireApproval.uid(),
        ActionConstraint::Eq(a) => &a == action,
        ActionConstraint::In(actions) => actions.contains(action),
    };
    let within = |ancestor: &EntityUid| ancestor == resource || parents.contains(ancestor);
    let resource_matches = match policy.resource_constraint() {
        ResourceConstraint::Any => true,
        ResourceConstraint::Eq(r) => &r == resource,
        ResourceConstraint::In(ancestor) => within(&ancestor),
        ResourceConstraint::Is(kind) => &kind == resource.type_name(),
        ResourceConstraint::IsIn(kind, ancestor) => &kind == resource.type_name() && within(&ancestor),
    };
    action_matches && resource_matches
}

fn cached<T: Clone>(cache: &Mutex<HashMap<Principal, T>>, principal: &Principal, make: impl FnOnce() -> T) -> T {
    if let Some(hit) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(principal) {
        return hit.clone();
    }
    let value = make();
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if cache.len() >= CACHED_PRINCIPALS {
        cache.clear();
    }
    cache.insert(principal.clone(), value.clone());
    value
}

impl Rules {
    pub fn new(set: PolicySet, labels: HashMap<PolicyId, String>, schema: Schema, inventory: Inventory) -> Rules {
        let index = index(&set, &inventory);
        let installation = entities::installation(&schema, &inventory);
        Rules {
            set,
            index,
            labels,
            schema,
            inventory,
            installation,
            authorizer: Authorizer::new(),
            entities: Mutex::default(),
            visible: Mutex::default(),
            calls: Mutex::default(),
        }
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// Names of the tools the chat's model is told about.
    pub fn visible_tools(&self, principal: &Principal) -> Arc<BTreeSet<String>> {
        cached(&self.visible, principal, || {
            let names = self
                .inventory
                .tools
                .iter()
                .filter(|t| self.decide_tool(principal, Action::SeeTool, &t.name).allowed)
                .map(|t| t.name.clone());
            Arc::new(names.collect())
        })
    }

    /// Whether the principal may call `tool` (of `plugin`), and the capabilities its plugin
    /// imports that the call may use (decided without a scope; scoped uses are decided as they
    /// happen). Remembered per principal and tool for as long as this policy is in force.
    pub fn call_rights(&self, principal: &Principal, plugin: &str, tool: &str) -> CallRights {
        let key = (principal.clone(), tool.to_string());
        if let Some(hit) = self.calls.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
            return hit.clone();
        }
        let call = self.decide_tool(principal, Action::CallTool, tool);
        let imports = self.inventory.plugin(plugin).map(|p| p.capabilities.clone()).unwrap_or_default();
        let granted: Vec<String> = imports
            .into_iter()
            .filter(|capability| self.decide_capability(principal, plugin, tool, capability, None).allowed)
            .collect();
        let rights = (call, Arc::new(granted));
        let mut calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        if calls.len() >= CACHED_PRINCIPALS * 8 {
            calls.clear();
        }
        calls.insert(key, rights.clone());
        rights
    }

    /// Whether a call of `tool` (which `call_tool` permits) needs a person's approval first.
    /// Fails closed: a rule that cannot be evaluated makes the call undecidable, which denies
    /// it, whether the rule would have asked (a `permit`) or exempted (a `forbid`).
    pub fn attendance(&self, principal: &Principal, tool: &str) -> Attendance {
        // Evaluated on the indexed rules only (those naming the action). A tool no plugin offers
        // has none, and its call fails anyway.
        if self.inventory.tool(tool).is_none() {
            return Attendance::Unattended;
        }
        if !self.index.contains_key(&(Action::RequireApproval, uid("Tool", tool))) {
            return Attendance::Undecidable { rule: "the approval rules could not be indexed".into() };
        }
        let (decision, failed) = self.evaluate(principal, Action::RequireApproval, uid("Tool", tool), Context::empty());
        if !failed.is_empty() {
            let labels: Vec<&str> = failed.iter().map(|(label, _)| label.as_str()).collect();
            return Attendance::Undecidable { rule: format!("{} (failed to evaluate)", labels.join(", ")) };
        }
        match decision.allowed {
            true => Attendance::Ask { rule: decision.decided_by },
            false => Attendance::Unattended,
        }
    }

    /// Whether the chat may see or call the tool.
    pub fn decide_tool(&self, principal: &Principal, action: Action, tool: &str) -> Decision {
        self.decide(principal, action, uid("Tool", tool), Context::empty())
    }

    /// Whether the tool may use the capability; `scope` is what the use is about, where one
    /// applies (a path, a host).
    pub fn decide_capability(
        &self,
        principal: &Principal,
        plugin: &str,
        tool: &str,
        capability: &str,
        scope: Option<&str>,
    ) -> Decision {
        let mut pairs = vec![
            ("plugin".to_string(), RestrictedExpression::new_entity_uid(uid("Plugin", plugin))),
            ("tool".to_string(), RestrictedExpression::new_string(tool.to_string())),
        ];
        if let Some(scope) = scope {
            pairs.push(("scope".to_string(), RestrictedExpression::new_string(scope.to_string())));
        }
        match Context::from_pairs(pairs) {
            Ok(context) => self.decide(principal, Action::UseCapability, uid("Capability", capability), context),
            Err(e) => Decision { allowed: false, decided_by: format!("the request could not be evaluated: {e}") },
        }
    }

    /// Every tool's visibility and callability for the chat, and every capability each tool's
    /// plugin imports, each with the rules that decided.
    pub fn explain(&self, principal: &Principal) -> Explanation {
        let mut tools = Vec::new();
        let mut capabilities = Vec::new();
        for tool in &self.inventory.tools {
            let see = self.decide_tool(principal, Action::SeeTool, &tool.name);
            let call = self.decide_tool(principal, Action::CallTool, &tool.name);
            let (needs_approval, approval_decided_by) = match self.attendance(principal, &tool.name) {
                Attendance::Unattended => (false, None),
                Attendance::Ask { rule } | Attendance::Undecidable { rule } => (true, Some(rule)),
            };
            tools.push(ToolVerdict {
                tool: tool.name.clone(),
                plugin: tool.plugin.clone(),
                visible: see.allowed,
                decided_by: see.decided_by,
                callable: call.allowed,
                call_decided_by: call.decided_by,
                needs_approval,
                approval_decided_by,
            });
            let mut imports = self.inventory.plugin(&tool.plugin).map(|p| p.capabilities.clone()).unwrap_or_default();
            // Asked per use: the network of a command, a private address of a request.
            let implied: Vec<String> =
                imports.iter().filter_map(|c| crate::plugins::capabilities::implied_by(c)).map(String::from).collect();
            imports.extend(implied);
            for capability in imports {
                let decision = self.decide_capability(principal, &tool.plugin, &tool.name, &capability, None);
                capabilities.push(CapabilityVerdict {
                    tool: tool.name.clone(),
                    plugin: tool.plugin.clone(),
                    capability,
                    allowed: decision.allowed,
                    decided_by: decision.decided_by,
                });
            }
        }
        Explanation { principal: principal.clone(), tools, capabilities }
    }

    fn decide(&self, principal: &Principal, action: Action, resource: EntityUid, context: Context) -> Decision {
        let (decision, failed) = self.evaluate(principal, action, resource, context);
        if !decision.allowed {
            return decision;
        }
        // Cedar skips a rule that fails to evaluate. A skipped `forbid` must not let a
        // `permit` through: such a failure denies, naming the rule.
        let mut failed_forbids: Vec<&str> = failed
            .iter()
            .filter(|(_, effect)| *effect == cedar_policy::Effect::Forbid)
            .map(|(label, _)| label.as_str())
            .collect();
        if failed_forbids.is_empty() {
            return decision;
        }
        failed_forbids.sort_unstable();
        Decision { allowed: false, decided_by: format!("{} (failed to evaluate)", failed_forbids.join(", ")) }
    }

    /// Cedar's decision, with the rules that failed to evaluate (their labels and effects).
    fn evaluate(
        &self,
        principal: &Principal,
        action: Action,
        resource: EntityUid,
        context: Context,
    ) -> (Decision, Vec<(String, cedar_policy::Effect)>) {
        let resource_key = resource.clone();
        let entities = match self.entities(principal) {
            Ok(entities) => entities,
            Err(e) => {
                let why = format!("the chat could not be described to the policy: {e}");
                return (
                    Decision { allowed: false, decided_by: why.clone() },
                    vec![(why, cedar_policy::Effect::Forbid)],
                );
            }
        };
        let request = match Request::new(uid("Chat", &principal.id), action.uid(), resource, context, None) {
            Ok(request) => request,
            Err(e) => {
                let why = format!("the request could not be evaluated: {e}");
                return (
                    Decision { allowed: false, decided_by: why.clone() },
                    vec![(why, cedar_policy::Effect::Forbid)],
                );
            }
        };
        let rules = self.index.get(&(action, resource_key)).unwrap_or(&self.set);
        let response = self.authorizer.is_authorized(&request, rules, &entities);
        let label = |id: &PolicyId| self.labels.get(id).map_or_else(|| id.to_string(), Clone::clone);
        let mut failed = Vec::new();
        for error in response.diagnostics().errors() {
            let cedar_policy::AuthorizationError::PolicyEvaluationError(failure) = error;
            let id = failure.policy_id();
            tracing::warn!(rule = %label(id), error = %error, "a policy rule failed to evaluate");
            let effect = self.set.policy(id).map_or(cedar_policy::Effect::Forbid, |p| p.effect());
            failed.push((label(id), effect));
        }
        let mut rules: Vec<String> = response.diagnostics().reason().map(label).collect();
        rules.sort_unstable();
        let allowed = response.decision() == CedarDecision::Allow;
        let decided_by = if rules.is_empty() { NO_RULE_PERMITS.to_string() } else { rules.join(", ") };
        (Decision { allowed, decided_by }, failed)
    }

    fn entities(&self, principal: &Principal) -> Result<Arc<Entities>, String> {
        if let Some(hit) = self.entities.lock().unwrap_or_else(|p| p.into_inner()).get(principal) {
            return Ok(hit.clone());
        }
        let installation = self.installation.as_ref().map_err(Clone::clone)?;
        let built = Arc::new(entities::with_principal(installation, &self.schema, principal)?);
        Ok(cached(&self.entities, principal, || built))
    }
}
