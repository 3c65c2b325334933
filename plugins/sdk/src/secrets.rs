//! Secrets an admin bound to this plugin (capability `secrets`). A plugin never sees a value:
//! [`placeholder`] gives a stand-in to put in an outbound request's header (see [`crate::http`]),
//! and the host puts the value in its place when the request goes to a host the secret is
//! bound to. A response that echoes the value back carries the placeholder instead.
//!
//! ```ignore
//! let key = toolhost_plugin::secrets::placeholder("weather-api-key")?;
//! let response = Request::get(url).header("authorization", &format!("Bearer {key}")).send()?;
//! ```

use crate::bindings::toolhost::plugin::secrets as wit;

pub use wit::SecretError;

/// The placeholder of secret `name` for this call.
pub fn placeholder(name: &str) -> Result<String, SecretError> {
    wit::placeholder(name)
}

impl SecretError {
    /// What went wrong, for the model.
    pub fn message(&self) -> &str {
        match self {
            SecretError::Denied(m) | SecretError::NotFound(m) => m,
        }
    }
}
