//! Message parts: the typed pieces a message is made of.

use serde::{Deserialize, Serialize};

/// One part of a message. `provider_metadata` is what a provider needs back on later requests
/// (signatures, ids); it is stored but never shown to API clients.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum MessagePart {
    Text {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider_metadata: Option<serde_json::Value>,
    },
    Reasoning {
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider_metadata: Option<serde_json::Value>,
    },
    ToolCall {
        tool_call_id: String,
        tool_name: String,
        /// The arguments as the model sent them (a JSON object, or the raw text if it was not JSON).
        args: serde_json::Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        provider_metadata: Option<serde_json::Value>,
    },
    ToolResult {
        tool_call_id: String,
        tool_name: String,
        result: serde_json::Value,
        #[serde(default)]
        is_error: bool,
        /// Images the tool returned (a desktop's screenshots), after `result`'s text.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        images: Vec<ImageData>,
    },
    FileReference {
        file_name: String,
        start_line: u32,
        end_line: u32,
        content: String,
    },
    Image {
        media_type: String,
        /// Base64.
        data: String,
    },
    /// The marker of a compaction: the history up to `through_seq` was summarized, and the
    /// model reads the summary instead of it from here on. The summary is the model's alone;
    /// clients see the marker without it.
    Compaction {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        summary: Option<String>,
        /// The last message the summary covers.
        through_seq: i64,
        /// How many messages it covers (earlier summaries included).
        messages_compacted: u32,
        /// The prompt's size in tokens when compaction began: as the provider counted it, or
        /// estimated from its length when the provider refused the prompt.
        prompt_tokens: i64,
        context_window: i64,
        trigger: CompactionTrigger,
    },
}

/// An image carried in a tool result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ImageData {
    /// `image/png`, `image/jpeg`.
    pub media_type: String,
    /// Base64.
    pub data: String,
}

/// Why a chat was compacted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CompactionTrigger {
    /// The prompt passed the model's compaction threshold.
    Threshold,
    /// The provider refused the prompt as too long for the model.
    ContextTooLong,
}

impl MessagePart {
    pub fn text(text: impl Into<String>) -> MessagePart {
        MessagePart::Text { text: text.into(), provider_metadata: None }
    }

    /// The part as API clients see it: without provider metadata.
    pub fn public(&self) -> MessagePart {
        let mut part = self.clone();
        match &mut part {
            MessagePart::Text { provider_metadata, .. }
            | MessagePart::Reasoning { provider_metadata, .. }
            | MessagePart::ToolCall { provider_metadata, .. } => *provider_metadata = None,
            MessagePart::Compaction { summary, .. } => *summary = None,
            _ => {}
        }
        part
    }

    /// Bytes of text this part carries, for size limits.
    pub fn size(&self) -> usize {
        match self {
            MessagePart::Text { text, .. } | MessagePart::Reasoning { text, .. } => text.len(),
            MessagePart::ToolCall { args, .. } => args.to_string().len(),
            MessagePart::ToolResult { result, images, .. } => {
                result.to_string().len() + images.iter().map(|i| i.data.len()).sum::<usize>()
            }
            MessagePart::FileReference { content, file_name, .. } => content.len() + file_name.len(),
            MessagePart::Image { data, .. } => data.len(),
            MessagePart::Compaction { summary, .. } => summary.as_ref().map_or(0, String::len),
        }
    }
}

/// Parts a user may send: text, file references and images.
pub fn validate_user_content(content: &[MessagePart], max_bytes: usize) -> Result<(), String> {
    if content.is_empty() {
        return Err(
            "`content` is empty: send at least one part, e.g. [{\"type\": \"text\", \"text\": \"hello\"}]".into()
        );
    }
    let mut total = 0;
    for (i, part) in content.iter().enumerate() {
        match part {
            MessagePart::Text { text, .. } if text.trim().is_empty() => {
                return Err(format!("content part {} is empty text", i + 1));
            }
            MessagePart::Text { .. } | MessagePart::FileReference { .. } | MessagePart::Image { .. } => {}
            other => {
                let kind = serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v["type"].as_str().map(String::from))
                    .unwrap_or_default();
                return Err(format!(
                    "content part {} has type `{kind}`, which only the model can produce; send text, file-reference or image parts",
                    i + 1
                ));
            }
        }
        total += part.size();
    }
    if total > max_bytes {
        return Err(format!(
            "the message is {total} bytes, over the limit of {max_bytes} bytes; send a shorter message or attach less"
        ));
    }
    Ok(())
}

/// A title from the first words of the first text part.
pub fn fallback_title(content: &[MessagePart]) -> String {
    let text = content.iter().find_map(|p| match p {
        MessagePart::Text { text, .. } => Some(text.as_str()),
        _ => None,
    });
    let words: Vec<&str> = text.unwrap_or("").split_whitespace().take(6).collect();
    let title = words.join(" ");
    let title: String = title.chars().take(80).collect();
    if title.is_empty() { "New Chat".to_string() } else { title }
}
