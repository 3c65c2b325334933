//! Facts read from a compiled component: the WIT version it was built against, and the
//! capabilities it imports. Imports are facts, not claims: what a plugin can ask for is
//! exactly what it imports.

use serde::Serialize;
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::plugins::capabilities::{PROVIDED, WASI_INTERFACES};

/// The version of `toolhost:plugin` this host implements.
pub const SUPPORTED_WIT_VERSION: &str = "0.1.0";
const PACKAGE: &str = "toolhost:plugin/";
const TOOLS_INTERFACE: &str = "tools";
/// Interfaces that only define types; importing them grants nothing.
const TYPE_ONLY_INTERFACES: &[&str] = &["types"];
/// WASI interfaces that come with a capability's interface (their resources are what it
/// sends and receives), and so are shown as that capability.
const WASI_COMPANIONS: &[(&str, &str)] = &[("wasi:http/types", "http")];

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
            None => match wasi_capability(name) {
                Some(capability) => capabilities.push(capability.to_string()),
                None => system_imports.push(name.to_string()),
            },
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
    capabilities.dedup();
    system_imports.sort();
    Ok(ComponentFacts { capabilities, system_imports, exports })
}

/// The capability a WASI import is, if it is one (`wasi:http/outgoing-handler@0.2.4` is `http`).
fn wasi_capability(import: &str) -> Option<&'static str> {
    let interface = import.split_once('@').map_or(import, |(interface, _)| interface);
    WASI_INTERFACES
        .iter()
        .chain(WASI_COMPANIONS)
        .find(|(wasi, _)| !wasi.is_empty() && *wasi == interface)
        .map(|(_, capability)| *capability)
}

/// The WASI interfaces the host links (locked down, see `capabilities::add_all_to_linker`),
/// besides the capabilities that are WASI interfaces. Any 0.2 version is accepted.
const WASI_LINKED: &[&str] = &[
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:cli/exit",
    "wasi:cli/environment",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:sockets/network",
    "wasi:sockets/instance-network",
    "wasi:sockets/tcp",
    "wasi:sockets/tcp-create-socket",
    "wasi:sockets/udp",
    "wasi:sockets/udp-create-socket",
    "wasi:sockets/ip-name-lookup",
];

/// Reads the imports of a component's binary, without compiling it, and refuses one the host
/// does not provide, naming it: a compile can take many seconds for a language runtime, and
/// the linker's own message ("resource implementation is missing") names nothing. Returns the
/// imports, as the component names them.
pub fn check_imports(bytes: &[u8]) -> Result<Vec<String>, String> {
    let imports = top_level_imports(bytes)?;
    for name in &imports {
        let (interface, version) = name.split_once('@').unwrap_or((name.as_str(), ""));
        if let Some(toolhost) = interface.strip_prefix(PACKAGE) {
            check_version(version, &format!("its import of `{toolhost}`"))?;
            let wasi_backed =
                WASI_INTERFACES.iter().any(|(wasi, capability)| !wasi.is_empty() && *capability == toolhost);
            if TYPE_ONLY_INTERFACES.contains(&toolhost) || (PROVIDED.contains(&toolhost) && !wasi_backed) {
                continue;
            }
            return Err(format!(
                "it imports the capability `{toolhost}`, which this host does not provide (it provides {})",
                PROVIDED.join(", ")
            ));
        }
        let linked = WASI_LINKED.contains(&interface) || wasi_capability(interface).is_some();
        if linked && version.starts_with("0.2.") {
            continue;
        }
        return Err(format!(
            "it imports `{name}`, which this host does not provide; it provides the `toolhost:plugin` capabilities, \
             `wasi:http/outgoing-handler@0.2` (capability `http`) and a locked-down WASI 0.2 (cli, clocks, filesystem, io, \
             random, sockets). Rebuild the plugin without it (for componentize-js, the features you do not use can be \
             disabled with `--disable`)"
        ));
    }
    Ok(imports)
}

/// The names the outermost component imports.
fn top_level_imports(bytes: &[u8]) -> Result<Vec<String>, String> {
    use wasmparser::{Parser, Payload};
    let invalid = |e: wasmparser::BinaryReaderError| format!("it is not a valid WebAssembly component: {e}");
    let mut imports = Vec::new();
    // Nested modules and components have their own sections, and imports that are not the host's.
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(invalid)? {
            Payload::Version { encoding, .. } => {
                if depth == 0 && encoding != wasmparser::Encoding::Component {
                    return Err("it is not a valid WebAssembly component: it is a core module; make it a component \
                         (cargo's wasm32-wasip2 target, or `wasm-tools component new`)"
                        .into());
                }
                depth += 1;
            }
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(section) if depth == 1 => {
                for import in section {
                    imports.push(import.map_err(invalid)?.name.name.to_string());
                }
            }
            _ => {}
        }
    }
    Ok(imports)
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
