//! Behaviour tests of the circuit handshake (spec §4), the Noise link
//! wrapper (spec §3) and context-bound signatures (spec §2.2).
//!
//! The circuit handshake must agree on keys, refuse onionskins addressed to
//! another relay or onion key, refuse any tampered reply and any small-order
//! (non-contributory) ephemeral key. The Noise wrapper must authenticate the
//! responder in `XK`, reveal it in `XX`, and refuse tampered transport
//! messages. Signatures must be bound to their context, key and bytes.

use lamina_crypto::handshake::{self, HopKeys, ONIONSKIN_LEN, REPLY_LEN};
use lamina_crypto::keys::{IdentityKeypair, RelayId, StaticKeypair};
use lamina_crypto::noise::{LinkPattern, NoiseHandshake, NoiseTransport, NOISE_TAG_LEN};
use lamina_crypto::{kdf, sign, CryptoError};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// A relay's handshake-relevant keys.
struct Relay {
    /// Identity key pair; its public half is the relay id.
    identity: IdentityKeypair,
    /// Onion key pair.
    onion: StaticKeypair,
}

impl Relay {
    /// A relay with keys drawn from `rng`.
    fn generate(rng: &mut ChaCha20Rng) -> Self {
        Self { identity: IdentityKeypair::generate(rng), onion: StaticKeypair::generate(rng) }
    }

    /// The relay id.
    fn id(&self) -> RelayId {
        self.identity.relay_id()
    }

    /// Answer an onionskin.
    fn respond(
        &self,
        rng: &mut ChaCha20Rng,
        onionskin: &[u8; ONIONSKIN_LEN],
    ) -> Result<([u8; REPLY_LEN], HopKeys), CryptoError> {
        handshake::relay_respond(rng, &self.id(), &self.onion, onionskin)
    }
}

/// Both sides' keys of one successful handshake with RNGs seeded `seed`.
fn run_handshake(relay: &Relay, seed: u64) -> (HopKeys, HopKeys) {
    let mut client_rng = ChaCha20Rng::seed_from_u64(seed);
    let mut relay_rng = ChaCha20Rng::seed_from_u64(seed ^ u64::MAX);
    let (pending, onionskin) = handshake::client_start(&mut client_rng, &relay.id(), &relay.onion.onion_public());
    assert_eq!(pending.relay_id(), &relay.id());
    let (reply, relay_keys) = relay.respond(&mut relay_rng, &onionskin).expect("the addressed relay answers");
    let client_keys = pending.finish(&reply).expect("an untouched reply finishes");
    (client_keys, relay_keys)
}

// ---------------------------------------------------------------------------
// Circuit handshake
// ---------------------------------------------------------------------------

/// Client and relay derive the same forward and backward keys, and the two
/// directions' keys differ.
#[test]
fn handshake_agrees_on_keys() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let relay = Relay::generate(&mut rng);
    for seed in 0..8 {
        let (client, relay_side) = run_handshake(&relay, seed);
        assert_eq!(*client.forward, *relay_side.forward);
        assert_eq!(*client.backward, *relay_side.backward);
        assert_ne!(*client.forward, *client.backward);
        assert_ne!(*client.forward, [0u8; 32]);
    }
}

/// The onionskin is `ID | B | X`: it names the relay and its onion key.
#[test]
fn onionskin_layout() {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let relay = Relay::generate(&mut rng);
    let (_, onionskin) = handshake::client_start(&mut rng, &relay.id(), &relay.onion.onion_public());
    assert_eq!(&onionskin[..32], relay.id().as_bytes());
    assert_eq!(&onionskin[32..64], &relay.onion.public_bytes());
    assert_ne!(&onionskin[64..], &[0u8; 32]);
}

/// Different client randomness gives different onionskins and keys; the
/// same randomness gives the same ones (the functions are pure).
#[test]
fn keys_differ_across_seeds() {
    let mut rng = ChaCha20Rng::seed_from_u64(3);
    let relay = Relay::generate(&mut rng);
    let (a, _) = run_handshake(&relay, 100);
    let (b, _) = run_handshake(&relay, 101);
    let (a_again, _) = run_handshake(&relay, 100);
    assert_ne!(*a.forward, *b.forward);
    assert_ne!(*a.backward, *b.backward);
    assert_eq!(*a.forward, *a_again.forward);
    assert_eq!(*a.backward, *a_again.backward);
}

/// A relay with another onion key or another identity refuses the
/// onionskin with `UnknownKey`.
#[test]
fn wrong_relay_keys_are_unknown() {
    let mut rng = ChaCha20Rng::seed_from_u64(4);
    let relay = Relay::generate(&mut rng);
    let (_, onionskin) = handshake::client_start(&mut rng, &relay.id(), &relay.onion.onion_public());

    // Same identity, rotated onion key.
    let rotated = StaticKeypair::generate(&mut rng);
    assert!(matches!(
        handshake::relay_respond(&mut rng, &relay.id(), &rotated, &onionskin),
        Err(CryptoError::UnknownKey)
    ));
    // Another identity, same onion key.
    let other = IdentityKeypair::generate(&mut rng);
    assert!(matches!(
        handshake::relay_respond(&mut rng, &other.relay_id(), &relay.onion, &onionskin),
        Err(CryptoError::UnknownKey)
    ));
    // The right relay accepts it.
    assert!(relay.respond(&mut rng, &onionskin).is_ok());
}

/// A client addressing the wrong onion key gets `UnknownKey` from the
/// relay, and cannot be answered by a relay that lacks its key.
#[test]
fn client_with_stale_onion_key_is_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let relay = Relay::generate(&mut rng);
    let stale = StaticKeypair::generate(&mut rng);
    let (_, onionskin) = handshake::client_start(&mut rng, &relay.id(), &stale.onion_public());
    assert!(matches!(relay.respond(&mut rng, &onionskin), Err(CryptoError::UnknownKey)));
}

/// Any single bit flipped in the reply (`Y` or `AUTH`) makes `finish` fail
/// with `AuthenticationFailed` (or `NonContributory` should the flip land
/// on a small-order `Y`).
#[test]
fn tampered_reply_fails() {
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let relay = Relay::generate(&mut rng);
    let mut relay_rng = ChaCha20Rng::seed_from_u64(60);
    for bit in 0..REPLY_LEN * 8 {
        let mut client_rng = ChaCha20Rng::seed_from_u64(600 + bit as u64);
        let (pending, onionskin) = handshake::client_start(&mut client_rng, &relay.id(), &relay.onion.onion_public());
        let (mut reply, _) = relay.respond(&mut relay_rng, &onionskin).unwrap();
        reply[bit / 8] ^= 1 << (bit % 8);
        let err = pending.finish(&reply).unwrap_err();
        assert!(matches!(err, CryptoError::AuthenticationFailed | CryptoError::NonContributory), "bit {bit}: {err:?}");
    }
}

/// A reply meant for another client's handshake does not finish ours.
#[test]
fn reply_to_another_handshake_fails() {
    let mut rng = ChaCha20Rng::seed_from_u64(7);
    let relay = Relay::generate(&mut rng);
    let (ours, _) = handshake::client_start(&mut rng, &relay.id(), &relay.onion.onion_public());
    let (_, theirs) = handshake::client_start(&mut rng, &relay.id(), &relay.onion.onion_public());
    let (reply, _) = relay.respond(&mut rng, &theirs).unwrap();
    assert!(matches!(ours.finish(&reply), Err(CryptoError::AuthenticationFailed)));
}

/// The points of small order on Curve25519 (and their non-canonical
/// encodings): X25519 with any clamped scalar gives all zeros.
const SMALL_ORDER: [&str; 7] = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
];

/// A small-order `X` in the onionskin is refused with `NonContributory`.
#[test]
fn small_order_client_key_is_non_contributory() {
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let relay = Relay::generate(&mut rng);
    for point in SMALL_ORDER {
        let mut onionskin = [0u8; ONIONSKIN_LEN];
        onionskin[..32].copy_from_slice(relay.id().as_bytes());
        onionskin[32..64].copy_from_slice(&relay.onion.public_bytes());
        onionskin[64..].copy_from_slice(&hex::decode(point).unwrap());
        assert!(matches!(relay.respond(&mut rng, &onionskin), Err(CryptoError::NonContributory)), "X = {point}");
    }
}

/// A small-order `Y` in the reply is refused with `NonContributory`.
#[test]
fn small_order_relay_key_is_non_contributory() {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let relay = Relay::generate(&mut rng);
    for point in SMALL_ORDER {
        let (pending, onionskin) = handshake::client_start(&mut rng, &relay.id(), &relay.onion.onion_public());
        let (mut reply, _) = relay.respond(&mut rng, &onionskin).unwrap();
        reply[..32].copy_from_slice(&hex::decode(point).unwrap());
        assert!(matches!(pending.finish(&reply), Err(CryptoError::NonContributory)), "Y = {point}");
    }
}

/// Secrets never appear in `Debug` output.
#[test]
fn debug_prints_no_secrets() {
    let identity = IdentityKeypair::from_secret_bytes(&[0x42; 32]);
    let onion = StaticKeypair::from_secret_bytes(&[0x43; 32]);
    let text = format!("{identity:?} {onion:?}");
    assert!(!text.contains("4242") && !text.contains("4343") && !text.contains("66, 66"), "{text}");
    let (pending, _) =
        handshake::client_start(&mut ChaCha20Rng::seed_from_u64(10), &identity.relay_id(), &onion.onion_public());
    assert!(!format!("{pending:?}").contains("x:"));
}

// ---------------------------------------------------------------------------
// Noise links
// ---------------------------------------------------------------------------

/// Drive a three-message handshake; `payloads` go in messages 1, 2, 3.
/// Returns the finished states and what each side read.
fn noise_handshake(
    mut initiator: NoiseHandshake,
    mut responder: NoiseHandshake,
    payloads: [&[u8]; 3],
) -> (NoiseHandshake, NoiseHandshake, [Vec<u8>; 3]) {
    let mut msg = vec![0u8; 1024];
    let mut read = [Vec::new(), Vec::new(), Vec::new()];
    for (i, payload) in payloads.iter().enumerate() {
        let (writer, reader) =
            if i % 2 == 0 { (&mut initiator, &mut responder) } else { (&mut responder, &mut initiator) };
        let len = writer.write_message(payload, &mut msg).expect("handshake message is written");
        let mut out = vec![0u8; 1024];
        let got = reader.read_message(&msg[..len], &mut out).expect("handshake message is read");
        out.truncate(got);
        read[i] = out;
    }
    assert!(initiator.is_finished() && responder.is_finished());
    (initiator, responder, read)
}

/// Send `plain` from `a` to `b` and check it arrives intact.
fn transport_roundtrip(a: &mut NoiseTransport, b: &mut NoiseTransport, plain: &[u8]) {
    let mut ct = vec![0u8; plain.len() + NOISE_TAG_LEN];
    let len = a.encrypt(plain, &mut ct).expect("transport encrypts");
    assert_eq!(len, plain.len() + NOISE_TAG_LEN);
    let mut out = vec![0u8; plain.len()];
    let got = b.decrypt(&ct[..len], &mut out).expect("transport decrypts");
    assert_eq!(&out[..got], plain);
}

/// A full `XK` handshake: the payload of message 3 arrives, both sides know
/// each other's static key, and the transport works both ways.
#[test]
fn noise_xk_handshake_and_transport() {
    let mut rng = ChaCha20Rng::seed_from_u64(20);
    let client_static = StaticKeypair::generate(&mut rng);
    let relay_static = StaticKeypair::generate(&mut rng);
    let initiator =
        NoiseHandshake::initiator(&mut rng, LinkPattern::Xk, &client_static, Some(&relay_static.link_public()))
            .unwrap();
    let responder = NoiseHandshake::responder(&mut rng, LinkPattern::Xk, &relay_static).unwrap();
    let (initiator, responder, read) = noise_handshake(initiator, responder, [b"", b"", b"hello, relay"]);
    assert_eq!(read[2], b"hello, relay");
    assert_eq!(initiator.remote_static(), Some(relay_static.link_public()));
    assert_eq!(responder.remote_static(), Some(client_static.link_public()));
    assert_eq!(initiator.handshake_hash(), responder.handshake_hash());

    let mut a = initiator.into_transport().unwrap();
    let mut b = responder.into_transport().unwrap();
    for i in 0..4u8 {
        transport_roundtrip(&mut a, &mut b, &[i; 512]);
        transport_roundtrip(&mut b, &mut a, &[i ^ 0xff; 100]);
    }
}

/// An `XK` initiator that expects the wrong responder key fails at the
/// responder's read of message 1.
#[test]
fn noise_xk_wrong_responder_key_fails_at_message_1() {
    let mut rng = ChaCha20Rng::seed_from_u64(21);
    let client_static = StaticKeypair::generate(&mut rng);
    let relay_static = StaticKeypair::generate(&mut rng);
    let impostor = StaticKeypair::generate(&mut rng);
    let mut initiator =
        NoiseHandshake::initiator(&mut rng, LinkPattern::Xk, &client_static, Some(&impostor.link_public())).unwrap();
    let mut responder = NoiseHandshake::responder(&mut rng, LinkPattern::Xk, &relay_static).unwrap();
    let mut msg = [0u8; 256];
    let len = initiator.write_message(b"", &mut msg).unwrap();
    let mut out = [0u8; 256];
    assert_eq!(responder.read_message(&msg[..len], &mut out), Err(CryptoError::AuthenticationFailed));
}

/// `XK` needs the responder's key.
#[test]
fn noise_xk_without_remote_key_is_refused() {
    let mut rng = ChaCha20Rng::seed_from_u64(22);
    let local = StaticKeypair::generate(&mut rng);
    assert!(matches!(
        NoiseHandshake::initiator(&mut rng, LinkPattern::Xk, &local, None),
        Err(CryptoError::NoiseState(_))
    ));
}

/// A full `XX` handshake reveals the responder's static key to the
/// initiator after message 2, and the initiator's to the responder after
/// message 3.
#[test]
fn noise_xx_reveals_responder_static() {
    let mut rng = ChaCha20Rng::seed_from_u64(23);
    let client_static = StaticKeypair::generate(&mut rng);
    let relay_static = StaticKeypair::generate(&mut rng);
    let mut initiator = NoiseHandshake::initiator(&mut rng, LinkPattern::Xx, &client_static, None).unwrap();
    let mut responder = NoiseHandshake::responder(&mut rng, LinkPattern::Xx, &relay_static).unwrap();
    assert_eq!(initiator.remote_static(), None);

    let mut msg = [0u8; 512];
    let mut out = [0u8; 512];
    let len = initiator.write_message(b"", &mut msg).unwrap();
    responder.read_message(&msg[..len], &mut out).unwrap();
    let len = responder.write_message(b"link cert", &mut msg).unwrap();
    let got = initiator.read_message(&msg[..len], &mut out).unwrap();
    assert_eq!(&out[..got], b"link cert");
    assert_eq!(initiator.remote_static(), Some(relay_static.link_public()));
    assert!(!initiator.is_finished());
    let len = initiator.write_message(b"", &mut msg).unwrap();
    responder.read_message(&msg[..len], &mut out).unwrap();
    assert_eq!(responder.remote_static(), Some(client_static.link_public()));

    let mut a = initiator.into_transport().unwrap();
    let mut b = responder.into_transport().unwrap();
    transport_roundtrip(&mut a, &mut b, b"cells");
    transport_roundtrip(&mut b, &mut a, b"more cells");
}

/// A handshake cannot become a transport before it has finished.
#[test]
fn noise_unfinished_handshake_has_no_transport() {
    let mut rng = ChaCha20Rng::seed_from_u64(24);
    let local = StaticKeypair::generate(&mut rng);
    let initiator = NoiseHandshake::initiator(&mut rng, LinkPattern::Xx, &local, None).unwrap();
    assert!(matches!(initiator.into_transport(), Err(CryptoError::NoiseState(_))));
}

/// Builds a finished `XK` transport pair.
fn xk_pair(seed: u64) -> (NoiseTransport, NoiseTransport) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let client_static = StaticKeypair::generate(&mut rng);
    let relay_static = StaticKeypair::generate(&mut rng);
    let initiator =
        NoiseHandshake::initiator(&mut rng, LinkPattern::Xk, &client_static, Some(&relay_static.link_public()))
            .expect("XK initiator with a remote key builds");
    let responder = NoiseHandshake::responder(&mut rng, LinkPattern::Xk, &relay_static).expect("XK responder builds");
    let (initiator, responder, _) = noise_handshake(initiator, responder, [b"", b"", b""]);
    (initiator.into_transport().expect("finished handshake"), responder.into_transport().expect("finished handshake"))
}

/// A bit flipped in any byte of a transport message (ciphertext or tag)
/// makes it fail to decrypt.
#[test]
fn noise_tampered_transport_fails() {
    let (mut a, _) = xk_pair(25);
    let plain = [0x77u8; 64];
    let mut ct = [0u8; 64 + NOISE_TAG_LEN];
    let len = a.encrypt(&plain, &mut ct).unwrap();
    for byte in 0..len {
        let bit = byte * 8 + byte % 8;
        // A fresh receiver each time: a failed decrypt may not be retried.
        let (_, mut b) = xk_pair(25);
        let mut tampered = ct;
        tampered[bit / 8] ^= 1 << (bit % 8);
        let mut out = [0u8; 64];
        assert_eq!(b.decrypt(&tampered[..len], &mut out), Err(CryptoError::AuthenticationFailed), "bit {bit}");
    }
}

/// A replayed or reordered transport message fails to decrypt.
#[test]
fn noise_replayed_transport_fails() {
    let (mut a, mut b) = xk_pair(26);
    let mut first = [0u8; 8 + NOISE_TAG_LEN];
    let mut second = [0u8; 8 + NOISE_TAG_LEN];
    a.encrypt(b"message1", &mut first).unwrap();
    a.encrypt(b"message2", &mut second).unwrap();
    let mut out = [0u8; 8];
    b.decrypt(&first, &mut out).unwrap();
    assert_eq!(b.decrypt(&first, &mut out), Err(CryptoError::AuthenticationFailed));

    let (mut a, mut b) = xk_pair(27);
    a.encrypt(b"message1", &mut first).unwrap();
    a.encrypt(b"message2", &mut second).unwrap();
    assert_eq!(b.decrypt(&second, &mut out), Err(CryptoError::AuthenticationFailed));
}

// ---------------------------------------------------------------------------
// Signatures with context
// ---------------------------------------------------------------------------

/// A context-bound signature verifies only under its context, its key and
/// its exact bytes; everything else is `BadSignature`.
#[test]
fn signatures_are_bound_to_context_key_and_bytes() {
    let mut rng = ChaCha20Rng::seed_from_u64(30);
    let identity = IdentityKeypair::generate(&mut rng);
    let other = IdentityKeypair::generate(&mut rng);
    let ctx = kdf::LINK_CERT_CONTEXT;
    let body = b"link key certificate body";
    let sig = sign::sign_with_context(&identity, ctx, body);

    assert_eq!(sign::verify_with_context(&identity.relay_id(), ctx, body, &sig), Ok(()));
    // Wrong context.
    assert_eq!(
        sign::verify_with_context(&identity.relay_id(), b"lamina-descriptor-v1", body, &sig),
        Err(CryptoError::BadSignature)
    );
    // Wrong key.
    assert_eq!(sign::verify_with_context(&other.relay_id(), ctx, body, &sig), Err(CryptoError::BadSignature));
    // A flipped bit in every byte of the body and of the signature (one
    // bit per byte, its position moving with the byte index, to keep the
    // debug-build run short).
    for i in 0..body.len() {
        let bit = i * 8 + i % 8;
        let mut b = *body;
        b[i] ^= 1 << (bit % 8);
        assert_eq!(
            sign::verify_with_context(&identity.relay_id(), ctx, &b, &sig),
            Err(CryptoError::BadSignature),
            "body bit {bit}"
        );
    }
    for i in 0..sig.0.len() {
        let bit = i * 8 + (i * 3) % 8;
        let mut s = sig;
        s.0[i] ^= 1 << (bit % 8);
        assert_eq!(
            sign::verify_with_context(&identity.relay_id(), ctx, body, &s),
            Err(CryptoError::BadSignature),
            "signature bit {bit}"
        );
    }
}

/// A relay id that is not a curve point is a malformed key, not a bad
/// signature; a small-order key is refused by the strict check.
#[test]
fn malformed_and_weak_keys() {
    let identity = IdentityKeypair::from_secret_bytes(&[7; 32]);
    let sig = sign::sign_with_context(&identity, b"ctx", b"body");
    // The identity point (y = 1) has small order: verify_strict refuses it.
    let mut weak = [0u8; 32];
    weak[0] = 1;
    assert_eq!(sign::verify_with_context(&RelayId(weak), b"ctx", b"body", &sig), Err(CryptoError::BadSignature));
    // y = 2 is not the y-coordinate of any Ed25519 point.
    let mut not_a_point = [0u8; 32];
    not_a_point[0] = 2;
    assert_eq!(sign::verify_with_context(&RelayId(not_a_point), b"ctx", b"body", &sig), Err(CryptoError::MalformedKey));
}
