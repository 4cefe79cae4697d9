//! Accepting and opening links (spec §3): a bounded accept loop, the
//! responder and initiator handshakes with a time-out, then the link tasks.

use std::net::SocketAddr;
use std::sync::Arc;

use lamina_crypto::keys::{LinkPublicKey, RelayId};
use lamina_proto::circuit::relay::LinkId;
use lamina_proto::link::{LinkHandshake, LinkReceiver, LinkSender, LocalAuth, PeerExpectation, PeerIdentity};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, info};

use super::link::start_link;
use super::registry::{LinkHandle, RelayContext};

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
}

/// Accept links until shutdown.
pub async fn serve(ctx: Arc<RelayContext>, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(ctx.config.max_connections));
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => break,
        };
        let Ok((socket, peer)) = accepted else { continue };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            ctx.metrics.connections_refused.inc();
            continue;
        };
        if !ctx.admit_ip(peer.ip()) {
            ctx.metrics.connections_refused.inc();
            continue;
        }
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move {
            let ip = peer.ip();
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

/// Run the responder handshake on an accepted socket, then the link until
/// it closes.
async fn accept_link(ctx: &Arc<RelayContext>, mut socket: TcpStream) -> Result<(), LinkSetupError> {
    socket.set_nodelay(true)?;
    let mut rng = ChaCha20Rng::from_rng(rand_core::OsRng).map_err(|e| std::io::Error::other(e.to_string()))?;
    let hs = LinkHandshake::responder(&ctx.keys.link, ctx.cert);
    let (sender, receiver, peer, leftover) =
        tokio::time::timeout(ctx.config.handshake_timeout, drive(&mut socket, hs, &mut rng))
            .await
            .map_err(|_| LinkSetupError::Timeout)??;
    ctx.metrics.handshakes_ok.inc();
    let (id, handle) = start_link(ctx, socket, sender, receiver, leftover, peer, false);
    wait_closed(ctx, id, &handle).await;
    Ok(())
}

/// Wait until a link's tasks have ended.
async fn wait_closed(ctx: &RelayContext, id: LinkId, handle: &LinkHandle) {
    handle.inbox.closed().await;
    ctx.deregister(id);
}

/// Open a link to `relay_id` at `addr`, authenticating it by `link_key`.
pub async fn connect_relay(
    ctx: &Arc<RelayContext>,
    addr: SocketAddr,
    relay_id: RelayId,
    link_key: LinkPublicKey,
) -> Result<(LinkId, LinkHandle), LinkSetupError> {
    let mut rng = ChaCha20Rng::from_rng(rand_core::OsRng).map_err(|e| std::io::Error::other(e.to_string()))?;
    let setup = async {
        let mut socket = dial(ctx, addr).await?;
        socket.set_nodelay(true)?;
        let local = LocalAuth::Relay { link_key: &ctx.keys.link, cert: ctx.cert };
        let hs = LinkHandshake::initiator(&mut rng, &local, PeerExpectation::Known { relay_id, link_key })?;
        let parts = drive(&mut socket, hs, &mut rng).await?;
        Ok::<_, LinkSetupError>((socket, parts))
    };
    let (socket, (sender, receiver, peer, leftover)) =
        tokio::time::timeout(ctx.config.handshake_timeout, setup).await.map_err(|_| LinkSetupError::Timeout)??;
    ctx.metrics.handshakes_ok.inc();
    Ok(start_link(ctx, socket, sender, receiver, leftover, peer, true))
}

/// Open a link to a seed known only by its address (Noise `XX`): the seed
/// proves its identity with its link certificate (spec §3.3).
pub async fn connect_seed(ctx: &Arc<RelayContext>, addr: SocketAddr) -> Result<(LinkId, LinkHandle), LinkSetupError> {
    let mut rng = ChaCha20Rng::from_rng(rand_core::OsRng).map_err(|e| std::io::Error::other(e.to_string()))?;
    let setup = async {
        let mut socket = dial(ctx, addr).await?;
        socket.set_nodelay(true)?;
        let local = LocalAuth::Relay { link_key: &ctx.keys.link, cert: ctx.cert };
        let hs = LinkHandshake::initiator(&mut rng, &local, PeerExpectation::Unknown)?;
        let parts = drive(&mut socket, hs, &mut rng).await?;
        Ok::<_, LinkSetupError>((socket, parts))
    };
    let (socket, (sender, receiver, peer, leftover)) =
        tokio::time::timeout(ctx.config.handshake_timeout, setup).await.map_err(|_| LinkSetupError::Timeout)??;
    if peer == PeerIdentity::Relay(ctx.relay_id) {
        return Err(LinkSetupError::Handshake(lamina_proto::error::LinkError::Protocol("the seed is ourselves")));
    }
    ctx.metrics.handshakes_ok.inc();
    Ok(start_link(ctx, socket, sender, receiver, leftover, peer, true))
}

/// Connect to `addr` from our bind address, if one is set.
async fn dial(ctx: &RelayContext, addr: SocketAddr) -> std::io::Result<TcpStream> {
    match ctx.config.bind_ip {
        Some(ip) if ip.is_ipv4() == addr.is_ipv4() => {
            let socket = if ip.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(addr).await
        }
        _ => TcpStream::connect(addr).await,
    }
}

/// Drive a link handshake over `socket` until it finishes. Returns the
/// transport halves, the peer's identity and any bytes read past the
/// handshake (the first transport frames).
pub async fn drive(
    socket: &mut TcpStream,
    mut hs: LinkHandshake,
    rng: &mut ChaCha20Rng,
) -> Result<(LinkSender, LinkReceiver, PeerIdentity, Vec<u8>), LinkSetupError> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        while let Some(out) = hs.poll_transmit() {
            socket.write_all(&out).await?;
        }
        if hs.is_finished() {
            let (sender, receiver, peer) = hs.into_transport()?;
            return Ok((sender, receiver, peer, buf));
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
