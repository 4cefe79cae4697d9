//! Token buckets for per-peer inbound rate limits.
//!
//! A bucket holds up to `burst` tokens and refills at `rate` tokens per
//! second. Levels are kept in thousandths of a token so that refill per
//! millisecond is exact integer arithmetic; everything saturates.

use super::config::RateLimit;

/// One token bucket on the engine's monotonic millisecond clock.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    /// Capacity in milli-tokens.
    cap_milli: u64,
    /// Refill in milli-tokens per millisecond (= tokens per second).
    rate: u64,
    /// Current level in milli-tokens.
    level_milli: u64,
    /// Time of the last refill.
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket of `burst` tokens refilling at `rate_per_s`.
    pub(crate) fn new(burst: u64, rate_per_s: u64, now_ms: u64) -> Self {
        let cap_milli = burst.saturating_mul(1000);
        Self { cap_milli, rate: rate_per_s, level_milli: cap_milli, last_ms: now_ms }
    }

    /// Add the tokens earned since the last refill.
    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        self.level_milli = self.level_milli.saturating_add(elapsed.saturating_mul(self.rate)).min(self.cap_milli);
    }

    /// Whether `amount` tokens are available (after refilling).
    fn has(&mut self, now_ms: u64, amount: u64) -> bool {
        self.refill(now_ms);
        self.level_milli >= amount.saturating_mul(1000)
    }

    /// Take `amount` tokens (caller checked [`TokenBucket::has`]).
    fn take(&mut self, amount: u64) {
        self.level_milli = self.level_milli.saturating_sub(amount.saturating_mul(1000));
    }
}

/// The pair of buckets guarding one peer.
#[derive(Debug, Clone)]
pub(crate) struct Limiter {
    /// Messages.
    messages: TokenBucket,
    /// Bytes.
    bytes: TokenBucket,
}

impl Limiter {
    /// Full buckets per `limit`.
    pub(crate) fn new(limit: &RateLimit, now_ms: u64) -> Self {
        Self {
            messages: TokenBucket::new(limit.message_burst, limit.messages_per_s, now_ms),
            bytes: TokenBucket::new(limit.byte_burst, limit.bytes_per_s, now_ms),
        }
    }

    /// Admit one message of `len` bytes if both buckets allow it; a refused
    /// message consumes nothing.
    pub(crate) fn admit(&mut self, now_ms: u64, len: usize) -> bool {
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        if self.messages.has(now_ms, 1) && self.bytes.has(now_ms, len) {
            self.messages.take(1);
            self.bytes.take(len);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A burst passes, the next message is refused, and time refills.
    #[test]
    fn burst_then_refill() {
        let limit = RateLimit { messages_per_s: 10, message_burst: 3, bytes_per_s: 1_000_000, byte_burst: 1_000_000 };
        let mut l = Limiter::new(&limit, 0);
        assert!(l.admit(0, 10));
        assert!(l.admit(0, 10));
        assert!(l.admit(0, 10));
        assert!(!l.admit(0, 10));
        // 10 msg/s: one token per 100 ms.
        assert!(!l.admit(99, 10));
        assert!(l.admit(100, 10));
    }

    /// The byte bucket refuses a message too large for what is left, and
    /// the refusal does not cost a message token.
    #[test]
    fn bytes_are_limited_independently() {
        let limit = RateLimit { messages_per_s: 1, message_burst: 2, bytes_per_s: 100, byte_burst: 1000 };
        let mut l = Limiter::new(&limit, 0);
        assert!(l.admit(0, 900));
        assert!(!l.admit(0, 200));
        assert!(l.admit(0, 100));
        assert!(!l.admit(0, 1));
    }
}
