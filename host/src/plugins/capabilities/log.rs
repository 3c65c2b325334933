//! Capability `log`: plugin log lines into the host's tracing, tagged with plugin, tool and chat.

use wasmtime::component::{HasSelf, Linker};

use super::{CallSetup, CallState, Capability};
use crate::plugins::bindings::toolhost::plugin::log::{self as wit, Level};

/// Longest log line kept; longer ones are cut.
const MAX_LINE_BYTES: usize = 4096;
/// Lines kept per call, so a chatty plugin cannot flood the log.
const MAX_LINES_PER_CALL: u32 = 1000;

pub struct Log;

impl Capability for Log {
    const NAME: &'static str = "log";
    type State = LogState;

    fn new_state(_: &CallSetup) -> LogState {
        LogState::default()
    }

    fn add_to_linker(linker: &mut Linker<CallState>) -> wasmtime::Result<()> {
        wit::add_to_linker::<CallState, HasSelf<CallState>>(linker, |s| s)
    }
}

#[derive(Default)]
/// Lines logged so far in the call.
pub struct LogState {
    lines: u32,
}

impl wit::Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        if !self.grants.allows(Log::NAME) {
            return; // Logging is not worth failing a call over; ungranted lines are dropped.
        }
        let state = self.state_of::<Log>();
        state.lines += 1;
        let lines = state.lines;
        if lines > MAX_LINES_PER_CALL {
            if lines == MAX_LINES_PER_CALL + 1 {
                tracing::warn!(plugin = %self.identity.plugin, tool = %self.identity.tool, chat_id = %self.identity.chat_id,
                    "plugin logged more than {MAX_LINES_PER_CALL} lines in one call; dropping the rest");
            }
            return;
        }
        let message = truncate(&message, MAX_LINE_BYTES);
        let id = &self.identity;
        match level {
            Level::Trace => {
                tracing::trace!(target: "plugin", plugin = %id.plugin, tool = %id.tool, chat_id = %id.chat_id, call_id = %id.call_id, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "plugin", plugin = %id.plugin, tool = %id.tool, chat_id = %id.chat_id, call_id = %id.call_id, "{message}")
            }
            Level::Info => {
                tracing::info!(target: "plugin", plugin = %id.plugin, tool = %id.tool, chat_id = %id.chat_id, call_id = %id.call_id, "{message}")
            }
            Level::Warn => {
                tracing::warn!(target: "plugin", plugin = %id.plugin, tool = %id.tool, chat_id = %id.chat_id, call_id = %id.call_id, "{message}")
            }
            Level::Error => {
                tracing::error!(target: "plugin", plugin = %id.plugin, tool = %id.tool, chat_id = %id.chat_id, call_id = %id.call_id, "{message}")
            }
        }
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
