//! Snapshot encoding bounds and chunk reassembly.

use super::*;
use crate::testing::{verified, T0, TEST_DIFFICULTY};

/// A snapshot of `n` fixture descriptors (sorted, with the right root).
fn snapshot(n: u8) -> Snapshot {
    let mut store = crate::store::Store::new(crate::store::StoreConfig::default());
    for i in 1..=n {
        store.insert(verified(i, 1));
    }
    store.snapshot(Epoch(3))
}

/// Epochs are floor(now / len).
#[test]
fn epoch_arithmetic() {
    assert_eq!(Epoch::at(7199, 3600), Epoch(1));
    assert_eq!(Epoch::at(7200, 3600), Epoch(2));
    assert_eq!(Epoch::at(5, 0), Epoch(0));
}

/// Truncation, a count above the maximum and trailing bytes are refused,
/// the count before any allocation.
#[test]
fn decode_bounds() {
    let bytes = snapshot(2).encode();
    assert!(matches!(
        Snapshot::decode(&bytes[..bytes.len() - 1]),
        Err(SnapshotError::Malformed(WireError::Truncated { .. }))
    ));
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(Snapshot::decode(&trailing), Err(SnapshotError::Malformed(WireError::TrailingBytes)));
    let mut huge = bytes[..41].to_vec();
    huge.extend_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(
        Snapshot::decode(&huge),
        Err(SnapshotError::Malformed(WireError::CountAboveMax { what: "snapshot descriptors", .. }))
    ));
    // A plausible count with no bytes behind it is refused before allocating.
    let mut short = bytes[..41].to_vec();
    short.extend_from_slice(&50_000u32.to_be_bytes());
    assert!(matches!(Snapshot::decode(&short), Err(SnapshotError::Malformed(WireError::Truncated { .. }))));
}

/// Chunks in any order reassemble into the snapshot, which verifies.
#[test]
fn assembler_reassembles_out_of_order() {
    let snap = snapshot(5);
    let descs: Vec<_> = snap.descriptors.iter().map(|b| Descriptor::decode(b).unwrap()).collect();
    let chunk = |index: u16, range: std::ops::Range<usize>| SnapshotChunk {
        epoch: snap.epoch,
        root: snap.root,
        index,
        total: 2,
        descriptors: descs[range].to_vec(),
    };
    let mut a = SnapshotAssembler::new();
    assert_eq!(a.add(&chunk(1, 3..5)).unwrap(), None);
    assert_eq!(a.add(&chunk(1, 3..5)).unwrap(), None);
    let whole = a.add(&chunk(0, 0..3)).unwrap().unwrap();
    assert_eq!(whole, snap);
    assert!(whole.verify_all(T0, TEST_DIFFICULTY).is_ok());

    let mut b = SnapshotAssembler::new();
    b.add(&chunk(0, 0..3)).unwrap();
    let mut other_root = chunk(1, 3..5);
    other_root.root[0] ^= 1;
    assert!(matches!(b.add(&other_root), Err(SnapshotError::InconsistentChunk(_))));
}

/// A client whose clock is far off drops the descriptors it cannot verify
/// (here: all are "future dated" for a clock a day behind, and all valid
/// for the right clock) without voiding the snapshot; the root is still
/// checked over the set as served, so a tampered snapshot is still refused.
#[test]
fn verify_served_drops_unverifiable_descriptors_only() {
    let snap = snapshot(3);
    let (ok, dropped) = snap.verify_served(T0, TEST_DIFFICULTY).expect("verifies");
    assert_eq!((ok.descriptors.len(), dropped.len()), (3, 0));
    let (skewed, dropped) = snap.verify_served(T0 - 24 * 3600, TEST_DIFFICULTY).expect("not voided");
    assert_eq!((skewed.descriptors.len(), dropped.len()), (0, 3));
    assert_eq!(skewed.root, snap.root);
    assert!(matches!(dropped[0].1, DescriptorError::FutureDated { .. }));
    assert!(snap.verify_all(T0 - 24 * 3600, TEST_DIFFICULTY).is_err(), "the strict check voids it");
    let mut tampered = snap.clone();
    tampered.descriptors.pop();
    assert_eq!(tampered.verify_served(T0, TEST_DIFFICULTY).err(), Some(SnapshotError::RootMismatch));
}
