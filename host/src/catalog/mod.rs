//! The providers and model configs admins administer: what exists, what is usable and why
//! not, and which client serves a chat's model. Seeded from the config file and environment
//! at start (`seed`).

pub mod seed;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Deserializer, Serialize};

use crate::llm::{self, Connection, ModelTimeouts, Provider, ProviderKind};
use crate::secrets::SecretBox;
use crate::store::{ModelRecord, Pricing, ProviderRecord, Source, Store, StoreError, new_id};

/// Share of the context window at which history is compacted, unless a model says otherwise.
pub const DEFAULT_COMPACTION_THRESHOLD: f64 = 0.7;

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(
        "no model is configured: an admin adds one with POST /api/v1/models (or start the server with --model NAME and OPENAI_API_KEY or ANTHROPIC_API_KEY)"
    )]
    NoModel,
    #[error("model `{model}` cannot be used: {reason}")]
    Unavailable { model: String, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether a provider (and so its models) can be used, and if not, why.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema, PartialEq)]
pub struct Availability {
    pub available: bool,
    /// `missing_api_key` or `undecryptable_api_key`, with what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable_reason: Option<String>,
}

/// A provider as the API shows it: never its key.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ProviderView {
    pub id: String,
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: Option<String>,
    pub has_api_key: bool,
    pub source: Source,
    #[serde(flatten)]
    pub availability: Availability,
}

/// A model config as the API shows it.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct ModelView {
    pub id: String,
    pub name: String,
    pub provider: String,
    pub model: String,
    pub context_window: i64,
    pub max_output_tokens: Option<i64>,
    pub thinking_budget_tokens: Option<i64>,
    pub compaction_threshold: f64,
    pub pricing: Pricing,
    pub default: bool,
    pub title_model: bool,
    /// Computer-use subagents run on this model (at most one is marked).
    pub computer_use_model: bool,
    /// Anthropic models: the version of Anthropic's computer tool it takes, declared instead
    /// of the `computer` function (`computer_20250124`, `computer_20251124`,
    /// `computer_toolset_20260801`).
    pub computer_tool: Option<crate::domain::ComputerTool>,
    pub source: Source,
    #[serde(flatten)]
    pub availability: Availability,
}

/// `POST /api/v1/providers`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProvider {
    #[schemars(regex(pattern = r"^[A-Za-z0-9._\-:/]{1,64}$"))]
    pub name: String,
    pub kind: ProviderKind,
    #[serde(default)]
    pub base_url: Option<String>,
    #[serde(default)]
    pub api_key: Option<String>,
}

/// Present-but-null and absent differ in a patch: `Some(None)` clears.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<Option<T>, D::Error> {
    T::deserialize(deserializer).map(Some)
}

/// `PATCH /api/v1/providers/{id}`: absent fields stay, `null` clears.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderPatch {
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<String>")]
    pub base_url: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<String>")]
    pub api_key: Option<Option<String>>,
}

/// `POST /api/v1/models`, and (every field optional) `PATCH /api/v1/models/{id}`.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelInput {
    #[schemars(regex(pattern = r"^[A-Za-z0-9._\-:/]{1,64}$"))]
    pub name: Option<String>,
    /// The provider's name or id.
    pub provider: Option<String>,
    /// The provider's name for the model (default: `name`).
    #[schemars(regex(pattern = r"[^\s]"))]
    pub model: Option<String>,
    #[schemars(range(min = 1024))]
    pub context_window: Option<i64>,
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<i64>", range(min = 1))]
    pub max_output_tokens: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<i64>", range(min = 1024))]
    pub thinking_budget_tokens: Option<Option<i64>>,
    /// A share of the context window: more than 0, at most 1.
    #[schemars(range(min = 0.001, max = 1.0))]
    pub compaction_threshold: Option<f64>,
    pub pricing: Option<Pricing>,
    pub default: Option<bool>,
    pub title_model: Option<bool>,
    /// Run computer-use subagents on this model (unmarks any other).
    pub computer_use_model: Option<bool>,
    /// Anthropic models: the computer tool version the model takes; `null` declares the
    /// `computer` tool as a plain function.
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<crate::domain::ComputerTool>")]
    pub computer_tool: Option<Option<crate::domain::ComputerTool>>,
}

/// A chat's model, ready to call.
#[derive(Clone)]
pub struct Resolved {
    pub record: ModelRecord,
    pub provider_name: String,
    pub client: Arc<dyn Provider>,
}

/// What a call cost at these prices. Reasoning tokens are part of the output tokens in both
/// wire formats, so they are not charged twice.
pub fn cost_usd(pricing: &Pricing, usage: &llm::Usage) -> f64 {
    let per_token = |tokens: i64, per_million: f64| tokens as f64 * per_million / 1_000_000.0;
    per_token(usage.input_tokens, pricing.input)
        + per_token(usage.output_tokens, pricing.output)
        + per_token(usage.cache_read_tokens, pricing.cache_read)
        + per_token(usage.cache_creation_tokens, pricing.cache_write)
}

/// The counts and cost stored with a call's message.
pub fn charge(pricing: &Pricing, usage: &llm::Usage) -> crate::store::TokenUsage {
    crate::store::TokenUsage {
        input: usage.input_tokens,
        output: usage.output_tokens,
        reasoning: usage.reasoning_tokens,
        cache_read: usage.cache_read_tokens,
        cache_creation: usage.cache_creation_tokens,
        cost_usd: Some(cost_usd(pricing, usage)),
    }
}

/// A context window guessed from a model's name, for configs that give none.
pub fn guess_context_window(model: &str) -> i64 {
    if model.starts_with("claude") { 200_000 } else { 128_000 }
}

/// The provider kind a bare model name most likely belongs to.
pub fn guess_kind(model: &str) -> ProviderKind {
    if model.starts_with("claude") { ProviderKind::Anthropic } else { ProviderKind::Openai }
}

fn valid_name(what: &str, name: &str) -> Result<(), CatalogError> {
    let ok =
        !name.is_empty() && name.len() <= 64 && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-:/".contains(c));
    if ok {
        Ok(())
    } else {
        Err(CatalogError::Invalid(format!("{what} name `{name}` must be 1 to 64 letters, digits or . _ - : /")))
    }
}

fn valid_base_url(url: &Option<String>) -> Result<(), CatalogError> {
    match url {
        Some(url)
            if !(url.starts_with("http://") || url.starts_with("https://")) || reqwest::Url::parse(url).is_err() =>
        {
            Err(CatalogError::Invalid(format!(
                "`base_url` `{url}` is not an http(s) URL, e.g. https://api.anthropic.com"
            )))
        }
        _ => Ok(()),
    }
}

fn validate_model(record: &ModelRecord) -> Result<(), CatalogError> {
    valid_name("model", &record.name)?;
    if record.model.trim().is_empty() {
        return Err(CatalogError::Invalid("`model` (the provider's name for it) is empty".into()));
    }
    if record.context_window < 1024 {
        return Err(CatalogError::Invalid(format!(
            "`context_window` is {}; it must be at least 1024 tokens",
            record.context_window
        )));
    }
    if !(record.compaction_threshold > 0.0 && record.compaction_threshold <= 1.0) {
        return Err(CatalogError::Invalid(
            "`compaction_threshold` is a share of the context window: more than 0, at most 1 (e.g. 0.7)".into(),
        ));
    }
    if record.max_output_tokens.is_some_and(|n| n < 1) || record.thinking_budget.is_some_and(|n| n < 1024) {
        return Err(CatalogError::Invalid(
            "`max_output_tokens` must be positive and `thinking_budget_tokens` at least 1024".into(),
        ));
    }
    let p = record.pricing;
    if [p.input, p.output, p.cache_read, p.cache_write].iter().any(|v| !v.is_finite() || *v < 0.0) {
        return Err(CatalogError::Invalid("prices are USD per million tokens and cannot be negative".into()));
    }
    Ok(())
}

pub struct Catalog {
    store: Store,
    secrets: SecretBox,
    timeouts: ModelTimeouts,
    /// Clients by provider id, with the provider's `updated_at` they were made for.
    clients: Mutex<HashMap<String, CachedClient>>,
}

/// A provider's client and the provider's `updated_at` it was made for.
type CachedClient = (i64, Arc<dyn Provider>);

impl Catalog {
    pub fn new(store: Store, secrets: SecretBox, timeouts: ModelTimeouts) -> Catalog {
        Catalog { store, secrets, timeouts, clients: Mutex::new(HashMap::new()) }
    }

    fn key_context(provider_id: &str) -> String {
        format!("provider:{provider_id}")
    }

    pub fn availability(&self, provider: &ProviderRecord) -> Availability {
        let (key_var, _) = provider.kind.env_vars();
        let reason = match &provider.api_key {
            Some(sealed) if self.secrets.open(sealed, &Catalog::key_context(&provider.id)).is_err() => Some(format!(
                "undecryptable_api_key: the key of provider `{}` was sealed with another secret key; give every replica the same TOOLHOST_SECRET_KEY or set the key again",
                provider.name
            )),
            Some(_) => None,
            // A custom base URL is a local server, which needs no key.
            None if provider.base_url.is_some() => None,
            None => Some(format!(
                "missing_api_key: provider `{}` has no API key; set {key_var} or PATCH /api/v1/providers/{} with an `api_key`",
                provider.name, provider.id
            )),
        };
        Availability { available: reason.is_none(), unavailable_reason: reason }
    }

    fn client(&self, provider: &ProviderRecord) -> Result<Arc<dyn Provider>, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((version, client)) = clients.get(&provider.id)
            && *version == provider.updated_at
        {
            return Ok(client.clone());
        }
        if let Some(reason) = self.availability(provider).unavailable_reason {
            return Err(reason);
        }
        let api_key = provider
            .api_key
            .as_ref()
            .map(|sealed| self.secrets.open(sealed, &Catalog::key_context(&provider.id)))
            .transpose()
            .map_err(|e| e.to_string())?;
        let connection = Connection {
            name: provider.name.clone(),
            base_url: provider.base_url.clone(),
            api_key,
            timeouts: self.timeouts,
        };
        let client = llm::connect(provider.kind, connection);
        clients.insert(provider.id.clone(), (provider.updated_at, client.clone()));
        Ok(client)
    }

    /// The model a chat names, or the default when it names none or one that was deleted.
    pub async fn resolve(&self, chat_model: Option<&str>) -> Result<Resolved, CatalogError> {
        let named = match chat_model {
            Some(name) => self.store.model(name).await?,
            None => None,
        };
        if let (Some(name), None) = (chat_model, &named) {
            tracing::info!(model = name, "the chat's model no longer exists; using the default model");
        }
        let record = match named {
            Some(record) => record,
            None => self.store.default_model().await?.ok_or(CatalogError::NoModel)?,
        };
        self.ready(record).await
    }

    /// The model that writes titles: the one marked for it, else the chat's.
    pub async fn title_model(&self, chat_model: Option<&str>) -> Result<Resolved, CatalogError> {
        if let Some(record) = self.store.title_model().await?
            && let Ok(resolved) = self.ready(record).await
        {
            return Ok(resolved);
        }
        self.resolve(chat_model).await
    }

    async fn ready(&self, record: ModelRecord) -> Result<Resolved, CatalogError> {
        let provider = self.store.provider(&record.provider_id).await?.ok_or_else(|| CatalogError::Unavailable {
            model: record.name.clone(),
            reason: "its provider was deleted".into(),
        })?;
        let client = self
            .client(&provider)
            .map_err(|reason| CatalogError::Unavailable { model: record.name.clone(), reason })?;
        Ok(Resolved { record, provider_name: provider.name, client })
    }

    /// The model computer-use subagents run on, or why there is none.
    pub async fn computer_use_model(&self) -> Result<ModelRecord, CatalogError> {
        self.store.computer_use_model().await?.ok_or_else(|| {
            CatalogError::Invalid(
                "no model is marked for computer use: an admin sets `computer_use_model = true` on one (under [models.NAME] in the configuration file, or with PATCH /api/v1/models/{id})".into(),
            )
        })
    }

    /// The name new chats get when they name no model.
    pub async fn default_model_name(&self) -> Result<Option<String>, CatalogError> {
        Ok(self.store.default_model().await?.map(|m| m.name))
    }

    /// Checks that a model a chat asks for exists.
    pub async fn check_model_name(&self, name: &str) -> Result<(), CatalogError> {
        match self.store.model(name).await? {
            Some(_) => Ok(()),
            None => {
                Err(CatalogError::Invalid(format!("there is no model `{name}`; GET /api/v1/models lists the models")))
            }
        }
    }

    fn provider_view(&self, provider: ProviderRecord) -> ProviderView {
        let availability = self.availability(&provider);
        ProviderView {
            id: provider.id,
            name: provider.name,
            kind: provider.kind,
            base_url: provider.base_url,
            has_api_key: provider.api_key.is_some(),
            source: provider.source,
            availability,
        }
    }

    pub async fn providers(&self) -> Result<Vec<ProviderView>, CatalogError> {
        Ok(self.store.providers().await?.into_iter().map(|p| self.provider_view(p)).collect())
    }

    pub async fn create_provider(&self, new: NewProvider, source: Source) -> Result<ProviderView, CatalogError> {
        valid_name("provider", &new.name)?;
        valid_base_url(&new.base_url)?;
        let id = new_id();
        let api_key = new
            .api_key
            .filter(|k| !k.trim().is_empty())
            .map(|k| self.secrets.seal(k.trim(), &Catalog::key_context(&id)));
        let record = ProviderRecord {
            id,
            name: new.name,
            kind: new.kind,
            base_url: new.base_url,
            api_key,
            source,
            updated_at: 0,
        };
        self.store.insert_provider(&record).await?;
        self.provider_view_by_id(&record.id).await
    }

    async fn provider_view_by_id(&self, id: &str) -> Result<ProviderView, CatalogError> {
        let record =
            self.store.provider(id).await?.ok_or_else(|| CatalogError::NotFound(format!("provider `{id}`")))?;
        Ok(self.provider_view(record))
    }

    pub async fn update_provider(
        &self,
        id: &str,
        patch: ProviderPatch,
        source: Source,
    ) -> Result<ProviderView, CatalogError> {
        let mut record =
            self.store.provider(id).await?.ok_or_else(|| CatalogError::NotFound(format!("provider `{id}`")))?;
        if let Some(base_url) = patch.base_url {
            valid_base_url(&base_url)?;
            record.base_url = base_url;
        }
        if let Some(api_key) = patch.api_key {
            record.api_key = api_key
                .filter(|k| !k.trim().is_empty())
                .map(|k| self.secrets.seal(k.trim(), &Catalog::key_context(&record.id)));
        }
        record.source = source;
        self.store.update_provider(&record).await?;
        self.provider_view_by_id(&record.id).await
    }

    pub async fn delete_provider(&self, id: &str) -> Result<(), CatalogError> {
        let record =
            self.store.provider(id).await?.ok_or_else(|| CatalogError::NotFound(format!("provider `{id}`")))?;
        self.store.delete_provider(&record.id).await?;
        Ok(())
    }

    fn model_view(&self, record: ModelRecord, providers: &[ProviderRecord]) -> ModelView {
        let provider = providers.iter().find(|p| p.id == record.provider_id);
        let availability = match provider {
            Some(p) => self.availability(p),
            None => Availability { available: false, unavailable_reason: Some("its provider was deleted".into()) },
        };
        ModelView {
            id: record.id,
            name: record.name,
            provider: provider.map(|p| p.name.clone()).unwrap_or_default(),
            model: record.model,
            context_window: record.context_window,
            max_output_tokens: record.max_output_tokens,
            thinking_budget_tokens: record.thinking_budget,
            compaction_threshold: record.compaction_threshold,
            pricing: record.pricing,
            default: record.is_default,
            title_model: record.for_titles,
            computer_use_model: record.for_computer_use,
            computer_tool: record.computer_tool,
            source: record.source,
            availability,
        }
    }

    pub async fn models(&self) -> Result<Vec<ModelView>, CatalogError> {
        let providers = self.store.providers().await?;
        Ok(self.store.models().await?.into_iter().map(|m| self.model_view(m, &providers)).collect())
    }

    async fn model_view_by_id(&self, id: &str) -> Result<ModelView, CatalogError> {
        let record = self.store.model(id).await?.ok_or_else(|| CatalogError::NotFound(format!("model `{id}`")))?;
        Ok(self.model_view(record, &self.store.providers().await?))
    }

    /// Creates a model config (`existing: None`) or applies `input` to one.
    pub async fn save_model(
        &self,
        existing: Option<&str>,
        input: ModelInput,
        source: Source,
    ) -> Result<ModelView, CatalogError> {
        let mut record = match existing {
            Some(id) => self.store.model(id).await?.ok_or_else(|| CatalogError::NotFound(format!("model `{id}`")))?,
            None => {
                let name = input
                    .name
                    .clone()
                    .ok_or_else(|| CatalogError::Invalid("`name` is required: what chats call this model".into()))?;
                let model = input.model.clone().unwrap_or_else(|| name.clone());
                ModelRecord {
                    id: new_id(),
                    context_window: guess_context_window(&model),
                    name,
                    provider_id: String::new(),
                    model,
                    max_output_tokens: None,
                    thinking_budget: None,
                    compaction_threshold: DEFAULT_COMPACTION_THRESHOLD,
                    pricing: Pricing::default(),
                    is_default: false,
                    for_titles: false,
                    for_computer_use: false,
                    computer_tool: None,
                    source,
                }
            }
        };
        if let Some(provider) = &input.provider {
            let found = self.store.provider(provider).await?.ok_or_else(|| {
                CatalogError::Invalid(format!("there is no provider `{provider}`; GET /api/v1/providers lists them"))
            })?;
            record.provider_id = found.id;
        } else if existing.is_none() {
            return Err(CatalogError::Invalid(
                "`provider` is required: the name of a provider (GET /api/v1/providers)".into(),
            ));
        }
        if let Some(name) = input.name {
            record.name = name;
        }
        if let (Some(model), Some(_)) = (input.model, existing) {
            record.model = model;
        }
        if let Some(window) = input.context_window {
            record.context_window = window;
        }
        if let Some(max) = input.max_output_tokens {
            record.max_output_tokens = max;
        }
        if let Some(budget) = input.thinking_budget_tokens {
            record.thinking_budget = budget;
        }
        if let Some(threshold) = input.compaction_threshold {
            record.compaction_threshold = threshold;
        }
        if let Some(pricing) = input.pricing {
            record.pricing = pricing;
        }
        if let Some(default) = input.default {
            record.is_default = default;
        }
        if let Some(titles) = input.title_model {
            record.for_titles = titles;
        }
        if let Some(computer_use) = input.computer_use_model {
            record.for_computer_use = computer_use;
        }
        if let Some(tool) = input.computer_tool {
            record.computer_tool = tool;
        }
        if record.computer_tool.is_some()
            && let Some(provider) = self.store.provider(&record.provider_id).await?
            && provider.kind != ProviderKind::Anthropic
        {
            return Err(CatalogError::Invalid(format!(
                "`computer_tool` is Anthropic's native computer tool, and provider `{}` is not an Anthropic one; leave it out (the `computer` tool is then a plain function)",
                provider.name
            )));
        }
        record.source = source;
        // The first model is the default: chats need one.
        if !record.is_default && self.store.default_model().await?.is_none_or(|d| d.id == record.id) {
            record.is_default = true;
        }
        validate_model(&record)?;
        self.store.save_model(&record).await?;
        self.model_view_by_id(&record.id).await
    }

    pub async fn delete_model(&self, id: &str) -> Result<(), CatalogError> {
        let record = self.store.model(id).await?.ok_or_else(|| CatalogError::NotFound(format!("model `{id}`")))?;
        self.store.delete_model(&record.id).await?;
        // Keep a default while any model is left.
        if record.is_default
            && let Some(mut next) = self.store.models().await?.into_iter().next()
        {
            next.is_default = true;
            self.store.save_model(&next).await?;
        }
        Ok(())
    }

    pub fn store(&self) -> &Store {
        &self.store
    }
}
