//! Fuzz target: the relay side of the circuit handshake (spec §4) and the
//! CREATE path of a relay's circuit table (spec §2.4, §6) must never panic.
//!
//! - `relay_respond` with fixed relay keys (from a seeded `ChaCha20Rng`)
//!   on 96 arbitrary bytes. With `keep_prefix` the onionskin keeps the
//!   relay's own `ID | B` and only `X` comes from the input, so the fuzzer
//!   reaches the Diffie-Hellman and small-order checks. It may succeed only
//!   when `ID | B` name this relay.
//! - `RelayCircuitTable::handle_cell` with a CREATE cell whose payload is
//!   raw input, a well-formed CREATE carrying the onionskin, or one with
//!   input bytes XORed over it. Whatever happens, the table holds a circuit
//!   exactly when it answered CREATED, and it answered DESTROY otherwise.

#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use lamina_crypto::handshake::{relay_respond, ONIONSKIN_LEN};
use lamina_crypto::keys::{IdentityKeypair, RelayId, StaticKeypair, KEY_LEN};
use lamina_proto::cell::{Cell, CellCommand, CircId, DestroyReason, PAYLOAD_LEN};
use lamina_proto::circuit::relay::{HopKeysRef, LinkId, RelayAction, RelayCircuitTable, TableLimits};
use libfuzzer_sys::fuzz_target;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// The relay's fixed keys.
struct Keys {
    /// Identity.
    identity: IdentityKeypair,
    /// Onion key.
    onion: StaticKeypair,
}

/// Keys generated once from a seeded RNG.
fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let mut rng = ChaCha20Rng::from_seed([0x0c; 32]);
        Keys { identity: IdentityKeypair::generate(&mut rng), onion: StaticKeypair::generate(&mut rng) }
    })
}

/// One fuzz case.
#[derive(Arbitrary, Debug)]
struct Input {
    /// Keep the relay's `ID | B` prefix; only `X` is arbitrary.
    keep_prefix: bool,
    /// The onionskin.
    skin: [u8; ONIONSKIN_LEN],
    /// Circuit id of the CREATE cell.
    circ: u32,
    /// Whether the relay opened the link (decides the id parity it accepts).
    we_initiated: bool,
    /// 0: raw payload; 1: well-formed CREATE; 2: well-formed, then `payload` XORed over it.
    mode: u8,
    /// Payload bytes (raw or XOR mask).
    payload: Vec<u8>,
    /// Deliver the same CREATE twice.
    twice: bool,
}

fuzz_target!(|input: Input| {
    let keys = keys();
    let relay_id = keys.identity.relay_id();
    let mut skin = input.skin;
    if input.keep_prefix {
        skin[..KEY_LEN].copy_from_slice(relay_id.as_bytes());
        skin[KEY_LEN..2 * KEY_LEN].copy_from_slice(&keys.onion.public_bytes());
    }
    let names_us =
        skin[..KEY_LEN] == relay_id.as_bytes()[..] && skin[KEY_LEN..2 * KEY_LEN] == keys.onion.public_bytes()[..];

    // The bare handshake.
    let mut rng = ChaCha20Rng::from_seed([0x99; 32]);
    let answer = relay_respond(&mut rng, &relay_id, &keys.onion, &skin);
    assert!(answer.is_ok() <= names_us, "answered an onionskin addressed to someone else");

    // The CREATE path of a table.
    let cell = create_cell(&input, &skin);
    let mut table = RelayCircuitTable::new(LinkId(7), input.we_initiated, false, TableLimits::default());
    let hop_keys = HopKeysRef { relay_id: &relay_id, onion_key: &keys.onion };
    let mut rng = ChaCha20Rng::from_seed([0x99; 32]);
    let result = table.handle_cell(&mut rng, &hop_keys, cell.clone(), std::time::Instant::now());
    check_after_create(&mut table, &cell, result.is_ok(), &relay_id);

    if input.twice && result.is_ok() {
        // A second CREATE on a live circuit is a protocol violation that
        // ends this circuit.
        assert!(table.handle_cell(&mut rng, &hop_keys, cell.clone(), std::time::Instant::now()).is_err());
        assert_eq!(table.circuit_count(), 0);
        let destroy = table.poll_transmit().expect("DESTROY after a duplicate CREATE");
        assert_eq!((destroy.circ, destroy.command), (cell.circ, CellCommand::Destroy));
        assert_eq!(destroy.destroy_reason(), DestroyReason::Protocol);
        assert!(matches!(table.poll_action(), Some(RelayAction::CircuitClosed { next: None, .. })));
    }
    while table.poll_transmit().is_some() {}
    while table.poll_action().is_some() {}
});

/// Build the CREATE cell of this case.
fn create_cell(input: &Input, skin: &[u8; ONIONSKIN_LEN]) -> Cell {
    let circ = CircId(input.circ);
    match input.mode % 3 {
        0 => {
            let mut cell = Cell::new(circ, CellCommand::Create);
            let n = input.payload.len().min(PAYLOAD_LEN);
            cell.payload[..n].copy_from_slice(&input.payload[..n]);
            cell
        }
        1 => Cell::create(circ, skin),
        _ => {
            let mut cell = Cell::create(circ, skin);
            for (b, x) in cell.payload.iter_mut().zip(&input.payload) {
                *b ^= x;
            }
            cell
        }
    }
}

/// After one CREATE: a circuit exists exactly when CREATED was sent.
fn check_after_create(table: &mut RelayCircuitTable, cell: &Cell, accepted: bool, relay_id: &RelayId) {
    let reply = table.poll_transmit();
    if cell.circ == CircId::LINK {
        assert!(!accepted, "CREATE on circuit 0 is refused");
        assert!(reply.is_none(), "nothing is sent for circuit 0");
        assert_eq!(table.circuit_count(), 0);
        return;
    }
    let reply = reply.expect("a CREATE is always answered");
    assert_eq!(reply.circ, cell.circ);
    if accepted {
        assert_eq!(table.circuit_count(), 1);
        assert_eq!(reply.command, CellCommand::Created);
        assert!(reply.created_reply().is_ok(), "CREATED is well formed");
        let skin = cell.create_onionskin().expect("an accepted CREATE was well formed");
        assert_eq!(&skin[..KEY_LEN], relay_id.as_bytes(), "accepted only for this relay");
    } else {
        assert_eq!(table.circuit_count(), 0);
        assert_eq!(reply.command, CellCommand::Destroy);
        assert!(matches!(reply.destroy_reason(), DestroyReason::Protocol));
    }
    assert!(table.poll_transmit().is_none(), "one answer per CREATE");
}
