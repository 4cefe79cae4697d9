//! Live links of a relay and the shared context every task sees.
//!
//! The registry is behind a `std::sync::Mutex` held only for map lookups and
//! inserts, never across `.await`; link tasks cache the handles they use, so
//! the cell path takes only the short per-queue locks of [`LinkQueues`]
//! (spec §6.4, §6.6).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use lamina_crypto::keys::{LinkPublicKey, RelayId, StaticKeypair};
use lamina_proto::cell::{Cell, CellCommand, CircId, DestroyReason, CELL_LEN};
use lamina_proto::circuit::queue::{choose_victims, CircuitQueues, Pushed, DEFAULT_CIRCUIT_QUEUE_ITEMS};
use lamina_proto::circuit::relay::{LinkId, Route, TableLimits};
use lamina_proto::link::LinkCert;
use lamina_proto::msg::{EndReason, StreamId};
use tokio::sync::{mpsc, oneshot, watch, Notify};

use crate::exit_policy::ExitPolicy;
use crate::keys::RelayKeys;
use crate::metrics::Metrics;

/// Capacity of a link's stream-command inbox. Only exit-stream tasks send
/// there, and they wait for room: that throttles a destination at its
/// source. No link task ever waits on another's queue (spec §6.6).
pub const INBOX_CAPACITY: usize = 256;

/// A command for a link's reader task (which owns the circuit table).
#[derive(Debug)]
pub enum LinkCmd {
    /// Open a circuit on this link for a circuit owned by `back`.
    OpenOutbound {
        /// The owning link and circuit.
        back: Route,
        /// The onionskin for the CREATE.
        onionskin: Box<[u8; lamina_crypto::handshake::ONIONSKIN_LEN]>,
        /// Where to send the new circuit id.
        reply: oneshot::Sender<Option<CircId>>,
    },
    /// An extension of circuit `circ` finished.
    ExtendDone {
        /// The circuit on this link.
        circ: CircId,
        /// The next hop's route, or `None` on failure.
        next: Option<Route>,
    },
    /// The owner of outbound circuit `circ` closed it.
    CloseOutbound {
        /// The circuit on this link.
        circ: CircId,
        /// Why.
        reason: DestroyReason,
    },
    /// The next hop of circuit `circ` (owned here) closed.
    NextHopClosed {
        /// The circuit.
        circ: CircId,
        /// Why.
        reason: DestroyReason,
    },
    /// An exit stream connected; `to_socket` carries its bytes.
    StreamConnected {
        /// Circuit.
        circ: CircId,
        /// Stream.
        stream: StreamId,
        /// Address reached (told to the client).
        addr: Option<std::net::IpAddr>,
        /// Bytes to write to the destination.
        to_socket: mpsc::Sender<Vec<u8>>,
        /// Dropping it stops the destination reader (the stream ended).
        cancel: oneshot::Sender<()>,
    },
    /// An exit stream failed to open.
    StreamFailed {
        /// Circuit.
        circ: CircId,
        /// Stream.
        stream: StreamId,
        /// Why.
        reason: EndReason,
    },
    /// Bytes read from a destination; reply when all are packaged.
    StreamBytes {
        /// Circuit.
        circ: CircId,
        /// Stream.
        stream: StreamId,
        /// The bytes.
        data: Vec<u8>,
        /// Signalled once every byte was packaged into cells.
        done: oneshot::Sender<()>,
    },
    /// The destination closed its side.
    StreamEof {
        /// Circuit.
        circ: CircId,
        /// Stream.
        stream: StreamId,
    },
    /// `cells` DATA cells of a stream were written to the destination.
    StreamConsumed {
        /// Circuit.
        circ: CircId,
        /// Stream.
        stream: StreamId,
        /// How many.
        cells: u32,
    },
}

/// The channels of one live link.
#[derive(Debug, Clone)]
pub struct LinkHandle {
    /// Stream commands for the reader task (exit-stream tasks wait on it).
    pub inbox: mpsc::Sender<LinkCmd>,
    /// Per-circuit queues towards the writer and the reader.
    pub queues: Arc<LinkQueues>,
}

/// What waits in a reader's queue.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // Cells are the common case; commands are rare.
pub enum ReaderItem {
    /// A backward cell for the owning table: the circuit id there, the
    /// route it arrived on, the cell.
    Backward(CircId, Route, Cell),
    /// A circuit-lifecycle command from another task. These are never
    /// dropped and need no bound of their own: each circuit causes at most
    /// a few (an extend, its answer, one close per direction), and
    /// circuits are bounded (spec §6.6).
    Cmd(LinkCmd),
}

/// The per-circuit queues of one link (spec §6.6): cells for its writer,
/// and backward cells for its reader to wrap in its layer. Pushing never
/// waits; a circuit past its bound is killed, never the link.
#[derive(Debug)]
pub struct LinkQueues {
    /// Cells to write on the link.
    out: Mutex<CircuitQueues<Cell>>,
    /// Backward cells for circuits owned by this link's table, and
    /// circuit-lifecycle commands (as control items).
    back: Mutex<CircuitQueues<ReaderItem>>,
    /// Wakes the writer task.
    pub writer_wake: Notify,
    /// Wakes the reader task (backward cells, killed circuits, closing).
    pub reader_wake: Notify,
    /// Set once either task of the link ended: pushes are dropped.
    closed: AtomicBool,
}

/// Circuits the queues of a link killed, for the reader to close.
#[derive(Debug, Default)]
pub struct Killed {
    /// Killed in the writer queue (a DESTROY is already queued on the link).
    pub out: Vec<CircId>,
    /// Killed in the backward queue (nothing sent yet).
    pub back: Vec<CircId>,
}

/// Lock a mutex, ignoring poisoning (the data stays consistent: every
/// critical section is a few map operations).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LinkQueues {
    /// Empty queues bounding each circuit to `per_circuit` cells.
    pub fn new(per_circuit: usize) -> Self {
        Self {
            out: Mutex::new(CircuitQueues::new(per_circuit)),
            back: Mutex::new(CircuitQueues::new(per_circuit)),
            writer_wake: Notify::new(),
            reader_wake: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// Whether the link is closing.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Mark the link closed and wake both tasks.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.writer_wake.notify_one();
        self.reader_wake.notify_one();
    }

    /// Queue cells for the writer. Never waits. A DESTROY goes ahead of
    /// queued cells (and replaces its circuit's backlog); a circuit past its
    /// bound is killed and a DESTROY is queued for it; link cells (gossip)
    /// that do not all fit are dropped as a whole message.
    pub fn push_out(&self, ctx: &RelayContext, cells: Vec<Cell>) {
        if cells.is_empty() || self.is_closed() {
            return;
        }
        let now = ctx.now_ms();
        let (before, after, queued, killed) = {
            let mut q = lock(&self.out);
            let before = q.len();
            let link_cells = cells.iter().filter(|c| c.circ == CircId::LINK).count();
            let link_fits = q.circuit_len(CircId::LINK) + link_cells <= ctx.config.circuit_queue_cells;
            let (mut queued, mut killed) = (false, false);
            for cell in cells {
                let circ = cell.circ;
                if cell.command == CellCommand::Destroy {
                    q.push_urgent(circ, cell);
                    queued = true;
                    continue;
                }
                if circ == CircId::LINK && !link_fits {
                    continue;
                }
                match q.push(now, circ, cell) {
                    Pushed::Queued => queued = true,
                    Pushed::Dropped => {}
                    Pushed::Killed => {
                        q.push_urgent(circ, Cell::destroy(circ, DestroyReason::Destroyed));
                        queued = true;
                        killed = true;
                    }
                }
            }
            (before, q.len(), queued, killed)
        };
        ctx.account(before, after);
        if queued {
            self.writer_wake.notify_one();
        }
        if killed {
            ctx.queue_kills.fetch_add(1, Ordering::Relaxed);
            self.reader_wake.notify_one();
        }
        ctx.enforce_memory_cap();
    }

    /// Queue backward cells `(circuit here, arrived on, cell)` for this
    /// link's reader. Never waits.
    pub fn push_back(&self, ctx: &RelayContext, items: Vec<(CircId, Route, Cell)>) {
        if items.is_empty() || self.is_closed() {
            return;
        }
        let now = ctx.now_ms();
        let (before, after, killed) = {
            let mut q = lock(&self.back);
            let before = q.len();
            let mut killed = false;
            for (circ, from, cell) in items {
                killed |= q.push(now, circ, ReaderItem::Backward(circ, from, cell)) == Pushed::Killed;
            }
            (before, q.len(), killed)
        };
        ctx.account(before, after);
        if killed {
            ctx.queue_kills.fetch_add(1, Ordering::Relaxed);
        }
        self.reader_wake.notify_one();
        ctx.enforce_memory_cap();
    }

    /// Send a circuit-lifecycle command to this link's reader. Never waits
    /// and is never dropped while the link lives. A close drops the
    /// circuit's queued backward cells (they can no longer be delivered).
    /// Returns false if the link is closed.
    pub fn push_cmd(&self, ctx: &RelayContext, cmd: LinkCmd) -> bool {
        if self.is_closed() {
            return false;
        }
        let (before, after) = {
            let mut q = lock(&self.back);
            let before = q.len();
            match &cmd {
                LinkCmd::NextHopClosed { circ, .. } => {
                    let circ = *circ;
                    q.push_urgent(circ, ReaderItem::Cmd(cmd));
                }
                _ => q.push_control(ReaderItem::Cmd(cmd)),
            }
            (before, q.len())
        };
        ctx.account(before, after);
        self.reader_wake.notify_one();
        true
    }

    /// Take up to `max` cells for the writer.
    pub fn pop_out(&self, ctx: &RelayContext, max: usize, out: &mut Vec<Cell>) -> usize {
        let n = lock(&self.out).pop_batch(max, out);
        ctx.account(n, 0);
        n
    }

    /// Take up to `max` backward cells for the reader.
    pub fn pop_back(&self, ctx: &RelayContext, max: usize, out: &mut Vec<ReaderItem>) -> usize {
        let n = lock(&self.back).pop_batch(max, out);
        ctx.account(n, 0);
        n
    }

    /// Circuits killed since the last call. The caller closes them in its
    /// table and then calls [`forget`](Self::forget).
    pub fn take_killed(&self) -> Killed {
        Killed { out: lock(&self.out).take_killed(), back: lock(&self.back).take_killed() }
    }

    /// The reader closed `circ`: its id may carry cells again.
    pub fn forget(&self, circ: CircId) {
        lock(&self.out).forget(circ);
        lock(&self.back).forget(circ);
    }

    /// Drop everything queued (the link is gone).
    pub fn clear(&self, ctx: &RelayContext) {
        let mut sink = Vec::new();
        while self.pop_out(ctx, 4096, &mut sink) > 0 {
            sink.clear();
        }
        let mut sink = Vec::new();
        while self.pop_back(ctx, 4096, &mut sink) > 0 {
            sink.clear();
        }
    }

    /// Kill `circ` in the writer queue (relay memory is short); returns
    /// the cells freed.
    fn kill_out(&self, circ: CircId) -> (usize, usize) {
        let mut q = lock(&self.out);
        let before = q.len();
        q.kill(circ);
        q.push_urgent(circ, Cell::destroy(circ, DestroyReason::Destroyed));
        (before, q.len())
    }

    /// Kill `circ` in the backward queue; returns the lengths before and after.
    fn kill_back(&self, circ: CircId) -> (usize, usize) {
        let mut q = lock(&self.back);
        let before = q.len();
        q.kill(circ);
        (before, q.len())
    }
}

/// Links by id and by proven peer relay.
#[derive(Debug, Default)]
struct Registry {
    /// Every live link.
    links: HashMap<LinkId, LinkHandle>,
    /// Relay links by the identity their certificate proved, with the link
    /// key it certified (for reuse on EXTEND and gossip; spec §15.3). The
    /// first live link of a relay stays registered: a later one never
    /// replaces it.
    by_relay: HashMap<RelayId, (LinkId, LinkPublicKey)>,
}

/// The relay's onion keys (spec §15.6).
#[derive(Clone)]
pub struct OnionKeys {
    /// The published key.
    pub current: Arc<StaticKeypair>,
    /// The key before the last rotation, still accepted.
    pub previous: Option<Arc<StaticKeypair>>,
}

impl std::fmt::Debug for OnionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnionKeys").field("current", &self.current.onion_public()).finish_non_exhaustive()
    }
}

impl OnionKeys {
    /// The key an onionskin names (`ID | B | X`, spec §4.1): the previous
    /// key if `B` is its public key, the current one otherwise.
    pub fn for_onionskin(&self, onionskin: &[u8]) -> &StaticKeypair {
        let named = onionskin.get(32..64);
        match &self.previous {
            Some(previous) if named == Some(previous.public_bytes().as_slice()) => previous,
            _ => &self.current,
        }
    }
}

/// What the relay's verified directory says about one relay (spec §15.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownRelay {
    /// Its link key.
    pub link_key: LinkPublicKey,
    /// Its advertised addresses.
    pub addrs: Vec<std::net::SocketAddr>,
}

/// The relays of the verified directory store, as the link tasks see them:
/// republished by the directory task after its store changes.
#[derive(Debug, Default)]
struct VerifiedView {
    /// Listed relays.
    relays: HashMap<RelayId, KnownRelay>,
    /// When the view was last rebuilt.
    built: Option<std::time::Instant>,
}

/// Most often the directory view is rebuilt while its size is unchanged.
const VIEW_REFRESH: Duration = Duration::from_secs(1);

/// Tunables of the relay's drivers.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Circuit table limits per link.
    pub table_limits: TableLimits,
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// Most simultaneous connections from one IP address.
    pub max_connections_per_ip: usize,
    /// Time allowed for a link handshake.
    pub handshake_timeout: Duration,
    /// Time allowed to resolve and connect an exit stream.
    pub connect_timeout: Duration,
    /// CREATE cells accepted per second from one client IP address
    /// (token bucket rate; links from other relays are not limited this way,
    /// since they carry circuits of many clients — Tor does the same).
    pub create_rate: f64,
    /// Burst of CREATE cells from one client IP address.
    pub create_burst: f64,
    /// Local address for outgoing links (a relay's own address, as Tor's
    /// `OutboundBindAddress`), so peers see the relay's network block.
    pub bind_ip: Option<std::net::IpAddr>,
    /// A local test network (`--test-network`, spec §15.2): links and
    /// extends to non-public addresses are allowed.
    pub test_network: bool,
    /// An anonymous link that carries no circuit for this long is closed
    /// (spec §15.5; Tor closes idle client channels after minutes).
    pub idle_link_timeout: Duration,
    /// Most exit streams resolving or connecting at once, relay-wide
    /// (review L-10).
    pub max_pending_streams: usize,
    /// Most exit streams resolving or connecting at once on one circuit.
    pub max_pending_streams_per_circuit: usize,
    /// An exit stream whose destination sends nothing for this long is
    /// closed (spec §15.5).
    pub stream_idle_timeout: Duration,
    /// A write to a destination that makes no progress for this long
    /// closes the stream.
    pub write_timeout: Duration,
    /// How often the onion key rotates (spec §15.6); the previous key is
    /// accepted until the next rotation.
    pub onion_rotation: Duration,
    /// Where the keys live (rotated onion keys are written there); `None`
    /// for in-memory keys.
    pub key_dir: Option<std::path::PathBuf>,
    /// Bound of one circuit's queue at this relay, in cells (spec §6.6).
    pub circuit_queue_cells: usize,
    /// Relay-wide cap on queued cell memory, in bytes (Tor's
    /// `MaxMemInQueues`): past it, the circuits holding the oldest queued
    /// cells are closed.
    pub max_queued_bytes: usize,
    /// A link whose writes make no progress for this long is closed.
    pub write_stall_timeout: Duration,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            table_limits: TableLimits::default(),
            max_connections: 4096,
            max_connections_per_ip: 64,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            create_rate: 10.0,
            create_burst: 200.0,
            bind_ip: None,
            test_network: false,
            idle_link_timeout: Duration::from_secs(180),
            max_pending_streams: 512,
            max_pending_streams_per_circuit: 32,
            stream_idle_timeout: Duration::from_secs(600),
            write_timeout: Duration::from_secs(60),
            onion_rotation: Duration::from_secs(28 * 24 * 3600),
            key_dir: None,
            circuit_queue_cells: DEFAULT_CIRCUIT_QUEUE_ITEMS,
            max_queued_bytes: 64 * 1024 * 1024,
            write_stall_timeout: Duration::from_secs(30),
        }
    }
}

/// Everything the relay's tasks share.
pub struct RelayContext {
    /// Our keys.
    pub keys: RelayKeys,
    /// Our relay id.
    pub relay_id: RelayId,
    /// Our link certificate.
    pub cert: LinkCert,
    /// The exit policy (reject-all for non-exits).
    pub policy: ExitPolicy,
    /// Driver tunables.
    pub config: NetConfig,
    /// Counters for the metrics endpoint.
    pub metrics: Metrics,
    /// Whether the relay is shutting down.
    pub shutdown: watch::Receiver<bool>,
    /// Live links.
    registry: Mutex<Registry>,
    /// Next link id.
    next_link: AtomicU64,
    /// Connections per remote IP.
    per_ip: Mutex<HashMap<std::net::IpAddr, usize>>,
    /// CREATE token buckets per client IP (bounded, see [`MAX_CREATE_BUCKETS`]).
    create_buckets: Mutex<HashMap<std::net::IpAddr, TokenBucket>>,
    /// The directory task's inbox, if this relay runs one.
    pub dir_inbox: Option<mpsc::Sender<crate::net::cmd::DirCmd>>,
    /// The relays of the verified directory store.
    verified: Mutex<VerifiedView>,
    /// When the full CREATE bucket table was last swept.
    last_sweep: Mutex<Option<std::time::Instant>>,
    /// Exit streams resolving or connecting now, relay-wide.
    pub pending_streams: Arc<tokio::sync::Semaphore>,
    /// The onion keys CREATE is answered with (current and, during the
    /// overlap window, previous; spec §15.6).
    onion: std::sync::RwLock<OnionKeys>,
    /// Notified when every connection slot is taken: anonymous links that
    /// carry nothing (and handshakes) older than [`SHED_MIN_AGE`] close
    /// (spec §15.5).
    pub shed: Notify,
    /// Origin of the queues' millisecond clock.
    started: std::time::Instant,
    /// Cells queued in every link's queues (spec §6.6).
    /// Signed: a pop may be counted before the push it drains (each
    /// queue's change is recorded after its lock is released), so the sum
    /// can dip below zero for a moment; readers clamp it at zero.
    queued_cells: AtomicIsize,
    /// Whether a task is choosing circuits to kill for memory.
    reclaiming: AtomicBool,
    /// Circuits killed by a queue (bound passed or memory short).
    pub queue_kills: AtomicU64,
}

/// Connections younger than this are not shed.
pub const SHED_MIN_AGE: Duration = Duration::from_secs(2);

/// Most client IPs with a CREATE bucket; past it, full buckets are dropped.
pub const MAX_CREATE_BUCKETS: usize = 65_536;

/// A token bucket (tokens per second up to a burst).
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    /// Tokens now.
    tokens: f64,
    /// Last refill.
    last: std::time::Instant,
}

impl std::fmt::Debug for RelayContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayContext").field("relay_id", &self.relay_id).finish_non_exhaustive()
    }
}

impl RelayContext {
    /// A context for `keys` with `policy`.
    pub fn new(
        keys: RelayKeys,
        policy: ExitPolicy,
        config: NetConfig,
        shutdown: watch::Receiver<bool>,
        dir_inbox: Option<mpsc::Sender<crate::net::cmd::DirCmd>>,
    ) -> Arc<Self> {
        let relay_id = keys.identity.relay_id();
        let cert = LinkCert::new(&keys.identity, &keys.link.link_public());
        let previous = config.key_dir.as_deref().and_then(|d| crate::keys::load_previous_onion(d).ok().flatten());
        let onion = OnionKeys {
            current: Arc::new(StaticKeypair::from_secret_bytes(&keys.onion.secret_bytes())),
            previous: previous.map(Arc::new),
        };
        Arc::new(Self {
            keys,
            relay_id,
            cert,
            policy,
            config: config.clone(),
            metrics: Metrics::default(),
            shutdown,
            registry: Mutex::new(Registry::default()),
            next_link: AtomicU64::new(1),
            per_ip: Mutex::new(HashMap::new()),
            create_buckets: Mutex::new(HashMap::new()),
            dir_inbox,
            verified: Mutex::new(VerifiedView::default()),
            last_sweep: Mutex::new(None),
            pending_streams: Arc::new(tokio::sync::Semaphore::new(config.max_pending_streams)),
            shed: Notify::new(),
            onion: std::sync::RwLock::new(onion),
            started: std::time::Instant::now(),
            queued_cells: AtomicIsize::new(0),
            reclaiming: AtomicBool::new(false),
            queue_kills: AtomicU64::new(0),
        })
    }

    /// Milliseconds since the relay started (the queues' clock).
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Cells queued in all links' queues now.
    pub fn queued_cells(&self) -> usize {
        usize::try_from(self.queued_cells.load(Ordering::Acquire)).unwrap_or(0)
    }

    /// Record a queue's length change.
    fn account(&self, before: usize, after: usize) {
        let signed = |n: usize| isize::try_from(n).unwrap_or(isize::MAX);
        self.queued_cells.fetch_add(signed(after) - signed(before), Ordering::AcqRel);
    }

    /// Most cells all queues may hold (from `max_queued_bytes`).
    fn queued_cells_cap(&self) -> usize {
        (self.config.max_queued_bytes / CELL_LEN).max(1)
    }

    /// Past the memory cap, kill the circuits holding the oldest queued
    /// cells until the queues are back under 90% of it (spec §6.6). One
    /// task reclaims at a time; others carry on.
    fn enforce_memory_cap(&self) {
        let cap = self.queued_cells_cap();
        if self.queued_cells() <= cap || self.reclaiming.swap(true, Ordering::AcqRel) {
            return;
        }
        let target = cap / 10 * 9;
        let links: Vec<(LinkId, Arc<LinkQueues>)> = {
            let reg = lock(&self.registry);
            reg.links.iter().map(|(id, h)| (*id, Arc::clone(&h.queues))).collect()
        };
        let mut candidates = Vec::new();
        for (i, (_, queues)) in links.iter().enumerate() {
            for (circ, oldest, cells) in lock(&queues.out).occupancy() {
                candidates.push(((i, true, circ), oldest, cells));
            }
            for (circ, oldest, cells) in lock(&queues.back).occupancy() {
                candidates.push(((i, false, circ), oldest, cells));
            }
        }
        let to_free = self.queued_cells().saturating_sub(target);
        for (i, out, circ) in choose_victims(candidates, self.now_ms(), to_free) {
            let Some((_, queues)) = links.get(i) else { continue };
            let (before, after) = if out { queues.kill_out(circ) } else { queues.kill_back(circ) };
            self.account(before, after);
            self.queue_kills.fetch_add(1, Ordering::Relaxed);
            queues.reader_wake.notify_one();
            if out {
                queues.writer_wake.notify_one();
            }
        }
        self.reclaiming.store(false, Ordering::Release);
    }

    /// A fresh link id.
    pub fn allocate_link_id(&self) -> LinkId {
        LinkId(self.next_link.fetch_add(1, Ordering::Relaxed))
    }

    /// Register a live link, and the relay identity its certificate proved
    /// (with the certified link key), if any. A relay that already has a
    /// live registered link keeps it (spec §15.3).
    pub fn register(&self, id: LinkId, handle: LinkHandle, peer: Option<(RelayId, LinkPublicKey)>) {
        let mut reg = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        reg.links.insert(id, handle);
        if let Some((relay, key)) = peer {
            let live =
                reg.by_relay.get(&relay).is_some_and(|(l, _)| reg.links.get(l).is_some_and(|h| !h.inbox.is_closed()));
            if !live {
                reg.by_relay.insert(relay, (id, key));
            }
        }
    }

    /// Forget a link.
    pub fn deregister(&self, id: LinkId) {
        let mut reg = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        reg.links.remove(&id);
        reg.by_relay.retain(|_, (l, _)| *l != id);
    }

    /// The current onion keys.
    pub fn onion_keys(&self) -> OnionKeys {
        self.onion.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The public onion key to publish.
    pub fn onion_public(&self) -> lamina_crypto::keys::OnionPublicKey {
        self.onion.read().unwrap_or_else(std::sync::PoisonError::into_inner).current.onion_public()
    }

    /// Rotate: `fresh` becomes the current onion key, the current one the
    /// previous (accepted until the next rotation); the one before is dropped.
    pub fn rotate_onion(&self, fresh: StaticKeypair) {
        let mut keys = self.onion.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = std::mem::replace(&mut keys.current, Arc::new(fresh));
        keys.previous = Some(current);
    }

    /// Replace the view of the verified directory with `relays`, at most
    /// once per second unless the number of relays changed (the directory
    /// task calls this after every batch of work; spec §15.3).
    pub fn publish_directory(&self, count: usize, relays: impl FnOnce() -> Vec<(RelayId, KnownRelay)>) {
        let now = std::time::Instant::now();
        let mut view = self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let fresh = view.built.is_some_and(|t| now.duration_since(t) < VIEW_REFRESH);
        if fresh && view.relays.len() == count {
            return;
        }
        view.relays = relays().into_iter().collect();
        view.built = Some(now);
    }

    /// What the verified directory says about `relay`, if it is listed.
    pub fn known_relay(&self, relay: &RelayId) -> Option<KnownRelay> {
        self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner).relays.get(relay).cloned()
    }

    /// How many relays the link tasks' view of the verified directory lists.
    pub fn listed_count(&self) -> usize {
        self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner).relays.len()
    }

    /// Whether `relay` is listed in the verified directory (relay treatment
    /// follows from this evidence only, review M-2).
    pub fn is_listed(&self, relay: &RelayId) -> bool {
        self.verified.lock().unwrap_or_else(std::sync::PoisonError::into_inner).relays.contains_key(relay)
    }

    /// The handle of link `id`.
    pub fn link(&self, id: LinkId) -> Option<LinkHandle> {
        let reg = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        reg.links.get(&id).cloned()
    }

    /// A live link proven to be `relay`'s, if we have one.
    pub fn link_to(&self, relay: &RelayId) -> Option<(LinkId, LinkHandle)> {
        let reg = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (id, _) = *reg.by_relay.get(relay)?;
        reg.links.get(&id).filter(|h| !h.inbox.is_closed()).map(|h| (id, h.clone()))
    }

    /// A live link proven to be `relay`'s with link key `key`, if we have one.
    pub fn link_to_key(&self, relay: &RelayId, key: &LinkPublicKey) -> Option<(LinkId, LinkHandle)> {
        let reg = self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (id, proven) = *reg.by_relay.get(relay)?;
        if proven != *key {
            return None;
        }
        reg.links.get(&id).filter(|h| !h.inbox.is_closed()).map(|h| (id, h.clone()))
    }

    /// Number of live links.
    pub fn link_count(&self) -> usize {
        self.registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner).links.len()
    }

    /// Count a new connection from `ip`; false if over the per-IP limit
    /// (IPv6 addresses count per /64, review L-11).
    pub fn admit_ip(&self, ip: std::net::IpAddr) -> bool {
        let mut map = self.per_ip.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = map.entry(client_block(ip)).or_insert(0);
        if *n >= self.config.max_connections_per_ip {
            return false;
        }
        *n += 1;
        true
    }

    /// Take a CREATE token for client `ip`; false if it is over its rate.
    ///
    /// IPv6 clients share one bucket per /64 (review L-11: one host holds a
    /// whole /64). When the table is full, full buckets are swept at most
    /// once per second (not once per new client).
    pub fn take_create_token(&self, ip: std::net::IpAddr) -> bool {
        let (rate, burst) = (self.config.create_rate, self.config.create_burst);
        let now = std::time::Instant::now();
        let ip = client_block(ip);
        let mut map = self.create_buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_CREATE_BUCKETS && !map.contains_key(&ip) {
            let mut swept = self.last_sweep.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if swept.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1)) {
                return false;
            }
            *swept = Some(now);
            // Buckets that refilled completely carry no information: drop them.
            map.retain(|_, b| b.tokens + now.duration_since(b.last).as_secs_f64() * rate < burst);
            if map.len() >= MAX_CREATE_BUCKETS {
                return false;
            }
        }
        let bucket = map.entry(ip).or_insert(TokenBucket { tokens: burst, last: now });
        bucket.tokens = (bucket.tokens + now.duration_since(bucket.last).as_secs_f64() * rate).min(burst);
        bucket.last = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// A connection from `ip` ended.
    pub fn release_ip(&self, ip: std::net::IpAddr) {
        let ip = client_block(ip);
        let mut map = self.per_ip.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }
}

/// The address block a client is counted by: its IPv4 address, or its
/// IPv6 /64 (IPv4-mapped addresses count as IPv4).
pub fn client_block(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                std::net::IpAddr::V6(std::net::Ipv6Addr::from(octets))
            }
        },
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let a: std::net::IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: std::net::IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_block(a), client_block(b), "one /64, one bucket");
        assert_ne!(client_block(a), client_block(other));
        let mapped: std::net::IpAddr = "::ffff:198.51.100.9".parse().unwrap();
        assert_eq!(client_block(mapped), "198.51.100.9".parse::<std::net::IpAddr>().unwrap());
    }

    #[test]
    fn one_64_shares_one_create_bucket() {
        let (_tx, rx) = watch::channel(false);
        let config = NetConfig { create_rate: 0.001, create_burst: 3.0, ..NetConfig::default() };
        let ctx =
            RelayContext::new(RelayKeys::ephemeral(&mut rand_core::OsRng), ExitPolicy::reject_all(), config, rx, None);
        let granted =
            (0..10u16).filter(|i| ctx.take_create_token(format!("2001:db8:7:7::{i:x}").parse().unwrap())).count();
        assert_eq!(granted, 3, "ten addresses of one /64 share the burst of one bucket");
        assert!(ctx.take_create_token("2001:db8:7:8::1".parse().unwrap()), "the next /64 has its own");
    }
}
