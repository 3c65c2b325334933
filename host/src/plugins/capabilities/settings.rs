//! Capability `settings`: what an admin set for the plugin, a JSON object given to `describe`
//! and every call alike.

use wasmtime::component::{HasSelf, Linker};

use super::{CallSetup, CallState, Capability};
use crate::plugins::bindings::toolhost::plugin::settings as wit;

pub struct Settings;

impl Capability for Settings {
    const NAME: &'static str = "settings";
    type State = ();

    fn new_state(_: &CallSetup) {}

    fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)
    }
}

impl wit::Host for CallState {
    fn get(&mut self) -> Result<String, String> {
        if !self.grants.allows(Settings::NAME) {
            return Err(format!(
                "the tool policy does not let plugin `{}` read its settings (capability `settings`)",
                self.identity.plugin
            ));
        }
        Ok(self.settings.to_string())
    }
}
