//! Checking a policy before it takes effect: Cedar syntax, strict validation against the
//! schema (each problem with its line and column), and warnings for what is valid but
//! probably wrong: names of tools or plugins that are not installed, and a policy that leaves
//! admins' chats without any tool.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;

use cedar_policy::{PolicyId, PolicySet, Schema, ValidationMode, Validator};
use miette::Diagnostic;
use serde::Serialize;

use super::entities::{Inventory, Principal};
use super::rules::{Action, Rules};
use crate::domain::ChatKind;

/// A problem in a policy text, where it is.
#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Problem {
    /// 1-based; 0 when the problem has no place in the text.
    pub line: usize,
    pub column: usize,
    pub message: String,
    /// The rule it is in (its `@id`, else Cedar's `policyN`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line > 0 {
            write!(f, "line {}, column {}: ", self.line, self.column)?;
        }
        if let Some(rule) = &self.rule {
            write!(f, "in rule `{rule}`: ")?;
        }
        f.write_str(&self.message)
    }
}

/// A policy that was refused, with every problem found.
#[derive(Debug, thiserror::Error)]
#[error("the policy is invalid: {}", .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
pub struct Invalid {
    pub problems: Vec<Problem>,
}

/// A policy that passed, and what looks wrong in it.
pub struct Checked {
    pub rules: Rules,
    pub warnings: Vec<Problem>,
}

/// The line and column of a byte offset.
fn place(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    (line, column)
}

fn problem(text: &str, diagnostic: &dyn Diagnostic, rule: Option<String>) -> Problem {
    let offset = diagnostic.labels().and_then(|mut labels| labels.next()).map(|label| label.offset());
    let (line, column) = offset.map_or((0, 0), |o| place(text, o));
    let mut message = diagnostic.to_string();
    if let Some(help) = diagnostic.help() {
        message.push_str(&format!(" ({help})"));
    }
    Problem { line, column, message, rule }
}

/// Largest policy text accepted.
pub const MAX_POLICY_BYTES: usize = 512 * 1024;
/// Deepest nesting of parentheses, brackets and braces accepted.
pub const MAX_NESTING: usize = 64;
/// Most operators (`&&`, `||`, `==`, `+`, `.`, `!`, `if`, `in`, `has`, an opening bracket, ...)
/// in one rule. Every
/// operator can deepen the expression by one, and Cedar parses, checks, evaluates and drops
/// expressions recursively: this bounds how deep it goes. Long allow-lists belong in sets
/// (`resource in [Tool::"a", Tool::"b"]`), which are flat.
pub const MAX_OPERATORS_PER_RULE: usize = 1000;
/// The stack Cedar runs on while a policy is checked, far more than the limits above need.
const CHECK_STACK_BYTES: usize = 64 * 1024 * 1024;

/// Parses, validates and lints a policy text, on a thread with a stack of its own: hostile
/// texts (deeply nested, very long) get problems within the limits above, never a stack
/// overflow of the thread that asked.
pub fn check(text: &str, schema: &Schema, inventory: &Inventory) -> Result<Checked, Invalid> {
    within_limits(text)?;
    let (owned, schema, inventory) = (text.to_string(), schema.clone(), inventory.clone());
    let checking = std::thread::Builder::new()
        .name("policy-check".into())
        .stack_size(CHECK_STACK_BYTES)
        .spawn(move || check_here(&owned, &schema, &inventory));
    let failed = |why: String| Invalid {
        problems: vec![Problem {
            line: 0,
            column: 0,
            message: format!("the policy could not be checked: {why}"),
            rule: None,
        }],
    };
    match checking {
        Ok(handle) => handle.join().map_err(|_| failed("the check failed".into()))?,
        Err(e) => Err(failed(e.to_string())),
    }
}

/// Refuses a text over the size, nesting or operator limits, naming where.
fn within_limits(text: &str) -> Result<(), Invalid> {
    let refuse = |offset: usize, message: String| {
        let (line, column) = place(text, offset);
        Err(Invalid { problems: vec![Problem { line, column, message, rule: None }] })
    };
    if text.len() > MAX_POLICY_BYTES {
        return refuse(
            0,
            format!(
                "the policy is {} bytes long, more than the {MAX_POLICY_BYTES} allowed; split long allow-lists into sets or fewer rules",
                text.len()
            ),
        );
    }
    let bytes = text.as_bytes();
    let (mut depth, mut operators, mut rule_start, mut i) = (0usize, 0usize, 0usize, 0usize);
    while i < bytes.len() {
        let rest = &bytes[i..];
        match bytes[i] {
            b'"' => {
                // A string literal, with its escapes: nothing in it is syntax.
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'/' if rest.starts_with(b"//") => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return refuse(
                        i,
                        format!(
                            "parentheses, brackets and braces are nested more than {MAX_NESTING} deep here; simplify the condition"
                        ),
                    );
                }
                // An opening bracket can deepen an expression without any other operator
                // (`principal["a"]["a"]...`, a call, a record): it counts as one.
                operators += 1;
                if operators > MAX_OPERATORS_PER_RULE {
                    return refuse(rule_start, too_many_operators());
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            b';' if depth == 0 => {
                operators = 0;
                rule_start = i + 1;
            }
            _ => {
                let operator = [&b"&&"[..], b"||", b"==", b"!=", b"<=", b">="]
                    .into_iter()
                    .find(|op| rest.starts_with(op))
                    .map(|op| op.len())
                    .or_else(|| {
                        if matches!(bytes[i], b'<' | b'>' | b'+' | b'-' | b'*' | b'!' | b'.') {
                            return Some(1);
                        }
                        let word_start = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
                        let keyword = [&b"if"[..], b"in", b"has", b"like", b"is"].into_iter().find(|k| {
                            rest.starts_with(k)
                                && rest.get(k.len()).is_none_or(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                        });
                        keyword.filter(|_| word_start).map(|k| k.len())
                    });
                if let Some(length) = operator {
                    operators += 1;
                    if operators > MAX_OPERATORS_PER_RULE {
                        return refuse(rule_start, too_many_operators());
                    }
                    i += length;
                    continue;
                }
            }
        }
        i += 1;
    }
    Ok(())
}

fn too_many_operators() -> String {
    format!(
        "this rule has more than {MAX_OPERATORS_PER_RULE} operators; split it into several rules, or list many tools as a set (`resource in [Tool::\"a\", Tool::\"b\"]`)"
    )
}

fn check_here(text: &str, schema: &Schema, inventory: &Inventory) -> Result<Checked, Invalid> {
    let set = PolicySet::from_str(text)
        .map_err(|errors| Invalid { problems: errors.iter().map(|e| problem(text, e, None)).collect() })?;
    let labels = labels(&set)?;
    let label = |id: &PolicyId| labels.get(id).cloned().unwrap_or_else(|| id.to_string());
    let validation = Validator::new(schema.clone()).validate(&set, ValidationMode::Strict);
    let errors: Vec<Problem> =
        validation.validation_errors().map(|e| problem(text, e, Some(label(e.policy_id())))).collect();
    if !errors.is_empty() {
        return Err(Invalid { problems: errors });
    }
    let mut warnings: Vec<Problem> =
        validation.validation_warnings().map(|w| problem(text, w, Some(label(w.policy_id())))).collect();
    warnings.extend(unknown_names(text, &set, &labels, inventory));
    let rules = Rules::new(set, labels, schema.clone(), inventory.clone());
    warnings.extend(admins_left_without_tools(&rules, inventory));
    Ok(Checked { rules, warnings })
}

/// Each rule's label: its `@id`, which must be unique; else Cedar's id.
fn labels(set: &PolicySet) -> Result<HashMap<PolicyId, String>, Invalid> {
    let mut seen = BTreeSet::new();
    let mut labels = HashMap::new();
    let mut problems = Vec::new();
    for policy in set.policies() {
        let label = policy.annotation("id").map(str::to_string).unwrap_or_else(|| policy.id().to_string());
        if !seen.insert(label.clone()) {
            problems.push(Problem {
                line: 0,
                column: 0,
                message: format!("two rules have the @id `{label}`; give each rule its own"),
                rule: Some(label.clone()),
            });
        }
        labels.insert(policy.id().clone(), label);
    }
    if problems.is_empty() { Ok(labels) } else { Err(Invalid { problems }) }
}

/// Tool and plugin names a policy mentions that are not installed: a warning, since the plugin
/// may be installed later, but usually a typo.
fn unknown_names(
    text: &str,
    set: &PolicySet,
    labels: &HashMap<PolicyId, String>,
    inventory: &Inventory,
) -> Vec<Problem> {
    let mut warnings = Vec::new();
    for policy in set.policies() {
        let Ok(json) = policy.to_json() else { continue };
        let mut tools = BTreeSet::new();
        let mut plugins = BTreeSet::new();
        mentioned_names(&json, &mut tools, &mut plugins);
        let rule = labels.get(policy.id()).cloned();
        // In a rule about `use_capability` only, `resource.name` is a capability's name.
        let about_capabilities =
            json["action"]["op"] == "==" && json["action"]["entity"]["id"] == Action::UseCapability.name();
        if about_capabilities {
            let known = |name: &str| {
                crate::plugins::capabilities::governed().any(|c| c == name)
                    || inventory.plugins.iter().any(|p| p.capabilities.iter().any(|c| c == name))
            };
            for capability in std::mem::take(&mut tools).iter().filter(|c| !known(c)) {
                let (line, column) = text.find(&format!("\"{capability}\"")).map_or((0, 0), |o| place(text, o));
                warnings.push(Problem {
                    line,
                    column,
                    message: format!(
                        "no capability is named `{capability}` (the host's are {})",
                        crate::plugins::capabilities::governed().collect::<Vec<_>>().join(", ")
                    ),
                    rule: rule.clone(),
                });
            }
        }
        for tool in tools.iter().filter(|t| inventory.tool(t).is_none()) {
            let (line, column) = text.find(&format!("\"{tool}\"")).map_or((0, 0), |o| place(text, o));
            warnings.push(Problem {
                line,
                column,
                message: format!("no installed plugin offers a tool named `{tool}`"),
                rule: rule.clone(),
            });
        }
        for plugin in plugins.iter().filter(|p| inventory.plugin(p).is_none()) {
            let (line, column) = text.find(&format!("\"{plugin}\"")).map_or((0, 0), |o| place(text, o));
            warnings.push(Problem {
                line,
                column,
                message: format!("no plugin named `{plugin}` is installed"),
                rule: rule.clone(),
            });
        }
    }
    warnings
}

/// Collects, from a policy's JSON form, the tool names compared with `resource.name` and the
/// `Tool::"..."` and `Plugin::"..."` entities it names.
fn mentioned_names(json: &serde_json::Value, tools: &mut BTreeSet<String>, plugins: &mut BTreeSet<String>) {
    use serde_json::Value;
    let is_resource_name = |v: &Value| v["."]["left"]["Var"] == "resource" && v["."]["attr"] == "name";
    match json {
        Value::Object(map) => {
            if let (Some(Value::String(kind)), Some(Value::String(id))) = (map.get("type"), map.get("id")) {
                match kind.as_str() {
                    "Tool" => drop(tools.insert(id.clone())),
                    "Plugin" => drop(plugins.insert(id.clone())),
                    _ => {}
                }
            }
            for op in ["==", "!=", "contains", "containsAll", "containsAny"] {
                if let Some(pair) = map.get(op) {
                    let (left, right) = (&pair["left"], &pair["right"]);
                    for (name_side, other) in [(left, right), (right, left)] {
                        if is_resource_name(name_side) {
                            string_values(other, tools);
                        }
                    }
                }
            }
            map.values().for_each(|v| mentioned_names(v, tools, plugins));
        }
        Value::Array(items) => items.iter().for_each(|v| mentioned_names(v, tools, plugins)),
        _ => {}
    }
}

fn string_values(json: &serde_json::Value, out: &mut BTreeSet<String>) {
    match json {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::String(value)) = map.get("Value") {
                out.insert(value.clone());
            }
            if let Some(serde_json::Value::Array(items)) = map.get("Set") {
                items.iter().for_each(|v| string_values(v, out));
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| string_values(v, out)),
        _ => {}
    }
}

/// A loud warning when an admin's root chat would see no tool at all: most likely a policy
/// that forbids more than meant.
fn admins_left_without_tools(rules: &Rules, inventory: &Inventory) -> Option<Problem> {
    if inventory.tools.is_empty() {
        return None;
    }
    let admin = Principal {
        id: "admin-check".into(),
        kind: ChatKind::Root,
        depth: 0,
        owner: "admin".into(),
        owner_role: "admin".into(),
        model: String::new(),
    };
    let visible = rules.visible_tools(&admin);
    visible.is_empty().then(|| Problem {
        line: 0,
        column: 0,
        message: format!(
            "WARNING: with this policy an admin's root chat sees none of the {} installed tools; every chat is left without tools",
            inventory.tools.len()
        ),
        rule: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_become_lines_and_columns() {
        let text = "ab\ncd\néf";
        assert_eq!(place(text, 0), (1, 1));
        assert_eq!(place(text, 4), (2, 2));
        assert_eq!(place(text, 8), (3, 2), "columns count characters, not bytes");
    }
}
