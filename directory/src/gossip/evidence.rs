//! Reachability attestations in the gossip engine (spec §14.2): a bounded
//! live pool fed by gossip and our own probes, and one agreed set per open
//! cut, reconciled with the cut's descriptors before it is frozen.
//!
//! A set holds at most one attestation per (subject, attester): the newest
//! by `observed_at` (ties: the smaller encoding), a max-register, so the
//! union of two sets does not depend on the order things arrived in. At
//! most [`MAX_PER_SUBJECT`] attesters are kept per subject: those with the
//! smallest `SHA-256("lamina-attest-keep" | scope | subject | attester)`,
//! again order-independent. A set holds at most `capacity` pairs; past it,
//! new pairs are refused (the only order-dependent case, under flooding).

use std::collections::BTreeMap;

use lamina_crypto::digest::sha256;
use lamina_crypto::keys::RelayId;
use rand_core::{CryptoRng, RngCore};

use super::{GossipEngine, Now, PeerId};
use crate::attest::{AttestParams, Attestation, Attested};
use crate::cut::CutRule;
use crate::snapshot::Epoch;
use crate::wire::{AttestationBatch, Message, LIVE, MAX_BATCH_ATTESTATIONS};

/// Most attesters kept per subject in one set.
pub(crate) const MAX_PER_SUBJECT: usize = 8;
/// Most (subject, attester) pairs in one set.
pub(crate) const EVIDENCE_CAPACITY: usize = 65_536;
/// Most attestations sent to a partner in one cut exchange.
pub(crate) const MAX_EVIDENCE_PER_EXCHANGE: usize = 1_024;

/// One bounded set of verified attestations.
#[derive(Debug, Clone)]
pub(crate) struct EvidenceSet {
    /// Salt of the per-subject keep rank (the scope's epoch number).
    scope: Epoch,
    /// By (subject, attester).
    map: BTreeMap<(RelayId, RelayId), Attested>,
    /// Most pairs held.
    capacity: usize,
    /// Cached digest, cleared on change.
    digest: Option<[u8; 32]>,
}

/// The keep rank of an attester for a subject (smaller is kept).
fn keep_rank(scope: Epoch, subject: &RelayId, attester: &RelayId) -> [u8; 32] {
    sha256(&[b"lamina-attest-keep", &scope.0.to_be_bytes(), &subject.0, &attester.0])
}

/// Whether `a` replaces `b` for the same pair: newer, or as new with the
/// smaller encoding.
fn newer(a: &Attested, b: &Attested) -> bool {
    let (x, y) = (a.body().observed_at, b.body().observed_at);
    x > y || (x == y && a.attestation().encode() < b.attestation().encode())
}

impl EvidenceSet {
    /// An empty set for `scope` holding at most `capacity` pairs.
    pub(crate) fn new(scope: Epoch, capacity: usize) -> Self {
        Self { scope, map: BTreeMap::new(), capacity, digest: None }
    }

    /// Number of pairs held.
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Every attestation held, by (subject, attester).
    pub(crate) fn iter(&self) -> std::collections::btree_map::Values<'_, (RelayId, RelayId), Attested> {
        self.map.values()
    }

    /// Offer a verified attestation; returns whether the set changed.
    pub(crate) fn offer(&mut self, a: &Attested) -> bool {
        let key = (a.body().subject, a.body().attester);
        if let Some(held) = self.map.get(&key) {
            if !newer(a, held) {
                return false;
            }
            self.map.insert(key, a.clone());
            self.digest = None;
            return true;
        }
        let lo = (key.0, RelayId([0; 32]));
        let hi = (key.0, RelayId([0xff; 32]));
        let attesters: Vec<RelayId> = self.map.range(lo..=hi).map(|((_, at), _)| *at).collect();
        if attesters.len() >= MAX_PER_SUBJECT {
            let rank = |at: &RelayId| keep_rank(self.scope, &key.0, at);
            let Some(worst) = attesters.iter().max_by_key(|at| rank(at)).copied() else { return false };
            if rank(&key.1) >= rank(&worst) {
                return false;
            }
            self.map.remove(&(key.0, worst));
        } else if self.map.len() >= self.capacity {
            return false;
        }
        self.map.insert(key, a.clone());
        self.digest = None;
        true
    }

    /// SHA-256 over the encodings of every attestation in key order
    /// (zeros for an empty set): equal sets, equal digests.
    pub(crate) fn digest(&mut self) -> [u8; 32] {
        if self.map.is_empty() {
            return [0; 32];
        }
        if let Some(d) = self.digest {
            return d;
        }
        let encodings: Vec<Vec<u8>> = self.map.values().map(|a| a.attestation().encode()).collect();
        let parts: Vec<&[u8]> =
            std::iter::once(&b"lamina-cut-evidence"[..]).chain(encodings.iter().map(Vec::as_slice)).collect();
        let d = sha256(&parts);
        self.digest = Some(d);
        d
    }
}

/// Whether attestation `a` may count for the cut of `epoch`: made before
/// the cutoff second (so it had Δ to spread, and none made while the cut
/// is being frozen can still change it: `observed_at` is in whole seconds,
/// and with Δ = 0 an attestation of second `T_e` is made during epoch `e`),
/// in the epoch or at most `max_age_epochs` before it.
pub(crate) fn counts_for(a: &Attested, epoch: Epoch, rule: &CutRule, params: &AttestParams) -> bool {
    let b = a.body();
    b.observed_at < rule.cutoff(epoch) && b.epoch <= epoch.0 && epoch.0 - b.epoch <= params.max_age_epochs
}

impl<R: RngCore + CryptoRng> GossipEngine<R> {
    /// An attestation our prober signed (spec §14.2): verified, kept in
    /// the pool and the open cuts it counts for, and pushed to
    /// `push_fanout` peers. Returns whether it was news.
    pub fn add_attestation(&mut self, attestation: Attestation) -> bool {
        let Ok(v) = attestation.verify() else {
            self.stats.attestations_rejected += 1;
            return false;
        };
        if v.body().attester != self.own || !self.accept_live(&v) {
            return false;
        }
        self.forward_attestations(&[v], None);
        true
    }

    /// The attestations held for `subject` in the live pool.
    pub fn attestations_about(&self, subject: &RelayId) -> Vec<Attestation> {
        self.attest_pool.iter().filter(|a| a.body().subject == *subject).map(|a| a.attestation().clone()).collect()
    }

    /// An `Attestations` message: verify each; only attesters we hold (in
    /// the store, or in the cut the batch is for) are accepted, so no
    /// identity without a descriptor (and its work) can fill the bounded
    /// sets. Gossip ([`LIVE`]) enters the pool and is forwarded when news;
    /// a cut exchange's batch enters that cut only.
    pub(super) fn handle_attestations(&mut self, _now: Now, from: PeerId, batch: AttestationBatch) {
        let mut fresh = Vec::new();
        for a in batch.attestations {
            // Known attester first (cheap), then the signature.
            let attester = a.body.attester;
            let in_cut = self.cuts.get(&batch.scope).is_some_and(|c| c.set.get(&attester).is_some());
            if self.store.get(&attester).is_none() && !in_cut {
                self.stats.attestations_rejected += 1;
                continue;
            }
            let Ok(v) = a.verify() else {
                self.stats.attestations_rejected += 1;
                continue;
            };
            if batch.scope != LIVE {
                self.offer_to_cut(batch.scope, &v);
                continue;
            }
            if self.accept_live(&v) {
                fresh.push(v);
            }
        }
        if !fresh.is_empty() {
            self.forward_attestations(&fresh, Some(from));
        }
    }

    /// Offer to the pool and, when news, to every open cut it counts for.
    fn accept_live(&mut self, v: &Attested) -> bool {
        if !self.attest_pool.offer(v) {
            return false;
        }
        self.stats.attestations_accepted += 1;
        let epochs: Vec<Epoch> = self.cuts.keys().copied().collect();
        for e in epochs {
            self.offer_to_cut(e, v);
        }
        true
    }

    /// Offer to the cut of `epoch` if it is open and `v` counts for it.
    fn offer_to_cut(&mut self, epoch: Epoch, v: &Attested) {
        let Some(params) = self.config.attest else { return };
        let rule = self.cut_rule();
        let Some(cut) = self.cuts.get_mut(&epoch) else { return };
        if cut.frozen.is_none() && counts_for(v, epoch, &rule, &params) && cut.attestations.offer(v) {
            self.stats.attestations_accepted += 1;
        }
    }

    /// Push `fresh` attestations to `push_fanout` random gossip peers other
    /// than `except`.
    fn forward_attestations(&mut self, fresh: &[Attested], except: Option<PeerId>) {
        let targets = self.push_targets(except);
        for chunk in fresh.chunks(MAX_BATCH_ATTESTATIONS) {
            let attestations = chunk.iter().map(|a| a.attestation().clone()).collect();
            let msg = Message::Attestations(AttestationBatch { scope: LIVE, attestations });
            for target in &targets {
                self.enqueue(*target, msg.clone());
            }
        }
    }

    /// A cut exchange found our roots of `scope` different: send the
    /// partner up to [`MAX_EVIDENCE_PER_EXCHANGE`] of the cut's
    /// attestations, continuing where the last batch stopped, so repeated
    /// exchanges cover the whole set.
    pub(super) fn send_cut_evidence(&mut self, peer: PeerId, scope: Epoch) {
        if self.config.attest.is_none() || scope == LIVE {
            return;
        }
        let Some(cut) = self.cuts.get_mut(&scope) else { return };
        let n = cut.attestations.len();
        if n == 0 {
            return;
        }
        let start = cut.evidence_cursor % n;
        let take = n.min(MAX_EVIDENCE_PER_EXCHANGE);
        let batch: Vec<Attestation> =
            cut.attestations.iter().cycle().skip(start).take(take).map(|a| a.attestation().clone()).collect();
        cut.evidence_cursor = start + take;
        for chunk in batch.chunks(MAX_BATCH_ATTESTATIONS) {
            self.enqueue(peer, Message::Attestations(AttestationBatch { scope, attestations: chunk.to_vec() }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::{Attestation, AttestationBody};
    use crate::testing::identity;
    use lamina_crypto::keys::LinkPublicKey;

    /// A verified attestation by identity `by` about relay `subject`.
    fn att(by: u8, subject: RelayId, observed_at: u64) -> Attested {
        let body = AttestationBody {
            attester: RelayId([0; 32]),
            subject,
            link_key: LinkPublicKey([7; 32]),
            address: "192.0.2.1:9001".parse().unwrap(),
            epoch: 1,
            observed_at,
        };
        Attestation::sign(&identity(by), body).verify().unwrap()
    }

    /// The set after offering in any order is the same; newest per pair
    /// wins; at most MAX_PER_SUBJECT attesters per subject.
    #[test]
    fn order_independent_and_bounded() {
        let subject = RelayId([9; 32]);
        let mut offers: Vec<Attested> = (1..=12u8).map(|i| att(i, subject, 100)).collect();
        offers.push(att(1, subject, 50));
        offers.push(att(2, subject, 150));
        let mut forward = EvidenceSet::new(Epoch(3), 100);
        for a in &offers {
            forward.offer(a);
        }
        let mut backward = EvidenceSet::new(Epoch(3), 100);
        for a in offers.iter().rev() {
            backward.offer(a);
        }
        assert_eq!(forward.len(), MAX_PER_SUBJECT);
        assert_eq!(forward.digest(), backward.digest());
        let two = identity(2).relay_id();
        if let Some(a) = forward.iter().find(|a| a.body().attester == two) {
            assert_eq!(a.body().observed_at, 150, "the newest attestation of a pair is kept");
        }
        assert!(!forward.offer(&att(2, subject, 150)), "a duplicate changes nothing");
    }

    /// The capacity bounds the number of pairs.
    #[test]
    fn capacity_refuses_new_pairs() {
        let mut set = EvidenceSet::new(Epoch(1), 2);
        assert!(set.offer(&att(1, RelayId([1; 32]), 1)));
        assert!(set.offer(&att(1, RelayId([2; 32]), 1)));
        assert!(!set.offer(&att(1, RelayId([3; 32]), 1)));
        assert_eq!(set.len(), 2);
    }
}
