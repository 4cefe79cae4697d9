//! The circuit manager: which circuit a new stream uses, when to build one,
//! and how to recover (spec §10.1–10.3).
//!
//! - Circuits are built ahead of demand, so a first request does not wait
//!   for a three-hop build.
//! - A clean circuit is claimed by the first stream's isolation class
//!   (SOCKS credentials, as Tor's IsolateSOCKSAuth); streams of different
//!   classes never share a circuit; streams of one class share circuits.
//! - A circuit takes new streams only for `max_dirtiness` after its first
//!   stream; then it is retired for new streams.
//! - The first hop is a primary guard of the persistent guard sample
//!   (`guard`), never another relay; middle and exit are chosen compatible
//!   with it.
//! - A failed build is retried on another path; a guard whose link fails
//!   is down for a while; other failures count against the guard's path
//!   bias, never against the middle or exit; a stream refused by an exit's
//!   policy is retried once on another exit.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lamina_crypto::keys::RelayId;
use lamina_proto::cell::CircId;
use lamina_proto::circuit::client::HopSpec;
use lamina_proto::circuit::MAX_STREAMS_PER_CIRCUIT;
use lamina_proto::error::CircuitError;
use lamina_proto::msg::{EndReason, StreamId, Target};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::error::ClientError;
use crate::guard::{BiasVerdict, GuardChoice, GuardParams, GuardSet};
use crate::net::guard::{GuardLink, StreamEvent};
use crate::path::{is_public, select_path_through, RelayInfo};
use crate::pin::{pinned_path, PinnedPath};

/// A stream-isolation class: streams of different classes never share a
/// circuit. `None` is the class of requests without credentials.
pub type Isolation = Option<(Vec<u8>, Vec<u8>)>;

/// Client tunables.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Time allowed for a link handshake.
    pub link_timeout: Duration,
    /// Time allowed for a circuit build.
    pub build_timeout: Duration,
    /// Time allowed for an exit to answer BEGIN.
    pub connect_timeout: Duration,
    /// Clean circuits kept ready.
    pub prebuilt: usize,
    /// How long a circuit accepts new streams after its first one.
    pub max_dirtiness: Duration,
    /// How long a guard whose link failed is considered down before it is
    /// tried again (spec §10.5).
    pub avoid_for: Duration,
    /// Number of primary guards (spec §10.5).
    pub guards: usize,
    /// The rest of the guard manager's parameters (sample size, lifetime,
    /// path-bias thresholds); `guards` and `avoid_for` override theirs.
    pub guard_params: GuardParams,
    /// Where the guard sample is persisted (`None`: kept in memory only).
    pub guard_file: Option<std::path::PathBuf>,
    /// Most circuits the client holds (spec §10.2); past it idle claimed
    /// circuits are retired first, then the oldest claimed ones.
    pub max_circuits: usize,
    /// Most circuits one isolation class holds (spec §10.2).
    pub max_circuits_per_class: usize,
    /// Streams opened on one circuit before the class gets another one
    /// (spec §10.1; at most the protocol's per-circuit limit).
    pub streams_per_circuit: usize,
    /// CREATE cells per second the client sends to one guard (below the
    /// relays' default per-client rate, spec §10.3).
    pub create_rate: f64,
    /// CREATE burst towards one guard.
    pub create_burst: f64,
    /// A local test network: relays at loopback and private addresses are
    /// used. Without it such relays are left out of every path (spec §10.8).
    pub test_network: bool,
    /// Experiment setting: every circuit takes exactly this path (spec
    /// §10.9); `None`: normal path selection.
    pub pinned_path: Option<PinnedPath>,
}

impl ClientConfig {
    /// The defaults, on a local test network (`--test-network`).
    pub fn for_test_network() -> Self {
        Self { test_network: true, ..Self::default() }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            link_timeout: Duration::from_secs(10),
            build_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            prebuilt: 2,
            max_dirtiness: Duration::from_secs(600),
            avoid_for: Duration::from_secs(60),
            guards: 3,
            guard_params: GuardParams::default(),
            guard_file: None,
            max_circuits: 256,
            max_circuits_per_class: 8,
            streams_per_circuit: MAX_STREAMS_PER_CIRCUIT,
            create_rate: 8.0,
            create_burst: 150.0,
            test_network: false,
            pinned_path: None,
        }
    }
}

/// A built circuit known to the manager.
#[derive(Debug, Clone)]
struct Circuit {
    /// The guard link it runs on.
    link: GuardLink,
    /// Its id on that link.
    circ: CircId,
    /// Its path.
    path: Vec<HopSpec>,
    /// The isolation class that claimed it (`None` = clean).
    claimed: Option<Isolation>,
    /// When its first stream was attached.
    dirty_since: Option<Instant>,
    /// Streams open (or being opened) on it, counted by [`StreamSlot`]s.
    streams: Arc<AtomicUsize>,
}

impl Circuit {
    /// A freshly built, clean circuit.
    fn new(link: GuardLink, circ: CircId, path: Vec<HopSpec>) -> Self {
        Self { link, circ, path, claimed: None, dirty_since: None, streams: Arc::new(AtomicUsize::new(0)) }
    }

    /// Streams on it now.
    fn stream_count(&self) -> usize {
        self.streams.load(Ordering::Acquire)
    }

    /// Reserve a place for one more stream.
    fn reserve(&self) -> StreamSlot {
        self.streams.fetch_add(1, Ordering::AcqRel);
        StreamSlot(Arc::clone(&self.streams))
    }

    /// (guard, circuit id): unique among the client's circuits.
    fn key(&self) -> (Option<RelayId>, CircId) {
        (self.path.first().map(|h| h.relay_id), self.circ)
    }
}

/// One stream's place on a circuit: counted while it lives, so a class's
/// circuit that is full gets a sibling instead of a refused stream.
#[derive(Debug)]
struct StreamSlot(Arc<AtomicUsize>);

impl Drop for StreamSlot {
    /// The stream ended (or was never opened): free its place.
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a build failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Connecting to the guard (or its link died): the guard is down.
    Link,
    /// After the link: the circuit through the guard failed.
    Circuit,
}

/// What [`Client::choose_path`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPlan {
    /// Build along this path.
    Path(Vec<HopSpec>),
    /// Every primary guard is down: wait this long, then ask again.
    WaitForGuard(Duration),
}

/// Leave out relays at addresses that are not publicly routable, unless on
/// a local test network (spec §10.8).
fn admit_addresses(mut relays: Vec<RelayInfo>, test_network: bool) -> Vec<RelayInfo> {
    if !test_network {
        let before = relays.len();
        relays.retain(|r| is_public(r.hop.addr.ip()));
        if relays.len() < before {
            warn!(
                left_out = before - relays.len(),
                "relays at non-public addresses are not used (pass --test-network on a local test network)"
            );
        }
    }
    relays
}

/// Milliseconds since the Unix epoch (the guard manager's clock).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What [`Client::pick`] found for a new stream.
#[derive(Debug)]
enum Pick {
    /// Use this circuit; the slot is already reserved.
    Use(Circuit, StreamSlot),
    /// Build a new circuit for the class (the ticket marks the build as
    /// under way until dropped).
    Build(BuildTicket),
    /// A circuit for the class is being built: wait for it.
    Wait,
}

/// A build under way for an isolation class; other streams of the class
/// wait for it rather than starting builds of their own.
#[derive(Debug)]
struct BuildTicket {
    /// The manager.
    client: Client,
    /// The class.
    class: Isolation,
}

impl Drop for BuildTicket {
    /// The build finished (or failed).
    fn drop(&mut self) {
        let mut state = self.client.lock();
        if let Some(n) = state.building.get_mut(&self.class) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                state.building.remove(&self.class);
            }
        }
    }
}

/// A per-guard CREATE token bucket that queues instead of refusing: a
/// reservation may drive it negative, and the caller waits for the
/// returned time before sending its CREATE (spec §10.3).
#[derive(Debug, Clone, Copy)]
struct CreateBucket {
    /// Tokens now (negative: reservations waiting).
    tokens: f64,
    /// When `tokens` was computed.
    last: Instant,
}

impl CreateBucket {
    /// A full bucket.
    fn new(now: Instant, burst: f64) -> Self {
        Self { tokens: burst, last: now }
    }

    /// Take one token; returns how long to wait before using it.
    fn reserve(&mut self, now: Instant, rate: f64, burst: f64) -> Duration {
        let rate = rate.max(0.001);
        self.tokens = (self.tokens + now.saturating_duration_since(self.last).as_secs_f64() * rate).min(burst);
        self.last = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / rate)
        }
    }
}

/// Recent successful build times, for the learned build time-out.
#[derive(Debug, Default)]
struct BuildTimes {
    /// The last [`BUILD_SAMPLES`] build durations.
    samples: std::collections::VecDeque<Duration>,
}

/// Build durations remembered.
const BUILD_SAMPLES: usize = 100;
/// Samples needed before the time-out is learned rather than configured.
const BUILD_SAMPLES_MIN: usize = 20;
/// The learned time-out never goes below this.
const BUILD_TIMEOUT_FLOOR: Duration = Duration::from_millis(500);

impl BuildTimes {
    /// Remember one successful build.
    fn record(&mut self, took: Duration) {
        if self.samples.len() == BUILD_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(took);
    }

    /// The time-out to use: `configured` until enough builds were seen,
    /// then three times the 95th percentile, between the floor and
    /// `configured` (Tor learns its time-out from build times likewise).
    fn timeout(&self, configured: Duration) -> Duration {
        if self.samples.len() < BUILD_SAMPLES_MIN {
            return configured;
        }
        let mut sorted: Vec<Duration> = self.samples.iter().copied().collect();
        sorted.sort_unstable();
        let p95 = sorted[(sorted.len() * 95 / 100).min(sorted.len() - 1)];
        (p95 * 3).clamp(BUILD_TIMEOUT_FLOOR, configured.max(BUILD_TIMEOUT_FLOOR))
    }
}

/// Mutable manager state, behind a short-lived std mutex.
#[derive(Debug)]
struct State {
    /// Recent build times (learned time-out).
    build_times: BuildTimes,
    /// The relays of the current directory.
    relays: Vec<RelayInfo>,
    /// The guard manager (spec §10.5, §10.6).
    guards: GuardSet,
    /// Whether "every primary guard is down" was logged (reset on success).
    guards_down_logged: bool,
    /// Built circuits.
    circuits: Vec<Circuit>,
    /// Builds under way per isolation class (entries removed at zero).
    building: HashMap<Isolation, usize>,
    /// CREATE pacing per guard (bounded by the guards ever used: entries
    /// that refilled are dropped).
    create: HashMap<RelayId, CreateBucket>,
}

/// A Lamina client: builds circuits and opens streams through them.
#[derive(Debug, Clone)]
pub struct Client {
    /// Shared state.
    inner: Arc<Inner>,
}

/// The client's shared parts.
#[derive(Debug)]
struct Inner {
    /// Tunables.
    config: ClientConfig,
    /// Manager state.
    state: Mutex<State>,
    /// Live guard links.
    links: tokio::sync::Mutex<HashMap<RelayId, GuardLink>>,
}

/// An open stream through a circuit.
#[derive(Debug)]
pub struct ClientStream {
    /// The guard link.
    link: GuardLink,
    /// The circuit.
    circ: CircId,
    /// The stream.
    stream: StreamId,
    /// Events from the circuit.
    events: mpsc::Receiver<StreamEvent>,
    /// Its place on the circuit (freed when the stream is dropped).
    _slot: StreamSlot,
}

impl Client {
    /// A client over the relays of a verified directory. Its guard sample
    /// is read from `config.guard_file` if there is one, else starts from
    /// `guards` (may be empty), and is topped up from the directory.
    pub fn new(config: ClientConfig, relays: Vec<RelayInfo>, guards: Vec<RelayId>) -> Self {
        let relays = admit_addresses(relays, config.test_network);
        let mut params = config.guard_params;
        params.primary = config.guards.max(1);
        params.retry_ms = u64::try_from(config.avoid_for.as_millis()).unwrap_or(u64::MAX);
        let mut rng = rand_core::OsRng; // Fail closed (review M-4): no fixed seed.
        let now = now_ms();
        let text = config.guard_file.as_deref().and_then(|f| std::fs::read_to_string(f).ok()).unwrap_or_default();
        let mut set = GuardSet::from_text(params, &text, &mut rng, now);
        for id in guards {
            set.add(&mut rng, id, now);
        }
        set.update(&mut rng, &relays, now);
        let state = State {
            build_times: BuildTimes::default(),
            relays,
            guards: set,
            guards_down_logged: false,
            circuits: Vec::new(),
            building: HashMap::new(),
            create: HashMap::new(),
        };
        let client = Self {
            inner: Arc::new(Inner { config, state: Mutex::new(state), links: tokio::sync::Mutex::new(HashMap::new()) }),
        };
        client.persist_guards();
        client
    }

    /// Replace the directory (after a refresh): guards that left it are not
    /// used and are replaced in the sample.
    pub fn set_relays(&self, relays: Vec<RelayInfo>) {
        let relays = admit_addresses(relays, self.inner.config.test_network);
        {
            let mut state = self.lock();
            if let Ok(mut rng) = ChaCha20Rng::from_rng(rand_core::OsRng) {
                state.guards.update(&mut rng, &relays, now_ms());
            }
            state.relays = relays;
        }
        self.persist_guards();
    }

    /// The primary guards, in order (the first one up is used).
    pub fn guards(&self) -> Vec<RelayId> {
        self.lock().guards.primary()
    }

    /// The guard manager's state (tests, status).
    pub fn guard_set(&self) -> GuardSet {
        self.lock().guards.clone()
    }

    /// Write the guard sample to `guard_file` (atomically: write, rename).
    fn persist_guards(&self) {
        let Some(file) = &self.inner.config.guard_file else { return };
        let text = self.lock().guards.to_text();
        let tmp = file.with_extension("tmp");
        let written = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&tmp, text))
            .and_then(|()| std::fs::rename(&tmp, file));
        if let Err(e) = written {
            warn!(error = %e, "cannot persist the guard sample");
        }
    }

    /// Number of built circuits the manager holds.
    pub fn circuit_count(&self) -> usize {
        self.lock().circuits.len()
    }

    /// The circuit ids of every built circuit, per guard link (for tests of
    /// isolation): returns (guard, circuit id) pairs.
    pub fn circuits(&self) -> Vec<(RelayId, CircId)> {
        self.lock().circuits.iter().map(|c| (c.path[0].relay_id, c.circ)).collect()
    }

    /// The build time-out now in force (learned from recent builds).
    pub fn build_timeout(&self) -> Duration {
        self.lock().build_times.timeout(self.inner.config.build_timeout)
    }

    /// Which circuits each isolation class has claimed (tests of stream
    /// isolation): (class, circuits as (guard, circuit id on its link)).
    pub fn isolation_map(&self) -> Vec<(Isolation, Vec<(RelayId, CircId)>)> {
        let mut map: Vec<(Isolation, Vec<(RelayId, CircId)>)> = Vec::new();
        for c in &self.lock().circuits {
            let Some(class) = &c.claimed else { continue };
            let key = (c.path[0].relay_id, c.circ);
            match map.iter_mut().find(|(k, _)| k == class) {
                Some((_, ids)) => ids.push(key),
                None => map.push((class.clone(), vec![key])),
            }
        }
        map
    }

    /// Keep `prebuilt` clean circuits ready; returns how many are ready.
    pub async fn ensure_prebuilt(&self) -> usize {
        let want = self.inner.config.prebuilt;
        let mut ready = self.clean_count();
        let mut attempts = 0;
        while ready < want && attempts < want * 3 {
            attempts += 1;
            match self.build(None, &[]).await {
                Ok(c) => {
                    self.lock().circuits.push(c);
                    ready += 1;
                }
                Err(e) => debug!(error = %e, "pre-building a circuit failed"),
            }
        }
        ready
    }

    /// Build one circuit for any exit and close it again; returns how long
    /// the build took (benchmarks and health checks).
    pub async fn probe_build(&self) -> Result<Duration, ClientError> {
        let started = Instant::now();
        let circuit = self.build(None, &[]).await?;
        let took = started.elapsed();
        circuit.link.close(circuit.circ).await;
        Ok(took)
    }

    /// Open a stream to `target:port` in isolation class `isolation`.
    pub async fn connect(&self, target: Target, port: u16, isolation: Isolation) -> Result<ClientStream, ClientError> {
        let mut refused_by: Vec<RelayId> = Vec::new();
        let mut full: Vec<(Option<RelayId>, CircId)> = Vec::new();
        let mut last = ClientError::NoPath("no attempt made");
        let mut attempts = 0;
        let waiting_since = Instant::now();
        while attempts < 4 {
            let (circuit, slot) = match self.pick(port, &isolation, &refused_by, &full)? {
                Pick::Use(c, slot) => (c, slot),
                Pick::Wait if waiting_since.elapsed() < self.inner.config.build_timeout * 3 => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Pick::Wait => return Err(ClientError::Timeout("waiting for a circuit of this class")),
                Pick::Build(ticket) => {
                    let built = self.build(Some(port), &refused_by).await;
                    drop(ticket);
                    let mut c = built?;
                    c.claimed = Some(isolation.clone());
                    c.dirty_since = Some(Instant::now());
                    let slot = c.reserve();
                    self.lock().circuits.push(c.clone());
                    (c, slot)
                }
            };
            attempts += 1;
            match self.try_stream(&circuit, target.clone(), port, slot).await {
                Ok(stream) => {
                    self.spawn_prebuild();
                    return Ok(stream);
                }
                Err(ClientError::StreamEnded(reason @ (EndReason::ExitPolicy | EndReason::NotExit))) => {
                    // Policy refusal: retry once on another exit.
                    if let Some(exit) = circuit.path.last() {
                        refused_by.push(exit.relay_id);
                    }
                    last = ClientError::StreamEnded(reason);
                    if refused_by.len() > 1 {
                        break;
                    }
                }
                Err(e @ ClientError::StreamEnded(_)) => return Err(e),
                Err(e @ ClientError::Circuit(CircuitError::Limit { .. })) => {
                    // Full (ended streams not yet reaped): the circuit and
                    // its live streams stay; use or build another one.
                    full.push(circuit.key());
                    last = e;
                }
                Err(e) => {
                    // The circuit is unusable: forget it and try a fresh one.
                    self.forget(&circuit);
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Open a stream on `circuit` and wait for CONNECTED.
    async fn try_stream(
        &self,
        circuit: &Circuit,
        target: Target,
        port: u16,
        slot: StreamSlot,
    ) -> Result<ClientStream, ClientError> {
        let (stream, mut events) = circuit.link.begin(circuit.circ, target, port).await?;
        let answer = tokio::time::timeout(self.inner.config.connect_timeout, events.recv()).await;
        match answer {
            Ok(Some(StreamEvent::Connected)) => {
                Ok(ClientStream { link: circuit.link.clone(), circ: circuit.circ, stream, events, _slot: slot })
            }
            Ok(Some(StreamEvent::Ended(reason))) => Err(ClientError::StreamEnded(reason)),
            Ok(Some(StreamEvent::Data(_))) => Err(ClientError::Internal("data before connected")),
            Ok(None) => Err(ClientError::CircuitClosed),
            Err(_) => {
                circuit.link.end(circuit.circ, stream).await;
                Err(ClientError::StreamEnded(EndReason::Timeout))
            }
        }
    }

    /// A usable circuit for this class and port with room for a stream
    /// (claiming a clean one if needed), or `Build` when the class may have
    /// another circuit (spec §10.1, §10.2).
    fn pick(
        &self,
        port: u16,
        isolation: &Isolation,
        refused_by: &[RelayId],
        full: &[(Option<RelayId>, CircId)],
    ) -> Result<Pick, ClientError> {
        let config = &self.inner.config;
        let per_circuit = config.streams_per_circuit.clamp(1, MAX_STREAMS_PER_CIRCUIT);
        let mut state = self.lock();
        self.retire_excess(&mut state);
        let relays = &state.relays;
        let usable = |c: &Circuit| {
            c.stream_count() < per_circuit
                && !full.contains(&c.key())
                && c.path.last().is_some_and(|exit| {
                    !refused_by.contains(&exit.relay_id)
                        && relays.iter().any(|r| r.hop.relay_id == exit.relay_id && r.exits_to(port))
                })
        };
        if let Some(c) = state.circuits.iter().find(|c| c.claimed.as_ref() == Some(isolation) && usable(c)) {
            let slot = c.reserve();
            return Ok(Pick::Use(c.clone(), slot));
        }
        let class_count = state.circuits.iter().filter(|c| c.claimed.as_ref() == Some(isolation)).count();
        let building = state.building.get(isolation).copied().unwrap_or(0);
        if building > 0 {
            return Ok(Pick::Wait);
        }
        if class_count >= config.max_circuits_per_class.max(1) {
            return Err(ClientError::Busy("this isolation class has its most circuits, all full"));
        }
        let Some(index) = state.circuits.iter().position(|c| c.claimed.is_none() && usable(c)) else {
            *state.building.entry(isolation.clone()).or_insert(0) += 1;
            return Ok(Pick::Build(BuildTicket { client: self.clone(), class: isolation.clone() }));
        };
        let clean = &mut state.circuits[index];
        clean.claimed = Some(isolation.clone());
        clean.dirty_since = Some(Instant::now());
        let slot = clean.reserve();
        Ok(Pick::Use(clean.clone(), slot))
    }

    /// Retire circuits past their dirtiness, and claimed ones beyond the
    /// pool cap, idle ones first then the oldest (spec §10.2): they take no
    /// new streams and are closed by their link once idle.
    fn retire_excess(&self, state: &mut State) {
        let config = &self.inner.config;
        state.circuits.retain(|c| !c.link.is_closed());
        let mut retired: Vec<Circuit> = Vec::new();
        let max = config.max_dirtiness;
        let (old, young): (Vec<Circuit>, Vec<Circuit>) = std::mem::take(&mut state.circuits)
            .into_iter()
            .partition(|c| c.dirty_since.is_some_and(|t| t.elapsed() >= max));
        retired.extend(old);
        state.circuits = young;
        let mut excess = state.circuits.len().saturating_sub(config.max_circuits.max(1));
        // Idle claimed circuits first, then the oldest claimed ones.
        for idle_only in [true, false] {
            let mut i = 0;
            while excess > 0 && i < state.circuits.len() {
                let c = &state.circuits[i];
                if c.claimed.is_some() && (!idle_only || c.stream_count() == 0) {
                    retired.push(state.circuits.remove(i));
                    excess -= 1;
                } else {
                    i += 1;
                }
            }
        }
        for c in retired {
            tokio::spawn(async move { c.link.retire(c.circ).await });
        }
    }

    /// Choose the path of a new circuit: the guard first (guard manager),
    /// then middle and exit compatible with it. This is the one place a
    /// path is chosen: a pinned-path experiment can bypass it here.
    pub fn choose_path(&self, port: Option<u16>, avoid_exits: &[RelayId]) -> Result<PathPlan, ClientError> {
        let state = self.lock();
        let now = now_ms();
        match state.guards.choose(now) {
            GuardChoice::Use(_) => {}
            GuardChoice::Wait { until_ms } => {
                return Ok(PathPlan::WaitForGuard(Duration::from_millis(until_ms.saturating_sub(now).max(1))))
            }
            GuardChoice::NoGuard => return Err(ClientError::NoPath("no usable guard in the sample")),
        }
        let mut rng = ChaCha20Rng::from_rng(rand_core::OsRng).map_err(|_| ClientError::Internal("rng"))?;
        let mut last = ClientError::NoPath("no primary guard is up");
        // The first primary guard that is up; the next only if no path fits.
        for guard in state.guards.up_primaries(now) {
            let Some(info) = state.guards.info(guard) else { continue };
            match select_path_through(&mut rng, &state.relays, info, port, avoid_exits) {
                Ok(path) => return Ok(PathPlan::Path(path)),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Build a circuit for `port`, trying other paths on failure. The first
    /// hop is always a primary guard: when all are down, wait (and say so)
    /// for up to three build time-outs (spec §10.5).
    async fn build(&self, port: Option<u16>, avoid_exits: &[RelayId]) -> Result<Circuit, ClientError> {
        // Experiment setting (spec §10.9): exactly the pinned path, no fallback.
        if let Some(pin) = self.inner.config.pinned_path {
            let path = pinned_path(&self.lock().relays, &pin, port)?;
            let (link, circ) = self.build_on(&path).await.map_err(|(_, e)| e)?;
            return Ok(Circuit::new(link, circ, path));
        }
        let mut last = ClientError::NoPath("no attempt made");
        let deadline = Instant::now() + self.inner.config.build_timeout * 3;
        let mut attempts = 0;
        while attempts < 3 {
            let path = match self.choose_path(port, avoid_exits)? {
                PathPlan::Path(path) => path,
                PathPlan::WaitForGuard(wait) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(ClientError::Timeout("every primary guard is down"));
                    }
                    if !std::mem::replace(&mut self.lock().guards_down_logged, true) {
                        warn!("every primary guard is down: waiting and retrying them (no other first hop is used)");
                    }
                    tokio::time::sleep(wait.min(Duration::from_millis(250)).min(deadline - now)).await;
                    continue;
                }
            };
            let Some(guard) = path.first().map(|h| h.relay_id) else { return Err(ClientError::NoPath("empty path")) };
            match self.build_on(&path).await {
                Ok((link, circ)) => {
                    self.guard_outcome(guard, Some(true));
                    return Ok(Circuit::new(link, circ, path));
                }
                Err((stage, e)) => {
                    debug!(error = %e, "circuit build failed");
                    // Blame (spec §10.6): a link failure marks the guard
                    // down; any later failure counts against the guard's
                    // path bias, never against the middle or exit.
                    self.guard_outcome(guard, if stage == Stage::Link { None } else { Some(false) });
                    // A guard that cannot be reached costs no attempt: the
                    // client waits for its primary guards until the deadline.
                    if stage == Stage::Circuit || Instant::now() >= deadline {
                        attempts += 1;
                    }
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Record a build's outcome at `guard`: `None` = its link failed,
    /// `Some(built)` = a circuit was attempted through it.
    fn guard_outcome(&self, guard: RelayId, built: Option<bool>) {
        let verdict = {
            let mut state = self.lock();
            match built {
                None => {
                    state.guards.mark_down(guard, now_ms());
                    BiasVerdict::Fine
                }
                Some(built) => {
                    state.guards.mark_up(guard);
                    if built && std::mem::replace(&mut state.guards_down_logged, false) {
                        info!("a primary guard is reachable again");
                    }
                    state.guards.record_circuit(guard, built)
                }
            }
        };
        match verdict {
            BiasVerdict::Fine => {}
            BiasVerdict::Warn(id, rate) => {
                warn!(guard = %id.to_hex(), success_pct = rate, "path bias: few circuits through this guard succeed");
            }
            BiasVerdict::Disabled(id, rate) => {
                warn!(guard = %id.to_hex(), success_pct = rate, "path bias: too few circuits through this guard succeed; no longer using it");
                let relays = self.lock().relays.clone();
                self.set_relays(relays);
            }
        }
        self.persist_guards();
    }

    /// Build along `path`, opening or reusing the guard link.
    async fn build_on(&self, path: &[HopSpec]) -> Result<(GuardLink, CircId), (Stage, ClientError)> {
        let guard = path.first().ok_or((Stage::Link, ClientError::NoPath("empty path")))?;
        let link = {
            let mut links = self.inner.links.lock().await;
            match links.get(&guard.relay_id) {
                Some(link) if !link.is_closed() => link.clone(),
                _ => {
                    let link = GuardLink::connect(guard, self.inner.config.link_timeout)
                        .await
                        .map_err(|e| (Stage::Link, e))?;
                    links.insert(guard.relay_id, link.clone());
                    link
                }
            }
        };
        // Stay within the guard's CREATE rate: wait our turn, never be refused.
        let wait = self.create_wait(guard.relay_id);
        if !wait.is_zero() {
            debug!(wait_ms = wait.as_millis(), "pacing CREATE cells to the guard");
            tokio::time::sleep(wait).await;
        }
        let timeout = self.lock().build_times.timeout(self.inner.config.build_timeout);
        let started = Instant::now();
        let circ = link.build(path.to_vec(), timeout).await.map_err(|e| match e {
            ClientError::LinkClosed => (Stage::Link, e),
            e => (Stage::Circuit, e),
        })?;
        let took = started.elapsed();
        debug!(took_ms = took.as_secs_f64() * 1000.0, "circuit built");
        self.lock().build_times.record(took);
        Ok((link, circ))
    }

    /// Reserve a CREATE token at `guard`; how long to wait before using it.
    fn create_wait(&self, guard: RelayId) -> Duration {
        let (rate, burst) = (self.inner.config.create_rate, self.inner.config.create_burst.max(1.0));
        let now = Instant::now();
        let mut state = self.lock();
        // Full buckets carry no information (bounds the table).
        state.create.retain(|_, b| b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst);
        state.create.entry(guard).or_insert_with(|| CreateBucket::new(now, burst)).reserve(now, rate, burst)
    }

    /// Drop a circuit from the pool and close it.
    fn forget(&self, circuit: &Circuit) {
        self.lock().circuits.retain(|c| !(c.circ == circuit.circ && c.path == circuit.path));
        let link = circuit.link.clone();
        let circ = circuit.circ;
        tokio::spawn(async move { link.close(circ).await });
    }

    /// Top up the clean circuits in the background.
    fn spawn_prebuild(&self) {
        if self.clean_count() < self.inner.config.prebuilt {
            let client = self.clone();
            tokio::spawn(async move {
                client.ensure_prebuilt().await;
            });
        }
    }

    /// Clean circuits available.
    fn clean_count(&self) -> usize {
        self.lock().circuits.iter().filter(|c| c.claimed.is_none() && !c.link.is_closed()).count()
    }

    /// Lock the state (never held across `.await`).
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// What [`ClientStream::pump_with`] does besides copying bytes.
#[derive(Default)]
pub struct PumpOptions {
    /// Called once when the application half-closes (or closes) its side.
    pub on_half_close: Option<Box<dyn FnOnce() + Send>>,
    /// After the half-close: end the stream when no reply byte comes for
    /// this long (`None`: wait for the exit).
    pub half_closed_idle: Option<Duration>,
}

impl std::fmt::Debug for PumpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PumpOptions")
            .field("on_half_close", &self.on_half_close.is_some())
            .field("half_closed_idle", &self.half_closed_idle)
            .finish()
    }
}

/// Copy the application's bytes to the stream; at its EOF half-close the
/// stream and say so on `half_closed`; on an error end the stream.
async fn upload(
    mut reader: tokio::net::tcp::OwnedReadHalf,
    link: GuardLink,
    circ: CircId,
    stream: StreamId,
    half_closed: tokio::sync::oneshot::Sender<()>,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match reader.read(&mut buf).await {
            // EOF: half-close, the reply keeps flowing (spec §7.5).
            Ok(0) => {
                link.half_close(circ, stream).await;
                let _ = half_closed.send(());
                return;
            }
            Err(_) => break,
            Ok(n) => {
                if link.send(circ, stream, buf[..n].to_vec()).await.is_err() {
                    break;
                }
            }
        }
    }
    link.end(circ, stream).await;
}

/// Sleep for `limit`, or forever when there is none.
async fn sleep_or_forever(limit: Option<Duration>) {
    match limit {
        Some(limit) if limit < Duration::from_secs(365 * 24 * 3600) => tokio::time::sleep(limit).await,
        _ => std::future::pending().await,
    }
}

impl ClientStream {
    /// The circuit this stream runs on.
    pub fn circuit(&self) -> CircId {
        self.circ
    }

    /// Copy bytes both ways between this stream and `socket` until either
    /// side ends.
    pub async fn pump(self, socket: TcpStream) {
        self.pump_with(socket, PumpOptions::default()).await;
    }

    /// As [`pump`](Self::pump), telling `options.on_half_close` when the
    /// application ends its side, and ending the stream if, after that, no
    /// reply byte comes for `options.half_closed_idle` (spec §10.4).
    pub async fn pump_with(mut self, socket: TcpStream, mut options: PumpOptions) {
        let (link, circ, stream) = (self.link.clone(), self.circ, self.stream);
        let (reader, mut writer) = socket.into_split();
        let (half_closed_tx, mut half_closed) = tokio::sync::oneshot::channel::<()>();
        let upload = tokio::spawn(upload(reader, link.clone(), circ, stream, half_closed_tx));
        let mut batch = Vec::with_capacity(256 * 1024);
        let mut ended = false;
        let mut idle_limit: Option<Duration> = None;
        let mut upload_done = false;
        loop {
            let first = tokio::select! {
                ev = self.events.recv() => ev,
                half = &mut half_closed, if !upload_done => {
                    upload_done = true;
                    if half.is_ok() {
                        if let Some(notify) = options.on_half_close.take() {
                            notify();
                        }
                        idle_limit = options.half_closed_idle;
                    }
                    continue;
                }
                () = sleep_or_forever(idle_limit) => {
                    debug!("half-closed stream idle past its limit: ending it");
                    break;
                }
            };
            let Some(first) = first else { break };
            // Gather every DATA cell already queued into one write.
            let mut cells = 0u32;
            batch.clear();
            let mut next = Some(first);
            while let Some(ev) = next.take() {
                match ev {
                    StreamEvent::Data(data) => {
                        batch.extend_from_slice(&data);
                        cells += 1;
                    }
                    StreamEvent::Ended(_) => ended = true,
                    StreamEvent::Connected => {}
                }
                if !ended && batch.len() < 256 * 1024 {
                    next = self.events.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                let written = writer.write_all(&batch).await;
                // Counted as consumed even when the application is gone:
                // the circuit's credit must come back either way.
                link.consumed(circ, stream, cells).await;
                if written.is_err() {
                    break;
                }
            }
            if ended {
                break;
            }
        }
        let _ = writer.shutdown().await;
        upload.abort();
        self.release_undelivered().await;
        link.end(circ, stream).await;
    }

    /// Cells already delivered to us but never written (the application
    /// went away) still count as consumed, so their circuit credit is
    /// returned before the stream ends (issue 10: aborted downloads must
    /// not stall their circuit).
    async fn release_undelivered(&mut self) {
        let mut undelivered = 0u32;
        while let Ok(ev) = self.events.try_recv() {
            if matches!(ev, StreamEvent::Data(_)) {
                undelivered = undelivered.saturating_add(1);
            }
        }
        if undelivered > 0 {
            self.link.consumed(self.circ, self.stream, undelivered).await;
        }
    }

    /// Read the next chunk of stream bytes (for library users); `None` at the end.
    pub async fn read_chunk(&mut self) -> Option<Vec<u8>> {
        loop {
            match self.events.recv().await? {
                StreamEvent::Data(data) => {
                    self.link.consumed(self.circ, self.stream, 1).await;
                    return Some(data);
                }
                StreamEvent::Ended(_) => return None,
                StreamEvent::Connected => {}
            }
        }
    }

    /// Send bytes (returns once packaged into cells).
    pub async fn write_all(&self, data: &[u8]) -> Result<(), ClientError> {
        self.link.send(self.circ, self.stream, data.to_vec()).await
    }
}

impl Drop for ClientStream {
    /// A stream whose owner goes away is ended, so its circuit can go idle.
    fn drop(&mut self) {
        self.link.end_detached(self.circ, self.stream);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_pacing_queues_past_the_burst_instead_of_refusing() {
        let start = Instant::now();
        let mut bucket = CreateBucket::new(start, 3.0);
        for _ in 0..3 {
            assert_eq!(bucket.reserve(start, 2.0, 3.0), Duration::ZERO, "within the burst: no wait");
        }
        // Past the burst each CREATE waits its turn at 2 per second.
        assert_eq!(bucket.reserve(start, 2.0, 3.0), Duration::from_millis(500));
        assert_eq!(bucket.reserve(start, 2.0, 3.0), Duration::from_secs(1));
        // Time refills the bucket; it never holds more than the burst.
        let later = start + Duration::from_secs(100);
        for _ in 0..3 {
            assert_eq!(bucket.reserve(later, 2.0, 3.0), Duration::ZERO);
        }
        assert!(bucket.reserve(later, 2.0, 3.0) > Duration::ZERO);
    }

    #[test]
    fn stream_slots_count_live_streams() {
        let counter = Arc::new(AtomicUsize::new(0));
        let a = StreamSlot({
            counter.fetch_add(1, Ordering::AcqRel);
            Arc::clone(&counter)
        });
        let b = StreamSlot({
            counter.fetch_add(1, Ordering::AcqRel);
            Arc::clone(&counter)
        });
        assert_eq!(counter.load(Ordering::Acquire), 2);
        drop(a);
        assert_eq!(counter.load(Ordering::Acquire), 1);
        drop(b);
        assert_eq!(counter.load(Ordering::Acquire), 0);
    }

    #[test]
    fn build_timeout_is_learned_from_recent_builds() {
        let mut times = BuildTimes::default();
        let configured = Duration::from_secs(10);
        for _ in 0..BUILD_SAMPLES_MIN - 1 {
            times.record(Duration::from_millis(2));
        }
        assert_eq!(times.timeout(configured), configured, "not enough samples yet");
        times.record(Duration::from_millis(2));
        assert_eq!(times.timeout(configured), BUILD_TIMEOUT_FLOOR, "fast builds: the floor");
        for _ in 0..BUILD_SAMPLES {
            times.record(Duration::from_millis(400));
        }
        assert_eq!(times.timeout(configured), Duration::from_millis(1200));
        for _ in 0..BUILD_SAMPLES {
            times.record(Duration::from_secs(30));
        }
        assert_eq!(times.timeout(configured), configured, "never above the configured maximum");
    }
}
