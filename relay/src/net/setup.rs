//! Link set-up (spec §3): dialling (public addresses only outside a test
//! network, spec §15.2), driving a link handshake to its end, and the
//! fail-closed handshake RNG. Used by the accept loop, by outbound links
//! and by the reachability prober; it starts no task.

use std::net::SocketAddr;

use lamina_crypto::keys::{LinkPublicKey, RelayId};
use lamina_proto::link::{LinkHandshake, LinkReceiver, LinkSender, LocalAuth, PeerExpectation, PeerIdentity};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::registry::RelayContext;

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

/// Dial `addr` and complete an initiator handshake that must prove
/// `relay_id` with `link_key` (spec §3.3, §15.3), within the handshake
/// time-out. Returns the socket and the established link, not yet started.
pub async fn open_relay(
    ctx: &RelayContext,
    addr: SocketAddr,
    relay_id: RelayId,
    link_key: LinkPublicKey,
) -> Result<(TcpStream, LinkParts), LinkSetupError> {
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
    Ok((socket, parts))
}

/// Dial a seed known only by its address and complete a Noise `XX`
/// handshake in which it proves its identity with its link certificate
/// (spec §3.3). Returns the socket and the established link, not yet started.
pub async fn open_seed(ctx: &RelayContext, addr: SocketAddr) -> Result<(TcpStream, LinkParts), LinkSetupError> {
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
    Ok((socket, parts))
}

/// Connect to `addr` from our bind address, if one is set. Outside a test
/// network only publicly routable addresses are dialled (spec §15.2).
pub async fn dial(ctx: &RelayContext, addr: SocketAddr) -> Result<TcpStream, LinkSetupError> {
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
