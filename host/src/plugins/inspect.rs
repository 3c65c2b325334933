//! Facts read from a compiled component: the WIT version it was built against, and the
//! capabilities it imports. Imports are facts, not claims: what a plugin can ask for is
//! exactly what it imports.

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::plugins::capabilities::PROVIDED;

/// The version of `toolhost:plugin` this host implements.
pub const SUPPORTED_WIT_VERSION: &str = "0.1.0";
const PACKAGE: &str = "toolhost:plugin/";
const TOOLS_INTERFACE: &str = "tools";
/// Interfaces that only define types; importing them grants nothing.
const TYPE_ONLY_INTERFACES: &[&str] = &["types"];

/// What a component imports and exports, in the host's terms.
#[derive(Clone, Debug, Serialize)]
pub struct ComponentFacts {
    /// `toolhost:plugin` capabilities imported, e.g. `["log", "workspace-fs"]`.
    pub capabilities: Vec<String>,
    /// Other imports (WASI), provided locked down: no files, network or environment.
    pub system_imports: Vec<String>,
    pub exports: Vec<String>,
}

/// `toolhost:plugin/NAME@VERSION` as `(NAME, VERSION)`.
fn split_toolhost_name(name: &str) -> Option<(&str, &str)> {
    name.strip_prefix(PACKAGE)?.split_once('@')
}

/// Reads the facts of `component` and checks it is a tool component of a supported version.
pub(crate) fn inspect(engine: &Engine, component: &Component) -> Result<ComponentFacts, String> {
    let ty = component.component_type();
    let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_string()).collect();
    let mut capabilities = Vec::new();
    let mut system_imports = Vec::new();
    for (name, _) in ty.imports(engine) {
        match split_toolhost_name(name) {
            Some((interface, version)) => {
                check_version(version, &format!("its import of `{interface}`"))?;
                if TYPE_ONLY_INTERFACES.contains(&interface) {
                    continue;
                }
                if !PROVIDED.contains(&interface) {
                    return Err(format!(
                        "it imports the capability `{interface}`, which this host does not provide (it provides {})",
                        PROVIDED.join(", ")
                    ));
                }
                capabilities.push(interface.to_string());
            }
            None => system_imports.push(name.to_string()),
        }
    }
    let tools_export = exports
        .iter()
        .find_map(|name| split_toolhost_name(name).filter(|(interface, _)| *interface == TOOLS_INTERFACE));
    match tools_export {
        Some((_, version)) => check_version(version, "its `tools` export")?,
        None => {
            return Err(format!(
                "it is not a tool component: it does not export `{PACKAGE}{TOOLS_INTERFACE}@{SUPPORTED_WIT_VERSION}` \
                 (it exports: {}). Build it against the `tool` world in wit/, e.g. with the toolhost-plugin SDK",
                if exports.is_empty() { "nothing".to_string() } else { exports.join(", ") }
            ));
        }
    }
    capabilities.sort();
    system_imports.sort();
    Ok(ComponentFacts { capabilities, system_imports, exports })
}

fn check_version(found: &str, what: &str) -> Result<(), String> {
    if found == SUPPORTED_WIT_VERSION {
        Ok(())
    } else {
        Err(format!(
            "{what} uses toolhost:plugin@{found}, but this host supports toolhost:plugin@{SUPPORTED_WIT_VERSION}; \
             rebuild the plugin against the wit/ of this Toolhost version"
        ))
    }
}
