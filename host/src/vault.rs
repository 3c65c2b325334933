//! Secrets admins store for plugins (API keys, tokens): sealed at rest like provider keys, never
//! returned by the API, each bound to the plugins that may ask for it and the hosts it may be
//! sent to. Plugins get placeholders (capability `secrets`); the host substitutes values in
//! outbound request headers only (capability `http`).

use futures::future::BoxFuture;
use serde::Serialize;

use crate::plugins::capabilities::secrets::{Binding, BoundSecret, SecretLookupError, SecretSource};
use crate::secrets::SecretBox;
use crate::store::{Store, StoreError, StoredSecret};

/// Longest value accepted.
pub const MAX_VALUE_BYTES: usize = 8 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// What was asked for makes no sense; the message says what to change.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A secret as admins see it: everything but the value.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
pub struct SecretInfo {
    pub name: String,
    /// Plugins that may ask for it.
    pub plugins: Vec<String>,
    /// Hosts it is sent to: `api.example.com`, `api.example.com:8443` or `*.example.com`, over
    /// HTTPS; with `http://` in front, over plain HTTP too.
    pub hosts: Vec<String>,
    /// The admin who last set it.
    pub updated_by: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<StoredSecret> for SecretInfo {
    fn from(stored: StoredSecret) -> SecretInfo {
        SecretInfo {
            name: stored.name,
            plugins: stored.plugins,
            hosts: stored.hosts,
            updated_by: stored.updated_by,
            created_at: stored.created_at,
            updated_at: stored.updated_at,
        }
    }
}

/// A secret to store.
pub struct NewSecret<'a> {
    pub name: &'a str,
    pub value: &'a str,
    pub plugins: &'a [String],
    pub hosts: &'a [String],
}

/// The plugin secrets of the deployment.
pub struct Vault {
    store: Store,
    sealer: SecretBox,
}

/// What a value is sealed to: its row, so a sealed value cannot be moved to another secret.
fn context(name: &str) -> String {
    format!("plugin-secret:{name}")
}

fn is_name(text: &str) -> bool {
    (1..=64).contains(&text.len()) && text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

impl Vault {
    pub fn new(store: Store, sealer: SecretBox) -> Vault {
        Vault { store, sealer }
    }

    /// Stores (or replaces) a secret, after checking every part of it.
    pub async fn put(&self, secret: NewSecret<'_>, author: &str) -> Result<SecretInfo, VaultError> {
        if !is_name(secret.name) {
            return Err(VaultError::Invalid(format!(
                "`{}` is not a secret name: use 1 to 64 letters, digits, `_` or `-`",
                secret.name
            )));
        }
        if secret.value.is_empty() || secret.value.len() > MAX_VALUE_BYTES {
            return Err(VaultError::Invalid(format!("a secret's value is 1 to {MAX_VALUE_BYTES} bytes")));
        }
        // It goes into HTTP headers: visible ASCII and spaces, nothing that ends a header line.
        if !secret.value.bytes().all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic()) {
            return Err(VaultError::Invalid(
                "a secret's value is sent in HTTP headers, so it may hold only printable ASCII, spaces and tabs (no line breaks)".into(),
            ));
        }
        if secret.plugins.is_empty() || secret.hosts.is_empty() {
            return Err(VaultError::Invalid(
                "bind the secret to at least one plugin (`plugins`) and one host (`hosts`) it may be sent to".into(),
            ));
        }
        if let Some(bad) = secret.plugins.iter().find(|p| p.is_empty() || p.len() > 128) {
            return Err(VaultError::Invalid(format!("`{bad}` is not a plugin name")));
        }
        if let Some(bad) = secret.hosts.iter().find(|h| Binding::parse(h).is_none()) {
            return Err(VaultError::Invalid(format!(
                "`{bad}` is not a host: use `api.example.com`, `api.example.com:8443` or `*.example.com` (sent over HTTPS only), or `http://host` to allow plain HTTP too"
            )));
        }
        let hosts: Vec<String> = secret.hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        let sealed = self.sealer.seal(secret.value, &context(secret.name));
        let stored = self.store.put_plugin_secret(secret.name, &sealed, secret.plugins, &hosts, author).await?;
        tracing::info!(secret = %secret.name, plugins = ?secret.plugins, hosts = ?hosts, author, "plugin secret stored");
        Ok(stored.into())
    }

    pub async fn list(&self) -> Result<Vec<SecretInfo>, VaultError> {
        Ok(self.store.plugin_secrets().await?.into_iter().map(SecretInfo::from).collect())
    }

    pub async fn delete(&self, name: &str) -> Result<(), VaultError> {
        if self.store.delete_plugin_secret(name).await? {
            tracing::info!(secret = %name, "plugin secret deleted");
            Ok(())
        } else {
            Err(VaultError::NotFound(format!("there is no secret `{name}`")))
        }
    }
}

impl SecretSource for Vault {
    fn secret<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<BoundSecret>, SecretLookupError>> {
        Box::pin(async move {
            let Some(stored) = self.store.plugin_secret(name).await? else {
                return Ok(None);
            };
            let value = self
                .sealer
                .open(&stored.sealed_value, &context(name))
                .map_err(|e| SecretLookupError::Sealed(e.to_string()))?;
            Ok(Some(BoundSecret { value, plugins: stored.plugins, hosts: stored.hosts }))
        })
    }

    fn values(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, SecretLookupError>> {
        Box::pin(async move {
            let mut values = Vec::new();
            for stored in self.store.plugin_secrets().await? {
                let value = self
                    .sealer
                    .open(&stored.sealed_value, &context(&stored.name))
                    .map_err(|e| SecretLookupError::Sealed(e.to_string()))?;
                values.push((stored.name, value));
            }
            Ok(values)
        })
    }
}
