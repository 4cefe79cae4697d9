//! The relay's directory driver (spec §2.6, §9, §13):
//! one task owns the sans-IO [`GossipEngine`]; link tasks hand it the
//! directory messages they reassemble; it sends the engine's messages back
//! as DIRECTORY cells, dials the peers the engine asks for, signs and
//! republishes our descriptor, answers clients' snapshot requests, and
//! persists what it knows so a restart does not start from nothing.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lamina_crypto::keys::RelayId;
use lamina_directory::statement::EpochStatement;
use lamina_directory::wire::SnapshotRequest;
use lamina_directory::{
    ConnectPurpose, Descriptor, DescriptorFields, Direction, Event, ExitSummary, GossipConfig, GossipEngine, Message,
    Now, PeerId, Seed,
};
use lamina_proto::circuit::relay::LinkId;
use lamina_proto::dirlink::fragment;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

pub use super::cmd::DirCmd;
use super::link::{connect_relay, connect_seed};
use super::prober::Prober;
use super::registry::KnownRelay;
use super::registry::RelayContext;

/// Capacity of the directory task's inbox.
pub const DIR_INBOX: usize = 1024;
/// Lifetime of our descriptor.
const DESCRIPTOR_LIFETIME_S: u64 = 12 * 3600;
/// How often the store is written to disk.
const PERSIST_EVERY: Duration = Duration::from_secs(60);
/// Most bytes of persisted state read back.
const MAX_STATE_BYTES: u64 = 16 * 1024 * 1024;

/// What the directory task needs to know about this relay.
#[derive(Debug, Clone)]
pub struct DirSettings {
    /// Engine tunables (difficulty, epoch length, slots…).
    pub gossip: GossipConfig,
    /// Relays to join through (dialled with `XX`: keys unknown; a pinned
    /// seed must prove its relay id).
    pub seeds: Vec<Seed>,
    /// Our advertised listen address.
    pub advertised: SocketAddr,
    /// Advertised bandwidth (KB/s).
    pub bandwidth_kbps: u32,
    /// Our exit-policy summary.
    pub exit: ExitSummary,
    /// Declared family.
    pub family: Vec<RelayId>,
    /// Where to persist known descriptors (`None`: not persisted).
    pub state_file: Option<PathBuf>,
}

/// Wall-clock unix seconds (drivers may read clocks; cores may not).
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The directory task.
pub struct DirectoryTask {
    /// Shared relay state.
    ctx: Arc<RelayContext>,
    /// Settings.
    settings: DirSettings,
    /// The sans-IO engine.
    engine: GossipEngine<ChaCha20Rng>,
    /// Monotonic origin of `Now::mono_ms`.
    origin: Instant,
    /// Peers the engine knows, by relay.
    peers: HashMap<RelayId, PeerId>,
    /// Sequence number of our last descriptor.
    sequence: u64,
    /// Randomness for proof of work.
    rng: ChaCha20Rng,
    /// Whether the "Bootstrapped 100%" line was logged.
    bootstrapped: bool,
    /// The reachability prober (when the cut asks for attestations).
    prober: Option<Prober>,
}

impl std::fmt::Debug for DirectoryTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirectoryTask").field("peers", &self.peers.len()).finish_non_exhaustive()
    }
}

impl DirectoryTask {
    /// Create the task: build the engine, load persisted descriptors, and
    /// publish our own descriptor.
    pub fn new(ctx: Arc<RelayContext>, settings: DirSettings) -> Result<Self, String> {
        let origin = Instant::now();
        let now = Now { mono_ms: 0, unix_s: unix_now() };
        let seed = ChaCha20Rng::from_rng(rand_core::OsRng).map_err(|e| e.to_string())?;
        let rng = ChaCha20Rng::from_rng(rand_core::OsRng).map_err(|e| e.to_string())?;
        let engine = GossipEngine::new(ctx.relay_id, settings.gossip.clone(), seed, now).map_err(|e| e.to_string())?;
        let prober = settings.gossip.attest.map(|p| Prober::new(ctx.relay_id, p));
        let mut task = Self {
            ctx,
            settings,
            engine,
            origin,
            peers: HashMap::new(),
            sequence: 0,
            rng,
            bootstrapped: false,
            prober,
        };
        task.load_state();
        task.publish_own()?;
        info!("Bootstrapped 50%: descriptor signed and published");
        Ok(task)
    }

    /// Run until shutdown.
    pub async fn run(mut self, mut inbox: mpsc::Receiver<DirCmd>) {
        let mut shutdown = self.ctx.shutdown.clone();
        for seed in self.settings.seeds.clone() {
            self.dial_seed(seed);
        }
        let mut last_persist = Instant::now();
        loop {
            let wait = self.engine.poll_timeout().map_or(Duration::from_secs(1), |at| {
                Duration::from_millis(at.saturating_sub(self.now().mono_ms)).min(Duration::from_secs(1))
            });
            tokio::select! {
                cmd = inbox.recv() => match cmd {
                    Some(cmd) => self.handle_cmd(cmd),
                    None => break,
                },
                () = tokio::time::sleep(wait) => {
                    let now = self.now();
                    self.engine.handle_timeout(now);
                }
                _ = shutdown.changed() => break,
            }
            self.drain().await;
            self.probe();
            if last_persist.elapsed() >= PERSIST_EVERY {
                self.save_state();
                last_persist = Instant::now();
            }
        }
        self.save_state();
        info!("directory stopped");
    }

    /// Start the reachability probes that are due (spec §14.2).
    fn probe(&mut self) {
        let now = self.now();
        let Some(prober) = self.prober.as_mut() else { return };
        let store = self.engine.store();
        prober.tick(&self.ctx, store.len(), store.iter().map(|v| &**v), now.unix_s, &mut self.rng);
    }

    /// A probe finished: sign and gossip the attestation if it succeeded.
    fn probed(&mut self, task: &lamina_directory::attest::ProbeTask, reached: bool) {
        let now = self.now();
        let epoch = lamina_directory::Epoch::at(now.unix_s, self.settings.gossip.epoch_len_s).0;
        let Some(prober) = self.prober.as_mut() else { return };
        if let Some(attestation) = prober.on_result(task, reached, now.unix_s, epoch, &self.ctx.keys.identity) {
            self.engine.add_attestation(attestation);
        }
    }

    /// The current time for the engine.
    fn now(&self) -> Now {
        let mono_ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        Now { mono_ms, unix_s: unix_now() }
    }

    /// Sign and publish a fresh descriptor of ours (spec §9). The sequence
    /// number is the publish time (or one more than the last), so it grows
    /// across restarts without persisted state.
    fn publish_own(&mut self) -> Result<(), String> {
        let now = self.now();
        self.sequence = now.unix_s.max(self.sequence.saturating_add(1));
        let fields = DescriptorFields {
            onion_key: self.ctx.onion_public(),
            link_key: self.ctx.keys.link.link_public(),
            sequence: self.sequence,
            published: now.unix_s,
            expires: now.unix_s + DESCRIPTOR_LIFETIME_S,
            bandwidth_kbps: self.settings.bandwidth_kbps,
            exit: self.settings.exit.clone(),
            addresses: vec![self.settings.advertised],
            family: self.settings.family.clone(),
        };
        let difficulty = self.settings.gossip.pow_difficulty;
        let unverified = Descriptor::sign_with_new_work(&self.ctx.keys.identity, fields, difficulty, &mut self.rng)
            .map_err(|e| format!("cannot sign our descriptor: {e}"))?;
        self.engine
            .publish_own(now, unverified.as_bytes())
            .map_err(|e| format!("cannot publish our descriptor: {e}"))?;
        self.ctx.metrics.directory_relays.set(self.engine.store().len() as u64);
        debug!(sequence = self.sequence, "published our descriptor");
        Ok(())
    }

    /// One command.
    fn handle_cmd(&mut self, cmd: DirCmd) {
        let now = self.now();
        match cmd {
            DirCmd::Message { link, relay: Some(relay), addr, bytes } => {
                let peer = self.peer_for(now, relay, addr, false);
                match peer {
                    Some(peer) => self.engine.handle_encoded(now, peer, &bytes),
                    None => self.serve_anonymous(now, link, &bytes),
                }
            }
            DirCmd::Message { link, relay: None, bytes, .. } => self.serve_anonymous(now, link, &bytes),
            DirCmd::LinkUp { relay, addr, outbound } => {
                // Sync with relays we dialled (seeds above all) right away.
                if let (Some(peer), true) = (self.peer_for(now, relay, addr, outbound), outbound) {
                    self.engine.sync_with(now, peer);
                }
            }
            DirCmd::LinkDown { relay } => {
                if let Some(peer) = self.peers.remove(&relay) {
                    self.engine.remove_peer(&peer);
                }
            }
            DirCmd::Probed { task, reached } => self.probed(&task, reached),
            DirCmd::Republish => {
                if let Err(e) = self.publish_own() {
                    warn!("{e}");
                }
            }
            DirCmd::Dialed { peer, purpose, ok } => {
                if !ok {
                    self.engine.connect_failed(&peer);
                    return;
                }
                // Already a peer over an existing link: run the exchange
                // there (in a small network nearly every partner is).
                if let Some(existing) = self.peers.get(&peer.relay).copied() {
                    self.engine.connect_failed(&peer);
                    if purpose == ConnectPurpose::AntiEntropy {
                        self.engine.sync_with(now, existing);
                    }
                    return;
                }
                let direction = match purpose {
                    ConnectPurpose::Gossip => Direction::Outbound,
                    ConnectPurpose::AntiEntropy => Direction::Transient,
                };
                match self.engine.add_peer(now, peer, direction) {
                    Ok(()) => {
                        self.peers.insert(peer.relay, peer);
                    }
                    Err(e) => {
                        debug!(error = %e, "dialled peer not admitted");
                        self.engine.connect_failed(&peer);
                    }
                }
            }
        }
    }

    /// The engine's peer for a relay link, adding it if new. Relays we know
    /// are addressed by their advertised address (for /16 buckets).
    fn peer_for(&mut self, now: Now, relay: RelayId, addr: SocketAddr, outbound: bool) -> Option<PeerId> {
        if let Some(peer) = self.peers.get(&relay) {
            return Some(*peer);
        }
        let addr = self.engine.store().get(&relay).and_then(|d| d.addresses().first().copied()).unwrap_or(addr);
        let peer = PeerId { relay, addr };
        let direction = if outbound { Direction::Outbound } else { Direction::Inbound };
        match self.engine.add_peer(now, peer, direction) {
            Ok(()) => {
                self.peers.insert(relay, peer);
                Some(peer)
            }
            Err(e) => {
                debug!(error = %e, "gossip peer not admitted");
                None
            }
        }
    }

    /// Anonymous links (clients) may only fetch snapshots.
    fn serve_anonymous(&mut self, now: Now, link: LinkId, bytes: &[u8]) {
        let Ok(Message::SnapshotRequest(req)) = Message::decode(bytes) else {
            debug!("ignoring a non-fetch directory message from an anonymous link");
            return;
        };
        self.send_snapshot(now, link, req);
    }

    /// Send the chunks of the frozen cut answering `req` on `link`, or
    /// `Unavailable` when that epoch is not served (spec §13.2).
    fn send_snapshot(&mut self, now: Now, link: LinkId, req: SnapshotRequest) {
        let Some(handle) = self.ctx.link(link) else { return };
        let mut cells = Vec::new();
        let chunks = self.engine.serve_snapshot(now, req);
        let newest = self.engine.newest_served().map_or(0, |e| e.0);
        let statement = chunks.first().filter(|c| c.index == 0).and_then(|c| self.engine.statement(c.epoch));
        let messages: Vec<Message> = if chunks.is_empty() {
            vec![Message::Unavailable { newest }]
        } else {
            // Proofs against lying relays first (spec §13.8), then our
            // statement, then the chunks.
            let first = chunks.first().is_some_and(|c| c.index == 0);
            let proofs = if first { self.engine.served_proofs() } else { Vec::new() };
            proofs
                .into_iter()
                .map(|p| Message::StatementConflict(Box::new(p)))
                .chain(statement.map(Message::Statement))
                .chain(chunks.into_iter().map(Message::SnapshotChunk))
                .collect()
        };
        for message in messages {
            if let Some(c) = message.to_vec().ok().as_deref().and_then(fragment) {
                cells.extend(c);
            }
        }
        // Never waits: a full link queue drops the whole answer (spec §6.6).
        handle.queues.push_out(&self.ctx, cells);
    }

    /// Drain the engine: messages to peers, then events.
    async fn drain(&mut self) {
        while let Some((peer, msg)) = self.engine.poll_transmit() {
            let Some(cells) = msg.to_vec().ok().as_deref().and_then(fragment) else { continue };
            match self.ctx.link_to(&peer.relay) {
                // Never waits for the peer's writer (spec §6.6).
                Some((_, handle)) => handle.queues.push_out(&self.ctx, cells),
                None => {
                    self.peers.remove(&peer.relay);
                    self.engine.remove_peer(&peer);
                }
            }
        }
        while let Some(event) = self.engine.poll_event() {
            match event {
                Event::Connect { peer, purpose } => self.dial(peer, purpose),
                // Links also carry circuits: they are not closed for gossip.
                Event::Disconnect { peer } => {
                    self.peers.remove(&peer.relay);
                }
                Event::RepublishDue => {
                    if let Err(e) = self.publish_own() {
                        warn!("{e}");
                    }
                }
                Event::SignStatement { epoch, root, count, previous_root } => {
                    let statement = EpochStatement::sign(&self.ctx.keys.identity, epoch, root, count, previous_root);
                    self.engine.set_statement(statement);
                    debug!(epoch = epoch.0, count, "cut frozen and signed");
                }
            }
        }
        let known = self.engine.store().len();
        self.ctx.metrics.directory_relays.set(known as u64);
        let stats = self.engine.stats();
        self.ctx.metrics.directory_equivocations.set(stats.equivocations_proven);
        self.ctx.metrics.directory_statement_conflicts.set(stats.statement_conflicts);
        // The link tasks check EXTENDs and relay privileges against this
        // view of the verified store (spec §15.3).
        let store = self.engine.store();
        self.ctx.publish_directory(known, || {
            store
                .iter()
                .map(|d| (d.id(), KnownRelay { link_key: d.link_key(), addrs: d.addresses().to_vec() }))
                .collect()
        });
        // Joined: we know relays besides ourselves (or we are the first).
        if !self.bootstrapped && (known > 1 || self.settings.seeds.is_empty()) {
            self.bootstrapped = true;
            info!("Bootstrapped 100%: directory of {known} relays");
        }
    }

    /// Dial a relay from our store on the engine's behalf.
    fn dial(&self, peer: PeerId, purpose: ConnectPurpose) {
        let Some(link_key) = self.engine.store().get(&peer.relay).map(|d| d.link_key()) else {
            return;
        };
        let ctx = Arc::clone(&self.ctx);
        tokio::spawn(async move {
            let ok = match ctx.link_to(&peer.relay) {
                Some(_) => true,
                None => connect_relay(&ctx, peer.addr, peer.relay, link_key).await.is_ok(),
            };
            if let Some(tx) = &ctx.dir_inbox {
                let _ = tx.send(DirCmd::Dialed { peer, purpose, ok }).await;
            }
        });
    }

    /// Dial a seed we know only by address; retry with back-off until the
    /// link is up (the link announces itself with `LinkUp`). A pinned seed
    /// that proves another relay id is reported and not retried.
    fn dial_seed(&self, seed: Seed) {
        let ctx = Arc::clone(&self.ctx);
        if seed.id.is_none() {
            info!(seed = %seed.addr, "seed is not pinned (IP:PORT): its identity is not authenticated");
        }
        tokio::spawn(async move {
            let mut delay = Duration::from_millis(200);
            let mut shutdown = ctx.shutdown.clone();
            for _ in 0..20 {
                match connect_seed(&ctx, seed.addr).await {
                    Ok((link, _)) => {
                        if let Some(pin) = seed.id {
                            if ctx.link_to(&pin).is_none_or(|(id, _)| id != link) {
                                error!(%seed, "seed refused: it proved another relay id than its pin");
                            }
                        }
                        return;
                    }
                    Err(e) => debug!(error = %e, "seed not reachable yet"),
                }
                tokio::select! {
                    () = tokio::time::sleep(delay) => {},
                    _ = shutdown.changed() => return,
                }
                delay = (delay * 2).min(Duration::from_secs(30));
            }
            warn!(seed = %seed.addr, "giving up on seed");
        });
    }

    /// Import descriptors saved by an earlier run.
    fn load_state(&mut self) {
        let Some(path) = &self.settings.state_file else { return };
        let Ok(meta) = std::fs::metadata(path) else { return };
        if meta.len() > MAX_STATE_BYTES {
            warn!(path = %path.display(), "directory state too large; ignored");
            return;
        }
        let Ok(bytes) = std::fs::read(path) else { return };
        let mut descriptors = Vec::new();
        let mut rest = bytes.as_slice();
        while let [hi, lo, tail @ ..] = rest {
            let len = usize::from(u16::from_be_bytes([*hi, *lo]));
            let Some((one, after)) = (len <= tail.len()).then(|| tail.split_at(len)) else { break };
            if let Ok(d) = Descriptor::decode(one) {
                descriptors.push(d);
            }
            rest = after;
        }
        let now = self.now();
        let report = self.engine.import(now, descriptors);
        info!(accepted = report.accepted, "restored the directory from disk");
    }

    /// Write every known descriptor (length-prefixed) to the state file.
    fn save_state(&self) {
        let Some(path) = &self.settings.state_file else { return };
        let mut out = Vec::new();
        for d in self.engine.store().iter() {
            let bytes = d.as_bytes();
            if let Ok(len) = u16::try_from(bytes.len()) {
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(bytes);
            }
        }
        let tmp = path.with_extension("tmp");
        if std::fs::write(&tmp, &out).and_then(|()| std::fs::rename(&tmp, path)).is_err() {
            warn!(path = %path.display(), "cannot save the directory state");
        }
    }
}
