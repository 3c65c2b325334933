//! Tool calls that the policy says need a person's approval (`require_approval`).
//!
//! A step asks for every such call of its step together: one `approval_request` on the chat's
//! stream and on its owner's watch stream (a subagent's owner is its root chat's). The step then
//! waits, holding its turn, until each call is answered by the chat's owner (approved once,
//! approved for the chat, or denied with a reason the model reads) or its deadline passes (a
//! denial). Nothing of this lives only in memory: the approvals are rows, answered by
//! conditional updates from whichever replica the person reaches, and the waiting step reads
//! them; so a step cut off by a restart or a failover asks again for the same calls and finds
//! them pending, with their first deadline, or answered. An approved call is marked started
//! before it runs, so that a restart never runs it twice.
//!
//! The model never answers: answers come only through the API, from the chat's owner.

use std::time::Duration;

use serde_json::Value;

use super::events::{EventBody, WatchEvent};
use super::run::{Run, Stop};
use super::service::ChatService;
use crate::policy::{ActivePolicy, Attendance, Principal};
use crate::store::{ApprovalScope, ApprovalStatus, Chat, NewApproval, StoreError, ToolApproval, now_ms};

/// How often a waiting step looks at its approvals when no answer wakes it (answers given on
/// another replica arrive by the relay's notice; this covers a lost notice).
const POLL: Duration = Duration::from_secs(1);

/// Longest reason a person may give with a denial.
pub const MAX_REASON_CHARS: usize = 2000;

/// A call of the step: (call id, tool, arguments).
pub(super) type Call = (String, String, Value);

/// For each call (which the policy lets the chat make), whether it runs: `None`, or the answer
/// the model reads instead. Waits for the person where the policy asks for approval.
pub(super) async fn admit(
    run: &Run<'_>,
    principal: &Principal,
    policy: &ActivePolicy,
    calls: &[&Call],
) -> Result<Vec<Option<String>>, Stop> {
    let store = &run.services().chats.store;
    let chat = run.chat;
    let mut answers = vec![None; calls.len()];
    let mut asked: Vec<(usize, ToolApproval)> = Vec::new();
    let deadline_at = now_ms() + run.context.approval_timeout.as_millis() as i64;
    for (index, (call_id, tool, arguments)) in calls.iter().enumerate() {
        let plugin = run.services().runtime.loaded().tool(tool).map(|t| t.plugin.clone()).unwrap_or_default();
        match run.services().policy.attendance(policy, principal, &plugin, tool) {
            Attendance::Unattended => {}
            Attendance::Undecidable { rule } => {
                answers[index] = Some(format!(
                    "tool `{tool}` did not run: the tool policy's approval rules cannot be evaluated ({rule}); an admin must fix the policy"
                ));
            }
            Attendance::Ask { rule } => {
                if store.tool_approved_for_chat(&chat.id, tool).await? {
                    continue;
                }
                let new = NewApproval {
                    chat_id: &chat.id,
                    root_chat_id: &chat.root_chat_id,
                    owner_id: &chat.owner_id,
                    tool_call_id: call_id,
                    tool,
                    arguments,
                    rule: &rule,
                    deadline_at,
                };
                asked.push((index, store.request_approval(new).await?));
            }
        }
    }
    if asked.is_empty() {
        return Ok(answers);
    }
    let waiting: Vec<ToolApproval> =
        asked.iter().map(|(_, a)| a).filter(|a| a.status == ApprovalStatus::Pending).cloned().collect();
    if !waiting.is_empty() {
        tracing::info!(tools = ?waiting.iter().map(|a| &a.tool).collect::<Vec<_>>(), "tool calls wait for approval");
        announce_request(run, waiting).await?;
    }
    let ids: Vec<String> = asked.iter().map(|(_, a)| a.id.clone()).collect();
    let settled = wait_for_answers(run, &ids).await?;
    for ((index, _), approval) in asked.iter().zip(settled) {
        answers[*index] = answer_for_model(run, &approval).await?;
    }
    Ok(answers)
}

/// Tells the chat's subscribers and its owner's watch streams (here and on the other replicas)
/// which calls wait for an answer.
async fn announce_request(run: &Run<'_>, approvals: Vec<ToolApproval>) -> Result<(), StoreError> {
    let service = &run.services().chats;
    let channel = service.hub.channel(&run.chat.id);
    let mut guard = channel.lock().await;
    guard.emit(&service.store, EventBody::ApprovalRequest { approvals: approvals.clone() }).await?;
    let chat = service.store.chat(&run.chat.id).await?.unwrap_or_else(|| run.chat.clone());
    service.hub.notify(WatchEvent::ApprovalRequest { chat, approvals });
    Ok(())
}

/// Waits until none of the approvals is pending, expiring those whose deadline passes; returns
/// them as they ended, in the order of `ids`.
async fn wait_for_answers(run: &Run<'_>, ids: &[String]) -> Result<Vec<ToolApproval>, Stop> {
    let service = &run.services().chats;
    loop {
        // Registered before reading, so that an answer stored meanwhile is not missed.
        let answered = service.approval_answered.notified();
        tokio::pin!(answered);
        answered.as_mut().enable();
        let mut found = service.store.approvals(ids).await?;
        let mut current = Vec::with_capacity(ids.len());
        for id in ids {
            let position = found.iter().position(|a| a.id == *id).ok_or_else(|| {
                Stop::Failed("a tool call's approval disappeared while the turn waited for it".into())
            })?;
            current.push(found.swap_remove(position));
        }
        let now = now_ms();
        let mut expired = Vec::new();
        let mut answered_meanwhile = false;
        for approval in current.iter_mut().filter(|a| a.status == ApprovalStatus::Pending && a.deadline_at <= now) {
            match service.store.expire_approval(&approval.id).await? {
                Some(ended) => {
                    expired.push(ended.clone());
                    *approval = ended;
                }
                // Answered just before its deadline: read it again.
                None => answered_meanwhile = true,
            }
        }
        if !expired.is_empty() {
            announce_answers(service, &run.chat.id, expired).await?;
        }
        if answered_meanwhile {
            continue;
        }
        let next_deadline = current.iter().filter(|a| a.status == ApprovalStatus::Pending).map(|a| a.deadline_at).min();
        let Some(next_deadline) = next_deadline else { return Ok(current) };
        let until_deadline = Duration::from_millis((next_deadline - now).max(0) as u64);
        tokio::select! {
            _ = answered => {}
            _ = tokio::time::sleep(POLL.min(until_deadline)) => {}
        }
    }
}

/// What the model reads for an answered approval (`None`: the call runs).
async fn answer_for_model(run: &Run<'_>, approval: &ToolApproval) -> Result<Option<String>, StoreError> {
    let tool = &approval.tool;
    Ok(match approval.status {
        ApprovalStatus::Approved => {
            if approval.started_at.is_none() {
                run.services().chats.store.start_approved_call(&approval.id).await?;
            }
            None
        }
        ApprovalStatus::Denied => Some(match approval.reason.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
            Some(reason) => format!(
                "the person denied this call of `{tool}`, saying: {reason}\n(It did not run. Do not call it again unless they ask for it.)"
            ),
            None => format!(
                "the person denied this call of `{tool}`; it did not run. Do not call it again unless they ask for it."
            ),
        }),
        ApprovalStatus::Expired => Some(format!(
            "nobody approved this call of `{tool}` within {}, so it did not run; ask the person before trying again",
            spoken((approval.deadline_at - approval.created_at + 500) / 1000)
        )),
        ApprovalStatus::Cancelled | ApprovalStatus::Pending => {
            Some(format!("this call of `{tool}` was not approved before the turn ended; it did not run"))
        }
    })
}

/// A span of seconds as a person says it: "15 minutes", "90 seconds".
fn spoken(seconds: i64) -> String {
    let (amount, unit) = match seconds {
        s if s >= 3600 && s % 3600 == 0 => (s / 3600, "hour"),
        s if s >= 60 && s % 60 == 0 => (s / 60, "minute"),
        s => (s.max(0), "second"),
    };
    format!("{amount} {unit}{}", if amount == 1 { "" } else { "s" })
}

/// The turn ended (the person interrupted it) while calls waited: they will never run.
pub(super) async fn cancel_waiting(service: &ChatService, chat_id: &str) -> Result<(), StoreError> {
    let cancelled = service.store.cancel_pending_approvals(chat_id).await?;
    if !cancelled.is_empty() {
        announce_answers(service, chat_id, cancelled).await?;
    }
    Ok(())
}

/// Tells the chat's subscribers, here and on the other replicas, how approvals ended, and wakes
/// a step of this process waiting for them.
async fn announce_answers(
    service: &ChatService,
    chat_id: &str,
    approvals: Vec<ToolApproval>,
) -> Result<(), StoreError> {
    let channel = service.hub.channel(chat_id);
    let mut guard = channel.lock().await;
    guard.emit(&service.store, EventBody::ApprovalAnswered { approvals }).await?;
    service.approval_answered.notify_waiters();
    Ok(())
}

/// A person's answer to an approval request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Run this call.
    ApproveOnce,
    /// Run this call and, in this chat, every later call of the same tool without asking.
    ApproveForChat,
    /// Do not run it; the model reads the reason.
    Deny,
}

/// Why an answer was not taken.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    #[error("no approval `{0}` in this chat")]
    NotFound(String),
    #[error("this call was already answered ({0}); nothing changed")]
    AlreadyAnswered(ApprovalStatus),
    #[error("the reason is longer than {MAX_REASON_CHARS} characters; shorten it")]
    ReasonTooLong,
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ChatService {
    /// The calls of `chat` waiting for its owner's answer.
    pub async fn waiting_approvals(&self, chat: &Chat) -> Result<Vec<ToolApproval>, StoreError> {
        self.store.approvals_of_chat(&chat.id, None).await
    }

    /// Answers an approval of `chat` (whose owner the caller has checked `answered_by` is).
    /// Approved for the chat, the tool's other calls waiting in the chat are approved too.
    pub async fn answer_approval(
        &self,
        chat: &Chat,
        approval_id: &str,
        decision: Decision,
        reason: Option<&str>,
        answered_by: &str,
    ) -> Result<ToolApproval, AnswerError> {
        if reason.is_some_and(|r| r.chars().count() > MAX_REASON_CHARS) {
            return Err(AnswerError::ReasonTooLong);
        }
        let approval = self
            .store
            .approval(approval_id)
            .await?
            .filter(|a| a.chat_id == chat.id)
            .ok_or_else(|| AnswerError::NotFound(approval_id.to_string()))?;
        let (status, scope) = match decision {
            Decision::ApproveOnce => (ApprovalStatus::Approved, Some(ApprovalScope::Once)),
            Decision::ApproveForChat => (ApprovalStatus::Approved, Some(ApprovalScope::Chat)),
            Decision::Deny => (ApprovalStatus::Denied, None),
        };
        let reason = reason.filter(|_| status == ApprovalStatus::Denied);
        let Some(answered) = self.store.answer_approval(&approval.id, status, scope, reason, answered_by).await? else {
            let now = self.store.approval(approval_id).await?.map_or(approval.status, |a| a.status);
            return Err(AnswerError::AlreadyAnswered(now));
        };
        let mut ended = vec![answered.clone()];
        if scope == Some(ApprovalScope::Chat) {
            for other in
                self.store.approvals_of_chat(&chat.id, None).await?.into_iter().filter(|a| a.tool == answered.tool)
            {
                if let Some(also) = self.store.answer_approval(&other.id, status, scope, None, answered_by).await? {
                    ended.push(also);
                }
            }
        }
        tracing::info!(chat_id = %chat.id, tool = %answered.tool, decision = ?decision, "a tool call's approval was answered");
        announce_answers(self, &chat.id, ended).await?;
        Ok(answered)
    }
}
