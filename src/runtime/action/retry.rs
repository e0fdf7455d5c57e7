//! Exponential backoff between the attempts of an action.

use std::time::Duration;

/// How often and how patiently a failing action is retried: `attempts` runs in all, waiting
/// `base`, then `2 × base`, `4 × base`, … (never more than `max`) between them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The wait after the first failure.
    pub base: Duration,
    /// The longest wait between two attempts.
    pub max: Duration,
    /// Runs in all, the first included (at least 1).
    pub attempts: u32,
}

impl Default for RetryPolicy {
    /// 5 attempts, waiting 100 ms, 200 ms, 400 ms and 800 ms between them (at most 30 s).
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_millis(100),
            max: Duration::from_secs(30),
            attempts: 5,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `attempt` (from 1): `base × 2^(attempt − 1)`, capped at
    /// `max`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let policy = annals::action::RetryPolicy {
    ///     base: Duration::from_millis(100),
    ///     max: Duration::from_millis(300),
    ///     attempts: 4,
    /// };
    /// assert_eq!(policy.delay(1), Duration::from_millis(100));
    /// assert_eq!(policy.delay(2), Duration::from_millis(200));
    /// assert_eq!(policy.delay(3), Duration::from_millis(300));
    /// ```
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1_u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The number of attempts, at least 1.
    pub fn attempts(&self) -> u32 {
        self.attempts.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_then_stay_at_the_cap() {
        let policy = RetryPolicy {
            base: Duration::from_millis(10),
            max: Duration::from_secs(1),
            attempts: 100,
        };
        let delays: Vec<_> = (1..=9).map(|a| policy.delay(a).as_millis()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(policy.delay(64), Duration::from_secs(1));
        assert_eq!(policy.delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn zero_attempts_still_runs_once() {
        let policy = RetryPolicy {
            attempts: 0,
            ..RetryPolicy::default()
        };
        assert_eq!(policy.attempts(), 1);
    }
}
