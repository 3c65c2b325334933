//! What the plugin runtime counts: tool calls by plugin, tool and outcome with their duration
//! (`gen_ai.execute_tool.duration`), instantiation time, compile cache hits and limits hit.

use std::time::Duration;

use crate::metrics::{Counter, EncodeLabelSet, Histograms, Registry, Unit};
use prometheus_client::metrics::family::Family;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolCall {
    gen_ai_tool_name: String,
    plugin: String,
    /// `ok`, `tool_error` (the tool's own error result) or the call error's code.
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Plugin {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitHit {
    plugin: String,
    /// The limit's code (`timeout`, `memory`, `result_too_large`, ...).
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLookup {
    /// `hit` (loaded compiled) or `miss` (compiled now).
    result: &'static str,
}

#[derive(Clone)]
pub(crate) struct RuntimeMetrics {
    tool_calls: Histograms<ToolCall>,
    instantiation: Histograms<Plugin>,
    compile_cache: Family<CacheLookup, Counter>,
    limits_hit: Family<LimitHit, Counter>,
}

impl RuntimeMetrics {
    pub(crate) fn new() -> RuntimeMetrics {
        RuntimeMetrics {
            tool_calls: Family::new_with_constructor(crate::metrics::seconds),
            instantiation: Family::new_with_constructor(crate::metrics::short_seconds),
            compile_cache: Family::default(),
            limits_hit: Family::default(),
        }
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "gen_ai_execute_tool_duration",
            "Tool calls (from chats and MCP clients) by tool, plugin and outcome, and how long they took",
            Unit::Seconds,
            self.tool_calls.clone(),
        );
        registry.register_with_unit(
            "toolhost_plugin_instantiation",
            "Time to make a plugin's instance for a call",
            Unit::Seconds,
            self.instantiation.clone(),
        );
        registry.register(
            "toolhost_plugin_compile_cache",
            "Plugins loaded from the compiled cache (hit) or compiled (miss)",
            self.compile_cache.clone(),
        );
        registry.register(
            "toolhost_plugin_limits_hit",
            "Calls stopped by a plugin limit, by limit",
            self.limits_hit.clone(),
        );
    }

    pub(crate) fn tool_call(&self, plugin: &str, tool: &str, outcome: &str, took: Duration) {
        let labels = ToolCall { gen_ai_tool_name: tool.into(), plugin: plugin.into(), outcome: outcome.into() };
        self.tool_calls.get_or_create(&labels).observe(took.as_secs_f64());
    }

    pub(crate) fn instantiated(&self, plugin: &str, took: Duration) {
        self.instantiation.get_or_create(&Plugin { plugin: plugin.into() }).observe(took.as_secs_f64());
    }

    pub(crate) fn compiled(&self, from_cache: bool) {
        self.compile_cache.get_or_create(&CacheLookup { result: if from_cache { "hit" } else { "miss" } }).inc();
    }

    pub(crate) fn limit_hit(&self, plugin: &str, limit: &str) {
        self.limits_hit.get_or_create(&LimitHit { plugin: plugin.into(), limit: limit.into() }).inc();
    }
}
