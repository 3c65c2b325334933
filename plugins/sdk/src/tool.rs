//! Tools, plugins, and the adapter that exports them through WIT.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;

use crate::bindings::exports::toolhost::plugin::tools::Guest;
use crate::bindings::toolhost::plugin::types::{PluginDescription, ToolSpec};
use crate::{CallContext, JsonSchema, ToolAnnotations, ToolError, ToolResult};

type Handler = Box<dyn Fn(&CallContext, &str) -> Result<ToolResult, ToolError>>;

/// Where a tool's input schema comes from. Derived schemas are only generated when the host
/// asks for a description (once, at load), not on every call.
enum Schema {
    Derived(fn() -> String),
    Given(String),
}

fn derive_schema<A: JsonSchema>() -> String {
    serde_json::to_string(&schemars::schema_for!(A)).unwrap_or_else(|_| "{}".into())
}

/// One tool: its name, description, input schema, annotations and handler.
pub struct Tool {
    name: String,
    description: String,
    input_schema: Schema,
    annotations: ToolAnnotations,
    handler: Handler,
}

impl Tool {
    /// A tool whose arguments are the JSON form of `A`; the schema is derived from `A`, so doc
    /// comments on its fields become the descriptions the model reads.
    pub fn new<A, F>(name: &str, description: &str, handler: F) -> Tool
    where
        A: DeserializeOwned + JsonSchema,
        F: Fn(&CallContext, A) -> Result<ToolResult, ToolError> + 'static,
    {
        let mut tool = Tool::with_schema(name, description, String::new(), move |ctx, raw| {
            let args: A = serde_json::from_str(raw).map_err(|e| {
                ToolError::InvalidArguments(format!(
                    "the arguments do not fit `{}`: {e}",
                    std::any::type_name::<A>().rsplit("::").next().unwrap_or("arguments")
                ))
            })?;
            handler(ctx, args)
        });
        tool.input_schema = Schema::Derived(derive_schema::<A>);
        tool
    }

    /// A tool with a hand-written JSON Schema; the handler receives the raw JSON arguments.
    pub fn with_schema<F>(name: &str, description: &str, input_schema: String, handler: F) -> Tool
    where
        F: Fn(&CallContext, &str) -> Result<ToolResult, ToolError> + 'static,
    {
        Tool {
            name: name.to_string(),
            description: description.to_string(),
            input_schema: Schema::Given(input_schema),
            annotations: ToolAnnotations { read_only: false, destructive: false, idempotent: false, open_world: false },
            handler: Box::new(handler),
        }
    }

    /// Marks the tool as changing nothing.
    pub fn read_only(mut self) -> Tool {
        self.annotations.read_only = true;
        self
    }

    /// Marks the tool as able to delete or overwrite data.
    pub fn destructive(mut self) -> Tool {
        self.annotations.destructive = true;
        self
    }

    /// Marks the tool as safe to repeat with the same arguments.
    pub fn idempotent(mut self) -> Tool {
        self.annotations.idempotent = true;
        self
    }

    /// Marks the tool as reaching outside the workspace.
    pub fn open_world(mut self) -> Tool {
        self.annotations.open_world = true;
        self
    }

    fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.name.clone(),
            description: self.description.clone(),
            input_schema: match &self.input_schema {
                Schema::Derived(generate) => generate(),
                Schema::Given(schema) => schema.clone(),
            },
            annotations: self.annotations,
        }
    }
}

/// A plugin: a name, a one-line summary, and its tools.
pub trait Plugin {
    /// The plugin's name as admins and policy see it, e.g. `files`.
    const NAME: &'static str;
    /// One line for admins.
    const SUMMARY: &'static str;
    /// The tools. Called on every call (each call runs in a fresh instance), so keep it cheap.
    fn tools() -> Vec<Tool>;
}

/// Filled in by [`export_plugin!`](crate::export_plugin) from the plugin crate's version.
#[doc(hidden)]
pub trait PluginVersion {
    const VERSION: &'static str;
}

/// Adapts a [`Plugin`] to the generated WIT export trait.
#[doc(hidden)]
pub struct Export<P>(PhantomData<P>);

impl<P: Plugin + PluginVersion> Guest for Export<P> {
    fn describe() -> PluginDescription {
        PluginDescription {
            name: P::NAME.to_string(),
            version: P::VERSION.to_string(),
            summary: P::SUMMARY.to_string(),
            tools: P::tools().iter().map(Tool::spec).collect(),
        }
    }

    fn invoke(ctx: CallContext, tool: String, arguments: String) -> Result<ToolResult, ToolError> {
        let tools = P::tools();
        let Some(found) = tools.iter().find(|t| t.name == tool) else {
            return Err(ToolError::NotFound(format!("plugin `{}` has no tool named `{tool}`", P::NAME)));
        };
        (found.handler)(&ctx, &arguments)
    }
}
