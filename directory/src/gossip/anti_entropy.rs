//! Anti-entropy: periodic repair with one partner drawn from the whole
//! directory (README "Anti-entropy").
//!
//! ```text
//! initiator A                                   partner B
//!   DigestRequest{epoch, root_A, count_A}  ->
//!                                               root_A == root_B: done (silence)
//!                                          <-   Summary{root_B, 256 bucket hashes}
//!   buckets that differ, merged into id ranges:
//!   Digest{lo, hi, A's (id, seq) in [lo, hi]} ->  (<= 512 entries each)
//!                                               compare with B's entries in [lo, hi]:
//!                                          <-   Want{ids where A is newer or B lacks}
//!                                          <-   Push{B's descriptors where B is newer or A lacks}
//!   Push{wanted descriptors}               ->
//! ```
//!
//! In sync, a round costs one 45-byte message. Out of sync by one
//! descriptor, it costs a 4 KiB summary plus the entries of one or two
//! buckets. Partners are drawn uniformly from the store, so a relay
//! surrounded by attacker peers still repairs against the whole network
//! (neighbour-only repair would leave eclipsed pockets). Replies are
//! accepted only inside an exchange (`Summary` only from a partner we asked,
//! `Digest` only from a peer we sent a `Summary`), and answers are capped
//! per exchange, so digests cannot be used to amplify traffic.

use std::cmp::Ordering;

use rand_core::{CryptoRng, RngCore};

use lamina_crypto::keys::RelayId;

use super::{uniform, ConnectPurpose, Event, GossipEngine, InSession, Now, PeerId, Pending};
use crate::descriptor::Descriptor;
use crate::snapshot::Epoch;
use crate::store::merkle::{BucketHash, BUCKETS};
use crate::verify::{Unverified, Verified};
use crate::wire::{
    Digest, DigestEntry, DigestRequest, InSync, Message, Push, Summary, Want, LIVE, MAX_DIGEST_ENTRIES, MAX_PUSH,
    MAX_WANT,
};

/// How many draws to find a partner other than ourselves.
const PARTNER_DRAWS: usize = 8;

impl<R: RngCore + CryptoRng> GossipEngine<R> {
    /// Start one anti-entropy round: draw a partner uniformly from the
    /// store; talk to it now if connected, else ask the driver to dial it.
    pub(super) fn start_round(&mut self, now: Now) {
        self.stats.ae_rounds += 1;
        let Some(partner) = self.pick_partner() else { return };
        if let Some(peer) = self.peers.find_relay(&partner.relay) {
            self.begin_exchange(now, peer);
            return;
        }
        if self.pending.len() >= self.config.max_outbound + self.config.max_transient {
            return;
        }
        let deadline_ms = now.mono_ms.saturating_add(self.config.session_timeout_ms);
        self.pending.insert(partner, Pending { purpose: ConnectPurpose::AntiEntropy, deadline_ms });
        self.emit(Event::Connect { peer: partner, purpose: ConnectPurpose::AntiEntropy });
    }

    /// A uniformly drawn relay of the directory other than us.
    fn pick_partner(&mut self) -> Option<PeerId> {
        for _ in 0..PARTNER_DRAWS {
            let index = uniform(&mut self.rng, self.store.len());
            let d = self.store.nth(index)?;
            if d.id() == self.own {
                continue;
            }
            let addr = *d.addresses().first()?;
            return Some(PeerId { relay: d.id(), addr });
        }
        None
    }

    /// Send our digest root of the live store to a connected partner.
    pub(super) fn begin_exchange(&mut self, now: Now, peer: PeerId) {
        self.begin_scoped_exchange(now, peer, LIVE);
    }

    /// A partner's digest root for a scope: for the live store silence if
    /// equal; for a cut `InSync` if equal (both sides then know they
    /// agree); else our bucket hashes of that set.
    pub(super) fn handle_digest_request(&mut self, now: Now, from: PeerId, req: &DigestRequest) {
        let scope = req.epoch;
        let Some(root) = self.scope_root(scope) else {
            self.stats.unsolicited += 1;
            return;
        };
        if req.root == root {
            self.stats.ae_in_sync += 1;
            if scope != LIVE {
                self.enqueue(from, Message::InSync(InSync { epoch: scope, root: req.root }));
                self.cut_in_sync(now, scope);
            }
            return;
        }
        let key = (from, scope);
        if !self.in_sessions.contains_key(&key) && self.in_sessions.len() >= self.config.max_sessions {
            self.stats.ae_refused += 1;
            return;
        }
        let session = InSession {
            deadline_ms: now.mono_ms.saturating_add(self.config.session_timeout_ms),
            pushes_left: self.config.max_session_pushes,
            wants_left: self.config.max_session_wants,
        };
        self.in_sessions.insert(key, session);
        let Some(set) = self.set_mut(scope) else { return };
        let digest = set.digest();
        let summary = Summary { epoch: scope, root, count: digest.count, buckets: digest.buckets };
        self.enqueue(from, Message::Summary(summary));
        self.send_cut_evidence(from, scope);
    }

    /// The partner says our cuts of a scope are equal.
    pub(super) fn handle_in_sync(&mut self, now: Now, from: PeerId, sync: InSync) {
        if self.out_sessions.remove(&(from, sync.epoch)).is_none() {
            self.stats.unsolicited += 1;
            return;
        }
        if self.scope_root(sync.epoch) == Some(sync.root) {
            self.cut_in_sync(now, sync.epoch);
        }
    }

    /// The partner's bucket hashes: send our entries of differing buckets.
    pub(super) fn handle_summary(&mut self, now: Now, from: PeerId, summary: &Summary) {
        let scope = summary.epoch;
        if self.out_sessions.remove(&(from, scope)).is_none() {
            self.stats.unsolicited += 1;
            return;
        }
        let Some(root) = self.scope_root(scope) else { return };
        if summary.root == root {
            self.cut_in_sync(now, scope);
            return;
        }
        self.send_cut_evidence(from, scope);
        let Some(set) = self.set_mut(scope) else { return };
        let mine = set.bucket_hashes();
        let mut digests = Vec::new();
        for (first, last) in differing_runs(&mine, &summary.buckets) {
            let lo = RelayId(bucket_bound(first, 0x00));
            let hi = RelayId(bucket_bound(last, 0xff));
            let entries: Vec<DigestEntry> = set
                .range(&lo, &hi)
                .map(|d| DigestEntry { id: d.id(), sequence: d.sequence(), hash: d.hash() })
                .collect();
            digests.extend(split_range(scope, lo, hi, &entries));
        }
        for digest in digests.into_iter().take(self.config.max_digest_messages) {
            self.stats.digests_sent += 1;
            self.enqueue(from, Message::Digest(digest));
        }
    }

    /// The partner's entries for a range: want what it has newer (or a
    /// different version of the same sequence), push what we have newer,
    /// it lacks, or conflicts; show the proof for a relay we banned (within
    /// the exchange's caps).
    pub(super) fn handle_digest(&mut self, now: Now, from: PeerId, digest: &Digest) {
        let key = (from, digest.epoch);
        let Some(mut session) = self.in_sessions.get(&key).copied() else {
            self.stats.unsolicited += 1;
            return;
        };
        if session.deadline_ms <= now.mono_ms {
            self.in_sessions.remove(&key);
            self.stats.unsolicited += 1;
            return;
        }
        let Some(set) = self.set_ref(digest.epoch) else { return };
        let mine: Vec<Verified<Descriptor>> = set.range(&digest.lo, &digest.hi).cloned().collect();
        let (mut wants, mut pushes, convicted) = self.compare(digest.epoch, &digest.entries, &mine);
        wants.truncate(session.wants_left);
        pushes.truncate(session.pushes_left);
        session.wants_left -= wants.len();
        session.pushes_left -= pushes.len();
        self.in_sessions.insert(key, session);
        for ids in wants.chunks(MAX_WANT) {
            self.stats.wants_sent += u64::try_from(ids.len()).unwrap_or(u64::MAX);
            self.enqueue(from, Message::Want(Want { ids: ids.to_vec() }));
        }
        let mut out: Vec<Unverified<Descriptor>> = pushes.iter().map(Verified::to_unverified).collect();
        for id in convicted {
            if let Some(pair) = self.proof_descriptors(&id) {
                out.extend(pair);
            }
        }
        self.send_pushes(from, &out);
    }

    /// A `Want`: push every version we hold of each wanted descriptor
    /// (live store and cuts), so a conflicting pair travels whole.
    pub(super) fn handle_want(&mut self, from: PeerId, want: &Want) {
        let mut found: Vec<Unverified<Descriptor>> = Vec::new();
        for id in &want.ids {
            found.extend(self.versions_of(id).iter().map(Verified::to_unverified));
            if let Some(pair) = self.proof_descriptors(id) {
                found.extend(pair);
            }
        }
        self.send_pushes(from, &found);
    }

    /// Push `ds` to `peer` in messages of at most [`MAX_PUSH`].
    fn send_pushes(&mut self, peer: PeerId, ds: &[Unverified<Descriptor>]) {
        for chunk in ds.chunks(MAX_PUSH) {
            self.stats.repairs_sent += u64::try_from(chunk.len()).unwrap_or(u64::MAX);
            self.enqueue(peer, Message::Push(Push { descriptors: chunk.to_vec() }));
        }
    }

    /// Merge-walk the partner's sorted entries against ours (same range, set
    /// of `scope`): returns (ids to want, descriptors to push, ids the
    /// partner holds that we banned on a proof).
    fn compare(
        &self,
        scope: Epoch,
        theirs: &[DigestEntry],
        mine: &[Verified<Descriptor>],
    ) -> (Vec<RelayId>, Vec<Verified<Descriptor>>, Vec<RelayId>) {
        let banned = |id: &RelayId| self.store.is_banned(id);
        // Our own descriptor comes only from us, except an older one a cut
        // needs after a restart.
        let wantable = |id: &RelayId| (scope != LIVE || *id != self.own) && !banned(id);
        let (mut wants, mut pushes, mut convicted) = (Vec::new(), Vec::new(), Vec::new());
        let mut want_or_convict = |id: RelayId, wants: &mut Vec<RelayId>| {
            if banned(&id) {
                convicted.push(id);
            } else if wantable(&id) {
                wants.push(id);
            }
        };
        let (mut i, mut j) = (0, 0);
        loop {
            match (theirs.get(i), mine.get(j)) {
                (Some(t), Some(m)) => match t.id.cmp(&m.id()) {
                    Ordering::Less => {
                        want_or_convict(t.id, &mut wants);
                        i += 1;
                    }
                    Ordering::Greater => {
                        pushes.push(m.clone());
                        j += 1;
                    }
                    Ordering::Equal => {
                        match t.sequence.cmp(&m.sequence()) {
                            Ordering::Greater => want_or_convict(t.id, &mut wants),
                            Ordering::Less => pushes.push(m.clone()),
                            // Same sequence, other bytes: exchange both
                            // versions; each side then holds the proof.
                            Ordering::Equal if t.hash != m.hash() => {
                                pushes.push(m.clone());
                                want_or_convict(t.id, &mut wants);
                            }
                            Ordering::Equal => {}
                        }
                        i += 1;
                        j += 1;
                    }
                },
                (Some(t), None) => {
                    want_or_convict(t.id, &mut wants);
                    i += 1;
                }
                (None, Some(m)) => {
                    pushes.push(m.clone());
                    j += 1;
                }
                (None, None) => break,
            }
        }
        (wants, pushes, convicted)
    }
}

/// Maximal runs `(first, last)` of consecutive buckets whose hashes differ.
pub(crate) fn differing_runs(mine: &[BucketHash; BUCKETS], theirs: &[BucketHash; BUCKETS]) -> Vec<(u8, u8)> {
    let mut runs: Vec<(u8, u8)> = Vec::new();
    for (b, (m, t)) in (0..=u8::MAX).zip(mine.iter().zip(theirs.iter())) {
        if m == t {
            continue;
        }
        match runs.last_mut() {
            Some((_, last)) if u16::from(*last) + 1 == u16::from(b) => *last = b,
            _ => runs.push((b, b)),
        }
    }
    runs
}

/// The lowest (`fill` 0x00) or highest (`fill` 0xff) id of bucket `b`.
fn bucket_bound(b: u8, fill: u8) -> [u8; 32] {
    let mut id = [fill; 32];
    id[0] = b;
    id
}

/// The id right after `id` (None for the all-ones id).
fn successor(id: &RelayId) -> Option<RelayId> {
    let mut out = id.0;
    for byte in out.iter_mut().rev() {
        if *byte == 0xff {
            *byte = 0;
        } else {
            *byte += 1;
            return Some(RelayId(out));
        }
    }
    None
}

/// Split `[lo, hi]` and its sorted `entries` into `Digest` messages of at
/// most [`MAX_DIGEST_ENTRIES`] entries that together cover the whole range.
pub(crate) fn split_range(epoch: Epoch, lo: RelayId, hi: RelayId, entries: &[DigestEntry]) -> Vec<Digest> {
    let mut out = Vec::new();
    let mut start = lo;
    let mut rest = entries;
    loop {
        let take = rest.len().min(MAX_DIGEST_ENTRIES);
        let (chunk, tail) = rest.split_at(take);
        let end = match (tail.is_empty(), chunk.last()) {
            (false, Some(last)) => last.id,
            _ => hi,
        };
        out.push(Digest { epoch, lo: start, hi: end, entries: chunk.to_vec() });
        if tail.is_empty() {
            break;
        }
        match successor(&end) {
            Some(next) => start = next,
            None => break,
        }
        rest = tail;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Consecutive differing buckets merge into one run.
    #[test]
    fn runs_merge_consecutive_buckets() {
        let mine = [[0u8; 16]; BUCKETS];
        let mut theirs = mine;
        for b in [3usize, 4, 5, 9, 255] {
            theirs[b] = [1; 16];
        }
        assert_eq!(differing_runs(&mine, &theirs), vec![(3, 5), (9, 9), (255, 255)]);
    }

    /// A long range splits into chunks that tile it exactly.
    #[test]
    fn split_range_tiles_the_range() {
        let entries: Vec<DigestEntry> = (0..1100u32)
            .map(|i| {
                let mut id = [0x07u8; 32];
                id[28..].copy_from_slice(&i.to_be_bytes());
                DigestEntry { id: RelayId(id), sequence: 1, hash: crate::descriptor::DescriptorHash([0; 32]) }
            })
            .collect();
        let lo = RelayId(bucket_bound(7, 0));
        let hi = RelayId(bucket_bound(7, 0xff));
        let parts = split_range(Epoch(1), lo, hi, &entries);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].lo, lo);
        assert_eq!(parts[2].hi, hi);
        assert_eq!(successor(&parts[0].hi), Some(parts[1].lo));
        assert_eq!(successor(&parts[1].hi), Some(parts[2].lo));
        assert_eq!(parts.iter().map(|p| p.entries.len()).sum::<usize>(), 1100);
    }

    /// An empty range still yields one (empty) digest.
    #[test]
    fn empty_range_yields_one_digest() {
        let parts = split_range(Epoch(0), RelayId([0; 32]), RelayId([0xff; 32]), &[]);
        assert_eq!(parts.len(), 1);
        assert!(parts[0].entries.is_empty());
    }
}
