//! Circuit limits a relay enforces by itself (spec §7.6): EXTEND only in
//! RELAY_EARLY, at most eight RELAY_EARLY cells per circuit, no extension to
//! the relay itself or to the previous hop, and DESTROY reasons that are
//! never passed on.

// Test code: a broken set-up should fail loudly; the harness reads the clock
// only to start build timers.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use lamina_crypto::keys::{IdentityKeypair, RelayId, StaticKeypair};
use lamina_proto::cell::{Cell, CellCommand, CircId, DestroyReason, MAX_RELAY_EARLY};
use lamina_proto::circuit::client::{ClientCircuit, HopSpec};
use lamina_proto::circuit::relay::{HopKeysRef, LinkId, RelayAction, RelayCircuitTable, Route, TableLimits};
use lamina_proto::msg::{RelayCell, RelayMsg, StreamId};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

struct Hop {
    identity: IdentityKeypair,
    onion: StaticKeypair,
    link_key: StaticKeypair,
}

impl Hop {
    fn new(rng: &mut ChaCha20Rng) -> Self {
        Self {
            identity: IdentityKeypair::generate(rng),
            onion: StaticKeypair::generate(rng),
            link_key: StaticKeypair::generate(rng),
        }
    }

    fn spec(&self) -> HopSpec {
        HopSpec {
            relay_id: self.identity.relay_id(),
            onion_key: self.onion.onion_public(),
            link_key: self.link_key.link_public(),
            addr: "127.9.0.1:9001".parse().unwrap(),
        }
    }
}

/// A relay's table for a client link and a client circuit whose first hop
/// it is; the CREATE/CREATED exchange is done.
struct World {
    rng: ChaCha20Rng,
    relay: Hop,
    table: RelayCircuitTable,
    client: ClientCircuit,
}

const CIRC: CircId = CircId(CircId::INITIATOR_BIT | 7);

impl World {
    fn new(rest: impl FnOnce(&Hop, &mut ChaCha20Rng) -> Vec<HopSpec>, peer: Option<RelayId>) -> Self {
        let mut rng = ChaCha20Rng::from_seed([9; 32]);
        let relay = Hop::new(&mut rng);
        let mut path = vec![relay.spec()];
        path.extend(rest(&relay, &mut rng));
        let mut table = RelayCircuitTable::new(LinkId(0), false, false, TableLimits::default());
        if let Some(p) = peer {
            table.set_peer(p);
        }
        let client = ClientCircuit::new(&mut rng, Instant::now(), CIRC, path, Duration::from_secs(10)).unwrap();
        let mut w = Self { rng, relay, table, client };
        w.client_to_relay(|_| {});
        w.relay_to_client();
        w
    }

    /// Deliver the client's cells to the table, after `edit`. Returns the
    /// last result.
    fn client_to_relay(&mut self, mut edit: impl FnMut(&mut Cell)) -> Vec<bool> {
        let mut results = Vec::new();
        while let Some(mut cell) = self.client.poll_transmit() {
            edit(&mut cell);
            let keys = HopKeysRef { relay_id: &self.relay.identity.relay_id(), onion_key: &self.relay.onion };
            results.push(self.table.handle_cell(&mut self.rng, &keys, cell, Instant::now()).is_ok());
        }
        results
    }

    fn relay_to_client(&mut self) {
        while let Some(cell) = self.table.poll_transmit() {
            let _ = self.client.handle_cell(&mut self.rng, cell, Instant::now());
        }
    }

    fn actions(&mut self) -> Vec<RelayAction> {
        std::iter::from_fn(|| self.table.poll_action()).collect()
    }

    fn destroyed(&mut self) -> bool {
        std::iter::from_fn(|| self.table.poll_transmit()).any(|c| c.command == CellCommand::Destroy)
    }
}

#[test]
fn extend_travels_in_relay_early_and_is_accepted() {
    let mut w = World::new(|_, rng| vec![Hop::new(rng).spec()], None);
    let mut commands = Vec::new();
    w.client_to_relay(|c| commands.push(c.command));
    assert_eq!(commands, vec![CellCommand::RelayEarly], "the client sends EXTEND as RELAY_EARLY");
    assert!(w.actions().iter().any(|a| matches!(a, RelayAction::Extend { .. })));
    assert!(!w.destroyed());
}

#[test]
fn extend_in_a_plain_relay_cell_is_refused() {
    let mut w = World::new(|_, rng| vec![Hop::new(rng).spec()], None);
    let ok = w.client_to_relay(|c| c.command = CellCommand::Relay);
    assert_eq!(ok, vec![false]);
    assert!(!w.actions().iter().any(|a| matches!(a, RelayAction::Extend { .. })));
    assert!(w.destroyed());
}

#[test]
fn extend_to_the_relay_itself_is_refused() {
    let mut w = World::new(|relay, _| vec![relay.spec()], None);
    assert_eq!(w.client_to_relay(|_| {}), vec![false]);
    assert!(!w.actions().iter().any(|a| matches!(a, RelayAction::Extend { .. })));
    assert!(w.destroyed());
}

#[test]
fn extend_to_the_previous_hop_is_refused() {
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let previous = Hop::new(&mut rng);
    let spec = previous.spec();
    let mut w = World::new(move |_, _| vec![spec], Some(previous.identity.relay_id()));
    assert_eq!(w.client_to_relay(|_| {}), vec![false]);
    assert!(!w.actions().iter().any(|a| matches!(a, RelayAction::Extend { .. })));
    assert!(w.destroyed());
}

#[test]
fn the_ninth_relay_early_cell_on_a_circuit_is_refused() {
    // A one-hop circuit: every further RELAY_EARLY would carry an EXTEND
    // for a hop beyond; the relay counts them without reading them.
    let mut w = World::new(|_, _| Vec::new(), None);
    assert!(w.client.is_open());
    let mut plain = vec![0u8; 64];
    RelayCell::new(StreamId::CIRCUIT, RelayMsg::Drop).encode_into(&mut plain).unwrap();
    for i in 0..=MAX_RELAY_EARLY {
        w.client.dangerously_send_raw(0, &plain).unwrap();
        let ok = w.client_to_relay(|c| c.command = CellCommand::RelayEarly);
        if i < MAX_RELAY_EARLY {
            assert_eq!(ok, vec![true], "RELAY_EARLY cell {} is allowed", i + 1);
            assert!(!w.destroyed());
        } else {
            assert_eq!(ok, vec![false], "the ninth is refused");
            assert!(w.destroyed());
        }
    }
}

#[test]
fn destroy_reasons_are_never_passed_on() {
    // Towards the next hop: the owner's reason is replaced.
    let mut out = RelayCircuitTable::new(LinkId(1), true, false, TableLimits::default());
    let back = Route { link: LinkId(0), circ: CIRC };
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let next = out.open_outbound(&mut rng, back, &[0u8; lamina_crypto::handshake::ONIONSKIN_LEN]).unwrap();
    assert_eq!(out.poll_transmit().unwrap().command, CellCommand::Create);
    out.close_outbound(next, DestroyReason::Protocol);
    let destroy = out.poll_transmit().unwrap();
    assert_eq!(destroy.command, CellCommand::Destroy);
    assert_eq!(destroy.destroy_reason(), DestroyReason::Destroyed);

    // From the client: a DESTROY(Protocol) closes the circuit with the
    // generic reason, which is what reaches the next hop.
    let mut w = World::new(|_, _| Vec::new(), None);
    w.actions();
    let keys = HopKeysRef { relay_id: &w.relay.identity.relay_id(), onion_key: &w.relay.onion };
    w.table.handle_cell(&mut w.rng, &keys, Cell::destroy(CIRC, DestroyReason::Protocol), Instant::now()).unwrap();
    let reasons: Vec<DestroyReason> = w
        .actions()
        .into_iter()
        .filter_map(|a| match a {
            RelayAction::CircuitClosed { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, vec![DestroyReason::Destroyed]);
}

#[test]
fn debug_output_names_no_payload_or_destination() {
    use lamina_proto::msg::Extend;
    let secret = b"secret payload".to_vec();
    let msgs = [
        RelayMsg::Data(secret.clone()),
        RelayMsg::Resolve("hidden.example".into()),
        RelayMsg::Begin { target: lamina_proto::msg::Target::Hostname("hidden.example".into()), port: 4711 },
        RelayMsg::Connected(Some("10.9.8.7".parse().unwrap())),
    ];
    for m in &msgs {
        let text = format!("{m:?}");
        for leak in ["secret", "hidden", "4711", "10.9.8.7"] {
            assert!(!text.contains(leak), "{text}");
        }
    }
    let mut rng = ChaCha20Rng::from_seed([6; 32]);
    let next = Hop::new(&mut rng).spec();
    let extend = Extend { relay_id: next.relay_id, link_key: next.link_key, addr: next.addr, onionskin: [0; 96] };
    assert!(!format!("{extend:?}").contains("127.9.0.1"));
    let action = RelayAction::StreamData { circ: CIRC, stream: StreamId(3), data: secret.clone() };
    assert!(!format!("{action:?}").contains("115, 101, 99"), "no bytes of the payload");
    let ev = lamina_proto::circuit::client::ClientEvent::StreamData { stream: StreamId(3), data: secret };
    assert!(!format!("{ev:?}").contains("115, 101, 99"));
    let ev = lamina_proto::circuit::client::ClientEvent::StreamConnected {
        stream: StreamId(3),
        addr: Some("10.9.8.7".parse().unwrap()),
    };
    assert!(!format!("{ev:?}").contains("10.9.8.7"));
}
