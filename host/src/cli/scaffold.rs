//! `toolhost plugin new`: a third-party plugin crate that builds with one command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::refuse;

/// The SDK this binary was built from; a scaffold depends on it by path until the SDK is
/// published on crates.io.
const BUILT_SDK_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/sdk");

fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    (1..=63).contains(&name.len())
        && bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.ends_with('-')
}

pub(super) fn new_plugin(name: &str, parent: &Path, sdk: Option<&Path>) -> anyhow::Result<ExitCode> {
    if !valid_name(name) {
        return refuse(format!(
            "`{name}` is not a valid plugin name: use lowercase letters, digits and `-`, starting with a letter (e.g. `word-tools`)"
        ));
    }
    let sdk = match sdk.map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from(BUILT_SDK_PATH)).canonicalize() {
        Ok(path) if path.join("Cargo.toml").is_file() => path,
        _ => {
            return refuse(
                "the toolhost-plugin SDK was not found; pass --sdk PATH (the plugins/sdk folder of a Toolhost checkout)",
            );
        }
    };
    let dir = parent.join(name);
    if dir.exists() && dir.read_dir()?.next().is_some() {
        return refuse(format!("`{}` already exists and is not empty; choose another name or --path", dir.display()));
    }
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
