//! Capability `secrets`: the secrets an admin bound to a plugin, handed to it as placeholders.
//!
//! The value stays in the host. [`http`](super::http) puts it in place of its placeholder in
//! the headers of an outbound request, and only when the request goes to a host the secret is
//! bound to (a request to any other host that carries the placeholder is refused); a response
//! that echoes the value back has it replaced by the placeholder before the plugin reads it.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use rand::RngCore;
use wasmtime::component::{HasSelf, Linker};

use super::{CallSetup, CallState, Capability};
use crate::plugins::bindings::toolhost::plugin::secrets::{self as wit, SecretError};
use crate::store::StoreError;

/// Where the secrets live (the server's store, sealed at rest).
pub trait SecretSource: Send + Sync {
    /// The secret called `name`, opened, with its bindings; `None` when there is none.
    fn secret<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<Option<BoundSecret>, SecretLookupError>>;
    /// Every secret's name and value: what responses are masked of, whatever the plugin (a
    /// value another plugin stored on a service must not be read back either).
    fn values(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, SecretLookupError>>;
}

/// Why a secret could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum SecretLookupError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The value cannot be opened with this server's key.
    #[error("{0}")]
    Sealed(String),
}

/// A secret's value and what it is bound to.
#[derive(Clone)]
pub struct BoundSecret {
    pub value: String,
    /// Plugins that may ask for it, by name.
    pub plugins: Vec<String>,
    /// Hosts it may be sent to: `api.example.com`, `api.example.com:8443`, `*.example.com`.
    pub hosts: Vec<String>,
}

impl std::fmt::Debug for BoundSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoundSecret").field("plugins", &self.plugins).field("hosts", &self.hosts).finish()
    }
}

/// Where a secret may be sent: `api.example.com` (any port), `api.example.com:8443`,
/// `*.example.com` (its subdomains), `[::1]:8080`; over HTTPS only, unless written with
/// `http://` in front (then over plain HTTP too, for a service on a trusted network).
#[derive(Clone, Debug, PartialEq)]
pub struct Binding {
    plain_http: bool,
    /// Lower case; an IPv6 literal without brackets.
    host: String,
    /// `host` is a suffix: the binding is `*.host`.
    subdomains: bool,
    port: Option<u16>,
}

impl Binding {
    /// `None` when `text` is not a binding.
    pub fn parse(text: &str) -> Option<Binding> {
        let text = text.to_ascii_lowercase();
        let (plain_http, rest) = match (text.strip_prefix("http://"), text.strip_prefix("https://")) {
            (Some(rest), _) => (true, rest.to_string()),
            (_, Some(rest)) => (false, rest.to_string()),
            _ => (false, text.clone()),
        };
        let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (literal, after) = bracketed.split_once(']')?;
            literal.parse::<std::net::Ipv6Addr>().ok()?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?.parse::<u16>().ok()?),
            };
            (literal.to_string(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host.to_string(), Some(port.parse::<u16>().ok()?)),
                None => (rest.clone(), None),
            }
        };
        let (subdomains, host) = match host.strip_prefix("*.") {
            Some(suffix) => (true, suffix.to_string()),
            None => (false, host),
        };
        let is_name = !host.is_empty()
            && host.len() <= 253
            && host.split('.').all(|label| {
                (1..=63).contains(&label.len()) && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !(is_name || host.parse::<std::net::Ipv6Addr>().is_ok()) {
            return None;
        }
        Some(Binding { plain_http, host, subdomains, port })
    }

    /// Whether a request to `host:port` (over TLS or not) may carry the secret.
    pub fn admits(&self, tls: bool, host: &str, port: u16) -> bool {
        let host_matches = if self.subdomains { host.ends_with(&format!(".{}", self.host)) } else { host == self.host };
        (tls || self.plain_http) && host_matches && self.port.is_none_or(|p| p == port)
    }
}

/// Whether a secret bound to `hosts` may be sent to `host:port`.
pub fn binds(hosts: &[String], tls: bool, host: &str, port: u16) -> bool {
    hosts.iter().filter_map(|h| Binding::parse(h)).any(|binding| binding.admits(tls, host, port))
}

/// One secret handed out in a call.
#[derive(Clone)]
pub struct Issued {
    pub name: String,
    pub placeholder: String,
    pub value: String,
    pub hosts: Vec<String>,
}

/// The secrets handed out in one call, shared by `secrets` (which hands them out) and `http`
/// (which substitutes and masks them).
#[derive(Clone, Default)]
pub struct IssuedSecrets(Arc<Mutex<Vec<Issued>>>);

impl IssuedSecrets {
    pub fn all(&self) -> Vec<Issued> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The placeholder of `name` in this call (the same one if asked again).
    fn issue(&self, name: &str, secret: BoundSecret) -> String {
        let mut issued = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(known) = issued.iter_mut().find(|i| i.name == name) {
            // Asked again: the newest value, the same placeholder.
            known.value = secret.value;
            known.hosts = secret.hosts;
            return known.placeholder.clone();
        }
        let mut nonce = [0u8; 8];
        rand::rng().fill_bytes(&mut nonce);
        let placeholder = format!("toolhost-secret-{name}-{}", hex::encode(nonce));
        issued.push(Issued { name: name.to_string(), placeholder: placeholder.clone(), value: secret.value, hosts: secret.hosts });
        placeholder
    }
}

pub struct Secrets;

impl Capability for Secrets {
    const NAME: &'static str = "secrets";
    type State = IssuedSecrets;

    fn new_state(setup: &CallSetup) -> IssuedSecrets {
        setup.issued_secrets.clone()
    }

    fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)
    }
}

impl wit::Host for CallState {
    async fn placeholder(&mut self, name: String) -> Result<String, SecretError> {
        let plugin = self.identity.plugin.clone();
        self.grants.require(Secrets::NAME, &plugin).map_err(SecretError::Denied)?;
        let source = self.chat.as_ref().map(|chat| chat.secrets.clone()).ok_or_else(|| {
            SecretError::NotFound("secrets are available only to tools called from a chat".into())
        })?;
        let not_bound = || {
            SecretError::NotFound(format!(
                "no secret named `{name}` is bound to plugin `{plugin}`; an admin stores secrets and binds them to plugins (PUT /api/v1/secrets/{name})"
            ))
        };
        let secret = match source.secret(&name).await {
            Ok(Some(secret)) if secret.plugins.contains(&plugin) => secret,
            Ok(_) => return Err(not_bound()),
            Err(SecretLookupError::Store(e)) => return Err(SecretError::NotFound(super::database_failed(&e, Secrets::NAME))),
            Err(SecretLookupError::Sealed(why)) => {
                tracing::error!(secret = %name, plugin = %plugin, "{why}");
                return Err(SecretError::NotFound(format!("the secret `{name}` cannot be opened on this server; an admin can set it again")));
            }
        };
        Ok(self.state_of::<Secrets>().issue(&name, secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_goes_only_to_the_hosts_it_is_bound_to() {
        let hosts = vec![
            "api.example.com".to_string(),
            "Other.example.org:8443".into(),
            "*.corp.example:8443".into(),
            "http://plain.internal".into(),
        ];
        assert!(binds(&hosts, true, "api.example.com", 443));
        assert!(binds(&hosts, true, "api.example.com", 80), "a bare host binds every port");
        assert!(!binds(&hosts, false, "api.example.com", 80), "never in the clear unless bound with http://");
        assert!(binds(&hosts, false, "plain.internal", 80));
        assert!(!binds(&hosts, true, "evil.api.example.com", 443));
        assert!(!binds(&hosts, true, "api.example.com.evil", 443));
        assert!(binds(&hosts, true, "other.example.org", 8443));
        assert!(!binds(&hosts, true, "other.example.org", 443), "a host:port binds that port only");
        assert!(binds(&hosts, true, "a.corp.example", 8443));
        assert!(!binds(&hosts, true, "a.corp.example", 443));
        assert!(!binds(&hosts, true, "corp.example", 8443), "a wildcard binds the subdomains");
        assert!(binds(&["[::1]:8080".to_string()], true, "::1", 8080));
        assert!(binds(&["[::1]".to_string()], true, "::1", 8080));
    }

    #[test]
    fn bindings_are_hosts_with_an_optional_scheme_port_or_wildcard() {
        for good in ["api.example.com", "api.example.com:8443", "*.example.com", "localhost", "[::1]:8080", "10.0.0.5", "http://localhost:8080", "https://x.example"] {
            assert!(Binding::parse(good).is_some(), "{good}");
        }
        for bad in ["", "api.example.com/v1", "a b", "api.example.com:99999", "*", "[::1", "ftp://x.example", "user@x.example"] {
            assert!(Binding::parse(bad).is_none(), "{bad}");
        }
    }
}
