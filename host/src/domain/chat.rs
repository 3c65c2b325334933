//! Kinds, statuses and roles, with their names as stored and as the API shows them. The
//! string forms come from one derive each (`strum` for the database, `serde` for the API), and
//! the two agree.

use serde::{Deserialize, Serialize};

/// Which kind of chat a chat is: the policy and the tools a chat sees depend on it.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
    strum::VariantNames,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum ChatKind {
    /// A chat a person started.
    #[default]
    Root,
    /// A chat another chat's model started (the `agents` capability).
    Subagent,
    ComputerUse,
    /// An MCP client's session through the gateway (`/mcp`, `toolhost mcp`): the conversation
    /// lives in the client, so no chat of this kind is ever stored; it exists for the policy.
    Mcp,
}

/// Where a chat is in its life.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ChatStatus {
    /// Waiting for a worker to run its turn.
    Pending,
    Running,
    /// Idle: the turn is over, waiting for the person.
    Waiting,
    /// The last turn failed; see `last_error`.
    Error,
}

/// Who a message is from.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Role {
    /// The person (or, for a subagent, the chat that started it).
    User,
    /// The model.
    Assistant,
    /// The results of the model's tool calls.
    Tool,
    /// A summary of the history before it (see `MessagePart::Compaction`).
    Compaction,
}

/// The kinds of provider this server speaks to.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum ProviderKind {
    /// The OpenAI Chat Completions API, also spoken by Ollama, vLLM, llama.cpp and others.
    Openai,
    /// The Anthropic Messages API.
    Anthropic,
}

impl ProviderKind {
    /// The environment variables this kind is configured by, like its own SDKs.
    pub fn env_vars(self) -> (&'static str, &'static str) {
        match self {
            ProviderKind::Openai => ("OPENAI_API_KEY", "OPENAI_BASE_URL"),
            ProviderKind::Anthropic => ("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"),
        }
    }
}

macro_rules! as_str {
    ($($kind:ty),*) => {$(
        impl $kind {
            /// The name as stored and as the API shows it.
            pub fn as_str(self) -> &'static str {
                self.into()
            }
        }
    )*};
}
as_str!(ChatKind, ChatStatus, Role, ProviderKind);

#[cfg(test)]
mod tests {
    use super::*;

    /// The database's names (strum) and the API's (serde) must never drift apart.
    fn agree<T: Serialize + std::str::FromStr + PartialEq + std::fmt::Debug + Copy>(
        all: &[T],
        name: fn(T) -> &'static str,
    ) where
        T::Err: std::fmt::Debug,
    {
        for &value in all {
            let json = serde_json::to_value(value).unwrap();
            assert_eq!(json.as_str(), Some(name(value)), "{value:?}");
            assert_eq!(name(value).parse::<T>().unwrap(), value);
        }
    }

    #[test]
    fn stored_names_are_the_api_names() {
        agree(&[ChatKind::Root, ChatKind::Subagent, ChatKind::ComputerUse], ChatKind::as_str);
        agree(&[ChatStatus::Pending, ChatStatus::Running, ChatStatus::Waiting, ChatStatus::Error], ChatStatus::as_str);
        agree(&[Role::User, Role::Assistant, Role::Tool, Role::Compaction], Role::as_str);
        agree(&[ProviderKind::Openai, ProviderKind::Anthropic], ProviderKind::as_str);
        assert_eq!(ChatKind::ComputerUse.as_str(), "computer-use");
        assert!("bogus".parse::<ChatStatus>().is_err());
    }
}
