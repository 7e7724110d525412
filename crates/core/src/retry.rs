//! Retry with exponential backoff and full jitter (AWS Architecture Blog, "Exponential
//! Backoff and Jitter"): sleep a uniform random time in `[0, min(cap, base · 2^(n-1))]`
//! before retry `n`. Full jitter spreads competing retriers apart, which is the point under
//! hot-row conflict; a fixed or linear schedule makes them collide again in lockstep.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::error::{AttemptError, DeductError, RetryCause};

/// How often and how long to retry a conflicting attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in total, including the first. At least 1.
    pub max_attempts: u32,
    /// Backoff ceiling before the first retry. Must be non-zero so that the first retry has
    /// room to jitter (the seed article's first retry slept exactly 0).
    pub base_delay: Duration,
    /// Upper bound on any single backoff.
    pub max_delay: Duration,
    /// No new attempt starts once this much time has passed since the first.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 10,
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(200),
            max_elapsed: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// A policy that never retries.
    pub fn no_retry() -> Self {
        Self {
            max_attempts: 1,
            ..Self::default()
        }
    }

    /// The backoff ceiling before retry number `retry` (1-based): `min(max, base · 2^(retry-1))`.
    pub fn backoff_ceiling(&self, retry: u32) -> Duration {
        let exponent = retry.saturating_sub(1).min(30);
        self.base_delay
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay)
    }

    /// A full-jitter backoff: uniform in `[0, ceiling]` given a uniform sample in `[0, 1)`.
    pub fn backoff(&self, retry: u32, unit_sample: f64) -> Duration {
        self.backoff_ceiling(retry).mul_f64(unit_sample.clamp(0.0, 1.0))
    }

    /// Runs `attempt` until it succeeds, fails for good, or the policy or `deadline` is
    /// exhausted.
    ///
    /// `attempt` receives the 1-based attempt number and must re-read whatever it depends
    /// on each time: a retry that reuses the first read can never succeed. `on_retry` sees
    /// every retried cause (for metrics). No attempt starts, and no backoff runs, past
    /// `deadline` or `max_elapsed`. Returns the value and the number of attempts made;
    /// exhaustion returns [`exhausted`](crate::engine::exhausted): `Conflict` for contention,
    /// `Unavailable` for a database that could not be used.
    pub async fn run<T, F, Fut>(
        &self,
        deadline: Instant,
        mut on_retry: impl FnMut(RetryCause),
        mut attempt: F,
    ) -> Result<(T, u32), DeductError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        let started = Instant::now();
        let max_attempts = self.max_attempts.max(1);
        let mut made = 0u32;
        loop {
            made += 1;
            match attempt(made).await {
                Ok(value) => return Ok((value, made)),
                Err(AttemptError::Fail(error)) => return Err(error),
                Err(AttemptError::Retry(cause)) => {
                    on_retry(cause);
                    let delay = self.backoff(made, rand::random::<f64>());
                    let resume = Instant::now() + delay;
                    if made >= max_attempts || resume >= deadline || resume - started >= self.max_elapsed {
                        tracing::debug!(cause = cause.as_str(), attempts = made, "retries exhausted");
                        return Err(crate::engine::exhausted(cause, made));
                    }
                    tracing::trace!(cause = cause.as_str(), attempt = made, ?delay, "retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_from_a_nonzero_base_and_caps() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(2),
            max_delay: Duration::from_millis(20),
            max_elapsed: Duration::from_secs(1),
        };
        let ceilings: Vec<u128> = (1..=6).map(|n| policy.backoff_ceiling(n).as_millis()).collect();
        assert_eq!(ceilings, vec![2, 4, 8, 16, 20, 20]);
        assert_eq!(policy.backoff(1, 0.5), Duration::from_millis(1));
        assert_eq!(policy.backoff(40, 0.999_999).as_millis(), 19);
    }

    #[tokio::test]
    async fn run_counts_attempts_and_gives_up_with_conflict() {
        let policy = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_micros(10),
            max_delay: Duration::from_micros(50),
            max_elapsed: Duration::from_secs(5),
        };
        let mut seen = Vec::new();
        let far = Instant::now() + Duration::from_secs(60);
        let mut causes = 0;
        let outcome: Result<((), u32), _> = policy
            .run(
                far,
                |_| causes += 1,
                |n| {
                    seen.push(n);
                    async { Err(AttemptError::Retry(RetryCause::VersionMismatch)) }
                },
            )
            .await;
        assert_eq!(causes, 4);
        assert!(matches!(outcome, Err(DeductError::Conflict { attempts: 4 })));
        assert_eq!(seen, vec![1, 2, 3, 4]);

        let (value, attempts) = policy
            .run(
                far,
                |_| {},
                |n| async move {
                    if n < 3 {
                        Err(AttemptError::Retry(RetryCause::Deadlock))
                    } else {
                        Ok(n * 10)
                    }
                },
            )
            .await
            .unwrap();
        assert_eq!((value, attempts), (30, 3));

        // Lost connections that never come back are `Unavailable`, not `Conflict`.
        let outcome: Result<((), u32), _> = policy
            .run(
                far,
                |_| {},
                |_| async { Err(AttemptError::Retry(RetryCause::ConnectionLost)) },
            )
            .await;
        assert!(
            matches!(outcome, Err(DeductError::Unavailable { .. })),
            "{outcome:?}"
        );
    }

    #[tokio::test]
    async fn run_stops_at_the_deadline() {
        let policy = RetryPolicy {
            max_attempts: 1_000,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(5),
            max_elapsed: Duration::from_secs(60),
        };
        let started = Instant::now();
        let outcome: Result<((), u32), _> = policy
            .run(
                started + Duration::from_millis(40),
                |_| {},
                |_| async { Err(AttemptError::Retry(RetryCause::Deadlock)) },
            )
            .await;
        assert!(
            matches!(outcome, Err(DeductError::Conflict { .. })),
            "{outcome:?}"
        );
        assert!(started.elapsed() < Duration::from_millis(40) + Duration::from_millis(20));
    }

    #[tokio::test]
    async fn run_stops_at_the_time_budget() {
        let policy = RetryPolicy {
            max_attempts: 1_000,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(5),
            max_elapsed: Duration::from_millis(30),
        };
        let outcome: Result<((), u32), _> = policy
            .run(
                Instant::now() + Duration::from_secs(60),
                |_| {},
                |_| async { Err(AttemptError::Retry(RetryCause::VersionMismatch)) },
            )
            .await;
        let Err(DeductError::Conflict { attempts }) = outcome else {
            panic!("expected conflict")
        };
        // Each sleep is at most 5 ms and the budget 30 ms, so the budget, not the attempt
        // cap, must have ended the loop.
        assert!((1..1_000).contains(&attempts), "attempts = {attempts}");
    }
}
