//! Providers and models from the config file and the environment, applied at every start.
//!
//! - `OPENAI_API_KEY` / `OPENAI_BASE_URL` make a provider `openai`; `ANTHROPIC_API_KEY` /
//!   `ANTHROPIC_BASE_URL` a provider `anthropic`.
//! - `[providers.NAME]` and `[models.NAME]` in the config file make those.
//! - `--model NAME` (`TOOLHOST_MODEL`) makes a model config NAME if there is none, on a provider
//!   of the kind its name suggests (claude-* on Anthropic, others on OpenAI), and makes it the
//!   default when there is no default.
//!
//! What this creates is marked `source: config` and brought back in line with the
//! configuration at each start; what admins create through the API is never touched.

use super::{Catalog, CatalogError, ModelInput, NewProvider, ProviderPatch, guess_kind};
use crate::config::Config;
use crate::llm::ProviderKind;
use crate::store::Source;

/// A provider the configuration asks for.
struct Wanted {
    name: String,
    kind: ProviderKind,
    base_url: Option<String>,
    api_key: Option<String>,
}

fn wanted_providers(config: &Config, env: &dyn Fn(&str) -> Option<String>) -> Vec<Wanted> {
    let mut wanted = Vec::new();
    for kind in [ProviderKind::Openai, ProviderKind::Anthropic] {
        let (key_var, url_var) = kind.env_vars();
        let (api_key, base_url) = (env(key_var), env(url_var));
        if api_key.is_some() || base_url.is_some() {
            wanted.push(Wanted { name: kind.as_str().to_string(), kind, base_url, api_key });
        }
    }
    for (name, provider) in &config.providers {
        let key_var = provider.api_key_env.clone().unwrap_or_else(|| provider.kind.env_vars().0.to_string());
        wanted.retain(|w| &w.name != name);
        wanted.push(Wanted {
            name: name.clone(),
            kind: provider.kind,
            base_url: provider.base_url.clone(),
            api_key: env(&key_var),
        });
    }
    wanted
}

/// Applies the configuration's providers and models.
pub async fn seed(
    catalog: &Catalog,
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), CatalogError> {
    let store = catalog.store();
    for wanted in wanted_providers(config, env) {
        let api_key = wanted.api_key.filter(|k| !k.trim().is_empty());
        match store.provider(&wanted.name).await? {
            Some(existing) if existing.source == Source::Api => {
                tracing::info!(
                    provider = wanted.name,
                    "an admin manages this provider through the API; the configuration does not change it"
                );
            }
            Some(existing) if existing.kind != wanted.kind => {
                return Err(CatalogError::Invalid(format!(
                    "provider `{}` is {:?} in the database but {:?} in the configuration; rename one",
                    wanted.name, existing.kind, wanted.kind
                )));
            }
            Some(existing) => {
                let patch = ProviderPatch { base_url: Some(wanted.base_url), api_key: Some(api_key) };
                catalog.update_provider(&existing.id, patch, Source::Config).await?;
            }
            None => {
                let new = NewProvider { name: wanted.name, kind: wanted.kind, base_url: wanted.base_url, api_key };
                catalog.create_provider(new, Source::Config).await?;
            }
        }
    }
    for (name, model) in &config.models {
        if store.provider(&model.provider).await?.is_none() {
            return Err(CatalogError::Invalid(format!(
                "model `{name}` in the config file names provider `{}`, which is not configured: add [providers.{}]",
                model.provider, model.provider
            )));
        }
        let input = ModelInput {
            name: Some(name.clone()),
            provider: Some(model.provider.clone()),
            model: model.model.clone().or_else(|| Some(name.clone())),
            context_window: model.context_window,
            max_output_tokens: Some(model.max_output_tokens),
            thinking_budget_tokens: Some(model.thinking_budget_tokens),
            compaction_threshold: model.compaction_threshold,
            pricing: model.pricing,
            default: model.default.then_some(true),
            title_model: model.title_model.then_some(true),
            computer_use_model: model.computer_use_model.then_some(true),
            computer_tool: Some(model.computer_tool),
        };
        match store.model(name).await? {
            Some(existing) if existing.source == Source::Api => {
                tracing::info!(
                    model = name,
                    "an admin manages this model through the API; the configuration does not change it"
                );
            }
            Some(existing) => {
                catalog.save_model(Some(&existing.id), input, Source::Config).await?;
            }
            None => {
                catalog.save_model(None, input, Source::Config).await?;
            }
        }
    }
    if let Some(name) = &config.model {
        seed_named_model(catalog, name).await?;
    }
    Ok(())
}

/// `--model NAME`: a model config of that name, the default unless another is.
async fn seed_named_model(catalog: &Catalog, name: &str) -> Result<(), CatalogError> {
    let store = catalog.store();
    if let Some(existing) = store.model(name).await? {
        if store.default_model().await?.is_none() {
            catalog
                .save_model(
                    Some(&existing.id),
                    ModelInput { default: Some(true), ..ModelInput::default() },
                    existing.source,
                )
                .await?;
        }
        return Ok(());
    }
    let kind = guess_kind(name);
    let providers = store.providers().await?;
    let provider =
        match providers.iter().find(|p| p.kind == kind).or(if providers.len() == 1 { providers.first() } else { None })
        {
            Some(provider) => provider.name.clone(),
            None => {
                // Made without a key, so GET /api/v1/models says what is missing.
                let new = NewProvider { name: kind.as_str().to_string(), kind, base_url: None, api_key: None };
                catalog.create_provider(new, Source::Config).await?.name
            }
        };
    let make_default = store.default_model().await?.is_none();
    let input = ModelInput {
        name: Some(name.to_string()),
        provider: Some(provider),
        default: make_default.then_some(true),
        ..ModelInput::default()
    };
    catalog.save_model(None, input, Source::Config).await?;
    Ok(())
}
