//! `toolhost plugin new`: a third-party plugin crate that builds with one command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::refuse;

/// The SDK this binary was built from; a scaffold depends on it by path until the SDK is
/// published on crates.io.
const BUILT_SDK_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk");
/// The contract, written into JavaScript and Python scaffolds (`wit/deps/toolhost-plugin`).
const CONTRACT: &str = include_str!("../../../wit/0.1.0/plugin.wit");
/// The tools that build JavaScript and Python plugins, at the versions Toolhost's CI builds its
/// examples with.
const COMPONENTIZE_JS_VERSION: &str = "0.23.0";
const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

/// The language a scaffold is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    Rust,
    Js,
    Python,
}

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    (1..=63).contains(&name.len())
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-')
}

pub(super) fn new_plugin(
    name: &str,
    parent: &Path,
    sdk: Option<&Path>,
    language: Language,
) -> anyhow::Result<ExitCode> {
    if !valid_name(name) {
        return refuse(format!(
            "`{name}` is not a valid plugin name: use lowercase letters, digits and `-`, starting with a letter (e.g. `word-tools`)"
        ));
    }
    let dir = parent.join(name);
    if dir.exists() && dir.read_dir()?.next().is_some() {
        return refuse(format!("`{}` already exists and is not empty; choose another name or --path", dir.display()));
    }
    match language {
        Language::Rust => new_rust_plugin(name, &dir, sdk),
        Language::Js | Language::Python => new_component_plugin(name, &dir, language),
    }
}

fn new_rust_plugin(name: &str, dir: &Path, sdk: Option<&Path>) -> anyhow::Result<ExitCode> {
    let sdk = match sdk.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(BUILT_SDK_PATH)).canonicalize() {
        Ok(path) if path.join("Cargo.toml").is_file() => path,
        _ => {
            return refuse(
                "the toolhost-plugin SDK was not found; pass --sdk PATH (the plugins/sdk folder of a Toolhost checkout)",
            );
        }
    };
    let crate_name = name.replace('-', "_");
    std::fs::create_dir_all(dir.join("src"))?;
    std::fs::create_dir_all(dir.join(".cargo"))?;
    std::fs::write(dir.join("Cargo.toml"), cargo_toml(name, &sdk))?;
    std::fs::write(dir.join(".cargo/config.toml"), "[build]\ntarget = \"wasm32-wasip2\"\n")?;
    std::fs::write(dir.join("src/lib.rs"), lib_rs(name, &crate_name))?;
    std::fs::write(dir.join("README.md"), readme(name, &crate_name))?;
    std::fs::write(dir.join(".gitignore"), "target/\n")?;
    println!("Created the plugin crate `{name}` in {}.", dir.display());
    println!("Build it:   cd {} && cargo build --release", dir.display());
    println!("Load it:    toolhost --plugins-dir {}/target/wasm32-wasip2/release plugin list", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// A JavaScript or Python plugin: its world (importing `log` only), the contract beside it, a
/// starter tool, and how to build it.
fn new_component_plugin(name: &str, dir: &Path, language: Language) -> anyhow::Result<ExitCode> {
    let module = name.replace('-', "_");
    std::fs::create_dir_all(dir.join("wit/deps/toolhost-plugin"))?;
    std::fs::write(dir.join("wit/deps/toolhost-plugin/plugin.wit"), CONTRACT)?;
    std::fs::write(dir.join("wit/world.wit"), world_wit(name))?;
    let build = if language == Language::Js {
        std::fs::write(dir.join("plugin.js"), plugin_js(name, &module))?;
        std::fs::write(dir.join("package.json"), package_json(name, &module))?;
        std::fs::write(dir.join(".gitignore"), "node_modules/\n*.wasm\n")?;
        "npm install && npm run build".to_string()
    } else {
        std::fs::write(dir.join(format!("{module}.py")), plugin_py(name, &module))?;
        std::fs::write(dir.join(".gitignore"), "*.wasm\n__pycache__/\n")?;
        format!(
            "pip install componentize-py=={COMPONENTIZE_PY_VERSION} && componentize-py -d wit -w plugin componentize {module} -o {module}.wasm"
        )
    };
    std::fs::write(dir.join("README.md"), component_readme(name, &module, &build))?;
    println!("Created the plugin `{name}` in {}.", dir.display());
    println!("Build it:   cd {} && {build}", dir.display());
    println!("Load it:    toolhost --plugins-dir {} plugin list", dir.display());
    Ok(ExitCode::SUCCESS)
}

fn world_wit(name: &str) -> String {
    format!(
        r#"// The world this plugin targets: the Toolhost capabilities it imports (only those it uses;
// add `import toolhost:plugin/workspace-fs@0.1.0;` and the like as it needs them) and the
// `tools` export every plugin has. The contract is in deps/toolhost-plugin/plugin.wit.
package plugin:{name};

world plugin {{
    import toolhost:plugin/log@0.1.0;
    export toolhost:plugin/tools@0.1.0;
}}
"#
    )
}

fn plugin_js(name: &str, module: &str) -> String {
    format!(
        r#"// The `{name}` Toolhost plugin.

import {{ log }} from "toolhost:plugin/log@0.1.0";

const countWordsSchema = {{
  type: "object",
  properties: {{ text: {{ type: "string", description: "The text whose words to count." }} }},
  required: ["text"],
  additionalProperties: false,
}};

export const tools = {{
  describe() {{
    return {{
      name: "{name}",
      version: "0.1.0",
      summary: "Counts words (replace with what your plugin does)",
      tools: [
        {{
          name: "{module}_count_words",
          description: "Count the words in a text.",
          inputSchema: JSON.stringify(countWordsSchema),
          annotations: {{ readOnly: true, destructive: false, idempotent: true, openWorld: false }},
        }},
      ],
    }};
  }},

  // `argumentsJson` already matches the tool's schema. Throw {{tag, val}} to fail the call
  // (tags: "invalid-arguments", "denied", "not-found", "failed"); the model reads `val`.
  async invoke(ctx, tool, argumentsJson) {{
    if (tool !== "{module}_count_words") {{
      throw {{ tag: "not-found", val: `this plugin has no tool ${{tool}}` }};
    }}
    const {{ text }} = JSON.parse(argumentsJson);
    const words = text.split(/\s+/).filter((w) => w.length > 0).length;
    log("debug", `counted ${{words}} words`);
    return {{ content: [{{ tag: "text", val: `${{words}} words` }}], isError: false }};
  }},
}};
"#
    )
}

fn package_json(name: &str, module: &str) -> String {
    format!(
        r#"{{
  "name": "{name}",
  "version": "0.1.0",
  "private": true,
  "type": "module",
  "scripts": {{
    "build": "componentize-js --wit wit --world-name plugin --out {module}.wasm plugin.js"
  }},
  "devDependencies": {{
    "@bytecodealliance/componentize-js": "{COMPONENTIZE_JS_VERSION}"
  }}
}}
"#
    )
}

fn plugin_py(name: &str, module: &str) -> String {
    format!(
        r#""""The `{name}` Toolhost plugin."""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import log
from wit_world.imports.types import (
    CallContext,
    Content_Text,
    PluginDescription,
    ToolAnnotations,
    ToolError_NotFound,
    ToolResult,
    ToolSpec,
)

COUNT_WORDS_SCHEMA = {{
    "type": "object",
    "properties": {{"text": {{"type": "string", "description": "The text whose words to count."}}}},
    "required": ["text"],
    "additionalProperties": False,
}}


class Tools(exports.Tools):
    def describe(self) -> PluginDescription:
        annotations = ToolAnnotations(read_only=True, destructive=False, idempotent=True, open_world=False)
        tool = ToolSpec(
            name="{module}_count_words",
            description="Count the words in a text.",
            input_schema=json.dumps(COUNT_WORDS_SCHEMA),
            annotations=annotations,
        )
        return PluginDescription(
            name="{name}", version="0.1.0", summary="Counts words (replace with what your plugin does)", tools=[tool]
        )

    def invoke(self, ctx: CallContext, tool: str, arguments: str) -> ToolResult:
        # `arguments` already matches the tool's schema. Raise Err(ToolError_...) to fail the
        # call (InvalidArguments, Denied, NotFound, Failed); the model reads the message.
        if tool != "{module}_count_words":
            raise Err(ToolError_NotFound(f"this plugin has no tool {{tool}}"))
        words = len(json.loads(arguments)["text"].split())
        log.log(log.Level.DEBUG, f"counted {{words}} words")
        return ToolResult(content=[Content_Text(f"{{words}} words")], is_error=False)
"#
    )
}

fn component_readme(name: &str, module: &str, build: &str) -> String {
    format!(
        r#"# {name}

A Toolhost tool plugin (a WebAssembly component).

Build:

    {build}

Load and try it:

    toolhost --plugins-dir . plugin list
    toolhost --plugins-dir . plugin call {module}_count_words --args '{{"text": "one two"}}'

`wit/world.wit` says which capabilities the plugin imports. The plugin contract, each language's
bindings and the capabilities are described in Toolhost's docs/plugins.md.
"#
    )
}

fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib"]

[dependencies]
toolhost-plugin = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}
schemars = "1"

[profile.release]
opt-level = "s"
lto = true
strip = true
codegen-units = 1

# A plugin is its own workspace, even inside another project's folder.
[workspace]
"#,
        sdk = sdk.display()
    )
}

fn lib_rs(name: &str, crate_name: &str) -> String {
    format!(
        r#"//! The `{name}` Toolhost plugin.

use serde::Deserialize;
use toolhost_plugin::{{CallContext, JsonSchema, Plugin, Tool, ToolError, ToolResult}};

struct ThisPlugin;

impl Plugin for ThisPlugin {{
    const NAME: &'static str = "{name}";
    const SUMMARY: &'static str = "Counts words (replace with what your plugin does)";

    fn tools() -> Vec<Tool> {{
        vec![Tool::new("{crate_name}_count_words", "Count the words in a text.", count_words).read_only().idempotent()]
    }}
}}

/// Arguments of `{crate_name}_count_words`; doc comments become the schema's descriptions.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CountWordsArgs {{
    /// The text whose words to count.
    text: String,
}}

fn count_words(_ctx: &CallContext, args: CountWordsArgs) -> Result<ToolResult, ToolError> {{
    let words = args.text.split_whitespace().count();
    toolhost_plugin::log::debug(&format!("counted {{words}} words"));
    Ok(ToolResult::text(format!("{{words}} words")))
}}

toolhost_plugin::export_plugin!(ThisPlugin);
"#
    )
}

fn readme(name: &str, crate_name: &str) -> String {
    format!(
        r#"# {name}

A Toolhost tool plugin (a WebAssembly component).

Build (the wasm32-wasip2 target comes from `rustup target add wasm32-wasip2`):

    cargo build --release

Load and try it:

    toolhost --plugins-dir target/wasm32-wasip2/release plugin list
    toolhost --plugins-dir target/wasm32-wasip2/release plugin call {crate_name}_count_words --args '{{"text": "one two"}}'

The plugin contract, the SDK and the capabilities are described in Toolhost's docs/plugins.md.
"#
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn plugin_names_are_lowercase_words_joined_by_dashes() {
        assert!(super::valid_name("word-tools") && super::valid_name("a1"));
        assert!(
            !super::valid_name("Word")
                && !super::valid_name("1a")
                && !super::valid_name("a_b")
                && !super::valid_name("a-")
        );
    }
}
