//! The client side of one circuit (spec §6–§8), sans-IO.
//!
//! States are named for what they await (CONTRIBUTING.md P7): `AwaitingCreated`
//! after the CREATE to the first hop, `AwaitingExtended { hop }` while
//! extending, then `Open`. The pending handshake lives inside the state, so
//! it cannot outlive it. Any protocol or authentication failure closes the
//! circuit (a DESTROY is queued) and only this circuit.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use lamina_crypto::handshake::{client_start, ClientPending};
use lamina_crypto::keys::{LinkPublicKey, OnionPublicKey, RelayId};
use lamina_crypto::layer::{LayerStack, BODY_LEN, MAX_HOPS, TAG_LEN};
use rand_core::{CryptoRng, RngCore};

use super::congestion::FlowAdvisory;
use super::flow::{CircuitReceiver, CircuitSender, StreamReceipt, StreamReceiver, StreamSender};
use super::{empty_body, forward_data_capacity, MAX_STREAMS_PER_CIRCUIT};
use crate::cell::{Cell, CellCommand, CircId, DestroyReason};
use crate::error::CircuitError;
use crate::msg::{EndReason, Extend, RelayCell, RelayMsg, StreamId, Target, CC_VERSION};

/// What the client knows about one hop of its path (from a verified descriptor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopSpec {
    /// The relay's identity.
    pub relay_id: RelayId,
    /// Its onion key.
    pub onion_key: OnionPublicKey,
    /// Its link key.
    pub link_key: LinkPublicKey,
    /// Its address.
    pub addr: SocketAddr,
}

/// What happened on the circuit, for the driver.
#[derive(Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// All hops are built; streams may be opened.
    Built,
    /// A stream is connected (the exit may name the address it reached).
    StreamConnected {
        /// The stream.
        stream: StreamId,
        /// The address the exit connected to, if it said.
        addr: Option<IpAddr>,
    },
    /// Bytes arrived on a stream. Call
    /// [`ClientCircuit::stream_consumed`] once they have been delivered.
    StreamData {
        /// The stream.
        stream: StreamId,
        /// The bytes.
        data: Vec<u8>,
    },
    /// A stream ended (refused, failed or finished).
    StreamEnded {
        /// The stream.
        stream: StreamId,
        /// Why.
        reason: EndReason,
    },
    /// A stream that was blocked by a window may send again.
    StreamWritable {
        /// The stream.
        stream: StreamId,
    },
    /// The circuit closed; every stream on it is gone.
    Closed {
        /// Why.
        reason: DestroyReason,
    },
}

/// Stream ids, reasons and sizes only: never payload bytes or addresses
/// (L-7, spec §11).
impl std::fmt::Debug for ClientEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Built => f.write_str("Built"),
            Self::StreamConnected { stream, .. } => {
                f.debug_struct("StreamConnected").field("stream", stream).finish_non_exhaustive()
            }
            Self::StreamData { stream, data } => {
                f.debug_struct("StreamData").field("stream", stream).field("len", &data.len()).finish()
            }
            Self::StreamEnded { stream, reason } => {
                f.debug_struct("StreamEnded").field("stream", stream).field("reason", reason).finish()
            }
            Self::StreamWritable { stream } => f.debug_struct("StreamWritable").field("stream", stream).finish(),
            Self::Closed { reason } => f.debug_struct("Closed").field("reason", reason).finish(),
        }
    }
}

/// Circuit states (spec §6.1).
enum State {
    /// CREATE sent to hop 0.
    AwaitingCreated {
        /// The handshake with hop 0.
        pending: Box<ClientPending>,
    },
    /// EXTEND sent through the circuit for hop `hop`.
    AwaitingExtended {
        /// Index of the hop being added.
        hop: usize,
        /// The handshake with that hop.
        pending: Box<ClientPending>,
    },
    /// Built.
    Open,
    /// Closed; nothing more happens.
    Closed,
}

/// Per-stream state.
struct Stream {
    /// Whether the exit answered CONNECTED.
    connected: bool,
    /// Our send window or advisory edge.
    send: StreamSender,
    /// Our receive window or edge buffer.
    recv: StreamReceiver,
    /// Whether a send was refused for lack of window (wake it later).
    blocked: bool,
    /// DATA cells handed to the driver and not yet reported consumed: when
    /// the stream ends, their circuit credit is released at once (spec §8.3).
    undelivered: u32,
}

/// One circuit as the client sees it.
pub struct ClientCircuit {
    /// Id on the link to hop 0.
    circ: CircId,
    /// The path.
    path: Vec<HopSpec>,
    /// Build state.
    state: State,
    /// One layer per built hop.
    layers: LayerStack,
    /// Open streams.
    streams: BTreeMap<StreamId, Stream>,
    /// Next stream id to try.
    next_stream: u16,
    /// Circuit-level send window or congestion window (towards the last hop).
    send: CircuitSender,
    /// Circuit-level receive window or receipts.
    recv: CircuitReceiver,
    /// Ask the last hop for congestion control when the circuit is built.
    want_cc: bool,
    /// Congestion control is on (spec §8.6).
    cc: bool,
    /// Cells to send to hop 0.
    out: VecDeque<Cell>,
    /// Events for the driver.
    events: VecDeque<ClientEvent>,
    /// When an unfinished build is abandoned.
    build_deadline: Option<Instant>,
}

impl std::fmt::Debug for ClientCircuit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCircuit")
            .field("circ", &self.circ)
            .field("hops", &self.layers.len())
            .field("streams", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl ClientCircuit {
    /// Start building a circuit along `path` with id `circ` on the link to
    /// its first hop. Queues the CREATE; the build is abandoned at
    /// `now + build_timeout`.
    pub fn new<R: RngCore + CryptoRng>(
        rng: &mut R,
        now: Instant,
        circ: CircId,
        path: Vec<HopSpec>,
        build_timeout: Duration,
    ) -> Result<Self, CircuitError> {
        let first = path.first().ok_or(CircuitError::Protocol { circ, reason: "empty path" })?;
        if path.len() > MAX_HOPS {
            return Err(CircuitError::Limit { circ, what: "hops" });
        }
        let (pending, onionskin) = client_start(rng, &first.relay_id, &first.onion_key);
        let mut out = VecDeque::new();
        out.push_back(Cell::create(circ, &onionskin));
        Ok(Self {
            circ,
            path,
            state: State::AwaitingCreated { pending: Box::new(pending) },
            layers: LayerStack::new(),
            streams: BTreeMap::new(),
            next_stream: 1,
            send: CircuitSender::fixed(),
            recv: CircuitReceiver::fixed(),
            want_cc: false,
            cc: false,
            out,
            events: VecDeque::new(),
            build_deadline: now.checked_add(build_timeout),
        })
    }

    /// Negotiate congestion control with the last hop once the circuit is
    /// built (spec §8.6): a CC_REQUEST goes out right after the last
    /// EXTENDED, before any stream. Has no effect on a built circuit.
    pub fn request_congestion_control(&mut self) {
        self.want_cc = true;
    }

    /// Whether this circuit runs congestion control (spec §8.4–§8.6).
    pub fn congestion_controlled(&self) -> bool {
        self.cc
    }

    /// DATA cells the circuit may still send towards the last hop.
    pub fn circuit_send_window(&self) -> u32 {
        self.send.available()
    }

    /// The circuit id on the first hop's link.
    pub fn id(&self) -> CircId {
        self.circ
    }

    /// The path.
    pub fn path(&self) -> &[HopSpec] {
        &self.path
    }

    /// Whether the circuit is built and not closed.
    pub fn is_open(&self) -> bool {
        matches!(self.state, State::Open)
    }

    /// Whether the circuit is closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.state, State::Closed)
    }

    /// Hops built so far (while building: the index of the hop being added).
    pub fn hops_built(&self) -> usize {
        self.layers.len()
    }

    /// Number of open streams.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Next cell to send to hop 0.
    pub fn poll_transmit(&mut self) -> Option<Cell> {
        self.out.pop_front()
    }

    /// Next event for the driver.
    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.state {
            State::AwaitingCreated { .. } | State::AwaitingExtended { .. } => self.build_deadline,
            State::Open | State::Closed => None,
        }
    }

    /// Abandon a build that missed its deadline.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|deadline| now >= deadline) {
            self.close(DestroyReason::Timeout);
        }
    }

    /// Handle a cell that arrived for this circuit. An error has already
    /// closed the circuit; it is returned for logging.
    /// `now` times congestion-control samples (spec §8.4).
    pub fn handle_cell<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        cell: Cell,
        now: Instant,
    ) -> Result<(), CircuitError> {
        let result = match cell.command {
            CellCommand::Created => self.handle_created(rng, &cell),
            CellCommand::Relay => self.handle_relay(rng, cell, now),
            CellCommand::Destroy => {
                self.closed_by_peer(cell.destroy_reason());
                Ok(())
            }
            CellCommand::Create | CellCommand::Padding | CellCommand::Directory | CellCommand::RelayEarly => {
                Err(CircuitError::Protocol { circ: self.circ, reason: "unexpected cell command" })
            }
        };
        if let Err(e) = &result {
            let reason = match e {
                CircuitError::Limit { .. } => DestroyReason::ResourceLimit,
                _ => DestroyReason::Protocol,
            };
            self.close(reason);
        }
        result
    }

    /// Close the circuit: queue a DESTROY and end every stream.
    pub fn close(&mut self, reason: DestroyReason) {
        if self.is_closed() {
            return;
        }
        self.out.push_back(Cell::destroy(self.circ, reason));
        self.finish_closed(reason);
    }

    /// Open a stream to `target:port` at the last hop. Returns its id; the
    /// answer arrives as [`ClientEvent::StreamConnected`] or `StreamEnded`.
    pub fn begin(&mut self, target: Target, port: u16) -> Result<StreamId, CircuitError> {
        self.open_stream(RelayMsg::Begin { target, port })
    }

    /// Open a stream to the last hop's directory service (spec §7.9).
    pub fn begin_dir(&mut self) -> Result<StreamId, CircuitError> {
        self.open_stream(RelayMsg::BeginDir)
    }

    /// Send stream bytes; returns how many were accepted (0 when a window is
    /// closed: wait for [`ClientEvent::StreamWritable`]). `now` is the send
    /// time congestion control measures round trips from.
    pub fn send_data(&mut self, stream: StreamId, data: &[u8], now: Instant) -> Result<usize, CircuitError> {
        let circ = self.circ;
        let last = self.last_hop()?;
        let cap = forward_data_capacity(last);
        let mut sent = 0;
        while sent < data.len() {
            let st = self.streams.get_mut(&stream).ok_or(CircuitError::NoSuchStream { circ, stream })?;
            if !st.connected {
                return Err(CircuitError::Protocol { circ, reason: "data before connected" });
            }
            if !st.send.can_send() || !self.send.can_send() {
                st.blocked = true;
                break;
            }
            let end = data.len().min(sent + cap);
            let tag = self.send_data_cell(last, stream, &data[sent..end])?;
            let st = self.streams.get_mut(&stream).ok_or(CircuitError::NoSuchStream { circ, stream })?;
            st.send.on_send(tag);
            self.send.on_send(tag, now);
            sent = end;
        }
        Ok(sent)
    }

    /// Whether `stream` may send a DATA cell now.
    pub fn can_send(&self, stream: StreamId) -> bool {
        self.is_open()
            && self.send.can_send()
            && self.streams.get(&stream).is_some_and(|s| s.connected && s.send.can_send())
    }

    /// Report that one DATA cell of `stream` was delivered to its consumer
    /// at `now`; queues SENDMEs as batches complete (spec §8.2), or an XON
    /// when an edge buffer drained (spec §8.5).
    ///
    /// A report for a stream that has ended is ignored: its credit was
    /// released when it ended (spec §8.3), so no cell is counted twice.
    pub fn stream_consumed(&mut self, stream: StreamId, now: Instant) -> Result<(), CircuitError> {
        let last = self.last_hop()?;
        let Some(st) = self.streams.get_mut(&stream) else { return Ok(()) };
        if st.undelivered == 0 {
            return Ok(());
        }
        st.undelivered -= 1;
        let receipt = st.recv.on_consumed(now);
        if let Some(tag) = self.recv.on_consumed() {
            self.send_relay(last, StreamId::CIRCUIT, RelayMsg::Sendme(tag))?;
        }
        if let Some(receipt) = receipt {
            self.send_relay(last, stream, stream_receipt_msg(receipt))?;
        }
        Ok(())
    }

    /// A stream left the table: count every cell it still had in the
    /// driver's hands as consumed for the circuit window (spec §8.3).
    fn release_credit(&mut self, st: &Stream) -> Result<(), CircuitError> {
        for _ in 0..st.undelivered {
            if let Some(tag) = self.recv.on_consumed() {
                let last = self.last_hop()?;
                self.send_relay(last, StreamId::CIRCUIT, RelayMsg::Sendme(tag))?;
            }
        }
        Ok(())
    }

    /// Half-close a stream: we send no more DATA, the exit keeps sending
    /// until the destination closes (spec §7.5).
    pub fn half_close(&mut self, stream: StreamId) -> Result<(), CircuitError> {
        if !self.streams.contains_key(&stream) {
            return Ok(());
        }
        let last = self.last_hop()?;
        self.send_relay(last, stream, RelayMsg::HalfClose).map(|_| ())
    }

    /// End a stream from our side.
    pub fn end_stream(&mut self, stream: StreamId, reason: EndReason) -> Result<(), CircuitError> {
        let Some(st) = self.streams.remove(&stream) else { return Ok(()) };
        let last = self.last_hop()?;
        self.send_relay(last, stream, RelayMsg::End(reason))?;
        self.release_credit(&st)
    }

    /// Test hook: wrap arbitrary relay-message plaintext for `hop`, as a
    /// buggy or hostile client would (used to test relays' decoders).
    #[doc(hidden)]
    pub fn dangerously_send_raw(&mut self, hop: usize, plaintext: &[u8]) -> Result<(), CircuitError> {
        let mut body = empty_body();
        let len = plaintext.len().min(lamina_crypto::layer::forward_capacity(hop));
        body[TAG_LEN..TAG_LEN + len].copy_from_slice(&plaintext[..len]);
        self.wrap_and_queue(hop, body).map(|_| ())
    }

    /// Index of the last built hop, or an error if the circuit is not open.
    fn last_hop(&self) -> Result<usize, CircuitError> {
        if !self.is_open() {
            return Err(CircuitError::NotOpen { circ: self.circ });
        }
        Ok(self.layers.len().saturating_sub(1))
    }

    /// Allocate a stream id and send the opening message.
    fn open_stream(&mut self, msg: RelayMsg) -> Result<StreamId, CircuitError> {
        let last = self.last_hop()?;
        if self.streams.len() >= MAX_STREAMS_PER_CIRCUIT {
            return Err(CircuitError::Limit { circ: self.circ, what: "streams per circuit" });
        }
        let mut id = self.next_stream;
        while id == 0 || self.streams.contains_key(&StreamId(id)) {
            id = id.wrapping_add(1);
        }
        self.next_stream = id.wrapping_add(1);
        let stream = StreamId(id);
        // Send first: a message that cannot be encoded must not leave a
        // stream behind (found by the client_circuit fuzz target).
        self.send_relay(last, stream, msg)?;
        self.streams.insert(
            stream,
            Stream {
                connected: false,
                send: StreamSender::new(self.cc),
                recv: StreamReceiver::new(self.cc),
                blocked: false,
                undelivered: 0,
            },
        );
        Ok(stream)
    }

    /// Wrap and queue one DATA cell for hop `hop` (no allocation).
    fn send_data_cell(&mut self, hop: usize, stream: StreamId, data: &[u8]) -> Result<[u8; TAG_LEN], CircuitError> {
        let circ = self.circ;
        let mut body = empty_body();
        let cap = lamina_crypto::layer::forward_capacity(hop);
        RelayCell::encode_data_into(&mut body[TAG_LEN..TAG_LEN + cap], stream, data)
            .map_err(|source| CircuitError::Encode { circ, source })?;
        self.wrap_and_queue(hop, body)
    }

    /// Wrap and queue a relay message for hop `hop`; returns its layer tag.
    fn send_relay(&mut self, hop: usize, stream: StreamId, msg: RelayMsg) -> Result<[u8; TAG_LEN], CircuitError> {
        let circ = self.circ;
        let mut body = empty_body();
        let cap = lamina_crypto::layer::forward_capacity(hop);
        RelayCell::new(stream, msg)
            .encode_into(&mut body[TAG_LEN..TAG_LEN + cap])
            .map_err(|source| CircuitError::Encode { circ, source })?;
        self.wrap_and_queue(hop, body)
    }

    /// Add the layers for hop `hop` to a body whose plaintext is written,
    /// and queue the cell; returns the target layer's tag.
    fn wrap_and_queue(&mut self, hop: usize, mut body: [u8; BODY_LEN]) -> Result<[u8; TAG_LEN], CircuitError> {
        let circ = self.circ;
        let tag = self.layers.wrap_forward(hop, &mut body).map_err(|source| CircuitError::Crypto {
            circ,
            context: "forward wrap",
            source,
        })?;
        self.out.push_back(Cell::relay(circ, body));
        Ok(tag)
    }

    /// CREATED from hop 0.
    fn handle_created<R: RngCore + CryptoRng>(&mut self, rng: &mut R, cell: &Cell) -> Result<(), CircuitError> {
        let circ = self.circ;
        let State::AwaitingCreated { pending } = std::mem::replace(&mut self.state, State::Closed) else {
            return Err(CircuitError::Protocol { circ, reason: "unexpected CREATED" });
        };
        let reply = cell.created_reply().map_err(|source| CircuitError::Decode { circ, source })?;
        self.hop_finished(rng, *pending, &reply)
    }

    /// A handshake reply arrived: add the hop, then extend or open.
    fn hop_finished<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        pending: ClientPending,
        reply: &[u8; lamina_crypto::handshake::REPLY_LEN],
    ) -> Result<(), CircuitError> {
        let circ = self.circ;
        let keys = pending.finish(reply).map_err(|source| CircuitError::Crypto {
            circ,
            context: "circuit handshake",
            source,
        })?;
        self.layers.push(&keys).map_err(|source| CircuitError::Crypto { circ, context: "add layer", source })?;
        let next = self.layers.len();
        let Some(hop) = self.path.get(next).cloned() else {
            self.state = State::Open;
            if self.want_cc {
                // Before any stream, so both ends count DATA cells from
                // the same point (spec §8.6).
                self.send_relay(next - 1, StreamId::CIRCUIT, RelayMsg::CcRequest(CC_VERSION))?;
                self.send = CircuitSender::vegas();
                self.recv = CircuitReceiver::vegas();
                self.cc = true;
            }
            self.events.push_back(ClientEvent::Built);
            return Ok(());
        };
        let (pending, onionskin) = client_start(rng, &hop.relay_id, &hop.onion_key);
        let extend = Extend { relay_id: hop.relay_id, link_key: hop.link_key, addr: hop.addr, onionskin };
        let sent = self.send_relay(next - 1, StreamId::CIRCUIT, RelayMsg::Extend(Box::new(extend)));
        // EXTEND travels in RELAY_EARLY, which every relay counts (spec §7.6).
        if let (Ok(_), Some(cell)) = (&sent, self.out.back_mut()) {
            cell.command = CellCommand::RelayEarly;
        }
        self.state = State::AwaitingExtended { hop: next, pending: Box::new(pending) };
        sent.map(|_| ())
    }

    /// A RELAY cell: remove layers, then dispatch the message.
    fn handle_relay<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        mut cell: Cell,
        now: Instant,
    ) -> Result<(), CircuitError> {
        let circ = self.circ;
        if matches!(self.state, State::AwaitingCreated { .. } | State::Closed) {
            return Err(CircuitError::Protocol { circ, reason: "relay cell before CREATED" });
        }
        let (hop, tag) = self.layers.unwrap_backward(&mut cell.payload).map_err(|source| CircuitError::Crypto {
            circ,
            context: "backward layers",
            source,
        })?;
        let rc = RelayCell::decode(&cell.payload[TAG_LEN..]).map_err(|source| CircuitError::Decode { circ, source })?;
        match rc.msg {
            RelayMsg::Extended(reply) => self.handle_extended(rng, hop, &reply),
            msg => {
                if hop + 1 != self.layers.len() || !self.is_open() {
                    return Err(CircuitError::Protocol { circ, reason: "stream message from a middle hop" });
                }
                self.handle_stream_msg(rc.stream, msg, tag, now)
            }
        }
    }

    /// EXTENDED from the current last hop.
    fn handle_extended<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        from: usize,
        reply: &[u8; lamina_crypto::handshake::REPLY_LEN],
    ) -> Result<(), CircuitError> {
        let circ = self.circ;
        match std::mem::replace(&mut self.state, State::Closed) {
            State::AwaitingExtended { hop, pending } if from + 1 == hop => self.hop_finished(rng, *pending, reply),
            _ => Err(CircuitError::Protocol { circ, reason: "unexpected EXTENDED" }),
        }
    }

    /// Messages from the last hop about streams or the circuit.
    fn handle_stream_msg(
        &mut self,
        stream: StreamId,
        msg: RelayMsg,
        tag: [u8; TAG_LEN],
        now: Instant,
    ) -> Result<(), CircuitError> {
        let circ = self.circ;
        match msg {
            RelayMsg::Sendme(receipt) => self.handle_sendme(stream, &receipt, now),
            RelayMsg::Drop => Ok(()),
            RelayMsg::Data(data) => self.handle_data(stream, data, tag),
            msg @ (RelayMsg::Xoff | RelayMsg::Xon(_)) => self.handle_advisory(stream, &msg, now),
            RelayMsg::Connected(addr) => {
                // A CONNECTED may cross our END on the wire: ignore it for a
                // stream we no longer hold (found by fuzzing).
                let Some(st) = self.streams.get_mut(&stream) else {
                    return Ok(());
                };
                if st.connected {
                    return Err(CircuitError::Protocol { circ, reason: "second CONNECTED" });
                }
                st.connected = true;
                self.events.push_back(ClientEvent::StreamConnected { stream, addr });
                Ok(())
            }
            RelayMsg::End(reason) => {
                if let Some(st) = self.streams.remove(&stream) {
                    self.events.push_back(ClientEvent::StreamEnded { stream, reason });
                    self.release_credit(&st)?;
                }
                Ok(())
            }
            _ => Err(CircuitError::Protocol { circ, reason: "unexpected relay message at client" }),
        }
    }

    /// DATA from the last hop: account it at both levels, then deliver.
    fn handle_data(&mut self, stream: StreamId, data: Vec<u8>, tag: [u8; TAG_LEN]) -> Result<(), CircuitError> {
        let circ = self.circ;
        let last = self.last_hop()?;
        // Under congestion control the receipt goes out on receipt (spec §8.4).
        if let Some(receipt) = self.recv.on_receive(tag).map_err(|reason| CircuitError::Protocol { circ, reason })? {
            self.send_relay(last, StreamId::CIRCUIT, RelayMsg::Sendme(receipt))?;
        }
        // Data for a stream we already ended is dropped but still counted.
        if let Some(st) = self.streams.get_mut(&stream) {
            let advisory = st.recv.on_receive(tag).map_err(|reason| CircuitError::Protocol { circ, reason })?;
            st.undelivered += 1;
            self.events.push_back(ClientEvent::StreamData { stream, data });
            if let Some(receipt) = advisory {
                self.send_relay(last, stream, stream_receipt_msg(receipt))?;
            }
        } else if let Some(receipt) = self.recv.on_consumed() {
            // Data for a stream we already ended still counts for the
            // circuit window: acknowledge it (found by fuzzing).
            self.send_relay(last, StreamId::CIRCUIT, RelayMsg::Sendme(receipt))?;
        }
        Ok(())
    }

    /// XOFF or XON from the exit (spec §8.5); one for a stream we already
    /// ended crossed our END and is ignored.
    fn handle_advisory(&mut self, stream: StreamId, msg: &RelayMsg, now: Instant) -> Result<(), CircuitError> {
        let circ = self.circ;
        let Some(st) = self.streams.get_mut(&stream) else { return Ok(()) };
        let result = match msg {
            RelayMsg::Xon(rate) => st.send.on_xon(*rate, now),
            _ => st.send.on_xoff(),
        };
        result.map_err(|reason| CircuitError::Protocol { circ, reason })?;
        if st.blocked {
            self.wake(stream);
        }
        Ok(())
    }

    /// A SENDME from the last hop: verify its receipt, reopen, wake streams.
    fn handle_sendme(&mut self, stream: StreamId, receipt: &[u8; TAG_LEN], now: Instant) -> Result<(), CircuitError> {
        let circ = self.circ;
        if stream == StreamId::CIRCUIT {
            self.send.on_sendme(receipt, now).map_err(|reason| CircuitError::Protocol { circ, reason })?;
            let woken: Vec<StreamId> = self.streams.iter().filter(|(_, s)| s.blocked).map(|(id, _)| *id).collect();
            for id in woken {
                self.wake(id);
            }
        } else if let Some(st) = self.streams.get_mut(&stream) {
            st.send.on_sendme(receipt).map_err(|reason| CircuitError::Protocol { circ, reason })?;
            if st.blocked {
                self.wake(stream);
            }
        }
        Ok(())
    }

    /// Tell the driver a blocked stream may send again.
    fn wake(&mut self, stream: StreamId) {
        if let Some(st) = self.streams.get_mut(&stream) {
            if st.send.can_send() && self.send.can_send() {
                st.blocked = false;
                self.events.push_back(ClientEvent::StreamWritable { stream });
            }
        }
    }

    /// The peer destroyed the circuit.
    fn closed_by_peer(&mut self, reason: DestroyReason) {
        if !self.is_closed() {
            self.finish_closed(reason);
        }
    }

    /// Enter `Closed`: end every stream and report.
    fn finish_closed(&mut self, reason: DestroyReason) {
        self.state = State::Closed;
        for stream in std::mem::take(&mut self.streams).into_keys() {
            self.events.push_back(ClientEvent::StreamEnded { stream, reason: EndReason::Destroyed });
        }
        self.events.push_back(ClientEvent::Closed { reason });
    }
}

/// The relay message carrying a stream receiver's answer.
pub(super) fn stream_receipt_msg(receipt: StreamReceipt) -> RelayMsg {
    match receipt {
        StreamReceipt::Sendme(tag) => RelayMsg::Sendme(tag),
        StreamReceipt::Advisory(FlowAdvisory::Xoff) => RelayMsg::Xoff,
        StreamReceipt::Advisory(FlowAdvisory::Xon { kib_per_s }) => RelayMsg::Xon(kib_per_s),
    }
}
