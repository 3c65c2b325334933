//! One chat's turn: prompt the model, stream its answer, run the tools it asks for, store each
//! step, and go on while it asks for tools.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use serde_json::Value;
use tracing::Instrument;

use super::compaction::{self, Compaction, Outcome, View};
use super::events::{DiscardReason, EventBody, PartDelta};
use super::metrics::error_class;
use super::run::{Run, RunContext, Stop};
use crate::catalog::Resolved;
use crate::domain::Role;
use crate::domain::parts::{CompactionTrigger, ImageData, MessagePart};
use crate::domain::{ChatKind, SPAWN_COMPUTER_USE_AGENT};
use crate::llm::retry::{Attempted, GaveUp, stream_with_retry};
use crate::llm::{
    ErrorKind, FinishReason, LlmError, ModelRequest, NativeComputer, StreamEvent, Usage, keep_recent_images,
};
use crate::plugins::capabilities::ChatServices;
use crate::plugins::{CallContext, CallRequest, ContentPart, ToolOutput};
use crate::policy::{ActivePolicy, Principal};
use crate::store::{Chat, ChatStatus, Message, StoreError};
use crate::workspace::ChatScope;
use std::sync::Arc;

pub(super) async fn run_chat(context: &RunContext, chat: Chat) {
    let span = tracing::info_span!("turn", chat_id = %chat.id, "gen_ai.conversation.id" = %chat.id);
    async {
        let runs = &context.services.chats.runs;
        let handle = runs.register(&chat.id);
        let run = &Run { context, chat: &chat, handle: &handle };
        if let Err(e) = begin(run).await {
            tracing::warn!(error = %e, "could not announce the turn");
        }
        // The turn watches its handle itself, so that an interrupt keeps what was streamed.
        let ended = turn(run).await;
        context.services.chats.metrics.turn_ended(turn_outcome(&ended));
        match ended {
            Ok(()) | Err(Stop::Interrupted) => record(run, "finish the turn", || finish(run)).await,
            // Interrupted, then shut down before the end: the interrupt's queued message runs
            // next, as it would have; a turn cut off while running goes back to pending.
            Err(Stop::Shutdown) if interrupted(run).await => record(run, "finish the turn", || finish(run)).await,
            Err(Stop::Shutdown) => {
                if let Err(e) = hand_back(run).await {
                    tracing::warn!(error = %e, "could not hand the chat back on shutdown");
                }
            }
            Err(Stop::LostOwnership) => {}
            Err(Stop::Failed(message)) | Err(Stop::ContextTooLong(message)) => {
                record(run, "record the failed turn", || fail(run, &message)).await
            }
            Err(Stop::Store(error)) => {
                tracing::error!(error = %error, "the database failed mid-turn");
                record(run, "record the database failure", || after_store_failure(run, &error)).await
            }
        }
        // Only now: until the chat is settled, a message sent to it waits in its queue (see
        // `ChatService::winding_up`), and the worker heartbeats it.
        runs.finish(&chat.id, &handle);
    }
    .instrument(span)
    .await
}

/// How a turn ended, as the metrics count it.
fn turn_outcome(ended: &Result<(), Stop>) -> &'static str {
    match ended {
        Ok(()) => "completed",
        Err(Stop::Interrupted) => "interrupted",
        Err(Stop::Shutdown) => "shutdown",
        Err(Stop::LostOwnership) => "lost_ownership",
        Err(Stop::Failed(_)) => "failed",
        Err(Stop::ContextTooLong(_)) => "context_too_long",
        Err(Stop::Store(_)) => "database_error",
    }
}

/// Tries to record how a turn ended until the database takes it, backing off (up to a second
/// between tries, so that a chat is settled within seconds of the database coming back). Gives
/// up when the server shuts down (the chat is handed back then) or the chat is taken away.
async fn record<F, Fut>(run: &Run<'_>, what: &str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), StoreError>>,
{
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        let error = match attempt().await {
            Ok(()) => return,
            Err(error) => error,
        };
        if matches!(run.stopped(), Stop::Shutdown | Stop::LostOwnership) {
            tracing::warn!(error = %error, "could not {what}; the server is stopping, so the chat is left to recovery");
            return;
        }
        tracing::warn!(error = %error, retry_in_ms = delay.as_millis() as u64, "could not {what}; trying again");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(std::time::Duration::from_secs(1));
    }
}

/// Announces a run: a run cut off before (by a crash or a shutdown) left parts its clients
/// still show, which they drop first; then the chat is running.
async fn begin(run: &Run<'_>) -> Result<(), StoreError> {
    let chat = run.chat;
    let store = &run.services().chats.store;
    let channel = run.services().chats.hub.channel(&chat.id);
    let mut guard = channel.lock().await;
    // Numbers reserved before another replica last numbered this chat may lie behind what
    // clients have seen: a run starts from a fresh reservation.
    guard.forget_lease();
    if store.take_cut_off(&chat.id).await? {
        let why = "the server that ran this chat stopped before it stored what it streamed; drop those parts, the step runs again";
        guard.discard(store, DiscardReason::CutOff, why.into()).await?;
    }
    guard.emit(store, EventBody::Status { status: ChatStatus::Running, last_error: None }).await?;
    Ok(())
}

/// On shutdown: clients drop the parts of the step under way, and the chat goes back to
/// pending, marked cut off, for the next server (or this one restarted) to run again.
async fn hand_back(run: &Run<'_>) -> Result<(), StoreError> {
    let chat = run.chat;
    let store = &run.services().chats.store;
    let channel = run.services().chats.hub.channel(&chat.id);
    let mut guard = channel.lock().await;
    if guard.has_parts_in_flight() {
        let why =
            "this server is shutting down before it stored this step; drop its parts, the next server runs it again";
        guard.discard(store, DiscardReason::CutOff, why.into()).await?;
    }
    if store.settle(&chat.id, &run.context.worker_id, ChatStatus::Pending, None, true).await? {
        guard.emit(store, EventBody::Status { status: ChatStatus::Pending, last_error: None }).await?;
        // Another replica takes it now, not at its next poll.
        run.services().chats.wake_workers();
    }
    Ok(())
}

/// The database failed mid-turn, and is answering again. When it was unavailable the turn
/// goes back to pending and runs on; when it refused the write, the chat ends in `error`.
/// Either way clients first drop the parts that were not stored.
async fn after_store_failure(run: &Run<'_>, error: &StoreError) -> Result<(), StoreError> {
    let chat = run.chat;
    let store = &run.services().chats.store;
    let channel = run.services().chats.hub.channel(&chat.id);
    let mut guard = channel.lock().await;
    let last_error = (!error.is_unavailable())
        .then(|| format!("the database failed while storing the turn ({error}); send a message to try again"));
    let status = if last_error.is_some() { ChatStatus::Error } else { ChatStatus::Pending };
    if guard.has_parts_in_flight() {
        let why = format!("the database could not store this step ({error}); drop its parts");
        guard.discard(store, DiscardReason::NotStored, why).await?;
    }
    if !store.settle(&chat.id, &run.context.worker_id, status, last_error.as_deref(), true).await? {
        return Ok(());
    }
    if let Some(message) = &last_error {
        guard.emit(store, EventBody::Error { message: message.clone() }).await?;
    }
    guard.emit(store, EventBody::Status { status, last_error }).await?;
    if status == ChatStatus::Pending {
        run.services().chats.wake_workers();
    }
    Ok(())
}

/// The parts of the assistant message being streamed.
#[derive(Default)]
struct Step {
    parts: Vec<MessagePart>,
    /// Raw argument text of each tool call, by the part's position.
    raw_args: BTreeMap<usize, String>,
    /// Position of each tool call by the model's index.
    calls: BTreeMap<u32, usize>,
    finish: Option<FinishReason>,
    usage: Usage,
}

impl Step {
    /// Applies one streamed event; returns the delta clients see.
    fn apply(&mut self, event: StreamEvent) -> Option<PartDelta> {
        match event {
            StreamEvent::Text(text) => {
                let index = self.append_text(text.clone(), false);
                Some(PartDelta::Text { index, text })
            }
            StreamEvent::Reasoning(text) => {
                let index = self.append_text(text.clone(), true);
                Some(PartDelta::Reasoning { index, text })
            }
            StreamEvent::ReasoningSignature(signature) => {
                match self.parts.last_mut() {
                    Some(MessagePart::Reasoning { provider_metadata, .. }) => {
                        *provider_metadata = Some(serde_json::json!({"anthropic": {"signature": signature}}));
                    }
                    _ => tracing::warn!("a reasoning signature arrived without reasoning; dropped"),
                }
                None
            }
            StreamEvent::RedactedReasoning(data) => {
                let metadata = serde_json::json!({"anthropic": {"redacted": data}});
                self.parts.push(MessagePart::Reasoning { text: String::new(), provider_metadata: Some(metadata) });
                None
            }
            StreamEvent::ToolCall { index, id, name, arguments } => {
                let position = *self.calls.entry(index).or_insert_with(|| {
                    self.parts.push(MessagePart::ToolCall {
                        tool_call_id: String::new(),
                        tool_name: String::new(),
                        args: Value::Null,
                        provider_metadata: None,
                    });
                    self.parts.len() - 1
                });
                if let MessagePart::ToolCall { tool_call_id, tool_name, .. } = &mut self.parts[position] {
                    if let Some(id) = &id {
                        tool_call_id.push_str(id);
                    }
                    if let Some(name) = &name {
                        tool_name.push_str(name);
                    }
                }
                self.raw_args.entry(position).or_default().push_str(&arguments);
                Some(PartDelta::ToolCall { index: position, tool_call_id: id, tool_name: name, args_delta: arguments })
            }
            StreamEvent::Usage(usage) => {
                self.usage.merge(usage);
                None
            }
            StreamEvent::Finish(reason) => {
                self.finish = Some(reason);
                None
            }
        }
    }

    /// Whether anything of this step reached clients.
    fn has_output(&self) -> bool {
        !self.parts.is_empty()
    }

    fn append_text(&mut self, text: String, reasoning: bool) -> usize {
        match self.parts.last_mut() {
            Some(MessagePart::Text { text: existing, .. }) if !reasoning => existing.push_str(&text),
            // A signed reasoning block is closed: more reasoning starts a new one.
            Some(MessagePart::Reasoning { text: existing, provider_metadata: None }) if reasoning => {
                existing.push_str(&text)
            }
            _ if reasoning => self.parts.push(MessagePart::Reasoning { text, provider_metadata: None }),
            _ => self.parts.push(MessagePart::text(text)),
        }
        self.parts.len() - 1
    }

    /// The stored form: tool call arguments parsed (kept as text when they are not JSON), and
    /// a call id made up where the provider sent none.
    fn into_parts(mut self) -> Vec<MessagePart> {
        for (position, raw) in &self.raw_args {
            if let MessagePart::ToolCall { tool_call_id, args, .. } = &mut self.parts[*position] {
                *args = if raw.trim().is_empty() {
                    Value::Object(Default::default())
                } else {
                    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone()))
                };
                if tool_call_id.is_empty() {
                    *tool_call_id = format!("call_{position}");
                }
            }
        }
        self.parts
    }
}

async fn turn(run: &Run<'_>) -> Result<(), Stop> {
    let chat = run.chat;
    let store = &run.services().chats.store;
    let model = run.services().catalog.resolve(chat.model.as_deref()).await.map_err(|e| Stop::Failed(e.to_string()))?;
    let model_name = model.record.name.clone();
    let principal = run.services().policy.principal(chat, &model_name).await?;
    let files_root = chat_files_root(run, &chat.id).await;
    let system = super::prompt::system_prompt(store, chat, files_root.as_ref()).await?;
    let base = ModelRequest {
        model: model.record.model.clone(),
        system: Some(system),
        max_output_tokens: model.record.max_output_tokens.map(|n| n as u32),
        thinking_budget: model.record.thinking_budget.map(|n| n as u32),
        computer: native_computer(run, &model).await,
        ..ModelRequest::default()
    };
    // Read once: while this worker owns the chat only its run adds messages (a message sent
    // meanwhile waits in the queue; an edit takes the chat away), so each stored message is
    // appended here instead of reading the history again at every step.
    let mut history = store.messages(&chat.id, 0).await?;
    answer_calls_cut_off_by_a_restart(run, &principal, &mut history).await?;
    let unservable = unservable_tools(run).await;
    for step_number in 0..run.context.max_steps {
        if step_number == 0 && chat.kind == ChatKind::Root && history.len() == 1 {
            super::title::spawn(
                run.services().chats.clone(),
                run.services().catalog.clone(),
                chat.clone(),
                history[0].content.clone(),
            );
        }
        // A server that just started may still be compiling the plugins it serves with: a step
        // waits for them rather than tell the model that their tools do not exist.
        run.services().runtime.wait_started().await;
        // The policy in force now (an admin may have changed it since the last step) decides
        // which tools the model is told about.
        let policy = run.services().policy.refresh().await?;
        let visible = policy.rules.visible_tools(&principal);
        let offered = |name: &String| visible.contains(name) && !unservable.contains(name.as_str());
        let tools = run.services().runtime.loaded().tools().filter(|t| offered(&t.name)).cloned().collect();
        let request = ModelRequest { tools, ..base.clone() };
        let step = step_with_compaction(run, &model, &request, &mut history).await?;
        let finish = step.finish;
        let usage = step.usage;
        let parts = step.into_parts();
        let calls = tool_calls_of(&parts);
        let token_usage = crate::catalog::charge(&model.record.pricing, &usage);
        history.push(run.store_message(Role::Assistant, &parts, Some(&model_name), Some(token_usage)).await?);
        // Some local servers end a tool-calling answer with "stop": the calls decide, not the
        // reason. A paused answer (Anthropic `pause_turn`) continues by being sent back.
        if calls.is_empty() {
            if finish == Some(FinishReason::Pause) {
                continue;
            }
            return Ok(());
        }
        let if_interrupted = error_results(&calls, INTERRUPTED_CALL);
        let caller = Caller { run, principal: &principal, policy: &policy, visible: &visible };
        let results = run_tools_until_stopped(&caller, &calls, &if_interrupted).await?;
        history.push(run.store_message(Role::Tool, &results, None, None).await?);
    }
    Err(Stop::Failed(format!(
        "the turn reached its limit of {} model calls; send a message to continue",
        run.context.max_steps
    )))
}

/// The tool calls of an assistant message: (call id, tool, arguments).
fn tool_calls_of(parts: &[MessagePart]) -> Vec<(String, String, Value)> {
    parts
        .iter()
        .filter_map(|p| match p {
            MessagePart::ToolCall { tool_call_id, tool_name, args, .. } => {
                Some((tool_call_id.clone(), tool_name.clone(), args.clone()))
            }
            _ => None,
        })
        .collect()
}

fn error_results(calls: &[(String, String, Value)], why: &str) -> Vec<MessagePart> {
    calls
        .iter()
        .map(|(id, name, _)| MessagePart::ToolResult {
            tool_call_id: id.clone(),
            tool_name: name.clone(),
            result: Value::String(why.into()),
            is_error: true,
            images: Vec::new(),
        })
        .collect()
}

const INTERRUPTED_CALL: &str = "the person interrupted the turn before this tool call finished";
const CUT_OFF_CALL: &str = "the server restarted while this tool call ran, so whether it took effect is unknown; \
     check (list or read what it would have changed) before calling it again";

/// Runs tool calls unless the turn is stopped first. When the person interrupts, `if_interrupted`
/// is stored as the step's results, so the history stays well formed; a shutdown stores
/// nothing, and the next start answers the calls ([`answer_calls_cut_off_by_a_restart`]).
async fn run_tools_until_stopped(
    caller: &Caller<'_>,
    calls: &[(String, String, Value)],
    if_interrupted: &[MessagePart],
) -> Result<Vec<MessagePart>, Stop> {
    let run = caller.run;
    tokio::select! {
        biased;
        _ = run.handle.stopped() => {
            let stop = run.stopped();
            if matches!(stop, Stop::Interrupted) {
                // Calls still waiting for approval never run now. (After a shutdown they stay
                // pending: the step runs again and waits for them.)
                super::approvals::cancel_waiting(&run.services().chats, &run.chat.id).await?;
                run.store_message(Role::Tool, if_interrupted, None, None).await?;
            }
            Err(stop)
        }
        results = run_tools(caller, calls) => results,
    }
}

/// A turn cut off by a shutdown or a crash left its last step's tool calls without results,
/// which no provider accepts. Calls of tools that are safe to repeat (annotated read-only or
/// idempotent, such as waiting for subagents) run again; the model is told that the others may
/// or may not have taken effect.
async fn answer_calls_cut_off_by_a_restart(
    run: &Run<'_>,
    principal: &Principal,
    history: &mut Vec<Message>,
) -> Result<(), Stop> {
    let Some(last) = history.last().filter(|m| m.role == Role::Assistant) else { return Ok(()) };
    let calls = tool_calls_of(&last.content);
    if calls.is_empty() {
        return Ok(());
    }
    // Calls that were waiting for approval (or approved, and not started) never ran: they go
    // through the step's checks again, and find their approvals as they were.
    let mut not_started = BTreeSet::new();
    for (id, _, _) in &calls {
        let approval = run.services().chats.store.approval_of_call(&run.chat.id, id).await?;
        if approval.is_some_and(|a| a.started_at.is_none()) {
            not_started.insert(id.clone());
        }
    }
    let repeatable = |(id, tool, _): &(String, String, Value)| {
        not_started.contains(id)
            || run
                .services()
                .runtime
                .loaded()
                .tools()
                .any(|t| t.name == *tool && (t.annotations.read_only || t.annotations.idempotent))
    };
    let (again, unknown): (Vec<_>, Vec<_>) = calls.iter().cloned().partition(|call| repeatable(call));
    tracing::warn!(
        repeated = ?again.iter().map(|c| &c.1).collect::<Vec<_>>(),
        unknown = ?unknown.iter().map(|c| &c.1).collect::<Vec<_>>(),
        "answering tool calls a restart cut off"
    );
    // Each call's answer in the order of the calls, given the repeated calls' results.
    let in_order = |repeated: Vec<MessagePart>| {
        let mut repeated = repeated.into_iter();
        let mut cut_off = error_results(&unknown, CUT_OFF_CALL).into_iter();
        calls
            .iter()
            .filter_map(|call| if repeatable(call) { repeated.next() } else { cut_off.next() })
            .collect::<Vec<_>>()
    };
    let policy = run.services().policy.refresh().await?;
    let visible = policy.rules.visible_tools(principal);
    let if_interrupted = in_order(error_results(&again, INTERRUPTED_CALL));
    let caller = Caller { run, principal, policy: &policy, visible: &visible };
    let repeated = run_tools_until_stopped(&caller, &again, &if_interrupted).await?;
    let results = in_order(repeated);
    history.push(run.store_message(Role::Tool, &results, None, None).await?);
    Ok(())
}

/// One step's model call from the chat's history: compacted first when the last call passed
/// the model's threshold, and compacted then tried once more when the provider refuses the
/// prompt as too long.
async fn step_with_compaction(
    run: &Run<'_>,
    model: &Resolved,
    request: &ModelRequest,
    history: &mut Vec<Message>,
) -> Result<Step, Stop> {
    if let Some(prompt_tokens) = View::of(history).compaction_due(&model.record) {
        let job = Compaction { model, request, trigger: CompactionTrigger::Threshold, prompt_tokens };
        match compaction::compact(run, history, job).await? {
            Outcome::Compacted(marker) => history.push(marker),
            Outcome::NothingToCompact => {}
            // Past the threshold the prompt still fits: go on uncompacted and try next step.
            Outcome::Failed(why) => tracing::warn!(error = %why, "compaction failed; the step goes on without it"),
        }
    }
    let view = View::of(history);
    let first = ModelRequest { messages: view.prompt(), ..request.clone() };
    let refused = match call_model(run, model, first).await {
        Err(Stop::ContextTooLong(refused)) => refused,
        other => return other,
    };
    let prompt_tokens = view.estimated_tokens(request.system.as_deref().unwrap_or(""));
    let job = Compaction { model, request, trigger: CompactionTrigger::ContextTooLong, prompt_tokens };
    match compaction::compact(run, history, job).await? {
        Outcome::Compacted(marker) => history.push(marker),
        Outcome::NothingToCompact => {
            return Err(Stop::Failed(format!(
                "{refused}; there is no older history to summarize: send a shorter message, start a new chat or choose a model with a larger context window"
            )));
        }
        Outcome::Failed(why) => {
            return Err(Stop::Failed(format!(
                "{refused}; compacting the conversation failed too ({why}): start a new chat or choose a model with a larger context window"
            )));
        }
    }
    let retry = ModelRequest { messages: View::of(history).prompt(), ..request.clone() };
    call_model(run, model, retry).await.map_err(|stop| match stop {
        Stop::ContextTooLong(refused) => Stop::Failed(format!("{refused}, even after compacting the conversation; start a new chat or choose a model with a larger context window")),
        other => other,
    })
}

/// Anthropic's own computer tool, for models that take it, with the chat's desktop as the model
/// sees it (none without a workspace: the `computer` tool then stays a function).
async fn native_computer(run: &Run<'_>, model: &Resolved) -> Option<NativeComputer> {
    let tool = model.record.computer_tool?;
    let workspaces = &run.services().workspaces;
    let workspace = workspaces.of_chat(&run.chat.id).await.ok()??;
    let view = workspaces.desktop_scaling(&workspace);
    Some(NativeComputer { tool, display_width: view.model_width, display_height: view.model_height })
}

/// Tools the policy may show that this server cannot serve, kept from the model (a call made
/// all the same still gets the tool's own explanation): an agent on a desktop needs a model
/// marked for computer use and a server that runs desktops.
async fn unservable_tools(run: &Run<'_>) -> BTreeSet<&'static str> {
    let services = run.services();
    let mut unservable = BTreeSet::new();
    if services.workspaces.desktop_problem().is_some() || services.catalog.computer_use_model().await.is_err() {
        unservable.insert(SPAWN_COMPUTER_USE_AGENT);
    }
    unservable
}

/// One model call, streamed to clients, tried again on failures worth retrying. Returns the
/// finished step; on a failure that ends the turn, what was streamed is stored once. Its span
/// carries the GenAI conventions' attributes (a trace's `chat MODEL` span).
async fn call_model(run: &Run<'_>, model: &Resolved, request: ModelRequest) -> Result<Step, Stop> {
    let span = tracing::info_span!(
        "model_call",
        "otel.name" = %format!("chat {}", model.record.name),
        "otel.kind" = "client",
        "gen_ai.operation.name" = "chat",
        "gen_ai.provider.name" = %model.provider_name,
        "gen_ai.request.model" = %model.record.name,
        "gen_ai.usage.input_tokens" = tracing::field::Empty,
        "gen_ai.usage.output_tokens" = tracing::field::Empty,
        "error.type" = tracing::field::Empty,
    );
    stream_model(run, model, request).instrument(span).await
}

async fn stream_model(run: &Run<'_>, model: &Resolved, mut request: ModelRequest) -> Result<Step, Stop> {
    let store = &run.services().chats.store;
    keep_recent_images(&mut request.messages, run.services().workspaces.desktops().config.keep_screenshots);
    let channel = run.services().chats.hub.channel(&run.chat.id);
    let mut attempts = stream_with_retry(model.client.clone(), request, run.context.retry);
    let mut step = Step::default();
    let metrics = &run.services().chats.metrics;
    let mut timer = metrics.model_call(model);
    loop {
        let next = tokio::select! {
            biased;
            _ = run.handle.stopped() => {
                timer.ended(Some("cancelled"));
                let stop = run.stopped();
                if matches!(stop, Stop::Interrupted) {
                    store_partial(run, step).await?;
                }
                return Err(stop);
            }
            next = attempts.next() => next,
        };
        match next {
            None => {
                timer.ended(None);
                metrics.usage(model, &step.usage);
                let span = tracing::Span::current();
                span.record("gen_ai.usage.input_tokens", step.usage.input_tokens);
                span.record("gen_ai.usage.output_tokens", step.usage.output_tokens);
                return Ok(step);
            }
            Some(Ok(Attempted::Event(event))) => {
                timer.chunk();
                if let Some(part) = step.apply(event) {
                    let mut guard = channel.lock().await;
                    guard.emit(store, EventBody::MessagePart { part }).await?;
                }
            }
            Some(Ok(Attempted::Retrying { attempt, delay, error, discarded_output })) => {
                timer.retrying(&error_class(error.kind), delay);
                // A provider error mid-answer is retried, and clients drop what it streamed.
                let mut guard = channel.lock().await;
                if discarded_output {
                    guard.clear_in_flight();
                }
                let body = EventBody::Retry {
                    attempt,
                    delay_ms: delay.as_millis() as u64,
                    error: error.message,
                    error_kind: error.kind,
                    retrying_at: crate::store::now_ms() + delay.as_millis() as i64,
                    discarded_output,
                };
                guard.emit(store, body).await?;
                step = Step::default();
            }
            Some(Err(GaveUp { error, .. })) if error.kind == ErrorKind::ContextTooLong && !step.has_output() => {
                timer.ended(Some(&error_class(error.kind)));
                tracing::Span::current().record("error.type", error_class(error.kind));
                return Err(Stop::ContextTooLong(error.to_string()));
            }
            // A cut connection after output is not retried: what arrived stays, once.
            Some(Err(GaveUp { error, attempts, retryable })) => {
                timer.ended(Some(&error_class(error.kind)));
                tracing::Span::current().record("error.type", error_class(error.kind));
                store_partial(run, step).await?;
                return Err(Stop::Failed(give_up_message(&error, attempts, retryable)));
            }
        }
    }
}

/// The chat's `last_error` when a model call is given up on.
fn give_up_message(error: &LlmError, attempts: u32, retryable: bool) -> String {
    if retryable && attempts > 1 {
        format!("{error} (gave up after {attempts} attempts); send a message to try again")
    } else if error.kind == ErrorKind::Dropped {
        format!("{error}; what arrived is kept, send a message to continue")
    } else {
        error.to_string()
    }
}

/// Where a tool call's progress reports go: to the chat's live subscribers, in the order the
/// plugin made them (one forwarding task per call, ending with it).
fn progress_to_stream(run: &Run<'_>, call_id: &str) -> crate::plugins::capabilities::ProgressSink {
    let channel = run.services().chats.hub.channel(&run.chat.id);
    let call_id = call_id.to_string();
    let (reports, mut received) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(report) = received.recv().await {
            channel.lock().await.publish_transient(report);
        }
    });
    Arc::new(move |update: crate::plugins::capabilities::progress::ProgressUpdate| {
        let _ = reports.send(EventBody::ToolProgress {
            tool_call_id: call_id.clone(),
            tool: update.tool,
            message: update.message,
            fraction: update.fraction,
        });
    })
}

/// Who makes a step's tool calls, and under which policy.
struct Caller<'a> {
    run: &'a Run<'a>,
    principal: &'a Principal,
    policy: &'a Arc<ActivePolicy>,
    /// The tools the chat was told about.
    visible: &'a BTreeSet<String>,
}

/// Runs a step's tool calls concurrently; results come back in call order. Each call is checked
/// against the policy again, since a model may call a tool it was not told about; the calls the
/// policy lets through that need a person's approval wait for it, asked together.
async fn run_tools(caller: &Caller<'_>, calls: &[(String, String, Value)]) -> Result<Vec<MessagePart>, Stop> {
    let Caller { run, principal, policy, .. } = *caller;
    let mut answers: Vec<Option<String>> = calls.iter().map(|(_, name, args)| refusal(caller, name, args)).collect();
    let admissible: Vec<usize> = (0..calls.len()).filter(|i| answers[*i].is_none()).collect();
    let asked: Vec<&super::approvals::Call> = admissible.iter().map(|i| &calls[*i]).collect();
    let admitted = super::approvals::admit(run, principal, policy, &asked).await?;
    for (index, answer) in admissible.into_iter().zip(admitted) {
        answers[index] = answer;
    }
    let runs = calls.iter().zip(answers).map(|((id, name, args), answer)| async move {
        let (result, is_error, images) = match answer {
            Some(refused) => (refused, true, Vec::new()),
            None => call_tool(caller, id, name, args).await,
        };
        MessagePart::ToolResult {
            tool_call_id: id.clone(),
            tool_name: name.clone(),
            result: Value::String(result),
            is_error,
            images,
        }
    });
    Ok(futures::future::join_all(runs).await)
}

/// Why a call is not made at all (the policy denies it, or its arguments are no JSON object),
/// as the model reads it.
fn refusal(caller: &Caller<'_>, name: &str, args: &Value) -> Option<String> {
    if let Some(denied) = denial(caller, name) {
        return Some(denied);
    }
    match args {
        Value::Object(_) => None,
        Value::String(raw) => {
            Some(format!("the arguments of `{name}` are not valid JSON ({raw:.200}); send a JSON object"))
        }
        other => Some(format!("the arguments of `{name}` must be a JSON object, not {other}")),
    }
}

/// Makes one call the policy admitted: its output as the model reads it, whether it is an
/// error, and its images.
async fn call_tool(caller: &Caller<'_>, id: &str, name: &str, args: &Value) -> (String, bool, Vec<ImageData>) {
    let Caller { run, principal, policy, .. } = *caller;
    let chat = run.chat;
    let access = ChatServices {
        workspaces: run.services().workspaces.clone(),
        agents: run.services().agents.clone(),
        secrets: run.services().secrets.clone(),
        scope: ChatScope {
            chat_id: chat.id.clone(),
            root_chat_id: chat.root_chat_id.clone(),
            owner_id: chat.owner_id.clone(),
            owner_is_admin: principal.owner_role == "admin",
            workspace_id: None,
        },
    };
    // Looked up per call: an earlier call of this step may have made it.
    let workspace = chat_files_root(run, &chat.id).await;
    let request = CallRequest {
        tool: name.to_string(),
        arguments: args.clone(),
        context: CallContext {
            chat_id: chat.id.clone(),
            root_chat_id: chat.root_chat_id.clone(),
            parent_chat_id: chat.parent_chat_id.clone(),
            kind: chat.kind,
            user_id: chat.owner_id.clone(),
            call_id: id.to_string(),
        },
        workspace,
        chat: Some(access),
        grants: Some(run.services().policy.grants(policy, principal, name)),
        progress: Some(progress_to_stream(run, id)),
    };
    match run.services().runtime.call(request).await {
        Ok(output) => (output_text(&output), output.is_error, output_images(&output)),
        Err(error) => (error.to_string(), true, Vec::new()),
    }
}

/// Where the files of the chat's workspace are on this machine, if it has a workspace.
async fn chat_files_root(run: &Run<'_>, chat_id: &str) -> Option<crate::workspace::confined::WorkspaceRoot> {
    match run.services().workspaces.of_chat(chat_id).await {
        Ok(Some(workspace)) => run.services().workspaces.files_root(&workspace),
        Ok(None) => None,
        Err(e) => {
            tracing::error!(chat_id, error = %e, "cannot look up the chat's workspace");
            None
        }
    }
}

/// When the policy denies the call: the error the model reads (the denial is audited). A call
/// runs only if the chat was told of the tool this step and `call_tool` permits it. Tools no
/// plugin offers are left to the runtime, which names the closest one.
fn denial(caller: &Caller<'_>, tool: &str) -> Option<String> {
    let Caller { run, principal, policy, visible } = *caller;
    let installed = run.services().runtime.loaded().tool(tool)?.clone();
    let decision =
        run.services().policy.decide_call(policy, principal, visible.contains(tool), &installed.plugin, tool);
    if decision.allowed {
        return None;
    }
    Some(format!(
        "tool `{tool}` is not available in this chat: the tool policy denies it ({}); do not call it again",
        decision.decided_by
    ))
}

/// A tool's output as the text the model reads (its images travel beside it).
fn output_text(output: &ToolOutput) -> String {
    output
        .content
        .iter()
        .filter_map(|part| match part {
            ContentPart::Text { text } => Some(text.clone()),
            ContentPart::Json { json } => Some(json.to_string()),
            ContentPart::Image { .. } => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The images of a tool's output, for the model to see.
fn output_images(output: &ToolOutput) -> Vec<ImageData> {
    output
        .content
        .iter()
        .filter_map(|part| match part {
            ContentPart::Image { mime_type, data } => {
                Some(ImageData { media_type: mime_type.clone(), data: data.clone() })
            }
            _ => None,
        })
        .collect()
}

/// Keeps what was streamed of an unfinished step; its tool calls get an "interrupted" result.
async fn store_partial(run: &Run<'_>, step: Step) -> Result<(), Stop> {
    let chat = run.chat;
    let parts = step.into_parts();
    if parts.is_empty() {
        return Ok(());
    }
    let calls: Vec<MessagePart> = parts
        .iter()
        .filter_map(|p| match p {
            MessagePart::ToolCall { tool_call_id, tool_name, .. } => Some(MessagePart::ToolResult {
                tool_call_id: tool_call_id.clone(),
                tool_name: tool_name.clone(),
                result: Value::String("the turn stopped before this tool call ran".into()),
                is_error: true,
                images: Vec::new(),
            }),
            _ => None,
        })
        .collect();
    run.store_message(Role::Assistant, &parts, chat.model.as_deref(), None).await?;
    if !calls.is_empty() {
        run.store_message(Role::Tool, &calls, None, None).await?;
    }
    Ok(())
}

/// The turn is over (finished or interrupted): run the next queued message, or wait.
/// Whether the chat was interrupted and this worker still owns it.
async fn interrupted(run: &Run<'_>) -> bool {
    let chat = run.chat;
    matches!(run.services().chats.store.chat_state(&chat.id).await, Ok(Some((ChatStatus::Waiting, Some(owner)))) if owner == run.context.worker_id)
}

async fn finish(run: &Run<'_>) -> Result<(), StoreError> {
    let chat = run.chat;
    let service = &run.services().chats;
    let store = &service.store;
    let channel = service.hub.channel(&chat.id);
    let mut guard = channel.lock().await;
    let Some((status, owner)) = store.chat_state(&chat.id).await? else { return Ok(()) };
    if owner.as_deref() != Some(run.context.worker_id.as_str()) {
        return Ok(());
    }
    match status {
        ChatStatus::Running | ChatStatus::Waiting => {
            if let Some(next) = store.pop_queued(&chat.id).await? {
                service.start_turn_with(&mut guard, &chat.id, &next.content, Some(&run.context.worker_id)).await?;
                service.publish_queue(&mut guard, &chat.id).await?;
            } else {
                store.set_status(&chat.id, ChatStatus::Waiting, None).await?;
                if status == ChatStatus::Running {
                    guard.emit(store, EventBody::Status { status: ChatStatus::Waiting, last_error: None }).await?;
                }
            }
        }
        ChatStatus::Pending | ChatStatus::Error => store.set_status(&chat.id, status, None).await?,
    }
    Ok(())
}

async fn fail(run: &Run<'_>, message: &str) -> Result<(), StoreError> {
    let chat = run.chat;
    tracing::warn!(error = message, "turn failed");
    let store = &run.services().chats.store;
    let channel = run.services().chats.hub.channel(&chat.id);
    let mut guard = channel.lock().await;
    if !store.settle(&chat.id, &run.context.worker_id, ChatStatus::Error, Some(message), false).await? {
        return Ok(());
    }
    guard.emit(store, EventBody::Error { message: message.to_string() }).await?;
    guard.emit(store, EventBody::Status { status: ChatStatus::Error, last_error: Some(message.to_string()) }).await?;
    Ok(())
}
