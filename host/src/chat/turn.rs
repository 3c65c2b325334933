//! One chat's turn: prompt the model, stream its answer, run the tools it asks for, store each
//! step, and go on while it asks for tools.

use std::collections::{BTreeMap, BTreeSet};

use futures::StreamExt;
use serde_json::Value;
use tracing::Instrument;

use super::compaction::{self, Compaction, Outcome, View};
use super::events::{DiscardReason, EventBody, PartDelta};
use super::parts::{CompactionTrigger, MessagePart};
use super::service::StopReason;
use super::worker::Worker;
use crate::capabilities::ChatServices;
use crate::catalog::Resolved;
use crate::llm::{ErrorKind, FinishReason, LlmError, ModelRequest, StreamEvent, Usage};
use crate::plugins::{CallContext, CallRequest, ChatKind, ContentPart, ToolOutput};
use crate::policy::{Action, ActivePolicy, Decision, Principal};
use crate::store::{Chat, ChatStatus, Denial, Message, StoreError, TokenUsage};
use crate::workspace::ChatScope;
use std::sync::Arc;

/// How a turn ended, when it did not simply finish.
pub(super) enum Stop {
    Interrupted,
    Shutdown,
    /// Another worker owns the chat now; this run must not touch it.
    LostOwnership,
    Failed(String),
    /// The provider refused the prompt as too long for the model: compacting may cure it.
    ContextTooLong(String),
    /// The database failed: the turn could not be stored or read.
    Store(StoreError),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Stop {
        Stop::Store(e)
    }
}

pub(super) async fn run_chat(worker: &Worker, chat: Chat) {
    let span = tracing::info_span!("turn", chat_id = %chat.id);
    async {
        let (cancel, reason) = worker.service.runs.register(&chat.id);
        if let Err(e) = begin(worker, &chat).await {
            tracing::warn!(error = %e, "could not announce the turn");
        }
        // The turn watches `cancel` itself, so that an interrupt keeps what was streamed.
        let outcome = turn(worker, &chat, &cancel, &reason).await;
        match outcome {
            Ok(()) | Err(Stop::Interrupted) => record(&reason, "finish the turn", || finish(worker, &chat)).await,
            // Interrupted, then shut down before the end: the interrupt's queued message runs
            // next, as it would have; a turn cut off while running goes back to pending.
            Err(Stop::Shutdown) if interrupted(worker, &chat).await => {
                record(&reason, "finish the turn", || finish(worker, &chat)).await
            }
            Err(Stop::Shutdown) => {
                if let Err(e) = hand_back(worker, &chat).await {
                    tracing::warn!(error = %e, "could not hand the chat back on shutdown");
                }
            }
            Err(Stop::LostOwnership) => {}
            Err(Stop::Failed(message)) | Err(Stop::ContextTooLong(message)) => {
                record(&reason, "record the failed turn", || fail(worker, &chat, &message)).await
            }
            Err(Stop::Store(error)) => {
                tracing::error!(error = %error, "the database failed mid-turn");
                record(&reason, "record the database failure", || after_store_failure(worker, &chat, &error)).await
            }
        }
        // Only now: until the chat is settled, a message sent to it waits in its queue (see
        // `ChatService::winding_up`), and the worker heartbeats it.
        worker.service.runs.finish(&chat.id, &reason);
    }
    .instrument(span)
    .await
}

/// Tries to record how a turn ended until the database takes it, backing off (up to a second
/// between tries, so that a chat is settled within seconds of the database coming back). Gives
/// up when the server shuts down (the chat is handed back then) or the chat is taken away.
async fn record<F, Fut>(reason: &std::sync::Mutex<Option<StopReason>>, what: &str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>>,
{
    let mut delay = std::time::Duration::from_millis(100);
    loop {
        let error = match attempt().await {
            Ok(()) => return,
            Err(error) => error,
        };
        if matches!(stop_reason(reason), Stop::Shutdown | Stop::LostOwnership) {
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
async fn begin(worker: &Worker, chat: &Chat) -> Result<(), StoreError> {
    let store = &worker.service.store;
    let channel = worker.service.hub.channel(&chat.id);
    let mut guard = channel.lock().await;
    if store.take_cut_off(&chat.id).await? {
        let why = "the server that ran this chat stopped before it stored what it streamed; drop those parts, the step runs again";
        guard.discard(store, DiscardReason::CutOff, why.into()).await?;
    }
    guard.emit(store, EventBody::Status { status: ChatStatus::Running, last_error: None }).await?;
    Ok(())
}

/// On shutdown: clients drop the parts of the step under way, and the chat goes back to
/// pending, marked cut off, for the next server (or this one restarted) to run again.
async fn hand_back(worker: &Worker, chat: &Chat) -> Result<(), StoreError> {
    let store = &worker.service.store;
    let channel = worker.service.hub.channel(&chat.id);
    let mut guard = channel.lock().await;
    if guard.has_parts_in_flight() {
        let why =
            "this server is shutting down before it stored this step; drop its parts, the next server runs it again";
        guard.discard(store, DiscardReason::CutOff, why.into()).await?;
    }
    if store.settle(&chat.id, &worker.id, ChatStatus::Pending, None, true).await? {
        guard.emit(store, EventBody::Status { status: ChatStatus::Pending, last_error: None }).await?;
    }
    Ok(())
}

/// The database failed mid-turn, and is answering again. When it was unavailable the turn
/// goes back to pending and runs on; when it refused the write, the chat ends in `error`.
/// Either way clients first drop the parts that were not stored.
async fn after_store_failure(worker: &Worker, chat: &Chat, error: &StoreError) -> Result<(), StoreError> {
    let store = &worker.service.store;
    let channel = worker.service.hub.channel(&chat.id);
    let mut guard = channel.lock().await;
    let last_error = (!error.is_unavailable())
        .then(|| format!("the database failed while storing the turn ({error}); send a message to try again"));
    let status = if last_error.is_some() { ChatStatus::Error } else { ChatStatus::Pending };
    if guard.has_parts_in_flight() {
        let why = format!("the database could not store this step ({error}); drop its parts");
        guard.discard(store, DiscardReason::NotStored, why).await?;
    }
    if !store.settle(&chat.id, &worker.id, status, last_error.as_deref(), true).await? {
        return Ok(());
    }
    if let Some(message) = &last_error {
        guard.emit(store, EventBody::Error { message: message.clone() }).await?;
    }
    guard.emit(store, EventBody::Status { status, last_error }).await?;
    if status == ChatStatus::Pending {
        worker.service.wake.notify_one();
    }
    Ok(())
}

pub(super) fn stop_reason(reason: &std::sync::Mutex<Option<StopReason>>) -> Stop {
    match *reason.lock().unwrap_or_else(|p| p.into_inner()) {
        Some(StopReason::Shutdown) => Stop::Shutdown,
        Some(StopReason::Superseded) => Stop::LostOwnership,
        Some(StopReason::Interrupt) | None => Stop::Interrupted,
    }
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

async fn turn(
    worker: &Worker,
    chat: &Chat,
    cancel: &tokio_util::sync::CancellationToken,
    reason: &std::sync::Mutex<Option<StopReason>>,
) -> Result<(), Stop> {
    let store = &worker.service.store;
    let model = worker.catalog.resolve(chat.model.as_deref()).await.map_err(|e| Stop::Failed(e.to_string()))?;
    let model_name = model.record.name.clone();
    let principal = worker.policy.principal(chat, &model_name).await?;
    let files_root = chat_files_root(worker, &chat.id).await;
    let system = super::prompt::system_prompt(store, chat, files_root.as_ref()).await?;
    let base = ModelRequest {
        model: model.record.model.clone(),
        system: Some(system),
        max_output_tokens: model.record.max_output_tokens.map(|n| n as u32),
        thinking_budget: model.record.thinking_budget.map(|n| n as u32),
        ..ModelRequest::default()
    };
    answer_calls_cut_off_by_a_restart(worker, chat, &principal, cancel, reason).await?;
    for step_number in 0..worker.settings.max_steps {
        let history = store.messages(&chat.id, 0).await?;
        if step_number == 0 && chat.kind == ChatKind::Root && history.len() == 1 {
            super::title::spawn(
                worker.service.clone(),
                worker.catalog.clone(),
                chat.clone(),
                history[0].content.clone(),
            );
        }
        // The policy in force now (an admin may have changed it since the last step) decides
        // which tools the model is told about.
        let policy = worker.policy.refresh().await?;
        let visible = policy.rules.visible_tools(&principal);
        let tools = worker.runtime.tools().filter(|t| visible.contains(&t.name)).cloned().collect();
        let request = ModelRequest { tools, ..base.clone() };
        let step = step_with_compaction(worker, chat, &model, &request, history, cancel, reason).await?;
        let finish = step.finish;
        let usage = step.usage;
        let parts = step.into_parts();
        let calls = tool_calls_of(&parts);
        let token_usage = crate::catalog::charge(&model.record.pricing, &usage);
        store_message(worker, chat, "assistant", &parts, Some(&model_name), Some(token_usage)).await?;
        // Some local servers end a tool-calling answer with "stop": the calls decide, not the
        // reason. A paused answer (Anthropic `pause_turn`) continues by being sent back.
        if calls.is_empty() {
            if finish == Some(FinishReason::Pause) {
                continue;
            }
            return Ok(());
        }
        let if_interrupted = error_results(&calls, INTERRUPTED_CALL);
        let caller = Caller { worker, chat, principal: &principal, policy: &policy, visible: &visible };
        let results = run_tools_until_stopped(&caller, &calls, &if_interrupted, cancel, reason).await?;
        store_message(worker, chat, "tool", &results, None, None).await?;
    }
    Err(Stop::Failed(format!(
        "the turn reached its limit of {} model calls; send a message to continue",
        worker.settings.max_steps
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
    cancel: &tokio_util::sync::CancellationToken,
    reason: &std::sync::Mutex<Option<StopReason>>,
) -> Result<Vec<MessagePart>, Stop> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => {
            let stop = stop_reason(reason);
            if matches!(stop, Stop::Interrupted) {
                store_message(caller.worker, caller.chat, "tool", if_interrupted, None, None).await?;
            }
            Err(stop)
        }
        results = run_tools(caller, calls) => Ok(results),
    }
}

/// A turn cut off by a shutdown or a crash left its last step's tool calls without results,
/// which no provider accepts. Calls of tools that are safe to repeat (annotated read-only or
/// idempotent, such as waiting for subagents) run again; the model is told that the others may
/// or may not have taken effect.
async fn answer_calls_cut_off_by_a_restart(
    worker: &Worker,
    chat: &Chat,
    principal: &Principal,
    cancel: &tokio_util::sync::CancellationToken,
    reason: &std::sync::Mutex<Option<StopReason>>,
) -> Result<(), Stop> {
    let history = worker.service.store.messages(&chat.id, 0).await?;
    let Some(last) = history.last().filter(|m| m.role == "assistant") else { return Ok(()) };
    let calls = tool_calls_of(&last.content);
    if calls.is_empty() {
        return Ok(());
    }
    let repeatable = |tool: &str| {
        worker.runtime.tools().any(|t| t.name == tool && (t.annotations.read_only || t.annotations.idempotent))
    };
    let (again, unknown): (Vec<_>, Vec<_>) = calls.iter().cloned().partition(|(_, tool, _)| repeatable(tool));
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
            .filter_map(|(_, tool, _)| if repeatable(tool) { repeated.next() } else { cut_off.next() })
            .collect::<Vec<_>>()
    };
    let policy = worker.policy.refresh().await?;
    let visible = policy.rules.visible_tools(principal);
    let if_interrupted = in_order(error_results(&again, INTERRUPTED_CALL));
    let caller = Caller { worker, chat, principal, policy: &policy, visible: &visible };
    let repeated = run_tools_until_stopped(&caller, &again, &if_interrupted, cancel, reason).await?;
    let results = in_order(repeated);
    store_message(worker, chat, "tool", &results, None, None).await?;
    Ok(())
}

/// One step's model call from the chat's history: compacted first when the last call passed
/// the model's threshold, and compacted then tried once more when the provider refuses the
/// prompt as too long.
async fn step_with_compaction(
    worker: &Worker,
    chat: &Chat,
    model: &Resolved,
    request: &ModelRequest,
    mut history: Vec<Message>,
    cancel: &tokio_util::sync::CancellationToken,
    reason: &std::sync::Mutex<Option<StopReason>>,
) -> Result<Step, Stop> {
    let store = &worker.service.store;
    if let Some(prompt_tokens) = View::of(&history).compaction_due(&model.record) {
        let job = Compaction { model, request, trigger: CompactionTrigger::Threshold, prompt_tokens };
        match compaction::compact(worker, chat, &history, job, cancel, reason).await? {
            Outcome::Compacted => history = store.messages(&chat.id, 0).await?,
            Outcome::NothingToCompact => {}
            // Past the threshold the prompt still fits: go on uncompacted and try next step.
            Outcome::Failed(why) => tracing::warn!(error = %why, "compaction failed; the step goes on without it"),
        }
    }
    let view = View::of(&history);
    let first = ModelRequest { messages: view.prompt(), ..request.clone() };
    let refused = match call_model(worker, chat, model, first, cancel, reason).await {
        Err(Stop::ContextTooLong(refused)) => refused,
        other => return other,
    };
    let prompt_tokens = view.estimated_tokens(request.system.as_deref().unwrap_or(""));
    let job = Compaction { model, request, trigger: CompactionTrigger::ContextTooLong, prompt_tokens };
    match compaction::compact(worker, chat, &history, job, cancel, reason).await? {
        Outcome::Compacted => {}
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
    let history = store.messages(&chat.id, 0).await?;
    let retry = ModelRequest { messages: View::of(&history).prompt(), ..request.clone() };
    call_model(worker, chat, model, retry, cancel, reason).await.map_err(|stop| match stop {
        Stop::ContextTooLong(refused) => Stop::Failed(format!("{refused}, even after compacting the conversation; start a new chat or choose a model with a larger context window")),
        other => other,
    })
}

/// One model call, streamed to clients, tried again on failures worth retrying. Returns the
/// finished step; on a failure that ends the turn, what was streamed is stored once.
async fn call_model(
    worker: &Worker,
    chat: &Chat,
    model: &Resolved,
    request: ModelRequest,
    cancel: &tokio_util::sync::CancellationToken,
    reason: &std::sync::Mutex<Option<StopReason>>,
) -> Result<Step, Stop> {
    let store = &worker.service.store;
    let channel = worker.service.hub.channel(&chat.id);
    let policy = worker.settings.retry;
    let mut attempt = 1;
    loop {
        let mut stream = model.client.stream(request.clone());
        let mut step = Step::default();
        let error = loop {
            let next = tokio::select! {
                biased;
                _ = cancel.cancelled() => {
                    let stop = stop_reason(reason);
                    if matches!(stop, Stop::Interrupted) {
                        store_partial(worker, chat, step).await?;
                    }
                    return Err(stop);
                }
                next = stream.next() => next,
            };
            match next {
                None => return Ok(step),
                Some(Ok(event)) => {
                    if let Some(part) = step.apply(event) {
                        let mut guard = channel.lock().await;
                        guard.emit(store, EventBody::MessagePart { part }).await?;
                    }
                }
                Some(Err(error)) => break error,
            }
        };
        // A cut connection after output is not retried (the contract: the output stays,
        // once); a provider error mid-answer is, and the partial output is dropped.
        let retryable = error.kind.retryable() && !(error.kind == ErrorKind::Dropped && step.has_output());
        let delay = policy.delay(attempt, error.retry_after);
        if error.kind == ErrorKind::ContextTooLong && !step.has_output() {
            return Err(Stop::ContextTooLong(error.to_string()));
        }
        if !retryable || !policy.allows_another(attempt, error.kind) || delay > crate::llm::retry::LONGEST_RETRY_AFTER {
            store_partial(worker, chat, step).await?;
            return Err(Stop::Failed(give_up_message(&error, attempt, retryable)));
        }
        tracing::warn!(attempt, delay_ms = delay.as_millis() as u64, error = %error, "model call failed; retrying");
        {
            let mut guard = channel.lock().await;
            let discarded_output = step.has_output();
            if discarded_output {
                guard.clear_in_flight();
            }
            let retrying_at = crate::store::now_ms() + delay.as_millis() as i64;
            let body = EventBody::Retry {
                attempt,
                delay_ms: delay.as_millis() as u64,
                error: error.message.clone(),
                error_kind: error.kind,
                retrying_at,
                discarded_output,
            };
            guard.emit(store, body).await?;
        }
        tokio::select! {
            biased;
            _ = cancel.cancelled() => return Err(stop_reason(reason)),
            _ = tokio::time::sleep(delay) => {}
        }
        attempt += 1;
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

/// Who makes a step's tool calls, and under which policy.
struct Caller<'a> {
    worker: &'a Worker,
    chat: &'a Chat,
    principal: &'a Principal,
    policy: &'a Arc<ActivePolicy>,
    /// The tools the chat was told about.
    visible: &'a BTreeSet<String>,
}

/// Runs a step's tool calls concurrently; results come back in call order. Each call is checked
/// against the policy again, since a model may call a tool it was not told about.
async fn run_tools(caller: &Caller<'_>, calls: &[(String, String, Value)]) -> Vec<MessagePart> {
    let Caller { worker, chat, principal, policy, visible } = *caller;
    let access = ChatServices {
        workspaces: worker.workspaces.clone(),
        agents: worker.agents.clone(),
        scope: ChatScope {
            chat_id: chat.id.clone(),
            root_chat_id: chat.root_chat_id.clone(),
            owner_id: chat.owner_id.clone(),
            owner_is_admin: principal.owner_role == "admin",
        },
    };
    let runs = calls.iter().map(|(id, name, args)| {
        let access = access.clone();
        async move {
            let denied = denial(worker, principal, policy, visible, name);
            let (result, is_error) = match (denied, args) {
                (Some(message), _) => (message, true),
                (None, Value::Object(_)) => {
                    // Looked up per call: an earlier call of this step may have made it.
                    let workspace = chat_files_root(worker, &chat.id).await;
                    let request = CallRequest {
                        tool: name.clone(),
                        arguments: args.clone(),
                        context: CallContext {
                            chat_id: chat.id.clone(),
                            root_chat_id: chat.root_chat_id.clone(),
                            parent_chat_id: chat.parent_chat_id.clone(),
                            kind: chat.kind,
                            user_id: chat.owner_id.clone(),
                            call_id: id.clone(),
                        },
                        workspace,
                        chat: Some(access),
                        grants: Some(worker.policy.grants(policy, principal, name)),
                        progress: None,
                    };
                    match worker.runtime.call(request).await {
                        Ok(output) => (output_text(&output), output.is_error),
                        Err(error) => (error.to_string(), true),
                    }
                }
                (None, Value::String(raw)) => {
                    (format!("the arguments of `{name}` are not valid JSON ({raw:.200}); send a JSON object"), true)
                }
                (None, other) => (format!("the arguments of `{name}` must be a JSON object, not {other}"), true),
            };
            MessagePart::ToolResult {
                tool_call_id: id.clone(),
                tool_name: name.clone(),
                result: Value::String(result),
                is_error,
            }
        }
    });
    futures::future::join_all(runs).await
}

/// Where the files of the chat's workspace are on this machine, if it has a workspace.
async fn chat_files_root(worker: &Worker, chat_id: &str) -> Option<crate::workspace::confined::WorkspaceRoot> {
    match worker.workspaces.of_chat(chat_id).await {
        Ok(Some(workspace)) => worker.workspaces.files_root(&workspace),
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
fn denial(
    worker: &Worker,
    principal: &Principal,
    policy: &ActivePolicy,
    visible: &BTreeSet<String>,
    tool: &str,
) -> Option<String> {
    let installed = worker.runtime.tools().find(|t| t.name == tool)?;
    let decision = if visible.contains(tool) {
        policy.rules.decide_tool(principal, Action::CallTool, tool)
    } else {
        // Hidden from this chat (or loaded after the policy was): never callable by name.
        let seen = policy.rules.decide_tool(principal, Action::SeeTool, tool);
        Decision { allowed: false, decided_by: format!("{} (not visible to this chat)", seen.decided_by) }
    };
    if decision.allowed {
        return None;
    }
    tracing::warn!(tool, plugin = %installed.plugin, decided_by = %decision.decided_by, "tool call denied by policy");
    worker.policy.record(Denial {
        id: 0,
        chat_id: principal.id.clone(),
        tool: tool.to_string(),
        plugin: installed.plugin.clone(),
        action: Action::CallTool.name().into(),
        capability: None,
        scope: None,
        decided_by: decision.decided_by.clone(),
        policy_version: policy.version,
        created_at: crate::store::now_ms(),
    });
    Some(format!(
        "tool `{tool}` is not available in this chat: the tool policy denies it ({}); do not call it again",
        decision.decided_by
    ))
}

/// A tool's output as the text the model reads.
fn output_text(output: &ToolOutput) -> String {
    output
        .content
        .iter()
        .map(|part| match part {
            ContentPart::Text { text } => text.clone(),
            ContentPart::Json { json } => json.to_string(),
            ContentPart::Image { mime_type, .. } => format!("[image: {mime_type}]"),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Stores a message if this worker still owns the chat, and publishes it.
pub(super) async fn store_message(
    worker: &Worker,
    chat: &Chat,
    role: &str,
    parts: &[MessagePart],
    model: Option<&str>,
    usage: Option<TokenUsage>,
) -> Result<Message, Stop> {
    let store = &worker.service.store;
    let channel = worker.service.hub.channel(&chat.id);
    let mut guard = channel.lock().await;
    let Some(message) = store.insert_message(&chat.id, Some(&worker.id), role, parts, model, usage).await? else {
        guard.clear_in_flight();
        return Err(Stop::LostOwnership);
    };
    guard.publish_message(&message);
    Ok(message)
}

/// Keeps what was streamed of an unfinished step; its tool calls get an "interrupted" result.
async fn store_partial(worker: &Worker, chat: &Chat, step: Step) -> Result<(), Stop> {
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
            }),
            _ => None,
        })
        .collect();
    store_message(worker, chat, "assistant", &parts, chat.model.as_deref(), None).await?;
    if !calls.is_empty() {
        store_message(worker, chat, "tool", &calls, None, None).await?;
    }
    Ok(())
}

/// The turn is over (finished or interrupted): run the next queued message, or wait.
/// Whether the chat was interrupted and this worker still owns it.
async fn interrupted(worker: &Worker, chat: &Chat) -> bool {
    matches!(worker.service.store.chat_state(&chat.id).await, Ok(Some((ChatStatus::Waiting, Some(owner)))) if owner == worker.id)
}

async fn finish(worker: &Worker, chat: &Chat) -> Result<(), StoreError> {
    let service = &worker.service;
    let store = &service.store;
    let channel = service.hub.channel(&chat.id);
    let mut guard = channel.lock().await;
    let Some((status, owner)) = store.chat_state(&chat.id).await? else { return Ok(()) };
    if owner.as_deref() != Some(worker.id.as_str()) {
        return Ok(());
    }
    match status {
        ChatStatus::Running | ChatStatus::Waiting => {
            if let Some(next) = store.pop_queued(&chat.id).await? {
                service.start_turn_with(&mut guard, &chat.id, &next.content, Some(&worker.id)).await?;
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

async fn fail(worker: &Worker, chat: &Chat, message: &str) -> Result<(), StoreError> {
    tracing::warn!(error = message, "turn failed");
    let store = &worker.service.store;
    let channel = worker.service.hub.channel(&chat.id);
    let mut guard = channel.lock().await;
    if !store.settle(&chat.id, &worker.id, ChatStatus::Error, Some(message), false).await? {
        return Ok(());
    }
    guard.emit(store, EventBody::Error { message: message.to_string() }).await?;
    guard.emit(store, EventBody::Status { status: ChatStatus::Error, last_error: Some(message.to_string()) }).await?;
    Ok(())
}
