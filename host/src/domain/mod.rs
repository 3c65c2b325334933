//! The chat domain: what chats, messages and tools are. Every module may use it; it uses no
//! other module of the host, so that the store, the providers and the runtime can share these
//! types without importing each other.

mod chat;
pub mod parts;
mod tools;

pub use chat::{ChatKind, ChatStatus, ProviderKind, Role};
pub use parts::{CompactionTrigger, ImageData, MessagePart};
pub use tools::{ComputerTool, SPAWN_COMPUTER_USE_AGENT, ToolAnnotations, ToolInfo};
