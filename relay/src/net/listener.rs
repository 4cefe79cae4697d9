//! Accepting and opening links (spec §3): a bounded accept loop, the
//! responder and initiator handshakes with a time-out, then the link tasks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lamina_crypto::keys::{LinkPublicKey, RelayId};
use lamina_proto::circuit::relay::LinkId;
use lamina_proto::link::{LinkHandshake, LinkReceiver, LinkSender, LocalAuth, PeerExpectation, PeerIdentity};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info};

use super::link::start_link;
use super::registry::{LinkHandle, RelayContext, SHED_MIN_AGE};

/// Why a link could not be established.
#[derive(Debug, thiserror::Error)]
pub enum LinkSetupError {
    /// Socket failure.
    #[error("link i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The handshake failed.
    #[error("link handshake: {0}")]
    Handshake(#[from] lamina_proto::error::LinkError),
    /// The handshake took too long.
    #[error("link handshake timed out")]
    Timeout,
    /// The peer closed during the handshake.
    #[error("peer closed during the handshake")]
    Closed,
    /// The address is not publicly routable and this is no test network
    /// (spec §15.2).
    #[error("refusing a link to a non-public address outside a test network")]
    NonPublic,
    /// OS randomness is unavailable: fail closed (review M-4).
    #[error("no OS randomness: {0}")]
    Rng(String),
}

/// A fresh handshake RNG seeded from the OS, or an error (never a constant
/// seed, review M-4).
pub fn os_rng() -> Result<ChaCha20Rng, LinkSetupError> {
    ChaCha20Rng::from_rng(rand_core::OsRng).map_err(|e| LinkSetupError::Rng(e.to_string()))
}

/// Back-off of the accept loop after accept errors (spec §15.5): at the
/// descriptor limit (`EMFILE`/`ENFILE`) `accept` fails at once, so retrying
/// at once would spin. Each consecutive error doubles the pause, from
/// [`AcceptBackoff::FIRST`] up to [`AcceptBackoff::MAX`]; a success resets it
/// (as mini-redis does, with shorter pauses: a relay must recover quickly).
#[derive(Debug, Default)]
pub struct AcceptBackoff {
    /// Consecutive failures.
    failures: u32,
}

impl AcceptBackoff {
    /// The first pause.
    pub const FIRST: Duration = Duration::from_millis(10);
    /// The longest pause.
    pub const MAX: Duration = Duration::from_secs(1);

    /// An accept failed: how long to pause before the next.
    pub fn failed(&mut self) -> Duration {
        let pause = Self::FIRST.saturating_mul(1u32 << self.failures.min(16));
        self.failures = self.failures.saturating_add(1);
        pause.min(Self::MAX)
    }

    /// An accept succeeded.
    pub fn succeeded(&mut self) {
        self.failures = 0;
    }
}

/// Accept links until shutdown.
pub async fn serve(ctx: Arc<RelayContext>, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(ctx.config.max_connections));
    let mut shutdown = ctx.shutdown.clone();
    let mut backoff = AcceptBackoff::default();
    let waiting = Arc::new(AtomicUsize::new(0));
    let mut last_shed: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let (socket, peer) = match accepted {
            Ok(ok) => {
                backoff.succeeded();
                ok
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: pause instead of spinning.
                ctx.metrics.connections_refused.inc();
                debug!(error = %e, "accept failed; backing off");
                tokio::select! {
                    () = tokio::time::sleep(backoff.failed()) => {},
                    _ = shutdown.changed() => break,
                }
                continue;
            }
        };
        if !ctx.admit_ip(peer.ip()) {
            ctx.metrics.connections_refused.inc();
            continue;
        }
        let permit = match Arc::clone(&slots).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                // Full: idle anonymous links give their slots up; a few
                // newcomers wait briefly for one (bounded), the rest are shed.
                // (At most every SHED_EVERY: each notification wakes every
                // anonymous link.)
                if last_shed.is_none_or(|t| t.elapsed() >= SHED_EVERY) {
                    ctx.shed.notify_waiters();
                    last_shed = Some(tokio::time::Instant::now());
                }
                if waiting.load(Ordering::Relaxed) >= MAX_WAITING {
                    ctx.metrics.connections_refused.inc();
                    ctx.release_ip(peer.ip());
                    continue;
                }
                None
            }
        };
        let ctx = Arc::clone(&ctx);
        let (slots, waiting) = (Arc::clone(&slots), Arc::clone(&waiting));
        tokio::spawn(async move {
            let ip = peer.ip();
            let Some(permit) = wait_for_slot(permit, slots, &waiting).await else {
                ctx.metrics.connections_refused.inc();
                ctx.release_ip(ip);
                return;
            };
            if let Err(e) = accept_link(&ctx, socket).await {
                ctx.metrics.handshakes_failed.inc();
                debug!(error = %e, "inbound link failed");
            }
            // The permit and the per-IP slot are held for the link's life:
            // wait until the link task ends (its registry entry disappears).
            drop(permit);
            ctx.release_ip(ip);
        });
    }
    info!("listener stopped");
}

/// Shortest interval between two load-shedding notifications.
const SHED_EVERY: Duration = Duration::from_millis(100);
/// Most accepted connections waiting for a slot at once.
const MAX_WAITING: usize = 64;
/// How long an accepted connection waits for a slot.
const SLOT_WAIT: Duration = Duration::from_secs(2);

/// `permit`, or one that frees up within [`SLOT_WAIT`] (counted in `waiting`).
async fn wait_for_slot(
    permit: Option<OwnedSemaphorePermit>,
    slots: Arc<Semaphore>,
    waiting: &AtomicUsize,
) -> Option<OwnedSemaphorePermit> {
    if permit.is_some() {
        return permit;
    }
    waiting.fetch_add(1, Ordering::Relaxed);
    let permit = tokio::time::timeout(SLOT_WAIT, slots.acquire_owned()).await.ok().and_then(Result::ok);
    waiting.fetch_sub(1, Ordering::Relaxed);
    permit
}

/// Resolves once the relay sheds load and `started` is older than
/// [`SHED_MIN_AGE`].
async fn shed_after(ctx: &RelayContext, started: tokio::time::Instant) {
    loop {
        ctx.shed.notified().await;
        if started.elapsed() >= SHED_MIN_AGE {
            return;
        }
    }
}

/// Run the responder handshake on an accepted socket, then the link until
/// it closes. A handshake still running when the relay sheds load is
/// dropped (spec §15.5).
async fn accept_link(ctx: &Arc<RelayContext>, mut socket: TcpStream) -> Result<(), LinkSetupError> {
    socket.set_nodelay(true)?;
    let mut rng = os_rng()?;
    let hs = LinkHandshake::responder(&ctx.keys.link, ctx.cert);
    let started = tokio::time::Instant::now();
    let handshake = tokio::time::timeout(ctx.config.handshake_timeout, drive(&mut socket, hs, &mut rng));
    let parts = tokio::select! {
        parts = handshake => parts.map_err(|_| LinkSetupError::Timeout)??,
        () = shed_after(ctx, started) => return Err(LinkSetupError::Timeout),
    };
    ctx.metrics.handshakes_ok.inc();
    let (id, handle) = start_link(ctx, socket, parts, false)?;
    wait_closed(ctx, id, &handle).await;
    Ok(())
}

/// Wait until a link's tasks have ended.
async fn wait_closed(ctx: &RelayContext, id: LinkId, handle: &LinkHandle) {
    handle.inbox.closed().await;
    ctx.deregister(id);
}

/// Open a link to `relay_id` at `addr`, authenticating it by `link_key`
/// and by its certificate for `relay_id` (spec §3.3, §15.3).
pub async fn connect_relay(
    ctx: &Arc<RelayContext>,
    addr: SocketAddr,
    relay_id: RelayId,
    link_key: LinkPublicKey,
) -> Result<(LinkId, LinkHandle), LinkSetupError> {
    let mut rng = os_rng()?;
    let setup = async {
        let mut socket = dial(ctx, addr).await?;
        socket.set_nodelay(true)?;
        let local = LocalAuth::Relay { link_key: &ctx.keys.link, cert: ctx.cert };
        let hs = LinkHandshake::initiator(&mut rng, &local, PeerExpectation::Known { relay_id, link_key })?;
        let parts = drive(&mut socket, hs, &mut rng).await?;
        Ok::<_, LinkSetupError>((socket, parts))
    };
    let (socket, parts) =
        tokio::time::timeout(ctx.config.handshake_timeout, setup).await.map_err(|_| LinkSetupError::Timeout)??;
    if parts.peer != PeerIdentity::Relay(relay_id) || parts.peer_key != Some(link_key) {
        return Err(LinkSetupError::Handshake(lamina_proto::error::LinkError::UnexpectedPeer));
    }
    ctx.metrics.handshakes_ok.inc();
    start_link(ctx, socket, parts, true)
}

/// Open a link to a seed known only by its address (Noise `XX`): the seed
/// proves its identity with its link certificate (spec §3.3).
pub async fn connect_seed(ctx: &Arc<RelayContext>, addr: SocketAddr) -> Result<(LinkId, LinkHandle), LinkSetupError> {
    let mut rng = os_rng()?;
    let setup = async {
        let mut socket = dial(ctx, addr).await?;
        socket.set_nodelay(true)?;
        let local = LocalAuth::Relay { link_key: &ctx.keys.link, cert: ctx.cert };
        let hs = LinkHandshake::initiator(&mut rng, &local, PeerExpectation::Unknown)?;
        let parts = drive(&mut socket, hs, &mut rng).await?;
        Ok::<_, LinkSetupError>((socket, parts))
    };
    let (socket, parts) =
        tokio::time::timeout(ctx.config.handshake_timeout, setup).await.map_err(|_| LinkSetupError::Timeout)??;
    if parts.peer == PeerIdentity::Relay(ctx.relay_id) {
        return Err(LinkSetupError::Handshake(lamina_proto::error::LinkError::Protocol("the seed is ourselves")));
    }
    ctx.metrics.handshakes_ok.inc();
    start_link(ctx, socket, parts, true)
}

/// Connect to `addr` from our bind address, if one is set. Outside a test
/// network only publicly routable addresses are dialled (spec §15.2).
pub(crate) async fn dial(ctx: &RelayContext, addr: SocketAddr) -> Result<TcpStream, LinkSetupError> {
    if !ctx.config.test_network && !crate::exit_policy::is_public(addr.ip()) {
        return Err(LinkSetupError::NonPublic);
    }
    Ok(dial_any(ctx, addr).await?)
}

/// Connect to `addr` from our bind address, if one is set (no address check).
async fn dial_any(ctx: &RelayContext, addr: SocketAddr) -> std::io::Result<TcpStream> {
    match ctx.config.bind_ip {
        Some(ip) if ip.is_ipv4() == addr.is_ipv4() => {
            let socket = if ip.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(addr).await
        }
        _ => TcpStream::connect(addr).await,
    }
}

/// An established link before its tasks start.
#[derive(Debug)]
pub struct LinkParts {
    /// Sealing half.
    pub sender: LinkSender,
    /// Opening half.
    pub receiver: LinkReceiver,
    /// Who the peer proved to be.
    pub peer: PeerIdentity,
    /// The peer's proven static key (for a relay, the certified link key).
    pub peer_key: Option<LinkPublicKey>,
    /// Bytes read past the handshake (the first transport frames).
    pub leftover: Vec<u8>,
}

/// Drive a link handshake over `socket` until it finishes.
pub async fn drive(
    socket: &mut TcpStream,
    mut hs: LinkHandshake,
    rng: &mut ChaCha20Rng,
) -> Result<LinkParts, LinkSetupError> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        while let Some(out) = hs.poll_transmit() {
            socket.write_all(&out).await?;
        }
        if hs.is_finished() {
            let peer_key = hs.peer_link_key();
            let (sender, receiver, peer) = hs.into_transport()?;
            return Ok(LinkParts { sender, receiver, peer, peer_key, leftover: buf });
        }
        if buf.len() > 8192 {
            return Err(LinkSetupError::Handshake(lamina_proto::error::LinkError::Protocol("handshake too long")));
        }
        let n = socket.read_buf(&mut buf).await?;
        if n == 0 {
            return Err(LinkSetupError::Closed);
        }
        let used = hs.handle_input(rng, &buf)?;
        buf.drain(..used);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_backoff_doubles_to_a_cap_and_resets() {
        let mut b = AcceptBackoff::default();
        let pauses: Vec<Duration> = (0..12).map(|_| b.failed()).collect();
        assert_eq!(pauses[0], AcceptBackoff::FIRST);
        assert_eq!(pauses[1], AcceptBackoff::FIRST * 2);
        assert!(pauses.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*pauses.last().unwrap(), AcceptBackoff::MAX);
        // A thousand failures in a row never pause longer than the cap, and
        // cost at most ~1000 accepts per second of failures at worst.
        for _ in 0..1000 {
            assert!(b.failed() <= AcceptBackoff::MAX);
        }
        b.succeeded();
        assert_eq!(b.failed(), AcceptBackoff::FIRST);
    }
}
