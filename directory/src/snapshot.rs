//! Snapshots: the immutable directory view a seed relay serves and a client
//! checks (spec §9, §13; README "Snapshots").
//!
//! Time is cut into epochs of a configured length (`epoch = floor(now_unix /
//! epoch_len)`). A snapshot names its epoch, the Merkle root of the store
//! (README "Merkle construction") and carries every descriptor in relay-id
//! order. A client downloads one from several seeds, calls
//! [`Snapshot::verify_all`] on each — which decodes and verifies every
//! descriptor and recomputes the root — and accepts the root a majority of
//! seeds agree on.
//!
//! # Encoding
//!
//! ```text
//! version u8 = 0x01
//! epoch   u64
//! root    32 bytes
//! count   u32 (<= MAX_SNAPSHOT_DESCRIPTORS)
//! count x (len u16 (<= 1024) | descriptor bytes)
//! ```
//!
//! Over the gossip wire a snapshot travels as [`SnapshotChunk`]s of at most
//! 32 descriptors; [`SnapshotAssembler`] puts them back together.

use lamina_proto::codec::{Reader, Writer};

use crate::descriptor::{Descriptor, DescriptorHash, MAX_DESCRIPTOR_LEN, MIN_DESCRIPTOR_LEN};
use crate::error::{DescriptorError, SnapshotError, WireError};
use crate::store::merkle::merkle_root;
use crate::verify::Verified;
use crate::wire::{wire_err, SnapshotChunk};

/// Version byte of the snapshot encoding.
pub const SNAPSHOT_VERSION: u8 = 0x01;
/// Most descriptors a snapshot may carry (ten times the default store).
pub const MAX_SNAPSHOT_DESCRIPTORS: usize = 100_000;
/// Default epoch length in seconds.
pub const DEFAULT_EPOCH_LEN_S: u64 = 3600;

/// An epoch number: `floor(now_unix / epoch_len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch containing `now_unix` for epochs of `epoch_len_s` seconds
    /// (epoch 0 if the length is 0, which configuration validation forbids).
    pub fn at(now_unix: u64, epoch_len_s: u64) -> Self {
        Self(now_unix.checked_div(epoch_len_s).unwrap_or(0))
    }
}

/// A served snapshot: epoch, claimed root and descriptor bytes in relay-id
/// order. Nothing in it is trusted until [`Snapshot::verify_all`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The epoch it was taken in.
    pub epoch: Epoch,
    /// The claimed Merkle root.
    pub root: [u8; 32],
    /// Encoded descriptors, ascending by relay id.
    pub descriptors: Vec<Vec<u8>>,
}

/// A snapshot whose every descriptor verified and whose root matched.
#[derive(Debug, Clone)]
pub struct VerifiedSnapshot {
    /// The epoch.
    pub epoch: Epoch,
    /// The recomputed (and matching) Merkle root.
    pub root: [u8; 32],
    /// The verified descriptors, ascending by relay id.
    pub descriptors: Vec<Verified<Descriptor>>,
}

impl Snapshot {
    /// Decode every descriptor, verify it at `now_unix` and `pow_difficulty`,
    /// check strict relay-id order, recompute the Merkle root and compare it
    /// with the claimed one.
    pub fn verify_all(&self, now_unix: u64, pow_difficulty: u8) -> Result<VerifiedSnapshot, SnapshotError> {
        if self.descriptors.len() > MAX_SNAPSHOT_DESCRIPTORS {
            return Err(SnapshotError::InconsistentChunk("too many descriptors"));
        }
        let mut out: Vec<Verified<Descriptor>> = Vec::with_capacity(self.descriptors.len());
        let mut leaves: Vec<DescriptorHash> = Vec::with_capacity(self.descriptors.len());
        for (index, bytes) in self.descriptors.iter().enumerate() {
            let d = Descriptor::decode(bytes)
                .and_then(|u| u.verify(now_unix, pow_difficulty))
                .map_err(|source| SnapshotError::Descriptor { index, source })?;
            if out.last().is_some_and(|prev| prev.id() >= d.id()) {
                return Err(SnapshotError::NotSorted { index });
            }
            leaves.push(d.hash());
            out.push(d);
        }
        let root = merkle_root(&leaves);
        if root != self.root {
            return Err(SnapshotError::RootMismatch);
        }
        Ok(VerifiedSnapshot { epoch: self.epoch, root, descriptors: out })
    }

    /// Client-side check (spec §13.5): decode every descriptor, check
    /// strict relay-id order and the root over the set *as served*, then
    /// verify each descriptor at `now_unix` and drop, with its index and
    /// reason, those that fail (a relay with a skewed clock, one that just
    /// expired) instead of voiding the whole snapshot. A malformed entry,
    /// a wrong order or a wrong root still voids it.
    pub fn verify_served(
        &self,
        now_unix: u64,
        pow_difficulty: u8,
    ) -> Result<(VerifiedSnapshot, Vec<(usize, DescriptorError)>), SnapshotError> {
        if self.descriptors.len() > MAX_SNAPSHOT_DESCRIPTORS {
            return Err(SnapshotError::InconsistentChunk("too many descriptors"));
        }
        let mut parsed = Vec::with_capacity(self.descriptors.len());
        let mut leaves: Vec<DescriptorHash> = Vec::with_capacity(self.descriptors.len());
        for (index, bytes) in self.descriptors.iter().enumerate() {
            let d = Descriptor::decode(bytes).map_err(|source| SnapshotError::Descriptor { index, source })?;
            if parsed
                .last()
                .is_some_and(|prev: &crate::verify::Unverified<Descriptor>| prev.claimed_id() >= d.claimed_id())
            {
                return Err(SnapshotError::NotSorted { index });
            }
            leaves.push(d.hash());
            parsed.push(d);
        }
        if merkle_root(&leaves) != self.root {
            return Err(SnapshotError::RootMismatch);
        }
        let mut out = Vec::with_capacity(parsed.len());
        let mut dropped = Vec::new();
        for (index, d) in parsed.into_iter().enumerate() {
            match d.verify(now_unix, pow_difficulty) {
                Ok(v) => out.push(v),
                Err(e) => dropped.push((index, e)),
            }
        }
        Ok((VerifiedSnapshot { epoch: self.epoch, root: self.root, descriptors: out }, dropped))
    }

    /// The canonical encoding (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let total: usize = self.descriptors.iter().map(|d| d.len() + 2).sum();
        let mut w = Writer::with_capacity(45 + total);
        w.put_u8(SNAPSHOT_VERSION);
        w.put_u64(self.epoch.0);
        w.put_bytes(&self.root);
        w.put_u32(u32::try_from(self.descriptors.len()).unwrap_or(u32::MAX));
        for d in &self.descriptors {
            // Descriptors in a snapshot came out of a store, so each is at
            // most MAX_DESCRIPTOR_LEN and the prefix cannot fail.
            let _ = w.put_bytes_u16_len("descriptor", d, MAX_DESCRIPTOR_LEN);
        }
        w.into_vec()
    }

    /// Decode a snapshot (descriptors stay undecoded bytes until
    /// [`Snapshot::verify_all`]). Counts are checked before allocating;
    /// trailing bytes are rejected.
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        decode_snapshot(bytes).map_err(SnapshotError::Malformed)
    }
}

/// The decoder behind [`Snapshot::decode`].
fn decode_snapshot(bytes: &[u8]) -> Result<Snapshot, WireError> {
    let mut r = Reader::new(bytes);
    let version = r.u8().map_err(wire_err)?;
    if version != SNAPSHOT_VERSION {
        return Err(WireError::Malformed { what: "snapshot", reason: "unknown version" });
    }
    let epoch = Epoch(r.u64().map_err(wire_err)?);
    let root = r.array::<32>().map_err(wire_err)?;
    let count = usize::try_from(r.u32().map_err(wire_err)?).unwrap_or(usize::MAX);
    if count > MAX_SNAPSHOT_DESCRIPTORS {
        return Err(WireError::CountAboveMax { what: "snapshot descriptors", count, max: MAX_SNAPSHOT_DESCRIPTORS });
    }
    // Each entry needs at least a prefix and a minimal descriptor: refuse a
    // count the remaining bytes cannot hold before allocating for it.
    if count.saturating_mul(2 + MIN_DESCRIPTOR_LEN) > r.remaining() {
        return Err(WireError::Truncated { deficit: count.saturating_mul(2 + MIN_DESCRIPTOR_LEN) - r.remaining() });
    }
    let mut descriptors = Vec::with_capacity(count);
    for _ in 0..count {
        let d = r.bytes_u16_len("snapshot descriptor", MAX_DESCRIPTOR_LEN).map_err(wire_err)?;
        descriptors.push(d.to_vec());
    }
    if r.remaining() != 0 {
        return Err(WireError::TrailingBytes);
    }
    Ok(Snapshot { epoch, root, descriptors })
}

/// Reassembles a snapshot from [`SnapshotChunk`]s (any order, duplicates
/// ignored). All chunks must agree on epoch, root and total.
#[derive(Debug, Default)]
pub struct SnapshotAssembler {
    /// (epoch, root, total) fixed by the first chunk.
    header: Option<(Epoch, [u8; 32], u16)>,
    /// Received chunks by index.
    chunks: Vec<Option<Vec<Vec<u8>>>>,
    /// Number of distinct chunks received.
    received: usize,
    /// Descriptors received so far.
    descriptors: usize,
}

impl SnapshotAssembler {
    /// An empty assembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a chunk. Returns the whole snapshot once every chunk arrived.
    pub fn add(&mut self, chunk: &SnapshotChunk) -> Result<Option<Snapshot>, SnapshotError> {
        let header = (chunk.epoch, chunk.root, chunk.total);
        let (epoch, root, total) = *self.header.get_or_insert(header);
        if header != (epoch, root, total) {
            return Err(SnapshotError::InconsistentChunk("epoch, root or total differs between chunks"));
        }
        if self.chunks.is_empty() {
            self.chunks = vec![None; usize::from(total)];
        }
        let slot = self
            .chunks
            .get_mut(usize::from(chunk.index))
            .ok_or(SnapshotError::InconsistentChunk("index beyond total"))?;
        if slot.is_none() {
            self.descriptors = self.descriptors.saturating_add(chunk.descriptors.len());
            if self.descriptors > MAX_SNAPSHOT_DESCRIPTORS {
                return Err(SnapshotError::InconsistentChunk("too many descriptors"));
            }
            *slot = Some(chunk.descriptors.iter().map(|d| d.as_bytes().to_vec()).collect());
            self.received += 1;
        }
        if self.received < self.chunks.len() {
            return Ok(None);
        }
        let descriptors = self.chunks.iter_mut().flat_map(|c| c.take().unwrap_or_default()).collect();
        *self = Self::default();
        Ok(Some(Snapshot { epoch, root, descriptors }))
    }
}

#[cfg(test)]
mod tests;
