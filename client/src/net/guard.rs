//! A client's link to one guard: a task that owns the link's receive half
//! and every circuit through that guard, and a writer task that batches
//! cells (spec §3.4). Callers talk to it through [`GuardLink`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use lamina_proto::cell::{Cell, CircId, DestroyReason, CELL_LEN};
use lamina_proto::circuit::client::{ClientCircuit, ClientEvent, HopSpec};
use lamina_proto::link::{
    LinkHandshake, LinkReceiver, LinkSender, LocalAuth, PeerExpectation, PeerIdentity, MAX_BATCH_CELLS,
};
use lamina_proto::msg::{EndReason, StreamId, Target};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use crate::error::ClientError;

/// Capacity of the command channel.
const COMMANDS: usize = 1024;
/// Capacity of the writer channel, in batches.
const WRITER: usize = 1024;
/// Capacity of a stream's event channel: the most DATA cells a stream edge
/// may hold (past it the core destroys the circuit, spec §8.5) plus
/// control events. Tokio allocates channel slots as they fill.
const STREAM_EVENTS: usize = lamina_proto::circuit::flow::EDGE_HARD_CAP_CELLS + 64;

/// What a stream's owner hears.
#[derive(Debug)]
pub enum StreamEvent {
    /// The exit connected.
    Connected,
    /// Bytes arrived; report with [`GuardLink::consumed`] once delivered.
    Data(Vec<u8>),
    /// The stream ended (refused, failed, finished, or its circuit died).
    Ended(EndReason),
}

/// A command for the guard-link task.
#[derive(Debug)]
enum Command {
    /// Build a circuit along `path` (path[0] is this guard).
    Build {
        /// The path.
        path: Vec<HopSpec>,
        /// Build time-out.
        timeout: Duration,
        /// Answered when built or failed.
        reply: oneshot::Sender<Result<CircId, ClientError>>,
    },
    /// Open a stream on `circ`.
    Begin {
        /// The circuit.
        circ: CircId,
        /// Destination (resolved at the exit).
        target: Target,
        /// Port.
        port: u16,
        /// Where the stream's events go.
        events: mpsc::Sender<StreamEvent>,
        /// Answered with the stream id (the connection result comes as an event).
        reply: oneshot::Sender<Result<StreamId, ClientError>>,
    },
    /// Send bytes on a stream; `done` fires when all are packaged.
    Data {
        /// The circuit.
        circ: CircId,
        /// The stream.
        stream: StreamId,
        /// The bytes.
        data: Vec<u8>,
        /// Signalled once packaged.
        done: oneshot::Sender<()>,
    },
    /// `cells` DATA cells of a stream were delivered.
    Consumed {
        /// The circuit.
        circ: CircId,
        /// The stream.
        stream: StreamId,
        /// How many.
        cells: u32,
    },
    /// Half-close a stream (no more data from us).
    HalfClose {
        /// The circuit.
        circ: CircId,
        /// The stream.
        stream: StreamId,
    },
    /// End a stream.
    End {
        /// The circuit.
        circ: CircId,
        /// The stream.
        stream: StreamId,
    },
    /// Close a circuit.
    Close {
        /// The circuit.
        circ: CircId,
    },
    /// Close a circuit once its last stream has ended.
    Retire {
        /// The circuit.
        circ: CircId,
    },
    /// Report the state of circuits.
    Status {
        /// Answered with (open circuit ids).
        reply: oneshot::Sender<Vec<CircId>>,
    },
}

/// A handle to a live guard link.
#[derive(Debug, Clone)]
pub struct GuardLink {
    /// Commands for the link task.
    commands: mpsc::Sender<Command>,
}

impl GuardLink {
    /// Connect to the guard `hop` and run its link tasks.
    pub async fn connect(hop: &HopSpec, timeout: Duration) -> Result<Self, ClientError> {
        let mut rng = ChaCha20Rng::from_rng(rand_core::OsRng).map_err(|_| ClientError::Internal("rng"))?;
        let setup = async {
            let mut socket = TcpStream::connect(hop.addr).await?;
            socket.set_nodelay(true)?;
            let expect = PeerExpectation::Known { relay_id: hop.relay_id, link_key: hop.link_key };
            let hs = LinkHandshake::initiator(&mut rng, &LocalAuth::Anonymous, expect)?;
            let (tx, rx, _, leftover) = drive(&mut socket, hs, &mut rng).await?;
            Ok::<_, ClientError>((socket, tx, rx, leftover))
        };
        let (socket, tx, rx, leftover) =
            tokio::time::timeout(timeout, setup).await.map_err(|_| ClientError::Timeout("link handshake"))??;
        let (read_half, write_half) = socket.into_split();
        let (commands, command_rx) = mpsc::channel(COMMANDS);
        let (writer, writer_rx) = mpsc::channel(WRITER);
        tokio::spawn(writer_task(write_half, tx, writer_rx));
        let task = LinkTask {
            rng,
            circuits: HashMap::new(),
            builds: HashMap::new(),
            streams: HashMap::new(),
            pending: HashMap::new(),
            retiring: std::collections::HashSet::new(),
            writer,
            guard: hop.addr,
        };
        tokio::spawn(task.run(read_half, rx, leftover, command_rx));
        Ok(Self { commands })
    }

    /// Whether the link task is gone.
    pub fn is_closed(&self) -> bool {
        self.commands.is_closed()
    }

    /// Build a circuit along `path` (whose first hop is this guard).
    pub async fn build(&self, path: Vec<HopSpec>, timeout: Duration) -> Result<CircId, ClientError> {
        let (reply, answer) = oneshot::channel();
        self.send_cmd(Command::Build { path, timeout, reply }).await?;
        answer.await.map_err(|_| ClientError::LinkClosed)?
    }

    /// Open a stream; its events arrive on the returned receiver.
    pub async fn begin(
        &self,
        circ: CircId,
        target: Target,
        port: u16,
    ) -> Result<(StreamId, mpsc::Receiver<StreamEvent>), ClientError> {
        let (events, rx) = mpsc::channel(STREAM_EVENTS);
        let (reply, answer) = oneshot::channel();
        self.send_cmd(Command::Begin { circ, target, port, events, reply }).await?;
        let stream = answer.await.map_err(|_| ClientError::LinkClosed)??;
        Ok((stream, rx))
    }

    /// Send bytes on a stream; returns once they are packaged into cells
    /// (waiting for window if needed).
    pub async fn send(&self, circ: CircId, stream: StreamId, data: Vec<u8>) -> Result<(), ClientError> {
        let (done, packaged) = oneshot::channel();
        self.send_cmd(Command::Data { circ, stream, data, done }).await?;
        packaged.await.map_err(|_| ClientError::StreamClosed)
    }

    /// Report delivered DATA cells (for flow control).
    pub async fn consumed(&self, circ: CircId, stream: StreamId, cells: u32) {
        let _ = self.send_cmd(Command::Consumed { circ, stream, cells }).await;
    }

    /// Half-close a stream: the exit shuts down its write side towards the
    /// destination and keeps relaying the reply.
    pub async fn half_close(&self, circ: CircId, stream: StreamId) {
        let _ = self.send_cmd(Command::HalfClose { circ, stream }).await;
    }

    /// End a stream without waiting (for `Drop`); a full queue drops the
    /// request, and the stream then ends with its circuit.
    pub fn end_detached(&self, circ: CircId, stream: StreamId) {
        let _ = self.commands.try_send(Command::End { circ, stream });
    }

    /// End a stream.
    pub async fn end(&self, circ: CircId, stream: StreamId) {
        let _ = self.send_cmd(Command::End { circ, stream }).await;
    }

    /// Close a circuit once its last stream has ended (it takes no new ones).
    pub async fn retire(&self, circ: CircId) {
        let _ = self.send_cmd(Command::Retire { circ }).await;
    }

    /// Close a circuit.
    pub async fn close(&self, circ: CircId) {
        let _ = self.send_cmd(Command::Close { circ }).await;
    }

    /// Ids of the open circuits on this link.
    pub async fn open_circuits(&self) -> Vec<CircId> {
        let (reply, answer) = oneshot::channel();
        if self.send_cmd(Command::Status { reply }).await.is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }

    /// Send a command to the link task.
    async fn send_cmd(&self, cmd: Command) -> Result<(), ClientError> {
        self.commands.send(cmd).await.map_err(|_| ClientError::LinkClosed)
    }
}

/// Data waiting for window.
struct Pending {
    /// Bytes.
    data: Vec<u8>,
    /// Already packaged.
    offset: usize,
    /// Signalled when all are packaged.
    done: oneshot::Sender<()>,
    /// Send HALF_CLOSE once all are packaged.
    half_close_after: bool,
}

/// The guard-link task's state.
struct LinkTask {
    /// Randomness for circuit handshakes.
    rng: ChaCha20Rng,
    /// Circuits through this guard.
    circuits: HashMap<CircId, ClientCircuit>,
    /// Builds waiting for `Built`.
    builds: HashMap<CircId, oneshot::Sender<Result<CircId, ClientError>>>,
    /// Streams' event channels.
    streams: HashMap<(CircId, StreamId), mpsc::Sender<StreamEvent>>,
    /// Data waiting for window.
    pending: HashMap<(CircId, StreamId), Pending>,
    /// Circuits to close once their last stream ends.
    retiring: std::collections::HashSet<CircId>,
    /// Cells for the writer task.
    writer: mpsc::Sender<Vec<Cell>>,
    /// The guard's address (debug logs only).
    guard: SocketAddr,
}

impl LinkTask {
    /// The main loop: commands and cells until the link or the caller goes.
    async fn run(
        mut self,
        mut reader: OwnedReadHalf,
        mut receiver: LinkReceiver,
        leftover: Vec<u8>,
        mut commands: mpsc::Receiver<Command>,
    ) {
        let mut buf = Vec::with_capacity(256 * 1024);
        buf.extend_from_slice(&leftover);
        let mut alive = self.handle_bytes(&mut receiver, &mut buf);
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        while alive {
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.handle_command(cmd),
                    None => alive = false,
                },
                read = reader.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => alive = false,
                    Ok(_) => alive = self.handle_bytes(&mut receiver, &mut buf),
                },
                _ = tick.tick() => self.handle_timeouts(),
            }
            self.flush().await;
            if buf.capacity() - buf.len() < CELL_LEN * MAX_BATCH_CELLS {
                buf.reserve(256 * 1024);
            }
        }
        debug!(guard = ?lamina_proto::redact::Redacted(self.guard), "guard link closed");
        for (_, tx) in self.streams.drain() {
            let _ = tx.try_send(StreamEvent::Ended(EndReason::Destroyed));
        }
        for (_, reply) in self.builds.drain() {
            let _ = reply.send(Err(ClientError::LinkClosed));
        }
    }

    /// Decrypt frames and hand cells to their circuits.
    fn handle_bytes(&mut self, receiver: &mut LinkReceiver, buf: &mut Vec<u8>) -> bool {
        let mut cells = Vec::new();
        let mut pos = 0;
        loop {
            match receiver.open_frame(&buf[pos..], &mut cells) {
                Ok(Some(used)) => pos += used,
                Ok(None) => break,
                Err(e) => {
                    debug!(error = %e, "guard link: bad frame");
                    return false;
                }
            }
        }
        buf.drain(..pos);
        let now = std::time::Instant::now();
        for cell in cells {
            if let Some(c) = self.circuits.get_mut(&cell.circ) {
                if let Err(e) = c.handle_cell(&mut self.rng, cell, now) {
                    debug!(error = %e, "circuit closed");
                }
            }
        }
        true
    }

    /// Abandon builds past their deadline.
    fn handle_timeouts(&mut self) {
        let now = std::time::Instant::now();
        for c in self.circuits.values_mut() {
            c.handle_timeout(now);
        }
    }

    /// One command.
    fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::Build { path, timeout, reply } => {
                let circ = self.allocate();
                match ClientCircuit::new(&mut self.rng, std::time::Instant::now(), circ, path, timeout) {
                    Ok(mut c) => {
                        // Every relay of this network speaks flow-control
                        // version 1 (spec §8.6).
                        c.request_congestion_control();
                        self.circuits.insert(circ, c);
                        self.builds.insert(circ, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(ClientError::Circuit(e)));
                    }
                }
            }
            Command::Begin { circ, target, port, events, reply } => {
                let result = match self.circuits.get_mut(&circ) {
                    Some(c) => c.begin(target, port).map_err(ClientError::Circuit),
                    None => Err(ClientError::CircuitClosed),
                };
                if let Ok(stream) = result {
                    self.streams.insert((circ, stream), events);
                }
                let _ = reply.send(result);
            }
            Command::Data { circ, stream, data, done } => {
                self.pending.insert((circ, stream), Pending { data, offset: 0, done, half_close_after: false });
                self.resume(circ, stream);
            }
            Command::Consumed { circ, stream, cells } => {
                if let Some(c) = self.circuits.get_mut(&circ) {
                    let now = std::time::Instant::now();
                    for _ in 0..cells {
                        let _ = c.stream_consumed(stream, now);
                    }
                }
            }
            Command::HalfClose { circ, stream } => {
                // After queued data is packaged, never before it.
                match self.pending.get_mut(&(circ, stream)) {
                    Some(p) => p.half_close_after = true,
                    None => {
                        if let Some(c) = self.circuits.get_mut(&circ) {
                            let _ = c.half_close(stream);
                        }
                    }
                }
            }
            Command::End { circ, stream } => {
                self.streams.remove(&(circ, stream));
                self.pending.remove(&(circ, stream));
                if let Some(c) = self.circuits.get_mut(&circ) {
                    let _ = c.end_stream(stream, EndReason::Done);
                }
            }
            Command::Close { circ } => {
                if let Some(c) = self.circuits.get_mut(&circ) {
                    c.close(DestroyReason::Finished);
                }
            }
            Command::Retire { circ } => {
                if self.circuits.contains_key(&circ) {
                    self.retiring.insert(circ);
                }
            }
            Command::Status { reply } => {
                let open = self.circuits.iter().filter(|(_, c)| c.is_open()).map(|(id, _)| *id).collect();
                let _ = reply.send(open);
            }
        }
    }

    /// Package pending data as far as the windows allow.
    fn resume(&mut self, circ: CircId, stream: StreamId) {
        let Some(mut p) = self.pending.remove(&(circ, stream)) else { return };
        let Some(c) = self.circuits.get_mut(&circ) else { return };
        match c.send_data(stream, &p.data[p.offset..], std::time::Instant::now()) {
            Ok(n) => {
                p.offset += n;
                if p.offset == p.data.len() {
                    let _ = p.done.send(());
                    if p.half_close_after {
                        let _ = c.half_close(stream);
                    }
                } else {
                    self.pending.insert((circ, stream), p);
                }
            }
            Err(e) => debug!(error = %e, "stream send failed"),
        }
    }

    /// Drain every circuit's cells and events.
    async fn flush(&mut self) {
        let mut cells = Vec::new();
        let mut events = Vec::new();
        for (id, c) in &mut self.circuits {
            while let Some(cell) = c.poll_transmit() {
                cells.push(cell);
            }
            while let Some(ev) = c.poll_event() {
                events.push((*id, ev));
            }
        }
        for (circ, ev) in events {
            self.dispatch(circ, ev);
        }
        // Dispatching may have resumed streams and produced more cells.
        for c in self.circuits.values_mut() {
            while let Some(cell) = c.poll_transmit() {
                cells.push(cell);
            }
        }
        // Retired circuits close when their last stream has ended.
        for circ in &self.retiring {
            if let Some(c) = self.circuits.get_mut(circ) {
                if c.stream_count() == 0 {
                    c.close(DestroyReason::Finished);
                    while let Some(cell) = c.poll_transmit() {
                        cells.push(cell);
                    }
                }
            }
        }
        self.circuits.retain(|_, c| !c.is_closed());
        let circuits = &self.circuits;
        self.retiring.retain(|circ| circuits.contains_key(circ));
        if !cells.is_empty() {
            let _ = self.writer.send(cells).await;
        }
    }

    /// Route one circuit event to whoever waits for it.
    fn dispatch(&mut self, circ: CircId, ev: ClientEvent) {
        match ev {
            ClientEvent::Built => {
                if let Some(reply) = self.builds.remove(&circ) {
                    let _ = reply.send(Ok(circ));
                }
            }
            ClientEvent::StreamConnected { stream, .. } => self.deliver_to_stream(circ, stream, StreamEvent::Connected),
            ClientEvent::StreamData { stream, data } => self.deliver_to_stream(circ, stream, StreamEvent::Data(data)),
            ClientEvent::StreamEnded { stream, reason } => {
                self.deliver_to_stream(circ, stream, StreamEvent::Ended(reason));
                self.streams.remove(&(circ, stream));
                if let Some(p) = self.pending.remove(&(circ, stream)) {
                    drop(p.done);
                }
            }
            ClientEvent::StreamWritable { stream } => self.resume(circ, stream),
            ClientEvent::Closed { reason } => {
                if let Some(reply) = self.builds.remove(&circ) {
                    let failed_hop = self.circuits.get(&circ).map_or(0, ClientCircuit::hops_built);
                    let _ = reply.send(Err(ClientError::BuildFailed { reason, failed_hop }));
                }
                let gone: Vec<_> = self.streams.keys().filter(|(c, _)| *c == circ).copied().collect();
                for key in gone {
                    if let Some(tx) = self.streams.remove(&key) {
                        let _ = tx.try_send(StreamEvent::Ended(EndReason::Destroyed));
                    }
                    self.pending.remove(&key);
                }
            }
        }
    }

    /// Send an event to a stream's owner; a full channel means the owner
    /// overran the window (a bug), a closed one or none that it is gone:
    /// end the stream. Ending releases the circuit credit of every DATA
    /// cell not yet reported consumed, this one included (spec §8.3).
    fn deliver_to_stream(&mut self, circ: CircId, stream: StreamId, ev: StreamEvent) {
        let Some(tx) = self.streams.get(&(circ, stream)) else {
            if let Some(c) = self.circuits.get_mut(&circ) {
                let _ = c.end_stream(stream, EndReason::Misc);
            }
            return;
        };
        if tx.try_send(ev).is_err() {
            self.streams.remove(&(circ, stream));
            if let Some(c) = self.circuits.get_mut(&circ) {
                let _ = c.end_stream(stream, EndReason::Misc);
            }
        }
    }

    /// A fresh random circuit id with the initiator bit (L-4).
    fn allocate(&mut self) -> CircId {
        loop {
            let id = CircId(CircId::INITIATOR_BIT | (self.rng.next_u32() & !CircId::INITIATOR_BIT));
            if id.0 != CircId::INITIATOR_BIT && !self.circuits.contains_key(&id) {
                return id;
            }
        }
    }
}

/// The writer task: gather, seal in batches, write once.
async fn writer_task(mut socket: OwnedWriteHalf, mut sender: LinkSender, mut queue: mpsc::Receiver<Vec<Cell>>) {
    let mut out = Vec::new();
    while let Some(mut cells) = queue.recv().await {
        while cells.len() < 1024 {
            match queue.try_recv() {
                Ok(more) => cells.extend(more),
                Err(_) => break,
            }
        }
        out.clear();
        if sender.seal_cells(&cells, &mut out).is_err() {
            return;
        }
        if socket.write_all(&out).await.is_err() {
            return;
        }
    }
    let _ = socket.shutdown().await;
}

/// Drive the initiator handshake to completion over `socket`.
pub(crate) async fn drive(
    socket: &mut TcpStream,
    mut hs: LinkHandshake,
    rng: &mut ChaCha20Rng,
) -> Result<(LinkSender, LinkReceiver, PeerIdentity, Vec<u8>), ClientError> {
    let mut buf = Vec::with_capacity(4096);
    loop {
        while let Some(out) = hs.poll_transmit() {
            socket.write_all(&out).await?;
        }
        if hs.is_finished() {
            let (tx, rx, peer) = hs.into_transport()?;
            return Ok((tx, rx, peer, buf));
        }
        if buf.len() > 8192 || socket.read_buf(&mut buf).await? == 0 {
            return Err(ClientError::LinkClosed);
        }
        let used = hs.handle_input(rng, &buf)?;
        buf.drain(..used);
    }
}
