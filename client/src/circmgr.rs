//! The circuit manager: which circuit a new stream uses, when to build one,
//! and how to recover (DESIGN.md §4 "Client proxy", "Circuits").
//!
//! - Circuits are built ahead of demand, so a first request does not wait
//!   for a three-hop build.
//! - A clean circuit is claimed by the first stream's isolation class
//!   (SOCKS credentials, as Tor's IsolateSOCKSAuth); streams of different
//!   classes never share a circuit; streams of one class share circuits.
//! - A circuit takes new streams only for `max_dirtiness` after its first
//!   stream; then it is retired for new streams.
//! - A failed build is retried on another path; a relay that keeps failing
//!   is avoided for a while; a stream refused by an exit's policy is retried
//!   once on another exit.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lamina_crypto::keys::RelayId;
use lamina_proto::cell::CircId;
use lamina_proto::circuit::client::HopSpec;
use lamina_proto::msg::{EndReason, StreamId, Target};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tracing::debug;

use crate::error::ClientError;
use crate::net::guard::{GuardLink, StreamEvent};
use crate::path::{choose_guards, select_path, RelayInfo};
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
    /// How long a failing relay is avoided.
    pub avoid_for: Duration,
    /// Number of guards in the guard set.
    pub guards: usize,
    /// Experiment setting: every circuit takes exactly this path (spec
    /// §10.9); `None`: normal path selection.
    pub pinned_path: Option<PinnedPath>,
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

/// Most circuits the manager holds; past it the oldest claimed ones are
/// retired (closed once idle), so many isolation classes cannot grow the
/// pool without bound.
const MAX_POOL: usize = 256;

/// Mutable manager state, behind a short-lived std mutex.
#[derive(Debug, Default)]
struct State {
    /// Recent build times (learned time-out).
    build_times: BuildTimes,
    /// The relays of the current directory.
    relays: Vec<RelayInfo>,
    /// The guard set.
    guards: Vec<RelayId>,
    /// Built circuits.
    circuits: Vec<Circuit>,
    /// Relays to avoid until the given time.
    avoid: HashMap<RelayId, Instant>,
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
}

impl Client {
    /// A client over the relays of a verified directory.
    pub fn new(config: ClientConfig, relays: Vec<RelayInfo>, guards: Vec<RelayId>) -> Self {
        let mut state = State { relays, guards, ..State::default() };
        if state.guards.is_empty() {
            let mut rng = ChaCha20Rng::from_rng(rand_core::OsRng).unwrap_or_else(|_| ChaCha20Rng::from_seed([7; 32]));
            state.guards = choose_guards(&mut rng, &state.relays, config.guards);
        }
        Self {
            inner: Arc::new(Inner { config, state: Mutex::new(state), links: tokio::sync::Mutex::new(HashMap::new()) }),
        }
    }

    /// Replace the directory (after a refresh).
    pub fn set_relays(&self, relays: Vec<RelayInfo>) {
        self.lock().relays = relays;
    }

    /// The guard set (to persist).
    pub fn guards(&self) -> Vec<RelayId> {
        self.lock().guards.clone()
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
        let mut last = ClientError::NoPath("no attempt made");
        for _ in 0..3 {
            let circuit = match self.pick(port, &isolation, &refused_by) {
                Some(c) => c,
                None => {
                    let mut c = self.build(Some(port), &refused_by).await?;
                    c.claimed = Some(isolation.clone());
                    c.dirty_since = Some(Instant::now());
                    self.lock().circuits.push(c.clone());
                    c
                }
            };
            match self.try_stream(&circuit, target.clone(), port).await {
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
    async fn try_stream(&self, circuit: &Circuit, target: Target, port: u16) -> Result<ClientStream, ClientError> {
        let (stream, mut events) = circuit.link.begin(circuit.circ, target, port).await?;
        let answer = tokio::time::timeout(self.inner.config.connect_timeout, events.recv()).await;
        match answer {
            Ok(Some(StreamEvent::Connected)) => {
                Ok(ClientStream { link: circuit.link.clone(), circ: circuit.circ, stream, events })
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

    /// A usable circuit for this class and port, claiming a clean one if needed.
    fn pick(&self, port: u16, isolation: &Isolation, refused_by: &[RelayId]) -> Option<Circuit> {
        let max = self.inner.config.max_dirtiness;
        let mut state = self.lock();
        let relays = state.relays.clone();
        state.circuits.retain(|c| !c.link.is_closed());
        // Retire circuits past their dirtiness (and the oldest ones beyond
        // the pool cap): no new streams; closed by the link once idle.
        let excess = state.circuits.len().saturating_sub(MAX_POOL);
        let mut retired = Vec::new();
        let mut index = 0;
        state.circuits.retain(|c| {
            index += 1;
            let old = c.dirty_since.is_some_and(|t| t.elapsed() >= max);
            let keep = !old && index > excess;
            if !keep {
                retired.push((c.link.clone(), c.circ));
            }
            keep
        });
        for (link, circ) in retired {
            tokio::spawn(async move { link.retire(circ).await });
        }
        let exits_to = |c: &Circuit| {
            c.path.last().is_some_and(|exit| {
                !refused_by.contains(&exit.relay_id)
                    && relays.iter().any(|r| r.hop.relay_id == exit.relay_id && r.exits_to(port))
            })
        };
        // Circuits past their dirtiness were retired just above.
        if let Some(c) = state.circuits.iter().find(|c| c.claimed.as_ref() == Some(isolation) && exits_to(c)) {
            return Some(c.clone());
        }
        let clean = state.circuits.iter_mut().find(|c| c.claimed.is_none() && exits_to(c))?;
        clean.claimed = Some(isolation.clone());
        clean.dirty_since = Some(Instant::now());
        Some(clean.clone())
    }

    /// Build a circuit for `port`, trying other paths on failure.
    async fn build(&self, port: Option<u16>, avoid_exits: &[RelayId]) -> Result<Circuit, ClientError> {
        // Experiment setting (spec §10.9): exactly the pinned path, no fallback.
        if let Some(pin) = self.inner.config.pinned_path {
            let path = pinned_path(&self.lock().relays, &pin, port)?;
            let (link, circ) = self.build_on(&path).await?;
            return Ok(Circuit { link, circ, path, claimed: None, dirty_since: None });
        }
        let mut last = ClientError::NoPath("no attempt made");
        for _ in 0..3 {
            let path = {
                let mut state = self.lock();
                let now = Instant::now();
                state.avoid.retain(|_, until| *until > now);
                let mut avoid: Vec<RelayId> = state.avoid.keys().copied().collect();
                avoid.extend_from_slice(avoid_exits);
                let mut rng = ChaCha20Rng::from_rng(rand_core::OsRng).map_err(|_| ClientError::Internal("rng"))?;
                // Avoiding failing relays must never leave no path at all.
                select_path(&mut rng, &state.relays, &state.guards, port, &avoid)
                    .or_else(|_| select_path(&mut rng, &state.relays, &state.guards, port, avoid_exits))?
            };
            match self.build_on(&path).await {
                Ok((link, circ)) => return Ok(Circuit { link, circ, path, claimed: None, dirty_since: None }),
                Err(e) => {
                    debug!(error = %e, "circuit build failed; avoiding the failing relay for a while");
                    let until = Instant::now() + self.inner.config.avoid_for;
                    // Blame the hop that failed: the guard for link
                    // failures, the hop being added for a failed extension.
                    let blamed = match &e {
                        ClientError::BuildFailed { failed_hop, .. } => path.get(*failed_hop),
                        ClientError::Timeout(_) | ClientError::Circuit(_) => path.last(),
                        _ => path.first(),
                    };
                    if let Some(hop) = blamed {
                        self.lock().avoid.insert(hop.relay_id, until);
                    }
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Build along `path`, opening or reusing the guard link.
    async fn build_on(&self, path: &[HopSpec]) -> Result<(GuardLink, CircId), ClientError> {
        let guard = path.first().ok_or(ClientError::NoPath("empty path"))?;
        let link = {
            let mut links = self.inner.links.lock().await;
            match links.get(&guard.relay_id) {
                Some(link) if !link.is_closed() => link.clone(),
                _ => {
                    let link = GuardLink::connect(guard, self.inner.config.link_timeout).await?;
                    links.insert(guard.relay_id, link.clone());
                    link
                }
            }
        };
        let timeout = self.lock().build_times.timeout(self.inner.config.build_timeout);
        let started = Instant::now();
        let circ = link.build(path.to_vec(), timeout).await?;
        let took = started.elapsed();
        debug!(took_ms = took.as_secs_f64() * 1000.0, "circuit built");
        self.lock().build_times.record(took);
        Ok((link, circ))
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

impl ClientStream {
    /// The circuit this stream runs on.
    pub fn circuit(&self) -> CircId {
        self.circ
    }

    /// Copy bytes both ways between this stream and `socket` until either
    /// side ends.
    pub async fn pump(mut self, socket: TcpStream) {
        let (link, circ, stream) = (self.link.clone(), self.circ, self.stream);
        let (mut reader, mut writer) = socket.into_split();
        let up_link = link.clone();
        let upload = tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match reader.read(&mut buf).await {
                    // EOF: half-close, the reply keeps flowing (spec §7.5).
                    Ok(0) => {
                        up_link.half_close(circ, stream).await;
                        return;
                    }
                    Err(_) => break,
                    Ok(n) => {
                        if up_link.send(circ, stream, buf[..n].to_vec()).await.is_err() {
                            break;
                        }
                    }
                }
            }
            up_link.end(circ, stream).await;
        });
        let mut batch = Vec::with_capacity(256 * 1024);
        let mut ended = false;
        while let Some(first) = self.events.recv().await {
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
                if writer.write_all(&batch).await.is_err() {
                    break;
                }
                link.consumed(circ, stream, cells).await;
            }
            if ended {
                break;
            }
        }
        let _ = writer.shutdown().await;
        upload.abort();
        link.end(circ, stream).await;
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
