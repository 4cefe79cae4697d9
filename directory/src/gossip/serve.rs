//! Serving and fetching snapshots over the gossip wire (README "Snapshots").
//!
//! At each epoch boundary the engine cuts the snapshot it will serve for
//! the whole epoch: every held descriptor still valid at the end of the
//! epoch (so a client verifying at any time during the epoch finds none
//! expired), its Merkle root, and the list split into chunks of
//! [`MAX_CHUNK_DESCRIPTORS`]. Requests ask for at most
//! [`crate::wire::MAX_REQUEST_CHUNKS`] chunks at a time, so serving a large
//! directory is paced by the requester and never floods a queue.

use rand_core::{CryptoRng, RngCore};

use super::{GossipEngine, Now, PeerId};
use crate::descriptor::{Descriptor, DescriptorHash};
use crate::snapshot::Epoch;
use crate::store::merkle::merkle_root;
use crate::verify::{Unverified, Verified};
use crate::wire::{Message, SnapshotChunk, SnapshotRequest, MAX_CHUNK_DESCRIPTORS, MAX_REQUEST_CHUNKS};

/// The snapshot served during one epoch.
#[derive(Debug)]
pub(crate) struct ServedSnapshot {
    /// Its epoch.
    epoch: Epoch,
    /// Its Merkle root.
    root: [u8; 32],
    /// Its descriptors, ascending by relay id.
    descriptors: Vec<Unverified<Descriptor>>,
}

/// A snapshot download we started from a peer.
#[derive(Debug)]
pub(crate) struct SnapshotFetch {
    /// The serving peer.
    pub(crate) peer: PeerId,
    /// End (exclusive) of the chunk batch last requested.
    requested_end: u16,
    /// When to give up.
    pub(crate) deadline_ms: u64,
}

impl<R: RngCore + CryptoRng> GossipEngine<R> {
    /// Chunks `req.start ..` (at most `req.max_chunks`) of this epoch's
    /// snapshot, for a client connection or a relay peer. Empty if
    /// `serve_snapshots` is off or `start` is past the end.
    pub fn serve_snapshot(&mut self, now: Now, req: SnapshotRequest) -> Vec<SnapshotChunk> {
        if !self.config.serve_snapshots {
            return Vec::new();
        }
        let epoch = self.epoch(now);
        if self.snapshot.as_ref().is_none_or(|s| s.epoch != epoch) {
            self.cut_snapshot(now);
        }
        let Some(snap) = &self.snapshot else { return Vec::new() };
        let total = u16::try_from(snap.descriptors.len().div_ceil(MAX_CHUNK_DESCRIPTORS).max(1)).unwrap_or(u16::MAX);
        let count = req.max_chunks.min(MAX_REQUEST_CHUNKS);
        let end = req.start.saturating_add(u16::from(count)).min(total);
        (req.start..end)
            .map(|index| {
                let from = usize::from(index) * MAX_CHUNK_DESCRIPTORS;
                let to = (from + MAX_CHUNK_DESCRIPTORS).min(snap.descriptors.len());
                SnapshotChunk {
                    epoch: snap.epoch,
                    root: snap.root,
                    index,
                    total,
                    descriptors: snap.descriptors.get(from..to).unwrap_or_default().to_vec(),
                }
            })
            .collect()
    }

    /// Start downloading `peer`'s snapshot into our store (relay start-up).
    /// Each descriptor is verified like any gossip and none is forwarded.
    pub fn request_snapshot(&mut self, now: Now, peer: PeerId) {
        let deadline_ms = now.mono_ms.saturating_add(self.config.session_timeout_ms.saturating_mul(3));
        self.snapshot_fetch = Some(SnapshotFetch { peer, requested_end: u16::from(MAX_REQUEST_CHUNKS), deadline_ms });
        let req = SnapshotRequest { start: 0, max_chunks: MAX_REQUEST_CHUNKS };
        self.enqueue(peer, Message::SnapshotRequest(req));
    }

    /// Cut the snapshot of the current epoch from the store.
    pub(super) fn cut_snapshot(&mut self, now: Now) {
        let epoch = self.epoch(now);
        let epoch_end = epoch.0.saturating_add(1).saturating_mul(self.config.epoch_len_s);
        let descriptors: Vec<Unverified<Descriptor>> =
            self.store.iter().filter(|d| d.expires() > epoch_end).map(Verified::to_unverified).collect();
        let leaves: Vec<DescriptorHash> = descriptors.iter().map(Unverified::hash).collect();
        let root = merkle_root(&leaves);
        self.snapshot = Some(ServedSnapshot { epoch, root, descriptors });
    }

    /// A `SnapshotRequest` from a relay peer: queue the chunks.
    pub(super) fn handle_snapshot_request(&mut self, now: Now, from: PeerId, req: SnapshotRequest) {
        for chunk in self.serve_snapshot(now, req) {
            self.enqueue(from, Message::SnapshotChunk(chunk));
        }
    }

    /// A chunk of a snapshot we are downloading: admit its descriptors and
    /// ask for the next batch after the last chunk of this one.
    pub(super) fn handle_snapshot_chunk(&mut self, now: Now, from: PeerId, chunk: SnapshotChunk) {
        let Some(fetch) = self.snapshot_fetch.as_ref().filter(|f| f.peer == from) else {
            self.stats.unsolicited += 1;
            return;
        };
        let requested_end = fetch.requested_end;
        for d in chunk.descriptors {
            let _ = self.admit(now, d, false);
        }
        if chunk.index.saturating_add(1) >= chunk.total {
            self.snapshot_fetch = None;
        } else if chunk.index.saturating_add(1) == requested_end {
            let next_end = requested_end.saturating_add(u16::from(MAX_REQUEST_CHUNKS));
            if let Some(f) = self.snapshot_fetch.as_mut() {
                f.requested_end = next_end;
            }
            let req = SnapshotRequest { start: requested_end, max_chunks: MAX_REQUEST_CHUNKS };
            self.enqueue(from, Message::SnapshotRequest(req));
        }
    }
}
