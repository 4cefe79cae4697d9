//! Exit streams (spec §7.5, §15.1): resolve at the
//! exit, check the policy on every resolved address, connect with a
//! time-out, then pump bytes both ways with the link task.
//!
//! Destinations are never logged at info level or above.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lamina_proto::cell::CircId;
use lamina_proto::circuit::flow::EDGE_HARD_CAP_CELLS;
use lamina_proto::msg::{EndReason, StreamId, Target};
use lamina_proto::redact::Redacted;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::debug;

use super::registry::{LinkCmd, RelayContext};

/// Most bytes read from a destination per message to the link task.
const READ_CHUNK: usize = 32 * 1024;

/// The concurrency limits an exit stream's resolve and connect run under
/// (review L-10).
#[derive(Debug)]
pub struct OpenSlots {
    /// The circuit's slots.
    pub circuit: Arc<Semaphore>,
    /// The relay's slots.
    pub relay: Arc<Semaphore>,
}

/// Open an exit stream and report to the link task that owns the circuit.
/// A slot of the circuit and one of the relay are held while resolving and
/// connecting; waiting for them counts towards the connect time-out.
pub async fn open_stream(
    ctx: Arc<RelayContext>,
    inbox: mpsc::Sender<LinkCmd>,
    circ: CircId,
    stream: StreamId,
    target: Target,
    port: u16,
    slots: OpenSlots,
) {
    let open = async {
        let _circuit = slots.circuit.acquire_owned().await.map_err(|_| EndReason::ResourceLimit)?;
        let _relay = slots.relay.acquire_owned().await.map_err(|_| EndReason::ResourceLimit)?;
        connect(&ctx, &target, port).await
    };
    let outcome = tokio::time::timeout(ctx.config.connect_timeout, open).await;
    let socket = match outcome {
        Ok(Ok(socket)) => socket,
        Ok(Err(reason)) => {
            ctx.metrics.streams_failed.inc();
            let _ = inbox.send(LinkCmd::StreamFailed { circ, stream, reason }).await;
            return;
        }
        Err(_) => {
            ctx.metrics.streams_failed.inc();
            let _ = inbox.send(LinkCmd::StreamFailed { circ, stream, reason: EndReason::Timeout }).await;
            return;
        }
    };
    ctx.metrics.streams_opened.inc();
    let _ = socket.set_nodelay(true);
    let addr = socket.peer_addr().ok().map(|a| a.ip());
    let (read_half, write_half) = socket.into_split();
    // At most one edge buffer of cells can be in flight to the socket: past
    // it the circuit core destroys the circuit (spec §8.5).
    let capacity = EDGE_HARD_CAP_CELLS + 64;
    let (to_socket, from_link) = mpsc::channel(capacity);
    let (cancel, cancelled) = oneshot::channel();
    if inbox.send(LinkCmd::StreamConnected { circ, stream, addr, to_socket, cancel }).await.is_err() {
        return;
    }
    let timeouts = (ctx.config.write_timeout, ctx.config.stream_idle_timeout);
    tokio::spawn(write_to_destination(write_half, from_link, inbox.clone(), circ, stream, timeouts.0));
    tokio::spawn(read_from_destination(read_half, inbox, circ, stream, cancelled, timeouts.1));
}

/// Resolve, apply the policy to every address, connect to the first allowed.
async fn connect(ctx: &RelayContext, target: &Target, port: u16) -> Result<TcpStream, EndReason> {
    let addrs: Vec<SocketAddr> = match target {
        Target::Ip(ip) => vec![SocketAddr::new(*ip, port)],
        Target::Hostname(name) => {
            tokio::net::lookup_host((name.as_str(), port)).await.map_err(|_| EndReason::ResolveFailed)?.collect()
        }
    };
    if addrs.is_empty() {
        return Err(EndReason::ResolveFailed);
    }
    let allowed: Vec<SocketAddr> = addrs.into_iter().filter(|a| ctx.policy.allows(a.ip(), port)).collect();
    if allowed.is_empty() {
        ctx.metrics.streams_rejected_policy.inc();
        debug!(target = ?Redacted(target), "exit policy refused every resolved address");
        return Err(EndReason::ExitPolicy);
    }
    let mut last = EndReason::ConnectRefused;
    for addr in allowed {
        match TcpStream::connect(addr).await {
            Ok(socket) => return Ok(socket),
            Err(e) => last = end_reason_for(&e),
        }
    }
    Err(last)
}

/// Map a connect error onto an END reason.
fn end_reason_for(e: &std::io::Error) -> EndReason {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => EndReason::ConnectRefused,
        ErrorKind::TimedOut => EndReason::Timeout,
        ErrorKind::ConnectionReset => EndReason::ConnReset,
        _ => EndReason::NoRoute,
    }
}

/// Write DATA from the circuit to the destination, reporting consumption.
/// A write that makes no progress for `write_timeout` ends the writer
/// (spec §15.5). The writer ends when the link drops its sender (the
/// stream ended or the client half-closed).
async fn write_to_destination(
    mut socket: OwnedWriteHalf,
    mut from_link: mpsc::Receiver<Vec<u8>>,
    inbox: mpsc::Sender<LinkCmd>,
    circ: CircId,
    stream: StreamId,
    write_timeout: Duration,
) {
    let mut batch = Vec::new();
    while let Some(first) = from_link.recv().await {
        batch.clear();
        batch.extend_from_slice(&first);
        let mut cells = 1u32;
        while let Ok(more) = from_link.try_recv() {
            batch.extend_from_slice(&more);
            cells += 1;
            if batch.len() >= 256 * 1024 {
                break;
            }
        }
        if !matches!(tokio::time::timeout(write_timeout, socket.write_all(&batch)).await, Ok(Ok(()))) {
            // Cells that never reach the destination still count for the
            // circuit window (credit follows cells, L-9): report them all.
            from_link.close();
            while from_link.try_recv().is_ok() {
                cells += 1;
            }
            let _ = inbox.send(LinkCmd::StreamConsumed { circ, stream, cells }).await;
            break;
        }
        if inbox.send(LinkCmd::StreamConsumed { circ, stream, cells }).await.is_err() {
            break;
        }
    }
    let _ = socket.shutdown().await;
}

/// Read from the destination and hand bytes to the link task. At most one
/// chunk waits to be packaged while the next is read (reading overlaps
/// packaging), so a closed window stops reading after two chunks: no
/// unbounded buffering. It stops (dropping the socket's read half) when the
/// link ends the stream (`cancelled`) or the destination is silent for
/// `idle` (spec §15.5).
async fn read_from_destination(
    mut socket: OwnedReadHalf,
    inbox: mpsc::Sender<LinkCmd>,
    circ: CircId,
    stream: StreamId,
    mut cancelled: oneshot::Receiver<()>,
    idle: Duration,
) {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut in_flight: Option<oneshot::Receiver<()>> = None;
    loop {
        let read = tokio::select! {
            read = tokio::time::timeout(idle, socket.read(&mut buf)) => read,
            _ = &mut cancelled => return,
        };
        let n = match read {
            Ok(Ok(0) | Err(_)) | Err(_) => break,
            Ok(Ok(n)) => n,
        };
        if let Some(previous) = in_flight.take() {
            let packaged = tokio::select! {
                packaged = previous => packaged.is_ok(),
                _ = &mut cancelled => false,
            };
            if !packaged {
                return;
            }
        }
        let (done, packaged) = oneshot::channel();
        let cmd = LinkCmd::StreamBytes { circ, stream, data: buf[..n].to_vec(), done };
        if inbox.send(cmd).await.is_err() {
            return;
        }
        in_flight = Some(packaged);
    }
    if let Some(previous) = in_flight.take() {
        if previous.await.is_err() {
            return;
        }
    }
    let _ = inbox.send(LinkCmd::StreamEof { circ, stream }).await;
}
