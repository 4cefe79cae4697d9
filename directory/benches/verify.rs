//! Benchmarks of descriptor verification (CONTRIBUTING.md "Figures": a client verifies
//! every descriptor of the snapshots it downloads).
//!
//! - `descriptor/decode`: parsing alone;
//! - `descriptor/decode+verify`: parse, validity window, proof-of-work
//!   check and Ed25519 signature, on fresh bytes each time (the memoized
//!   result of a previous verification is never reused);
//! - `descriptor/work_hash`: one proof-of-work hash: creating a proof of
//!   D bits costs about 2^D of these (20 bits: ~10^6);
//! - `snapshot/verify_all_10000`: a client checking a 10,000-relay
//!   snapshot: decode and verify every descriptor, check the order,
//!   recompute the Merkle root (10 samples).
//!
//! Run with `cargo bench -p lamina-directory --bench verify`; add
//! `-- --warm-up-time 1 --measurement-time 3` for a short run.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use criterion::{Criterion, Throughput};
use lamina_crypto::keys::{IdentityKeypair, LinkPublicKey, OnionPublicKey};
use lamina_directory::descriptor::pow;
use lamina_directory::{Descriptor, DescriptorFields, Epoch, ExitSummary, PowNonce, Snapshot, Store, StoreConfig};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// Wall-clock time the descriptors are valid at.
const NOW: u64 = 1_750_000_000;
/// Difficulty of the benchmark descriptors (verification costs one hash
/// whatever the difficulty).
const DIFFICULTY: u8 = 4;

/// A typical descriptor of a fresh random relay: two addresses, an exit
/// with three port ranges, two family members.
fn descriptor(rng: &mut ChaCha20Rng, sequence: u64) -> Vec<u8> {
    let identity = IdentityKeypair::generate(rng);
    let family = vec![IdentityKeypair::generate(rng).relay_id(), IdentityKeypair::generate(rng).relay_id()];
    let mut key = [0u8; 32];
    rng.fill_bytes(&mut key);
    let addr = |s: &str| s.parse::<SocketAddr>().expect("literal");
    let fields = DescriptorFields {
        onion_key: OnionPublicKey(key),
        link_key: LinkPublicKey(key),
        sequence,
        published: NOW - 3600,
        expires: NOW + 20 * 3600,
        bandwidth_kbps: 5_000,
        exit: ExitSummary::exit(vec![
            lamina_directory::PortRange::new(80, 80),
            lamina_directory::PortRange::new(443, 443),
            lamina_directory::PortRange::new(8000, 8999),
        ])
        .expect("ranges"),
        addresses: vec![addr("203.0.113.7:443"), addr("[2001:db8::7]:443")],
        family,
    };
    let nonce = pow::solve(&identity.relay_id(), DIFFICULTY, rng.next_u64()).expect("work");
    Descriptor::sign(&identity, fields, nonce, DIFFICULTY).expect("sign").as_bytes().to_vec()
}

/// Single-descriptor benchmarks.
fn bench_descriptor(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let bytes = descriptor(&mut rng, 1);
    let mut g = c.benchmark_group("descriptor");
    g.throughput(Throughput::Elements(1));
    g.bench_function("decode", |b| b.iter(|| Descriptor::decode(black_box(&bytes)).expect("decodes")));
    g.bench_function("decode+verify", |b| {
        b.iter(|| Descriptor::decode(black_box(&bytes)).expect("decodes").verify(NOW, DIFFICULTY).expect("verifies"))
    });
    let id = IdentityKeypair::generate(&mut rng).relay_id();
    let mut nonce = 0u64;
    g.bench_function("work_hash", |b| {
        b.iter(|| {
            nonce += 1;
            pow::work_bits(black_box(&id), PowNonce(nonce))
        })
    });
    g.finish();
}

/// Verifying a whole 10,000-relay snapshot.
fn bench_snapshot(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(2);
    let mut store = Store::new(StoreConfig::default());
    for i in 0..10_000 {
        let d = Descriptor::decode(&descriptor(&mut rng, i)).expect("decodes");
        store.insert(d.verify(NOW, DIFFICULTY).expect("verifies"));
    }
    let snapshot: Snapshot = store.snapshot(Epoch(1));
    assert_eq!(snapshot.descriptors.len(), 10_000);
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(10_000));
    g.bench_function("verify_all_10000", |b| {
        b.iter(|| black_box(&snapshot).verify_all(NOW, DIFFICULTY).expect("snapshot verifies"))
    });
    g.finish();
}

/// What `criterion_group!`/`criterion_main!` expand to, written out so the
/// entry point carries documentation (the workspace denies missing docs).
fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench_descriptor(&mut criterion);
    bench_snapshot(&mut criterion);
    criterion.final_summary();
}
