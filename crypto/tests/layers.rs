//! Behaviour and property tests of the layered relay-cell crypto (spec §6).
//!
//! A circuit here is a client [`LayerStack`] of *n* hops (1 ≤ n ≤ 8) and one
//! [`RelayLayers`] per hop, all built from the same random [`HopKeys`]. The
//! properties are the ones spec §6 asks of the layers:
//!
//! - forward cells reach exactly the hop they are wrapped for, with the
//!   message intact, and every hop before it sees [`Peeled::Onward`];
//! - any modification of a forward cell is caught by the **next** hop;
//! - any modification of a backward cell is caught by the client;
//! - replayed and reordered cells fail in both directions;
//! - counters never wrap: at `u64::MAX` every operation is refused;
//! - the stack holds at most [`MAX_HOPS`] hops and refuses other targets.
//!
//! Property tests print the failing inputs (hop count, seeds) when they
//! fail, so a failure can be replayed exactly.

use lamina_crypto::handshake::HopKeys;
use lamina_crypto::layer::{
    forward_capacity, LayerStack, Peeled, RelayLayers, BACKWARD_CAPACITY, BODY_LEN, MAX_HOPS, TAG_LEN,
};
use lamina_crypto::CryptoError;
use proptest::prelude::*;
use proptest::sample::Index;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

/// A client stack and the relays of one circuit.
struct Circuit {
    /// The client's layers.
    client: LayerStack,
    /// One relay per hop, in path order.
    relays: Vec<RelayLayers>,
}

impl Circuit {
    /// A circuit of `n` hops whose keys are drawn from `seed`.
    fn new(n: usize, seed: u64) -> Self {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut client = LayerStack::new();
        let mut relays = Vec::with_capacity(n);
        for _ in 0..n {
            let keys = random_keys(&mut rng);
            client.push(&keys).expect("n ≤ MAX_HOPS hops fit in a stack");
            relays.push(RelayLayers::new(&keys));
        }
        Self { client, relays }
    }

    /// Number of hops.
    fn len(&self) -> usize {
        self.relays.len()
    }

    /// Whether hop `i` has a next hop.
    fn has_next(&self, i: usize) -> bool {
        i + 1 < self.len()
    }

    /// Wrap `msg` (exactly `forward_capacity(target)` bytes) for `target`.
    fn wrap(&mut self, target: usize, msg: &[u8]) -> ([u8; BODY_LEN], [u8; TAG_LEN]) {
        let mut body = [0u8; BODY_LEN];
        body[TAG_LEN..TAG_LEN + msg.len()].copy_from_slice(msg);
        let tag = self.client.wrap_forward(target, &mut body).expect("target is a hop of the stack");
        (body, tag)
    }

    /// Peel `body` at hop `i`.
    fn peel(&mut self, i: usize, body: &mut [u8; BODY_LEN]) -> Result<Peeled, CryptoError> {
        let has_next = self.has_next(i);
        self.relays[i].peel_forward(body, has_next)
    }

    /// Pass a forward cell through hops `0..=target`, checking that only
    /// `target` recognizes it, with `tag`, and that it carries `msg`.
    fn deliver_forward(&mut self, target: usize, body: &mut [u8; BODY_LEN], tag: [u8; TAG_LEN], msg: &[u8]) {
        for i in 0..target {
            assert_eq!(self.peel(i, body), Ok(Peeled::Onward), "hop {i} before target {target}");
        }
        assert_eq!(self.peel(target, body), Ok(Peeled::Recognized { tag }));
        assert_eq!(&body[..msg.len()], msg);
        assert_eq!(&body[BODY_LEN - TAG_LEN..], &[0u8; TAG_LEN], "size restored with zeros");
    }

    /// Hop `origin` sends `msg` (exactly [`BACKWARD_CAPACITY`] bytes)
    /// backward; hops `origin-1..=0` relay it. Returns the cell as the client
    /// receives it and the origin tag.
    fn send_backward(&mut self, origin: usize, msg: &[u8]) -> ([u8; BODY_LEN], [u8; TAG_LEN]) {
        let mut body = [0u8; BODY_LEN];
        body[TAG_LEN..].copy_from_slice(msg);
        let tag = self.relays[origin].originate_backward(&mut body).expect("counter below u64::MAX");
        for i in (0..origin).rev() {
            self.relays[i].relay_backward(&mut body).expect("counter below u64::MAX");
        }
        (body, tag)
    }
}

/// Random hop keys, constructed directly (as a finished handshake would).
fn random_keys(rng: &mut ChaCha20Rng) -> HopKeys {
    let mut forward = Zeroizing::new([0u8; 32]);
    let mut backward = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(forward.as_mut_slice());
    rng.fill_bytes(backward.as_mut_slice());
    HopKeys { forward, backward }
}

/// `len` random bytes.
fn random_bytes(rng: &mut ChaCha20Rng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// Flip bit `bit` (0-based, over the whole body) of `body`.
fn flip(body: &mut [u8; BODY_LEN], bit: usize) {
    body[bit / 8] ^= 1 << (bit % 8);
}

/// Number of bits in a body.
const BODY_BITS: usize = BODY_LEN * 8;

/// Strategy: a hop count and a key seed.
fn circuit_shape() -> impl Strategy<Value = (usize, u64)> {
    (1..=MAX_HOPS, any::<u64>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// (i) Forward cells, several in a row with random targets, reach their
    /// target with the same tag and message; earlier hops see `Onward`.
    #[test]
    fn forward_cells_reach_their_target(
        (n, seed) in circuit_shape(),
        cells in prop::collection::vec((any::<Index>(), any::<u64>()), 1..12),
    ) {
        let mut c = Circuit::new(n, seed);
        for (target, msg_seed) in cells {
            let target = target.index(n);
            let msg = random_bytes(&mut ChaCha20Rng::seed_from_u64(msg_seed), forward_capacity(target));
            let (mut body, tag) = c.wrap(target, &msg);
            c.deliver_forward(target, &mut body, tag, &msg);
        }
    }

    /// (ii) A single bit flipped after hop k (or before hop 0) is caught by
    /// the next hop with `AuthenticationFailed`; that hop's state is
    /// unchanged, so the untouched cell still goes through afterwards.
    #[test]
    fn forward_bit_flip_caught_by_next_hop(
        (n, seed) in circuit_shape(),
        target in any::<Index>(),
        at in any::<Index>(),
        bit in 0..BODY_BITS,
        warmup in 0usize..3,
    ) {
        let mut c = Circuit::new(n, seed);
        let mut rng = ChaCha20Rng::seed_from_u64(seed ^ 0x5eed);
        // Advance the counters a little first.
        for _ in 0..warmup {
            let t = n - 1;
            let msg = random_bytes(&mut rng, forward_capacity(t));
            let (mut body, tag) = c.wrap(t, &msg);
            c.deliver_forward(t, &mut body, tag, &msg);
        }
        let target = target.index(n);
        // The flip happens just before hop `victim` peels (victim ≤ target).
        let victim = at.index(target + 1);
        let msg = random_bytes(&mut rng, forward_capacity(target));
        let (mut body, tag) = c.wrap(target, &msg);
        for i in 0..victim {
            prop_assert_eq!(c.peel(i, &mut body), Ok(Peeled::Onward));
        }
        let mut tampered = body;
        flip(&mut tampered, bit);
        let before = tampered;
        prop_assert_eq!(c.peel(victim, &mut tampered), Err(CryptoError::AuthenticationFailed));
        prop_assert_eq!(tampered, before, "a failed peel leaves the body unchanged");
        // The genuine cell still passes: the failure did not advance the counter.
        for i in victim..target {
            prop_assert_eq!(c.peel(i, &mut body), Ok(Peeled::Onward));
        }
        prop_assert_eq!(c.peel(target, &mut body), Ok(Peeled::Recognized { tag }));
        prop_assert_eq!(&body[..msg.len()], msg.as_slice());
    }

    /// (iii) A forward cell replayed to any hop on its way fails there.
    #[test]
    fn forward_replay_fails(
        (n, seed) in circuit_shape(),
        target in any::<Index>(),
        at in any::<Index>(),
    ) {
        let mut c = Circuit::new(n, seed);
        let target = target.index(n);
        let victim = at.index(target + 1);
        let msg = random_bytes(&mut ChaCha20Rng::seed_from_u64(seed), forward_capacity(target));
        let (mut body, tag) = c.wrap(target, &msg);
        for i in 0..victim {
            prop_assert_eq!(c.peel(i, &mut body), Ok(Peeled::Onward));
        }
        let mut replay = body;
        let expected = if victim == target { Peeled::Recognized { tag } } else { Peeled::Onward };
        prop_assert_eq!(c.peel(victim, &mut body), Ok(expected));
        prop_assert_eq!(c.peel(victim, &mut replay), Err(CryptoError::AuthenticationFailed));
    }

    /// (iii) Two forward cells swapped before any hop fail there; delivered
    /// in order afterwards, both go through.
    #[test]
    fn forward_reorder_fails(
        (n, seed) in circuit_shape(),
        target in any::<Index>(),
        at in any::<Index>(),
    ) {
        let mut c = Circuit::new(n, seed);
        let target = target.index(n);
        let victim = at.index(target + 1);
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let msg1 = random_bytes(&mut rng, forward_capacity(target));
        let msg2 = random_bytes(&mut rng, forward_capacity(target));
        let (mut first, tag1) = c.wrap(target, &msg1);
        let (mut second, tag2) = c.wrap(target, &msg2);
        for i in 0..victim {
            prop_assert_eq!(c.peel(i, &mut first), Ok(Peeled::Onward));
            prop_assert_eq!(c.peel(i, &mut second), Ok(Peeled::Onward));
        }
        let mut early = second;
        prop_assert_eq!(c.peel(victim, &mut early), Err(CryptoError::AuthenticationFailed));
        for i in victim..target {
            prop_assert_eq!(c.peel(i, &mut first), Ok(Peeled::Onward));
            prop_assert_eq!(c.peel(i, &mut second), Ok(Peeled::Onward));
        }
        prop_assert_eq!(c.peel(target, &mut first), Ok(Peeled::Recognized { tag: tag1 }));
        prop_assert_eq!(c.peel(target, &mut second), Ok(Peeled::Recognized { tag: tag2 }));
        prop_assert_eq!(&first[..msg1.len()], msg1.as_slice());
        prop_assert_eq!(&second[..msg2.len()], msg2.as_slice());
    }

    /// (iv) Backward cells from random origins, several in a row, unwrap at
    /// the client to the right hop, tag and message.
    #[test]
    fn backward_cells_reach_the_client(
        (n, seed) in circuit_shape(),
        cells in prop::collection::vec((any::<Index>(), any::<u64>()), 1..12),
    ) {
        let mut c = Circuit::new(n, seed);
        for (origin, msg_seed) in cells {
            let origin = origin.index(n);
            let msg = random_bytes(&mut ChaCha20Rng::seed_from_u64(msg_seed), BACKWARD_CAPACITY);
            let (mut body, tag) = c.send_backward(origin, &msg);
            prop_assert_eq!(c.client.unwrap_backward(&mut body), Ok((origin, tag)));
            prop_assert_eq!(&body[TAG_LEN..], msg.as_slice());
        }
    }

    /// (iv) A bit flipped anywhere on the way back (before any relaying hop,
    /// or at the client's door) makes `unwrap_backward` fail; the client's
    /// state is unchanged, so the genuine cell still unwraps.
    #[test]
    fn backward_bit_flip_caught_by_client(
        (n, seed) in circuit_shape(),
        origin in any::<Index>(),
        at in any::<Index>(),
        bit in 0..BODY_BITS,
    ) {
        let origin = origin.index(n);
        // The flip happens before hop `stage - 1` relays (stage == 0: after
        // hop 0, on the client's link).
        let stage = at.index(origin + 1);
        let msg = random_bytes(&mut ChaCha20Rng::seed_from_u64(seed), BACKWARD_CAPACITY);

        // Genuine run, to learn the expected result.
        let mut genuine = Circuit::new(n, seed);
        let (mut clean, tag) = genuine.send_backward(origin, &msg);

        // Tampered run on an identical circuit.
        let mut c = Circuit::new(n, seed);
        let mut body = [0u8; BODY_LEN];
        body[TAG_LEN..].copy_from_slice(&msg);
        prop_assert_eq!(c.relays[origin].originate_backward(&mut body), Ok(tag));
        for i in (0..origin).rev() {
            if i + 1 == stage {
                flip(&mut body, bit);
            }
            c.relays[i].relay_backward(&mut body).unwrap();
        }
        if stage == 0 {
            flip(&mut body, bit);
        }
        prop_assert_ne!(body, clean);
        prop_assert_eq!(c.client.unwrap_backward(&mut body), Err(CryptoError::AuthenticationFailed));
        prop_assert_eq!(c.client.unwrap_backward(&mut clean), Ok((origin, tag)));
        prop_assert_eq!(&clean[TAG_LEN..], msg.as_slice());
    }

    /// (iv) A backward cell replayed to the client fails; two backward cells
    /// delivered out of order fail.
    #[test]
    fn backward_replay_and_reorder_fail(
        (n, seed) in circuit_shape(),
        origin in any::<Index>(),
    ) {
        let mut c = Circuit::new(n, seed);
        let origin = origin.index(n);
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let msg = random_bytes(&mut rng, BACKWARD_CAPACITY);

        let (mut body, tag) = c.send_backward(origin, &msg);
        let mut replay = body;
        prop_assert_eq!(c.client.unwrap_backward(&mut body), Ok((origin, tag)));
        prop_assert_eq!(c.client.unwrap_backward(&mut replay), Err(CryptoError::AuthenticationFailed));

        let (mut first, tag1) = c.send_backward(origin, &msg);
        let (mut second, tag2) = c.send_backward(origin, &msg);
        let mut early = second;
        prop_assert_eq!(c.client.unwrap_backward(&mut early), Err(CryptoError::AuthenticationFailed));
        prop_assert_eq!(c.client.unwrap_backward(&mut first), Ok((origin, tag1)));
        prop_assert_eq!(c.client.unwrap_backward(&mut second), Ok((origin, tag2)));
    }

    /// Forward and backward traffic interleaved: the two directions have
    /// independent counters.
    #[test]
    fn directions_are_independent(
        (n, seed) in circuit_shape(),
        ops in prop::collection::vec((any::<bool>(), any::<Index>()), 1..16),
    ) {
        let mut c = Circuit::new(n, seed);
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        for (forward, hop) in ops {
            let hop = hop.index(n);
            if forward {
                let msg = random_bytes(&mut rng, forward_capacity(hop));
                let (mut body, tag) = c.wrap(hop, &msg);
                c.deliver_forward(hop, &mut body, tag, &msg);
            } else {
                let msg = random_bytes(&mut rng, BACKWARD_CAPACITY);
                let (mut body, tag) = c.send_backward(hop, &msg);
                prop_assert_eq!(c.client.unwrap_backward(&mut body), Ok((hop, tag)));
                prop_assert_eq!(&body[TAG_LEN..], msg.as_slice());
            }
        }
    }
}

/// (ii) Exhaustively: every single-bit flip of a forward cell, before every
/// hop of a 3-hop circuit, is caught by that hop.
#[test]
fn forward_every_bit_flip_is_caught() {
    let mut c = Circuit::new(3, 7);
    let msg = vec![0x5a; forward_capacity(2)];
    let (mut body, tag) = c.wrap(2, &msg);
    for hop in 0..3 {
        for bit in 0..BODY_BITS {
            let mut tampered = body;
            flip(&mut tampered, bit);
            assert_eq!(
                c.peel(hop, &mut tampered),
                Err(CryptoError::AuthenticationFailed),
                "bit {bit} before hop {hop}"
            );
        }
        let expected = if hop == 2 { Peeled::Recognized { tag } } else { Peeled::Onward };
        assert_eq!(c.peel(hop, &mut body), Ok(expected));
    }
    assert_eq!(&body[..msg.len()], msg.as_slice());
}

/// (iv) Exhaustively: every single-bit flip of a backward cell from hop 2 of
/// a 3-hop circuit, as it reaches the client, makes the client fail.
#[test]
fn backward_every_bit_flip_is_caught() {
    let mut c = Circuit::new(3, 8);
    let msg = vec![0xa5; BACKWARD_CAPACITY];
    let (body, tag) = c.send_backward(2, &msg);
    for bit in 0..BODY_BITS {
        let mut tampered = body;
        flip(&mut tampered, bit);
        assert_eq!(c.client.unwrap_backward(&mut tampered), Err(CryptoError::AuthenticationFailed), "bit {bit}");
    }
    let mut body = body;
    assert_eq!(c.client.unwrap_backward(&mut body), Ok((2, tag)));
}

/// A cell wrapped for an earlier hop is not recognized by a later hop's
/// keys, and a cell for hop 1 given to the relay that believes it is last
/// still fails rather than being misread.
#[test]
fn cells_are_bound_to_their_hop() {
    let mut c = Circuit::new(3, 9);
    let msg = vec![1u8; forward_capacity(0)];
    let (mut body, tag) = c.wrap(0, &msg);
    // Hop 1 never sees hop 0's layer; peeling it there fails.
    let mut wrong = body;
    assert_eq!(c.peel(1, &mut wrong), Err(CryptoError::AuthenticationFailed));
    c.deliver_forward(0, &mut body, tag, &msg);

    // A cell for hop 2 that reaches hop 1 claiming to be last is refused:
    // it carries an onward tag, not a recognized one.
    let msg = vec![2u8; forward_capacity(2)];
    let (mut body, _) = c.wrap(2, &msg);
    assert_eq!(c.peel(0, &mut body), Ok(Peeled::Onward));
    assert_eq!(c.relays[1].peel_forward(&mut body, false), Err(CryptoError::AuthenticationFailed));
}

/// (v) At `u64::MAX` every operation is refused with `NonceExhausted`.
#[test]
fn nonce_exhaustion_is_an_error() {
    let mut c = Circuit::new(3, 10);
    for relay in &mut c.relays {
        relay.dangerously_set_counters(u64::MAX);
    }
    let mut body = [0u8; BODY_LEN];
    for (i, relay) in c.relays.iter_mut().enumerate() {
        assert_eq!(relay.peel_forward(&mut body, i < 2), Err(CryptoError::NonceExhausted));
        assert_eq!(relay.peel_forward(&mut body, false), Err(CryptoError::NonceExhausted));
        assert_eq!(relay.originate_backward(&mut body), Err(CryptoError::NonceExhausted));
        assert_eq!(relay.relay_backward(&mut body), Err(CryptoError::NonceExhausted));
    }

    // Client: exhausting hop 1 blocks wraps to hops 1 and 2, not to hop 0.
    c.client.dangerously_set_counters(1, u64::MAX);
    for target in 1..3 {
        let mut body = [0u8; BODY_LEN];
        assert_eq!(c.client.wrap_forward(target, &mut body), Err(CryptoError::NonceExhausted));
    }
    let mut body = [0u8; BODY_LEN];
    assert!(c.client.wrap_forward(0, &mut body).is_ok());
    let mut body = [0u8; BODY_LEN];
    assert_eq!(c.client.unwrap_backward(&mut body), Err(CryptoError::NonceExhausted));
}

/// (v) At `u64::MAX - 1` every operation works exactly once more, end to
/// end, and then is refused.
#[test]
fn last_nonce_works_once() {
    let n = 3;
    let mut c = Circuit::new(n, 11);
    for hop in 0..n {
        c.client.dangerously_set_counters(hop, u64::MAX - 1);
        c.relays[hop].dangerously_set_counters(u64::MAX - 1);
    }
    // Forward, to the last hop: uses the last nonce of every forward layer.
    let msg = vec![3u8; forward_capacity(2)];
    let (mut body, tag) = c.wrap(2, &msg);
    c.deliver_forward(2, &mut body, tag, &msg);
    // Backward, from the last hop: the last nonce of every backward layer.
    let back = vec![4u8; BACKWARD_CAPACITY];
    let (mut body, tag) = c.send_backward(2, &back);
    assert_eq!(c.client.unwrap_backward(&mut body), Ok((2, tag)));
    assert_eq!(&body[TAG_LEN..], back.as_slice());

    // Now everything is exhausted.
    let mut body = [0u8; BODY_LEN];
    for target in 0..n {
        assert_eq!(c.client.wrap_forward(target, &mut body), Err(CryptoError::NonceExhausted));
    }
    assert_eq!(c.client.unwrap_backward(&mut body), Err(CryptoError::NonceExhausted));
    for (i, relay) in c.relays.iter_mut().enumerate() {
        assert_eq!(relay.peel_forward(&mut body, i + 1 < n), Err(CryptoError::NonceExhausted));
        assert_eq!(relay.originate_backward(&mut body), Err(CryptoError::NonceExhausted));
        assert_eq!(relay.relay_backward(&mut body), Err(CryptoError::NonceExhausted));
    }
}

/// (v) A refused wrap does not advance any counter: after an exhausted hop
/// blocks a wrap to hop 2, a wrap to hop 0 still matches relay 0.
#[test]
fn refused_wrap_changes_nothing() {
    let mut c = Circuit::new(3, 12);
    c.client.dangerously_set_counters(2, u64::MAX);
    let mut body = [0u8; BODY_LEN];
    assert_eq!(c.client.wrap_forward(2, &mut body), Err(CryptoError::NonceExhausted));
    let msg = vec![5u8; forward_capacity(0)];
    let (mut body, tag) = c.wrap(0, &msg);
    c.deliver_forward(0, &mut body, tag, &msg);
}

/// (vi) The stack holds at most `MAX_HOPS` hops, and wraps only to hops it
/// holds.
#[test]
fn stack_bounds() {
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    let mut stack = LayerStack::new();
    assert!(stack.is_empty());
    let mut body = [0u8; BODY_LEN];
    assert!(matches!(stack.wrap_forward(0, &mut body), Err(CryptoError::OutOfRange(_))));
    for i in 0..MAX_HOPS {
        assert_eq!(stack.len(), i);
        stack.push(&random_keys(&mut rng)).unwrap();
    }
    assert_eq!(stack.len(), MAX_HOPS);
    assert!(matches!(stack.push(&random_keys(&mut rng)), Err(CryptoError::OutOfRange(_))));
    assert_eq!(stack.len(), MAX_HOPS);
    for target in [MAX_HOPS, MAX_HOPS + 1, usize::MAX] {
        assert!(matches!(stack.wrap_forward(target, &mut body), Err(CryptoError::OutOfRange(_))));
    }
    // Every held hop is a valid target, the farthest one included.
    assert!(stack.wrap_forward(MAX_HOPS - 1, &mut body).is_ok());

    let mut short = Circuit::new(2, 14);
    assert!(matches!(short.client.wrap_forward(2, &mut body), Err(CryptoError::OutOfRange(_))));
}

/// An empty stack cannot unwrap anything.
#[test]
fn empty_stack_unwraps_nothing() {
    let mut stack = LayerStack::new();
    let mut body = [0u8; BODY_LEN];
    assert_eq!(stack.unwrap_backward(&mut body), Err(CryptoError::AuthenticationFailed));
}

/// Capacity arithmetic: each earlier hop's restored padding costs one tag.
#[test]
fn capacities() {
    assert_eq!(forward_capacity(0), BODY_LEN - TAG_LEN);
    assert_eq!(forward_capacity(2), BODY_LEN - 3 * TAG_LEN);
    assert_eq!(forward_capacity(MAX_HOPS - 1), BODY_LEN - MAX_HOPS * TAG_LEN);
    assert_eq!(BACKWARD_CAPACITY, BODY_LEN - TAG_LEN);
}

/// Secrets stay out of `Debug` output.
#[test]
fn debug_prints_no_key_material() {
    let keys = HopKeys { forward: Zeroizing::new([0xab; 32]), backward: Zeroizing::new([0xcd; 32]) };
    let relay = RelayLayers::new(&keys);
    let mut stack = LayerStack::new();
    stack.push(&keys).unwrap();
    for text in [format!("{keys:?}"), format!("{relay:?}"), format!("{stack:?}")] {
        assert!(!text.contains("ab, ab") && !text.contains("abab") && !text.contains("171"), "{text}");
        assert!(!text.contains("cdcd") && !text.contains("205"), "{text}");
    }
}
