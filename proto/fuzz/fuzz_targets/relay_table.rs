//! Fuzz target: operation sequences against relays' circuit tables
//! (spec §6–§8). Nothing a peer sends, and no order of driver calls, may
//! panic a table, and a table never holds more circuits than its limit.
//!
//! The world is wired in memory like `tests/three_hops.rs`: genuine
//! clients (`ClientCircuit`, one or two hops) on link 0 to relay A; A's
//! table for link 0 (`IN`, an exit or not, as the input says); A's table
//! for link 1 to relay B (`OUT`) and B's table for link 1 (`B`, an exit).
//! Table limits are tiny (from the input) so the limits are exercised.
//!
//! Hostile operations deliver arbitrary cells (circuit id, command byte,
//! payload) to any table, arbitrary backward cells through
//! `handle_from_next`, arbitrary relay-message plaintext wrapped by a
//! genuine client for any hop (so the fuzzer reaches the message handlers
//! past the AEAD), and every driver call (`stream_connected`, `end_stream`,
//! `send_stream_data`, `stream_consumed`, `open_outbound`,
//! `extend_started`, `extend_failed`, `next_hop_closed`, `close_outbound`,
//! `close_circuit`, `link_closed`) with arbitrary ids. Honest operations
//! build circuits, open streams and move data both ways, with the option
//! of holding the client's cells back to create in-flight races. After
//! every operation all outputs are drained (`poll_transmit`,
//! `poll_action`, client events) and delivered until the world settles.
//!
//! Strict mode (`LAMINA_FUZZ_STRICT=1` in the environment) also checks a
//! protocol property: in a run made only of honest operations, no table
//! and no client ever reports a peer error (bar resource limits and cells
//! for circuits that were already closed). A violation is a logic bug in
//! the circuit code, though not a crash.

#![no_main]

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use lamina_crypto::handshake::ONIONSKIN_LEN;
use lamina_crypto::keys::{IdentityKeypair, RelayId, StaticKeypair};
use lamina_proto::cell::{Cell, CellCommand, CircId, DestroyReason, PAYLOAD_LEN};
use lamina_proto::circuit::client::{ClientCircuit, ClientEvent, HopSpec};
use lamina_proto::circuit::relay::{HopKeysRef, LinkId, RelayAction, RelayCircuitTable, Route, TableLimits};
use lamina_proto::circuit::MAX_STREAMS_PER_CIRCUIT;
use lamina_proto::error::CircuitError;
use lamina_proto::msg::{EndReason, StreamId, Target};
use libfuzzer_sys::fuzz_target;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// A's table for link 0 (from the clients).
const IN: usize = 0;
/// A's table for link 1 (to B).
const OUT: usize = 1;
/// B's table for link 1 (from A).
const B: usize = 2;
/// Most clients one run creates.
const MAX_CLIENTS: usize = 8;
/// Most delivery steps one settle may take before it counts as a livelock.
const SETTLE_LIMIT: usize = 200_000;

/// One relay's keys.
struct RelayKeys {
    /// Identity.
    identity: IdentityKeypair,
    /// Its id.
    relay_id: RelayId,
    /// Onion key.
    onion: StaticKeypair,
    /// Link key (named in EXTEND).
    link: StaticKeypair,
}

/// Relays A and B, generated once from a seeded RNG, and a base instant.
fn fixture() -> &'static ([RelayKeys; 2], Instant) {
    static FIXTURE: OnceLock<([RelayKeys; 2], Instant)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut rng = ChaCha20Rng::from_seed([0x7a; 32]);
        let mut relay = || {
            let identity = IdentityKeypair::generate(&mut rng);
            RelayKeys {
                relay_id: identity.relay_id(),
                identity,
                onion: StaticKeypair::generate(&mut rng),
                link: StaticKeypair::generate(&mut rng),
            }
        };
        #[allow(clippy::disallowed_methods)] // The harness is the driver: it owns the clock.
        let now = Instant::now();
        ([relay(), relay()], now)
    })
}

/// Whether strict (protocol-property) checks are on.
fn strict() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("LAMINA_FUZZ_STRICT").is_some_and(|v| v == "1"))
}

/// A circuit id chosen by the fuzzer.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum CircSel {
    /// The id of client `n` (mod [`MAX_CLIENTS`]).
    Client(u8),
    /// An id seen in a table's output.
    Known(u8),
    /// Any id.
    Raw(u32),
}

/// An address for CONNECTED.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    /// No address.
    None,
    /// IPv4.
    V4([u8; 4]),
    /// IPv6.
    V6([u8; 16]),
}

/// A destination for BEGIN.
#[derive(Arbitrary, Debug, Clone)]
enum TargetSpec {
    /// A fixed good host name.
    Host,
    /// An IPv4 address.
    V4([u8; 4]),
    /// A host name from the input (may be invalid: the client refuses it).
    Name(String),
}

/// A driver call with arbitrary ids.
#[derive(Arbitrary, Debug)]
enum Call {
    /// `stream_connected`.
    StreamConnected { circ: CircSel, stream: u16, addr: Addr },
    /// `end_stream`.
    EndStream { circ: CircSel, stream: u16, reason: u8 },
    /// `send_stream_data`.
    SendStreamData { circ: CircSel, stream: u16, len: u16 },
    /// `stream_consumed`.
    StreamConsumed { circ: CircSel, stream: u16 },
    /// `open_outbound`, back to link 0 or 1.
    OpenOutbound { back_link: bool, back: CircSel, skin: [u8; ONIONSKIN_LEN] },
    /// `extend_started`.
    ExtendStarted { circ: CircSel, next: CircSel },
    /// `extend_failed`.
    ExtendFailed { circ: CircSel },
    /// `next_hop_closed`.
    NextHopClosed { circ: CircSel, reason: u8 },
    /// `close_outbound`.
    CloseOutbound { circ: CircSel, reason: u8 },
    /// `close_circuit`.
    CloseCircuit { circ: CircSel, reason: u8 },
    /// `handle_from_next` with an arbitrary cell, as if from `from` on link 1.
    FromNext { circ: CircSel, from: CircSel, command: u8, payload: Vec<u8> },
}

/// One operation.
#[derive(Arbitrary, Debug)]
enum Op {
    /// Hostile: an arbitrary cell to table `at` (mod 3).
    RawCell { at: u8, circ: CircSel, command: u8, payload: Vec<u8> },
    /// Hostile: an arbitrary driver call on table `at` (mod 3).
    Driver { at: u8, call: Call },
    /// Hostile: client `client` wraps arbitrary plaintext for hop `hop`.
    ClientRaw { client: u8, hop: u8, plaintext: Vec<u8> },
    /// Honest (unless `bad_key`): a new client circuit through A (and B),
    /// negotiating congestion control with its last hop when `cc`.
    NewClient { two_hops: bool, bad_key: bool, cc: bool },
    /// Honest: open a stream.
    Begin { client: u8, target: TargetSpec, port: u16 },
    /// Honest: open a directory stream.
    BeginDir { client: u8 },
    /// Honest: send `len` bytes on a stream.
    Data { client: u8, stream: u8, len: u16 },
    /// Honest: end a stream.
    End { client: u8, stream: u8, reason: u8 },
    /// Hostile (a driver misreporting consumption): `stream_consumed`.
    Consumed { client: u8, stream: u8 },
    /// Honest: close a client circuit.
    Close { client: u8, reason: u8 },
    /// Honest: a client's build timer fires `secs` after the start.
    Timeout { client: u8, secs: u8 },
    /// Honest: the exit sends `len` bytes on a stream it serves.
    ExitSend { stream: u8, len: u16 },
    /// Honest: the exit ends a stream it serves.
    ExitEnd { stream: u8, reason: u8 },
    /// Honest: a relay closes a circuit it serves a stream on.
    ExitClose { stream: u8, reason: u8 },
    /// Honest: hold (or release) the clients' cells.
    Hold(bool),
    /// Honest: link 0 (`false`) or link 1 (`true`) dies.
    LinkClosed(bool),
}

/// One fuzz case.
#[derive(Arbitrary, Debug)]
struct Input {
    /// Whether A is an exit.
    a_is_exit: bool,
    /// Circuit limit of every table, minus one, mod 4.
    max_circuits: u8,
    /// Stream limit of every table, minus one, mod 4.
    max_streams: u8,
    /// The operations.
    ops: Vec<Op>,
}

/// Something in flight.
enum Delivery {
    /// A cell for the client side of link 0.
    ToClient(Cell),
    /// A cell arriving at a table.
    ToTable(usize, Cell),
    /// A backward cell handed to the owning table, with where it arrived.
    FromNext(usize, CircId, Route, Cell),
}

/// A client and what the harness knows about it.
struct Client {
    /// The circuit.
    circ: ClientCircuit,
    /// Hops in its path.
    hops: usize,
    /// Streams it opened.
    streams: Vec<StreamId>,
}

/// The whole in-memory world.
struct World {
    /// Randomness for everyone.
    rng: ChaCha20Rng,
    /// The three tables.
    tables: [RelayCircuitTable; 3],
    /// Their limits.
    limits: TableLimits,
    /// Clients by index (client `i` has id `0x8000_0001 + i`); `None` once gone.
    clients: Vec<Option<Client>>,
    /// Deliveries in order.
    queue: VecDeque<Delivery>,
    /// Whether the clients' cells are held back.
    hold: bool,
    /// Held client cells.
    held: Vec<Cell>,
    /// Streams tables serve: (table, circuit, stream).
    streams: Vec<(usize, CircId, StreamId)>,
    /// Circuit ids seen in table output.
    circs: Vec<CircId>,
    /// Whether a hostile operation ran.
    hostile: bool,
}

fuzz_target!(|input: Input| {
    let limits = TableLimits {
        max_circuits: 1 + usize::from(input.max_circuits % 4),
        max_streams: 1 + usize::from(input.max_streams % 4),
    };
    let mut world = World {
        rng: ChaCha20Rng::from_seed([0x33; 32]),
        tables: [
            RelayCircuitTable::new(LinkId(0), false, input.a_is_exit, limits),
            RelayCircuitTable::new(LinkId(1), true, false, limits),
            RelayCircuitTable::new(LinkId(1), false, true, limits),
        ],
        limits,
        clients: Vec::new(),
        queue: VecDeque::new(),
        hold: false,
        held: Vec::new(),
        streams: Vec::new(),
        circs: Vec::new(),
        hostile: false,
    };
    for op in input.ops.into_iter().take(64) {
        world.apply(op);
        world.settle();
        world.check_invariants();
    }
    world.hold = false;
    world.release();
    world.settle();
    world.check_invariants();
});

/// The id of client `i`.
fn client_id(i: usize) -> CircId {
    CircId(0x8000_0001 + u32::try_from(i % MAX_CLIENTS).unwrap_or(0))
}

/// A cell from fuzzer fields.
fn make_cell(circ: CircId, command: u8, payload: &[u8]) -> Cell {
    let command = CellCommand::from_code(command % 6).unwrap_or(CellCommand::Padding);
    let mut cell = Cell::new(circ, command);
    let n = payload.len().min(PAYLOAD_LEN);
    cell.payload[..n].copy_from_slice(&payload[..n]);
    cell
}

/// A destroy reason from a byte.
fn reason(code: u8) -> DestroyReason {
    DestroyReason::from_code(code % 9)
}

impl World {
    /// Resolve a circuit selector.
    fn circ(&self, sel: CircSel) -> CircId {
        match sel {
            CircSel::Client(i) => client_id(usize::from(i)),
            CircSel::Known(i) if !self.circs.is_empty() => self.circs[usize::from(i) % self.circs.len()],
            CircSel::Known(i) => CircId(u32::from(i)),
            CircSel::Raw(id) => CircId(id),
        }
    }

    /// The relay keys behind table `t`.
    fn keys(t: usize) -> HopKeysRef<'static> {
        let relay = &fixture().0[usize::from(t == B)];
        HopKeysRef { relay_id: &relay.relay_id, onion_key: &relay.onion }
    }

    /// A path through A (and B).
    fn path(two_hops: bool, bad_key: bool) -> Vec<HopSpec> {
        let (relays, _) = fixture();
        let mut path: Vec<HopSpec> = relays
            .iter()
            .enumerate()
            .map(|(i, r)| HopSpec {
                relay_id: r.identity.relay_id(),
                onion_key: r.onion.onion_public(),
                link_key: r.link.link_public(),
                addr: (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + u8::try_from(i).unwrap_or(0))), 9001).into(),
            })
            .collect();
        if bad_key {
            let last = path.len() - 1;
            path[last].onion_key = relays[0].link.onion_public();
        }
        path.truncate(if two_hops { 2 } else { 1 });
        path
    }

    /// Client `i`, if it exists.
    fn client(&mut self, i: u8) -> Option<&mut Client> {
        self.clients.get_mut(usize::from(i) % MAX_CLIENTS)?.as_mut()
    }

    /// Run one operation.
    fn apply(&mut self, op: Op) {
        match op {
            Op::RawCell { at, circ, command, payload } => {
                self.hostile = true;
                let t = usize::from(at % 3);
                let cell = make_cell(self.circ(circ), command, &payload);
                self.deliver(Delivery::ToTable(t, cell));
            }
            Op::Driver { at, call } => {
                self.hostile = true;
                self.driver_call(usize::from(at % 3), call);
            }
            Op::ClientRaw { client, hop, plaintext } => {
                self.hostile = true;
                if let Some(c) = self.client(client) {
                    let hop = usize::from(hop) % c.hops;
                    let _ = c.circ.dangerously_send_raw(hop, &plaintext);
                }
            }
            Op::NewClient { two_hops, bad_key, cc } => {
                self.hostile |= bad_key;
                let i = self.clients.len();
                if i < MAX_CLIENTS {
                    let path = Self::path(two_hops, bad_key);
                    let hops = path.len();
                    let start = fixture().1;
                    let mut circ = ClientCircuit::new(&mut self.rng, start, client_id(i), path, Duration::from_secs(10))
                        .expect("a one- or two-hop path is valid");
                    if cc {
                        circ.request_congestion_control();
                    }
                    self.clients.push(Some(Client { circ, hops, streams: Vec::new() }));
                }
            }
            Op::Begin { client, target, port } => {
                if let Some(c) = self.client(client) {
                    let target = match target {
                        TargetSpec::Host => Target::Hostname("example.org".into()),
                        TargetSpec::V4(ip) => Target::Ip(IpAddr::from(ip)),
                        TargetSpec::Name(name) => Target::Hostname(name),
                    };
                    if let Ok(s) = c.circ.begin(target, port) {
                        c.streams.push(s);
                    }
                }
            }
            Op::BeginDir { client } => {
                if let Some(c) = self.client(client) {
                    if let Ok(s) = c.circ.begin_dir() {
                        c.streams.push(s);
                    }
                }
            }
            Op::Data { client, stream, len } => {
                if let Some(c) = self.client(client) {
                    if let Some(&s) = c.streams.get(usize::from(stream) % c.streams.len().max(1)) {
                        let data = vec![0x5a; usize::from(len)];
                        let _ = c.circ.send_data(s, &data, fixture().1);
                    }
                }
            }
            Op::End { client, stream, reason } => {
                if let Some(c) = self.client(client) {
                    if let Some(&s) = c.streams.get(usize::from(stream) % c.streams.len().max(1)) {
                        let _ = c.circ.end_stream(s, EndReason::from_code(reason));
                    }
                }
            }
            Op::Consumed { client, stream } => {
                self.hostile = true;
                if let Some(c) = self.client(client) {
                    let s = c.streams.get(usize::from(stream) % c.streams.len().max(1)).copied();
                    let _ = c.circ.stream_consumed(s.unwrap_or(StreamId(u16::from(stream))), fixture().1);
                }
            }
            Op::Close { client, reason: r } => {
                if let Some(c) = self.client(client) {
                    c.circ.close(reason(r));
                }
            }
            Op::Timeout { client, secs } => {
                let start = fixture().1;
                if let Some(c) = self.client(client) {
                    c.circ.handle_timeout(start + Duration::from_secs(u64::from(secs)));
                }
            }
            Op::ExitSend { stream, len } => {
                if let Some(&(t, circ, s)) = self.pick_stream(stream) {
                    let data = vec![0xa5; usize::from(len)];
                    let _ = self.tables[t].send_stream_data(circ, s, &data, fixture().1);
                }
            }
            Op::ExitEnd { stream, reason } => {
                if let Some(&(t, circ, s)) = self.pick_stream(stream) {
                    let _ = self.tables[t].end_stream(circ, s, EndReason::from_code(reason));
                }
            }
            Op::ExitClose { stream, reason: r } => {
                if let Some(&(t, circ, _)) = self.pick_stream(stream) {
                    self.tables[t].close_circuit(circ, reason(r));
                }
            }
            Op::Hold(hold) => {
                self.hold = hold;
                self.release();
            }
            Op::LinkClosed(ab) => {
                if ab {
                    self.tables[OUT].link_closed();
                    self.tables[B].link_closed();
                } else {
                    self.tables[IN].link_closed();
                    // The clients' end of the link died too.
                    for c in &mut self.clients {
                        *c = None;
                    }
                    self.held.clear();
                }
            }
        }
    }

    /// A stream a table serves.
    fn pick_stream(&self, i: u8) -> Option<&(usize, CircId, StreamId)> {
        self.streams.get(usize::from(i) % self.streams.len().max(1))
    }

    /// Run a driver call with arbitrary ids on table `t`.
    fn driver_call(&mut self, t: usize, call: Call) {
        match call {
            Call::StreamConnected { circ, stream, addr } => {
                let addr = match addr {
                    Addr::None => None,
                    Addr::V4(ip) => Some(IpAddr::from(ip)),
                    Addr::V6(ip) => Some(IpAddr::from(ip)),
                };
                let circ = self.circ(circ);
                let _ = self.tables[t].stream_connected(circ, StreamId(stream), addr);
            }
            Call::EndStream { circ, stream, reason } => {
                let circ = self.circ(circ);
                let _ = self.tables[t].end_stream(circ, StreamId(stream), EndReason::from_code(reason));
            }
            Call::SendStreamData { circ, stream, len } => {
                let circ = self.circ(circ);
                let data = vec![0x11; usize::from(len)];
                if let Ok(n) = self.tables[t].send_stream_data(circ, StreamId(stream), &data, fixture().1) {
                    assert!(n <= data.len());
                }
            }
            Call::StreamConsumed { circ, stream } => {
                let circ = self.circ(circ);
                let _ = self.tables[t].stream_consumed(circ, StreamId(stream), fixture().1);
            }
            Call::OpenOutbound { back_link, back, skin } => {
                let back = Route { link: LinkId(u64::from(back_link)), circ: self.circ(back) };
                if let Ok(id) = self.tables[t].open_outbound(&mut self.rng, back, &skin) {
                    assert_ne!(id, CircId::LINK);
                    self.circs.push(id);
                }
            }
            Call::ExtendStarted { circ, next } => {
                let (circ, next) = (self.circ(circ), self.circ(next));
                self.tables[t].extend_started(circ, Route { link: LinkId(1), circ: next });
            }
            Call::ExtendFailed { circ } => {
                let circ = self.circ(circ);
                self.tables[t].extend_failed(circ);
            }
            Call::NextHopClosed { circ, reason: r } => {
                let circ = self.circ(circ);
                self.tables[t].next_hop_closed(circ, reason(r));
            }
            Call::CloseOutbound { circ, reason: r } => {
                let circ = self.circ(circ);
                self.tables[t].close_outbound(circ, reason(r));
            }
            Call::CloseCircuit { circ, reason: r } => {
                let circ = self.circ(circ);
                self.tables[t].close_circuit(circ, reason(r));
            }
            Call::FromNext { circ, from, command, payload } => {
                let (circ, from) = (self.circ(circ), Route { link: LinkId(1), circ: self.circ(from) });
                let cell = make_cell(from.circ, command, &payload);
                self.deliver(Delivery::FromNext(t, circ, from, cell));
            }
        }
    }

    /// Send the held client cells.
    fn release(&mut self) {
        if !self.hold {
            for cell in std::mem::take(&mut self.held) {
                self.queue.push_back(Delivery::ToTable(IN, cell));
            }
        }
    }

    /// Deliver and drain until nothing moves.
    fn settle(&mut self) {
        for _ in 0..SETTLE_LIMIT {
            let produced = self.collect();
            match self.queue.pop_front() {
                Some(d) => self.deliver(d),
                None if produced => {}
                None => return,
            }
        }
        panic!("the world did not settle: a livelock between tables and clients");
    }

    /// Hand one delivery to its recipient.
    fn deliver(&mut self, d: Delivery) {
        match d {
            Delivery::ToClient(cell) => {
                let index = usize::try_from(cell.circ.0.wrapping_sub(client_id(0).0)).unwrap_or(usize::MAX);
                let Some(Some(c)) = self.clients.get_mut(index) else {
                    return;
                };
                let hostile = self.hostile;
                if let Err(e) = c.circ.handle_cell(&mut self.rng, cell, fixture().1) {
                    assert!(
                        !strict() || hostile || matches!(e, CircuitError::Limit { .. }),
                        "honest run: the client rejected a relay's cell: {e:?}"
                    );
                }
            }
            Delivery::ToTable(t, cell) => {
                let keys = Self::keys(t);
                let result = self.tables[t].handle_cell(&mut self.rng, &keys, cell, fixture().1);
                self.check_table_result(t, result);
            }
            Delivery::FromNext(t, circ, from, cell) => {
                let result = self.tables[t].handle_from_next(circ, from, cell);
                self.check_table_result(t, result);
            }
        }
    }

    /// In strict mode, an honest run causes no peer errors at a table.
    fn check_table_result(&self, t: usize, result: Result<(), CircuitError>) {
        let Err(e) = result else { return };
        let benign =
            matches!(e, CircuitError::Limit { .. } | CircuitError::Protocol { reason: "cell for unknown circuit", .. });
        assert!(!strict() || self.hostile || benign, "honest run: table {t} rejected a cell: {e:?}");
    }

    /// Drain every output; returns whether anything was produced.
    fn collect(&mut self) -> bool {
        let before = self.queue.len();
        let mut acted = false;
        for i in 0..self.clients.len() {
            let Some(c) = self.clients[i].as_mut() else {
                continue;
            };
            let mut cells = Vec::new();
            while let Some(cell) = c.circ.poll_transmit() {
                cells.push(cell);
            }
            let mut closed = false;
            while let Some(ev) = c.circ.poll_event() {
                acted = true;
                match ev {
                    ClientEvent::StreamData { stream, data } => {
                        assert!(!data.is_empty());
                        let _ = c.circ.stream_consumed(stream, fixture().1);
                    }
                    ClientEvent::Closed { .. } => closed = true,
                    _ => {}
                }
            }
            assert!(c.circ.stream_count() <= MAX_STREAMS_PER_CIRCUIT);
            if closed {
                assert!(c.circ.is_closed());
                // Flush its last cells (the DESTROY), then forget it, as a driver would.
                while let Some(cell) = c.circ.poll_transmit() {
                    cells.push(cell);
                }
                self.clients[i] = None;
            }
            for cell in cells {
                assert_eq!(cell.circ, client_id(i), "a client sends only on its own circuit");
                if self.hold {
                    self.held.push(cell);
                } else {
                    self.queue.push_back(Delivery::ToTable(IN, cell));
                }
            }
        }
        for t in [IN, OUT, B] {
            loop {
                if let Some(cell) = self.tables[t].poll_transmit() {
                    assert_ne!(cell.circ, CircId::LINK, "tables never send on circuit 0");
                    let to = match t {
                        IN => Delivery::ToClient(cell),
                        OUT => Delivery::ToTable(B, cell),
                        _ => Delivery::ToTable(OUT, cell),
                    };
                    self.queue.push_back(to);
                } else if let Some(action) = self.tables[t].poll_action() {
                    acted = true;
                    self.act(t, action);
                } else {
                    break;
                }
            }
        }
        acted || self.queue.len() != before
    }

    /// Which table of the relay owning table `t` serves `link`.
    fn table_for(t: usize, link: LinkId) -> Option<usize> {
        match (t, link) {
            (IN | OUT, LinkId(0)) => Some(IN),
            (IN | OUT, LinkId(1)) => Some(OUT),
            (B, LinkId(1)) => Some(B),
            _ => None,
        }
    }

    /// The table at the other end of table `t`'s link, `None` for the clients.
    fn peer(t: usize) -> Option<usize> {
        match t {
            OUT => Some(B),
            B => Some(OUT),
            _ => None,
        }
    }

    /// Carry out an action of table `t` as a driver would.
    fn act(&mut self, t: usize, action: RelayAction) {
        match action {
            RelayAction::Forward { to, cell } => {
                assert_eq!(cell.circ, to.circ, "forwarded cells are re-addressed");
                if let Some(lt) = Self::table_for(t, to.link) {
                    match Self::peer(lt) {
                        Some(p) => self.queue.push_back(Delivery::ToTable(p, cell)),
                        None => self.queue.push_back(Delivery::ToClient(cell)),
                    }
                }
            }
            RelayAction::Backward { to, from, cell } => {
                assert_eq!(from.circ, cell.circ, "a backward cell names where it arrived");
                if let Some(owner) = Self::table_for(t, to.link) {
                    self.queue.push_back(Delivery::FromNext(owner, to.circ, from, cell));
                }
            }
            RelayAction::Extend { circ, extend } => {
                let b_id = fixture().0[1].relay_id;
                if t != B && extend.relay_id == b_id {
                    let back = Route { link: LinkId(if t == IN { 0 } else { 1 }), circ };
                    match self.tables[OUT].open_outbound(&mut self.rng, back, &extend.onionskin) {
                        Ok(out) => {
                            self.circs.push(out);
                            self.tables[t].extend_started(circ, Route { link: LinkId(1), circ: out });
                        }
                        Err(_) => self.tables[t].extend_failed(circ),
                    }
                } else {
                    self.tables[t].extend_failed(circ);
                }
            }
            RelayAction::Begin { circ, stream, .. } | RelayAction::BeginDir { circ, stream } => {
                if self.streams.len() < 64 {
                    self.streams.push((t, circ, stream));
                }
                self.circs.push(circ);
                self.circs.truncate(64);
                // An exit that connects at once.
                let _ = self.tables[t].stream_connected(circ, stream, None);
            }
            RelayAction::StreamData { circ, stream, data } => {
                assert!(!data.is_empty());
                let _ = self.tables[t].stream_consumed(circ, stream, fixture().1);
            }
            RelayAction::StreamEnded { .. } | RelayAction::StreamWritable { .. } | RelayAction::StreamHalfClosed { .. } => {}
            RelayAction::CircuitClosed { next, reason, .. } => {
                if let Some(next) = next {
                    if let Some(nt) = Self::table_for(t, next.link) {
                        self.tables[nt].close_outbound(next.circ, reason);
                    }
                }
            }
            RelayAction::OutboundClosed { back, reason } => {
                if let Some(owner) = Self::table_for(t, back.link) {
                    self.tables[owner].next_hop_closed(back.circ, reason);
                }
            }
        }
    }

    /// Invariants that hold after every operation.
    fn check_invariants(&self) {
        for table in &self.tables {
            assert!(
                table.circuit_count() <= self.limits.max_circuits,
                "{table:?} holds more than {} circuits",
                self.limits.max_circuits
            );
        }
    }
}
