//! Chats: the message model, events, the service the API and worker share, and the worker that
//! runs turns.

pub mod approvals;
mod compaction;
pub mod events;
mod metrics;
pub mod notices;
pub mod prompt;
pub mod run;
pub mod runs;
pub mod service;
pub mod title;
mod turn;
pub mod worker;
