//! When to try a failed model call again, and how long to wait first.

use std::time::Duration;

use rand::Rng;

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
    pub fn allows_another(&self, attempt: u32, kind: crate::llm::ErrorKind) -> bool {
        let limit = if kind == crate::llm::ErrorKind::Timeout { self.max_silent_attempts } else { self.max_attempts };
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
}
