//! What a tool call returns, in the host's own terms (serializable, for the API and the model).

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::bindings::toolhost::plugin::types::{Content, ToolResult};

/// One part of a tool's result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ContentPart {
    Text {
        text: String,
    },
    Json {
        json: serde_json::Value,
    },
    /// `data` is base64.
    Image {
        mime_type: String,
        data: String,
    },
}

/// A completed tool call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolOutput {
    pub content: Vec<ContentPart>,
    pub is_error: bool,
}

/// Bytes a result occupies, the measure the result-size limit applies to.
pub(crate) fn result_size(result: &ToolResult) -> usize {
    result
        .content
        .iter()
        .map(|part| match part {
            Content::Text(text) | Content::Json(text) => text.len(),
            Content::Image(image) => image.data.len() + image.mime_type.len(),
        })
        .sum()
}

/// Converts a plugin's result; JSON parts must hold valid JSON.
pub(crate) fn convert(result: ToolResult) -> Result<ToolOutput, String> {
    let mut content = Vec::with_capacity(result.content.len());
    for (i, part) in result.content.into_iter().enumerate() {
        content.push(match part {
            Content::Text(text) => ContentPart::Text { text },
            Content::Json(text) => ContentPart::Json {
                json: serde_json::from_str(&text)
                    .map_err(|e| format!("content part {} is declared JSON but is not valid JSON: {e}", i + 1))?,
            },
            Content::Image(image) => ContentPart::Image {
                mime_type: image.mime_type,
                data: base64::engine::general_purpose::STANDARD.encode(&image.data),
            },
        });
    }
    Ok(ToolOutput { content, is_error: result.is_error })
}
