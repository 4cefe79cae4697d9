//! The guard manager, pure (spec §10.5, after Tor's guard-spec, proposal
//! 271): a persistent sampled set of guards, filtered by the current
//! directory, with a few primary guards of which the first one that is up is
//! used. The first hop of a circuit never comes from outside the sample:
//! when every primary guard is down the caller waits and retries.
//!
//! Path bias (spec §10.6, path-spec "Path Bias Detection") is kept per
//! guard: circuits attempted through it and circuits that completed. A guard
//! whose success rate falls below the thresholds is warned about, then no
//! longer used (another sampled guard becomes primary).
//!
//! Time (milliseconds since the Unix epoch) and randomness are arguments.

use lamina_crypto::keys::RelayId;
use rand_core::RngCore;

use crate::path::{compatible, weighted, Position, RelayInfo};

/// One day in milliseconds.
const DAY_MS: u64 = 24 * 3600 * 1000;

/// Whether a relay may be sampled as a guard. For now every relay in the
/// verified directory is; this is the one place to plug in the Guard flag
/// computed from the agreed directory history.
pub fn guard_eligible(_relay: &RelayInfo) -> bool {
    true
}

/// Guard-manager parameters.
#[derive(Debug, Clone, Copy)]
pub struct GuardParams {
    /// Most guards in the sample.
    pub sample_max: usize,
    /// Primary guards (the first one up is used).
    pub primary: usize,
    /// Shortest guard lifetime.
    pub lifetime_min_ms: u64,
    /// Random extra lifetime, uniform in `[0, lifetime_jitter_ms)`.
    pub lifetime_jitter_ms: u64,
    /// A sampled guard missing from the directory this long is removed.
    pub unlisted_grace_ms: u64,
    /// A guard that failed is considered down this long, then retried.
    pub retry_ms: u64,
    /// Path bias: circuits attempted before rates are judged.
    pub bias_min_circuits: u32,
    /// Path bias: warn below this success rate (percent).
    pub bias_warn_pct: u32,
    /// Path bias: stop using the guard below this success rate (percent).
    pub bias_disable_pct: u32,
    /// Path bias: halve both counters past this many attempts (old
    /// results fade).
    pub bias_scale_at: u32,
}

impl Default for GuardParams {
    fn default() -> Self {
        Self {
            sample_max: 20,
            primary: 3,
            lifetime_min_ms: 90 * DAY_MS,
            lifetime_jitter_ms: 30 * DAY_MS,
            unlisted_grace_ms: 20 * DAY_MS,
            retry_ms: 60_000,
            bias_min_circuits: 20,
            bias_warn_pct: 50,
            bias_disable_pct: 30,
            bias_scale_at: 300,
        }
    }
}

/// Path-bias counters of one guard.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PathBias {
    /// Circuits whose CREATE reached the guard.
    pub attempts: u32,
    /// Of those, circuits that were fully built.
    pub successes: u32,
    /// Warned about (below the warning rate).
    pub warned: bool,
    /// No longer used (below the disabling rate).
    pub disabled: bool,
}

/// One sampled guard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampledGuard {
    /// Its identity.
    pub id: RelayId,
    /// When it was sampled (ms).
    pub added_ms: u64,
    /// When it leaves the sample (ms).
    pub expires_ms: u64,
    /// Since when it is missing from the directory (ms), if it is.
    pub unlisted_since_ms: Option<u64>,
    /// Path-bias counters.
    pub bias: PathBias,
    /// Down until this time (ms), after a failure; not persisted.
    pub down_until_ms: Option<u64>,
}

/// What the guard set says about the next circuit's first hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardChoice {
    /// Use this guard.
    Use(RelayId),
    /// Every primary guard is down: wait until then and retry.
    Wait {
        /// Earliest time (ms) a primary guard is tried again.
        until_ms: u64,
    },
    /// No usable guard in the sample at all (empty directory).
    NoGuard,
}

/// A path-bias event worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BiasVerdict {
    /// Nothing new.
    Fine,
    /// The guard's success rate fell below the warning threshold.
    Warn(RelayId, u32),
    /// The guard's success rate fell below the disabling threshold; it is
    /// no longer used.
    Disabled(RelayId, u32),
}

/// The sampled guard set.
#[derive(Debug, Clone)]
pub struct GuardSet {
    /// Parameters.
    params: GuardParams,
    /// Sampled guards, in sampling order (the primary guards are the first
    /// usable ones).
    sample: Vec<SampledGuard>,
    /// The directory's relays, as last seen.
    relays: Vec<RelayInfo>,
}

/// Header of the persisted format.
const HEADER: &str = "lamina-guards 1";

impl GuardSet {
    /// An empty set.
    pub fn new(params: GuardParams) -> Self {
        Self { params, sample: Vec::new(), relays: Vec::new() }
    }

    /// The sampled guards.
    pub fn sample(&self) -> &[SampledGuard] {
        &self.sample
    }

    /// Add `id` to the sample (legacy guard lists, tests), if there is room.
    pub fn add<R: RngCore>(&mut self, rng: &mut R, id: RelayId, now_ms: u64) {
        if self.sample.len() < self.params.sample_max && !self.sample.iter().any(|g| g.id == id) {
            let expires_ms = now_ms.saturating_add(self.lifetime(rng));
            let guard = SampledGuard {
                id,
                added_ms: now_ms,
                expires_ms,
                unlisted_since_ms: None,
                bias: PathBias::default(),
                down_until_ms: None,
            };
            self.sample.push(guard);
        }
    }

    /// A random lifetime.
    fn lifetime<R: RngCore>(&self, rng: &mut R) -> u64 {
        let jitter =
            if self.params.lifetime_jitter_ms == 0 { 0 } else { rng.next_u64() % self.params.lifetime_jitter_ms };
        self.params.lifetime_min_ms.saturating_add(jitter)
    }

    /// Take in a new directory: mark missing guards, drop expired ones and
    /// those missing past the grace time, and top the sample up from the
    /// eligible relays (guard-weighted, spec §14.7, distinct /16s and families).
    pub fn update<R: RngCore>(&mut self, rng: &mut R, relays: &[RelayInfo], now_ms: u64) {
        self.relays = relays.to_vec();
        let grace = self.params.unlisted_grace_ms;
        for g in &mut self.sample {
            let listed = relays.iter().any(|r| r.hop.relay_id == g.id);
            g.unlisted_since_ms = if listed { None } else { Some(g.unlisted_since_ms.unwrap_or(now_ms)) };
        }
        self.sample.retain(|g| {
            g.expires_ms > now_ms && g.unlisted_since_ms.is_none_or(|since| now_ms.saturating_sub(since) < grace)
        });
        // Top up while fewer than `primary` guards are usable.
        while self.usable().count() < self.params.primary && self.sample.len() < self.params.sample_max {
            let chosen: Vec<&RelayInfo> =
                self.usable().filter_map(|g| relays.iter().find(|r| r.hop.relay_id == g.id)).collect();
            let fresh: Vec<&RelayInfo> = relays
                .iter()
                .filter(|r| guard_eligible(r) && !self.sample.iter().any(|g| g.id == r.hop.relay_id))
                .collect();
            let spread: Vec<&RelayInfo> =
                fresh.iter().copied().filter(|r| chosen.iter().all(|c| compatible(c, r))).collect();
            let pick = weighted(rng, if spread.is_empty() { &fresh } else { &spread }, Position::Guard)
                .map(|r| r.hop.relay_id);
            match pick {
                Some(id) => self.add(rng, id, now_ms),
                None => break,
            }
        }
    }

    /// Sampled guards that may be used: listed and not disabled by path bias.
    fn usable(&self) -> impl Iterator<Item = &SampledGuard> {
        self.sample.iter().filter(|g| g.unlisted_since_ms.is_none() && !g.bias.disabled)
    }

    /// The primary guards, in order.
    pub fn primary(&self) -> Vec<RelayId> {
        self.usable().take(self.params.primary).map(|g| g.id).collect()
    }

    /// The guard for the next circuit: the first primary guard that is up.
    pub fn choose(&self, now_ms: u64) -> GuardChoice {
        let primary: Vec<&SampledGuard> = self.usable().take(self.params.primary).collect();
        if primary.is_empty() {
            return GuardChoice::NoGuard;
        }
        match primary.iter().find(|g| g.down_until_ms.is_none_or(|t| t <= now_ms)) {
            Some(g) => GuardChoice::Use(g.id),
            None => {
                GuardChoice::Wait { until_ms: primary.iter().filter_map(|g| g.down_until_ms).min().unwrap_or(now_ms) }
            }
        }
    }

    /// The primary guards that are up now, in order: the first is the one
    /// in use; the next ones only when no path fits the first (e.g. it is
    /// the only exit for the port).
    pub fn up_primaries(&self, now_ms: u64) -> Vec<RelayId> {
        self.usable()
            .take(self.params.primary)
            .filter(|g| g.down_until_ms.is_none_or(|t| t <= now_ms))
            .map(|g| g.id)
            .collect()
    }

    /// The relay info of a sampled guard, as last listed.
    pub fn info(&self, id: RelayId) -> Option<&RelayInfo> {
        self.relays.iter().find(|r| r.hop.relay_id == id)
    }

    /// The link to `id` failed (connect, handshake): it is down for a while.
    pub fn mark_down(&mut self, id: RelayId, now_ms: u64) {
        let retry = self.params.retry_ms;
        if let Some(g) = self.sample.iter_mut().find(|g| g.id == id) {
            g.down_until_ms = Some(now_ms.saturating_add(retry));
        }
    }

    /// The link to `id` works.
    pub fn mark_up(&mut self, id: RelayId) {
        if let Some(g) = self.sample.iter_mut().find(|g| g.id == id) {
            g.down_until_ms = None;
        }
    }

    /// Path bias: a circuit through `id` was attempted and `built` or not.
    /// A failure anywhere on the path counts against the guard only (the
    /// guard can kill any circuit it carries; honest later hops are never
    /// blamed for it).
    pub fn record_circuit(&mut self, id: RelayId, built: bool) -> BiasVerdict {
        let p = self.params;
        let Some(g) = self.sample.iter_mut().find(|g| g.id == id) else { return BiasVerdict::Fine };
        let b = &mut g.bias;
        b.attempts = b.attempts.saturating_add(1);
        if built {
            b.successes = b.successes.saturating_add(1);
        }
        if b.attempts >= p.bias_scale_at.max(2) {
            b.attempts /= 2;
            b.successes /= 2;
        }
        if b.attempts < p.bias_min_circuits.max(1) {
            return BiasVerdict::Fine;
        }
        let rate = u32::try_from(u64::from(b.successes) * 100 / u64::from(b.attempts)).unwrap_or(100);
        if rate < p.bias_disable_pct && !b.disabled {
            b.disabled = true;
            return BiasVerdict::Disabled(id, rate);
        }
        if rate < p.bias_warn_pct && !b.warned {
            b.warned = true;
            return BiasVerdict::Warn(id, rate);
        }
        BiasVerdict::Fine
    }

    /// The persisted form (text, one guard a line).
    pub fn to_text(&self) -> String {
        let mut out = format!("{HEADER}\n");
        for g in &self.sample {
            let unlisted = g.unlisted_since_ms.map_or_else(|| "-".to_string(), |t| t.to_string());
            out.push_str(&format!(
                "guard {} {} {} {} {} {} {}\n",
                g.id.to_hex(),
                g.added_ms,
                g.expires_ms,
                unlisted,
                g.bias.attempts,
                g.bias.successes,
                u8::from(g.bias.disabled)
            ));
        }
        out
    }

    /// Read the persisted form; bad lines are skipped, at most `sample_max`
    /// guards are kept. A legacy file (one hex relay id a line) is taken as
    /// a sample sampled now.
    pub fn from_text<R: RngCore>(params: GuardParams, text: &str, rng: &mut R, now_ms: u64) -> Self {
        let mut set = Self::new(params);
        for line in text.lines().take(params.sample_max.saturating_mul(4).max(64)) {
            if set.sample.len() >= params.sample_max {
                break;
            }
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                [id] => {
                    if let Some(id) = parse_id(id) {
                        set.add(rng, id, now_ms);
                    }
                }
                ["guard", id, added, expires, unlisted, attempts, successes, disabled] => {
                    let parsed = (|| {
                        Some(SampledGuard {
                            id: parse_id(id)?,
                            added_ms: added.parse().ok()?,
                            expires_ms: expires.parse().ok()?,
                            unlisted_since_ms: if *unlisted == "-" { None } else { Some(unlisted.parse().ok()?) },
                            bias: PathBias {
                                attempts: attempts.parse().ok()?,
                                successes: successes.parse().ok()?,
                                warned: false,
                                disabled: *disabled == "1",
                            },
                            down_until_ms: None,
                        })
                    })();
                    if let Some(g) = parsed {
                        if !set.sample.iter().any(|s| s.id == g.id) && g.bias.successes <= g.bias.attempts {
                            set.sample.push(g);
                        }
                    }
                }
                _ => {}
            }
        }
        set
    }
}

/// Parse a hex relay id.
pub fn parse_id(text: &str) -> Option<RelayId> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut id = [0u8; 32];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(RelayId(id))
}

#[cfg(test)]
mod tests {
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    use super::*;

    fn relay(i: u8) -> RelayInfo {
        crate::path::test_relay(i, &format!("127.{i}.0.1"), false)
    }

    fn relays(n: u8) -> Vec<RelayInfo> {
        (1..=n).map(relay).collect()
    }

    #[test]
    fn one_primary_guard_is_used_and_the_next_only_when_it_is_down() {
        let mut rng = ChaCha20Rng::from_seed([1; 32]);
        let mut set = GuardSet::new(GuardParams::default());
        set.update(&mut rng, &relays(10), 0);
        let primary = set.primary();
        assert_eq!(primary.len(), 3);
        assert_eq!(set.sample().len(), 3, "sampled only as needed");
        for _ in 0..10 {
            assert_eq!(set.choose(5), GuardChoice::Use(primary[0]), "one guard in use");
        }
        set.mark_down(primary[0], 10);
        assert_eq!(set.choose(11), GuardChoice::Use(primary[1]));
        assert_eq!(set.up_primaries(11), vec![primary[1], primary[2]]);
        set.mark_down(primary[1], 20);
        set.mark_down(primary[2], 30);
        // Every primary guard down: wait, never another relay.
        assert_eq!(set.choose(31), GuardChoice::Wait { until_ms: 10 + 60_000 });
        // After the retry time the first primary is tried again.
        assert_eq!(set.choose(10 + 60_000), GuardChoice::Use(primary[0]));
        set.mark_up(primary[1]);
        assert_eq!(set.choose(32), GuardChoice::Use(primary[1]));
    }

    #[test]
    fn guards_that_leave_the_directory_are_replaced_and_lifetimes_are_randomised() {
        let mut rng = ChaCha20Rng::from_seed([2; 32]);
        let params = GuardParams::default();
        let mut set = GuardSet::new(params);
        let all = relays(10);
        set.update(&mut rng, &all, 0);
        let gone = set.primary()[0];
        let without: Vec<RelayInfo> = all.iter().filter(|r| r.hop.relay_id != gone).cloned().collect();
        set.update(&mut rng, &without, 1_000);
        assert!(!set.primary().contains(&gone), "an unlisted guard is not used");
        assert_eq!(set.primary().len(), 3, "and is replaced");
        assert!(set.sample().iter().any(|g| g.id == gone), "kept in the sample for its grace time");
        // It comes back within the grace time: primary again, first in order.
        set.update(&mut rng, &all, 2_000);
        assert_eq!(set.primary()[0], gone);
        // Missing past the grace time: removed from the sample.
        set.update(&mut rng, &without, 3_000);
        set.update(&mut rng, &without, 3_000 + params.unlisted_grace_ms);
        assert!(!set.sample().iter().any(|g| g.id == gone));
        // Lifetimes: between the minimum and minimum + jitter, not all equal.
        let lifetimes: Vec<u64> = set.sample().iter().map(|g| g.expires_ms - g.added_ms).collect();
        assert!(lifetimes
            .iter()
            .all(|l| *l >= params.lifetime_min_ms && *l < params.lifetime_min_ms + params.lifetime_jitter_ms));
        assert!(lifetimes.windows(2).any(|w| w[0] != w[1]), "{lifetimes:?}");
        // Past its lifetime a guard leaves the sample.
        let first = set.sample()[0].clone();
        set.update(&mut rng, &all, first.expires_ms);
        assert!(!set.sample().iter().any(|g| g.id == first.id && g.added_ms == first.added_ms));
    }

    #[test]
    fn the_sample_persists_and_legacy_lists_are_read() {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        let mut set = GuardSet::new(GuardParams::default());
        set.update(&mut rng, &relays(6), 100);
        let _ = set.record_circuit(set.primary()[0], true);
        let text = set.to_text();
        let back = GuardSet::from_text(GuardParams::default(), &text, &mut rng, 200);
        assert_eq!(back.sample(), set.sample());
        let legacy = format!("{}\n{}\nnot hex\n", RelayId([4; 32]).to_hex(), RelayId([5; 32]).to_hex());
        let mut back = GuardSet::from_text(GuardParams::default(), &legacy, &mut rng, 200);
        back.update(&mut rng, &relays(6), 200);
        assert_eq!(&back.primary()[..2], &[RelayId([4; 32]), RelayId([5; 32])]);
        // Garbage and oversize files stay bounded.
        let junk = "guard zz 1 2 - 3 4 0\n".repeat(10_000) + &RelayId([1; 32]).to_hex().repeat(3);
        assert!(GuardSet::from_text(GuardParams::default(), &junk, &mut rng, 0).sample().is_empty());
    }

    #[test]
    fn a_guard_that_fails_most_circuits_is_warned_about_then_disabled() {
        let mut rng = ChaCha20Rng::from_seed([4; 32]);
        let mut set = GuardSet::new(GuardParams::default());
        set.update(&mut rng, &relays(8), 0);
        let bad = set.primary()[0];
        let mut verdicts = Vec::new();
        for i in 0..40 {
            // Two builds in five succeed (40 %), then one in ten.
            let built = if i < 20 { i % 5 < 2 } else { i % 10 == 0 };
            verdicts.push(set.record_circuit(bad, built));
        }
        assert!(verdicts.iter().any(|v| matches!(v, BiasVerdict::Warn(id, _) if *id == bad)), "{verdicts:?}");
        assert!(verdicts.iter().any(|v| matches!(v, BiasVerdict::Disabled(id, _) if *id == bad)), "{verdicts:?}");
        assert!(!set.primary().contains(&bad), "a disabled guard is not used");
        set.update(&mut rng, &relays(8), 1);
        assert_eq!(set.primary().len(), 3, "and another sampled guard takes its place");
        // An honest guard with ordinary failures is left alone.
        let good = set.primary()[0];
        for i in 0..200 {
            assert_eq!(set.record_circuit(good, i % 10 != 0), BiasVerdict::Fine);
        }
    }
}
