//! The per-connection submit rate limit (`NodeConfig::max_submits_per_sec`).

use tokio::time::Instant;

/// Submits per second of one connection: a bucket holding one second's
/// worth, refilled continuously.
pub(super) struct RateLimit {
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// A full bucket at `now`.
    pub(super) fn new(per_sec: u32, now: Instant) -> RateLimit {
        RateLimit { per_sec: f64::from(per_sec), tokens: f64::from(per_sec), last: now }
    }

    /// Submits allowed per second.
    pub(super) fn per_sec(&self) -> f64 {
        self.per_sec
    }

    /// Takes one submit's token; false when the bucket is empty.
    pub(super) fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.per_sec);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
