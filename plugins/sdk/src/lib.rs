//! The guest SDK for Toolhost tool plugins.
//!
//! A plugin is a WebAssembly component. With this crate, writing one means writing a struct,
//! an argument type per tool (its JSON Schema is derived with `schemars`), and a function per
//! tool. The WIT plumbing stays here.
//!
//! ```ignore
//! use toolhost_plugin::{CallContext, JsonSchema, Plugin, Tool, ToolError, ToolResult};
//! use serde::Deserialize;
//!
//! /// Arguments of `shout`.
//! #[derive(Deserialize, JsonSchema)]
//! struct ShoutArgs {
//!     /// The text to shout.
//!     text: String,
//! }
//!
//! struct Shouter;
//!
//! impl Plugin for Shouter {
//!     const NAME: &'static str = "shouter";
//!     const SUMMARY: &'static str = "Turns text into capitals";
//!     fn tools() -> Vec<Tool> {
//!         vec![Tool::new("shout", "Returns the text in capitals.", shout).read_only()]
//!     }
//! }
//!
//! fn shout(_ctx: &CallContext, args: ShoutArgs) -> Result<ToolResult, ToolError> {
//!     Ok(ToolResult::text(args.text.to_uppercase()))
//! }
//!
//! toolhost_plugin::export_plugin!(Shouter);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and load the `.wasm` with
//! `toolhost --plugins-dir DIR`.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/0.1.0",
        world: "tool",
        pub_export_macro: true,
        export_macro_name: "__export_tool_world",
        default_bindings_module: "toolhost_plugin::bindings",
    });
}

pub mod agents;
pub mod desktop;
pub mod exec;
pub mod fs;
pub mod http;
pub mod log;
pub mod progress;
pub mod secrets;
pub mod settings;
mod tool;
pub mod workspaces;

pub use bindings::toolhost::plugin::types::{
    CallContext, ChatKind, Content, Image, ToolAnnotations, ToolError, ToolResult,
};
pub use schemars::JsonSchema;
pub use tool::{Plugin, Tool};

#[doc(hidden)]
pub use tool::{Export, PluginVersion};

/// Exports a type implementing [`Plugin`] as the component's `toolhost:plugin/tools`
/// interface. Use it once, at the top level of the plugin crate.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        impl $crate::PluginVersion for $plugin {
            const VERSION: &'static str = env!("CARGO_PKG_VERSION");
        }
        #[doc(hidden)]
        #[allow(dead_code)]
        type __ToolhostExport = $crate::Export<$plugin>;
        // Component exports only exist on the component target; on the host target the crate
        // still compiles (so `cargo build --workspace`, clippy and IDEs work) but exports nothing,
        // since the export names are not valid native linker symbols.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_tool_world!(__ToolhostExport with_types_in $crate::bindings);
    };
}

impl ToolResult {
    /// A successful result made of one text part.
    pub fn text(text: impl Into<String>) -> ToolResult {
        ToolResult { content: vec![Content::Text(text.into())], is_error: false }
    }

    /// A result that tells the model the tool could not do what it asked, and why.
    pub fn error_text(text: impl Into<String>) -> ToolResult {
        ToolResult { content: vec![Content::Text(text.into())], is_error: true }
    }

    /// A successful result made of one JSON part.
    pub fn json<T: serde::Serialize>(value: &T) -> Result<ToolResult, ToolError> {
        let text = serde_json::to_string(value)
            .map_err(|e| ToolError::Failed(format!("could not encode the result as JSON: {e}")))?;
        Ok(ToolResult { content: vec![Content::Json(text)], is_error: false })
    }
}
