//! Configuration of the gossip engine, with defaults sized for a directory
//! of about 10,000 relays (README "Design notes").

use crate::cut::CutRule;
use crate::descriptor::pow::DEFAULT_POW_DIFFICULTY;
use crate::error::ConfigError;
use crate::snapshot::{DEFAULT_EPOCH_LEN_S, MAX_SNAPSHOT_DESCRIPTORS};
use crate::store::StoreConfig;
use crate::wire::MAX_MESSAGE_LEN;

/// Per-peer inbound rate limits: two token buckets, one counting messages
/// and one counting bytes. A message that would overdraw either is dropped
/// and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained messages per second.
    pub messages_per_s: u64,
    /// Message burst (bucket size).
    pub message_burst: u64,
    /// Sustained bytes per second.
    pub bytes_per_s: u64,
    /// Byte burst (bucket size); at least one maximal message.
    pub byte_burst: u64,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self { messages_per_s: 50, message_burst: 200, bytes_per_s: 256 * 1024, byte_burst: 1024 * 1024 }
    }
}

/// Everything tunable about the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipConfig {
    /// Store limits.
    pub store: StoreConfig,
    /// Proof-of-work difficulty (bits) every descriptor must carry.
    pub pow_difficulty: u8,
    /// Epoch length in seconds (snapshots are cut at epoch boundaries).
    pub epoch_len_s: u64,
    /// Δ of the cut rule (spec §13.1): a descriptor is in the cut of epoch
    /// `e` only if published at least this long before `e` starts. `None`:
    /// a quarter of the epoch. Must be below the epoch length and well
    /// above dissemination time plus one cut exchange.
    pub cut_delay_s: Option<u64>,
    /// How many peers a new descriptor is pushed to.
    pub push_fanout: usize,
    /// Outbound gossip slots (peers we chose).
    pub max_outbound: usize,
    /// Outbound slots one /16 (IPv4) or /32 (IPv6) block may hold.
    pub max_outbound_per_block: usize,
    /// Inbound gossip slots (peers that chose us).
    pub max_inbound: usize,
    /// Inbound slots one network block may hold.
    pub max_inbound_per_block: usize,
    /// Short-lived connections opened for one anti-entropy exchange.
    pub max_transient: usize,
    /// Time between two anti-entropy rounds we start.
    pub anti_entropy_interval_ms: u64,
    /// How long an anti-entropy exchange (and its transient connection)
    /// may last; also the timeout of a pending dial.
    pub session_timeout_ms: u64,
    /// Time between two maintenance passes (expiry, peer slots).
    pub maintenance_interval_ms: u64,
    /// Most descriptor hashes remembered as seen.
    pub seen_capacity: usize,
    /// How long a hash stays in the seen-set.
    pub seen_ttl_ms: u64,
    /// Most messages queued for one peer (oldest pushes dropped first).
    pub peer_queue_capacity: usize,
    /// Per-peer inbound rate limits.
    pub rate_limit: RateLimit,
    /// Republish our descriptor after 1/`republish_divisor` of its lifetime.
    pub republish_divisor: u64,
    /// Most concurrent anti-entropy exchanges others started with us.
    pub max_sessions: usize,
    /// Most descriptors pushed in answer to one peer's digests.
    pub max_session_pushes: usize,
    /// Most relay ids wanted from one peer's digests.
    pub max_session_wants: usize,
    /// Most `Digest` messages we send in one exchange.
    pub max_digest_messages: usize,
    /// Cut a snapshot at each epoch boundary and serve `SnapshotRequest`s.
    /// Simulations of thousands of relays that never serve clients turn it
    /// off to save memory.
    pub serve_snapshots: bool,
    /// Most undelivered events kept (oldest dropped).
    pub event_capacity: usize,
    /// Reachability rule of the cut (spec §14.2): `None` admits every
    /// descriptor the time rule admits (simulations, unit tests); relays
    /// set production or test-network parameters.
    pub attest: Option<crate::attest::AttestParams>,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            store: StoreConfig::default(),
            pow_difficulty: DEFAULT_POW_DIFFICULTY,
            epoch_len_s: DEFAULT_EPOCH_LEN_S,
            cut_delay_s: None,
            push_fanout: 8,
            max_outbound: 8,
            max_outbound_per_block: 2,
            max_inbound: 32,
            max_inbound_per_block: 4,
            max_transient: 4,
            anti_entropy_interval_ms: 60_000,
            session_timeout_ms: 20_000,
            maintenance_interval_ms: 10_000,
            seen_capacity: 8_192,
            seen_ttl_ms: 10 * 60_000,
            peer_queue_capacity: 64,
            rate_limit: RateLimit::default(),
            republish_divisor: 3,
            max_sessions: 16,
            max_session_pushes: 1_024,
            max_session_wants: 1_024,
            max_digest_messages: 64,
            serve_snapshots: true,
            event_capacity: 1_024,
            attest: None,
        }
    }
}

impl GossipConfig {
    /// The cut rule these settings define.
    pub fn cut_rule(&self) -> CutRule {
        CutRule { epoch_len_s: self.epoch_len_s, delay_s: self.cut_delay_s.unwrap_or(self.epoch_len_s / 4) }
    }

    /// How often open cuts are reconciled: a tenth of the epoch, at least
    /// 100 ms, at most the anti-entropy interval.
    pub fn cut_sync_interval_ms(&self) -> u64 {
        let tenth = self.epoch_len_s.saturating_mul(100);
        tenth.min(self.anti_entropy_interval_ms).max(100)
    }

    /// Check every value is usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field, reason| Err(ConfigError { field, reason });
        if self.store.capacity == 0 || self.store.capacity > MAX_SNAPSHOT_DESCRIPTORS {
            return err("store.capacity", "must be between 1 and MAX_SNAPSHOT_DESCRIPTORS");
        }
        if self.epoch_len_s == 0 {
            return err("epoch_len_s", "must be positive");
        }
        if self.cut_delay_s.is_some_and(|d| d >= self.epoch_len_s) {
            return err("cut_delay_s", "must be below the epoch length");
        }
        if self.anti_entropy_interval_ms == 0 || self.maintenance_interval_ms == 0 {
            return err("anti_entropy_interval_ms/maintenance_interval_ms", "must be positive");
        }
        if self.session_timeout_ms == 0 {
            return err("session_timeout_ms", "must be positive");
        }
        if self.peer_queue_capacity == 0 || self.event_capacity == 0 {
            return err("peer_queue_capacity/event_capacity", "must be positive");
        }
        if self.republish_divisor < 2 {
            return err("republish_divisor", "must be at least 2 (republish before expiry)");
        }
        if self.rate_limit.byte_burst < MAX_MESSAGE_LEN as u64 || self.rate_limit.message_burst == 0 {
            return err("rate_limit", "bursts must admit one maximal message");
        }
        Ok(())
    }
}
