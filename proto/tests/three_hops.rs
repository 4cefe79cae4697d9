//! One client and three relays wired in memory, no sockets (CONTRIBUTING.md P14):
//! the full sans-IO data path — CREATE, EXTEND twice, BEGIN, DATA both ways
//! with windows and receipts — plus hostile-hop scenarios that must end one
//! circuit with a typed error and leave the others alone.

// Test harness code: a broken set-up should fail loudly, and the harness
// (not the protocol core) may read the clock to start build timers.
#![allow(clippy::unwrap_used, clippy::disallowed_methods, clippy::cast_possible_truncation)]

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use lamina_crypto::keys::{IdentityKeypair, StaticKeypair};
use lamina_proto::cell::{Cell, CellCommand, CircId, DestroyReason};
use lamina_proto::circuit::client::{ClientCircuit, ClientEvent, HopSpec};
use lamina_proto::circuit::relay::{HopKeysRef, LinkId, RelayAction, RelayCircuitTable, Route, TableLimits};
use lamina_proto::error::CircuitError;
use lamina_proto::msg::{EndReason, StreamId, Target};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// The client end of link 0.
const CLIENT_LINK: LinkId = LinkId(0);

struct Relay {
    identity: IdentityKeypair,
    onion: StaticKeypair,
    link_key: StaticKeypair,
    tables: HashMap<LinkId, RelayCircuitTable>,
}

/// What the exit does with a stream.
#[derive(Default)]
struct ExitStream {
    received: Vec<u8>,
    to_send: VecDeque<u8>,
}

enum Delivery {
    ToClient(Cell),
    ToTable { relay: usize, link: LinkId, cell: Cell },
    FromNext { relay: usize, link: LinkId, circ: CircId, from: Route, cell: Cell },
}

struct Net {
    rng: ChaCha20Rng,
    relays: Vec<Relay>,
    /// link → (end A, end B); `None` is the client.
    links: HashMap<LinkId, (Option<usize>, Option<usize>)>,
    clients: HashMap<CircId, ClientCircuit>,
    client_events: Vec<(CircId, ClientEvent)>,
    client_received: HashMap<(CircId, StreamId), Vec<u8>>,
    client_pending: HashMap<(CircId, StreamId), VecDeque<u8>>,
    exit: HashMap<(usize, CircId, StreamId), ExitStream>,
    errors: Vec<(usize, CircuitError)>,
    queue: VecDeque<Delivery>,
    /// Flip this bit of the next forward cell relay `.0` forwards.
    tamper_at: Option<(usize, usize)>,
    /// Record RELAY cells arriving at relay 0 (for replay tests).
    recorded: Vec<Cell>,
    /// Whether the exit's consumer takes data at once (false: a stalled
    /// destination, so windows are not reopened).
    exit_consumes: bool,
}

impl Net {
    /// Three relays in a line: client —L0— R0 —L1— R1 —L2— R2.
    fn new(seed: u8) -> Self {
        let mut rng = ChaCha20Rng::from_seed([seed; 32]);
        let relays: Vec<Relay> = (0..3)
            .map(|_| Relay {
                identity: IdentityKeypair::generate(&mut rng),
                onion: StaticKeypair::generate(&mut rng),
                link_key: StaticKeypair::generate(&mut rng),
                tables: HashMap::new(),
            })
            .collect();
        let mut net = Self {
            rng,
            relays,
            links: HashMap::new(),
            clients: HashMap::new(),
            client_events: Vec::new(),
            client_received: HashMap::new(),
            client_pending: HashMap::new(),
            exit: HashMap::new(),
            errors: Vec::new(),
            queue: VecDeque::new(),
            tamper_at: None,
            recorded: Vec::new(),
            exit_consumes: true,
        };
        net.add_link(CLIENT_LINK, None, 0);
        net.add_link(LinkId(1), Some(0), 1);
        net.add_link(LinkId(2), Some(1), 2);
        net
    }

    fn add_link(&mut self, id: LinkId, initiator: Option<usize>, responder: usize) {
        let exit = responder == 2;
        self.relays[responder].tables.insert(id, RelayCircuitTable::new(id, false, exit, TableLimits::default()));
        if let Some(i) = initiator {
            self.relays[i].tables.insert(id, RelayCircuitTable::new(id, true, false, TableLimits::default()));
        }
        self.links.insert(id, (initiator, Some(responder)));
    }

    fn path(&self) -> Vec<HopSpec> {
        self.relays
            .iter()
            .enumerate()
            .map(|(i, r)| HopSpec {
                relay_id: r.identity.relay_id(),
                onion_key: r.onion.onion_public(),
                link_key: r.link_key.link_public(),
                addr: format!("127.{}.0.1:9001", i + 1).parse().unwrap(),
            })
            .collect()
    }

    fn build(&mut self, circ: CircId, path: Vec<HopSpec>) {
        let c = ClientCircuit::new(&mut self.rng, Instant::now(), circ, path, Duration::from_secs(10)).unwrap();
        self.clients.insert(circ, c);
        self.run();
    }

    /// The other end of `link` from `relay`'s point of view.
    fn peer_of(&self, link: LinkId, relay: Option<usize>) -> Option<usize> {
        let (a, b) = self.links[&link];
        if a == relay {
            b
        } else {
            a
        }
    }

    fn send_on_link(&mut self, from: Option<usize>, link: LinkId, cell: Cell) {
        match self.peer_of(link, from) {
            None => self.queue.push_back(Delivery::ToClient(cell)),
            Some(relay) => self.queue.push_back(Delivery::ToTable { relay, link, cell }),
        }
    }

    /// Move everything until nothing moves.
    fn run(&mut self) {
        for _ in 0..10_000_000 {
            let produced = self.collect_outputs();
            match self.queue.pop_front() {
                Some(d) => self.deliver(d),
                None if produced => {}
                None => return,
            }
        }
        panic!("network did not settle");
    }

    fn deliver(&mut self, d: Delivery) {
        match d {
            Delivery::ToClient(cell) => {
                if let Some(c) = self.clients.get_mut(&cell.circ) {
                    let _ = c.handle_cell(&mut self.rng, cell, Instant::now());
                }
            }
            Delivery::ToTable { relay, link, cell } => {
                if relay == 0 && cell.command == CellCommand::Relay {
                    self.recorded.push(cell.clone());
                }
                let r = &mut self.relays[relay];
                let keys = HopKeysRef { relay_id: &r.identity.relay_id(), onion_key: &r.onion };
                let table = r.tables.get_mut(&link).unwrap();
                if let Err(e) = table.handle_cell(&mut self.rng, &keys, cell, Instant::now()) {
                    self.errors.push((relay, e));
                }
            }
            Delivery::FromNext { relay, link, circ, from, cell } => {
                let table = self.relays[relay].tables.get_mut(&link).unwrap();
                if let Err(e) = table.handle_from_next(circ, from, cell) {
                    self.errors.push((relay, e));
                }
            }
        }
    }

    /// Drain every output; returns whether anything was produced.
    fn collect_outputs(&mut self) -> bool {
        let before = self.queue.len();
        let mut acted = false;
        let ids: Vec<CircId> = self.clients.keys().copied().collect();
        for id in ids {
            self.pump_client(id);
        }
        for relay in 0..self.relays.len() {
            let links: Vec<LinkId> = self.relays[relay].tables.keys().copied().collect();
            for link in links {
                loop {
                    let table = self.relays[relay].tables.get_mut(&link).unwrap();
                    if let Some(cell) = table.poll_transmit() {
                        self.send_on_link(Some(relay), link, cell);
                    } else if let Some(action) = table.poll_action() {
                        acted = true;
                        self.handle_action(relay, link, action);
                    } else {
                        break;
                    }
                }
            }
        }
        acted || self.queue.len() != before
    }

    fn pump_client(&mut self, id: CircId) {
        // Resume pending sends first (window permitting).
        let pending: Vec<StreamId> =
            self.client_pending.iter().filter(|((c, _), q)| *c == id && !q.is_empty()).map(|((_, s), _)| *s).collect();
        for stream in pending {
            let c = self.clients.get_mut(&id).unwrap();
            if !c.can_send(stream) {
                continue;
            }
            let q = self.client_pending.get_mut(&(id, stream)).unwrap();
            let chunk: Vec<u8> = q.iter().take(8 * 1024).copied().collect();
            if let Ok(n) = c.send_data(stream, &chunk, Instant::now()) {
                q.drain(..n);
            }
        }
        let c = self.clients.get_mut(&id).unwrap();
        let mut cells = Vec::new();
        while let Some(cell) = c.poll_transmit() {
            cells.push(cell);
        }
        let mut events = Vec::new();
        while let Some(ev) = c.poll_event() {
            events.push(ev);
        }
        for cell in cells {
            self.send_on_link(None, CLIENT_LINK, cell);
        }
        for ev in events {
            if let ClientEvent::StreamData { stream, data } = &ev {
                self.client_received.entry((id, *stream)).or_default().extend_from_slice(data);
                self.clients.get_mut(&id).unwrap().stream_consumed(*stream, Instant::now()).unwrap();
            }
            self.client_events.push((id, ev));
        }
    }

    fn handle_action(&mut self, relay: usize, link: LinkId, action: RelayAction) {
        match action {
            RelayAction::Forward { to, mut cell } => {
                if let Some((r, bit)) = self.tamper_at {
                    if r == relay {
                        cell.payload[bit / 8] ^= 1 << (bit % 8);
                        self.tamper_at = None;
                    }
                }
                self.send_on_link(Some(relay), to.link, cell);
            }
            RelayAction::Backward { to, from, cell } => {
                self.queue.push_back(Delivery::FromNext { relay, link: to.link, circ: to.circ, from, cell });
            }
            RelayAction::Extend { circ, extend } => {
                let target = self.relays.iter().position(|r| r.identity.relay_id() == extend.relay_id);
                let out_link = target.and_then(|t| {
                    self.links.iter().find(|(_, (a, b))| *a == Some(relay) && *b == Some(t)).map(|(l, _)| *l)
                });
                let table = self.relays[relay].tables.get_mut(&link).unwrap();
                let Some(out_link) = out_link else {
                    table.extend_failed(circ);
                    return;
                };
                let back = Route { link, circ };
                let out_table = self.relays[relay].tables.get_mut(&out_link).unwrap();
                let out_circ = out_table.open_outbound(&mut self.rng, back, &extend.onionskin).unwrap();
                let table = self.relays[relay].tables.get_mut(&link).unwrap();
                table.extend_started(circ, Route { link: out_link, circ: out_circ });
            }
            RelayAction::Begin { circ, stream, .. } | RelayAction::BeginDir { circ, stream } => {
                self.exit.insert((relay, circ, stream), ExitStream::default());
                let table = self.relays[relay].tables.get_mut(&link).unwrap();
                table.stream_connected(circ, stream, None).unwrap();
            }
            RelayAction::StreamData { circ, stream, data } => {
                let table = self.relays[relay].tables.get_mut(&link).unwrap();
                if self.exit_consumes {
                    table.stream_consumed(circ, stream, Instant::now()).unwrap();
                }
                self.exit.entry((relay, circ, stream)).or_default().received.extend_from_slice(&data);
            }
            RelayAction::StreamWritable { circ, stream } => self.exit_flush(relay, link, circ, stream),
            RelayAction::StreamEnded { .. } | RelayAction::StreamHalfClosed { .. } => {}
            RelayAction::CircuitClosed { next, reason, .. } => {
                if let Some(next) = next {
                    if let Some(t) = self.relays[relay].tables.get_mut(&next.link) {
                        t.close_outbound(next.circ, reason);
                    }
                }
            }
            RelayAction::OutboundClosed { back, reason } => {
                if let Some(t) = self.relays[relay].tables.get_mut(&back.link) {
                    t.next_hop_closed(back.circ, reason);
                }
            }
        }
    }

    fn exit_flush(&mut self, relay: usize, link: LinkId, circ: CircId, stream: StreamId) {
        let Some(st) = self.exit.get_mut(&(relay, circ, stream)) else {
            return;
        };
        let table = self.relays[relay].tables.get_mut(&link).unwrap();
        while !st.to_send.is_empty() && table.can_send(circ, stream) {
            let chunk: Vec<u8> = st.to_send.iter().take(16 * 1024).copied().collect();
            let n = table.send_stream_data(circ, stream, &chunk, Instant::now()).unwrap();
            st.to_send.drain(..n);
            if n == 0 {
                break;
            }
        }
    }

    fn is_open(&self, circ: CircId) -> bool {
        self.clients[&circ].is_open()
    }

    fn closed_reason(&self, circ: CircId) -> Option<DestroyReason> {
        self.client_events.iter().find_map(|(c, ev)| match ev {
            ClientEvent::Closed { reason } if *c == circ => Some(*reason),
            _ => None,
        })
    }

    /// Open a stream on `circ` and wait for CONNECTED.
    fn open_stream(&mut self, circ: CircId) -> StreamId {
        let stream = self.clients.get_mut(&circ).unwrap().begin(Target::Hostname("localhost".into()), 80).unwrap();
        self.run();
        assert!(self
            .client_events
            .iter()
            .any(|(c, ev)| *c == circ && matches!(ev, ClientEvent::StreamConnected { stream: s, .. } if *s == stream)));
        stream
    }

    /// A short round trip proving the circuit still carries data.
    fn echo_works(&mut self, circ: CircId) -> bool {
        let stream = self.open_stream(circ);
        self.client_pending.insert((circ, stream), b"ping".iter().copied().collect());
        self.run();
        self.exit.contains_key(&(2, CircId(circ.0), stream)) || self.exit.values().any(|e| e.received == b"ping")
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8).collect()
}

#[test]
fn ten_mebibytes_both_ways_through_three_hops() {
    let mut net = Net::new(1);
    let circ = CircId(0x8000_0001);
    net.build(circ, net.path());
    assert!(net.is_open(circ), "events: {:?}, errors: {:?}", net.client_events, net.errors);
    assert!(net.client_events.contains(&(circ, ClientEvent::Built)));
    let stream = net.open_stream(circ);

    let up = pattern(10 * 1024 * 1024, 7);
    net.client_pending.insert((circ, stream), up.iter().copied().collect());
    net.run();
    let (&(exit_relay, exit_circ, exit_stream), received) =
        net.exit.iter().find(|(_, st)| !st.received.is_empty()).map(|(k, v)| (k, &v.received)).unwrap();
    assert_eq!(exit_relay, 2, "only the last hop sees stream data");
    assert_eq!(received.len(), up.len());
    assert!(*received == up, "upload arrived intact");

    let down = pattern(10 * 1024 * 1024, 99);
    net.exit.get_mut(&(exit_relay, exit_circ, exit_stream)).unwrap().to_send = down.iter().copied().collect();
    net.exit_flush(exit_relay, LinkId(2), exit_circ, exit_stream);
    net.run();
    let got = &net.client_received[&(circ, stream)];
    assert_eq!(got.len(), down.len());
    assert!(*got == down, "download arrived intact");
    assert!(net.errors.is_empty(), "{:?}", net.errors);
}

#[test]
fn tampering_middle_hop_is_caught_by_the_next_hop_and_only_that_circuit_dies() {
    let mut net = Net::new(2);
    let (victim, bystander) = (CircId(0x8000_0001), CircId(0x8000_0002));
    net.build(victim, net.path());
    net.build(bystander, net.path());
    let stream = net.open_stream(victim);
    // The middle relay (index 1) flips a bit in the next cell it forwards.
    net.tamper_at = Some((1, 333 * 8 + 3));
    net.client_pending.insert((victim, stream), b"secret".iter().copied().collect());
    net.run();
    assert!(
        net.errors.iter().any(|(r, e)| *r == 2 && matches!(e, CircuitError::Crypto { context: "forward layer", .. })),
        "the exit detects the modification: {:?}",
        net.errors
    );
    assert!(!net.exit.values().any(|e| !e.received.is_empty()), "no tampered data was delivered");
    assert!(net.clients[&victim].is_closed());
    assert!(net.closed_reason(victim).is_some());
    assert!(net.is_open(bystander));
    assert!(net.echo_works(bystander));
}

#[test]
fn replayed_cell_is_rejected_and_only_that_circuit_dies() {
    let mut net = Net::new(3);
    let (victim, bystander) = (CircId(0x8000_0001), CircId(0x8000_0002));
    net.build(victim, net.path());
    net.build(bystander, net.path());
    net.open_stream(victim);
    let replay = net.recorded.iter().rev().find(|c| c.circ == victim).unwrap().clone();
    net.queue.push_back(Delivery::ToTable { relay: 0, link: CLIENT_LINK, cell: replay });
    net.run();
    assert!(net
        .errors
        .iter()
        .any(|(r, e)| *r == 0 && matches!(e, CircuitError::Crypto { context: "forward layer", .. })));
    assert!(net.clients[&victim].is_closed(), "the DESTROY reached the client");
    assert!(net.is_open(bystander));
    assert!(net.echo_works(bystander));
}

#[test]
fn wrong_onion_key_fails_the_extend_and_only_that_circuit() {
    let mut net = Net::new(4);
    let good = CircId(0x8000_0002);
    net.build(good, net.path());
    let mut path = net.path();
    path[2].onion_key = StaticKeypair::generate(&mut net.rng).onion_public();
    let bad = CircId(0x8000_0001);
    net.build(bad, path);
    assert!(net.errors.iter().any(|(r, e)| *r == 2
        && matches!(
            e,
            CircuitError::Crypto { context: "circuit handshake", source: lamina_crypto::CryptoError::UnknownKey, .. }
        )));
    assert!(net.clients[&bad].is_closed());
    assert!(!net.clients[&bad].is_open());
    assert!(net.is_open(good));
    assert!(net.echo_works(good));
}

#[test]
fn unknown_relay_command_ends_the_circuit_with_a_decode_error() {
    let mut net = Net::new(5);
    let (victim, bystander) = (CircId(0x8000_0001), CircId(0x8000_0002));
    net.build(victim, net.path());
    net.build(bystander, net.path());
    net.clients.get_mut(&victim).unwrap().dangerously_send_raw(2, &[0x7e, 0, 1, 0, 0]).unwrap();
    net.run();
    assert!(net.errors.iter().any(|(r, e)| *r == 2 && matches!(e, CircuitError::Decode { .. })), "{:?}", net.errors);
    assert!(net.clients[&victim].is_closed());
    assert!(net.is_open(bystander));
    assert!(net.echo_works(bystander));
}

#[test]
fn unknown_cell_command_is_a_typed_decode_error() {
    let mut bytes = vec![0u8; lamina_proto::cell::CELL_LEN];
    bytes[..4].copy_from_slice(&0x8000_0001u32.to_be_bytes());
    bytes[4] = 0x42;
    assert!(matches!(
        Cell::decode(&bytes),
        Err(lamina_proto::codec::DecodeError::Invalid { what: "cell", reason: "unknown command" })
    ));
}

#[test]
fn exit_refusal_and_client_end_reach_the_other_side() {
    let mut net = Net::new(6);
    let circ = CircId(0x8000_0001);
    net.build(circ, net.path());
    let stream = net.open_stream(circ);
    net.clients.get_mut(&circ).unwrap().end_stream(stream, EndReason::Done).unwrap();
    net.run();
    // A middle relay is not an exit: a one-hop BEGIN at relay 0 is refused.
    let short = CircId(0x8000_0003);
    let path = net.path()[..1].to_vec();
    net.build(short, path);
    let s = net.clients.get_mut(&short).unwrap().begin(Target::Ip("127.0.0.1".parse().unwrap()), 80).unwrap();
    net.run();
    assert!(net
        .client_events
        .iter()
        .any(|(c, ev)| *c == short && *ev == ClientEvent::StreamEnded { stream: s, reason: EndReason::NotExit }));
    assert!(net.is_open(short), "a refused stream does not kill the circuit");
}

#[test]
fn data_beyond_the_window_ends_the_circuit_with_a_typed_error() {
    let mut net = Net::new(8);
    let (victim, bystander) = (CircId(0x8000_0001), CircId(0x8000_0002));
    net.build(victim, net.path());
    net.build(bystander, net.path());
    let stream = net.open_stream(victim);
    // The destination stalls: nothing is consumed, so no SENDME reopens
    // the window. A hostile client ignores its own window and keeps sending.
    net.exit_consumes = false;
    let [hi, lo] = stream.0.to_be_bytes();
    let data_cell = [0x02, hi, lo, 0x00, 0x04, b'd', b'a', b't', b'a'];
    for _ in 0..=lamina_proto::circuit::flow::STREAM_WINDOW_START {
        net.clients.get_mut(&victim).unwrap().dangerously_send_raw(2, &data_cell).unwrap();
        net.run();
        if net.clients[&victim].is_closed() {
            break;
        }
    }
    assert!(
        net.errors
            .iter()
            .any(|(r, e)| *r == 2 && matches!(e, CircuitError::Protocol { reason: "data beyond the window", .. })),
        "{:?}",
        net.errors
    );
    assert!(net.clients[&victim].is_closed());
    net.exit_consumes = true;
    assert!(net.is_open(bystander));
    assert!(net.echo_works(bystander));
}

#[test]
fn build_timeout_closes_an_unanswered_circuit() {
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    let net = Net::new(7);
    let start = Instant::now();
    let mut c = ClientCircuit::new(&mut rng, start, CircId(0x8000_0001), net.path(), Duration::from_secs(5)).unwrap();
    assert_eq!(c.poll_timeout(), Some(start + Duration::from_secs(5)));
    c.handle_timeout(start + Duration::from_secs(4));
    assert!(!c.is_closed());
    c.handle_timeout(start + Duration::from_secs(5));
    assert!(c.is_closed());
    assert!(std::iter::from_fn(|| c.poll_event()).any(|e| e == ClientEvent::Closed { reason: DestroyReason::Timeout }));
}
