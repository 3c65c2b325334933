//! The system prompt of a turn, assembled in this order (each part only if present):
//!
//! 1. the deployment's system prompt (set by admins; a built-in default otherwise);
//! 2. workspace instructions: `AGENTS.md` in the root of the chat's workspace, read each turn;
//! 3. the user's own prompt;
//! 4. for subagent chats, the subagent instruction; for computer-use chats, the computer-use one.
//!
//! Broad rules come first and narrower ones later, so the more specific text has the last word.
//! The deployment part changes rarely, which keeps the start of every prompt cacheable.

use crate::domain::ChatKind;
use crate::store::{Chat, Store, StoreResult};
use crate::workspace::confined::{self, WorkspaceRoot};

/// The settings key of the deployment's system prompt.
pub const SYSTEM_PROMPT_SETTING: &str = "system_prompt";
/// Largest system or user prompt.
pub const MAX_PROMPT_BYTES: usize = 128 * 1024;
/// Largest part of `AGENTS.md` that goes into the prompt.
pub const MAX_WORKSPACE_INSTRUCTIONS_BYTES: usize = 64 * 1024;

pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a capable software agent. Use the tools you are given to inspect and change files \
in the workspace; read before you edit, keep edits minimal, and say briefly what you did.";

pub const SUBAGENT_INSTRUCTION: &str = "You are a subagent: another agent gave you this task. Work on it alone, without asking \
questions, and end with a concise report of what you found or changed; that report is all the other agent sees.";

pub const COMPUTER_USE_INSTRUCTION: &str = "You are a computer-use agent: another agent gave you this task, to do on the \
desktop of its workspace with the `computer` tool. Take a screenshot first; after each action, look at the screenshot it \
returns before the next. Work alone, without asking questions, and end with a concise report of what you did and saw; that \
report is all the other agent sees.";

/// `AGENTS.md` from the workspace root, cut at the limit. Commands write the workspace, so it
/// is read through [`confined`]: a link out of the workspace, a FIFO, a device or a huge file
/// gives no instructions (and never blocks the turn), instead of the server's own files.
async fn workspace_instructions(workspace: &WorkspaceRoot) -> Option<String> {
    let (text, longer) = confined::read_text(workspace, "AGENTS.md", MAX_WORKSPACE_INSTRUCTIONS_BYTES as u64).await?;
    if text.trim().is_empty() {
        return None;
    }
    if !longer {
        return Some(text);
    }
    Some(format!("{text}\n[AGENTS.md is longer; the rest was left out]"))
}

/// The system prompt for a turn of `chat`, whose workspace (if it has one) is `workspace`.
pub async fn system_prompt(store: &Store, chat: &Chat, workspace: Option<&WorkspaceRoot>) -> StoreResult<String> {
    let deployment = store.setting(SYSTEM_PROMPT_SETTING).await?.unwrap_or_else(|| DEFAULT_SYSTEM_PROMPT.to_string());
    let mut sections = vec![deployment];
    let instructions = match workspace {
        Some(workspace) => workspace_instructions(workspace).await,
        None => None,
    };
    if let Some(instructions) = instructions {
        sections.push(format!("# Workspace instructions (AGENTS.md)\n\n{instructions}"));
    }
    if let Some(user) = store.user_prompt(&chat.owner_id).await? {
        sections.push(format!("# The user's instructions\n\n{user}"));
    }
    match chat.kind {
        ChatKind::Subagent => sections.push(SUBAGENT_INSTRUCTION.to_string()),
        ChatKind::ComputerUse => sections.push(COMPUTER_USE_INSTRUCTION.to_string()),
        ChatKind::Root | ChatKind::Mcp => {}
    }
    Ok(sections.join("\n\n"))
}
