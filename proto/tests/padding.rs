//! Review L-2 (spec §7.1, §8.2): the padding of cells an exit originates is
//! unpredictable to the client, so the client cannot compute the receipt tag
//! of a cell it never read. The client here holds the hop's keys (as every
//! client does) and opens two CONNECTED cells the exit sent: their padding
//! is not zero, and differs from cell to cell — with zero padding the client
//! could have predicted both cells' plaintexts, and so their tags, in full.

// Test support: loud failure is what a test wants.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::time::Instant;

use lamina_crypto::handshake::client_start;
use lamina_crypto::keys::{IdentityKeypair, StaticKeypair};
use lamina_crypto::layer::{LayerStack, BODY_LEN, TAG_LEN};
use lamina_proto::cell::{Cell, CellCommand, CircId};
use lamina_proto::circuit::relay::{HopKeysRef, LinkId, RelayAction, RelayCircuitTable, TableLimits};
use lamina_proto::msg::{RelayCell, RelayMsg, StreamId, Target};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

#[test]
fn an_exits_padding_is_not_predictable_by_the_client() {
    let mut rng = ChaCha20Rng::seed_from_u64(0x1_2);
    let identity = IdentityKeypair::generate(&mut rng);
    let onion = StaticKeypair::generate(&mut rng);
    let relay_id = identity.relay_id();
    let keys = HopKeysRef { relay_id: &relay_id, onion_key: &onion };
    let mut table = RelayCircuitTable::new(LinkId(0), false, true, TableLimits::default());
    let now = Instant::now();

    // CREATE / CREATED: the client learns the hop keys.
    let circ = CircId(CircId::INITIATOR_BIT | 1);
    let (pending, skin) = client_start(&mut rng, &relay_id, &onion.onion_public());
    table.handle_cell(&mut rng, &keys, Cell::create(circ, &skin), now).unwrap();
    let created = table.poll_transmit().unwrap();
    assert_eq!(created.command, CellCommand::Created);
    let hop = pending.finish(&created.created_reply().unwrap()).unwrap();
    let mut layers = LayerStack::new();
    layers.push(&hop).unwrap();

    // Two BEGINs; the exit answers each with a short CONNECTED.
    let mut padding = Vec::new();
    for n in 1..=2u16 {
        let stream = StreamId(n);
        let mut body = [0u8; BODY_LEN];
        let begin = RelayMsg::Begin { target: Target::Ip("192.0.2.1".parse().unwrap()), port: 80 };
        RelayCell::new(stream, begin).encode_into(&mut body[TAG_LEN..]).unwrap();
        layers.wrap_forward(0, &mut body).unwrap();
        table.handle_cell(&mut rng, &keys, Cell::relay(circ, body), now).unwrap();
        while let Some(action) = table.poll_action() {
            if let RelayAction::Begin { .. } = action {
                table.stream_connected(circ, stream, None).unwrap();
            }
        }
        let reply = table.poll_transmit().unwrap();
        let mut body = reply.payload;
        layers.unwrap_backward(&mut body).unwrap();
        let region = &body[TAG_LEN..];
        let decoded = RelayCell::decode(region).unwrap();
        assert!(matches!(decoded.msg, RelayMsg::Connected(_)), "the exit answered CONNECTED");
        let start = RelayCell::padding_start(region);
        assert!(region.len() - start > 400, "a short message leaves most of the cell as padding");
        padding.push(region[start..].to_vec());
    }
    assert!(padding[0].iter().any(|b| *b != 0), "the padding is not zero");
    assert_ne!(padding[0], padding[1], "each cell gets fresh padding");
}
