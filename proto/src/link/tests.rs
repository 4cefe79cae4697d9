//! Link handshake and transport tests: both sides in memory.

use lamina_crypto::keys::{IdentityKeypair, StaticKeypair};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::*;
use crate::cell::{CellCommand, CircId};

struct RelayKeys {
    identity: IdentityKeypair,
    link: StaticKeypair,
}

impl RelayKeys {
    fn new(rng: &mut ChaCha20Rng) -> Self {
        Self { identity: IdentityKeypair::generate(rng), link: StaticKeypair::generate(rng) }
    }
    fn cert(&self) -> LinkCert {
        LinkCert::new(&self.identity, &self.link.link_public())
    }
    fn expectation(&self) -> PeerExpectation {
        PeerExpectation::Known { relay_id: self.identity.relay_id(), link_key: self.link.link_public() }
    }
}

/// Shuttle bytes until both sides finish or one fails.
fn run(rng: &mut ChaCha20Rng, a: &mut LinkHandshake, b: &mut LinkHandshake) -> Result<(), (bool, LinkError)> {
    let (mut to_b, mut to_a) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        if let Some(bytes) = a.poll_transmit() {
            to_b.extend(bytes);
        }
        let used = b.handle_input(rng, &to_b).map_err(|e| (false, e))?;
        to_b.drain(..used);
        if let Some(bytes) = b.poll_transmit() {
            to_a.extend(bytes);
        }
        let used = a.handle_input(rng, &to_a).map_err(|e| (true, e))?;
        to_a.drain(..used);
        if a.is_finished() && b.is_finished() {
            return Ok(());
        }
    }
    panic!("handshake did not finish");
}

#[test]
fn relay_to_relay_xk_authenticates_both_sides() {
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let (r1, r2) = (RelayKeys::new(&mut rng), RelayKeys::new(&mut rng));
    let local = LocalAuth::Relay { link_key: &r1.link, cert: r1.cert() };
    let mut init = LinkHandshake::initiator(&mut rng, &local, r2.expectation()).unwrap();
    let mut resp = LinkHandshake::responder(&r2.link, r2.cert());
    run(&mut rng, &mut init, &mut resp).unwrap();
    let (mut tx_a, mut rx_a, peer_a) = init.into_transport().unwrap();
    let (mut tx_b, mut rx_b, peer_b) = resp.into_transport().unwrap();
    assert_eq!(peer_a, PeerIdentity::Relay(r2.identity.relay_id()));
    assert_eq!(peer_b, PeerIdentity::Relay(r1.identity.relay_id()));

    // Transport both ways with batching.
    let cells: Vec<Cell> = (0..100u32).map(|i| Cell::new(CircId(i), CellCommand::Padding)).collect();
    let mut wire = Vec::new();
    tx_a.seal_cells(&cells, &mut wire).unwrap();
    let mut got = Vec::new();
    let mut pos = 0;
    while let Some(used) = rx_b.open_frame(&wire[pos..], &mut got).unwrap() {
        pos += used;
    }
    assert_eq!(pos, wire.len());
    assert_eq!(got, cells);
    let mut back = Vec::new();
    tx_b.seal_cells(&cells[..1], &mut back).unwrap();
    let mut got = Vec::new();
    assert!(rx_a.open_frame(&back, &mut got).unwrap().is_some());
    assert_eq!(got.len(), 1);
}

#[test]
fn client_stays_anonymous_and_seed_is_learned_with_xx() {
    let mut rng = ChaCha20Rng::from_seed([2; 32]);
    let relay = RelayKeys::new(&mut rng);
    let mut init = LinkHandshake::initiator(&mut rng, &LocalAuth::Anonymous, PeerExpectation::Unknown).unwrap();
    let mut resp = LinkHandshake::responder(&relay.link, relay.cert());
    run(&mut rng, &mut init, &mut resp).unwrap();
    let (_, _, peer_a) = init.into_transport().unwrap();
    let (_, _, peer_b) = resp.into_transport().unwrap();
    assert_eq!(peer_a, PeerIdentity::Relay(relay.identity.relay_id()));
    assert_eq!(peer_b, PeerIdentity::Anonymous);
}

#[test]
fn wrong_responder_key_fails_the_handshake() {
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let (relay, impostor) = (RelayKeys::new(&mut rng), RelayKeys::new(&mut rng));
    let mut init = LinkHandshake::initiator(&mut rng, &LocalAuth::Anonymous, relay.expectation()).unwrap();
    let mut resp = LinkHandshake::responder(&impostor.link, impostor.cert());
    let err = run(&mut rng, &mut init, &mut resp).unwrap_err();
    assert!(!err.0, "the responder detects it on message 1");
    assert!(matches!(err.1, LinkError::Crypto { context: "handshake message", .. }));
}

#[test]
fn forged_certificate_is_rejected() {
    let mut rng = ChaCha20Rng::from_seed([4; 32]);
    let (r1, r2, other) = (RelayKeys::new(&mut rng), RelayKeys::new(&mut rng), RelayKeys::new(&mut rng));
    // r1 claims other's identity with a certificate other never signed for r1's link key.
    let forged = LinkCert { relay_id: other.identity.relay_id(), signature: r1.cert().signature };
    let local = LocalAuth::Relay { link_key: &r1.link, cert: forged };
    let mut init = LinkHandshake::initiator(&mut rng, &local, r2.expectation()).unwrap();
    let mut resp = LinkHandshake::responder(&r2.link, r2.cert());
    let err = run(&mut rng, &mut init, &mut resp).unwrap_err();
    assert!(matches!(err.1, LinkError::Crypto { context: "link certificate", .. }));
}

#[test]
fn xk_responder_must_prove_the_expected_relay_id() {
    // Review H-1: an attacker holds some link key and is named as relay V's
    // key in an EXTEND. It can finish XK (it has the key) but its
    // certificate names its own identity, not V's: the initiator refuses.
    let mut rng = ChaCha20Rng::from_seed([9; 32]);
    let (r1, victim, attacker) = (RelayKeys::new(&mut rng), RelayKeys::new(&mut rng), RelayKeys::new(&mut rng));
    let local = LocalAuth::Relay { link_key: &r1.link, cert: r1.cert() };
    let claimed =
        PeerExpectation::Known { relay_id: victim.identity.relay_id(), link_key: attacker.link.link_public() };
    let mut init = LinkHandshake::initiator(&mut rng, &local, claimed).unwrap();
    let mut resp = LinkHandshake::responder(&attacker.link, attacker.cert());
    let err = run(&mut rng, &mut init, &mut resp).unwrap_err();
    assert!(err.0, "the initiator detects it on message 2");
    assert!(matches!(err.1, LinkError::UnexpectedPeer), "{:?}", err.1);

    // Nor can it copy V's certificate: it does not verify against its key.
    let mut init = LinkHandshake::initiator(&mut rng, &local, claimed).unwrap();
    let mut resp = LinkHandshake::responder(&attacker.link, victim.cert());
    let err = run(&mut rng, &mut init, &mut resp).unwrap_err();
    assert!(matches!(err.1, LinkError::Crypto { context: "link certificate", .. }), "{:?}", err.1);

    // The honest responder finishes, and both sides learn the proven link key.
    let mut init = LinkHandshake::initiator(&mut rng, &local, victim.expectation()).unwrap();
    let mut resp = LinkHandshake::responder(&victim.link, victim.cert());
    assert_eq!(init.peer_link_key(), None);
    run(&mut rng, &mut init, &mut resp).unwrap();
    assert_eq!(init.peer_link_key(), Some(victim.link.link_public()));
    assert_eq!(resp.peer_link_key(), Some(r1.link.link_public()));
}

#[test]
fn garbage_preamble_and_frames_are_rejected() {
    let mut rng = ChaCha20Rng::from_seed([5; 32]);
    let relay = RelayKeys::new(&mut rng);
    let mut resp = LinkHandshake::responder(&relay.link, relay.cert());
    assert_eq!(resp.handle_input(&mut rng, &[0x01]).unwrap(), 0, "one byte is not enough");
    assert!(matches!(resp.handle_input(&mut rng, &[0x09, 0x01]), Err(LinkError::Protocol(_))));
    let mut resp = LinkHandshake::responder(&relay.link, relay.cert());
    assert!(resp.handle_input(&mut rng, &[0x01, 0x01, 0x00, 0x05, 1, 2, 3, 4, 5]).is_err());
    let mut resp = LinkHandshake::responder(&relay.link, relay.cert());
    assert!(matches!(resp.handle_input(&mut rng, &[0x01, 0x01, 0x00, 0x00]), Err(LinkError::Protocol(_))));
}

#[test]
fn tampered_or_replayed_transport_frame_fails() {
    let mut rng = ChaCha20Rng::from_seed([6; 32]);
    let relay = RelayKeys::new(&mut rng);
    let mut init = LinkHandshake::initiator(&mut rng, &LocalAuth::Anonymous, relay.expectation()).unwrap();
    let mut resp = LinkHandshake::responder(&relay.link, relay.cert());
    run(&mut rng, &mut init, &mut resp).unwrap();
    let (mut tx, _, _) = init.into_transport().unwrap();
    let (_, mut rx, _) = resp.into_transport().unwrap();
    let mut wire = Vec::new();
    tx.seal_cells(&[Cell::new(CircId(1), CellCommand::Padding)], &mut wire).unwrap();
    let mut tampered = wire.clone();
    tampered[10] ^= 1;
    let mut cells = Vec::new();
    assert!(rx.open_frame(&tampered, &mut cells).is_err());
    // The failed frame did not advance the nonce: the genuine one still opens once.
    assert!(rx.open_frame(&wire, &mut cells).unwrap().is_some());
    assert!(rx.open_frame(&wire, &mut cells).is_err(), "replay fails");
}

#[test]
fn link_auth_decoding_is_strict() {
    assert_eq!(LinkAuth::decode(&[0; LINK_AUTH_LEN]).unwrap(), LinkAuth::Anonymous);
    let mut bytes = [0u8; LINK_AUTH_LEN];
    bytes[5] = 1;
    assert!(LinkAuth::decode(&bytes).is_err(), "anonymous with an id");
    let mut bytes = [0u8; LINK_AUTH_LEN];
    bytes[127] = 1;
    assert!(LinkAuth::decode(&bytes).is_err(), "non-zero padding");
    assert!(LinkAuth::decode(&[0; 10]).is_err());
}
