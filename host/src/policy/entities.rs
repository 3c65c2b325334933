//! What policy decides about, as Cedar entities: the chat asking (the principal), the installed
//! plugins and their tools, and capabilities.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use cedar_policy::{Entities, Entity, EntityId, EntityTypeName, EntityUid, RestrictedExpression, Schema};
use serde::{Deserialize, Serialize};

use crate::domain::{ChatKind, ToolInfo};
use crate::plugins::PluginInfo;

/// A chat as policy sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Principal {
    /// The chat's id, or a made-up one for a synthetic principal.
    #[serde(default = "synthetic_id")]
    pub id: String,
    #[serde(default)]
    pub kind: ChatKind,
    /// 0 for a root chat, one more per level of subagent.
    #[serde(default)]
    pub depth: i64,
    /// The owner's user name.
    #[serde(default)]
    pub owner: String,
    /// `admin` or `member`.
    #[serde(default = "member")]
    pub owner_role: String,
    /// The chat's model config name.
    #[serde(default)]
    pub model: String,
}

fn synthetic_id() -> String {
    "synthetic".into()
}

fn member() -> String {
    "member".into()
}

impl Principal {
    pub fn role_of(is_admin: bool) -> String {
        if is_admin { "admin".into() } else { "member".into() }
    }

    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            ChatKind::Root => "root",
            ChatKind::Subagent => "subagent",
            ChatKind::ComputerUse => "computer-use",
            ChatKind::Mcp => "mcp",
        }
    }
}

/// A plugin's facts that policy reads.
#[derive(Clone, Debug, Serialize)]
pub struct PluginFacts {
    pub name: String,
    pub bundled: bool,
    /// The capability interfaces the component imports.
    pub capabilities: Vec<String>,
}

impl PluginFacts {
    pub fn of(info: &PluginInfo) -> PluginFacts {
        PluginFacts {
            name: info.name.clone(),
            bundled: info.source.starts_with("bundled:"),
            capabilities: info.capabilities.clone(),
        }
    }
}

/// The installed plugins and their tools.
#[derive(Clone, Debug, Default)]
pub struct Inventory {
    pub plugins: Vec<PluginFacts>,
    pub tools: Vec<ToolInfo>,
}

impl Inventory {
    pub fn of<'a>(plugins: impl Iterator<Item = &'a PluginInfo>) -> Inventory {
        let mut inventory = Inventory::default();
        for info in plugins {
            inventory.plugins.push(PluginFacts::of(info));
            inventory.tools.extend(info.tools.iter().cloned());
        }
        inventory
    }

    pub fn plugin(&self, name: &str) -> Option<&PluginFacts> {
        self.plugins.iter().find(|p| p.name == name)
    }

    pub fn tool(&self, name: &str) -> Option<&ToolInfo> {
        self.tools.iter().find(|t| t.name == name)
    }
}

pub fn uid(kind: &str, id: &str) -> EntityUid {
    // The type names are this module's own constants, always valid.
    let type_name = EntityTypeName::from_str(kind).unwrap_or_else(|_| panic!("`{kind}` is not a Cedar type name"));
    EntityUid::from_type_name_and_id(type_name, EntityId::new(id))
}

fn string(value: &str) -> RestrictedExpression {
    RestrictedExpression::new_string(value.to_string())
}

fn entity(
    uid: EntityUid,
    attrs: Vec<(&str, RestrictedExpression)>,
    parents: HashSet<EntityUid>,
) -> Result<Entity, String> {
    let attrs: HashMap<String, RestrictedExpression> = attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    Entity::new(uid, attrs, parents).map_err(|e| e.to_string())
}

fn principal_entity(principal: &Principal) -> Result<Entity, String> {
    entity(
        uid("Chat", &principal.id),
        vec![
            ("kind", string(principal.kind_name())),
            ("depth", RestrictedExpression::new_long(principal.depth)),
            ("owner", string(&principal.owner)),
            ("owner_role", string(&principal.owner_role)),
            ("model", string(&principal.model)),
        ],
        HashSet::new(),
    )
}

fn plugin_entity(plugin: &PluginFacts) -> Result<Entity, String> {
    entity(
        uid("Plugin", &plugin.name),
        vec![
            ("name", string(&plugin.name)),
            ("bundled", RestrictedExpression::new_bool(plugin.bundled)),
            ("capabilities", RestrictedExpression::new_set(plugin.capabilities.iter().map(|c| string(c)))),
        ],
        HashSet::new(),
    )
}

fn tool_entity(tool: &ToolInfo) -> Result<Entity, String> {
    let a = &tool.annotations;
    let annotations = RestrictedExpression::new_record([
        ("read_only".to_string(), RestrictedExpression::new_bool(a.read_only)),
        ("destructive".to_string(), RestrictedExpression::new_bool(a.destructive)),
        ("idempotent".to_string(), RestrictedExpression::new_bool(a.idempotent)),
        ("open_world".to_string(), RestrictedExpression::new_bool(a.open_world)),
    ])
    .map_err(|e| e.to_string())?;
    entity(
        uid("Tool", &tool.name),
        vec![("name", string(&tool.name)), ("plugin", string(&tool.plugin)), ("annotations", annotations)],
        HashSet::from([uid("Plugin", &tool.plugin)]),
    )
}

fn capability_entity(name: &str) -> Result<Entity, String> {
    entity(uid("Capability", name), vec![("name", string(name))], HashSet::new())
}

/// The installed plugins, their tools, and the capabilities they import (plus those the host
/// provides), checked against the schema once.
pub fn installation(schema: &Schema, inventory: &Inventory) -> Result<Entities, String> {
    let mut all = Vec::new();
    let mut capabilities: Vec<&str> = crate::plugins::capabilities::governed().collect();
    for plugin in &inventory.plugins {
        all.push(plugin_entity(plugin)?);
        capabilities.extend(plugin.capabilities.iter().map(String::as_str));
    }
    for tool in &inventory.tools {
        all.push(tool_entity(tool)?);
    }
    capabilities.sort_unstable();
    capabilities.dedup();
    for capability in capabilities {
        all.push(capability_entity(capability)?);
    }
    Entities::from_entities(all, Some(schema)).map_err(|e| e.to_string())
}

/// Every entity a decision about `principal` may read: the installation and the principal.
pub fn with_principal(installation: &Entities, schema: &Schema, principal: &Principal) -> Result<Entities, String> {
    installation.clone().add_entities([principal_entity(principal)?], Some(schema)).map_err(|e| e.to_string())
}
