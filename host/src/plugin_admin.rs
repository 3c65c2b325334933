//! Plugins administered live: admins upload components through the API, enable, disable,
//! configure and remove them, and every replica follows without a restart.
//!
//! The database holds the truth (`uploaded_plugins`: each component by its SHA-256, whether it
//! is enabled, its limit overrides). Each replica keeps its runtime in line with it by a
//! *sync*: it compiles what is enabled and not yet in service, and takes out what is no longer
//! wanted. A sync runs at start, after every change made here, and when another replica
//! announces one. The first replica to finish compiling a new upload records the outcome of
//! its check (its name and version, or why it was refused) for all to see.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::domain::ToolInfo;
use crate::plugins::{Compiling, PluginLimits, PluginLimitsPatch, PluginRuntime, PluginSource, check_imports};
use crate::store::{Store, StoreError, UploadState, UploadedPlugin};

/// Largest component accepted by upload. A Python or JavaScript plugin, runtime included, is
/// 10 to 40 MiB.
pub const MAX_UPLOAD_BYTES: usize = 128 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The component fails a check that needs no compiling; the message is the load's.
    #[error("the plugin is refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    NotFound(String),
    /// It is not the API's to change (bundled, or from the plugins directory).
    #[error("{0}")]
    NotManaged(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A plugin as admins see it: where it comes from, where it stands on this replica, and what
/// it offers.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct PluginView {
    /// What its `describe` says; unknown until it has been checked once.
    pub name: Option<String>,
    pub version: Option<String>,
    pub summary: Option<String>,
    /// `bundled`, `file` (the plugins directory) or `uploaded` (through this API).
    pub origin: &'static str,
    /// The file, `bundled:NAME` or `uploaded:SHA256`.
    pub source: String,
    pub sha256: Option<String>,
    /// On this replica: `loaded` (its tools are in service), `compiling`, `checking` (new,
    /// waiting to be compiled and checked), `loading` (checked, waiting to be compiled here),
    /// `disabled`, `refused` (it failed its checks; `problem` says why) or `failed` (it passed
    /// elsewhere but does not load here; `problem` says why).
    pub state: &'static str,
    pub enabled: bool,
    pub problem: Option<String>,
    /// Since when it has been compiling, in milliseconds since the epoch.
    pub compiling_since_ms: Option<i64>,
    /// What the component imports, as it names them.
    pub imports: Vec<String>,
    /// The `toolhost:plugin` capabilities among them (once loaded).
    pub capabilities: Vec<String>,
    pub tools: Vec<ToolInfo>,
    /// The limits its calls run under (once loaded).
    pub limits: Option<PluginLimits>,
    /// What an admin set through the API, over the configured limits.
    pub limit_overrides: Option<serde_json::Value>,
    /// What the plugin reads through its `settings` capability (uploaded plugins).
    pub settings: Option<serde_json::Value>,
    pub uploaded_by: Option<String>,
    pub created_at: Option<i64>,
    pub updated_at: Option<i64>,
}

pub struct PluginAdmin {
    store: Store,
    runtime: Arc<PluginRuntime>,
    /// Tells the other replicas to sync.
    announce: Box<dyn Fn() + Send + Sync>,
    wake: Notify,
    /// Uploads that did not load here (by SHA-256), and why; not tried again until a restart.
    failed_here: Mutex<BTreeMap<String, String>>,
}

impl PluginAdmin {
    pub fn new(store: Store, runtime: Arc<PluginRuntime>, announce: Box<dyn Fn() + Send + Sync>) -> Arc<PluginAdmin> {
        Arc::new(PluginAdmin { store, runtime, announce, wake: Notify::new(), failed_here: Mutex::default() })
    }

    /// Syncs whenever asked (see [`PluginAdmin::request_sync`]), for as long as the server runs.
    pub async fn follow(self: Arc<Self>) {
        loop {
            self.wake.notified().await;
            if let Err(e) = self.sync().await {
                tracing::error!(error = %e, "cannot bring the uploaded plugins in line with the database; trying again at the next change");
            }
        }
    }

    /// Plugins compiling on this replica now.
    pub fn compiling(&self) -> Vec<Compiling> {
        self.runtime.compiling()
    }

    /// Whether the plugins to serve with at start are all loaded (or refused) here.
    pub fn started(&self) -> bool {
        self.runtime.started()
    }

    /// Asks for a sync soon; requests made while one runs make one more run after it.
    pub fn request_sync(&self) {
        self.wake.notify_one();
    }

    /// Brings the runtime's uploaded plugins in line with the database: compiles and puts in
    /// service those enabled and not in service (recording the first check's outcome), changes
    /// limits, and takes out the rest.
    pub async fn sync(&self) -> Result<(), StoreError> {
        let rows = self.store.uploaded_plugins().await?;
        let wanted: Vec<&UploadedPlugin> =
            rows.iter().filter(|r| r.enabled && r.state != UploadState::Refused).collect();
        let in_service = self.runtime.uploaded();
        let failed_here = self.failed_here.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // A newer upload of the same name in service here is its new version, loaded before the
        // replica that checked it first deleted this one: not to be loaded back.
        let superseded = |r: &UploadedPlugin| {
            let newer_sha = r.name.as_ref().and_then(|name| in_service.get(name));
            newer_sha.is_some_and(|sha| rows.iter().any(|x| x.sha256 == *sha && x.created_at > r.created_at))
        };
        // In service with other settings: described again with the new ones (the compile is cached).
        let settings_changed = |r: &UploadedPlugin| {
            let name = r.name.as_deref().unwrap_or_default();
            in_service.get(name) == Some(&r.sha256) && self.runtime.settings_of(name).is_some_and(|s| *s != r.settings)
        };
        let to_load: Vec<&UploadedPlugin> = wanted
            .iter()
            .copied()
            .filter(|r| {
                (!in_service.values().any(|sha| *sha == r.sha256) || settings_changed(r))
                    && !failed_here.contains_key(&r.sha256)
            })
            .filter(|r| !superseded(r))
            .collect();
        for (name, sha256) in &in_service {
            let still_wanted = wanted.iter().any(|r| r.sha256 == *sha256);
            // A new version on its way replaces this one when it is ready, not before.
            let successor = to_load.iter().any(|r| r.name.as_deref() == Some(name.as_str()));
            if !still_wanted && !successor {
                self.runtime.remove(name);
            }
        }
        let set = self.runtime.loaded();
        for row in wanted.iter().filter(|r| in_service.values().any(|sha| *sha == r.sha256)) {
            let Some(name) = &row.name else { continue };
            let overrides = limit_patch(&row.limits).ok();
            let changed =
                set.plugin(name).is_some_and(|p| p.limits != self.runtime.limits_for(name, overrides.as_ref()));
            if changed && let Err(e) = self.runtime.set_limits(name, overrides.as_ref()) {
                tracing::error!(plugin = %name, error = %e, "the limits set for an uploaded plugin are not usable");
            }
        }
        for row in to_load {
            self.load(row).await?;
        }
        Ok(())
    }

    /// Compiles, checks and puts in service one uploaded plugin.
    async fn load(&self, row: &UploadedPlugin) -> Result<(), StoreError> {
        let Some(bytes) = self.store.uploaded_component(&row.sha256).await? else { return Ok(()) };
        let source = PluginSource::Uploaded { sha256: row.sha256.clone() };
        let overrides = limit_patch(&row.limits).map_err(|e| format!("its limits are not usable: {e}"));
        let loaded = match (self.runtime.prepare(source, bytes, row.settings.clone()).await, overrides) {
            (Ok(prepared), Ok(overrides)) => {
                let checked = (prepared.name().to_string(), prepared.version().to_string());
                self.runtime.insert(prepared, Some(&overrides)).map(|_| checked)
            }
            (Err(problem), _) | (_, Err(problem)) => Err(problem),
        };
        let first_check = row.state == UploadState::Checking;
        match loaded {
            Ok((name, version)) => {
                tracing::info!(plugin = %name, sha256 = %row.sha256, "uploaded plugin in service");
                if first_check {
                    self.store.mark_uploaded_installed(&row.sha256, &name, &version).await?;
                    (self.announce)();
                }
            }
            Err(problem) => {
                tracing::error!(sha256 = %row.sha256, %problem, "uploaded plugin refused");
                if first_check {
                    self.store.mark_uploaded_refused(&row.sha256, &problem).await?;
                    (self.announce)();
                } else {
                    self.failed_here.lock().unwrap_or_else(|p| p.into_inner()).insert(row.sha256.clone(), problem);
                }
            }
        }
        Ok(())
    }

    /// Stores an uploaded component after the checks that need no compiling (the same as at
    /// load, with the same messages); compiling and the rest of the checks follow in the
    /// background, on every replica. The same bytes uploaded again are the plugin already
    /// stored (`false`).
    pub async fn upload(&self, bytes: Vec<u8>, enabled: bool, by: &str) -> Result<(PluginView, bool), AdminError> {
        if bytes.len() > MAX_UPLOAD_BYTES {
            return Err(AdminError::TooLarge(format!(
                "the component is {} MiB; at most {} MiB can be uploaded",
                bytes.len().div_ceil(1024 * 1024),
                MAX_UPLOAD_BYTES / (1024 * 1024)
            )));
        }
        let imports = check_imports(&bytes).map_err(AdminError::Refused)?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let (row, created) = self.store.add_uploaded_plugin(&sha256, &bytes, &imports, enabled, by).await?;
        if created {
            tracing::info!(%sha256, size_bytes = bytes.len(), by, "plugin uploaded");
            self.changed();
        }
        Ok((self.view_of_upload(&row), created))
    }

    /// Every plugin: the bundled ones, those of the plugins directory, and the uploaded ones.
    pub async fn list(&self) -> Result<Vec<PluginView>, AdminError> {
        let set = self.runtime.loaded();
        let compiling = self.runtime.compiling();
        let mut views: Vec<PluginView> = set
            .plugins()
            .filter(|p| !p.source.starts_with("uploaded:"))
            .map(|p| PluginView {
                name: Some(p.name.clone()),
                version: Some(p.version.clone()),
                summary: Some(p.summary.clone()),
                origin: if p.source.starts_with("bundled:") { "bundled" } else { "file" },
                source: p.source.clone(),
                sha256: Some(p.sha256.clone()),
                state: "loaded",
                enabled: true,
                problem: None,
                compiling_since_ms: None,
                imports: Vec::new(),
                capabilities: p.capabilities.clone(),
                tools: p.tools.clone(),
                limits: Some(p.limits.clone()),
                limit_overrides: None,
                settings: None,
                uploaded_by: None,
                created_at: None,
                updated_at: None,
            })
            .collect();
        let configured = |source: &str| !source.starts_with("uploaded:");
        for c in compiling.iter().filter(|c| configured(&c.source)) {
            views.push(PluginView::unloaded(&c.source, "compiling", None, Some(c.since_ms)));
        }
        for r in set.refused().iter().filter(|r| configured(&r.source)) {
            views.push(PluginView::unloaded(&r.source, "refused", Some(r.reason.clone()), None));
        }
        for row in self.store.uploaded_plugins().await? {
            views.push(self.view_of_upload(&row));
        }
        Ok(views)
    }

    /// The plugin `id` names: an uploaded plugin's SHA-256 or name, or a configured plugin's name.
    pub async fn get(&self, id: &str) -> Result<PluginView, AdminError> {
        let views = self.list().await?;
        let found = views.iter().find(|v| v.sha256.as_deref() == Some(id) && v.origin == "uploaded").or_else(|| {
            views
                .iter()
                .find(|v| v.name.as_deref() == Some(id) && v.state == "loaded")
                .or_else(|| views.iter().find(|v| v.name.as_deref() == Some(id) || v.sha256.as_deref() == Some(id)))
        });
        found.cloned().ok_or_else(|| not_found(id))
    }

    /// Enables or disables an uploaded plugin, or sets its limit overrides (all `None`: none) or
    /// its settings.
    pub async fn configure(
        &self,
        id: &str,
        enabled: Option<bool>,
        limits: Option<PluginLimitsPatch>,
        settings: Option<serde_json::Map<String, serde_json::Value>>,
    ) -> Result<PluginView, AdminError> {
        let row = self.uploaded(id).await?;
        if let Some(patch) = &limits {
            let name = row.name.as_deref().unwrap_or("the plugin");
            let effective = self.runtime.limits_for(name, Some(patch));
            effective.validate(&format!("limits of plugin `{name}`")).map_err(AdminError::Invalid)?;
        }
        let limits = limits.map(|patch| serde_json::to_value(patch).unwrap_or_else(|_| serde_json::json!({})));
        let row = self
            .store
            .configure_uploaded_plugin(
                &row.sha256,
                enabled,
                limits.as_ref(),
                settings.map(serde_json::Value::Object).as_ref(),
            )
            .await?
            .ok_or_else(|| not_found(id))?;
        if !row.enabled {
            self.take_out_of_service(&row);
        }
        self.changed();
        Ok(self.view_of_upload(&row))
    }

    /// Removes an uploaded plugin from every replica; calls already running finish.
    pub async fn remove(&self, id: &str) -> Result<(), AdminError> {
        let row = self.uploaded(id).await?;
        if !self.store.delete_uploaded_plugin(&row.sha256).await? {
            return Err(not_found(id));
        }
        self.take_out_of_service(&row);
        tracing::info!(sha256 = %row.sha256, plugin = row.name.as_deref().unwrap_or(""), "uploaded plugin removed");
        self.changed();
        Ok(())
    }

    /// The uploaded plugin `id` names (its SHA-256 or its name).
    async fn uploaded(&self, id: &str) -> Result<UploadedPlugin, AdminError> {
        let rows = self.store.uploaded_plugins().await?;
        let by_name = |r: &&UploadedPlugin| r.name.as_deref() == Some(id);
        let found = rows.iter().find(|r| r.sha256 == id).or_else(|| {
            rows.iter()
                .filter(by_name)
                .find(|r| r.state == UploadState::Installed)
                .or_else(|| rows.iter().find(by_name))
        });
        if let Some(row) = found {
            return Ok(row.clone());
        }
        if let Some(plugin) = self.runtime.loaded().plugin(id) {
            return Err(AdminError::NotManaged(format!(
                "plugin `{id}` comes from {}; it is configured in the server's configuration file, not through the API",
                if plugin.source.starts_with("bundled:") {
                    "the server itself (bundled)"
                } else {
                    "the plugins directory"
                }
            )));
        }
        Err(not_found(id))
    }

    /// Takes an upload out of service here at once (the sync that follows would too, after any
    /// compile it is waiting behind), so that the answer to the admin is already true here.
    fn take_out_of_service(&self, row: &UploadedPlugin) {
        if let Some(name) = &row.name
            && self.runtime.uploaded().get(name) == Some(&row.sha256)
        {
            self.runtime.remove(name);
        }
    }

    fn changed(&self) {
        (self.announce)();
        self.request_sync();
    }

    fn view_of_upload(&self, row: &UploadedPlugin) -> PluginView {
        let set = self.runtime.loaded();
        let source = PluginSource::Uploaded { sha256: row.sha256.clone() }.label();
        let loaded = set.plugins().find(|p| p.source == source);
        let compiling: Option<Compiling> = self.runtime.compiling().into_iter().find(|c| c.source == source);
        let failed_here = self.failed_here.lock().unwrap_or_else(|p| p.into_inner()).get(&row.sha256).cloned();
        let (state, problem) = match (row.state, row.enabled, loaded, &compiling, failed_here) {
            (UploadState::Refused, ..) => ("refused", row.problem.clone()),
            (_, _, Some(_), ..) => ("loaded", None),
            (_, false, ..) => ("disabled", None),
            (_, _, _, Some(_), _) => ("compiling", None),
            (_, _, _, _, Some(problem)) => ("failed", Some(problem)),
            (UploadState::Checking, ..) => ("checking", None),
            _ => ("loading", None),
        };
        PluginView {
            name: row.name.clone().or_else(|| loaded.map(|p| p.name.clone())),
            version: row.version.clone(),
            summary: loaded.map(|p| p.summary.clone()),
            origin: "uploaded",
            source,
            sha256: Some(row.sha256.clone()),
            state,
            enabled: row.enabled,
            problem,
            compiling_since_ms: compiling.map(|c| c.since_ms),
            imports: row.imports.clone(),
            capabilities: loaded.map(|p| p.capabilities.clone()).unwrap_or_default(),
            tools: loaded.map(|p| p.tools.clone()).unwrap_or_default(),
            limits: loaded.map(|p| p.limits.clone()),
            limit_overrides: Some(row.limits.clone()),
            settings: Some(row.settings.clone()),
            uploaded_by: Some(row.uploaded_by.clone()),
            created_at: Some(row.created_at),
            updated_at: Some(row.updated_at),
        }
    }
}

impl PluginView {
    /// A configured plugin that is not in service (compiling, or refused).
    fn unloaded(source: &str, state: &'static str, problem: Option<String>, since: Option<i64>) -> PluginView {
        PluginView {
            name: None,
            version: None,
            summary: None,
            origin: if source.starts_with("bundled:") { "bundled" } else { "file" },
            source: source.to_string(),
            sha256: None,
            state,
            enabled: true,
            problem,
            compiling_since_ms: since,
            imports: Vec::new(),
            capabilities: Vec::new(),
            tools: Vec::new(),
            limits: None,
            limit_overrides: None,
            settings: None,
            uploaded_by: None,
            created_at: None,
            updated_at: None,
        }
    }
}

fn limit_patch(value: &serde_json::Value) -> Result<PluginLimitsPatch, String> {
    serde_json::from_value(value.clone()).map_err(|e| e.to_string())
}

fn not_found(id: &str) -> AdminError {
    AdminError::NotFound(format!("no plugin is named `{id}` or has that SHA-256; GET /api/v1/plugins lists them"))
}
