//! The bounded store of verified descriptors, one per relay id.
//!
//! Rules (README "Store"):
//!
//! - only [`Verified`] descriptors enter;
//! - the highest sequence number wins; a lower sequence is *stale* (a
//!   replay), the same bytes again are a *duplicate* (a no-op, reported);
//! - the same sequence with different bytes is *equivocation*: the relay
//!   signed two versions of one descriptor, so its descriptor is removed and
//!   its id is banned (remembered in a bounded set);
//! - when full, newcomers are refused rather than evicting anyone (an
//!   attacker with many identities cannot push honest relays out); an update
//!   of a relay already stored is always accepted;
//! - expired descriptors are dropped by [`Store::expire`]; the highest
//!   sequence of a dropped relay is remembered (bounded, for the longest
//!   lifetime) so an older descriptor cannot be replayed once the newer one
//!   has expired.
//!
//! Entries live in 256 buckets by the first byte of the relay id, each
//! sorted by id, so the whole store iterates in id order and the
//! anti-entropy bucket hashes ([`merkle`]) are recomputed only for buckets
//! that changed.

pub mod merkle;

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;

use lamina_crypto::keys::RelayId;

use self::merkle::{BucketHash, BUCKETS};
use crate::descriptor::{Descriptor, DescriptorHash, MAX_CLOCK_SKEW_S, MAX_LIFETIME_S};
use crate::snapshot::{Epoch, Snapshot};
use crate::verify::Verified;

/// Default maximum number of descriptors held.
pub const DEFAULT_STORE_CAPACITY: usize = 10_000;
/// Default maximum number of banned identities remembered.
pub const DEFAULT_BANNED_CAPACITY: usize = 1_024;

/// Store limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreConfig {
    /// Most descriptors held (newcomers are refused beyond it).
    pub capacity: usize,
    /// Most banned identities remembered (oldest forgotten first).
    pub banned_capacity: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { capacity: DEFAULT_STORE_CAPACITY, banned_capacity: DEFAULT_BANNED_CAPACITY }
    }
}

/// What [`Store::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// A relay not held before was added.
    Inserted,
    /// A held relay's descriptor was replaced by a newer one.
    Updated {
        /// The sequence number replaced.
        previous: u64,
    },
    /// The identical descriptor is already held: nothing changed.
    Duplicate,
    /// A newer (or equal, for an expired relay) sequence is held or was
    /// held: the offered descriptor is a replay. Nothing changed.
    Stale {
        /// The sequence held or remembered.
        held: u64,
    },
    /// Same sequence, different bytes: the relay was removed and banned.
    Equivocation,
    /// The relay is banned: nothing changed.
    Banned,
    /// The store is full and the relay is new: refused.
    Full,
}

impl InsertOutcome {
    /// Whether the store now holds the offered descriptor as news
    /// (inserted or updated), i.e. whether it is worth forwarding.
    pub fn is_new(&self) -> bool {
        matches!(self, Self::Inserted | Self::Updated { .. })
    }
}

/// What the store would do with a descriptor, judged from its claimed id,
/// sequence and hash before paying for verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precheck {
    /// Worth verifying: it would insert, update or reveal equivocation.
    Verify,
    /// Identical bytes already held.
    Duplicate,
    /// Older than what is held or remembered.
    Stale {
        /// The sequence held or remembered.
        held: u64,
    },
    /// The claimed relay is banned.
    Banned,
    /// New relay, store full.
    Full,
}

/// A transferable proof that a relay equivocated: two descriptors it
/// signed (both verified) with the same sequence and different bytes
/// (spec §13.3). Anyone holding both can check it; there is nothing to
/// trust in the relay that shows it.
#[derive(Debug, Clone)]
pub struct EquivocationProof {
    /// One version.
    pub first: Verified<Descriptor>,
    /// The other version.
    pub second: Verified<Descriptor>,
}

impl EquivocationProof {
    /// Same relay, same sequence, different bytes.
    pub fn is_valid(&self) -> bool {
        self.first.id() == self.second.id()
            && self.first.sequence() == self.second.sequence()
            && self.first.hash() != self.second.hash()
    }
}

/// The anti-entropy summary of the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreDigest {
    /// The digest root (README "Anti-entropy").
    pub root: [u8; 32],
    /// Number of descriptors held.
    pub count: u32,
    /// The 256 truncated bucket hashes.
    pub buckets: Box<[BucketHash; BUCKETS]>,
}

/// The store. See the module documentation.
#[derive(Debug)]
pub struct Store {
    /// Limits.
    config: StoreConfig,
    /// 256 buckets by first id byte.
    buckets: Vec<Bucket>,
    /// Descriptors held.
    len: usize,
    /// Relays banned for equivocation.
    banned: BoundedSet<RelayId>,
    /// The proof behind each ban: two descriptors of the relay with the
    /// same sequence and different bytes (bounded like `banned`).
    proofs: BoundedMap<RelayId, EquivocationProof>,
    /// Highest sequences of relays dropped at expiry, with the time until
    /// which they are remembered.
    tombstones: BoundedMap<RelayId, (u64, u64)>,
    /// Earliest expiry among held descriptors (`u64::MAX` when empty), so
    /// [`Store::expire`] scans only when something is due.
    min_expiry: u64,
    /// Cached digest root (None when a bucket changed).
    digest_root: Option<[u8; 32]>,
    /// Cached full Merkle root (None after any change).
    merkle_root: Option<[u8; 32]>,
}

/// One bucket: descriptors whose id starts with one byte value.
#[derive(Debug, Default, Clone)]
struct Bucket {
    /// Sorted by relay id, at most one per id.
    entries: Vec<Verified<Descriptor>>,
    /// Cached truncated Merkle root (None when changed).
    hash: Option<BucketHash>,
}

impl Store {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        Self {
            config,
            buckets: vec![Bucket::default(); BUCKETS],
            len: 0,
            banned: BoundedSet::new(config.banned_capacity),
            proofs: BoundedMap::new(config.banned_capacity),
            tombstones: BoundedMap::new(config.capacity),
            min_expiry: u64::MAX,
            digest_root: None,
            merkle_root: None,
        }
    }

    /// The limits.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Number of descriptors held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The descriptor held for `id`.
    pub fn get(&self, id: &RelayId) -> Option<&Verified<Descriptor>> {
        let bucket = &self.buckets[usize::from(id.0[0])];
        bucket.position(id).ok().and_then(|i| bucket.entries.get(i))
    }

    /// Whether `id` is banned.
    pub fn is_banned(&self, id: &RelayId) -> bool {
        self.banned.contains(id)
    }

    /// Judge a descriptor from its claims, before verification.
    pub fn precheck(&self, id: &RelayId, sequence: u64, hash: &DescriptorHash) -> Precheck {
        if self.banned.contains(id) {
            return Precheck::Banned;
        }
        if let Some(held) = self.get(id) {
            return match sequence.cmp(&held.sequence()) {
                std::cmp::Ordering::Less => Precheck::Stale { held: held.sequence() },
                std::cmp::Ordering::Equal if held.hash() == *hash => Precheck::Duplicate,
                _ => Precheck::Verify,
            };
        }
        if let Some((seq, _)) = self.tombstones.get(id) {
            if sequence <= *seq {
                return Precheck::Stale { held: *seq };
            }
        }
        if self.len >= self.config.capacity {
            return Precheck::Full;
        }
        Precheck::Verify
    }

    /// Offer a verified descriptor. See the module documentation for the
    /// rules.
    pub fn insert(&mut self, d: Verified<Descriptor>) -> InsertOutcome {
        let id = d.id();
        match self.precheck(&id, d.sequence(), &d.hash()) {
            Precheck::Banned => return InsertOutcome::Banned,
            Precheck::Duplicate => return InsertOutcome::Duplicate,
            Precheck::Stale { held } => return InsertOutcome::Stale { held },
            Precheck::Full => return InsertOutcome::Full,
            Precheck::Verify => {}
        }
        self.min_expiry = self.min_expiry.min(d.expires());
        let b = usize::from(id.0[0]);
        match self.buckets[b].position(&id) {
            Ok(i) => {
                let previous = self.buckets[b].entries[i].sequence();
                if previous == d.sequence() {
                    if let Some(held) = self.remove(&id) {
                        self.proofs.insert(id, EquivocationProof { first: held, second: d });
                    }
                    self.banned.insert(id);
                    return InsertOutcome::Equivocation;
                }
                self.buckets[b].entries[i] = d;
                self.changed(b);
                InsertOutcome::Updated { previous }
            }
            Err(i) => {
                self.tombstones.remove(&id);
                self.buckets[b].entries.insert(i, d);
                self.len += 1;
                self.changed(b);
                InsertOutcome::Inserted
            }
        }
    }

    /// Remove the descriptor of `id`, if held.
    pub fn remove(&mut self, id: &RelayId) -> Option<Verified<Descriptor>> {
        let b = usize::from(id.0[0]);
        let i = self.buckets[b].position(id).ok()?;
        let removed = self.buckets[b].entries.remove(i);
        self.len -= 1;
        self.changed(b);
        Some(removed)
    }

    /// Ban `id` (and drop its descriptor).
    pub fn ban(&mut self, id: RelayId) {
        self.remove(&id);
        self.banned.insert(id);
    }

    /// Ban the relay a checked proof convicts, and keep the proof so it can
    /// be shown to others. Returns false (nothing done) if the two
    /// descriptors do not form a proof.
    pub fn ban_with_proof(&mut self, proof: EquivocationProof) -> bool {
        if !proof.is_valid() {
            return false;
        }
        let id = proof.first.id();
        self.remove(&id);
        self.banned.insert(id);
        self.proofs.insert(id, proof);
        true
    }

    /// The proof behind the ban of `id`, if remembered.
    pub fn proof(&self, id: &RelayId) -> Option<&EquivocationProof> {
        self.proofs.get(id)
    }

    /// Drop every descriptor expired at `now_unix`; returns how many.
    pub fn expire(&mut self, now_unix: u64) -> usize {
        self.tombstones.retain_front(|(_, until)| *until > now_unix);
        if now_unix < self.min_expiry {
            return 0;
        }
        let mut removed = 0;
        let mut min_expiry = u64::MAX;
        let remember_until = now_unix.saturating_add(MAX_LIFETIME_S + MAX_CLOCK_SKEW_S);
        for b in 0..BUCKETS {
            let before = self.buckets[b].entries.len();
            let mut dropped = Vec::new();
            self.buckets[b].entries.retain(|d| {
                let keep = now_unix < d.expires();
                if keep {
                    min_expiry = min_expiry.min(d.expires());
                } else {
                    dropped.push((d.id(), d.sequence()));
                }
                keep
            });
            for (id, seq) in dropped {
                self.tombstones.insert(id, (seq, remember_until));
            }
            let gone = before - self.buckets[b].entries.len();
            if gone > 0 {
                removed += gone;
                self.changed(b);
            }
        }
        self.len -= removed;
        self.min_expiry = min_expiry;
        removed
    }

    /// All descriptors in ascending relay-id order.
    pub fn iter(&self) -> impl Iterator<Item = &Verified<Descriptor>> + '_ {
        self.buckets.iter().flat_map(|b| b.entries.iter())
    }

    /// Descriptors with `lo <= id <= hi`, ascending.
    pub fn range<'a>(
        &'a self,
        lo: &'a RelayId,
        hi: &'a RelayId,
    ) -> impl Iterator<Item = &'a Verified<Descriptor>> + 'a {
        let first = usize::from(lo.0[0]);
        let last = usize::from(hi.0[0]);
        let buckets = self.buckets.get(first..=last).unwrap_or_default();
        buckets.iter().flat_map(move |b| {
            let start = b.entries.partition_point(|d| d.id() < *lo);
            let end = b.entries.partition_point(|d| d.id() <= *hi);
            b.entries.get(start..end).unwrap_or_default().iter()
        })
    }

    /// The `n`-th descriptor in id order (for uniform random choice).
    pub fn nth(&self, mut n: usize) -> Option<&Verified<Descriptor>> {
        for b in &self.buckets {
            if n < b.entries.len() {
                return b.entries.get(n);
            }
            n -= b.entries.len();
        }
        None
    }

    /// The Merkle root over all held descriptors in id order (README
    /// "Merkle construction"). Cached until the next change.
    pub fn merkle_root(&mut self) -> [u8; 32] {
        if let Some(root) = self.merkle_root {
            return root;
        }
        let leaves: Vec<DescriptorHash> = self.iter().map(|d| d.hash()).collect();
        let root = merkle::merkle_root(&leaves);
        self.merkle_root = Some(root);
        root
    }

    /// The anti-entropy digest root (cheap: only changed buckets are
    /// rehashed).
    pub fn digest_root(&mut self) -> [u8; 32] {
        if let Some(root) = self.digest_root {
            return root;
        }
        let root = merkle::digest_root(&self.bucket_hashes());
        self.digest_root = Some(root);
        root
    }

    /// The 256 truncated bucket hashes.
    pub fn bucket_hashes(&mut self) -> Box<[BucketHash; BUCKETS]> {
        let mut out = Box::new([[0u8; merkle::BUCKET_HASH_LEN]; BUCKETS]);
        for (slot, bucket) in out.iter_mut().zip(self.buckets.iter_mut()) {
            *slot = *bucket.hash.get_or_insert_with(|| {
                let leaves: Vec<DescriptorHash> = bucket.entries.iter().map(|d| d.hash()).collect();
                merkle::bucket_hash(&leaves)
            });
        }
        out
    }

    /// The anti-entropy summary: digest root, count and bucket hashes.
    pub fn digest(&mut self) -> StoreDigest {
        StoreDigest {
            root: self.digest_root(),
            count: u32::try_from(self.len).unwrap_or(u32::MAX),
            buckets: self.bucket_hashes(),
        }
    }

    /// Descriptors in bucket `b`, ascending (empty for b ≥ 256).
    pub fn bucket(&self, b: usize) -> &[Verified<Descriptor>] {
        self.buckets.get(b).map(|x| x.entries.as_slice()).unwrap_or_default()
    }

    /// An immutable snapshot of the store for `epoch`.
    pub fn snapshot(&mut self, epoch: Epoch) -> Snapshot {
        let root = self.merkle_root();
        let descriptors = self.iter().map(|d| d.as_bytes().to_vec()).collect();
        Snapshot { epoch, root, descriptors }
    }

    /// Invalidate the caches after bucket `b` changed.
    fn changed(&mut self, b: usize) {
        if let Some(bucket) = self.buckets.get_mut(b) {
            bucket.hash = None;
        }
        self.digest_root = None;
        self.merkle_root = None;
    }
}

impl Bucket {
    /// Binary search for `id`.
    fn position(&self, id: &RelayId) -> Result<usize, usize> {
        self.entries.binary_search_by(|d| d.id().cmp(id))
    }
}

/// A set that forgets its oldest member beyond a capacity.
#[derive(Debug)]
struct BoundedSet<T> {
    /// Members.
    set: HashSet<T>,
    /// Insertion order, oldest first.
    order: VecDeque<T>,
    /// Capacity.
    cap: usize,
}

impl<T: Hash + Eq + Copy> BoundedSet<T> {
    /// An empty set of capacity `cap`.
    fn new(cap: usize) -> Self {
        Self { set: HashSet::new(), order: VecDeque::new(), cap }
    }

    /// Whether `v` is a member.
    fn contains(&self, v: &T) -> bool {
        self.set.contains(v)
    }

    /// Add `v`, forgetting the oldest member if full.
    fn insert(&mut self, v: T) {
        if self.cap == 0 || !self.set.insert(v) {
            return;
        }
        self.order.push_back(v);
        while self.order.len() > self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }
}

/// A map that forgets its oldest entry beyond a capacity.
#[derive(Debug)]
struct BoundedMap<K, V> {
    /// Entries.
    map: HashMap<K, V>,
    /// Insertion order, oldest first (may name removed keys).
    order: VecDeque<K>,
    /// Capacity.
    cap: usize,
}

impl<K: Hash + Eq + Copy, V> BoundedMap<K, V> {
    /// An empty map of capacity `cap`.
    fn new(cap: usize) -> Self {
        Self { map: HashMap::new(), order: VecDeque::new(), cap }
    }

    /// The value of `k`.
    fn get(&self, k: &K) -> Option<&V> {
        self.map.get(k)
    }

    /// Remove `k`.
    fn remove(&mut self, k: &K) {
        self.map.remove(k);
    }

    /// Insert, forgetting the oldest entries if full.
    fn insert(&mut self, k: K, v: V) {
        if self.cap == 0 {
            return;
        }
        if self.map.insert(k, v).is_none() {
            self.order.push_back(k);
        }
        while self.map.len() > self.cap || self.order.len() > self.cap.saturating_mul(2) {
            match self.order.pop_front() {
                Some(old) => {
                    self.map.remove(&old);
                }
                None => break,
            }
        }
    }

    /// Drop entries from the oldest end while `keep` is false for them
    /// (entries are inserted in time order, so this expires them).
    fn retain_front(&mut self, mut keep: impl FnMut(&V) -> bool) {
        while let Some(front) = self.order.front() {
            match self.map.get(front) {
                Some(v) if keep(v) => break,
                _ => {
                    if let Some(old) = self.order.pop_front() {
                        self.map.remove(&old);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
