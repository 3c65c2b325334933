//! Titles: after a chat's first message, a cheap model (the one marked `title_model`, else the
//! chat's own) writes a title of at most 80 characters. It runs beside the turn, never in its
//! way; when it fails the chat keeps the first words of the message.

use std::sync::Arc;

use futures::StreamExt;

use super::events::WatchEvent;
use super::service::ChatService;
use crate::catalog::Catalog;
use crate::domain::parts::MessagePart;
use crate::llm::{ModelRequest, PromptMessage, Role, StreamEvent, text_of};
use crate::store::Chat;

pub const MAX_TITLE_CHARS: usize = 80;
/// The instruction of a title request (the test model recognises it by these words).
pub const TITLE_INSTRUCTION: &str = "Title this conversation: answer with a title of at most 80 characters for the user's first \
message below, in the message's language, with no quotes and no trailing period.";
/// How much of the first message the title model reads.
const MAX_MESSAGE_CHARS: usize = 4000;

/// The model's answer as a one-line title, or `None` if nothing usable is left.
pub fn clean_title(raw: &str) -> Option<String> {
    let line = raw.lines().map(str::trim).find(|l| !l.is_empty())?;
    let line = line
        .trim_start_matches("Title:")
        .trim()
        .trim_matches(|c| matches!(c, '"' | '\'' | '*' | '#' | '`'))
        .trim()
        .trim_end_matches('.');
    let title: String = line.chars().take(MAX_TITLE_CHARS).collect();
    let title = title.trim().to_string();
    (!title.is_empty()).then_some(title)
}

async fn generate(catalog: &Catalog, chat: &Chat, first: &[MessagePart]) -> Result<String, String> {
    let model = catalog.title_model(chat.model.as_deref()).await.map_err(|e| e.to_string())?;
    let message: String = text_of(first).chars().take(MAX_MESSAGE_CHARS).collect();
    let request = ModelRequest {
        model: model.record.model.clone(),
        system: Some(TITLE_INSTRUCTION.to_string()),
        messages: vec![PromptMessage { role: Role::User, content: vec![MessagePart::text(message)] }],
        max_output_tokens: Some(64),
        ..ModelRequest::default()
    };
    let mut stream = model.client.stream(request);
    let mut answer = String::new();
    while let Some(event) = stream.next().await {
        match event.map_err(|e| e.to_string())? {
            StreamEvent::Text(text) => answer.push_str(&text),
            StreamEvent::Finish(_) => break,
            _ => {}
        }
    }
    clean_title(&answer).ok_or_else(|| "the model answered with an empty title".to_string())
}

/// Starts writing a title for `chat` in the background.
pub fn spawn(service: Arc<ChatService>, catalog: Arc<Catalog>, chat: Chat, first: Vec<MessagePart>) {
    let span = tracing::info_span!("title", chat_id = %chat.id);
    tokio::spawn(tracing::Instrument::instrument(
        async move {
            match generate(&catalog, &chat, &first).await {
                Ok(title) => match service.store.set_title(&chat.id, &title).await {
                    Ok(Some(updated)) => service.hub.notify(WatchEvent::TitleChange { chat: updated }),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "could not store the chat's title"),
                },
                Err(e) => tracing::info!(error = %e, "no title generated; the chat keeps its first words"),
            }
        },
        span,
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_become_one_clean_line_of_at_most_80_characters() {
        assert_eq!(clean_title("\"Fix the CI build.\"\n\nExtra words").as_deref(), Some("Fix the CI build"));
        assert_eq!(clean_title("Title: Migrating billing").as_deref(), Some("Migrating billing"));
        assert_eq!(clean_title(&"é".repeat(200)).unwrap().chars().count(), 80);
        assert_eq!(clean_title("  \n\"\" "), None);
    }
}
