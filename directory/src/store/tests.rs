//! Store rules: newest wins, duplicates, replays, equivocation, capacity,
//! expiry, roots and snapshots.

use lamina_crypto::digest::sha256;

use super::*;
use crate::error::{DescriptorError, SnapshotError};
use crate::testing::{fields, identity, signed, verified, T0, TEST_DIFFICULTY};

/// A store with room for `capacity` relays.
fn store(capacity: usize) -> Store {
    Store::new(StoreConfig { capacity, banned_capacity: 8, ..StoreConfig::default() })
}

/// A second, different descriptor of relay `seed` with `sequence`.
fn variant(seed: u8, sequence: u64) -> Verified<Descriptor> {
    let mut f = fields(sequence);
    f.bandwidth_kbps += 1;
    signed(&identity(seed), f).verify(T0, TEST_DIFFICULTY).unwrap()
}

/// New, duplicate, newer, older.
#[test]
fn newest_sequence_wins() {
    let mut s = store(10);
    assert_eq!(s.insert(verified(1, 5)), InsertOutcome::Inserted);
    assert_eq!(s.insert(verified(1, 5)), InsertOutcome::Duplicate);
    assert_eq!(s.insert(verified(1, 7)), InsertOutcome::Updated { previous: 5 });
    assert_eq!(s.insert(verified(1, 6)), InsertOutcome::Stale { held: 7 });
    assert_eq!(s.len(), 1);
    assert_eq!(s.get(&identity(1).relay_id()).unwrap().sequence(), 7);
}

/// Same sequence, different bytes: removed and banned, for good.
#[test]
fn equivocation_bans_the_relay() {
    let mut s = store(10);
    let id = identity(1).relay_id();
    s.insert(verified(1, 5));
    assert_eq!(s.insert(variant(1, 5)), InsertOutcome::Equivocation);
    assert!(s.get(&id).is_none());
    assert!(s.is_banned(&id));
    assert_eq!(s.insert(verified(1, 9)), InsertOutcome::Banned);
    assert_eq!(s.len(), 0);
}

/// When full of relays with evidence, newcomers are refused but known
/// relays still update.
#[test]
fn full_store_refuses_newcomers_only() {
    let mut s = store(2);
    s.insert(verified(1, 1));
    s.insert(verified(2, 1));
    s.set_evidence(&identity(1).relay_id(), 1);
    s.set_evidence(&identity(2).relay_id(), 1);
    assert_eq!(s.insert(verified(3, 1)), InsertOutcome::Full);
    assert_eq!(s.insert(verified(2, 2)), InsertOutcome::Updated { previous: 1 });
    assert_eq!(s.len(), 2);
}

/// Expired descriptors go; an older descriptor cannot come back after the
/// newer one expired.
#[test]
fn expiry_and_replay_after_expiry() {
    let mut s = store(10);
    let mut short = fields(2);
    short.expires = T0 + 60;
    s.insert(signed(&identity(1), short).verify(T0, TEST_DIFFICULTY).unwrap());
    s.insert(verified(2, 1));
    assert_eq!(s.expire(T0 + 59), 0);
    assert_eq!(s.expire(T0 + 60), 1);
    assert_eq!(s.len(), 1);
    // Sequence 1 is still inside its window, but 2 was seen: a replay.
    assert_eq!(s.insert(verified(1, 1)), InsertOutcome::Stale { held: 2 });
    assert_eq!(s.insert(verified(1, 3)), InsertOutcome::Inserted);
}

/// The Merkle root is over leaves sorted by relay id, whatever the
/// insertion order; the empty root is SHA-256("lamina-empty").
#[test]
fn merkle_root_is_order_independent() {
    let mut a = store(10);
    assert_eq!(a.merkle_root(), sha256(&[b"lamina-empty"]));
    let mut b = store(10);
    let ds: Vec<_> = (1..=5).map(|i| verified(i, 1)).collect();
    for d in &ds {
        a.insert(d.clone());
    }
    for d in ds.iter().rev() {
        b.insert(d.clone());
    }
    assert_eq!(a.merkle_root(), b.merkle_root());
    assert_eq!(a.digest_root(), b.digest_root());
    let mut sorted = ds.clone();
    sorted.sort_by_key(|d| d.id());
    let leaves: Vec<DescriptorHash> = sorted.iter().map(|d| d.hash()).collect();
    assert_eq!(a.merkle_root(), merkle::merkle_root(&leaves));
    assert!(a.iter().map(|d| d.id()).collect::<Vec<_>>().windows(2).all(|w| w[0] < w[1]));
}

/// An update changes the roots and exactly one bucket hash.
#[test]
fn update_changes_one_bucket() {
    let mut s = store(10);
    for i in 1..=5 {
        s.insert(verified(i, 1));
    }
    let (root, buckets) = (s.digest_root(), s.bucket_hashes());
    s.insert(verified(3, 2));
    assert_ne!(s.digest_root(), root);
    let after = s.bucket_hashes();
    let changed: Vec<usize> = (0..BUCKETS).filter(|b| buckets[*b] != after[*b]).collect();
    assert_eq!(changed, vec![usize::from(identity(3).relay_id().0[0])]);
}

/// `range` and `nth` see the store in id order.
#[test]
fn range_and_nth() {
    let mut s = store(10);
    for i in 1..=6 {
        s.insert(verified(i, 1));
    }
    let ids: Vec<_> = s.iter().map(|d| d.id()).collect();
    assert_eq!(s.nth(0).unwrap().id(), ids[0]);
    assert_eq!(s.nth(5).unwrap().id(), ids[5]);
    assert!(s.nth(6).is_none());
    let inside: Vec<_> = s.range(&ids[1], &ids[3]).map(|d| d.id()).collect();
    assert_eq!(inside, ids[1..=3].to_vec());
}

/// A snapshot verifies and its root matches; tampering is caught.
#[test]
fn snapshot_verifies_and_detects_tampering() {
    let mut s = store(10);
    for i in 1..=4 {
        s.insert(verified(i, 1));
    }
    let snap = s.snapshot(Epoch(7));
    let decoded = Snapshot::decode(&snap.encode()).unwrap();
    assert_eq!(decoded, snap);
    let ok = decoded.verify_all(T0, TEST_DIFFICULTY).unwrap();
    assert_eq!(ok.root, s.merkle_root());
    assert_eq!(ok.descriptors.len(), 4);

    let mut wrong_root = snap.clone();
    wrong_root.root[0] ^= 1;
    assert_eq!(wrong_root.verify_all(T0, TEST_DIFFICULTY).unwrap_err(), SnapshotError::RootMismatch);

    let mut dropped = snap.clone();
    dropped.descriptors.pop();
    assert_eq!(dropped.verify_all(T0, TEST_DIFFICULTY).unwrap_err(), SnapshotError::RootMismatch);

    let mut unsorted = snap.clone();
    unsorted.descriptors.swap(0, 1);
    assert_eq!(unsorted.verify_all(T0, TEST_DIFFICULTY).unwrap_err(), SnapshotError::NotSorted { index: 1 });

    let late = T0 + 24 * 3600;
    assert!(matches!(
        snap.verify_all(late, TEST_DIFFICULTY).unwrap_err(),
        SnapshotError::Descriptor { index: 0, source: DescriptorError::Expired { .. } }
    ));
}
