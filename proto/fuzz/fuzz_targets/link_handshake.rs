//! Fuzz target: the link layer (spec §3) must never panic on bytes from the
//! network, and must not care how TCP splits them.
//!
//! Modes (chosen by the `arbitrary` input):
//! - `Responder`: a relay's responder with fixed keys (from a seeded
//!   `ChaCha20Rng`) is fed arbitrary bytes in arbitrary chunk splits. A
//!   second responder gets the same bytes in one piece: both must reach the
//!   same verdict, consume the same bytes and send the same reply.
//! - `Initiator`: an initiator (XK or XX, anonymous or relay), after its
//!   first `poll_transmit`, is fed arbitrary bytes in arbitrary splits.
//! - `Honest`: a genuine initiator and responder, with optional bit flips
//!   in the handshake bytes and arbitrary splits; unmodified, both must
//!   finish, authenticate each other and carry arbitrary cells through the
//!   transport (cells with an unknown command must fail with a decode
//!   error, not panic). With `coalesce`, the initiator's first transport
//!   frames reach the responder in the same read as message 3, as they do
//!   over TCP: `handle_input` must consume message 3 and leave the frames.
//! - `Auth` / `AuthAny`: `LinkAuth::decode`; what it accepts re-encodes to
//!   the same bytes.
//! - `Frame`: `link::read_frame`; a returned frame lies inside the input.

#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use lamina_crypto::keys::{IdentityKeypair, StaticKeypair};
use lamina_proto::cell::{Cell, CELL_LEN};
use lamina_proto::error::LinkError;
use lamina_proto::link::{
    read_frame, LinkAuth, LinkCert, LinkHandshake, LocalAuth, PeerExpectation, PeerIdentity, FRAME_HEADER_LEN,
    LINK_AUTH_LEN, LINK_VERSION, MAX_BATCH_CELLS, MAX_FRAME_LEN,
};
use libfuzzer_sys::fuzz_target;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// Fixed keys of one node.
struct Node {
    /// Identity (signs the link certificate).
    identity: IdentityKeypair,
    /// Link key (Noise static key).
    link: StaticKeypair,
}

impl Node {
    /// Generate a node from `rng`.
    fn generate(rng: &mut ChaCha20Rng) -> Self {
        Self { identity: IdentityKeypair::generate(rng), link: StaticKeypair::generate(rng) }
    }

    /// Its link certificate.
    fn cert(&self) -> LinkCert {
        LinkCert::new(&self.identity, &self.link.link_public())
    }

    /// What an initiator that knows this node expects.
    fn expectation(&self) -> PeerExpectation {
        PeerExpectation::Known { relay_id: self.identity.relay_id(), link_key: self.link.link_public() }
    }
}

/// The responding relay and a second relay that dials it.
fn nodes() -> &'static (Node, Node) {
    static NODES: OnceLock<(Node, Node)> = OnceLock::new();
    NODES.get_or_init(|| {
        let mut rng = ChaCha20Rng::from_seed([0x4c; 32]);
        (Node::generate(&mut rng), Node::generate(&mut rng))
    })
}

/// A fresh, fixed RNG for one run.
fn rng() -> ChaCha20Rng {
    ChaCha20Rng::from_seed([0x17; 32])
}

/// One transport batch: `1 + count % 4` cells whose bytes are `fill`
/// repeated (or zeros when `fill` is empty).
#[derive(Arbitrary, Debug)]
struct Batch {
    /// Number of cells, minus one, modulo 4.
    count: u8,
    /// Cell bytes, cycled.
    fill: Vec<u8>,
    /// If set, byte 4 of every cell is forced to this command code mod 5
    /// (a known command), so most batches decode.
    command: Option<u8>,
}

/// One fuzz case.
#[derive(Arbitrary, Debug)]
enum Input {
    /// Arbitrary bytes to a responder.
    Responder {
        /// The bytes, one chunk per read.
        chunks: Vec<Vec<u8>>,
    },
    /// Arbitrary bytes to an initiator after it sent message 1.
    Initiator {
        /// XK (known responder) or XX.
        known: bool,
        /// Relay (certificate) or anonymous client.
        relay: bool,
        /// The bytes, one chunk per read.
        chunks: Vec<Vec<u8>>,
    },
    /// A genuine handshake, possibly tampered with, then transport.
    Honest {
        /// XK (known responder) or XX.
        known: bool,
        /// Relay (certificate) or anonymous client.
        relay: bool,
        /// `(towards responder?, offset, xor)`: flip handshake bytes.
        flips: Vec<(bool, u16, u8)>,
        /// Read sizes (cycled; 0 counts as 1).
        splits: Vec<u16>,
        /// Send the first transport frames together with message 3.
        coalesce: bool,
        /// Transport batches from the initiator.
        batches: Vec<Batch>,
        /// Garbage appended after the batches.
        tail: Vec<u8>,
    },
    /// 128 bytes for `LinkAuth::decode`.
    Auth([u8; LINK_AUTH_LEN]),
    /// Any bytes for `LinkAuth::decode`.
    AuthAny(Vec<u8>),
    /// Any bytes for `read_frame`.
    Frame(Vec<u8>),
}

fuzz_target!(|input: Input| match input {
    Input::Responder { chunks } => responder(&chunks),
    Input::Initiator { known, relay, chunks } => initiator(known, relay, &chunks),
    Input::Honest { known, relay, flips, splits, coalesce, batches, tail } => {
        honest(known, relay, &flips, &splits, coalesce, &batches, &tail);
    }
    Input::Auth(bytes) => auth(&bytes),
    Input::AuthAny(bytes) => auth(&bytes),
    Input::Frame(bytes) => frame(&bytes),
});

/// What a handshake did with its input.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    /// The error, if one happened.
    error: Option<LinkError>,
    /// Bytes consumed in total.
    consumed: usize,
    /// Bytes the handshake sent.
    sent: Vec<u8>,
    /// Whether it finished.
    finished: bool,
}

/// Feed `chunks` to `hs` read by read, as a driver would.
fn drive(hs: &mut LinkHandshake, rng: &mut ChaCha20Rng, chunks: &[&[u8]]) -> Outcome {
    let mut buf = Vec::new();
    let mut consumed = 0;
    let mut sent = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        match hs.handle_input(rng, &buf) {
            Ok(used) => {
                assert!(used <= buf.len(), "consumed {used} of {} bytes", buf.len());
                buf.drain(..used);
                consumed += used;
            }
            Err(error) => {
                assert!(!hs.is_finished(), "a failed handshake is not finished");
                // Dead stays dead.
                assert!(hs.handle_input(rng, b"x").is_err());
                assert_eq!(hs.handle_input(rng, b"").ok(), Some(0));
                sent.extend(hs.poll_transmit().unwrap_or_default());
                return Outcome { error: Some(error), consumed, sent, finished: false };
            }
        }
        sent.extend(hs.poll_transmit().unwrap_or_default());
    }
    Outcome { error: None, consumed, sent, finished: hs.is_finished() }
}

/// Arbitrary bytes to a responder, split and whole: same verdict.
fn responder(chunks: &[Vec<u8>]) {
    let (relay, _) = nodes();
    let split: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    let whole: Vec<u8> = chunks.concat();

    let mut a = LinkHandshake::responder(&relay.link, relay.cert());
    let outcome_split = drive(&mut a, &mut rng(), &split);
    let mut b = LinkHandshake::responder(&relay.link, relay.cert());
    let outcome_whole = drive(&mut b, &mut rng(), &[&whole]);
    // A verdict may come earlier in the split run (an error stops it), so
    // compare only when neither failed, or both did.
    match (&outcome_split.error, &outcome_whole.error) {
        (None, None) => assert_eq!(outcome_split, outcome_whole, "splitting changed the outcome"),
        (Some(e1), Some(e2)) => assert_eq!(e1, e2, "splitting changed the error"),
        _ => panic!("splitting changed the verdict: {outcome_split:?} vs {outcome_whole:?}"),
    }
    for (hs, outcome) in [(a, outcome_split), (b, outcome_whole)] {
        assert_eq!(hs.into_transport().is_ok(), outcome.finished);
    }
}

/// Arbitrary bytes to an initiator that sent its first message.
fn initiator(known: bool, relay_auth: bool, chunks: &[Vec<u8>]) {
    let (relay, dialer) = nodes();
    let mut rng = rng();
    let cert = dialer.cert();
    let local = if relay_auth { LocalAuth::Relay { link_key: &dialer.link, cert } } else { LocalAuth::Anonymous };
    let expect = if known { relay.expectation() } else { PeerExpectation::Unknown };
    let mut hs = LinkHandshake::initiator(&mut rng, &local, expect).expect("initiator starts");
    let first = hs.poll_transmit().expect("preamble and message 1 are queued");
    assert_eq!(first[0], LINK_VERSION);
    assert_eq!(first[1], if known { 0x01 } else { 0x02 });
    let frame_len = usize::from(u16::from_be_bytes([first[2], first[3]]));
    assert_eq!(first.len(), 2 + FRAME_HEADER_LEN + frame_len);
    assert!(hs.poll_transmit().is_none());
    let split: Vec<&[u8]> = chunks.iter().map(Vec::as_slice).collect();
    let outcome = drive(&mut hs, &mut rng, &split);
    assert_eq!(hs.into_transport().is_ok(), outcome.finished);
}

/// Apply the flips aimed at this direction to `bytes`, which start at
/// offset `at` of the direction's byte stream; returns whether any byte
/// changed.
fn apply_flips(flips: &[(bool, u16, u8)], to_responder: bool, at: usize, bytes: &mut [u8]) -> bool {
    let mut changed = false;
    for &(dir, offset, xor) in flips {
        let offset = usize::from(offset);
        if dir == to_responder && xor != 0 && offset >= at && offset < at + bytes.len() {
            bytes[offset - at] ^= xor;
            changed = true;
        }
    }
    changed
}

/// Deliver `pending` to `hs` in reads of the sizes in `splits` (cycled
/// from `split_at`); unconsumed bytes stay in `pending`.
fn deliver(
    hs: &mut LinkHandshake,
    rng: &mut ChaCha20Rng,
    pending: &mut Vec<u8>,
    splits: &[u16],
    split_at: &mut usize,
) -> Result<(), LinkError> {
    let incoming = std::mem::take(pending);
    let mut unconsumed_from = 0;
    let mut offered = 0;
    while offered < incoming.len() {
        let size = match splits {
            [] => incoming.len(),
            _ => usize::from(splits[*split_at % splits.len()]).max(1),
        };
        *split_at += 1;
        offered = incoming.len().min(offered + size);
        let used = hs.handle_input(rng, &incoming[unconsumed_from..offered])?;
        assert!(used <= offered - unconsumed_from, "consumed more than offered");
        unconsumed_from += used;
    }
    pending.extend_from_slice(&incoming[unconsumed_from..]);
    Ok(())
}

/// The plaintext of one batch: whole cells.
fn batch_plaintext(batch: &Batch) -> Vec<u8> {
    let cells = 1 + usize::from(batch.count % 4);
    let mut plain: Vec<u8> = if batch.fill.is_empty() {
        vec![0; cells * CELL_LEN]
    } else {
        batch.fill.iter().copied().cycle().take(cells * CELL_LEN).collect()
    };
    if let Some(code) = batch.command {
        for cell in plain.chunks_exact_mut(CELL_LEN) {
            cell[4] = code % 5;
        }
    }
    plain
}

/// A genuine handshake, possibly tampered with, then transport.
#[allow(clippy::too_many_arguments)]
fn honest(
    known: bool,
    relay_auth: bool,
    flips: &[(bool, u16, u8)],
    splits: &[u16],
    coalesce: bool,
    batches: &[Batch],
    tail: &[u8],
) {
    let (relay, dialer) = nodes();
    let mut rng = rng();
    let cert = dialer.cert();
    let local = if relay_auth { LocalAuth::Relay { link_key: &dialer.link, cert } } else { LocalAuth::Anonymous };
    let expect = if known { relay.expectation() } else { PeerExpectation::Unknown };
    let mut init = LinkHandshake::initiator(&mut rng, &local, expect).expect("initiator starts");
    let mut resp = LinkHandshake::responder(&relay.link, relay.cert());
    let mut split_at = 0;

    // Preamble and message 1.
    let mut to_resp = init.poll_transmit().expect("message 1 is queued");
    let mut tampered = apply_flips(flips, true, 0, &mut to_resp);
    let sent_to_resp = to_resp.len();
    if deliver(&mut resp, &mut rng, &mut to_resp, splits, &mut split_at).is_err() {
        assert!(tampered, "untampered message 1 was rejected");
        return;
    }
    // Message 2.
    let Some(mut to_init) = resp.poll_transmit() else {
        assert!(tampered, "responder did not answer an untampered message 1");
        return;
    };
    tampered |= apply_flips(flips, false, 0, &mut to_init);
    if deliver(&mut init, &mut rng, &mut to_init, splits, &mut split_at).is_err() {
        assert!(tampered, "untampered message 2 was rejected");
        return;
    }
    assert!(to_init.is_empty() || tampered, "message 2 left bytes over");
    // Message 3: the initiator is then finished and may send at once.
    let Some(mut msg3) = init.poll_transmit() else {
        assert!(tampered, "initiator did not answer an untampered message 2");
        return;
    };
    tampered |= apply_flips(flips, true, sent_to_resp, &mut msg3);
    assert!(init.is_finished(), "the initiator finishes when it sends message 3");
    let (mut tx, _rx_init, peer_of_init) = init.into_transport().expect("finished initiator has a transport");
    assert_eq!(peer_of_init, PeerIdentity::Relay(relay.identity.relay_id()));

    // Transport batches from the initiator.
    let mut wire = Vec::new();
    let mut expected = Vec::new();
    for batch in batches.iter().take(8) {
        let plain = batch_plaintext(batch);
        assert!(plain.len() <= MAX_BATCH_CELLS * CELL_LEN);
        tx.seal_encoded(&plain, &mut wire).expect("a whole batch seals");
        expected.push(plain);
    }
    wire.extend_from_slice(tail);

    to_resp.extend_from_slice(&msg3);
    if coalesce {
        // Over TCP the first frames may share a read with message 3.
        to_resp.extend_from_slice(&wire);
    }
    if let Err(e) = deliver(&mut resp, &mut rng, &mut to_resp, splits, &mut split_at) {
        assert!(
            tampered,
            "untampered message 3 was rejected: {e:?} (transport bytes in the same read: {})",
            coalesce && !wire.is_empty()
        );
        return;
    }
    if !resp.is_finished() {
        assert!(tampered, "untampered handshake did not finish");
        return;
    }
    let (_tx_resp, mut rx, peer_of_resp) = resp.into_transport().expect("finished responder has a transport");
    if tampered {
        // A flip that went unnoticed must not change who the peer is.
        assert!(matches!(peer_of_resp, PeerIdentity::Anonymous | PeerIdentity::Relay(_)));
        return;
    }
    let expected_peer =
        if relay_auth { PeerIdentity::Relay(dialer.identity.relay_id()) } else { PeerIdentity::Anonymous };
    assert_eq!(peer_of_resp, expected_peer);
    if coalesce {
        assert_eq!(to_resp, wire, "handle_input left the transport bytes unconsumed");
    } else {
        assert!(to_resp.is_empty(), "message 3 left bytes over");
    }

    // Every sealed batch opens; its cells decode or fail cleanly.
    let mut pos = 0;
    for plain in &expected {
        let mut cells = Vec::new();
        let result = rx.open_frame(&wire[pos..], &mut cells);
        let decoded: Result<Vec<Cell>, _> = plain.chunks_exact(CELL_LEN).map(Cell::decode).collect();
        match (result, decoded) {
            (Ok(Some(used)), Ok(want)) => {
                assert!(used <= MAX_FRAME_LEN);
                assert_eq!(cells, want);
                pos += used;
            }
            (Err(LinkError::Decode(e)), Err(want)) => {
                assert_eq!(e, want);
                return;
            }
            (got, want) => panic!("sealed batch: got {got:?}, expected {want:?}"),
        }
    }
    // The garbage tail: incomplete, or a clean error.
    let mut cells = Vec::new();
    let _ = rx.open_frame(&wire[pos..], &mut cells);
}

/// `LinkAuth::decode`: no panic; accepted values re-encode exactly.
fn auth(bytes: &[u8]) {
    let decoded = LinkAuth::decode(bytes);
    assert_eq!(decoded, LinkAuth::decode(bytes), "deterministic");
    if let Ok(auth) = decoded {
        assert_eq!(auth.encode().as_slice(), bytes, "LinkAuth re-encodes to its input");
    }
}

/// `read_frame`: no panic; a frame lies inside the input.
fn frame(bytes: &[u8]) {
    match read_frame(bytes) {
        Ok(Some((frame, used))) => {
            assert!(!frame.is_empty());
            assert_eq!(used, FRAME_HEADER_LEN + frame.len());
            assert!(used <= bytes.len() && used <= MAX_FRAME_LEN);
            assert_eq!(frame, &bytes[FRAME_HEADER_LEN..used]);
        }
        Ok(None) => {
            // Incomplete: either no full header, or fewer bytes than it says.
            if bytes.len() >= FRAME_HEADER_LEN {
                let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
                assert!(bytes.len() < FRAME_HEADER_LEN + len);
            }
        }
        Err(_) => {
            let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
            assert!(len == 0 || len > MAX_FRAME_LEN - FRAME_HEADER_LEN);
        }
    }
}
