//! Live links of a relay and the shared context every task sees.
//!
//! The registry is behind a `std::sync::Mutex` held only for map lookups and
//! inserts, never across `.await`; link tasks cache the handles they use, so
//! the cell path takes no lock (spec §6.4).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lamina_crypto::keys::{LinkPublicKey, RelayId, StaticKeypair};
use lamina_proto::cell::{Cell, CircId, DestroyReason};
use lamina_proto::circuit::relay::{LinkId, Route, TableLimits};
use lamina_proto::link::LinkCert;
use lamina_proto::msg::{EndReason, StreamId};
use tokio::sync::{mpsc, oneshot, watch};

use crate::exit_policy::ExitPolicy;
use crate::keys::RelayKeys;
use crate::metrics::Metrics;

/// Capacity of a link's command inbox.
pub const INBOX_CAPACITY: usize = 4096;
/// Capacity of a link's writer queue, in batches.
pub const WRITER_CAPACITY: usize = 1024;

/// A command for a link's reader task (which owns the circuit table).
#[derive(Debug)]
pub enum LinkCmd {
    /// Backward cells from the next hops of circuits owned here, each with
    /// the circuit id here and the route it arrived on.
    FromNext(Vec<(CircId, Route, Cell)>),
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
    /// Commands for the reader task.
    pub inbox: mpsc::Sender<LinkCmd>,
    /// Cells for the writer task.
    pub writer: mpsc::Sender<Vec<Cell>>,
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
    pub dir_inbox: Option<mpsc::Sender<crate::net::directory::DirCmd>>,
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
    pub shed: tokio::sync::Notify,
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
        dir_inbox: Option<mpsc::Sender<crate::net::directory::DirCmd>>,
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
            shed: tokio::sync::Notify::new(),
            onion: std::sync::RwLock::new(onion),
        })
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
