//! The sans-IO gossip engine of one relay (README "Gossip", CONTRIBUTING.md P1).
//!
//! The engine owns the relay's [`Store`], its peer table and its timers, and
//! never touches a socket or a clock. A driver:
//!
//! 1. creates it with [`GossipEngine::new`] (own id, config, an RNG, the
//!    current [`Now`]);
//! 2. publishes our descriptor with [`GossipEngine::publish_own`] (and again
//!    whenever [`Event::RepublishDue`] comes out, or the descriptor changes);
//! 3. reports connections with [`GossipEngine::add_peer`] /
//!    [`GossipEngine::remove_peer`] / [`GossipEngine::connect_failed`];
//! 4. feeds every received message to [`GossipEngine::handle_message`] (or
//!    its bytes to [`GossipEngine::handle_encoded`]);
//! 5. after every call drains [`GossipEngine::poll_transmit`] (send each
//!    message to its peer) and [`GossipEngine::poll_event`] (dial, hang up,
//!    re-sign our descriptor);
//! 6. sleeps until [`GossipEngine::poll_timeout`] and then calls
//!    [`GossipEngine::handle_timeout`].
//!
//! What the engine does:
//!
//! - **Push.** A descriptor that verifies and is news to the store is pushed
//!   to `push_fanout` random gossip peers (not the one it came from). A
//!   bounded, time-expiring seen-set and the store's duplicate detection
//!   make sure nothing is forwarded twice; nothing that failed verification
//!   is ever stored or forwarded.
//! - **Anti-entropy.** Every `anti_entropy_interval_ms` the engine picks one
//!   partner uniformly from the *whole directory* (not only connected
//!   peers; [`Event::Connect`] asks the driver to dial it when needed) and
//!   runs the anti-entropy exchange (README "Anti-entropy"): digest roots first, bucket
//!   hashes only if the roots differ, entries only for differing buckets,
//!   then `Want`/`Push` in both directions.
//! - **Peer slots.** Outbound and inbound slots are capped in total and per
//!   network block ([`NetBlock`]); maintenance fills free outbound slots
//!   with relays from the store, block first.
//! - **Limits.** Per-peer inbound token buckets (messages and bytes),
//!   per-peer outgoing queues (oldest pushes dropped first), bounded events,
//!   sessions, seen-set, store. Every drop is counted in [`Stats`].

mod anti_entropy;
mod config;
mod cuts;
mod evidence;
mod maintenance;
mod peers;
mod rate;
mod seen;
mod serve;
mod statements;
mod stats;

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use rand_core::{CryptoRng, RngCore};

use lamina_crypto::keys::RelayId;

pub use self::config::{GossipConfig, RateLimit};
use self::cuts::Cuts;
pub use self::peers::NetBlock;
use self::peers::{PeerState, PeerTable};
use self::rate::Limiter;
use self::seen::SeenCache;
use self::serve::SnapshotFetch;
pub use self::statements::{MAX_CONFLICTS, MAX_SERVED_PROOFS, MAX_STATEMENTS, STATEMENT_EPOCHS};
pub use self::stats::{Rejections, Stats};
use crate::cut::{CutEvidence, NoEvidence};
use crate::descriptor::{Descriptor, DescriptorHash};
use crate::error::{ConfigError, PeerRejected, PublishError, WireError};
use crate::snapshot::Epoch;
use crate::store::{InsertOutcome, Precheck, Store};
use crate::verify::{Unverified, Verified};
use crate::wire::{self, Message, Push, MAX_PUSH};

/// The time as the driver sees it: a monotonic clock for timers and the
/// wall clock for descriptor validity windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Now {
    /// Monotonic milliseconds (any origin; never goes backwards).
    pub mono_ms: u64,
    /// Wall-clock unix seconds.
    pub unix_s: u64,
}

/// A connected peer: its relay id (authenticated by the link handshake) and
/// the socket address of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PeerId {
    /// The peer's relay id.
    pub relay: RelayId,
    /// The peer's address (its listen address for outbound connections).
    pub addr: SocketAddr,
}

/// How a connection came about; each kind has its own slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// We dialled it to fill a gossip slot.
    Outbound,
    /// It dialled us.
    Inbound,
    /// We dialled it for one anti-entropy exchange; it is hung up after
    /// `session_timeout_ms` and never receives pushes.
    Transient,
}

/// Why the engine asks for a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectPurpose {
    /// To fill an outbound gossip slot: add it as [`Direction::Outbound`].
    Gossip,
    /// For one anti-entropy exchange: add it as [`Direction::Transient`].
    AntiEntropy,
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Dial `peer`, then call `add_peer` (or `connect_failed`).
    Connect {
        /// Whom to dial.
        peer: PeerId,
        /// Which direction to report on success.
        purpose: ConnectPurpose,
    },
    /// Close the connection to `peer` (the engine already forgot it).
    Disconnect {
        /// Whom to hang up on.
        peer: PeerId,
    },
    /// Sign a fresh descriptor (higher sequence, new validity window) and
    /// hand it to `publish_own`. Repeats every minute until done.
    RepublishDue,
    /// A cut was frozen: sign an [`crate::statement::EpochStatement`] with
    /// these fields and hand it to [`GossipEngine::set_statement`]
    /// (spec §13.7).
    SignStatement {
        /// The epoch frozen.
        epoch: Epoch,
        /// Its root.
        root: [u8; 32],
        /// Its number of descriptors.
        count: u32,
        /// The root served for the epoch before (zeros if none).
        previous_root: [u8; 32],
    },
}

/// What [`GossipEngine::import`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Descriptors stored as news.
    pub accepted: usize,
    /// Duplicates and stale copies.
    pub ignored: usize,
    /// Descriptors rejected (verification, banned, store full).
    pub rejected: usize,
}

/// A dial the engine asked for.
#[derive(Debug, Clone, Copy)]
struct Pending {
    /// Why.
    purpose: ConnectPurpose,
    /// When to give up on it.
    deadline_ms: u64,
}

/// An anti-entropy exchange a peer started with us (we sent a `Summary`).
#[derive(Debug, Clone, Copy)]
struct InSession {
    /// When it closes.
    deadline_ms: u64,
    /// Descriptors we may still push to the peer in answer to its digests.
    pushes_left: usize,
    /// Ids we may still ask the peer for.
    wants_left: usize,
}

/// The engine's deadlines (monotonic milliseconds).
#[derive(Debug, Clone, Copy)]
struct Timers {
    /// Next anti-entropy round.
    next_round_ms: u64,
    /// Next maintenance pass.
    next_maintenance_ms: u64,
    /// Next epoch boundary.
    next_epoch_ms: u64,
    /// Next cut reconciliation tick.
    next_cut_sync_ms: u64,
    /// When to ask for a fresh own descriptor.
    republish_ms: Option<u64>,
}

/// How the engine classifies one offered descriptor.
enum Admitted {
    /// Verified and new: stored.
    New(Verified<Descriptor>),
    /// Duplicate or stale: nothing to do.
    Ignored,
    /// Rejected (counted by reason).
    Rejected,
}

/// Retry interval of [`Event::RepublishDue`] while the driver has not
/// published.
const REPUBLISH_RETRY_MS: u64 = 60_000;

/// The gossip engine. See the module documentation.
#[derive(Debug)]
pub struct GossipEngine<R> {
    /// Our relay id.
    own: RelayId,
    /// Configuration (validated).
    config: GossipConfig,
    /// Randomness for fan-out, partner and slot choices.
    rng: R,
    /// Verified descriptors.
    store: Store,
    /// Connected peers.
    peers: PeerTable,
    /// Peers with queued messages, in service order.
    ready: VecDeque<PeerId>,
    /// Recently processed descriptor hashes.
    seen: SeenCache,
    /// Events for the driver.
    events: VecDeque<Event>,
    /// Dials we asked for.
    pending: BTreeMap<PeerId, Pending>,
    /// Exchanges we started (by peer and scope), awaiting the partner's
    /// `Summary` or `InSync`: deadline.
    out_sessions: BTreeMap<(PeerId, Epoch), u64>,
    /// Exchanges peers started with us, by peer and scope.
    in_sessions: BTreeMap<(PeerId, Epoch), InSession>,
    /// The cuts of the previous, current and next epoch.
    cuts: Cuts,
    /// Extra evidence the cut rule asks for (spec §13.1).
    evidence: Box<dyn CutEvidence>,
    /// Recent verified reachability attestations (spec §14.2).
    attest_pool: evidence::EvidenceSet,
    /// A snapshot download we started.
    snapshot_fetch: Option<SnapshotFetch>,
    /// Other relays' epoch statements and proven conflicts (spec §13.8).
    statements: statements::StatementBook,
    /// Deadlines.
    timers: Timers,
    /// Counters.
    stats: Stats,
}

impl<R: RngCore + CryptoRng> GossipEngine<R> {
    /// A new engine for relay `own`, started at `now`.
    pub fn new(own: RelayId, config: GossipConfig, mut rng: R, now: Now) -> Result<Self, ConfigError> {
        config.validate()?;
        let phase = u64::try_from(uniform(&mut rng, usize::try_from(config.anti_entropy_interval_ms).unwrap_or(1)))
            .unwrap_or(0);
        let timers = Timers {
            next_round_ms: now.mono_ms.saturating_add(phase),
            next_maintenance_ms: now.mono_ms,
            next_epoch_ms: next_epoch_ms(now, config.epoch_len_s),
            next_cut_sync_ms: now.mono_ms,
            republish_ms: None,
        };
        let mut engine = Self {
            own,
            store: Store::new(config.store),
            seen: SeenCache::new(config.seen_capacity, config.seen_ttl_ms),
            config,
            rng,
            peers: PeerTable::default(),
            ready: VecDeque::new(),
            events: VecDeque::new(),
            pending: BTreeMap::new(),
            out_sessions: BTreeMap::new(),
            in_sessions: BTreeMap::new(),
            cuts: Cuts::new(),
            evidence: Box::new(NoEvidence),
            attest_pool: evidence::EvidenceSet::new(wire::LIVE, evidence::EVIDENCE_CAPACITY),
            snapshot_fetch: None,
            statements: statements::StatementBook::default(),
            timers,
            stats: Stats::default(),
        };
        engine.roll_cuts(now);
        Ok(engine)
    }

    /// Replace the extra evidence the cut rule asks for (the default asks
    /// for none). It must be a function of agreed state (spec §13.1).
    pub fn set_cut_evidence(&mut self, evidence: Box<dyn CutEvidence>) {
        self.evidence = evidence;
    }

    /// Our relay id.
    pub fn own_id(&self) -> RelayId {
        self.own
    }

    /// The configuration.
    pub fn config(&self) -> &GossipConfig {
        &self.config
    }

    /// The store (read-only: only the engine's rules may change it).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The store's anti-entropy digest root.
    pub fn digest_root(&mut self) -> [u8; 32] {
        self.store.digest_root()
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Connected peers and their directions.
    pub fn peers(&self) -> impl Iterator<Item = (PeerId, Direction)> + '_ {
        self.peers.peers.iter().map(|(id, p)| (*id, p.direction))
    }

    /// A connection to `peer` is up. Refused (and the driver should hang up)
    /// when slots of that direction, or of the peer's network block, are
    /// full, or when the peer is us or banned.
    pub fn add_peer(&mut self, now: Now, peer: PeerId, direction: Direction) -> Result<(), PeerRejected> {
        let pending = self.pending.remove(&peer);
        self.check_slot(&peer, direction)?;
        let limiter = Limiter::new(&self.config.rate_limit, now.mono_ms);
        let state = PeerState { direction, queue: VecDeque::new(), in_ready: false, limiter, since_ms: now.mono_ms };
        self.peers.peers.insert(peer, state);
        if pending.is_some_and(|p| p.purpose == ConnectPurpose::AntiEntropy) {
            self.begin_exchange(now, peer);
        }
        Ok(())
    }

    /// Start an anti-entropy exchange with the connected `peer` now, outside
    /// the periodic schedule: a relay that has just joined through a seed
    /// syncs with it at once instead of waiting for its first round.
    pub fn sync_with(&mut self, now: Now, peer: PeerId) {
        if self.peers.peers.contains_key(&peer) {
            self.begin_exchange(now, peer);
        }
    }

    /// The connection to `peer` is gone (idempotent).
    pub fn remove_peer(&mut self, peer: &PeerId) {
        self.peers.peers.remove(peer);
        self.pending.remove(peer);
        self.out_sessions.retain(|(p, _), _| p != peer);
        self.in_sessions.retain(|(p, _), _| p != peer);
        if self.snapshot_fetch.as_ref().is_some_and(|f| f.peer == *peer) {
            self.snapshot_fetch = None;
        }
    }

    /// Dialling `peer` (asked for by [`Event::Connect`]) failed.
    pub fn connect_failed(&mut self, peer: &PeerId) {
        self.pending.remove(peer);
    }

    /// Handle one message from a connected peer.
    pub fn handle_message(&mut self, now: Now, from: PeerId, msg: Message) {
        if self.gate(now, &from, msg.encoded_len()) {
            self.dispatch(now, from, msg);
        }
    }

    /// Handle one encoded message from a connected peer: rate limits apply
    /// to the bytes before decoding; a message that fails to decode is
    /// dropped whole and counted (by descriptor rejection reason when a
    /// carried descriptor was at fault).
    pub fn handle_encoded(&mut self, now: Now, from: PeerId, bytes: &[u8]) {
        if !self.gate(now, &from, bytes.len()) {
            return;
        }
        match Message::decode(bytes) {
            Ok(msg) => self.dispatch(now, from, msg),
            Err(err) => {
                self.stats.malformed_messages += 1;
                if let WireError::Descriptor { source, .. } = &err {
                    self.stats.descriptors_received += 1;
                    self.stats.rejected.record(source);
                }
            }
        }
    }

    /// The next message to send, and to whom.
    pub fn poll_transmit(&mut self) -> Option<(PeerId, Message)> {
        while let Some(peer) = self.ready.pop_front() {
            let Some(state) = self.peers.peers.get_mut(&peer) else { continue };
            state.in_ready = false;
            let Some(msg) = state.queue.pop_front() else { continue };
            if !state.queue.is_empty() {
                state.in_ready = true;
                self.ready.push_back(peer);
            }
            self.stats.messages_sent += 1;
            self.stats.bytes_sent += u64::try_from(msg.encoded_len()).unwrap_or(u64::MAX);
            return Some((peer, msg));
        }
        None
    }

    /// The next event for the driver.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Publish our own descriptor (encoded): verify it, store it, push it
    /// to `push_fanout` peers, and schedule [`Event::RepublishDue`] after
    /// 1/`republish_divisor` of its lifetime.
    ///
    /// The sequence number must grow across restarts too (relays should use
    /// a persisted counter or the publish time): a second descriptor with a
    /// used sequence is equivocation, and peers ban the identity.
    pub fn publish_own(&mut self, now: Now, bytes: &[u8]) -> Result<(), PublishError> {
        let d = Descriptor::decode(bytes).map_err(PublishError::Invalid)?;
        if d.claimed_id() != self.own {
            return Err(PublishError::NotOurs { found: d.claimed_id() });
        }
        let v = d.verify(now.unix_s, self.config.pow_difficulty).map_err(PublishError::Invalid)?;
        if let Some(current) = self.store.get(&self.own) {
            if v.sequence() <= current.sequence() {
                return Err(PublishError::SequenceNotIncreasing { current: current.sequence(), offered: v.sequence() });
            }
        }
        // If the store is full of others our descriptor is still pushed.
        let _ = self.store.insert(v.clone());
        let _ = self.offer_to_cuts(&v);
        self.seen.insert(v.hash(), now.mono_ms);
        let lifetime = v.expires().saturating_sub(v.published());
        let due_unix = v.published().saturating_add(lifetime / self.config.republish_divisor);
        let wait_ms = due_unix.saturating_sub(now.unix_s).saturating_mul(1000);
        self.timers.republish_ms = Some(now.mono_ms.saturating_add(wait_ms));
        self.forward(&[v], None);
        Ok(())
    }

    /// Add descriptors obtained out of band (a verified snapshot from seeds
    /// at start-up, a simulation's bootstrap). Each is verified like any
    /// gossip; none is forwarded.
    pub fn import(&mut self, now: Now, descriptors: impl IntoIterator<Item = Unverified<Descriptor>>) -> ImportReport {
        let mut report = ImportReport::default();
        for d in descriptors {
            match self.admit(now, d, false) {
                Admitted::New(_) => report.accepted += 1,
                Admitted::Ignored => report.ignored += 1,
                Admitted::Rejected => report.rejected += 1,
            }
        }
        report
    }

    /// Rate-limit gate: is `from` connected and within its limits?
    fn gate(&mut self, now: Now, from: &PeerId, len: usize) -> bool {
        let Some(peer) = self.peers.peers.get_mut(from) else {
            self.stats.unknown_peer += 1;
            return false;
        };
        if !peer.limiter.admit(now.mono_ms, len) {
            self.stats.rate_limited += 1;
            return false;
        }
        self.stats.messages_received += 1;
        self.stats.bytes_received += u64::try_from(len).unwrap_or(u64::MAX);
        true
    }

    /// Forward each message kind to its handler.
    fn dispatch(&mut self, now: Now, from: PeerId, msg: Message) {
        match msg {
            Message::Push(push) => self.handle_push(now, from, push),
            Message::DigestRequest(req) => self.handle_digest_request(now, from, &req),
            Message::Summary(summary) => self.handle_summary(now, from, &summary),
            Message::Digest(digest) => self.handle_digest(now, from, &digest),
            Message::Want(want) => self.handle_want(from, &want),
            Message::SnapshotRequest(req) => self.handle_snapshot_request(now, from, req),
            Message::SnapshotChunk(chunk) => self.handle_snapshot_chunk(now, from, chunk),
            Message::InSync(sync) => self.handle_in_sync(now, from, sync),
            Message::Attestations(batch) => self.handle_attestations(now, from, batch),
            Message::Statement(s) => self.handle_statement(now, from, s),
            Message::StatementConflict(proof) => self.handle_statement_conflict(from, proof),
            Message::Unavailable { .. } => {
                if self.snapshot_fetch.as_ref().is_some_and(|f| f.peer == from) {
                    self.snapshot_fetch = None;
                }
            }
        }
    }

    /// A `Push`: admit each descriptor, forward the new ones.
    fn handle_push(&mut self, now: Now, from: PeerId, push: Push) {
        let mut fresh = Vec::new();
        for d in push.descriptors {
            if let Admitted::New(v) = self.admit(now, d, true) {
                fresh.push(v);
            }
        }
        if !fresh.is_empty() {
            self.forward(&fresh, Some(from));
        }
    }

    /// Judge one offered descriptor: seen-set, store and cut prechecks,
    /// verification, store and cut inserts. Counts every outcome. Gossip
    /// (`remember`) records the hash in the seen-set; bulk imports do not,
    /// so that a snapshot of thousands of descriptors does not flush the
    /// set. A descriptor only an open cut wants (an older version the live
    /// store calls stale, or our own earlier one after a restart) enters
    /// that cut but is not news: it is not forwarded.
    fn admit(&mut self, now: Now, d: Unverified<Descriptor>, remember: bool) -> Admitted {
        self.stats.descriptors_received += 1;
        let hash = d.hash();
        if self.seen.contains(&hash, now.mono_ms) {
            self.stats.duplicates += 1;
            return Admitted::Ignored;
        }
        let id = d.claimed_id();
        let cut_wants = self.cuts_want(&d);
        let live = if id == self.own { None } else { Some(self.store.precheck(&id, d.claimed_sequence(), &hash)) };
        match live {
            Some(Precheck::Verify) => {}
            _ if cut_wants => {}
            None => {
                self.stats.rejected.own_id += 1;
                return Admitted::Rejected;
            }
            Some(Precheck::Duplicate) => {
                self.stats.duplicates += 1;
                self.remember(remember, hash, now);
                return Admitted::Ignored;
            }
            Some(Precheck::Stale { .. }) => {
                self.stats.rejected.stale += 1;
                self.remember(remember, hash, now);
                return Admitted::Ignored;
            }
            Some(Precheck::Banned) => {
                self.stats.rejected.banned += 1;
                return Admitted::Rejected;
            }
            Some(Precheck::Full) => {
                self.stats.rejected.store_full += 1;
                return Admitted::Rejected;
            }
        }
        self.remember(remember, hash, now);
        let v = match d.verify(now.unix_s, self.config.pow_difficulty) {
            Ok(v) => v,
            Err(err) => {
                self.stats.rejected.record(&err);
                return Admitted::Rejected;
            }
        };
        let outcome = if live == Some(Precheck::Verify) { self.store_verified(v.clone()) } else { Admitted::Ignored };
        let cut_equivocation = self.offer_to_cuts(&v);
        if self.store.is_banned(&id) || cut_equivocation.is_some() {
            self.propagate_ban(id);
        }
        outcome
    }

    /// Record `hash` in the seen-set if `remember`.
    fn remember(&mut self, remember: bool, hash: DescriptorHash, now: Now) {
        if remember {
            self.seen.insert(hash, now.mono_ms);
        }
    }

    /// Insert a verified descriptor and classify the outcome.
    fn store_verified(&mut self, v: Verified<Descriptor>) -> Admitted {
        match self.store.insert(v.clone()) {
            InsertOutcome::Inserted | InsertOutcome::Updated { .. } => {
                self.stats.accepted += 1;
                Admitted::New(v)
            }
            InsertOutcome::Duplicate => {
                self.stats.duplicates += 1;
                Admitted::Ignored
            }
            InsertOutcome::Stale { .. } => {
                self.stats.rejected.stale += 1;
                Admitted::Ignored
            }
            InsertOutcome::Equivocation => {
                self.stats.rejected.equivocation += 1;
                Admitted::Rejected
            }
            InsertOutcome::Banned => {
                self.stats.rejected.banned += 1;
                Admitted::Rejected
            }
            InsertOutcome::Full => {
                self.stats.rejected.store_full += 1;
                Admitted::Rejected
            }
        }
    }

    /// `push_fanout` gossip peers other than `except`, drawn uniformly (a
    /// partial Fisher-Yates shuffle): the targets of every push.
    fn push_targets(&mut self, except: Option<PeerId>) -> Vec<PeerId> {
        let mut targets = self.peers.gossip_peers();
        targets.retain(|p| Some(*p) != except);
        let k = self.config.push_fanout.min(targets.len());
        for i in 0..k {
            let j = i + uniform(&mut self.rng, targets.len() - i);
            targets.swap(i, j);
        }
        targets.truncate(k);
        targets
    }

    /// Push `fresh` descriptors to `push_fanout` random gossip peers other
    /// than `except`.
    fn forward(&mut self, fresh: &[Verified<Descriptor>], except: Option<PeerId>) {
        let targets = self.push_targets(except);
        for chunk in fresh.chunks(MAX_PUSH) {
            let msg = Message::Push(Push { descriptors: chunk.iter().map(Verified::to_unverified).collect() });
            for target in &targets {
                if self.enqueue(*target, msg.clone()) {
                    self.stats.forwarded += u64::try_from(chunk.len()).unwrap_or(u64::MAX);
                }
            }
        }
    }

    /// Queue `msg` for `peer`. When the queue is full the oldest queued
    /// `Push` is dropped to make room, or else `msg` itself. Returns whether
    /// `msg` was queued.
    fn enqueue(&mut self, peer: PeerId, msg: Message) -> bool {
        let cap = self.config.peer_queue_capacity;
        let Some(state) = self.peers.peers.get_mut(&peer) else { return false };
        if state.queue.len() >= cap {
            self.stats.queue_dropped += 1;
            match state.queue.iter().position(|m| matches!(m, Message::Push(_))) {
                Some(oldest_push) => {
                    state.queue.remove(oldest_push);
                }
                None => return false,
            }
        }
        state.queue.push_back(msg);
        if !state.in_ready {
            state.in_ready = true;
            self.ready.push_back(peer);
        }
        true
    }

    /// Queue an event, dropping the oldest when full.
    fn emit(&mut self, event: Event) {
        if self.events.len() >= self.config.event_capacity {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    /// Refuse `peer` if the slots of `direction` (total or its block) are
    /// full. Outbound dials still pending count as taken slots.
    fn check_slot(&self, peer: &PeerId, direction: Direction) -> Result<(), PeerRejected> {
        if peer.relay == self.own {
            return Err(PeerRejected::Ourselves);
        }
        if self.store.is_banned(&peer.relay) {
            return Err(PeerRejected::Banned(peer.relay));
        }
        if self.peers.peers.contains_key(peer) {
            return Err(PeerRejected::AlreadyConnected);
        }
        let c = &self.config;
        let (cap, per_block, name) = match direction {
            Direction::Outbound => (c.max_outbound, c.max_outbound_per_block, "outbound"),
            Direction::Inbound => (c.max_inbound, c.max_inbound_per_block, "inbound"),
            Direction::Transient => (c.max_transient, usize::MAX, "transient"),
        };
        let block = NetBlock::of(&peer.addr);
        let (mut total, mut in_block) = (self.peers.count(direction), self.peers.count_in_block(direction, block));
        if direction == Direction::Outbound {
            for (p, pend) in &self.pending {
                if pend.purpose == ConnectPurpose::Gossip {
                    total += 1;
                    in_block += usize::from(NetBlock::of(&p.addr) == block);
                }
            }
        }
        if total >= cap {
            return Err(PeerRejected::SlotsFull { direction: name, cap });
        }
        if in_block >= per_block {
            return Err(PeerRejected::BucketFull { addr: peer.addr, direction: name, cap: per_block });
        }
        Ok(())
    }

    /// Our current epoch.
    fn epoch(&self, now: Now) -> Epoch {
        Epoch::at(now.unix_s, self.config.epoch_len_s)
    }
}

/// A uniform index below `n` (0 when `n` ≤ 1), by rejection sampling with a
/// bounded number of draws.
pub(crate) fn uniform<R: RngCore + ?Sized>(rng: &mut R, n: usize) -> usize {
    let Ok(n64) = u64::try_from(n) else { return 0 };
    if n64 <= 1 {
        return 0;
    }
    // Accept draws below the largest multiple of n64 so every residue is
    // equally likely; after 64 unlucky draws (probability < 2^-64) accept
    // the slight bias.
    let limit = u64::MAX - u64::MAX % n64;
    let mut x = rng.next_u64();
    for _ in 0..64 {
        if x < limit {
            break;
        }
        x = rng.next_u64();
    }
    usize::try_from(x % n64).unwrap_or(0)
}

/// Milliseconds from `now` to the next epoch boundary, as a deadline.
fn next_epoch_ms(now: Now, epoch_len_s: u64) -> u64 {
    let epoch = Epoch::at(now.unix_s, epoch_len_s);
    let boundary = epoch.0.saturating_add(1).saturating_mul(epoch_len_s);
    now.mono_ms.saturating_add(boundary.saturating_sub(now.unix_s).saturating_mul(1000))
}
