//! A relay's circuit table for one link (spec §6–§8), sans-IO.
//!
//! Each link a relay holds has one table. A circuit that *arrived* on a link
//! is a [`Entry::Hop`] there: that table owns both of the circuit's layers,
//! its streams (if this relay is the circuit's exit) and the route to the
//! next hop. A circuit this relay *extended* over a link is an
//! [`Entry::Outbound`] there: cells arriving on it are handed, untouched, to
//! the owning table as [`RelayAction::Backward`]. Each circuit's crypto thus
//! lives in exactly one table, so tables on different links can run on
//! different cores with no shared lock (spec §6.4).
//!
//! The table never learns *why* it is asked to do something: it emits
//! actions ("open a link to X and send this CREATE", "connect a stream to
//! Y", "these bytes arrived") and the driver carries them out.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use lamina_crypto::handshake::relay_respond;
use lamina_crypto::keys::{RelayId, StaticKeypair};
use lamina_crypto::layer::{Peeled, RelayLayers, BODY_LEN, TAG_LEN};
use lamina_crypto::padding::PaddingSource;
use rand_core::{CryptoRng, RngCore};

use super::client::stream_receipt_msg;
use super::flow::{CircuitReceiver, CircuitSender, StreamReceiver, StreamSender};
use super::{backward_region, empty_body, BACKWARD_DATA_CAPACITY, MAX_STREAMS_PER_CIRCUIT};
use crate::cell::{Cell, CellCommand, CircId, DestroyReason, MAX_RELAY_EARLY};
use crate::error::CircuitError;
use crate::msg::{EndReason, Extend, RelayCell, RelayMsg, StreamId, Target};

/// A driver-assigned handle for one link of a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u64);

/// A circuit on a particular link: where to send its cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// The link.
    pub link: LinkId,
    /// The circuit id on that link.
    pub circ: CircId,
}

/// The relay's circuit-handshake keys, borrowed per call.
pub struct HopKeysRef<'a> {
    /// Our identity.
    pub relay_id: &'a RelayId,
    /// Our current onion key.
    pub onion_key: &'a StaticKeypair,
}

/// Limits of one table (spec §6.5).
#[derive(Debug, Clone, Copy)]
pub struct TableLimits {
    /// Most circuits on this link (hop and outbound together).
    pub max_circuits: usize,
    /// Most streams on one circuit.
    pub max_streams: usize,
}

impl Default for TableLimits {
    fn default() -> Self {
        Self { max_circuits: 16_384, max_streams: MAX_STREAMS_PER_CIRCUIT }
    }
}

/// What the driver must do.
pub enum RelayAction {
    /// Send `cell` on another link (forward direction).
    Forward {
        /// Where.
        to: Route,
        /// The cell, already re-addressed to `to.circ`.
        cell: Cell,
    },
    /// Hand a raw backward cell to the table that owns the circuit: call
    /// [`RelayCircuitTable::handle_from_next`] on `to.link`'s table.
    Backward {
        /// The owning link and its circuit id.
        to: Route,
        /// The link and circuit id the cell arrived on.
        from: Route,
        /// The cell as received from the next hop.
        cell: Cell,
    },
    /// Extend circuit `circ`: open or reuse a link to the relay, call
    /// [`RelayCircuitTable::open_outbound`] on that link's table, then
    /// [`RelayCircuitTable::extend_started`] here (or `extend_failed`).
    Extend {
        /// The circuit on this link.
        circ: CircId,
        /// Where to.
        extend: Box<Extend>,
    },
    /// Exit: open a TCP stream (resolve at the exit, then apply the policy).
    Begin {
        /// The circuit.
        circ: CircId,
        /// The stream.
        stream: StreamId,
        /// Destination.
        target: Target,
        /// Port.
        port: u16,
    },
    /// Open a stream to our directory service.
    BeginDir {
        /// The circuit.
        circ: CircId,
        /// The stream.
        stream: StreamId,
    },
    /// Bytes for an exit stream; call `stream_consumed` once written.
    StreamData {
        /// The circuit.
        circ: CircId,
        /// The stream.
        stream: StreamId,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The client ended a stream, or it was ended for a protocol reason.
    StreamEnded {
        /// The circuit.
        circ: CircId,
        /// The stream.
        stream: StreamId,
        /// Why.
        reason: EndReason,
    },
    /// The client will send no more data on this stream: shut down the
    /// write side towards the destination, keep reading from it.
    StreamHalfClosed {
        /// The circuit.
        circ: CircId,
        /// The stream.
        stream: StreamId,
    },
    /// A stream blocked by a window may send again.
    StreamWritable {
        /// The circuit.
        circ: CircId,
        /// The stream.
        stream: StreamId,
    },
    /// A circuit owned by this table closed; if it had a next hop, send a
    /// DESTROY there (the driver calls `close_outbound` on that table).
    CircuitClosed {
        /// The circuit.
        circ: CircId,
        /// Its next hop, if any.
        next: Option<Route>,
        /// Why.
        reason: DestroyReason,
    },
    /// The next hop destroyed an outbound circuit: call
    /// [`RelayCircuitTable::next_hop_closed`] on the owning table.
    OutboundClosed {
        /// The owning link and circuit.
        back: Route,
        /// Why.
        reason: DestroyReason,
    },
}

/// Variant, circuits and routes only: never payload bytes, destinations
/// or next-hop addresses (L-7, spec §11).
impl std::fmt::Debug for RelayAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Forward { to, .. } => f.debug_struct("Forward").field("to", to).finish_non_exhaustive(),
            Self::Backward { to, from, .. } => {
                f.debug_struct("Backward").field("to", to).field("from", from).finish_non_exhaustive()
            }
            Self::Extend { circ, .. } => f.debug_struct("Extend").field("circ", circ).finish_non_exhaustive(),
            Self::Begin { circ, stream, .. } => {
                f.debug_struct("Begin").field("circ", circ).field("stream", stream).finish_non_exhaustive()
            }
            Self::BeginDir { circ, stream } => {
                f.debug_struct("BeginDir").field("circ", circ).field("stream", stream).finish()
            }
            Self::StreamData { circ, stream, data } => f
                .debug_struct("StreamData")
                .field("circ", circ)
                .field("stream", stream)
                .field("len", &data.len())
                .finish(),
            Self::StreamEnded { circ, stream, reason } => f
                .debug_struct("StreamEnded")
                .field("circ", circ)
                .field("stream", stream)
                .field("reason", reason)
                .finish(),
            Self::StreamHalfClosed { circ, stream } => {
                f.debug_struct("StreamHalfClosed").field("circ", circ).field("stream", stream).finish()
            }
            Self::StreamWritable { circ, stream } => {
                f.debug_struct("StreamWritable").field("circ", circ).field("stream", stream).finish()
            }
            Self::CircuitClosed { circ, next, reason } => {
                f.debug_struct("CircuitClosed").field("circ", circ).field("next", next).field("reason", reason).finish()
            }
            Self::OutboundClosed { back, reason } => {
                f.debug_struct("OutboundClosed").field("back", back).field("reason", reason).finish()
            }
        }
    }
}

/// Where a hop circuit continues.
enum NextHop {
    /// This relay is the last hop.
    None,
    /// An EXTEND is in progress.
    Extending,
    /// Extended: awaiting CREATED on `Route`.
    AwaitingCreated(Route),
    /// Open to the next hop.
    Open(Route),
}

/// An exit or directory stream at this hop.
struct HopStream {
    /// Whether the stream was answered with CONNECTED.
    connected: bool,
    /// Our send window or advisory edge.
    send: StreamSender,
    /// Our receive window or edge buffer.
    recv: StreamReceiver,
    /// Whether a send was refused for lack of window.
    blocked: bool,
}

/// A circuit for which this relay is a hop.
struct HopCircuit {
    /// This hop's layers.
    layers: RelayLayers,
    /// The route onward.
    next: NextHop,
    /// Streams ending here.
    streams: HashMap<StreamId, HopStream>,
    /// Circuit-level send window or congestion window (towards the client).
    send: CircuitSender,
    /// Circuit-level receive window or receipts.
    recv: CircuitReceiver,
    /// The client negotiated congestion control (spec §8.6).
    cc: bool,
    /// RELAY_EARLY cells seen on this circuit (spec §7.6).
    early: u8,
    /// Padding for the cells this hop originates: a keystream the client
    /// cannot predict, so it cannot compute a receipt tag for a cell it
    /// never read (spec §7.1, §8.2; review L-2).
    pad: PaddingSource,
}

/// One table entry.
enum Entry {
    /// We are a hop of this circuit.
    Hop(Box<HopCircuit>),
    /// We extended a circuit owned by `back` over this link.
    Outbound {
        /// The owning table's link and id.
        back: Route,
    },
}

/// The circuit table of one link.
pub struct RelayCircuitTable {
    /// This link's handle.
    link: LinkId,
    /// Whether we initiated this link (decides circuit-id parity, spec §2.3).
    we_initiated: bool,
    /// Whether this relay serves BEGIN (is an exit).
    exit: bool,
    /// The peer relay of this link, if it proved one: never extended to.
    peer: Option<RelayId>,
    /// Limits.
    limits: TableLimits,
    /// Circuits by id.
    circuits: HashMap<CircId, Entry>,
    /// Cells to send on this link.
    out: VecDeque<Cell>,
    /// Actions for the driver.
    actions: VecDeque<RelayAction>,
}

impl std::fmt::Debug for RelayCircuitTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayCircuitTable")
            .field("link", &self.link)
            .field("circuits", &self.circuits.len())
            .finish_non_exhaustive()
    }
}

impl RelayCircuitTable {
    /// A table for link `link`. `we_initiated` is true when we opened the link.
    pub fn new(link: LinkId, we_initiated: bool, exit: bool, limits: TableLimits) -> Self {
        Self {
            link,
            we_initiated,
            exit,
            peer: None,
            limits,
            circuits: HashMap::new(),
            out: VecDeque::new(),
            actions: VecDeque::new(),
        }
    }

    /// The peer of this link is relay `peer`: circuits arriving here are
    /// never extended back to it (spec §7.6).
    pub fn set_peer(&mut self, peer: RelayId) {
        self.peer = Some(peer);
    }

    /// This table's link.
    pub fn link(&self) -> LinkId {
        self.link
    }

    /// Circuits on this link.
    pub fn circuit_count(&self) -> usize {
        self.circuits.len()
    }

    /// Next cell to send on this link.
    pub fn poll_transmit(&mut self) -> Option<Cell> {
        self.out.pop_front()
    }

    /// Whether cells are waiting to be sent on this link.
    pub fn has_transmit(&self) -> bool {
        !self.out.is_empty()
    }

    /// Next action for the driver.
    pub fn poll_action(&mut self) -> Option<RelayAction> {
        self.actions.pop_front()
    }

    /// Handle a cell received on this link at `now` (congestion control
    /// times SENDMEs, spec §8.4). Errors close only the circuit concerned
    /// (already done when this returns) and are for logging.
    pub fn handle_cell<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        keys: &HopKeysRef<'_>,
        cell: Cell,
        now: Instant,
    ) -> Result<(), CircuitError> {
        let circ = cell.circ;
        let is_create = cell.command == CellCommand::Create;
        if circ == CircId::LINK {
            return match cell.command {
                CellCommand::Padding => Ok(()),
                _ => Err(CircuitError::Protocol { circ, reason: "non-padding cell on circuit 0" }),
            };
        }
        let result = match (self.circuits.get(&circ), cell.command) {
            (None, CellCommand::Create) => self.handle_create(rng, keys, &cell),
            (None, CellCommand::Destroy | CellCommand::Padding) => Ok(()),
            (None, _) => Err(CircuitError::Protocol { circ, reason: "cell for unknown circuit" }),
            (Some(Entry::Outbound { back }), command) => {
                let back = *back;
                if command == CellCommand::Destroy {
                    self.circuits.remove(&circ);
                    self.actions.push_back(RelayAction::OutboundClosed { back, reason: cell.destroy_reason() });
                } else {
                    let from = Route { link: self.link, circ };
                    self.actions.push_back(RelayAction::Backward { to: back, from, cell });
                }
                return Ok(());
            }
            (Some(Entry::Hop(_)), CellCommand::Relay | CellCommand::RelayEarly) => {
                self.handle_forward(circ, cell, keys.relay_id, now)
            }
            (Some(Entry::Hop(_)), CellCommand::Destroy) => {
                // The peer's reason is never passed on (spec §7.6, Tor bug 40649).
                self.remove_hop(circ, DestroyReason::Destroyed, false);
                Ok(())
            }
            (Some(Entry::Hop(_)), _) => Err(CircuitError::Protocol { circ, reason: "unexpected cell command" }),
        };
        if let Err(e) = &result {
            let reason = match e {
                CircuitError::Limit { .. } => DestroyReason::ResourceLimit,
                _ => DestroyReason::Protocol,
            };
            if self.circuits.contains_key(&circ) {
                self.remove_hop(circ, reason, true);
            } else if is_create {
                self.out.push_back(Cell::destroy(circ, reason));
            }
        }
        result
    }

    /// A backward cell from the next hop of circuit `circ` (owned here),
    /// received on `from`.
    pub fn handle_from_next(&mut self, circ: CircId, from: Route, cell: Cell) -> Result<(), CircuitError> {
        let Some(Entry::Hop(hop)) = self.circuits.get_mut(&circ) else {
            return Ok(()); // The circuit closed meanwhile; drop the cell.
        };
        let awaiting = match hop.next {
            NextHop::Extending => true,
            NextHop::AwaitingCreated(route) => route == from,
            NextHop::None | NextHop::Open(_) => false,
        };
        let result = match (cell.command, &hop.next) {
            (CellCommand::Created, _) if awaiting => {
                let route = from;
                match cell.created_reply() {
                    Ok(reply) => {
                        hop.next = NextHop::Open(route);
                        self.originate(circ, StreamId::CIRCUIT, RelayMsg::Extended(reply)).map(|_| ())
                    }
                    Err(source) => Err(CircuitError::Decode { circ, source }),
                }
            }
            (CellCommand::Relay, NextHop::Open(route)) if *route == from => {
                let mut cell = cell;
                match hop.layers.relay_backward(&mut cell.payload) {
                    Ok(()) => {
                        cell.circ = circ;
                        self.out.push_back(cell);
                        Ok(())
                    }
                    Err(source) => Err(CircuitError::Crypto { circ, context: "backward layer", source }),
                }
            }
            (CellCommand::Destroy, _) => {
                self.remove_hop(circ, DestroyReason::Destroyed, true);
                return Ok(());
            }
            _ => Err(CircuitError::Protocol { circ, reason: "unexpected cell from next hop" }),
        };
        if result.is_err() {
            self.remove_hop(circ, DestroyReason::Protocol, true);
        }
        result
    }

    /// Allocate a random circuit id on this link for a circuit owned by
    /// `back`, and queue its CREATE carrying `onionskin`. Returns the new id.
    pub fn open_outbound<R: RngCore>(
        &mut self,
        rng: &mut R,
        back: Route,
        onionskin: &[u8; lamina_crypto::handshake::ONIONSKIN_LEN],
    ) -> Result<CircId, CircuitError> {
        if self.circuits.len() >= self.limits.max_circuits {
            return Err(CircuitError::Limit { circ: back.circ, what: "circuits per link" });
        }
        let circ = self.allocate_id(rng);
        self.circuits.insert(circ, Entry::Outbound { back });
        self.out.push_back(Cell::create(circ, onionskin));
        Ok(circ)
    }

    /// The driver sent our CREATE for `circ` as `next` on another link.
    pub fn extend_started(&mut self, circ: CircId, next: Route) {
        if let Some(Entry::Hop(hop)) = self.circuits.get_mut(&circ) {
            if matches!(hop.next, NextHop::Extending) {
                hop.next = NextHop::AwaitingCreated(next);
            }
        }
    }

    /// Extending `circ` failed (no link, limit): destroy it.
    pub fn extend_failed(&mut self, circ: CircId) {
        if self.circuits.contains_key(&circ) {
            self.remove_hop(circ, DestroyReason::ConnectFailed, true);
        }
    }

    /// The next hop of `circ` went away: destroy the circuit towards the client.
    pub fn next_hop_closed(&mut self, circ: CircId, reason: DestroyReason) {
        if let Some(Entry::Hop(hop)) = self.circuits.get_mut(&circ) {
            hop.next = NextHop::None;
            let _ = reason;
            self.remove_hop(circ, DestroyReason::Destroyed, true);
        }
    }

    /// Send a DESTROY for an outbound circuit whose owner closed. The
    /// owner's reason is not passed on: the next hop always sees the
    /// generic `Destroyed` (spec §7.6, Tor bug 40649).
    pub fn close_outbound(&mut self, circ: CircId, reason: DestroyReason) {
        let _ = reason;
        if let Some(Entry::Outbound { .. }) = self.circuits.remove(&circ) {
            self.out.push_back(Cell::destroy(circ, DestroyReason::Destroyed));
        }
    }

    /// The link died: every circuit on it is gone. Emits `CircuitClosed`
    /// for hop circuits and `OutboundClosed` for outbound ones.
    pub fn link_closed(&mut self) {
        let ids: Vec<CircId> = self.circuits.keys().copied().collect();
        for circ in ids {
            match self.circuits.remove(&circ) {
                Some(Entry::Hop(hop)) => {
                    let next = next_route(&hop.next);
                    self.actions.push_back(RelayAction::CircuitClosed { circ, next, reason: DestroyReason::Destroyed });
                }
                Some(Entry::Outbound { back }) => {
                    self.actions.push_back(RelayAction::OutboundClosed { back, reason: DestroyReason::Destroyed });
                }
                None => {}
            }
        }
        self.out.clear();
    }

    /// Exit: the stream is connected (to `addr`, if we say).
    pub fn stream_connected(
        &mut self,
        circ: CircId,
        stream: StreamId,
        addr: Option<IpAddr>,
    ) -> Result<(), CircuitError> {
        let st = self.stream_mut(circ, stream)?;
        st.connected = true;
        self.originate(circ, stream, RelayMsg::Connected(addr)).map(|_| ())
    }

    /// Exit: the stream failed or finished; tell the client and forget it.
    pub fn end_stream(&mut self, circ: CircId, stream: StreamId, reason: EndReason) -> Result<(), CircuitError> {
        let Some(Entry::Hop(hop)) = self.circuits.get_mut(&circ) else {
            return Ok(());
        };
        if hop.streams.remove(&stream).is_none() {
            return Ok(());
        }
        self.originate(circ, stream, RelayMsg::End(reason)).map(|_| ())
    }

    /// Exit: send stream bytes towards the client; returns how many were
    /// accepted (0 when a window is closed: wait for `StreamWritable`).
    /// `now` is the send time congestion control measures from.
    pub fn send_stream_data(
        &mut self,
        circ: CircId,
        stream: StreamId,
        data: &[u8],
        now: Instant,
    ) -> Result<usize, CircuitError> {
        let mut sent = 0;
        while sent < data.len() {
            let hop = self.hop_mut(circ)?;
            let circ_open = hop.send.can_send();
            let st = hop.streams.get_mut(&stream).ok_or(CircuitError::NoSuchStream { circ, stream })?;
            if !circ_open || !st.send.can_send() {
                st.blocked = true;
                break;
            }
            let end = data.len().min(sent + BACKWARD_DATA_CAPACITY);
            let tag = self.originate_data(circ, stream, &data[sent..end])?;
            let hop = self.hop_mut(circ)?;
            hop.send.on_send(tag, now);
            if let Some(st) = hop.streams.get_mut(&stream) {
                st.send.on_send(tag);
            }
            sent = end;
        }
        Ok(sent)
    }

    /// Cells circuit `circ` may still send towards the client before a
    /// SENDME (`None` if it is not a hop circuit here).
    pub fn circuit_send_window(&self, circ: CircId) -> Option<u32> {
        match self.circuits.get(&circ) {
            Some(Entry::Hop(hop)) => Some(hop.send.available()),
            _ => None,
        }
    }

    /// Exit: whether `stream` may send a DATA cell now.
    pub fn can_send(&self, circ: CircId, stream: StreamId) -> bool {
        match self.circuits.get(&circ) {
            Some(Entry::Hop(hop)) => hop.send.can_send() && hop.streams.get(&stream).is_some_and(|s| s.send.can_send()),
            _ => false,
        }
    }

    /// Exit: one DATA cell of `stream` was written to its socket at `now`;
    /// queues SENDMEs as batches complete (spec §8.2), or an XON when the
    /// edge buffer drained (spec §8.5).
    pub fn stream_consumed(&mut self, circ: CircId, stream: StreamId, now: Instant) -> Result<(), CircuitError> {
        let Ok(hop) = self.hop_mut(circ) else {
            return Ok(());
        };
        let circ_receipt = hop.recv.on_consumed();
        let stream_receipt = hop.streams.get_mut(&stream).and_then(|s| s.recv.on_consumed(now));
        if let Some(tag) = circ_receipt {
            self.originate(circ, StreamId::CIRCUIT, RelayMsg::Sendme(tag))?;
        }
        if let Some(receipt) = stream_receipt {
            self.originate(circ, stream, stream_receipt_msg(receipt))?;
        }
        Ok(())
    }

    /// Whether circuit `circ` runs congestion control (spec §8.6).
    pub fn congestion_controlled(&self, circ: CircId) -> bool {
        matches!(self.circuits.get(&circ), Some(Entry::Hop(hop)) if hop.cc)
    }

    /// A queue between tasks killed `circ` (it passed its bound, or held the
    /// oldest data when the relay ran short of queue memory; spec §6.6):
    /// forget it here and report it so its other link closes it too. With
    /// `destroy_queued`, the queue already sent a DESTROY on this link.
    pub fn queue_killed(&mut self, circ: CircId, destroy_queued: bool) {
        match self.circuits.get(&circ) {
            Some(Entry::Hop(_)) => self.remove_hop(circ, DestroyReason::Destroyed, !destroy_queued),
            Some(Entry::Outbound { back }) => {
                let back = *back;
                self.circuits.remove(&circ);
                if !destroy_queued {
                    self.out.push_back(Cell::destroy(circ, DestroyReason::Destroyed));
                }
                self.actions.push_back(RelayAction::OutboundClosed { back, reason: DestroyReason::Destroyed });
            }
            None => {}
        }
    }

    /// Close a circuit we own (driver decision, e.g. shutdown).
    pub fn close_circuit(&mut self, circ: CircId, reason: DestroyReason) {
        if let Some(Entry::Hop(_)) = self.circuits.get(&circ) {
            self.remove_hop(circ, reason, true);
        }
    }

    /// CREATE: run the handshake, answer CREATED, add the circuit.
    fn handle_create<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        keys: &HopKeysRef<'_>,
        cell: &Cell,
    ) -> Result<(), CircuitError> {
        let circ = cell.circ;
        // The peer allocates ids of the opposite parity to ours (spec §2.3).
        let peer_bit = if self.we_initiated { 0 } else { CircId::INITIATOR_BIT };
        if circ.0 & CircId::INITIATOR_BIT != peer_bit {
            return Err(CircuitError::Protocol { circ, reason: "circuit id of the wrong parity" });
        }
        if self.circuits.len() >= self.limits.max_circuits {
            return Err(CircuitError::Limit { circ, what: "circuits per link" });
        }
        let skin = cell.create_onionskin().map_err(|source| CircuitError::Decode { circ, source })?;
        let (reply, hop_keys) = relay_respond(rng, keys.relay_id, keys.onion_key, &skin)
            .map_err(|source| CircuitError::Crypto { circ, context: "circuit handshake", source })?;
        let hop = HopCircuit {
            layers: RelayLayers::new(&hop_keys),
            next: NextHop::None,
            streams: HashMap::new(),
            send: CircuitSender::fixed(),
            recv: CircuitReceiver::fixed(),
            cc: false,
            early: 0,
            pad: PaddingSource::new(rng),
        };
        self.circuits.insert(circ, Entry::Hop(Box::new(hop)));
        self.out.push_back(Cell::created(circ, &reply));
        Ok(())
    }

    /// A forward RELAY or RELAY_EARLY cell on a hop circuit: count it,
    /// peel, then forward (keeping its command) or handle.
    fn handle_forward(
        &mut self,
        circ: CircId,
        mut cell: Cell,
        own_id: &RelayId,
        now: Instant,
    ) -> Result<(), CircuitError> {
        let early = cell.command == CellCommand::RelayEarly;
        let hop = self.hop_mut(circ)?;
        if early {
            hop.early = hop.early.saturating_add(1);
            if hop.early > MAX_RELAY_EARLY {
                return Err(CircuitError::Protocol { circ, reason: "too many RELAY_EARLY cells" });
            }
        }
        let next = match hop.next {
            NextHop::Open(route) => Some(route),
            _ => None,
        };
        let peeled = hop
            .layers
            .peel_forward(&mut cell.payload, next.is_some())
            .map_err(|source| CircuitError::Crypto { circ, context: "forward layer", source })?;
        match (peeled, next) {
            (Peeled::Onward, Some(to)) => {
                cell.circ = to.circ;
                self.actions.push_back(RelayAction::Forward { to, cell });
                Ok(())
            }
            (Peeled::Onward, None) => Err(CircuitError::Protocol { circ, reason: "onward cell at last hop" }),
            (Peeled::Recognized { tag }, _) => {
                let rc = RelayCell::decode(&cell.payload).map_err(|source| CircuitError::Decode { circ, source })?;
                if let RelayMsg::Extend(extend) = &rc.msg {
                    if !early {
                        return Err(CircuitError::Protocol { circ, reason: "EXTEND outside RELAY_EARLY" });
                    }
                    if extend.relay_id == *own_id || Some(extend.relay_id) == self.peer {
                        return Err(CircuitError::Protocol {
                            circ,
                            reason: "EXTEND to this relay or the previous hop",
                        });
                    }
                }
                self.handle_msg(circ, rc, tag, now)
            }
        }
    }

    /// Dispatch a relay message addressed to this hop.
    fn handle_msg(
        &mut self,
        circ: CircId,
        rc: RelayCell,
        tag: [u8; TAG_LEN],
        now: Instant,
    ) -> Result<(), CircuitError> {
        let stream = rc.stream;
        match rc.msg {
            RelayMsg::Extend(extend) => {
                let hop = self.hop_mut(circ)?;
                if !matches!(hop.next, NextHop::None) || !hop.streams.is_empty() || hop.cc {
                    return Err(CircuitError::Protocol { circ, reason: "EXTEND on an extended circuit" });
                }
                hop.next = NextHop::Extending;
                self.actions.push_back(RelayAction::Extend { circ, extend });
                Ok(())
            }
            RelayMsg::Begin { target, port } => {
                if !self.exit {
                    self.new_stream(circ, stream)?;
                    return self.end_stream(circ, stream, EndReason::NotExit);
                }
                self.new_stream(circ, stream)?;
                self.actions.push_back(RelayAction::Begin { circ, stream, target, port });
                Ok(())
            }
            RelayMsg::BeginDir => {
                self.new_stream(circ, stream)?;
                self.actions.push_back(RelayAction::BeginDir { circ, stream });
                Ok(())
            }
            RelayMsg::Data(data) => self.handle_data(circ, stream, data, tag),
            RelayMsg::End(reason) => {
                let hop = self.hop_mut(circ)?;
                if hop.streams.remove(&stream).is_some() {
                    self.actions.push_back(RelayAction::StreamEnded { circ, stream, reason });
                }
                Ok(())
            }
            RelayMsg::Sendme(receipt) => self.handle_sendme(circ, stream, &receipt, now),
            RelayMsg::Drop => Ok(()),
            RelayMsg::CcRequest(_) => self.handle_cc_request(circ),
            msg @ (RelayMsg::Xoff | RelayMsg::Xon(_)) => self.handle_advisory(circ, stream, &msg, now),
            RelayMsg::HalfClose => {
                if self.hop_mut(circ)?.streams.contains_key(&stream) {
                    self.actions.push_back(RelayAction::StreamHalfClosed { circ, stream });
                }
                Ok(())
            }
            RelayMsg::Resolve(_) => {
                self.new_stream(circ, stream)?;
                self.end_stream(circ, stream, EndReason::NotExit)
            }
            RelayMsg::Connected(_) | RelayMsg::Extended(_) | RelayMsg::Resolved(_) => {
                Err(CircuitError::Protocol { circ, reason: "backward-only message sent forward" })
            }
        }
    }

    /// DATA for a stream ending here.
    fn handle_data(
        &mut self,
        circ: CircId,
        stream: StreamId,
        data: Vec<u8>,
        tag: [u8; TAG_LEN],
    ) -> Result<(), CircuitError> {
        let hop = self.hop_mut(circ)?;
        // Under congestion control the receipt goes out on receipt (spec §8.4).
        if let Some(receipt) = hop.recv.on_receive(tag).map_err(|reason| CircuitError::Protocol { circ, reason })? {
            self.originate(circ, StreamId::CIRCUIT, RelayMsg::Sendme(receipt))?;
        }
        let hop = self.hop_mut(circ)?;
        match hop.streams.get_mut(&stream) {
            Some(st) if st.connected => {
                let advisory = st.recv.on_receive(tag).map_err(|reason| CircuitError::Protocol { circ, reason })?;
                self.actions.push_back(RelayAction::StreamData { circ, stream, data });
                if let Some(receipt) = advisory {
                    self.originate(circ, stream, stream_receipt_msg(receipt))?;
                }
                Ok(())
            }
            Some(_) => Err(CircuitError::Protocol { circ, reason: "data before connected" }),
            None => {
                // A stream we already ended: count it as consumed at once.
                if let Some(receipt) = hop.recv.on_consumed() {
                    self.originate(circ, StreamId::CIRCUIT, RelayMsg::Sendme(receipt))?;
                }
                Ok(())
            }
        }
    }

    /// CC_REQUEST: the client switches this circuit to congestion control
    /// (spec §8.6). Only at the last hop, once, before any stream or DATA.
    fn handle_cc_request(&mut self, circ: CircId) -> Result<(), CircuitError> {
        let hop = self.hop_mut(circ)?;
        if hop.cc || !matches!(hop.next, NextHop::None) || !hop.streams.is_empty() {
            return Err(CircuitError::Protocol { circ, reason: "congestion control requested too late" });
        }
        hop.cc = true;
        hop.send = CircuitSender::vegas();
        hop.recv = CircuitReceiver::vegas();
        Ok(())
    }

    /// XOFF or XON from the client (spec §8.5); one for a stream already
    /// gone crossed its END and is ignored.
    fn handle_advisory(
        &mut self,
        circ: CircId,
        stream: StreamId,
        msg: &RelayMsg,
        now: Instant,
    ) -> Result<(), CircuitError> {
        let hop = self.hop_mut(circ)?;
        let circ_open = hop.send.can_send();
        let Some(st) = hop.streams.get_mut(&stream) else { return Ok(()) };
        let result = match msg {
            RelayMsg::Xon(rate) => st.send.on_xon(*rate, now),
            _ => st.send.on_xoff(),
        };
        result.map_err(|reason| CircuitError::Protocol { circ, reason })?;
        if st.blocked && st.send.can_send() && circ_open {
            st.blocked = false;
            self.actions.push_back(RelayAction::StreamWritable { circ, stream });
        }
        Ok(())
    }

    /// A SENDME from the client: verify the receipt, reopen, wake streams.
    fn handle_sendme(
        &mut self,
        circ: CircId,
        stream: StreamId,
        receipt: &[u8; TAG_LEN],
        now: Instant,
    ) -> Result<(), CircuitError> {
        let hop = self.hop_mut(circ)?;
        let mut woken = Vec::new();
        if stream == StreamId::CIRCUIT {
            hop.send.on_sendme(receipt, now).map_err(|reason| CircuitError::Protocol { circ, reason })?;
            for (id, st) in &mut hop.streams {
                if st.blocked && st.send.can_send() {
                    st.blocked = false;
                    woken.push(*id);
                }
            }
        } else if let Some(st) = hop.streams.get_mut(&stream) {
            st.send.on_sendme(receipt).map_err(|reason| CircuitError::Protocol { circ, reason })?;
            if st.blocked && st.send.can_send() && hop.send.can_send() {
                st.blocked = false;
                woken.push(stream);
            }
        }
        for stream in woken {
            self.actions.push_back(RelayAction::StreamWritable { circ, stream });
        }
        Ok(())
    }

    /// Register a new stream, enforcing uniqueness and the limit.
    fn new_stream(&mut self, circ: CircId, stream: StreamId) -> Result<(), CircuitError> {
        let max = self.limits.max_streams;
        let hop = self.hop_mut(circ)?;
        if !matches!(hop.next, NextHop::None) {
            return Err(CircuitError::Protocol { circ, reason: "stream at a middle hop" });
        }
        if hop.streams.contains_key(&stream) {
            return Err(CircuitError::Protocol { circ, reason: "stream id in use" });
        }
        if hop.streams.len() >= max {
            return Err(CircuitError::Limit { circ, what: "streams per circuit" });
        }
        let cc = hop.cc;
        hop.streams.insert(
            stream,
            HopStream { connected: false, send: StreamSender::new(cc), recv: StreamReceiver::new(cc), blocked: false },
        );
        Ok(())
    }

    /// Seal and queue one backward DATA cell (no allocation); returns its tag.
    fn originate_data(&mut self, circ: CircId, stream: StreamId, data: &[u8]) -> Result<[u8; TAG_LEN], CircuitError> {
        let mut body: [u8; BODY_LEN] = empty_body();
        RelayCell::encode_data_into(backward_region(&mut body), stream, data)
            .map_err(|source| CircuitError::Encode { circ, source })?;
        self.seal_and_queue(circ, body)
    }

    /// Seal and queue a backward message this hop originates; returns its tag.
    fn originate(&mut self, circ: CircId, stream: StreamId, msg: RelayMsg) -> Result<[u8; TAG_LEN], CircuitError> {
        let mut body: [u8; BODY_LEN] = empty_body();
        RelayCell::new(stream, msg)
            .encode_into(backward_region(&mut body))
            .map_err(|source| CircuitError::Encode { circ, source })?;
        self.seal_and_queue(circ, body)
    }

    /// Seal a backward body this hop originates and queue the cell; returns its tag.
    fn seal_and_queue(&mut self, circ: CircId, mut body: [u8; BODY_LEN]) -> Result<[u8; TAG_LEN], CircuitError> {
        let hop = self.hop_mut(circ)?;
        let region = backward_region(&mut body);
        let start = RelayCell::padding_start(region);
        // A full DATA cell has no padding: no keystream on the bulk path.
        if let Some(padding) = region.get_mut(start..).filter(|p| !p.is_empty()) {
            hop.pad.fill(padding);
        }
        let tag = hop.layers.originate_backward(&mut body).map_err(|source| CircuitError::Crypto {
            circ,
            context: "backward seal",
            source,
        })?;
        self.out.push_back(Cell::relay(circ, body));
        Ok(tag)
    }

    /// The hop circuit `circ`, or an error.
    fn hop_mut(&mut self, circ: CircId) -> Result<&mut HopCircuit, CircuitError> {
        match self.circuits.get_mut(&circ) {
            Some(Entry::Hop(hop)) => Ok(hop),
            _ => Err(CircuitError::NotOpen { circ }),
        }
    }

    /// Stream `stream` of hop circuit `circ`, or an error.
    fn stream_mut(&mut self, circ: CircId, stream: StreamId) -> Result<&mut HopStream, CircuitError> {
        self.hop_mut(circ)?.streams.get_mut(&stream).ok_or(CircuitError::NoSuchStream { circ, stream })
    }

    /// Remove a hop circuit, optionally sending DESTROY to the client side,
    /// and report it so the driver can destroy the next hop's side.
    fn remove_hop(&mut self, circ: CircId, reason: DestroyReason, notify_client: bool) {
        let Some(Entry::Hop(hop)) = self.circuits.remove(&circ) else {
            return;
        };
        if notify_client {
            self.out.push_back(Cell::destroy(circ, reason));
        }
        for stream in hop.streams.keys() {
            self.actions.push_back(RelayAction::StreamEnded { circ, stream: *stream, reason: EndReason::Destroyed });
        }
        self.actions.push_back(RelayAction::CircuitClosed { circ, next: next_route(&hop.next), reason });
    }

    /// Pick a random unused id of our parity (L-4: sequential ids would tell
    /// the next hop how many circuits we opened in between). The table is
    /// bounded far below 2^31 entries, so this ends quickly.
    fn allocate_id<R: RngCore>(&mut self, rng: &mut R) -> CircId {
        let bit = if self.we_initiated { CircId::INITIATOR_BIT } else { 0 };
        loop {
            let candidate = CircId((rng.next_u32() & !CircId::INITIATOR_BIT) | bit);
            if candidate.0 & !CircId::INITIATOR_BIT != 0 && !self.circuits.contains_key(&candidate) {
                return candidate;
            }
        }
    }
}

/// The onward route of a hop, if it has one.
fn next_route(next: &NextHop) -> Option<Route> {
    match next {
        NextHop::AwaitingCreated(route) | NextHop::Open(route) => Some(*route),
        NextHop::None | NextHop::Extending => None,
    }
}
