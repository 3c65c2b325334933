//! What a replica tells the others about its chats: small notices, never the data itself (the
//! others read that from the tables). The relay (see `relay`) carries them; the chat modules
//! only announce.

use serde::{Deserialize, Serialize};

/// One thing that happened on a replica that the others may need to act on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "k", rename_all = "snake_case")]
pub enum Notice {
    /// A chat's durable event (`message`, `status`, `queue_update`, `error`, `approval_request`,
    /// `approval_answered`), numbered `seq`.
    Event { chat: String, seq: i64, kind: String },
    /// A change its owner's watch streams show.
    Watch { chat: String, change: WatchChange },
    /// A chat became pending: an idle worker looks for it now rather than at its next poll.
    Pending,
    /// An admin changed configuration that replicas cache: read it again.
    Reload { what: Reload },
}

/// Which change a watch event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchChange {
    Created,
    StatusChange,
    TitleChange,
    Archived,
    Unarchived,
    ApprovalRequest,
}

/// Cached configuration another replica changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reload {
    Policy,
    Catalog,
    Templates,
    /// Uploaded plugins: installed, enabled, disabled, reconfigured or removed.
    Plugins,
}

/// Where notices go: to the other replicas, by the relay.
pub trait Announcer: Send + Sync {
    /// Queues a notice; never waits (the relay sends them in batches, on its own connection).
    fn announce(&self, notice: Notice);
}
