//! One link of a relay: a reader task that owns the link's circuit table
//! and a writer task that batches cells into Noise frames (spec §3.4, §6.4).
//!
//! The reader task is shaped like a mini-redis connection handler: it owns
//! the socket's read half and the table, waits for the earlier of "bytes
//! arrived" and "a command arrived", feeds the core, then drains every
//! output before reading again (local output before remote input, CONTRIBUTING.md
//! P11). Cells go into per-circuit queues ([`LinkQueues`], spec §6.6): this
//! link's writer queue, another link's writer queue (forward) or another
//! link's backward queue (its reader must add a layer). A push never waits,
//! so no link task ever waits for another: a circuit that overfills a queue
//! is closed, never the link, and a writer that makes no progress for
//! `write_stall_timeout` closes its link.

use std::collections::HashMap;
use std::sync::Arc;

use lamina_proto::cell::{Cell, CellCommand, CircId, DestroyReason, CELL_LEN};
use lamina_proto::circuit::relay::{HopKeysRef, LinkId, RelayAction, RelayCircuitTable, Route};
use lamina_proto::error::{CircuitError, Fault};
use lamina_proto::link::{LinkReceiver, LinkSender, PeerIdentity, MAX_BATCH_CELLS, MAX_FRAME_LEN};
use lamina_proto::msg::{EndReason, StreamId};
use rand_chacha::ChaCha20Rng;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{debug, trace, warn};

use lamina_proto::dirlink::Reassembler;

use super::cmd::DirCmd;
use super::registry::{LinkCmd, LinkHandle, LinkQueues, ReaderItem, RelayContext, INBOX_CAPACITY, SHED_MIN_AGE};
use super::setup::{open_relay, open_seed, os_rng, LinkParts, LinkSetupError};
use crate::net::exit;

/// Most cells the writer gathers into one write (128 KiB of cells: every
/// link holds its gather buffers for its lifetime, so they stay small;
/// spec §15.5 "Memory").
const WRITE_GATHER_CELLS: usize = 256;
/// Sealed bytes of one full gather (whole frames of at most
/// [`MAX_BATCH_CELLS`] cells, header and tag included), so the output
/// buffer never reallocates.
const WRITE_GATHER_BYTES: usize = WRITE_GATHER_CELLS.div_ceil(MAX_BATCH_CELLS) * MAX_FRAME_LEN;
/// Socket read buffer size (two full frames; spec §15.5 "Memory").
const READ_BUF: usize = 64 * 1024;
/// Most backward cells the reader takes from its queue per wake-up (then
/// it serves its socket again: neither side starves the other).
const BACKWARD_BATCH: usize = 2048;

/// Start the tasks of an established link. Returns its id and handle; the
/// tasks run until the link closes or the relay shuts down.
pub fn start_link(
    ctx: &Arc<RelayContext>,
    stream: TcpStream,
    parts: LinkParts,
    we_initiated: bool,
) -> Result<(LinkId, LinkHandle), LinkSetupError> {
    let LinkParts { sender, receiver, peer, peer_key, leftover } = parts;
    // Fail closed without OS randomness (review M-4): no constant seed.
    let rng = os_rng()?;
    let id = ctx.allocate_link_id();
    let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
    let queues = Arc::new(LinkQueues::new(ctx.config.circuit_queue_cells));
    let handle = LinkHandle { inbox: inbox_tx, queues: Arc::clone(&queues) };
    let peer_relay = match peer {
        PeerIdentity::Relay(id) => Some(id),
        PeerIdentity::Anonymous => None,
    };
    // Registered by the identity its certificate proved, with that key.
    ctx.register(id, handle.clone(), peer_relay.zip(peer_key));
    ctx.metrics.links_open.inc();
    let remote = stream.peer_addr().unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
    if let (Some(relay), Some(dir)) = (peer_relay, &ctx.dir_inbox) {
        let _ = dir.try_send(DirCmd::LinkUp { relay, addr: remote, outbound: we_initiated });
    }
    let (read_half, write_half) = stream.into_split();
    tokio::spawn(writer_task(Arc::clone(ctx), write_half, sender, queues));
    let mut table = RelayCircuitTable::new(id, we_initiated, ctx.policy.is_exit(), ctx.config.table_limits);
    if let Some(relay) = peer_relay {
        table.set_peer(relay);
    }
    let task = LinkTask {
        ctx: Arc::clone(ctx),
        id,
        table,
        rng,
        own: handle.clone(),
        cache: HashMap::new(),
        streams: HashMap::new(),
        pending_opens: HashMap::new(),
        peer_relay,
        remote,
        dir_reassembler: Reassembler::new(),
    };
    tokio::spawn(task.run(read_half, receiver, leftover, inbox_rx));
    Ok((id, handle))
}

/// An exit stream as the link task tracks it.
struct ExitStream {
    /// Bytes for the destination socket; `None` once the client
    /// half-closed (dropping the sender shuts the write side down).
    to_socket: Option<mpsc::Sender<Vec<u8>>>,
    /// Bytes read from the destination that did not fit the window yet.
    pending: Option<Pending>,
    /// The destination closed; end the stream once `pending` is sent.
    eof: bool,
    /// Dropped with the stream: stops the destination reader, so the
    /// destination socket is closed when the stream ends (spec §15.5).
    _cancel: oneshot::Sender<()>,
}

/// Destination bytes waiting for window.
struct Pending {
    /// The bytes.
    data: Vec<u8>,
    /// How many were already packaged.
    offset: usize,
    /// Signalled when all are packaged.
    done: oneshot::Sender<()>,
}

/// The reader task's state.
struct LinkTask {
    /// Shared relay state.
    ctx: Arc<RelayContext>,
    /// This link.
    id: LinkId,
    /// The sans-IO circuit table.
    table: RelayCircuitTable,
    /// Randomness for circuit handshakes.
    rng: ChaCha20Rng,
    /// Our own channels.
    own: LinkHandle,
    /// Handles of other links we talk to (no lock on the cell path).
    cache: HashMap<LinkId, LinkHandle>,
    /// Exit streams of circuits owned here.
    streams: HashMap<(CircId, StreamId), ExitStream>,
    /// Slots for exit streams resolving or connecting, per circuit (review L-10).
    pending_opens: HashMap<CircId, Arc<Semaphore>>,
    /// The peer relay, if the link is authenticated as one (relay
    /// treatment also needs it listed in the verified directory, M-2).
    peer_relay: Option<lamina_crypto::keys::RelayId>,
    /// The remote socket address.
    remote: std::net::SocketAddr,
    /// Reassembles directory messages (spec §2.6).
    dir_reassembler: Reassembler,
}

impl LinkTask {
    /// The main loop.
    async fn run(
        mut self,
        mut reader: OwnedReadHalf,
        mut receiver: LinkReceiver,
        leftover: Vec<u8>,
        mut inbox: mpsc::Receiver<LinkCmd>,
    ) {
        let queues = Arc::clone(&self.own.queues);
        let mut shutdown = self.ctx.shutdown.clone();
        let mut buf: Vec<u8> = Vec::with_capacity(READ_BUF);
        buf.extend_from_slice(&leftover);
        let mut alive = self.handle_bytes(&mut receiver, &mut buf);
        self.flush().await;
        let anonymous = self.peer_relay.is_none();
        let idle_limit = self.ctx.config.idle_link_timeout;
        let mut ticks =
            tokio::time::interval((idle_limit / 4).clamp(Duration::from_millis(10), Duration::from_secs(5)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut idle_since: Option<Instant> = None;
        let started = Instant::now();
        let ctx = Arc::clone(&self.ctx);
        while alive {
            tokio::select! {
                () = ctx.shed.notified(), if anonymous => {
                    // Every slot is taken: an anonymous link that carries
                    // nothing gives its slot up (spec §15.5).
                    let empty = self.table.circuit_count() == 0 && self.streams.is_empty();
                    if empty && started.elapsed() >= SHED_MIN_AGE {
                        self.ctx.metrics.links_idle_closed.inc();
                        debug!(link = self.id.0, "shedding an idle anonymous link");
                        alive = false;
                    }
                },
                _ = ticks.tick() => {
                    // Forget handles of links that ended (they would keep
                    // nothing alive, but the cache must stay bounded).
                    self.cache.retain(|_, h| !h.inbox.is_closed());
                    if self.table.circuit_count() > 0 || !self.streams.is_empty() {
                        idle_since = None;
                    } else if anonymous {
                        let since = *idle_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= idle_limit {
                            self.ctx.metrics.links_idle_closed.inc();
                            debug!(link = self.id.0, "closing an idle anonymous link");
                            alive = false;
                        }
                    }
                },
                () = queues.reader_wake.notified() => alive = self.handle_queues(),
                cmd = inbox.recv() => match cmd {
                    Some(cmd) => self.handle_cmd(cmd),
                    None => alive = false,
                },
                read = reader.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => alive = false,
                    Ok(n) => {
                        self.ctx.metrics.bytes_in.add(n as u64);
                        alive = self.handle_bytes(&mut receiver, &mut buf);
                    }
                },
                _ = shutdown.changed() => alive = false,
            }
            self.flush().await;
            if buf.capacity() - buf.len() < CELL_LEN * MAX_BATCH_CELLS {
                buf.reserve(READ_BUF);
            }
        }
        debug!(link = self.id.0, "link closed");
        if let (Some(relay), Some(dir)) = (self.peer_relay, &self.ctx.dir_inbox) {
            let _ = dir.try_send(DirCmd::LinkDown { relay });
        }
        self.ctx.deregister(self.id);
        self.ctx.metrics.links_open.dec();
        self.table.link_closed();
        self.streams.clear();
        self.flush().await;
        // The writer sends what is queued (within its stall time-out), then ends.
        queues.close();
        let mut sink = Vec::new();
        while queues.pop_back(&self.ctx, BACKWARD_BATCH, &mut sink) > 0 {
            sink.clear();
        }
    }

    /// The queues woke us: backward cells to wrap, circuits a queue killed,
    /// or the writer ended. Returns false if the link must close.
    fn handle_queues(&mut self) -> bool {
        let queues = Arc::clone(&self.own.queues);
        let killed = queues.take_killed();
        for circ in killed.out {
            self.table.queue_killed(circ, true);
            queues.forget(circ);
        }
        for circ in killed.back {
            self.table.queue_killed(circ, false);
            queues.forget(circ);
        }
        let mut items: Vec<ReaderItem> = Vec::new();
        if queues.pop_back(&self.ctx, BACKWARD_BATCH, &mut items) == BACKWARD_BATCH {
            queues.reader_wake.notify_one();
        }
        for item in items {
            match item {
                ReaderItem::Backward(circ, from, cell) => {
                    if let Err(e) = self.table.handle_from_next(circ, from, cell) {
                        self.log_circuit_error(&e);
                    }
                }
                ReaderItem::Cmd(cmd) => self.handle_cmd(cmd),
            }
        }
        !queues.is_closed()
    }

    /// Decrypt every complete frame in `buf` and feed its cells to the
    /// table. Returns false if the link must close.
    fn handle_bytes(&mut self, receiver: &mut LinkReceiver, buf: &mut Vec<u8>) -> bool {
        let mut cells = Vec::new();
        let mut pos = 0;
        loop {
            match receiver.open_frame(&buf[pos..], &mut cells) {
                Ok(Some(used)) => pos += used,
                Ok(None) => break,
                Err(e) => {
                    debug!(link = self.id.0, error = %e, "closing link: bad frame");
                    return false;
                }
            }
        }
        buf.drain(..pos);
        self.ctx.metrics.cells_in.add(cells.len() as u64);
        for cell in cells {
            if cell.command == CellCommand::Directory {
                if !self.handle_directory_cell(&cell) {
                    return false;
                }
            } else {
                self.handle_cell(cell);
            }
        }
        true
    }

    /// A DIRECTORY cell: reassemble, then hand the message to the directory
    /// task. A malformed fragment closes the link; a full inbox drops the
    /// message (gossip repairs itself through anti-entropy).
    fn handle_directory_cell(&mut self, cell: &Cell) -> bool {
        match self.dir_reassembler.push(cell) {
            Ok(None) => true,
            Ok(Some(bytes)) => {
                if let Some(dir) = &self.ctx.dir_inbox {
                    let cmd = DirCmd::Message { link: self.id, relay: self.peer_relay, addr: self.remote, bytes };
                    if dir.try_send(cmd).is_err() {
                        debug!(link = self.id.0, "directory inbox full: message dropped");
                    }
                }
                true
            }
            Err(e) => {
                debug!(link = self.id.0, error = %e, "closing link: bad directory cell");
                false
            }
        }
    }

    /// One cell from the peer.
    fn handle_cell(&mut self, cell: Cell) {
        if cell.command == CellCommand::Create {
            // Relay treatment only for relays the verified directory lists
            // (review M-2); any other peer is a client.
            let listed = self.peer_relay.is_some_and(|r| self.ctx.is_listed(&r));
            if !listed && !self.ctx.take_create_token(self.remote.ip()) {
                self.ctx.metrics.creates_rate_limited.inc();
                self.own.queues.push_out(&self.ctx, vec![Cell::destroy(cell.circ, DestroyReason::ResourceLimit)]);
                return;
            }
            self.ctx.metrics.circuits_created.inc();
        }
        // The current onion key, or the previous one during the overlap
        // window if the onionskin names it (spec §15.6).
        let onion = (cell.command == CellCommand::Create).then(|| self.ctx.onion_keys());
        let onion_key = match &onion {
            Some(keys) => cell.create_onionskin().map_or(&*keys.current, |skin| keys.for_onionskin(&skin)),
            None => &self.ctx.keys.onion,
        };
        let keys = HopKeysRef { relay_id: &self.ctx.relay_id, onion_key };
        if let Err(e) = self.table.handle_cell(&mut self.rng, &keys, cell, Instant::now()) {
            self.log_circuit_error(&e);
        }
    }

    /// Log a circuit error at the level its fault deserves.
    fn log_circuit_error(&self, e: &CircuitError) {
        match e.fault() {
            Fault::Peer => {
                self.ctx.metrics.circuits_rejected_protocol.inc();
                debug!(link = self.id.0, error = %e, "circuit closed: peer violated the protocol");
            }
            Fault::Environment => debug!(link = self.id.0, error = %e, "circuit closed: limit"),
            Fault::Local => warn!(link = self.id.0, error = %e, "circuit closed: internal error"),
        }
    }

    /// A command from another task.
    fn handle_cmd(&mut self, cmd: LinkCmd) {
        let result = match cmd {
            LinkCmd::OpenOutbound { back, onionskin, reply } => {
                let _ = reply.send(self.table.open_outbound(&mut self.rng, back, &onionskin).ok());
                Ok(())
            }
            LinkCmd::ExtendDone { circ, next } => {
                match next {
                    Some(route) => self.table.extend_started(circ, route),
                    None => self.table.extend_failed(circ),
                }
                Ok(())
            }
            LinkCmd::CloseOutbound { circ, reason } => {
                self.table.close_outbound(circ, reason);
                Ok(())
            }
            LinkCmd::NextHopClosed { circ, reason } => {
                self.table.next_hop_closed(circ, reason);
                Ok(())
            }
            other => self.handle_stream_cmd(other),
        };
        if let Err(e) = result {
            self.log_circuit_error(&e);
        }
    }

    /// Commands about exit streams.
    fn handle_stream_cmd(&mut self, cmd: LinkCmd) -> Result<(), CircuitError> {
        match cmd {
            LinkCmd::StreamConnected { circ, stream, addr, to_socket, cancel } => {
                if self.table.stream_connected(circ, stream, addr).is_ok() {
                    let st = ExitStream { to_socket: Some(to_socket), pending: None, eof: false, _cancel: cancel };
                    self.streams.insert((circ, stream), st);
                }
                Ok(())
            }
            LinkCmd::StreamFailed { circ, stream, reason } => self.table.end_stream(circ, stream, reason),
            LinkCmd::StreamBytes { circ, stream, data, done } => {
                let Some(st) = self.streams.get_mut(&(circ, stream)) else {
                    return Ok(());
                };
                st.pending = Some(Pending { data, offset: 0, done });
                self.resume(circ, stream)
            }
            LinkCmd::StreamEof { circ, stream } => {
                if let Some(st) = self.streams.get_mut(&(circ, stream)) {
                    st.eof = true;
                }
                self.resume(circ, stream)
            }
            LinkCmd::StreamConsumed { circ, stream, cells } => {
                let now = Instant::now();
                for _ in 0..cells {
                    self.table.stream_consumed(circ, stream, now)?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A BEGIN: open the exit stream. At most
    /// `max_pending_streams_per_circuit` of this circuit's opens, and
    /// `max_pending_streams` of the relay's, resolve or connect at once; the
    /// rest wait their turn within the connect time-out (review L-10).
    fn begin(&mut self, circ: CircId, stream: StreamId, target: lamina_proto::msg::Target, port: u16) {
        let per_circuit = self.ctx.config.max_pending_streams_per_circuit;
        let circuit = self.pending_opens.entry(circ).or_insert_with(|| Arc::new(Semaphore::new(per_circuit)));
        let slots = exit::OpenSlots { circuit: Arc::clone(circuit), relay: Arc::clone(&self.ctx.pending_streams) };
        tokio::spawn(exit::open_stream(
            Arc::clone(&self.ctx),
            self.own.inbox.clone(),
            circ,
            stream,
            target,
            port,
            slots,
        ));
    }

    /// Package pending destination bytes as far as the windows allow; end
    /// the stream once the destination closed and everything was sent.
    fn resume(&mut self, circ: CircId, stream: StreamId) -> Result<(), CircuitError> {
        let Some(st) = self.streams.get_mut(&(circ, stream)) else {
            return Ok(());
        };
        if let Some(mut pending) = st.pending.take() {
            let n = self.table.send_stream_data(circ, stream, &pending.data[pending.offset..], Instant::now())?;
            pending.offset += n;
            if pending.offset < pending.data.len() {
                if let Some(st) = self.streams.get_mut(&(circ, stream)) {
                    st.pending = Some(pending);
                }
                return Ok(());
            }
            let _ = pending.done.send(());
        }
        if self.streams.get(&(circ, stream)).is_some_and(|s| s.eof && s.pending.is_none()) {
            self.streams.remove(&(circ, stream));
            self.table.end_stream(circ, stream, EndReason::Done)?;
        }
        Ok(())
    }

    /// Drain the table: cells for our writer, cells and commands for other
    /// links, and actions for us. Never waits for another task (spec §6.6).
    async fn flush(&mut self) {
        let mut own = Vec::new();
        let mut forward: HashMap<LinkId, Vec<Cell>> = HashMap::new();
        let mut backward: HashMap<LinkId, Vec<(CircId, Route, Cell)>> = HashMap::new();
        let mut commands: Vec<(LinkId, LinkCmd)> = Vec::new();
        loop {
            while let Some(cell) = self.table.poll_transmit() {
                own.push(cell);
            }
            let Some(action) = self.table.poll_action() else { break };
            self.handle_action(action, &mut forward, &mut backward, &mut commands);
        }
        if !own.is_empty() {
            self.ctx.metrics.cells_out.add(own.len() as u64);
            self.own.queues.push_out(&self.ctx, own);
        }
        for (link, cells) in forward {
            if let Some(h) = self.handle_of(link) {
                self.ctx.metrics.cells_out.add(cells.len() as u64);
                h.queues.push_out(&self.ctx, cells);
            }
        }
        for (link, items) in backward {
            if let Some(h) = self.handle_of(link) {
                h.queues.push_back(&self.ctx, items);
            }
        }
        for (link, cmd) in commands {
            if let Some(h) = self.handle_of(link) {
                h.queues.push_cmd(&self.ctx, cmd);
            }
        }
    }

    /// The handle of another link (cached; one registry lookup per link).
    fn handle_of(&mut self, link: LinkId) -> Option<LinkHandle> {
        if link == self.id {
            return Some(self.own.clone());
        }
        if let Some(h) = self.cache.get(&link) {
            if !h.queues.is_closed() {
                return Some(h.clone());
            }
            self.cache.remove(&link);
        }
        let h = self.ctx.link(link)?;
        self.cache.insert(link, h.clone());
        Some(h)
    }

    /// One action of the table.
    fn handle_action(
        &mut self,
        action: RelayAction,
        forward: &mut HashMap<LinkId, Vec<Cell>>,
        backward: &mut HashMap<LinkId, Vec<(CircId, Route, Cell)>>,
        commands: &mut Vec<(LinkId, LinkCmd)>,
    ) {
        match action {
            RelayAction::Forward { to, cell } => forward.entry(to.link).or_default().push(cell),
            RelayAction::Backward { to, from, cell } => {
                backward.entry(to.link).or_default().push((to.circ, from, cell))
            }
            RelayAction::Extend { circ, extend } => {
                tokio::spawn(extend_circuit(
                    Arc::clone(&self.ctx),
                    Route { link: self.id, circ },
                    extend,
                    self.own.clone(),
                    self.peer_relay,
                ));
            }
            RelayAction::Begin { circ, stream, target, port } => self.begin(circ, stream, target, port),
            RelayAction::BeginDir { circ, stream } => {
                // The directory service is attached by the directory driver;
                // without one, the stream is refused cleanly.
                trace!(link = self.id.0, "BEGIN_DIR without a directory service");
                let _ = self.table.end_stream(circ, stream, EndReason::NotExit);
            }
            RelayAction::StreamData { circ, stream, data } => {
                let (overrun, discarded) = match self.streams.get(&(circ, stream)).map(|st| st.to_socket.as_ref()) {
                    Some(Some(tx)) => match tx.try_send(data) {
                        Ok(()) => (false, false),
                        Err(mpsc::error::TrySendError::Closed(_)) => (false, true),
                        Err(mpsc::error::TrySendError::Full(_)) => (true, true),
                    },
                    // Data after a half-close breaks the protocol.
                    Some(None) => (true, true),
                    None => (false, true),
                };
                // A cell that will never reach a socket still counts for the
                // circuit window (credit follows cells, L-9, spec §8.3).
                if discarded {
                    let _ = self.table.stream_consumed(circ, stream, Instant::now());
                }
                if overrun {
                    self.streams.remove(&(circ, stream));
                    let _ = self.table.end_stream(circ, stream, EndReason::Protocol);
                }
            }
            RelayAction::StreamEnded { circ, stream, .. } => {
                self.streams.remove(&(circ, stream));
            }
            RelayAction::StreamHalfClosed { circ, stream } => {
                if let Some(st) = self.streams.get_mut(&(circ, stream)) {
                    st.to_socket = None;
                }
            }
            RelayAction::StreamWritable { circ, stream } => {
                if let Err(e) = self.resume(circ, stream) {
                    self.log_circuit_error(&e);
                }
            }
            RelayAction::CircuitClosed { circ, next, reason } => {
                self.ctx.metrics.circuits_closed.inc();
                self.streams.retain(|(c, _), _| *c != circ);
                self.pending_opens.remove(&circ);
                if let Some(next) = next {
                    commands.push((next.link, LinkCmd::CloseOutbound { circ: next.circ, reason }));
                }
            }
            RelayAction::OutboundClosed { back, reason } => {
                commands.push((back.link, LinkCmd::NextHopClosed { circ: back.circ, reason }));
            }
        }
    }
}

/// Why an EXTEND is refused before any dialling (spec §15.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExtendRefusal {
    /// The relay names itself.
    #[error("extend to ourselves")]
    Ourselves,
    /// The relay id is not in our verified directory.
    #[error("extend to a relay not in our directory")]
    Unknown,
    /// The link key differs from the listed one.
    #[error("extend with a link key that is not the listed one")]
    WrongKey,
    /// The address is not one the relay's descriptor lists.
    #[error("extend to an address the relay does not list")]
    WrongAddress,
    /// A non-public address outside a test network.
    #[error("extend to a non-public address outside a test network")]
    NonPublic,
    /// The relay is the circuit's previous hop (an A→R→A loop).
    #[error("extend back to the previous hop")]
    PreviousHop,
}

/// Check an EXTEND against our own verified directory (review H-1, M-1):
/// the named relay must be listed with that link key and address, must be
/// neither us nor the circuit's previous hop `prev`, and must be publicly
/// routable unless this is a test network.
pub fn check_extend(
    ctx: &RelayContext,
    extend: &lamina_proto::msg::Extend,
    prev: Option<lamina_crypto::keys::RelayId>,
) -> Result<(), ExtendRefusal> {
    if extend.relay_id == ctx.relay_id {
        return Err(ExtendRefusal::Ourselves);
    }
    if prev == Some(extend.relay_id) {
        return Err(ExtendRefusal::PreviousHop);
    }
    let known = ctx.known_relay(&extend.relay_id).ok_or(ExtendRefusal::Unknown)?;
    if known.link_key != extend.link_key {
        return Err(ExtendRefusal::WrongKey);
    }
    if !known.addrs.contains(&extend.addr) {
        return Err(ExtendRefusal::WrongAddress);
    }
    if !ctx.config.test_network && !crate::exit_policy::is_public(extend.addr.ip()) {
        return Err(ExtendRefusal::NonPublic);
    }
    Ok(())
}

/// Extend a circuit owned by `owner`: check the EXTEND against our
/// directory, reuse a link proven to be the next relay's or open one, open
/// a circuit there, and report back (spec §7.6, §15.3).
async fn extend_circuit(
    ctx: Arc<RelayContext>,
    owner: Route,
    extend: Box<lamina_proto::msg::Extend>,
    owner_handle: LinkHandle,
    prev: Option<lamina_crypto::keys::RelayId>,
) {
    let next = async {
        if let Err(refusal) = check_extend(&ctx, &extend, prev) {
            ctx.metrics.extends_refused.inc();
            debug!(link = owner.link.0, %refusal, "extend refused");
            return None;
        }
        let (link, handle) = match ctx.link_to_key(&extend.relay_id, &extend.link_key) {
            Some(found) => found,
            None => connect_relay(&ctx, extend.addr, extend.relay_id, extend.link_key).await.ok()?,
        };
        let (reply, answer) = oneshot::channel();
        let cmd = LinkCmd::OpenOutbound { back: owner, onionskin: Box::new(extend.onionskin), reply };
        handle.queues.push_cmd(&ctx, cmd).then_some(())?;
        let circ = answer.await.ok()??;
        Some(Route { link, circ })
    }
    .await;
    if next.is_none() {
        debug!(link = owner.link.0, "extend failed");
    }
    owner_handle.queues.push_cmd(&ctx, LinkCmd::ExtendDone { circ: owner.circ, next });
}

/// Open a link to `relay_id` at `addr`, authenticated by `link_key` and
/// by its certificate for `relay_id` (spec §3.3, §15.3), and start its
/// tasks.
pub async fn connect_relay(
    ctx: &Arc<RelayContext>,
    addr: std::net::SocketAddr,
    relay_id: lamina_crypto::keys::RelayId,
    link_key: lamina_crypto::keys::LinkPublicKey,
) -> Result<(LinkId, LinkHandle), LinkSetupError> {
    let (socket, parts) = open_relay(ctx, addr, relay_id, link_key).await?;
    ctx.metrics.handshakes_ok.inc();
    start_link(ctx, socket, parts, true)
}

/// Open a link to a seed known only by its address (Noise `XX`; the seed
/// proves its identity with its certificate, spec §3.3) and start its tasks.
pub async fn connect_seed(
    ctx: &Arc<RelayContext>,
    addr: std::net::SocketAddr,
) -> Result<(LinkId, LinkHandle), LinkSetupError> {
    let (socket, parts) = open_seed(ctx, addr).await?;
    ctx.metrics.handshakes_ok.inc();
    start_link(ctx, socket, parts, true)
}

/// The writer task: take cells from the link's queues (round-robin over
/// circuits), seal them in batches, write once. A write that makes no
/// progress for `write_stall_timeout` closes the link (spec §6.6).
async fn writer_task(
    ctx: Arc<RelayContext>,
    mut socket: OwnedWriteHalf,
    mut sender: LinkSender,
    queues: Arc<LinkQueues>,
) {
    let stall = ctx.config.write_stall_timeout;
    let mut cells = Vec::with_capacity(WRITE_GATHER_CELLS);
    let mut out = Vec::with_capacity(WRITE_GATHER_BYTES);
    loop {
        cells.clear();
        if queues.pop_out(&ctx, WRITE_GATHER_CELLS, &mut cells) == 0 {
            if queues.is_closed() {
                let _ = tokio::time::timeout(stall, socket.shutdown()).await;
                break;
            }
            queues.writer_wake.notified().await;
            continue;
        }
        out.clear();
        if sender.seal_cells(&cells, &mut out).is_err() {
            break;
        }
        if !write_with_progress(&mut socket, &out, stall).await {
            debug!("closing link: writes made no progress");
            break;
        }
        ctx.metrics.bytes_out.add(out.len() as u64);
    }
    queues.close();
    queues.clear(&ctx);
}

/// Write all of `buf`; false on an error or when one write call makes no
/// progress for `stall`.
async fn write_with_progress(socket: &mut OwnedWriteHalf, mut buf: &[u8], stall: Duration) -> bool {
    while !buf.is_empty() {
        match tokio::time::timeout(stall, socket.write(buf)).await {
            Ok(Ok(n)) if n > 0 => buf = buf.get(n..).unwrap_or_default(),
            _ => return false,
        }
    }
    true
}
