//! Credit follows cells (spec §8.3): whatever the order in which streams
//! end — by the client, by the exit, with DATA queued in the client's
//! driver or still in flight — every DATA cell the exit sends comes back as
//! circuit credit exactly once. Property-tested on the sans-IO cores.

// Test code: a broken set-up should fail loudly; the harness reads the clock
// only to start build timers.
#![allow(clippy::unwrap_used, clippy::disallowed_methods, clippy::cast_possible_truncation)]

use std::time::{Duration, Instant};

use lamina_crypto::keys::{IdentityKeypair, StaticKeypair};
use lamina_proto::cell::CircId;
use lamina_proto::circuit::client::{ClientCircuit, ClientEvent, HopSpec};
use lamina_proto::circuit::flow::{CIRCUIT_WINDOW_INCREMENT, CIRCUIT_WINDOW_START};
use lamina_proto::circuit::relay::{HopKeysRef, LinkId, RelayAction, RelayCircuitTable, TableLimits};
use lamina_proto::circuit::BACKWARD_DATA_CAPACITY;
use lamina_proto::msg::{EndReason, StreamId, Target};
use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const CIRC: CircId = CircId(CircId::INITIATOR_BIT | 1);
const STREAMS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    /// The exit packages `cells` DATA cells for stream `s` (as the windows allow).
    Send(usize, usize),
    /// Up to `k` cells travel from the exit to the client.
    Deliver(usize),
    /// The application consumes up to `k` delivered cells of stream `s`.
    Consume(usize, usize),
    /// The application ends stream `s` (its undelivered data is dropped).
    ClientEnd(usize),
    /// The destination closes stream `s` at the exit.
    ExitEnd(usize),
    /// Everything the client queued reaches the exit.
    Back,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..STREAMS, 1..400usize).prop_map(|(s, n)| Op::Send(s, n)),
        (1..800usize).prop_map(Op::Deliver),
        (0..STREAMS, 1..400usize).prop_map(|(s, k)| Op::Consume(s, k)),
        (0..STREAMS).prop_map(Op::ClientEnd),
        (0..STREAMS).prop_map(Op::ExitEnd),
        Just(Op::Back),
    ]
}

struct World {
    rng: ChaCha20Rng,
    identity: IdentityKeypair,
    onion: StaticKeypair,
    table: RelayCircuitTable,
    client: ClientCircuit,
    streams: Vec<StreamId>,
    /// Cells the client's driver holds per stream (delivered, not consumed);
    /// `None` once the application is gone.
    held: Vec<Option<usize>>,
    /// DATA cells the exit sent in all.
    sent: u32,
}

impl World {
    fn new() -> Self {
        let mut rng = ChaCha20Rng::from_seed([4; 32]);
        let identity = IdentityKeypair::generate(&mut rng);
        let onion = StaticKeypair::generate(&mut rng);
        let link_key = StaticKeypair::generate(&mut rng);
        let hop = HopSpec {
            relay_id: identity.relay_id(),
            onion_key: onion.onion_public(),
            link_key: link_key.link_public(),
            addr: "127.9.0.1:9001".parse().unwrap(),
        };
        let client = ClientCircuit::new(&mut rng, Instant::now(), CIRC, vec![hop], Duration::from_secs(10)).unwrap();
        let table = RelayCircuitTable::new(LinkId(0), false, true, TableLimits::default());
        let mut w = Self { rng, identity, onion, table, client, streams: Vec::new(), held: Vec::new(), sent: 0 };
        w.back();
        w.deliver(usize::MAX);
        assert!(w.client.is_open());
        for _ in 0..STREAMS {
            let s = w.client.begin(Target::Ip("127.0.0.1".parse().unwrap()), 80).unwrap();
            w.streams.push(s);
            w.held.push(Some(0));
        }
        w.back();
        w.deliver(usize::MAX);
        w
    }

    /// Client cells to the exit; the exit connects every BEGIN at once.
    fn back(&mut self) {
        while let Some(cell) = self.client.poll_transmit() {
            let keys = HopKeysRef { relay_id: &self.identity.relay_id(), onion_key: &self.onion };
            let _ = self.table.handle_cell(&mut self.rng, &keys, cell, Instant::now());
        }
        while let Some(action) = self.table.poll_action() {
            if let RelayAction::Begin { circ, stream, .. } = action {
                self.table.stream_connected(circ, stream, None).unwrap();
            }
        }
    }

    /// Up to `k` exit cells to the client; the driver records DATA per stream.
    fn deliver(&mut self, k: usize) {
        for _ in 0..k {
            let Some(cell) = self.table.poll_transmit() else { break };
            let _ = self.client.handle_cell(&mut self.rng, cell, Instant::now());
            while let Some(ev) = self.client.poll_event() {
                if let ClientEvent::StreamData { stream, .. } = ev {
                    let i = self.streams.iter().position(|s| *s == stream).unwrap();
                    if let Some(h) = &mut self.held[i] {
                        *h += 1;
                    }
                }
            }
        }
    }

    fn consume(&mut self, i: usize, k: usize) {
        let n = self.held[i].map_or(0, |h| h.min(k));
        for _ in 0..n {
            self.client.stream_consumed(self.streams[i], Instant::now()).unwrap();
        }
        if let Some(h) = &mut self.held[i] {
            *h -= n;
        }
    }

    fn apply(&mut self, op: &Op) {
        match *op {
            Op::Send(i, cells) => {
                let data = vec![7u8; cells * BACKWARD_DATA_CAPACITY];
                if let Ok(n) = self.table.send_stream_data(CIRC, self.streams[i], &data, Instant::now()) {
                    self.sent += (n / BACKWARD_DATA_CAPACITY) as u32;
                }
            }
            Op::Deliver(k) => self.deliver(k),
            Op::Consume(i, k) => self.consume(i, k),
            Op::ClientEnd(i) => {
                self.client.end_stream(self.streams[i], EndReason::Done).unwrap();
                self.held[i] = None;
            }
            Op::ExitEnd(i) => self.table.end_stream(CIRC, self.streams[i], EndReason::Done).unwrap(),
            Op::Back => self.back(),
        }
    }

    /// Deliver everything, let the application read everything it holds.
    fn settle(&mut self) {
        for _ in 0..8 {
            self.deliver(usize::MAX);
            for i in 0..STREAMS {
                self.consume(i, usize::MAX);
            }
            self.back();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn every_data_cell_returns_its_circuit_credit_exactly_once(ops in proptest::collection::vec(op(), 1..40)) {
        let mut w = World::new();
        for op in &ops {
            w.apply(op);
        }
        w.settle();
        prop_assert!(w.client.is_open(), "the circuit survived");
        let expected = CIRCUIT_WINDOW_START - w.sent % CIRCUIT_WINDOW_INCREMENT;
        prop_assert_eq!(w.table.circuit_send_window(CIRC), Some(expected), "sent {} cells", w.sent);
    }
}

#[test]
fn a_stream_ended_with_queued_data_releases_its_credit_at_once() {
    let mut w = World::new();
    // 1000 cells (a full stream window) reach the client; the application
    // reads none and goes away.
    w.apply(&Op::Send(0, 1000));
    w.deliver(usize::MAX);
    assert_eq!(w.held[0], Some(1000));
    assert_eq!(w.table.circuit_send_window(CIRC), Some(CIRCUIT_WINDOW_START - 1000));
    w.apply(&Op::ClientEnd(0));
    w.back();
    assert_eq!(w.table.circuit_send_window(CIRC), Some(CIRCUIT_WINDOW_START), "all credit came back");
    // Late consumption reports for the dead stream are not counted twice.
    for _ in 0..200 {
        w.client.stream_consumed(w.streams[0], Instant::now()).unwrap();
    }
    w.back();
    assert_eq!(w.table.circuit_send_window(CIRC), Some(CIRCUIT_WINDOW_START));
}
