//! Property tests (CONTRIBUTING.md P14): any delivery order of a set of
//! descriptors converges to the same store root, and no descriptor is ever
//! forwarded more than once (to at most `push_fanout` peers).

// Test code: a panic is a test failure, in helpers as in #[test] functions.
#![allow(clippy::unwrap_used)]

#[path = "support/fixtures.rs"]
mod fixtures;

use std::collections::HashMap;
use std::sync::OnceLock;

use fixtures::{config, descriptor, drain, engine, fields, now, peer, push, pushed_hashes, sign, DIFFICULTY, T0};
use lamina_directory::{Descriptor, DescriptorHash, Direction, Unverified};
use proptest::prelude::*;

/// The relays of the set that end up stored (each with sequences 1..=3).
const HONEST: std::ops::Range<u32> = 10..16;
/// A relay that equivocates at its highest sequence: banned in any order.
const EQUIVOCATOR: u32 = 20;

/// The descriptor set, built once: three sequences for each honest relay,
/// and two different descriptors with the top sequence for the equivocator.
fn set() -> &'static Vec<Unverified<Descriptor>> {
    static SET: OnceLock<Vec<Unverified<Descriptor>>> = OnceLock::new();
    SET.get_or_init(|| {
        let mut v: Vec<_> = HONEST.flat_map(|n| (1..=3).map(move |s| descriptor(n, s))).collect();
        v.push(descriptor(EQUIVOCATOR, 1));
        v.push(descriptor(EQUIVOCATOR, 2));
        let mut twin = fields(EQUIVOCATOR, 2, T0);
        twin.bandwidth_kbps += 7;
        v.push(sign(EQUIVOCATOR, twin, DIFFICULTY));
        v
    })
}

/// What one delivery run ended with.
struct Outcome {
    /// The store's Merkle root.
    root: [u8; 32],
    /// Stored (relay, sequence) pairs.
    stored: Vec<(u32, u64)>,
    /// How often each descriptor was pushed out.
    pushes: HashMap<DescriptorHash, usize>,
}

/// Deliver `order` (indexes into the set) in pushes of the given sizes
/// from rotating peers.
fn run(order: &[usize], sizes: &[usize]) -> Outcome {
    let mut e = engine(1000, config());
    for n in 1..=4 {
        e.add_peer(now(0), peer(n), Direction::Inbound).unwrap();
    }
    let set = set();
    let mut pushes: HashMap<DescriptorHash, usize> = HashMap::new();
    let mut rest = order;
    let mut i = 0;
    while !rest.is_empty() {
        let size = sizes.get(i % sizes.len().max(1)).copied().unwrap_or(1).clamp(1, rest.len());
        let (batch, tail) = rest.split_at(size);
        let msg = push(batch.iter().map(|k| set[*k].clone()).collect());
        let from = peer(u32::try_from(i % 4).unwrap() + 1);
        e.handle_message(now(1000 + u64::try_from(i).unwrap()), from, msg);
        for h in pushed_hashes(&drain(&mut e)) {
            *pushes.entry(h).or_default() += 1;
        }
        rest = tail;
        i += 1;
    }
    let mut stored: Vec<(u32, u64)> = HONEST
        .chain([EQUIVOCATOR])
        .filter_map(|n| e.store().get(&fixtures::identity(n).relay_id()).map(|d| (n, d.sequence())))
        .collect();
    stored.sort_unstable();
    let root = clone_store(&e).merkle_root();
    Outcome { root, stored, pushes }
}

/// A copy of an engine's store (the engine only lends it read-only).
fn clone_store(e: &fixtures::Engine) -> lamina_directory::Store {
    let mut s = lamina_directory::Store::new(lamina_directory::StoreConfig::default());
    for d in e.store().iter() {
        s.insert(d.clone());
    }
    s
}

/// A permutation of the set's indexes, each possibly delivered twice.
fn deliveries() -> impl Strategy<Value = Vec<usize>> {
    let n = set().len();
    (Just((0..n).collect::<Vec<_>>()).prop_shuffle(), proptest::collection::vec(0..n, 0..8)).prop_flat_map(
        |(perm, dups)| {
            let mut all = perm;
            all.extend(dups);
            Just(all).prop_shuffle()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Every order and batching ends at the same directory and root; each
    /// descriptor is pushed out at most once per peer (fan-out ≤ 3 here:
    /// four peers minus the sender), duplicates never.
    #[test]
    fn any_delivery_order_converges(order in deliveries(), sizes in proptest::collection::vec(1usize..5, 1..6)) {
        let reference: Vec<usize> = (0..set().len()).collect();
        let expected = run(&reference, &[1]);
        let got = run(&order, &sizes);
        prop_assert_eq!(&got.stored, &expected.stored);
        prop_assert_eq!(got.root, expected.root);
        prop_assert_eq!(got.stored.len(), HONEST.len());
        prop_assert!(got.stored.iter().all(|(_, seq)| *seq == 3));
        for (h, count) in got.pushes {
            prop_assert!(count <= 3, "descriptor {:?} pushed {} times", h, count);
        }
    }
}
