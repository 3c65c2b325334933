//! What the workspace service counts: commands by outcome with their duration, and how long
//! workspaces take to start (the sandbox and the template's startup script).

use std::time::Duration;

use prometheus_client::metrics::family::Family;

use super::WorkspaceError;
use super::command::Completed;
use crate::metrics::{Histograms, Registry, Unit, labels::Outcome};

#[derive(Clone)]
pub(crate) struct WorkspaceMetrics {
    commands: Histograms<Outcome>,
    starts: Histograms<Outcome>,
}

impl WorkspaceMetrics {
    pub(crate) fn new() -> WorkspaceMetrics {
        WorkspaceMetrics {
            commands: Family::new_with_constructor(crate::metrics::seconds),
            starts: Family::new_with_constructor(crate::metrics::seconds),
        }
    }

    pub(crate) fn register(&self, registry: &mut Registry) {
        registry.register_with_unit(
            "toolhost_workspace_command_duration",
            "Commands run in workspaces by outcome (exited, failed: a non-zero exit, timeout, stopped, error) and how long they took",
            Unit::Seconds,
            self.commands.clone(),
        );
        registry.register_with_unit(
            "toolhost_workspace_start_duration",
            "Workspace starts (sandbox and startup script) by the status they reached, and how long they took",
            Unit::Seconds,
            self.starts.clone(),
        );
    }

    pub(crate) fn command(&self, ran: &Result<Completed, WorkspaceError>, took: Duration) {
        let outcome = match ran {
            Ok(done) if done.timed_out => "timeout",
            Ok(done) if done.stopped_because.is_some() => "stopped",
            Ok(done) if done.exit_code == Some(0) => "exited",
            Ok(_) => "failed",
            Err(_) => "error",
        };
        self.commands.get_or_create(&Outcome::of(outcome)).observe(took.as_secs_f64());
    }

    pub(crate) fn started(&self, status: &str, took: Duration) {
        self.starts.get_or_create(&Outcome::of(status)).observe(took.as_secs_f64());
    }
}
