//! The SOCKS listener (spec §10.4): accepts on
//! loopback, runs the sans-IO handshake per connection with a time-out, asks
//! the circuit manager for a stream, replies, and pumps bytes. A bad or
//! stalled connection closes only itself.
//!
//! The front cannot be starved: connections hold a slot from the
//! [`SlotTable`]; when it is full, the oldest connection still in its SOCKS
//! handshake is dropped for the new one; an application that closes or
//! half-closes its side gives its slot back at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tracing::{debug, warn};

use crate::circmgr::{Client, PumpOptions};
use crate::error::ClientError;
use crate::socks::{reply_failure, reply_success, SocksHandshake, SocksRequest, Step};

/// Default most SOCKS connections holding a slot at once.
pub const MAX_SOCKS_CONNECTIONS: usize = 1024;
/// Default time allowed for the SOCKS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a half-closed (or closed) connection may stay without
/// reply bytes (`--socks-half-closed-timeout`): the proxy cannot tell an
/// application that half-closed from one that went away, so this bounds
/// how long its socket stays in CLOSE-WAIT (spec §10.4).
pub const HALF_CLOSED_IDLE: Duration = Duration::from_secs(15);
/// Most bytes kept from the handshake phase (request plus optimistic data).
const MAX_HANDSHAKE_BYTES: usize = 64 * 1024;

/// SOCKS front settings (flags `--socks-max-connections`,
/// `--socks-handshake-timeout`, `--socks-half-closed-timeout`; spec §10.4).
#[derive(Debug, Clone, Copy)]
pub struct SocksSettings {
    /// Most connections holding a slot.
    pub max_connections: usize,
    /// Time allowed from accept to a complete request.
    pub handshake_timeout: Duration,
    /// After the application half-closed: how long the connection may go
    /// without reply bytes before the stream is ended.
    pub half_closed_idle: Duration,
}

impl Default for SocksSettings {
    fn default() -> Self {
        Self {
            max_connections: MAX_SOCKS_CONNECTIONS,
            handshake_timeout: HANDSHAKE_TIMEOUT,
            half_closed_idle: HALF_CLOSED_IDLE,
        }
    }
}

/// One connection's slot.
#[derive(Debug)]
struct Slot {
    /// Still in the SOCKS handshake (may be evicted).
    handshaking: bool,
    /// Sending `()` asks the connection's task to stop (dropping it does not).
    evict: oneshot::Sender<()>,
}

/// The slot table: at most `max` entries, ids in accept order.
#[derive(Debug)]
pub struct SlotTable {
    /// Capacity.
    max: usize,
    /// Next id (accept order).
    next: u64,
    /// Live slots by id.
    slots: BTreeMap<u64, Slot>,
}

/// What [`SlotTable::admit`] decided.
#[derive(Debug)]
pub enum Admission {
    /// Admitted with this id; the receiver fires if it is later evicted.
    Admitted(u64, oneshot::Receiver<()>),
    /// Every slot belongs to a connection past its handshake: refused.
    Refused,
}

impl SlotTable {
    /// An empty table of `max` slots (at least one).
    pub fn new(max: usize) -> Self {
        Self { max: max.max(1), next: 0, slots: BTreeMap::new() }
    }

    /// Admit a new connection, evicting the oldest one still in its
    /// handshake if the table is full.
    pub fn admit(&mut self) -> Admission {
        if self.slots.len() >= self.max {
            let oldest = self.slots.iter().find(|(_, s)| s.handshaking).map(|(id, _)| *id);
            match oldest.and_then(|id| self.slots.remove(&id)) {
                Some(slot) => {
                    let _ = slot.evict.send(());
                }
                None => return Admission::Refused,
            }
        }
        let id = self.next;
        self.next += 1;
        let (evict, evicted) = oneshot::channel();
        self.slots.insert(id, Slot { handshaking: true, evict });
        Admission::Admitted(id, evicted)
    }

    /// The connection finished its handshake: it can no longer be evicted.
    pub fn handshake_done(&mut self, id: u64) {
        if let Some(slot) = self.slots.get_mut(&id) {
            slot.handshaking = false;
        }
    }

    /// Give the slot back (closed or half-closed); idempotent.
    pub fn release(&mut self, id: u64) {
        self.slots.remove(&id);
    }

    /// Slots held.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no slot is held.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

/// A shared slot table.
type Slots = Arc<Mutex<SlotTable>>;

/// Lock the table (never held across `.await`).
fn lock(slots: &Slots) -> std::sync::MutexGuard<'_, SlotTable> {
    slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Gives a connection's slot back when its task ends, however it ends.
struct SlotGuard {
    /// The table.
    slots: Slots,
    /// The slot.
    id: u64,
}

impl Drop for SlotGuard {
    /// Release the slot.
    fn drop(&mut self) {
        lock(&self.slots).release(self.id);
    }
}

/// Serve SOCKS on `listener` with default settings until `shutdown` flips.
pub async fn serve(client: Client, listener: TcpListener, shutdown: watch::Receiver<bool>) {
    serve_with(client, listener, shutdown, SocksSettings::default()).await;
}

/// Serve SOCKS on `listener` until `shutdown` flips to true.
pub async fn serve_with(
    client: Client,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    settings: SocksSettings,
) {
    let slots: Slots = Arc::new(Mutex::new(SlotTable::new(settings.max_connections)));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let socket = match accepted {
            Ok((socket, _peer)) => socket,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or a transient error:
                // back off instead of spinning.
                warn!(error = %e, "SOCKS accept failed; backing off");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let admission = lock(&slots).admit();
        let Admission::Admitted(id, evicted) = admission else {
            debug!("SOCKS front full of connected streams: refusing a connection");
            continue;
        };
        let client = client.clone();
        let guard = SlotGuard { slots: Arc::clone(&slots), id };
        tokio::spawn(async move {
            tokio::select! {
                result = handle(client, socket, &guard, settings) => {
                    if let Err(e) = result {
                        debug!(error = %e, "SOCKS connection ended with an error");
                    }
                }
                Ok(()) = evicted => debug!("SOCKS connection evicted in its handshake (front full)"),
            }
            drop(guard);
        });
    }
}

/// One SOCKS connection.
async fn handle(
    client: Client,
    mut socket: TcpStream,
    slot: &SlotGuard,
    settings: SocksSettings,
) -> Result<(), ClientError> {
    socket.set_nodelay(true)?;
    let (request, early) = match tokio::time::timeout(settings.handshake_timeout, handshake(&mut socket)).await {
        Ok(Ok(Some(found))) => found,
        Ok(Ok(None)) => return Ok(()),
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(ClientError::Timeout("SOCKS handshake")),
    };
    lock(&slot.slots).handshake_done(slot.id);
    match client.connect(request.target, request.port, request.auth).await {
        Ok(stream) => {
            // Optimistic data: bytes sent right after the request go to
            // the exit once the stream is connected (spec §10.4).
            if !early.is_empty() {
                stream.write_all(&early).await?;
            }
            socket.write_all(&reply_success(request.version)).await?;
            let slots = Arc::clone(&slot.slots);
            let id = slot.id;
            let options = PumpOptions {
                on_half_close: Some(Box::new(move || lock(&slots).release(id))),
                half_closed_idle: Some(settings.half_closed_idle),
            };
            stream.pump_with(socket, options).await;
            Ok(())
        }
        Err(e) => {
            let reason = match &e {
                ClientError::StreamEnded(reason) => Some(*reason),
                _ => None,
            };
            socket.write_all(&reply_failure(request.version, reason)).await?;
            Err(e)
        }
    }
}

/// Run the handshake; `None` if it was refused (the reply was sent).
/// Returns the request and any bytes that followed it (optimistic data).
async fn handshake(socket: &mut TcpStream) -> Result<Option<(SocksRequest, Vec<u8>)>, ClientError> {
    let mut hs = SocksHandshake::new();
    let mut buf = Vec::with_capacity(512);
    loop {
        let (used, step) = hs.handle(&buf).map_err(|_| ClientError::Internal("malformed SOCKS handshake"))?;
        buf.drain(..used);
        match step {
            Step::NeedMore => {
                if buf.len() > MAX_HANDSHAKE_BYTES || socket.read_buf(&mut buf).await? == 0 {
                    return Ok(None);
                }
            }
            Step::Send(bytes) => socket.write_all(&bytes).await?,
            Step::Refuse(bytes) => {
                socket.write_all(&bytes).await?;
                return Ok(None);
            }
            Step::Request(request) => return Ok(Some((request, buf))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_evicts_the_oldest_handshake_never_a_connected_one() {
        let mut table = SlotTable::new(3);
        let Admission::Admitted(a, mut a_evicted) = table.admit() else { panic!() };
        let Admission::Admitted(_b, mut b_evicted) = table.admit() else { panic!() };
        let Admission::Admitted(c, mut c_evicted) = table.admit() else { panic!() };
        table.handshake_done(a);
        // Full: the oldest still handshaking (b) goes, not a.
        let Admission::Admitted(d, _) = table.admit() else { panic!() };
        assert_eq!(b_evicted.try_recv(), Ok(()));
        assert!(a_evicted.try_recv().is_err());
        assert_eq!(table.len(), 3);
        table.handshake_done(c);
        table.handshake_done(d);
        // Every slot is past its handshake: refused.
        assert!(matches!(table.admit(), Admission::Refused));
        // Releasing (close or half-close) frees a slot without evicting.
        table.release(c);
        assert!(c_evicted.try_recv().is_err(), "release is not eviction");
        assert!(matches!(table.admit(), Admission::Admitted(..)));
        table.release(c);
        assert_eq!(table.len(), 3);
    }
}
