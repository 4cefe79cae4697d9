//! Serving and fetching snapshots over the gossip wire (README "Snapshots",
//! spec §13.2).
//!
//! A relay serves only frozen cuts ([`super::cuts`]): the newest, or the one
//! of the epoch a request names if still held (the previous epoch is). The
//! list is split into chunks of [`MAX_CHUNK_DESCRIPTORS`]. Requests ask for
//! at most [`crate::wire::MAX_REQUEST_CHUNKS`] chunks at a time, so serving
//! a large directory is paced by the requester and never floods a queue.

use rand_core::{CryptoRng, RngCore};

use super::{GossipEngine, Now, PeerId};
use crate::descriptor::Descriptor;
use crate::snapshot::Epoch;
use crate::verify::Unverified;
use crate::wire::{Message, SnapshotChunk, SnapshotRequest, MAX_CHUNK_DESCRIPTORS, MAX_REQUEST_CHUNKS};

/// A frozen cut as served.
#[derive(Debug)]
pub(crate) struct ServedSnapshot {
    /// Its epoch.
    pub(crate) epoch: Epoch,
    /// Its Merkle root.
    pub(crate) root: [u8; 32],
    /// Its descriptors, ascending by relay id.
    pub(crate) descriptors: Vec<Unverified<Descriptor>>,
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
    /// Chunks `req.start ..` (at most `req.max_chunks`) of the frozen cut
    /// of `req.epoch` (`Epoch(0)`: the newest frozen), for a client
    /// connection or a relay peer. Empty if `serve_snapshots` is off, that
    /// cut is not served, or `start` is past the end. Serving never cuts
    /// or freezes anything: what is served does not depend on when it is
    /// asked (`_now` is kept for the callers' symmetry with other calls).
    pub fn serve_snapshot(&mut self, _now: Now, req: SnapshotRequest) -> Vec<SnapshotChunk> {
        if !self.config.serve_snapshots {
            return Vec::new();
        }
        let epoch = if req.epoch == Epoch(0) { self.newest_served() } else { Some(req.epoch) };
        let Some(snap) = epoch.and_then(|e| self.cuts.get(&e)).and_then(|c| c.frozen.as_ref()) else {
            return Vec::new();
        };
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
        let req = SnapshotRequest { start: 0, max_chunks: MAX_REQUEST_CHUNKS, epoch: Epoch(0) };
        self.enqueue(peer, Message::SnapshotRequest(req));
    }

    /// A `SnapshotRequest` from a relay peer: queue the chunks.
    pub(super) fn handle_snapshot_request(&mut self, now: Now, from: PeerId, req: SnapshotRequest) {
        let chunks = self.serve_snapshot(now, req);
        if chunks.is_empty() {
            let newest = self.newest_served().map_or(0, |e| e.0);
            self.enqueue(from, Message::Unavailable { newest });
        }
        if let Some(first) = chunks.first().filter(|c| c.index == 0) {
            let epoch = first.epoch;
            for proof in self.served_proofs() {
                self.enqueue(from, Message::StatementConflict(Box::new(proof)));
            }
            if let Some(statement) = self.statement(epoch) {
                self.enqueue(from, Message::Statement(statement));
            }
        }
        for chunk in chunks {
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
            let req = SnapshotRequest { start: requested_end, max_chunks: MAX_REQUEST_CHUNKS, epoch: chunk.epoch };
            self.enqueue(from, Message::SnapshotRequest(req));
        }
    }
}
