//! Congestion control on the wire (spec §8.4–§8.6): negotiation by
//! CC_REQUEST, Vegas circuit windows acknowledged on receipt, and XON/XOFF
//! stream advisories with bounded edge buffers, on the sans-IO cores with
//! a virtual clock.

// Test code: a broken set-up should fail loudly; the harness reads the clock
// once, as the origin of virtual time.
#![allow(clippy::unwrap_used, clippy::disallowed_methods, clippy::cast_possible_truncation)]

use std::time::{Duration, Instant};

use lamina_crypto::keys::{IdentityKeypair, StaticKeypair};
use lamina_proto::cell::CircId;
use lamina_proto::circuit::client::{ClientCircuit, ClientEvent, HopSpec};
use lamina_proto::circuit::flow::{CIRCUIT_WINDOW_START, EDGE_HARD_CAP_CELLS, STREAM_WINDOW_START};
use lamina_proto::circuit::relay::{HopKeysRef, LinkId, RelayAction, RelayCircuitTable, TableLimits};
use lamina_proto::circuit::BACKWARD_DATA_CAPACITY;
use lamina_proto::msg::{EndReason, StreamId, Target};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const CIRC: CircId = CircId(CircId::INITIATOR_BIT | 1);

/// One client and one exit (a one-hop circuit), wired back to back.
struct World {
    rng: ChaCha20Rng,
    identity: IdentityKeypair,
    onion: StaticKeypair,
    table: RelayCircuitTable,
    client: ClientCircuit,
    /// Virtual time.
    now: Instant,
    /// DATA cells the client received, per stream, not yet consumed.
    held: u32,
    /// The exit's driver was told the stream may send again.
    writable: bool,
    /// The exit saw the circuit close.
    exit_closed: bool,
    /// The exit's driver got DATA (cells), not yet written to its socket.
    exit_held: u32,
}

impl World {
    fn new(cc: bool) -> Self {
        let mut rng = ChaCha20Rng::from_seed([5; 32]);
        let identity = IdentityKeypair::generate(&mut rng);
        let onion = StaticKeypair::generate(&mut rng);
        let link_key = StaticKeypair::generate(&mut rng);
        let hop = HopSpec {
            relay_id: identity.relay_id(),
            onion_key: onion.onion_public(),
            link_key: link_key.link_public(),
            addr: "127.9.0.1:9001".parse().unwrap(),
        };
        let now = Instant::now();
        let mut client = ClientCircuit::new(&mut rng, now, CIRC, vec![hop], Duration::from_secs(10)).unwrap();
        if cc {
            client.request_congestion_control();
        }
        let table = RelayCircuitTable::new(LinkId(0), false, true, TableLimits::default());
        let mut w = Self {
            rng,
            identity,
            onion,
            table,
            client,
            now,
            held: 0,
            writable: false,
            exit_closed: false,
            exit_held: 0,
        };
        w.back();
        w.forth();
        w.back();
        assert!(w.client.is_open());
        w
    }

    /// Open a stream and connect it at the exit.
    fn stream(&mut self) -> StreamId {
        let s = self.client.begin(Target::Ip("127.0.0.1".parse().unwrap()), 80).unwrap();
        self.back();
        self.forth();
        s
    }

    /// Client cells to the exit; the exit connects every BEGIN at once.
    fn back(&mut self) {
        while let Some(cell) = self.client.poll_transmit() {
            let keys = HopKeysRef { relay_id: &self.identity.relay_id(), onion_key: &self.onion };
            let _ = self.table.handle_cell(&mut self.rng, &keys, cell, self.now);
        }
        while let Some(action) = self.table.poll_action() {
            match action {
                RelayAction::Begin { circ, stream, .. } => self.table.stream_connected(circ, stream, None).unwrap(),
                RelayAction::StreamWritable { .. } => self.writable = true,
                RelayAction::CircuitClosed { .. } => self.exit_closed = true,
                RelayAction::StreamData { .. } => self.exit_held += 1,
                _ => {}
            }
        }
    }

    /// Exit cells to the client.
    fn forth(&mut self) {
        while let Some(cell) = self.table.poll_transmit() {
            let _ = self.client.handle_cell(&mut self.rng, cell, self.now);
            while let Some(ev) = self.client.poll_event() {
                if let ClientEvent::StreamData { .. } = ev {
                    self.held += 1;
                }
            }
        }
    }

    /// The client's application reads everything it holds.
    fn consume(&mut self, s: StreamId) {
        for _ in 0..self.held {
            self.client.stream_consumed(s, self.now).unwrap();
        }
        self.held = 0;
    }

    /// The exit packages as many as `cells` DATA cells; returns how many.
    fn exit_send(&mut self, s: StreamId, cells: usize) -> usize {
        let data = vec![7u8; cells * BACKWARD_DATA_CAPACITY];
        self.table.send_stream_data(CIRC, s, &data, self.now).unwrap() / BACKWARD_DATA_CAPACITY
    }

    /// One round trip of a greedy exit → client transfer: the exit sends
    /// what its windows allow, the client reads it all, `rtt` passes,
    /// the acknowledgements return. Returns the cells sent.
    fn round(&mut self, s: StreamId, rtt: Duration) -> usize {
        let sent = self.exit_send(s, 40_000);
        self.forth();
        self.consume(s);
        self.now += rtt;
        self.back();
        sent
    }
}

#[test]
fn both_ends_agree_on_congestion_control_and_fixed_windows_stay_otherwise() {
    let w = World::new(true);
    assert!(w.client.congestion_controlled());
    assert!(w.table.congestion_controlled(CIRC));
    let w = World::new(false);
    assert!(!w.client.congestion_controlled());
    assert!(!w.table.congestion_controlled(CIRC));
    assert_eq!(w.table.circuit_send_window(CIRC), Some(CIRCUIT_WINDOW_START));
}

#[test]
fn a_congestion_controlled_circuit_outgrows_the_fixed_windows() {
    let mut w = World::new(true);
    let s = w.stream();
    let mut best = 0;
    for _ in 0..40 {
        let n = w.round(s, Duration::from_millis(200));
        best = best.max(n);
    }
    assert!(w.client.is_open() && !w.exit_closed);
    // One stream, one round trip: more than both fixed windows allow.
    assert!(best > CIRCUIT_WINDOW_START as usize, "best round {best} cells");
    assert!(best > STREAM_WINDOW_START as usize);

    // The same transfer with fixed windows is capped by the stream window.
    let mut w = World::new(false);
    let s = w.stream();
    let best = (0..10).map(|_| w.round(s, Duration::from_millis(200))).max().unwrap();
    assert_eq!(best, STREAM_WINDOW_START as usize);
}

#[test]
fn a_slow_reader_stops_the_exit_with_xoff_and_xon_resumes_it() {
    let mut w = World::new(true);
    let s = w.stream();
    // Grow the window first, so only the stream edge can stop the exit.
    for _ in 0..20 {
        w.round(s, Duration::from_millis(50));
    }
    // Now the application stops reading.
    let mut sent = 0;
    for _ in 0..20 {
        sent += w.exit_send(s, 4_000);
        w.forth();
        w.now += Duration::from_millis(50);
        w.back();
    }
    assert!(w.client.is_open());
    assert!(w.table.circuit_send_window(CIRC).unwrap() > 0, "the circuit window is not what stopped it");
    assert_eq!(w.exit_send(s, 10), 0, "XOFF stopped the exit");
    assert!((sent as u32) < EDGE_HARD_CAP_CELLS as u32, "the edge buffer stayed bounded: {sent} cells");
    assert!(sent >= 500, "XOFF came only after the buffer filled: {sent}");
    // The application drains: XON, and the exit's driver is woken.
    w.writable = false;
    w.consume(s);
    w.back();
    assert!(w.writable, "XON woke the stream");
    assert!(w.exit_send(s, 10) > 0);
}

#[test]
fn end_is_never_held_by_flow_control() {
    let mut w = World::new(true);
    let s = w.stream();
    for _ in 0..10 {
        w.exit_send(s, 4_000);
        w.forth();
        w.now += Duration::from_millis(50);
        w.back();
    }
    assert_eq!(w.exit_send(s, 10), 0, "the stream is stopped by XOFF");
    w.table.end_stream(CIRC, s, EndReason::Done).unwrap();
    let mut ended = false;
    while let Some(cell) = w.table.poll_transmit() {
        w.client.handle_cell(&mut w.rng, cell, w.now).unwrap();
        while let Some(ev) = w.client.poll_event() {
            ended |= matches!(ev, ClientEvent::StreamEnded { reason: EndReason::Done, .. });
        }
    }
    assert!(ended, "END arrived while the stream was XOFFed");
}

/// Relay-message plaintext: cmd, stream, len, body.
fn raw(cmd: u8, stream: StreamId, body: &[u8]) -> Vec<u8> {
    let mut m = vec![cmd];
    m.extend_from_slice(&stream.0.to_be_bytes());
    m.extend_from_slice(&(body.len() as u16).to_be_bytes());
    m.extend_from_slice(body);
    m
}

#[test]
fn a_client_ignoring_xoff_is_cut_off_at_the_hard_cap() {
    let mut w = World::new(true);
    let s = w.stream();
    // A hostile client floods DATA past XOFF; the exit's socket takes nothing.
    let cell = raw(0x02, s, &[1; 400]);
    for _ in 0..=EDGE_HARD_CAP_CELLS {
        w.client.dangerously_send_raw(0, &cell).unwrap();
        w.back();
        if w.exit_closed {
            break;
        }
    }
    assert!(w.exit_closed, "the exit destroyed the circuit");
    assert!(w.exit_held as usize <= EDGE_HARD_CAP_CELLS, "the edge buffer stayed bounded");
}

#[test]
fn premature_xoff_is_a_protocol_violation() {
    let mut w = World::new(true);
    let s = w.stream();
    w.exit_send(s, 10);
    w.client.dangerously_send_raw(0, &raw(0x0e, s, &[])).unwrap();
    w.back();
    assert!(w.exit_closed, "an XOFF the data cannot justify closes the circuit");
}

#[test]
fn stream_sendme_under_congestion_control_is_a_protocol_violation() {
    let mut w = World::new(true);
    let s = w.stream();
    w.client.dangerously_send_raw(0, &raw(0x05, s, &[0; 16])).unwrap();
    w.back();
    assert!(w.exit_closed);
}

#[test]
fn xon_and_xoff_without_congestion_control_are_violations() {
    let mut w = World::new(false);
    let s = w.stream();
    w.client.dangerously_send_raw(0, &raw(0x0f, s, &[0, 0, 0, 1])).unwrap();
    w.back();
    assert!(w.exit_closed);
}

#[test]
fn congestion_control_requested_after_a_stream_closes_the_circuit() {
    let mut w = World::new(false);
    let _s = w.stream();
    w.client.dangerously_send_raw(0, &raw(0x0d, StreamId::CIRCUIT, &[1])).unwrap();
    w.back();
    assert!(w.exit_closed);
}

#[test]
fn client_to_exit_data_is_congestion_controlled_too() {
    let mut w = World::new(true);
    let s = w.stream();
    let mut best = 0usize;
    for _ in 0..40 {
        let data = vec![3u8; 40_000 * 400];
        let n = w.client.send_data(s, &data, w.now).unwrap();
        best = best.max(n);
        w.back();
        for _ in 0..w.exit_held {
            w.table.stream_consumed(CIRC, s, w.now).unwrap();
        }
        w.exit_held = 0;
        w.now += Duration::from_millis(200);
        w.forth();
    }
    assert!(w.client.is_open() && !w.exit_closed);
    let cap = lamina_proto::circuit::forward_data_capacity(0);
    assert!(best / cap > CIRCUIT_WINDOW_START as usize, "best round {} cells", best / cap);
}
