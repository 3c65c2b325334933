//! Per-call resource limits: configured per plugin, enforced by the store's limiter, the
//! epoch deadline and the result-size check.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::LimitHit;

/// Largest linear memory any plugin may be configured for; the pooling allocator reserves
/// address space for this much per slot.
pub const MAX_MEMORY_MIB: u64 = 1024;

/// Longest a call may be allowed to take: a day (and far from where adding it to a clock
/// reading could overflow).
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;

/// Largest result or response size that may be configured, in KiB.
pub const MAX_KIB: u64 = 1_048_576;

/// Longest an outbound HTTP request may be allowed to take.
pub const MAX_HTTP_TIMEOUT_MS: u64 = 3_600_000;

/// The limits of one call to a plugin.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PluginLimits {
    /// Wall-clock time of one call, instantiation included. Also stops CPU-bound loops.
    pub timeout_ms: u64,
    /// Linear memory of the plugin instance.
    pub memory_mib: u64,
    /// Total size of a call's result (text, JSON and image bytes).
    pub max_result_kib: u64,
    /// Elements of any one table.
    pub table_elements: u32,
    /// Core instances, tables and memories a call may create.
    pub instances: u32,
    pub tables: u32,
    pub memories: u32,
    /// One outbound HTTP request, from connecting to the last byte of its response.
    pub http_timeout_ms: u64,
    /// Largest response body of one outbound HTTP request.
    pub http_max_response_kib: u64,
    /// Outbound HTTP requests of one call in flight at once (a response counts until its body
    /// is read to the end or dropped).
    pub http_max_concurrent: u32,
}

impl Default for PluginLimits {
    fn default() -> PluginLimits {
        PluginLimits {
            timeout_ms: 30_000,
            memory_mib: 128,
            max_result_kib: 1024,
            table_elements: 100_000,
            instances: 64,
            tables: 64,
            memories: 16,
            http_timeout_ms: 10_000,
            http_max_response_kib: 10 * 1024,
            http_max_concurrent: 4,
        }
    }
}

impl PluginLimits {
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn memory_bytes(&self) -> usize {
        (self.memory_mib * 1024 * 1024) as usize
    }

    pub fn max_result_bytes(&self) -> usize {
        (self.max_result_kib * 1024) as usize
    }

    /// Refuses limits the runtime cannot honour, naming the setting to change.
    pub fn validate(&self, scope: &str) -> Result<(), String> {
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(format!(
                "{scope}: timeout_ms must be between 1 and {MAX_TIMEOUT_MS} (a day), not {}",
                self.timeout_ms
            ));
        }
        if self.memory_mib == 0 || self.memory_mib > MAX_MEMORY_MIB {
            return Err(format!("{scope}: memory_mib must be between 1 and {MAX_MEMORY_MIB}, not {}", self.memory_mib));
        }
        if self.max_result_kib == 0 || self.max_result_kib > MAX_KIB {
            return Err(format!("{scope}: max_result_kib must be between 1 and {MAX_KIB} (a GiB)"));
        }
        if self.http_max_response_kib > MAX_KIB {
            return Err(format!("{scope}: http_max_response_kib must be at most {MAX_KIB} (a GiB)"));
        }
        if self.http_timeout_ms > MAX_HTTP_TIMEOUT_MS {
            return Err(format!("{scope}: http_timeout_ms must be at most {MAX_HTTP_TIMEOUT_MS} (an hour)"));
        }
        if self.http_timeout_ms == 0 || self.http_max_response_kib == 0 || self.http_max_concurrent == 0 {
            return Err(format!(
                "{scope}: http_timeout_ms, http_max_response_kib and http_max_concurrent must each be at least 1"
            ));
        }
        Ok(())
    }
}

/// Some limits for one plugin; the rest come from the defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct PluginLimitsPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64", range(min = 1, max = 86_400_000))]
    pub timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64", range(min = 1, max = 1024))]
    pub memory_mib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64", range(min = 1, max = 1_048_576))]
    pub max_result_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32", range(max = 4_294_967_295u32))]
    pub table_elements: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32", range(max = 4_294_967_295u32))]
    pub instances: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32", range(max = 4_294_967_295u32))]
    pub tables: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32", range(max = 4_294_967_295u32))]
    pub memories: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64", range(min = 1, max = 3_600_000))]
    pub http_timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64", range(min = 1, max = 1_048_576))]
    pub http_max_response_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32", range(min = 1, max = 4_294_967_295u32))]
    pub http_max_concurrent: Option<u32>,
}

impl PluginLimitsPatch {
    fn apply(&self, base: &PluginLimits) -> PluginLimits {
        PluginLimits {
            timeout_ms: self.timeout_ms.unwrap_or(base.timeout_ms),
            memory_mib: self.memory_mib.unwrap_or(base.memory_mib),
            max_result_kib: self.max_result_kib.unwrap_or(base.max_result_kib),
            table_elements: self.table_elements.unwrap_or(base.table_elements),
            instances: self.instances.unwrap_or(base.instances),
            tables: self.tables.unwrap_or(base.tables),
            memories: self.memories.unwrap_or(base.memories),
            http_timeout_ms: self.http_timeout_ms.unwrap_or(base.http_timeout_ms),
            http_max_response_kib: self.http_max_response_kib.unwrap_or(base.http_max_response_kib),
            http_max_concurrent: self.http_max_concurrent.unwrap_or(base.http_max_concurrent),
        }
    }
}

/// Limits for every plugin: defaults, and patches by plugin name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    pub defaults: PluginLimits,
    /// By plugin name, e.g. `[plugins.limits.files]`.
    pub per_plugin: BTreeMap<String, PluginLimitsPatch>,
}

impl LimitsConfig {
    pub fn for_plugin(&self, name: &str) -> PluginLimits {
        match self.per_plugin.get(name) {
            Some(patch) => patch.apply(&self.defaults),
            None => self.defaults.clone(),
        }
    }

    /// The configured limits of `name` with `extra` (set through the API) on top.
    pub fn for_plugin_with(&self, name: &str, extra: Option<&PluginLimitsPatch>) -> PluginLimits {
        let configured = self.for_plugin(name);
        match extra {
            Some(patch) => patch.apply(&configured),
            None => configured,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        self.defaults.validate("plugin limit defaults")?;
        for name in self.per_plugin.keys() {
            self.for_plugin(name).validate(&format!("limits of plugin `{name}`"))?;
        }
        Ok(())
    }
}

/// The store's resource limiter for one call. Growing past a limit traps with a [`LimitHit`]
/// that the runtime turns into a clear error, instead of a failed allocation the guest might
/// misreport.
pub struct CallLimiter {
    memory_bytes: usize,
    table_elements: usize,
    instances: usize,
    tables: usize,
    memories: usize,
}

impl CallLimiter {
    pub fn new(limits: &PluginLimits) -> CallLimiter {
        CallLimiter {
            memory_bytes: limits.memory_bytes(),
            table_elements: limits.table_elements as usize,
            instances: limits.instances as usize,
            tables: limits.tables as usize,
            memories: limits.memories as usize,
        }
    }
}

impl wasmtime::ResourceLimiter for CallLimiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            return Err(LimitHit::Memory { limit_bytes: self.memory_bytes }.into());
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            return Err(LimitHit::TableElements { limit: self.table_elements }.into());
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.instances
    }

    fn tables(&self) -> usize {
        self.tables
    }

    fn memories(&self) -> usize {
        self.memories
    }
}
