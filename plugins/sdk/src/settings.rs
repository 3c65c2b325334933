//! What an admin set for this plugin (capability `settings`): a JSON object, `{}` when nothing
//! is set. Read it into a type of your own:
//!
//! ```ignore
//! #[derive(Deserialize, Default)]
//! struct Settings { region: Option<String> }
//! let settings: Settings = toolhost_plugin::settings::get()?;
//! ```

use serde::de::DeserializeOwned;

use crate::bindings::toolhost::plugin::settings as wit;

/// The settings as JSON text.
pub fn raw() -> Result<String, String> {
    wit::get()
}

/// The settings, read into `T`; the error says what does not fit.
pub fn get<T: DeserializeOwned>() -> Result<T, String> {
    let text = raw()?;
    serde_json::from_str(&text).map_err(|e| format!("the plugin's settings do not fit what it expects: {e}"))
}
