//! The discrete-event network that drives N real [`GossipEngine`]s.
//!
//! Virtual time advances from event to event: a priority queue holds
//! in-flight messages (delivered after a per-link latency of 10–100 ms, a
//! deterministic function of the seed and the link) and engine timers (each
//! engine's `poll_timeout`). Connections open instantly when an engine asks
//! for one. Nothing depends on wall-clock time or hash-map iteration order,
//! so a run is reproducible from its seed.
//!
//! A *dropper* is a node that silently drops all gossip: messages to it are
//! discarded and it never runs its timers, so it neither pushes nor answers
//! (it still holds the connections others open to it).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::error::Error;

use lamina_crypto::keys::{IdentityKeypair, LinkPublicKey, OnionPublicKey, RelayId};
use lamina_directory::descriptor::pow;
use lamina_directory::snapshot::Epoch;
use lamina_directory::statement::EpochStatement;
use lamina_directory::wire::Push;
use lamina_directory::{
    ConnectPurpose, Descriptor, DescriptorFields, DescriptorHash, Direction, Event, ExitSummary, GossipConfig,
    GossipEngine, Message, Now, PeerId, PowNonce, StoreConfig, Unverified,
};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// Wall-clock origin of the simulation (unix seconds).
pub(crate) const T0: u64 = 1_750_000_000;
/// Descriptor lifetime: the 24-hour maximum.
const LIFETIME_S: u64 = 24 * 3600;
/// Bytes a link adds to each gossip message: a 2-byte length and the
/// 16-byte Noise tag of the transport message carrying it.
const FRAME_OVERHEAD: u64 = 18;
/// Marker of "has not received the tracked descriptor".
const NO_HOP: u32 = u32::MAX;

/// How link latencies are drawn (both 10–100 ms, fixed per link and seed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Latency {
    /// Relays sit at random points of a unit square; a link costs
    /// 10 ms + 90 ms × distance / √2. Latencies obey the triangle
    /// inequality, as internet paths roughly do.
    Geo,
    /// Every link independently uniform in 10..=100 ms. Violates the
    /// triangle inequality freely (a two-hop detour is often faster than
    /// the direct link), which inflates first-arrival hop counts.
    Uniform,
}

/// The engine type under simulation.
type Engine = GossipEngine<ChaCha20Rng>;

/// One simulated relay.
struct Node {
    /// The real engine.
    engine: Engine,
    /// Its identity key (to sign republished descriptors).
    identity: IdentityKeypair,
    /// How others address it.
    peer: PeerId,
    /// Its proof-of-work nonce (computed once per identity).
    nonce: PowNonce,
    /// Its onion and link keys.
    keys: (OnionPublicKey, LinkPublicKey),
    /// Its current descriptor sequence.
    sequence: u64,
    /// Whether it silently drops all gossip.
    dropper: bool,
}

/// Something scheduled.
enum Ev {
    /// A message arrives.
    Deliver {
        /// Sender index.
        from: usize,
        /// Recipient index.
        to: usize,
        /// The message.
        msg: Message,
        /// Hop count of the tracked descriptor in this envelope (not in the
        /// protocol: simulation bookkeeping only).
        hop: u32,
    },
    /// An engine timer is due.
    Timer {
        /// The node.
        node: usize,
    },
}

/// A scheduled event, ordered by (time, insertion) for the min-heap.
struct Item {
    /// When (virtual ms).
    at: u64,
    /// Insertion counter (ties broken first-in first-out).
    seq: u64,
    /// What.
    ev: Ev,
}

impl PartialEq for Item {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Item {}

impl PartialOrd for Item {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Item {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap, we want the earliest first.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Who has the descriptor being measured, and at which hop.
pub(crate) struct Track {
    /// Its relay.
    id: RelayId,
    /// Its hash.
    hash: DescriptorHash,
    /// Hop at which each node stored it (`NO_HOP` if not yet).
    pub(crate) hop: Vec<u32>,
    /// Virtual time each node stored it.
    pub(crate) at_ms: Vec<u64>,
    /// How many nodes have it.
    pub(crate) have: usize,
}

/// The simulated network.
pub(crate) struct Sim {
    /// The relays.
    nodes: Vec<Node>,
    /// Relay id → node index.
    index: HashMap<RelayId, usize>,
    /// Scheduled events.
    heap: BinaryHeap<Item>,
    /// The timer each node has scheduled (for lazy deletion).
    timer_at: Vec<u64>,
    /// Virtual now (ms).
    now_ms: u64,
    /// Insertion counter of the heap.
    next_seq: u64,
    /// Seed of the link latencies.
    seed: u64,
    /// How link latencies are drawn.
    latency: Latency,
    /// Each node's position in the unit square (geometric latencies).
    coords: Vec<(f64, f64)>,
    /// Engine configuration.
    config: GossipConfig,
    /// Count bytes sent (steady-state window).
    pub(crate) counting: bool,
    /// Bytes sent while counting.
    pub(crate) bytes: u64,
    /// Messages sent while counting.
    pub(crate) messages: u64,
    /// Descriptor being tracked.
    pub(crate) track: Option<Track>,
}

impl Sim {
    /// Build `n` relays with descriptors published at random times in the
    /// last 8 hours (so republishing is spread evenly), and give every
    /// engine the whole directory, as a relay gets it from a seed snapshot.
    ///
    /// With `epochs = Some(len)` every engine cuts, reconciles, freezes and
    /// signs epochs of `len` seconds (spec §13); the last `joiners` nodes
    /// are offline and unknown until [`Sim::join`].
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        n: usize,
        seed: u64,
        difficulty: u8,
        fanout: Option<usize>,
        latency: Latency,
        epochs: Option<u64>,
        joiners: usize,
        rng: &mut ChaCha20Rng,
    ) -> Result<Self, Box<dyn Error>> {
        let defaults = GossipConfig::default();
        let config = GossipConfig {
            push_fanout: fanout.unwrap_or(defaults.push_fanout),
            pow_difficulty: difficulty,
            serve_snapshots: epochs.is_some(),
            epoch_len_s: epochs.unwrap_or(defaults.epoch_len_s),
            store: StoreConfig { capacity: n.max(10_000), ..StoreConfig::default() },
            ..defaults
        };
        let mut nodes = Vec::with_capacity(n);
        let mut descriptors = Vec::with_capacity(n);
        for i in 0..n {
            let identity = IdentityKeypair::generate(rng);
            let nonce = pow::solve(&identity.relay_id(), difficulty, rng.next_u64())?;
            let keys = (OnionPublicKey(random32(rng)), LinkPublicKey(random32(rng)));
            let published = T0 - rng.next_u64() % (LIFETIME_S / 3);
            let peer = PeerId { relay: identity.relay_id(), addr: address(i)? };
            let fields = fields_for(&peer, keys, 1, published);
            let joiner = i + joiners >= n;
            if !joiner {
                descriptors.push(Descriptor::sign(&identity, fields, nonce, difficulty)?);
            }
            let engine =
                GossipEngine::new(peer.relay, config.clone(), ChaCha20Rng::seed_from_u64(rng.next_u64()), now(0))?;
            nodes.push(Node { engine, identity, peer, nonce, keys, sequence: 1, dropper: joiner });
        }
        descriptors.sort_by_key(Unverified::claimed_id);
        let unit = |rng: &mut ChaCha20Rng| (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        let coords = (0..n).map(|_| (unit(rng), unit(rng))).collect();
        let index = nodes.iter().enumerate().map(|(i, node)| (node.peer.relay, i)).collect();
        let mut sim = Self {
            nodes,
            index,
            heap: BinaryHeap::new(),
            timer_at: vec![u64::MAX; n],
            now_ms: 0,
            next_seq: 0,
            seed,
            latency,
            coords,
            config,
            counting: false,
            bytes: 0,
            messages: 0,
            track: None,
        };
        sim.bootstrap(&descriptors)?;
        Ok(sim)
    }

    /// Import the directory into every engine and publish each node's own
    /// descriptor (no peers yet, so nothing is pushed).
    fn bootstrap(&mut self, descriptors: &[Unverified<Descriptor>]) -> Result<(), Box<dyn Error>> {
        let own: HashMap<RelayId, Vec<u8>> =
            descriptors.iter().map(|d| (d.claimed_id(), d.as_bytes().to_vec())).collect();
        for i in 0..self.nodes.len() {
            let node = &mut self.nodes[i];
            if node.dropper {
                // A joiner: offline and unknown until `join`.
                continue;
            }
            node.engine.import(now(0), descriptors.iter().cloned());
            let bytes = own.get(&node.peer.relay).ok_or("own descriptor missing")?;
            node.engine.publish_own(now(0), bytes)?;
            self.sync(i);
        }
        Ok(())
    }

    /// Number of relays.
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Virtual now.
    pub(crate) fn now_ms(&self) -> u64 {
        self.now_ms
    }

    /// The engine configuration.
    pub(crate) fn config(&self) -> &GossipConfig {
        &self.config
    }

    /// Whether node `i` drops gossip.
    pub(crate) fn is_dropper(&self, i: usize) -> bool {
        self.nodes[i].dropper
    }

    /// Make node `i` drop all gossip from now on.
    pub(crate) fn set_dropper(&mut self, i: usize) {
        self.nodes[i].dropper = true;
    }

    /// Outbound peer counts over honest nodes (min, mean).
    pub(crate) fn outbound_degree(&self) -> (usize, f64) {
        let counts: Vec<usize> =
            self.nodes.iter().map(|n| n.engine.peers().filter(|(_, d)| *d == Direction::Outbound).count()).collect();
        let min = counts.iter().copied().min().unwrap_or(0);
        (min, counts.iter().sum::<usize>() as f64 / counts.len().max(1) as f64)
    }

    /// Whether every honest node has the same digest root.
    pub(crate) fn converged(&mut self) -> bool {
        let mut roots = self.nodes.iter_mut().filter(|n| !n.dropper).map(|n| n.engine.digest_root());
        match roots.next() {
            Some(first) => roots.all(|r| r == first),
            None => true,
        }
    }

    /// Sum of a statistic over all engines.
    pub(crate) fn total(&self, f: impl Fn(&lamina_directory::Stats) -> u64) -> u64 {
        self.nodes.iter().map(|n| f(n.engine.stats())).sum()
    }

    /// Node `i` leaves (stops answering and running timers) or, with
    /// `down = false`, comes back with its state and republishes.
    pub(crate) fn set_down(&mut self, i: usize, down: bool) -> Result<(), Box<dyn Error>> {
        self.nodes[i].dropper = down;
        if !down {
            self.republish(i)?;
        }
        Ok(())
    }

    /// Node `i` signs and publishes a fresh descriptor now.
    pub(crate) fn republish(&mut self, i: usize) -> Result<(), Box<dyn Error>> {
        let bytes = self.next_descriptor(i)?;
        let now = self.now();
        self.nodes[i].engine.publish_own(now, &bytes)?;
        self.sync(i);
        Ok(())
    }

    /// Joiner `i` comes online: it takes the directory of relay `from`
    /// (as a snapshot from a seed), publishes its descriptor and dials.
    pub(crate) fn join(&mut self, i: usize, from: usize) -> Result<(), Box<dyn Error>> {
        let known: Vec<Unverified<Descriptor>> =
            self.nodes[from].engine.store().iter().map(lamina_directory::Verified::to_unverified).collect();
        let now = self.now();
        self.nodes[i].dropper = false;
        self.nodes[i].engine.import(now, known);
        self.republish(i)
    }

    /// A fresh identity (not a node) signs two descriptors with one
    /// sequence; each is pushed into `per_side` random live nodes of one
    /// half, as if from one of their peers.
    pub(crate) fn equivocate(&mut self, per_side: usize, rng: &mut ChaCha20Rng) -> Result<RelayId, Box<dyn Error>> {
        let identity = IdentityKeypair::generate(rng);
        let difficulty = self.config.pow_difficulty;
        let nonce = pow::solve(&identity.relay_id(), difficulty, rng.next_u64())?;
        let keys = (OnionPublicKey(random32(rng)), LinkPublicKey(random32(rng)));
        let b = u8::try_from(rng.next_u64() % 256)?;
        let peer = PeerId { relay: identity.relay_id(), addr: std::net::SocketAddr::from(([250, b, 0, 1], 443)) };
        let published = self.now().unix_s.saturating_sub(1);
        let mut two = Vec::new();
        for bandwidth in [1_000, 2_000] {
            let mut fields = fields_for(&peer, keys, 7, published);
            fields.bandwidth_kbps = bandwidth;
            two.push(Descriptor::sign(&identity, fields, nonce, difficulty)?);
        }
        let n = self.nodes.len();
        for (side, d) in two.into_iter().enumerate() {
            for _ in 0..per_side {
                // Side 0 pushes into the lower half, side 1 into the upper.
                let i = usize::try_from(rng.next_u64() % (n as u64 / 2))? + side * (n / 2);
                if self.nodes[i].dropper {
                    continue;
                }
                let Some((from, _)) = self.nodes[i].engine.peers().next() else { continue };
                let now = self.now();
                self.nodes[i].engine.handle_message(now, from, Message::Push(Push { descriptors: vec![d.clone()] }));
                self.sync(i);
            }
        }
        Ok(identity.relay_id())
    }

    /// What node `i` serves for `epoch` (`None`: its newest frozen cut).
    pub(crate) fn served(&self, i: usize, epoch: Option<Epoch>) -> Option<(Epoch, [u8; 32], usize)> {
        self.nodes[i].engine.served(epoch)
    }

    /// Whether node `i` has banned `id` (with a proof).
    pub(crate) fn banned(&self, i: usize, id: &RelayId) -> bool {
        self.nodes[i].engine.store().is_banned(id)
    }

    /// Node `i` signs and publishes a new descriptor now; it becomes the
    /// tracked one.
    pub(crate) fn publish_tracked(&mut self, i: usize) -> Result<(), Box<dyn Error>> {
        let bytes = self.next_descriptor(i)?;
        let d = Descriptor::decode(&bytes)?;
        let mut track = Track {
            id: d.claimed_id(),
            hash: d.hash(),
            hop: vec![NO_HOP; self.nodes.len()],
            at_ms: vec![u64::MAX; self.nodes.len()],
            have: 1,
        };
        track.hop[i] = 0;
        track.at_ms[i] = self.now_ms;
        self.track = Some(track);
        let now = self.now();
        self.nodes[i].engine.publish_own(now, &bytes)?;
        self.sync(i);
        Ok(())
    }

    /// Run events up to virtual time `until_ms`, or until `stop` holds
    /// (checked after each event). Returns whether `stop` held.
    pub(crate) fn run_until(&mut self, until_ms: u64, stop: impl Fn(&Self) -> bool) -> bool {
        while self.heap.peek().is_some_and(|item| item.at <= until_ms) {
            let Some(item) = self.heap.pop() else { break };
            self.now_ms = self.now_ms.max(item.at);
            match item.ev {
                Ev::Deliver { from, to, msg, hop } => self.deliver(from, to, msg, hop),
                Ev::Timer { node } => {
                    if self.timer_at[node] == item.at && !self.nodes[node].dropper {
                        self.timer_at[node] = u64::MAX;
                        let now = self.now();
                        self.nodes[node].engine.handle_timeout(now);
                        self.sync(node);
                    }
                }
            }
            if stop(self) {
                return true;
            }
        }
        self.now_ms = self.now_ms.max(until_ms);
        false
    }

    /// Hand a message to its recipient (unless it drops gossip) and note
    /// when it stores the tracked descriptor.
    fn deliver(&mut self, from: usize, to: usize, msg: Message, hop: u32) {
        if self.nodes[to].dropper {
            return;
        }
        let carries = self.track.as_ref().is_some_and(|t| carries(&msg, &t.hash));
        let from_peer = self.nodes[from].peer;
        let now = self.now();
        self.nodes[to].engine.handle_message(now, from_peer, msg);
        if carries {
            if let Some(t) = self.track.as_mut() {
                let stored = self.nodes[to].engine.store().get(&t.id).is_some_and(|d| d.hash() == t.hash);
                if stored && t.hop[to] == NO_HOP {
                    t.hop[to] = hop;
                    t.at_ms[to] = self.now_ms;
                    t.have += 1;
                }
            }
        }
        self.sync(to);
    }

    /// Drain node `start`'s transmissions and events (and those of nodes
    /// its events touch), then reschedule their timers.
    fn sync(&mut self, start: usize) {
        let mut work = vec![start];
        while let Some(i) = work.pop() {
            if self.nodes[i].dropper {
                continue;
            }
            loop {
                let mut progressed = false;
                while let Some((to, msg)) = self.nodes[i].engine.poll_transmit() {
                    progressed = true;
                    self.transmit(i, to, msg);
                }
                while let Some(ev) = self.nodes[i].engine.poll_event() {
                    progressed = true;
                    self.handle_event(i, ev, &mut work);
                }
                if !progressed {
                    break;
                }
            }
            self.schedule_timer(i);
        }
    }

    /// Schedule a message from `i` to the node behind `to`.
    fn transmit(&mut self, i: usize, to: PeerId, msg: Message) {
        let Some(&j) = self.index.get(&to.relay) else { return };
        let hop = match &self.track {
            Some(t) if carries(&msg, &t.hash) => t.hop[i].saturating_add(1),
            _ => 0,
        };
        if self.counting {
            self.bytes += msg.encoded_len() as u64 + FRAME_OVERHEAD;
            self.messages += 1;
        }
        let at = self.now_ms + self.latency_ms(i, j);
        self.push(at, Ev::Deliver { from: i, to: j, msg, hop });
    }

    /// Carry out one engine event of node `i`.
    fn handle_event(&mut self, i: usize, ev: Event, work: &mut Vec<usize>) {
        match ev {
            Event::Connect { peer, purpose } => {
                let Some(&j) = self.index.get(&peer.relay) else {
                    self.nodes[i].engine.connect_failed(&peer);
                    return;
                };
                let now = self.now();
                let me = self.nodes[i].peer;
                if self.nodes[j].engine.add_peer(now, me, Direction::Inbound).is_err() {
                    self.nodes[i].engine.connect_failed(&peer);
                    return;
                }
                let direction = match purpose {
                    ConnectPurpose::Gossip => Direction::Outbound,
                    ConnectPurpose::AntiEntropy => Direction::Transient,
                };
                if self.nodes[i].engine.add_peer(now, peer, direction).is_err() {
                    self.nodes[j].engine.remove_peer(&me);
                }
                work.push(j);
            }
            Event::Disconnect { peer } => {
                if let Some(&j) = self.index.get(&peer.relay) {
                    let me = self.nodes[i].peer;
                    self.nodes[j].engine.remove_peer(&me);
                }
            }
            Event::SignStatement { epoch, root, count, previous_root } => {
                let statement = EpochStatement::sign(&self.nodes[i].identity, epoch, root, count, previous_root);
                self.nodes[i].engine.set_statement(statement);
            }
            Event::RepublishDue => {
                if let Ok(bytes) = self.next_descriptor(i) {
                    let now = self.now();
                    // A failure here would be a simulator bug; the engine
                    // asks again a minute later.
                    let _ = self.nodes[i].engine.publish_own(now, &bytes);
                }
            }
        }
    }

    /// Sign node `i`'s next descriptor (sequence + 1, published now).
    fn next_descriptor(&mut self, i: usize) -> Result<Vec<u8>, Box<dyn Error>> {
        let unix = self.now().unix_s;
        let node = &mut self.nodes[i];
        node.sequence += 1;
        let fields = fields_for(&node.peer, node.keys, node.sequence, unix);
        let d = Descriptor::sign(&node.identity, fields, node.nonce, self.config.pow_difficulty)?;
        Ok(d.as_bytes().to_vec())
    }

    /// (Re)schedule node `i`'s timer from its engine's deadline.
    fn schedule_timer(&mut self, i: usize) {
        let Some(at) = self.nodes[i].engine.poll_timeout() else { return };
        let at = at.max(self.now_ms);
        if self.timer_at[i] != at {
            self.timer_at[i] = at;
            self.push(at, Ev::Timer { node: i });
        }
    }

    /// One-way latency of the link between `a` and `b` (10–100 ms).
    // The float is in 0.0..=90.0 before the cast.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn latency_ms(&self, a: usize, b: usize) -> u64 {
        match self.latency {
            Latency::Uniform => uniform_latency_ms(self.seed, a, b),
            Latency::Geo => {
                let ((xa, ya), (xb, yb)) = (self.coords[a], self.coords[b]);
                let d = ((xa - xb).powi(2) + (ya - yb).powi(2)).sqrt() / std::f64::consts::SQRT_2;
                10 + (90.0 * d).round() as u64
            }
        }
    }

    /// Add an event to the heap.
    fn push(&mut self, at: u64, ev: Ev) {
        self.next_seq += 1;
        self.heap.push(Item { at, seq: self.next_seq, ev });
    }

    /// The engines' view of now.
    fn now(&self) -> Now {
        now(self.now_ms)
    }
}

/// `Now` at virtual time `ms`.
fn now(ms: u64) -> Now {
    Now { mono_ms: ms, unix_s: T0 + ms / 1000 }
}

/// Whether `msg` pushes the descriptor with `hash`.
fn carries(msg: &Message, hash: &DescriptorHash) -> bool {
    match msg {
        Message::Push(p) => p.descriptors.iter().any(|d| d.hash() == *hash),
        _ => false,
    }
}

/// Node `i`'s listen address `a.b.0.1:443` with `(a, b) = (1 + i / 256, i % 256)`:
/// a /16 of its own for each of the first 65,280 nodes.
fn address(i: usize) -> Result<std::net::SocketAddr, Box<dyn Error>> {
    let a = u8::try_from(1 + i / 256).map_err(|_| "at most 65,280 nodes")?;
    let b = u8::try_from(i % 256)?;
    Ok(std::net::SocketAddr::from(([a, b, 0, 1], 443)))
}

/// The descriptor fields of a node.
fn fields_for(peer: &PeerId, keys: (OnionPublicKey, LinkPublicKey), sequence: u64, published: u64) -> DescriptorFields {
    DescriptorFields {
        onion_key: keys.0,
        link_key: keys.1,
        sequence,
        published,
        expires: published + LIFETIME_S,
        bandwidth_kbps: 1_000,
        exit: ExitSummary::NotExit,
        addresses: vec![peer.addr],
        family: vec![],
    }
}

/// 32 random bytes.
fn random32(rng: &mut ChaCha20Rng) -> [u8; 32] {
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut b);
    b
}

/// One-way latency of the link between `a` and `b` in the uniform model:
/// 10–100 ms, fixed per link and seed (splitmix64 of the unordered pair).
fn uniform_latency_ms(seed: u64, a: usize, b: usize) -> u64 {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    let mut x = seed ^ ((lo as u64) << 32 | hi as u64);
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 31;
    10 + x % 91
}
