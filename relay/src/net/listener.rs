//! Accepting links (spec §3): a bounded accept loop with back-off, the
//! responder handshake with a time-out, then the link tasks. Outbound links
//! are opened by [`super::link::connect_relay`] through [`super::setup`].

use std::sync::Arc;
use std::time::Duration;

use lamina_proto::circuit::relay::LinkId;
use lamina_proto::link::LinkHandshake;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info};

use super::link::start_link;
use super::registry::{LinkHandle, RelayContext, SHED_MIN_AGE};
use super::setup::{drive, os_rng, LinkSetupError};

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
