//! Benchmarks of the per-cell crypto and the circuit handshake.
//!
//! CONTRIBUTING.md ("Figures") asks for at least 1,000,000 cells/s for one layer on one
//! core (aim: 2,000,000), and for circuit builds well under Tor's. Every
//! benchmark here measures one element per iteration (one cell through one
//! layer, one cell through a whole client stack, or one handshake), so
//! criterion's `elem/s` figure is cells/s or handshakes/s directly.
//!
//! A forward peel advances the relay's nonce counter, so it can only peel a
//! cell wrapped for that counter: the relay benchmarks wrap fresh cells in
//! criterion's untimed setup (`iter_batched`) and time only the relay's
//! work. Stream-layer and wrap benchmarks need no fresh input and run in a
//! plain loop.
//!
//! Run with `cargo bench -p lamina-crypto`; add
//! `-- --warm-up-time 1 --measurement-time 3` for a short run.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput};
use lamina_crypto::handshake::{self, HopKeys};
use lamina_crypto::keys::{IdentityKeypair, StaticKeypair};
use lamina_crypto::layer::{self, LayerStack, Peeled, RelayLayers, BODY_LEN, TAG_LEN};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use zeroize::Zeroizing;

/// Random hop keys.
fn random_keys(rng: &mut ChaCha20Rng) -> HopKeys {
    let mut forward = Zeroizing::new([0u8; 32]);
    let mut backward = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(forward.as_mut_slice());
    rng.fill_bytes(backward.as_mut_slice());
    HopKeys { forward, backward }
}

/// A client stack of `n` hops and the matching relays.
fn circuit(n: usize, seed: u64) -> (LayerStack, Vec<RelayLayers>) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let mut stack = LayerStack::new();
    let mut relays = Vec::with_capacity(n);
    for _ in 0..n {
        let keys = random_keys(&mut rng);
        stack.push(&keys).expect("n ≤ MAX_HOPS");
        relays.push(RelayLayers::new(&keys));
    }
    (stack, relays)
}

/// A body whose message area holds recognisable non-zero bytes.
fn message_body() -> [u8; BODY_LEN] {
    let mut body = [0u8; BODY_LEN];
    for (i, b) in body[TAG_LEN..].iter_mut().enumerate() {
        *b = u8::try_from(i % 251).expect("below 251");
    }
    body
}

/// Relay side, forward: one AEAD layer removed from one full cell.
///
/// `relay_peel_forward` is the last hop of a 1-hop circuit (`Recognized`,
/// one open); `relay_peel_forward_onward` is hop 0 of a 2-hop circuit
/// passing a cell on (`Onward`, one open). Wrapping is untimed setup.
fn bench_relay_peel(c: &mut Criterion) {
    let mut group = c.benchmark_group("cell_crypto");
    group.throughput(Throughput::Elements(1));

    let (mut stack, mut relays) = circuit(1, 1);
    group.bench_function("relay_peel_forward", |b| {
        b.iter_batched(
            || {
                let mut body = message_body();
                stack.wrap_forward(0, &mut body).expect("counters far from exhaustion");
                body
            },
            |mut body| {
                let peeled = relays[0].peel_forward(&mut body, false);
                debug_assert!(matches!(peeled, Ok(Peeled::Recognized { .. })));
                black_box((peeled, body))
            },
            BatchSize::SmallInput,
        );
    });

    let (mut stack, mut relays) = circuit(2, 2);
    group.bench_function("relay_peel_forward_onward", |b| {
        b.iter_batched(
            || {
                let mut body = message_body();
                stack.wrap_forward(1, &mut body).expect("counters far from exhaustion");
                body
            },
            |mut body| {
                let peeled = relays[0].peel_forward(&mut body, true);
                debug_assert_eq!(peeled, Ok(Peeled::Onward));
                black_box((peeled, body))
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

/// Relay side, backward: one stream layer added to one full cell, and the
/// exit's AEAD seal of a cell it originates.
fn bench_relay_backward(c: &mut Criterion) {
    let mut group = c.benchmark_group("cell_crypto");
    group.throughput(Throughput::Elements(1));

    let (_, mut relays) = circuit(1, 3);
    let mut body = message_body();
    group.bench_function("relay_backward_layer", |b| {
        b.iter(|| {
            relays[0].relay_backward(black_box(&mut body)).expect("counter far from exhaustion");
        });
    });
    group.bench_function("relay_originate_backward", |b| {
        b.iter(|| relays[0].originate_backward(black_box(&mut body)).expect("counter far from exhaustion"));
    });
    group.finish();
}

/// Client side: a forward cell wrapped for hop 2 of a 3-hop circuit (three
/// AEAD seals plus the filler), and a backward cell from hop 2 unwrapped
/// (two failed trial opens, two stream layers, one successful open).
fn bench_client(c: &mut Criterion) {
    let mut group = c.benchmark_group("cell_crypto");
    group.throughput(Throughput::Elements(1));

    let (mut stack, _) = circuit(3, 4);
    let msg = message_body();
    group.bench_function("client_wrap_3_hops", |b| {
        b.iter(|| {
            let mut body = msg;
            let tag = stack.wrap_forward(2, &mut body).expect("counters far from exhaustion");
            black_box((tag, body))
        });
    });

    let (mut stack, mut relays) = circuit(3, 5);
    group.bench_function("client_unwrap_3_hops", |b| {
        b.iter_batched(
            || {
                let mut body = message_body();
                relays[2].originate_backward(&mut body).expect("counter far from exhaustion");
                relays[1].relay_backward(&mut body).expect("counter far from exhaustion");
                relays[0].relay_backward(&mut body).expect("counter far from exhaustion");
                body
            },
            |mut body| {
                let got = stack.unwrap_backward(&mut body);
                debug_assert!(matches!(got, Ok((2, _))));
                black_box((got, body))
            },
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

/// One complete circuit handshake: `client_start`, `relay_respond` and
/// `finish` (five X25519 scalar multiplications in all, plus the KDF).
fn bench_handshake(c: &mut Criterion) {
    let mut group = c.benchmark_group("cell_crypto");
    group.throughput(Throughput::Elements(1));

    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let identity = IdentityKeypair::generate(&mut rng);
    let onion = StaticKeypair::generate(&mut rng);
    let relay_id = identity.relay_id();
    let onion_public = onion.onion_public();
    group.bench_function("circuit_handshake", |b| {
        b.iter(|| {
            let (pending, onionskin) = handshake::client_start(&mut rng, &relay_id, &onion_public);
            let (reply, relay_keys) =
                handshake::relay_respond(&mut rng, &relay_id, &onion, &onionskin).expect("addressed to this relay");
            let client_keys = pending.finish(&reply).expect("untouched reply");
            black_box((relay_keys, client_keys))
        });
    });
    group.finish();
}

/// Sanity check before timing: the benchmark circuits really work, so a
/// broken build cannot report a fast number for failing operations.
fn check_setup() {
    let (mut stack, mut relays) = circuit(3, 7);
    let mut body = message_body();
    let tag = stack.wrap_forward(2, &mut body).expect("wrap");
    assert_eq!(relays[0].peel_forward(&mut body, true), Ok(Peeled::Onward));
    assert_eq!(relays[1].peel_forward(&mut body, true), Ok(Peeled::Onward));
    assert_eq!(relays[2].peel_forward(&mut body, false), Ok(Peeled::Recognized { tag }));
    assert_eq!(body[..layer::forward_capacity(2)], message_body()[TAG_LEN..][..layer::forward_capacity(2)]);
}

/// All benchmarks, after the setup check.
fn benches(c: &mut Criterion) {
    check_setup();
    bench_relay_peel(c);
    bench_relay_backward(c);
    bench_client(c);
    bench_handshake(c);
}

/// What `criterion_group!`/`criterion_main!` expand to, written out so the
/// entry point carries documentation (the workspace denies missing docs).
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
}
