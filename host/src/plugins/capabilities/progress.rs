//! Capability `progress`: what a long call is doing, for the person watching the chat.

use serde::Serialize;
use wasmtime::component::{HasSelf, Linker};

use super::{CallSetup, CallState, Capability, ProgressSink};
use crate::plugins::bindings::toolhost::plugin::progress as wit;

const MAX_MESSAGE_BYTES: usize = 1024;
/// Reports forwarded per call; a plugin reporting in a tight loop is cut off.
const MAX_REPORTS_PER_CALL: u32 = 10_000;

pub struct Progress;

impl Capability for Progress {
    const NAME: &'static str = "progress";
    type State = ProgressState;

    fn new_state(setup: &CallSetup) -> ProgressState {
        ProgressState { sink: setup.progress.clone(), reports: 0 }
    }

    fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)
    }
}

/// One progress report of a running call.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProgressUpdate {
    pub plugin: String,
    pub tool: String,
    pub call_id: String,
    pub message: String,
    /// Between 0.0 and 1.0 when the plugin knows.
    pub fraction: Option<f32>,
}

/// Where the call's reports go, and how many it made.
pub struct ProgressState {
    sink: Option<ProgressSink>,
    reports: u32,
}

impl wit::Host for CallState {
    fn report(&mut self, message: String, fraction: Option<f32>) {
        if !self.grants.allows(Progress::NAME) {
            return;
        }
        let state = self.state_of::<Progress>();
        let Some(sink) = state.sink.clone() else { return };
        state.reports += 1;
        if state.reports > MAX_REPORTS_PER_CALL {
            return;
        }
        sink(ProgressUpdate {
            plugin: self.identity.plugin.clone(),
            tool: self.identity.tool.clone(),
            call_id: self.identity.call_id.clone(),
            message: super::log::truncate(&message, MAX_MESSAGE_BYTES).to_string(),
            fraction: fraction.filter(|f| f.is_finite()).map(|f| f.clamp(0.0, 1.0)),
        });
    }
}
