//! When to try a failed model call again, and how long to wait first.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::BoxStream;
use rand::Rng;

use super::{ErrorKind, LlmError, ModelRequest, Provider, StreamEvent};

/// Exponential backoff with jitter, bounded in attempts.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Calls in all, the first included.
    pub max_attempts: u32,
    /// Calls in all when the provider keeps sending nothing at all (first-byte timeouts): each
    /// costs the whole timeout, so fewer are made.
    pub max_silent_attempts: u32,
    /// The wait after the first failure; it doubles with each attempt.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

/// A provider asking for a longer wait than this is not waited for: the turn fails instead.
pub const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(600);

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 8,
            max_silent_attempts: 3,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// Whether another call is made after `attempt` calls that ended in `kind`.
    pub fn allows_another(&self, attempt: u32, kind: ErrorKind) -> bool {
        let limit = if kind == ErrorKind::Timeout { self.max_silent_attempts } else { self.max_attempts };
        attempt < limit
    }

    /// The wait before attempt `failed + 1`, after `failed` failures. A provider's
    /// `retry-after` is honoured as given; otherwise the backoff is drawn from the upper half of
    /// `base * 2^(failed-1)` (capped), so that many chats hit by the same outage spread out.
    pub fn delay(&self, failed: u32, retry_after: Option<Duration>) -> Duration {
        if let Some(wait) = retry_after {
            return wait;
        }
        let exponent = failed.saturating_sub(1).min(30);
        let ceiling = self.base_delay.saturating_mul(1 << exponent).min(self.max_delay);
        let factor = rand::rng().random_range(0.5..=1.0);
        ceiling.mul_f64(factor)
    }
}

/// What a model call that is tried again on failure yields, besides its events.
#[derive(Debug)]
pub enum Attempted {
    /// An event of the attempt under way.
    Event(StreamEvent),
    /// Attempt `attempt` failed with `error`; the next starts after `delay`. When
    /// `discarded_output`, what the failed attempt streamed is void (the next starts over).
    Retrying { attempt: u32, delay: Duration, error: LlmError, discarded_output: bool },
}

/// The call was given up on after `attempts` calls; `retryable` when it failed of a kind worth
/// retrying and ran out of attempts (or was asked to wait too long).
#[derive(Debug)]
pub struct GaveUp {
    pub error: LlmError,
    pub attempts: u32,
    pub retryable: bool,
}

/// Streams a model call, calling again after failures worth retrying, with backoff. A call cut
/// off after it streamed output is not repeated (what arrived stands), since the model would
/// answer differently; any other retryable failure is, and its output is discarded. The stream
/// ends after the successful attempt's events, or with one [`GaveUp`]. Dropping it (when the
/// chat is stopped) cancels the call and any wait.
pub fn stream_with_retry(
    client: Arc<dyn Provider>,
    request: ModelRequest,
    policy: RetryPolicy,
) -> BoxStream<'static, Result<Attempted, GaveUp>> {
    let calls = Calls { client, request, policy, attempt: 1, current: None, had_output: false, wait: None };
    futures::stream::unfold(Some(calls), |calls| async move {
        let mut calls = calls?;
        if let Some(delay) = calls.wait.take() {
            tokio::time::sleep(delay).await;
            calls.attempt += 1;
            calls.current = None;
        }
        let current = match &mut calls.current {
            Some(current) => current,
            none => {
                calls.had_output = false;
                none.insert(calls.client.stream(calls.request.clone()))
            }
        };
        match current.next().await {
            None => None,
            Some(Ok(event)) => {
                calls.had_output |= is_output(&event);
                Some((Ok(Attempted::Event(event)), Some(calls)))
            }
            Some(Err(error)) => {
                let retryable = error.kind.retryable() && !(error.kind == ErrorKind::Dropped && calls.had_output);
                let delay = calls.policy.delay(calls.attempt, error.retry_after);
                if !retryable || !calls.policy.allows_another(calls.attempt, error.kind) || delay > LONGEST_RETRY_AFTER {
                    let gave_up = GaveUp { error, attempts: calls.attempt, retryable };
                    return Some((Err(gave_up), None));
                }
                tracing::warn!(attempt = calls.attempt, delay_ms = delay.as_millis() as u64, error = %error, "model call failed; retrying");
                calls.wait = Some(delay);
                let discarded_output = calls.had_output;
                Some((Ok(Attempted::Retrying { attempt: calls.attempt, delay, error, discarded_output }), Some(calls)))
            }
        }
    })
    .boxed()
}

/// The state of [`stream_with_retry`] between its items.
struct Calls {
    client: Arc<dyn Provider>,
    request: ModelRequest,
    policy: RetryPolicy,
    /// The attempt under way (or about to start), from 1.
    attempt: u32,
    current: Option<BoxStream<'static, Result<StreamEvent, LlmError>>>,
    /// Whether the attempt under way has streamed anything a client shows.
    had_output: bool,
    /// The wait before the next attempt, after a failed one.
    wait: Option<Duration>,
}

/// Whether an event is output that a client shows (and a repeat would contradict).
fn is_output(event: &StreamEvent) -> bool {
    matches!(
        event,
        StreamEvent::Text(_)
            | StreamEvent::Reasoning(_)
            | StreamEvent::RedactedReasoning(_)
            | StreamEvent::ToolCall { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_one_second_up_to_a_minute_with_jitter() {
        let policy = RetryPolicy::default();
        for (failed, ceiling) in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (20, 60.0)] {
            for _ in 0..50 {
                let delay = policy.delay(failed, None).as_secs_f64();
                assert!(delay >= ceiling / 2.0 && delay <= ceiling, "attempt {failed}: {delay}");
            }
        }
        assert_eq!(policy.delay(1, Some(Duration::from_secs(7))), Duration::from_secs(7));
    }

    /// Answers each call with the next script: events, then perhaps an error.
    struct Scripted(std::sync::Mutex<Vec<Vec<Result<StreamEvent, LlmError>>>>);

    impl Provider for Scripted {
        fn stream(&self, _: ModelRequest) -> BoxStream<'static, Result<StreamEvent, LlmError>> {
            let mut scripts = self.0.lock().unwrap();
            let script = if scripts.is_empty() { Vec::new() } else { scripts.remove(0) };
            futures::stream::iter(script).boxed()
        }
    }

    fn quick() -> RetryPolicy {
        RetryPolicy {
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            ..RetryPolicy::default()
        }
    }

    async fn run(scripts: Vec<Vec<Result<StreamEvent, LlmError>>>, policy: RetryPolicy) -> Vec<String> {
        let client = Arc::new(Scripted(std::sync::Mutex::new(scripts)));
        let items: Vec<_> = stream_with_retry(client, ModelRequest::default(), policy).collect().await;
        items
            .into_iter()
            .map(|item| match item {
                Ok(Attempted::Event(StreamEvent::Text(text))) => format!("text {text}"),
                Ok(Attempted::Event(other)) => format!("{other:?}"),
                Ok(Attempted::Retrying { attempt, discarded_output, error, .. }) => {
                    format!("retry {attempt} {:?} discarded={discarded_output}", error.kind)
                }
                Err(gave_up) => format!(
                    "gave up {:?} after {} retryable={}",
                    gave_up.error.kind, gave_up.attempts, gave_up.retryable
                ),
            })
            .collect()
    }

    fn text(text: &str) -> Result<StreamEvent, LlmError> {
        Ok(StreamEvent::Text(text.into()))
    }

    #[tokio::test]
    async fn a_failed_attempt_is_retried_and_its_output_discarded() {
        let scripts = vec![vec![text("half"), Err(LlmError::new(ErrorKind::Server, "boom"))], vec![text("whole")]];
        assert_eq!(run(scripts, quick()).await, ["text half", "retry 1 Server discarded=true", "text whole"]);
    }

    #[tokio::test]
    async fn a_connection_cut_after_output_is_not_repeated() {
        let scripts = vec![vec![text("kept"), Err(LlmError::new(ErrorKind::Dropped, "cut"))], vec![text("again")]];
        assert_eq!(run(scripts, quick()).await, ["text kept", "gave up Dropped after 1 retryable=false"]);
    }

    #[tokio::test]
    async fn a_silent_provider_gets_fewer_attempts_and_a_refusal_none() {
        let silent = || vec![Err(LlmError::new(ErrorKind::Timeout, "nothing"))];
        let policy = RetryPolicy { max_silent_attempts: 2, ..quick() };
        assert_eq!(
            run(vec![silent(), silent(), silent()], policy).await,
            ["retry 1 Timeout discarded=false", "gave up Timeout after 2 retryable=true"]
        );
        let refused = vec![vec![Err(LlmError::new(ErrorKind::ContextTooLong, "too long"))]];
        assert_eq!(run(refused, quick()).await, ["gave up ContextTooLong after 1 retryable=false"]);
    }
}
