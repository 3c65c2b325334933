//! Compaction: when a chat's prompt nears its model's context window, the model summarizes the
//! older history into a hidden summary, and later prompts start from that summary.
//!
//! The history itself is never changed: a `compaction` message marks the point, keeps the
//! summary (for the model only) and the last message it covers (`through_seq`). The prompt is
//! the latest summary, then every message after the one it covers. Messages a person sent
//! while the model was working (the trailing user messages) are not summarized but kept as
//! they are, so the model reads them verbatim.
//!
//! The summarization request reuses the chat's system prompt, tools and history as they were
//! sent (tools listed but disabled), so that the provider's prompt cache still applies.

use futures::StreamExt;

use super::events::EventBody;
use super::run::{Run, Stop};
use crate::catalog::Resolved;
use crate::domain::Role as Stored;
use crate::domain::parts::{CompactionTrigger, MessagePart};
use crate::llm::retry::{Attempted, GaveUp, stream_with_retry};
use crate::llm::{ErrorKind, FinishReason, ModelRequest, PromptMessage, Role, StreamEvent, Usage};
use crate::store::{Message, ModelRecord};

/// What the model reads in place of the history a summary covers.
const SUMMARY_PREAMBLE: &str = "[The earlier part of this conversation was summarized to fit the context window. \
Your summary of it follows; go on from where it leaves off.]\n\n";

/// The request to summarize. Users' top complaint about compaction elsewhere is a model that
/// loses direction afterwards, so the summary must carry the next steps.
pub const SUMMARY_INSTRUCTION: &str = "Summarize this conversation so far for yourself: it will replace the \
conversation in your context, and you will continue the work from your summary alone. Do not call tools. Keep:\n\
1. The user's goal and every requirement or constraint they stated, in their words where it matters.\n\
2. Decisions made and why, including approaches tried and rejected.\n\
3. Facts learned: file paths, names, commands, versions, errors and their causes.\n\
4. The current state of the work: what is done and verified.\n\
5. What remains to be done, as concrete next steps in order, starting with the very next action.\n\
Write a dense briefing with these headings. Leave out pleasantries.";

/// Tool results longer than this are cut to their head and tail when the provider refused the
/// prompt as too long: tool output is what usually makes a history outgrow the window.
const SHRUNK_RESULT_CHARS: usize = 4000;

/// The part of a chat's history the model reads.
pub struct View<'a> {
    /// The latest summary and how many messages it covers.
    summary: Option<(&'a str, u32)>,
    /// Where the latest compaction message stands (0 without one).
    compaction_seq: i64,
    /// The messages after the latest summary, compaction markers left out.
    messages: Vec<&'a Message>,
}

impl<'a> View<'a> {
    pub fn of(history: &'a [Message]) -> View<'a> {
        let latest = history.iter().rev().find_map(|m| match m.content.first() {
            Some(MessagePart::Compaction { summary: Some(summary), through_seq, messages_compacted, .. })
                if m.role == Stored::Compaction =>
            {
                Some((m.seq, summary.as_str(), *through_seq, *messages_compacted))
            }
            _ => None,
        });
        let (compaction_seq, summary, through_seq) = match latest {
            Some((seq, summary, through, count)) => (seq, Some((summary, count)), through),
            None => (0, None, 0),
        };
        let messages = history.iter().filter(|m| m.role != Stored::Compaction && m.seq > through_seq).collect();
        View { summary, compaction_seq, messages }
    }

    /// The prompt's messages: the summary, then what followed it.
    pub fn prompt(&self) -> Vec<PromptMessage> {
        prompt_of(self.summary.map(|(text, _)| text), &self.messages)
    }

    /// The size the next prompt will have, when it passes the model's compaction threshold:
    /// the latest call's prompt and answer as the provider counted them, plus an estimate of
    /// what was stored after that answer (tool results, new messages).
    ///
    /// A compaction after which the very next call was still past the threshold did not help;
    /// it is not repeated at every step (a provider refusing the prompt as too long still
    /// compacts it).
    pub fn compaction_due(&self, model: &ModelRecord) -> Option<i64> {
        let since: Vec<&&Message> = self.messages.iter().filter(|m| m.seq > self.compaction_seq).collect();
        let threshold = model.compaction_threshold * model.context_window as f64;
        let prompt = |usage: &crate::store::TokenUsage| usage.input + usage.cache_read + usage.cache_creation;
        if self.summary.is_some()
            && let Some(first) = since.iter().find_map(|m| m.usage.as_ref())
            && prompt(first) as f64 >= threshold
        {
            return None;
        }
        let position = since.iter().rposition(|m| m.usage.is_some())?;
        let usage = since[position].usage.as_ref()?;
        let after: usize = since[position + 1..].iter().flat_map(|m| &m.content).map(MessagePart::size).sum();
        let tokens = prompt(usage) + usage.output + (after / 4) as i64;
        (tokens as f64 >= threshold).then_some(tokens)
    }

    /// A rough size of the prompt in tokens (four bytes a token), for when the provider gave none.
    pub fn estimated_tokens(&self, system: &str) -> i64 {
        let bytes: usize = self.messages.iter().flat_map(|m| &m.content).map(MessagePart::size).sum();
        ((bytes + system.len() + self.summary.map_or(0, |(s, _)| s.len())) / 4) as i64
    }

    /// The messages to summarize: all but the trailing user messages, which stay verbatim.
    fn older(&self) -> &[&'a Message] {
        let kept = self.messages.iter().rev().take_while(|m| m.role == Stored::User).count();
        &self.messages[..self.messages.len() - kept]
    }
}

fn prompt_of(summary: Option<&str>, messages: &[&Message]) -> Vec<PromptMessage> {
    let summary = summary.map(|text| PromptMessage {
        role: Role::User,
        content: vec![MessagePart::text(format!("{SUMMARY_PREAMBLE}{text}"))],
    });
    let rest = messages.iter().map(|m| PromptMessage {
        role: match m.role {
            Stored::Assistant => Role::Assistant,
            Stored::Tool => Role::Tool,
            // The summary marker is left out of `messages` (it opens the prompt instead).
            Stored::User | Stored::Compaction => Role::User,
        },
        content: m.content.clone(),
    });
    answer_every_call(summary.into_iter().chain(rest).collect())
}

const NO_RECORDED_RESULT: &str =
    "this tool call has no recorded result (its turn was cut off); whether it took effect is unknown";

/// Every tool call of a prompt gets its result in the message right after it, as providers
/// require. A stored history can lack some: a worker that lost the chat to a new message while
/// storing an interrupted step's results, or a database error at that moment. The model is told
/// so, instead of every later request of the chat being refused.
fn answer_every_call(messages: Vec<PromptMessage>) -> Vec<PromptMessage> {
    let mut answered = Vec::with_capacity(messages.len());
    let mut messages = messages.into_iter().peekable();
    while let Some(message) = messages.next() {
        let calls: Vec<(String, String)> = match message.role {
            Role::Assistant => message
                .content
                .iter()
                .filter_map(|part| match part {
                    MessagePart::ToolCall { tool_call_id, tool_name, .. } => {
                        Some((tool_call_id.clone(), tool_name.clone()))
                    }
                    _ => None,
                })
                .collect(),
            _ => Vec::new(),
        };
        answered.push(message);
        if calls.is_empty() {
            continue;
        }
        let mut results = messages
            .next_if(|next| next.role == Role::Tool)
            .unwrap_or(PromptMessage { role: Role::Tool, content: Vec::new() });
        let has_result = |id: &str, content: &[MessagePart]| {
            content.iter().any(|p| matches!(p, MessagePart::ToolResult { tool_call_id, .. } if tool_call_id == id))
        };
        for (id, name) in calls {
            if !has_result(&id, &results.content) {
                let result = serde_json::Value::String(NO_RECORDED_RESULT.into());
                results.content.push(MessagePart::ToolResult {
                    tool_call_id: id,
                    tool_name: name,
                    result,
                    is_error: true,
                    images: Vec::new(),
                });
            }
        }
        answered.push(results);
    }
    answered
}

/// How a compaction went.
pub enum Outcome {
    /// The summary is stored: the marker message, to append to the history in hand.
    Compacted(Message),
    /// Nothing older than the latest messages to summarize.
    NothingToCompact,
    Failed(String),
}

/// What a compaction needs besides the chat.
pub struct Compaction<'a> {
    pub model: &'a Resolved,
    /// The chat's model request as it would be sent now (its messages are replaced).
    pub request: &'a ModelRequest,
    pub trigger: CompactionTrigger,
    pub prompt_tokens: i64,
}

/// Summarizes the older part of `history` and stores the marker with the summary.
pub(super) async fn compact(run: &Run<'_>, history: &[Message], job: Compaction<'_>) -> Result<Outcome, Stop> {
    let chat = run.chat;
    let view = View::of(history);
    let older = view.older();
    let Some(last) = older.last() else { return Ok(Outcome::NothingToCompact) };
    tracing::info!(trigger = ?job.trigger, prompt_tokens = job.prompt_tokens, messages = older.len(), "compacting the chat's history");
    let channel = run.services().chats.hub.channel(&chat.id);
    channel.lock().await.emit(&run.services().chats.store, EventBody::Compacting { trigger: job.trigger }).await?;
    let outcome = summarize_older(run, &view, older, &job).await;
    let (summary, usage) = match outcome {
        Ok(Ok(done)) => done,
        other => {
            // The `compacting` event must not be replayed to clients once nothing is under way.
            channel.lock().await.clear_in_flight();
            return other.map(|failed| Outcome::Failed(failed.err().unwrap_or_default()));
        }
    };
    let marker = MessagePart::Compaction {
        summary: Some(summary),
        through_seq: last.seq,
        messages_compacted: view.summary.map_or(0, |(_, count)| count) + older.len() as u32,
        prompt_tokens: job.prompt_tokens,
        context_window: job.model.record.context_window,
        trigger: job.trigger,
    };
    let usage = crate::catalog::charge(&job.model.record.pricing, &usage);
    let stored = run.store_message(Stored::Compaction, &[marker], Some(&job.model.record.name), Some(usage)).await?;
    Ok(Outcome::Compacted(stored))
}

/// Asks for the summary of `older` (after the previous summary). When even that is refused as
/// too long, the oldest half of what is left is given up on, at most three times: a summary of
/// the recent part beats a chat that cannot go on.
async fn summarize_older(
    run: &Run<'_>,
    view: &View<'_>,
    older: &[&Message],
    job: &Compaction<'_>,
) -> Result<Result<(String, Usage), String>, Stop> {
    let mut start = 0;
    for _ in 0..4 {
        let mut messages = prompt_of(view.summary.map(|(text, _)| text), &older[start..]);
        if job.trigger == CompactionTrigger::ContextTooLong {
            shrink_tool_results(&mut messages);
        }
        let mut instruction = SUMMARY_INSTRUCTION.to_string();
        if start > 0 {
            instruction.push_str(&format!(
                "\n(The {start} oldest messages did not fit and are not shown; say so in the summary.)"
            ));
        }
        messages.push(PromptMessage { role: Role::User, content: vec![MessagePart::text(instruction)] });
        let request = ModelRequest { messages, tools_disabled: true, ..job.request.clone() };
        match summarize(run, job.model, request).await? {
            Ok(done) => return Ok(Ok(done)),
            Err(Failure::TooLong(why)) => {
                // Start the rest at a user or assistant message: tool results need their calls.
                let half = start + (older.len() - start) / 2;
                let Some(next) = (half.max(start + 1)..older.len()).find(|&i| older[i].role != Stored::Tool) else {
                    return Ok(Err(why));
                };
                tracing::warn!(
                    dropped = next,
                    "the summary request was too long; summarizing the more recent part only"
                );
                start = next;
            }
            Err(Failure::Other(why)) => return Ok(Err(why)),
        }
    }
    Ok(Err("the summary request stayed too long for the model even with the oldest messages left out".into()))
}

/// Cuts long tool results to their head and tail.
fn shrink_tool_results(messages: &mut [PromptMessage]) {
    for part in messages.iter_mut().flat_map(|m| m.content.iter_mut()) {
        if let MessagePart::ToolResult { result: serde_json::Value::String(text), .. } = part
            && text.chars().count() > SHRUNK_RESULT_CHARS
        {
            let head: String = text.chars().take(SHRUNK_RESULT_CHARS / 2).collect();
            let tail: Vec<char> = text.chars().rev().take(SHRUNK_RESULT_CHARS / 2).collect();
            let tail: String = tail.into_iter().rev().collect();
            *text = format!("{head}\n[... cut to fit the context window ...]\n{tail}");
        }
    }
}

/// Why no summary came.
enum Failure {
    /// The provider refused the summary request as too long.
    TooLong(String),
    Other(String),
}

/// Asks the model for the summary, trying again on failures worth it.
async fn summarize(
    run: &Run<'_>,
    model: &Resolved,
    request: ModelRequest,
) -> Result<Result<(String, Usage), Failure>, Stop> {
    let mut attempts = stream_with_retry(model.client.clone(), request, run.context.retry);
    let mut text = String::new();
    let mut usage = Usage::default();
    let mut finish = None;
    loop {
        let next = tokio::select! {
            biased;
            _ = run.handle.stopped() => return Err(run.stopped()),
            next = attempts.next() => next,
        };
        match next {
            None => break,
            Some(Ok(Attempted::Event(StreamEvent::Text(piece)))) => text.push_str(&piece),
            Some(Ok(Attempted::Event(StreamEvent::Usage(more)))) => usage.merge(more),
            Some(Ok(Attempted::Event(StreamEvent::Finish(reason)))) => finish = Some(reason),
            Some(Ok(Attempted::Event(_))) => {}
            // A summary is not streamed to clients: a failed attempt's text is simply dropped.
            Some(Ok(Attempted::Retrying { .. })) => (text, usage, finish) = (String::new(), Usage::default(), None),
            Some(Err(GaveUp { error, .. })) if error.kind == ErrorKind::ContextTooLong => {
                return Ok(Err(Failure::TooLong(format!("the summary request failed: {error}"))));
            }
            Some(Err(GaveUp { error, .. })) => {
                return Ok(Err(Failure::Other(format!("the summary request failed: {error}"))));
            }
        }
    }
    let summary = text.trim();
    if summary.is_empty() {
        return Ok(Err(Failure::Other(format!(
            "model `{}` answered the summary request without text",
            model.record.name
        ))));
    }
    // A summary cut short loses its end: the next steps the model is to go on with.
    if finish == Some(FinishReason::Length) {
        return Ok(Err(Failure::Other(format!(
            "model `{}` ran out of output tokens while summarizing; raise the model's `max_output_tokens`",
            model.record.name
        ))));
    }
    Ok(Ok((summary.to_string(), usage)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::TokenUsage;

    fn message(seq: i64, role: Stored, content: Vec<MessagePart>, prompt_tokens: Option<i64>) -> Message {
        Message {
            id: seq,
            chat_id: "c".into(),
            seq,
            role,
            content,
            model: None,
            usage: prompt_tokens.map(|input| TokenUsage {
                input,
                output: 1,
                reasoning: 0,
                cache_read: 0,
                cache_creation: 0,
                cost_usd: None,
            }),
            created_at: 0,
        }
    }

    fn marker(seq: i64, through_seq: i64, summary: &str) -> Message {
        let part = MessagePart::Compaction {
            summary: Some(summary.into()),
            through_seq,
            messages_compacted: through_seq as u32,
            prompt_tokens: 90,
            context_window: 100,
            trigger: CompactionTrigger::Threshold,
        };
        message(seq, Stored::Compaction, vec![part], Some(5))
    }

    fn model(window: i64, threshold: f64) -> ModelRecord {
        ModelRecord {
            id: "m".into(),
            name: "m".into(),
            provider_id: "p".into(),
            model: "m".into(),
            context_window: window,
            max_output_tokens: None,
            thinking_budget: None,
            compaction_threshold: threshold,
            pricing: Default::default(),
            is_default: true,
            for_titles: false,
            for_computer_use: false,
            computer_tool: None,
            source: crate::store::Source::Api,
        }
    }

    fn texts(prompt: &[PromptMessage]) -> Vec<String> {
        prompt.iter().map(|m| crate::llm::text_of(&m.content)).collect()
    }

    fn call(id: &str) -> MessagePart {
        MessagePart::ToolCall {
            tool_call_id: id.into(),
            tool_name: "execute".into(),
            args: serde_json::json!({}),
            provider_metadata: None,
        }
    }

    fn result(id: &str) -> MessagePart {
        MessagePart::ToolResult {
            tool_call_id: id.into(),
            tool_name: "execute".into(),
            result: "ok".into(),
            is_error: false,
            images: Vec::new(),
        }
    }

    #[test]
    fn every_tool_call_in_a_prompt_has_a_result_right_after_it() {
        let history = vec![
            message(1, Stored::User, vec![MessagePart::text("go")], None),
            message(2, Stored::Assistant, vec![call("a"), call("b")], Some(10)),
            message(3, Stored::Tool, vec![result("a")], None),
            message(4, Stored::Assistant, vec![call("c")], Some(10)),
            message(5, Stored::User, vec![MessagePart::text("and now?")], None),
        ];
        let prompt = View::of(&history).prompt();
        let roles: Vec<Role> = prompt.iter().map(|m| m.role).collect();
        assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool, Role::Assistant, Role::Tool, Role::User]);
        let results = |at: usize| -> Vec<(String, bool)> {
            prompt[at]
                .content
                .iter()
                .filter_map(|p| match p {
                    MessagePart::ToolResult { tool_call_id, is_error, .. } => Some((tool_call_id.clone(), *is_error)),
                    _ => None,
                })
                .collect()
        };
        assert_eq!(
            results(2),
            [("a".to_string(), false), ("b".to_string(), true)],
            "the stored result is kept, the missing one added"
        );
        assert_eq!(results(4), [("c".to_string(), true)], "a call followed by a user message is answered before it");
    }

    #[test]
    fn the_prompt_starts_from_the_latest_summary_and_keeps_what_it_does_not_cover() {
        let history = vec![
            message(1, Stored::User, vec![MessagePart::text("first")], None),
            message(2, Stored::Assistant, vec![MessagePart::text("one")], Some(80)),
            message(3, Stored::User, vec![MessagePart::text("second")], None),
            marker(4, 2, "S1"),
            message(5, Stored::Assistant, vec![MessagePart::text("two")], Some(20)),
        ];
        let view = View::of(&history);
        let prompt = texts(&view.prompt());
        assert_eq!(prompt.len(), 3, "{prompt:?}");
        assert!(prompt[0].starts_with(SUMMARY_PREAMBLE) && prompt[0].ends_with("S1"));
        assert_eq!(prompt[1..], ["second".to_string(), "two".to_string()]);
    }

    #[test]
    fn compaction_is_due_when_the_latest_call_passes_the_threshold() {
        let history = vec![
            message(1, Stored::User, vec![MessagePart::text("hi")], None),
            message(2, Stored::Assistant, vec![MessagePart::text("a")], Some(70)),
        ];
        assert_eq!(View::of(&history).compaction_due(&model(100, 0.7)), Some(71), "prompt and answer");
        assert_eq!(View::of(&history).compaction_due(&model(100, 0.72)), None);
        assert_eq!(View::of(&history[..1]).compaction_due(&model(100, 0.1)), None, "no call yet, nothing measured");
    }

    #[test]
    fn what_was_stored_after_the_latest_call_counts_too() {
        let result = MessagePart::ToolResult {
            tool_call_id: "1".into(),
            tool_name: "t".into(),
            result: "x".repeat(400).into(),
            is_error: false,
            images: Vec::new(),
        };
        let history = vec![
            message(1, Stored::User, vec![MessagePart::text("hi")], None),
            message(2, Stored::Assistant, vec![MessagePart::text("a")], Some(50)),
            message(3, Stored::Tool, vec![result], None),
        ];
        assert_eq!(View::of(&history).compaction_due(&model(1000, 0.15)), Some(50 + 1 + 100));
    }

    #[test]
    fn a_compaction_that_did_not_help_is_not_repeated_at_every_step() {
        let mut history = vec![
            message(1, Stored::User, vec![MessagePart::text("hi")], None),
            message(2, Stored::Assistant, vec![MessagePart::text("a")], Some(95)),
            marker(3, 2, "S"),
            message(4, Stored::Assistant, vec![MessagePart::text("b")], Some(90)),
        ];
        assert_eq!(
            View::of(&history).compaction_due(&model(100, 0.7)),
            None,
            "the first call after it was still past the threshold"
        );
        history[3].usage.as_mut().unwrap().input = 30;
        history.push(message(5, Stored::Assistant, vec![MessagePart::text("c")], Some(80)));
        assert_eq!(View::of(&history).compaction_due(&model(100, 0.7)), Some(81), "it helped; the chat grew again");
    }

    #[test]
    fn calls_before_the_latest_compaction_do_not_count() {
        let history = vec![
            message(1, Stored::User, vec![MessagePart::text("hi")], None),
            message(2, Stored::Assistant, vec![MessagePart::text("a")], Some(95)),
            marker(3, 2, "S"),
        ];
        assert_eq!(View::of(&history).compaction_due(&model(100, 0.7)), None);
    }

    #[test]
    fn trailing_user_messages_are_kept_out_of_the_summary() {
        let history = vec![
            message(1, Stored::User, vec![MessagePart::text("a")], None),
            message(2, Stored::Assistant, vec![MessagePart::text("b")], Some(9)),
            message(3, Stored::User, vec![MessagePart::text("c")], None),
            message(4, Stored::User, vec![MessagePart::text("d")], None),
        ];
        let view = View::of(&history);
        assert_eq!(view.older().iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
        let only_user = &history[2..];
        assert!(View::of(only_user).older().is_empty(), "a lone user message cannot be compacted");
    }

    #[test]
    fn long_tool_results_keep_their_head_and_tail() {
        let long = format!("HEAD{}TAIL", "x".repeat(10_000));
        let mut messages = vec![PromptMessage {
            role: Role::Tool,
            content: vec![MessagePart::ToolResult {
                tool_call_id: "1".into(),
                tool_name: "t".into(),
                result: long.into(),
                is_error: false,
                images: Vec::new(),
            }],
        }];
        shrink_tool_results(&mut messages);
        let MessagePart::ToolResult { result, .. } = &messages[0].content[0] else { panic!() };
        let text = result.as_str().unwrap();
        assert!(text.starts_with("HEAD") && text.ends_with("TAIL") && text.len() < 4100, "{}", text.len());
    }
}
