//! The plugin runtime and registry.
//!
//! - [`registry`] loads components (bundled and from a directory), checks them, and keeps
//!   what each one offers.
//! - [`runtime`] runs one tool call: a fresh store and instance per call, under the plugin's
//!   limits, with the call's grants.
//! - [`cache`] keeps compiled components on disk so a restart does not recompile.
//! - [`inspect`] reads the facts of a component: its WIT version and the capabilities it imports.

pub mod bindings;
pub mod bundled;
mod cache;
pub mod capabilities;
mod errors;
mod inspect;
mod limits;
mod metrics;
mod output;
mod registry;
mod runtime;
pub mod slots;

pub use crate::domain::{ToolAnnotations, ToolInfo};
pub use errors::{CallError, LimitHit, LoadError, Refusal};
pub use inspect::{ComponentFacts, SUPPORTED_WIT_VERSION, check_imports};
pub use limits::{CallLimiter, LimitsConfig, PluginLimits, PluginLimitsPatch};
pub use output::{ContentPart, ToolOutput};
pub use registry::{PluginInfo, PluginSource, RuntimeOptions};
pub use runtime::{CallContext, CallRequest, Compiling, PluginRuntime, PluginSet, Prepared};
