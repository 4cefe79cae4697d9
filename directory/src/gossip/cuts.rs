//! Per-epoch cuts: built by the deterministic rule ([`crate::cut`]),
//! reconciled with peers (anti-entropy keyed by epoch), frozen once
//! reconciled, then served unchanged (spec §13.2).
//!
//! Life of the cut of epoch `e` on one relay:
//!
//! 1. **Open** from the start of epoch `e − 1` (or from engine start): it
//!    holds every descriptor the relay has seen that satisfies the rule
//!    of `e`, whatever the live store did with it since (a newer version
//!    published after the cutoff does not displace it).
//! 2. **Reconciling** from `cutoff_e` on: every `cut_sync` tick the relay
//!    runs an exchange over the cut with a random gossip peer; descriptors
//!    that only the cut lacks (older versions the live store calls stale)
//!    are admitted into it.
//! 3. **Frozen** at the first exchange *at or after* `T_e` that finds both
//!    cuts equal (or at once for a relay alone in its directory). From
//!    then on it never changes and is what the relay serves for `e`. A
//!    restarted relay rebuilds its cuts from its store and freezes only
//!    after such an exchange: it never serves a root from an incomplete
//!    store. Queries never cause a cut or a freeze.
//!
//! At most three cuts are held: `e − 1` (frozen, served as the previous
//! epoch), `e` and `e + 1`.

use std::collections::BTreeMap;

use rand_core::{CryptoRng, RngCore};

use lamina_crypto::keys::RelayId;

use lamina_crypto::digest::sha256;

use super::evidence::{counts_for, EvidenceSet, EVIDENCE_CAPACITY};
use super::serve::ServedSnapshot;
use super::{uniform, Event, GossipEngine, Now, PeerId};
use crate::attest::{admit_set, AttestParams, Attested};
use crate::cut::CutRule;
use crate::descriptor::Descriptor;
use crate::quota::{self, Candidate, Standing};
use crate::snapshot::Epoch;
use crate::statement::EpochStatement;
use crate::store::{EquivocationProof, InsertOutcome, Precheck, Store};
use crate::verify::{Unverified, Verified};
use crate::wire::{DigestRequest, Message, LIVE};

/// One epoch's cut.
#[derive(Debug)]
pub(crate) struct Cut {
    /// The descriptors admitted by the rule (a store: one per relay, the
    /// highest sequence wins, equivocation detected).
    pub(crate) set: Store,
    /// The snapshot served, once frozen.
    pub(crate) frozen: Option<ServedSnapshot>,
    /// Our signed statement about it, once the driver signed it.
    pub(crate) statement: Option<EpochStatement>,
    /// The attestations that count for this epoch (spec §14.2),
    /// reconciled with the descriptors.
    pub(crate) attestations: EvidenceSet,
    /// Where the next evidence batch sent to a partner starts.
    pub(crate) evidence_cursor: usize,
}

/// The held cuts by epoch.
pub(crate) type Cuts = BTreeMap<Epoch, Cut>;

impl<R: RngCore + CryptoRng> GossipEngine<R> {
    /// The cut rule of this network.
    pub fn cut_rule(&self) -> CutRule {
        self.config.cut_rule()
    }

    /// The newest epoch whose frozen cut we serve.
    pub fn newest_served(&self) -> Option<Epoch> {
        self.cuts.iter().rev().find(|(_, c)| c.frozen.is_some()).map(|(e, _)| *e)
    }

    /// The frozen cut served for `epoch` (`None`: the newest): its epoch,
    /// root and number of descriptors.
    pub fn served(&self, epoch: Option<Epoch>) -> Option<(Epoch, [u8; 32], usize)> {
        let e = match epoch {
            Some(e) => e,
            None => self.newest_served()?,
        };
        let snap = self.cuts.get(&e)?.frozen.as_ref()?;
        Some((e, snap.root, snap.descriptors.len()))
    }

    /// Create the cuts of the current and the next epoch, drop old ones,
    /// and freeze the current one if a lone relay may.
    pub(super) fn roll_cuts(&mut self, now: Now) {
        if !self.config.serve_snapshots {
            return;
        }
        let cur = self.epoch(now);
        let rule = self.cut_rule();
        for e in [cur, Epoch(cur.0.saturating_add(1))] {
            if self.cuts.contains_key(&e) {
                continue;
            }
            let mut set = Store::new(self.config.store);
            let older = self.cuts.range(..e).next_back().map(|(_, c)| &c.set);
            for d in self.store.iter().chain(older.into_iter().flat_map(Store::iter)) {
                if rule.admits(e, d, self.evidence.as_ref()) {
                    let _ = set.insert(d.clone());
                }
            }
            let mut attestations = EvidenceSet::new(e, EVIDENCE_CAPACITY);
            if let Some(params) = self.config.attest {
                for a in self.attest_pool.iter().filter(|a| counts_for(a, e, &rule, &params)) {
                    attestations.offer(a);
                }
            }
            self.cuts.insert(e, Cut { set, frozen: None, statement: None, attestations, evidence_cursor: 0 });
        }
        let keep_from = Epoch(cur.0.saturating_sub(1));
        self.cuts.retain(|e, c| *e >= keep_from && (*e >= cur || c.frozen.is_some()));
        // Alone in its directory (no seed, no peer): nothing to reconcile.
        if self.peers.peers.is_empty() && self.store.len() <= 1 {
            self.freeze(now, cur);
        }
    }

    /// Freeze the cut of `epoch` if it exists, is not frozen, is not empty
    /// and its epoch has begun.
    fn freeze(&mut self, now: Now, epoch: Epoch) {
        if epoch > self.epoch(now) {
            return;
        }
        let attest = self.config.attest;
        let Some(cut) = self.cuts.get_mut(&epoch) else { return };
        if cut.frozen.is_some() || cut.set.is_empty() {
            return;
        }
        let (root, descriptors) = match attest {
            None => (cut.set.merkle_root(), cut.set.iter().map(Verified::to_unverified).collect()),
            Some(params) => {
                let mut admitted = Store::new(*cut.set.config());
                for d in admitted_descriptors(epoch, &cut.set, &cut.attestations, &params) {
                    let _ = admitted.insert(d);
                }
                self.stats.cut_unattested += u64::try_from(cut.set.len() - admitted.len()).unwrap_or(0);
                if admitted.is_empty() {
                    return;
                }
                (admitted.merkle_root(), admitted.iter().map(Verified::to_unverified).collect())
            }
        };
        let descriptors: Vec<Unverified<Descriptor>> = descriptors;
        let count = u32::try_from(descriptors.len()).unwrap_or(u32::MAX);
        cut.frozen = Some(ServedSnapshot { epoch, root, descriptors });
        self.stats.cuts_frozen += 1;
        let previous_root =
            self.cuts.range(..epoch).next_back().and_then(|(_, c)| c.frozen.as_ref()).map_or([0; 32], |s| s.root);
        self.emit(Event::SignStatement { epoch, root, count, previous_root });
    }

    /// Our signed statement for a frozen cut (from [`Event::SignStatement`]).
    /// Ignored unless it is ours and matches the frozen cut.
    pub fn set_statement(&mut self, statement: EpochStatement) {
        let own = self.own;
        let Some(cut) = self.cuts.get_mut(&statement.epoch) else { return };
        let matches = cut.frozen.as_ref().is_some_and(|s| {
            s.root == statement.root && u32::try_from(s.descriptors.len()).ok() == Some(statement.count)
        });
        if matches && statement.relay == own && statement.verify() {
            cut.statement = Some(statement);
            self.gossip_own_statement(statement);
        }
    }

    /// The root an exchange of `scope` compares: the live store's digest
    /// root, or for a cut with a reachability rule the hash of its digest
    /// root and its evidence digest (equal only when both the descriptors
    /// and the attestations agree).
    pub(super) fn scope_root(&mut self, scope: Epoch) -> Option<[u8; 32]> {
        let attest = self.config.attest.is_some();
        if scope == LIVE {
            return Some(self.store.digest_root());
        }
        let cut = self.cuts.get_mut(&scope)?;
        let root = cut.set.digest_root();
        if !attest {
            return Some(root);
        }
        let evidence = cut.attestations.digest();
        Some(sha256(&[b"lamina-cut-scope-root", &root, &evidence]))
    }

    /// Our statement for the frozen cut of `epoch`, if signed.
    pub fn statement(&self, epoch: Epoch) -> Option<EpochStatement> {
        self.cuts.get(&epoch).and_then(|c| c.statement)
    }

    /// An exchange over the cut of `scope` found both sides equal.
    pub(super) fn cut_in_sync(&mut self, now: Now, scope: Epoch) {
        if scope != LIVE {
            self.freeze(now, scope);
        }
    }

    /// The cut-sync tick: reconcile every open cut past its cutoff with a
    /// random gossip peer.
    pub(super) fn cut_sync_tick(&mut self, now: Now) {
        self.roll_cuts(now);
        let rule = self.cut_rule();
        let open: Vec<Epoch> = self
            .cuts
            .iter()
            .filter(|(e, c)| c.frozen.is_none() && now.unix_s >= rule.cutoff(**e))
            .map(|(e, _)| *e)
            .collect();
        let peers = self.peers.gossip_peers();
        if peers.is_empty() {
            return;
        }
        for e in open {
            let Some(peer) = peers.get(uniform(&mut self.rng, peers.len())).copied() else { continue };
            self.stats.cut_exchanges += 1;
            self.begin_scoped_exchange(now, peer, e);
        }
    }

    /// Send our root of `scope` to a connected partner.
    pub(super) fn begin_scoped_exchange(&mut self, now: Now, peer: PeerId, scope: Epoch) {
        if self.out_sessions.len() >= self.config.max_sessions {
            let oldest = self.out_sessions.iter().min_by_key(|(_, deadline)| **deadline).map(|(p, _)| *p);
            if let Some(oldest) = oldest {
                self.out_sessions.remove(&oldest);
            }
        }
        let Some(root) = self.scope_root(scope) else { return };
        let Some(set) = self.set_ref(scope) else { return };
        let req = DigestRequest { epoch: scope, root, count: u32::try_from(set.len()).unwrap_or(u32::MAX) };
        self.out_sessions.insert((peer, scope), now.mono_ms.saturating_add(self.config.session_timeout_ms));
        self.enqueue(peer, Message::DigestRequest(req));
    }

    /// The set an exchange of `scope` reconciles: the live store or a cut.
    pub(super) fn set_mut(&mut self, scope: Epoch) -> Option<&mut Store> {
        if scope == LIVE {
            Some(&mut self.store)
        } else {
            self.cuts.get_mut(&scope).map(|c| &mut c.set)
        }
    }

    /// The set of `scope`, read-only.
    pub(super) fn set_ref(&self, scope: Epoch) -> Option<&Store> {
        if scope == LIVE {
            Some(&self.store)
        } else {
            self.cuts.get(&scope).map(|c| &c.set)
        }
    }

    /// Whether some open cut would take `d` (judged from its claims).
    pub(super) fn cuts_want(&self, d: &Unverified<Descriptor>) -> bool {
        let rule = self.cut_rule();
        let (published, expires) = d.claimed_window();
        let (id, seq, hash) = (d.claimed_id(), d.claimed_sequence(), d.hash());
        if self.store.is_banned(&id) {
            return false;
        }
        // Our own descriptor enters a cut from a peer only when the cut has
        // none of ours (an earlier run's, after a restart).
        let own = id == self.own;
        self.cuts.iter().any(|(e, c)| {
            c.frozen.is_none()
                && (!own || c.set.get(&id).is_none())
                && rule.window_admits(*e, published, expires)
                && c.set.precheck(&id, seq, &hash) == Precheck::Verify
        })
    }

    /// Offer a verified descriptor to every open cut whose rule admits it;
    /// returns the relay if a cut found it equivocating.
    pub(super) fn offer_to_cuts(&mut self, v: &Verified<Descriptor>) -> Option<RelayId> {
        let rule = self.cut_rule();
        let mut equivocated = None;
        if self.store.is_banned(&v.id()) {
            return None;
        }
        for (e, cut) in self.cuts.iter_mut() {
            if cut.frozen.is_none()
                && rule.admits(*e, v, self.evidence.as_ref())
                && cut.set.insert(v.clone()) == InsertOutcome::Equivocation
            {
                equivocated = Some(v.id());
            }
        }
        equivocated
    }

    /// A relay was caught equivocating in some set: ban it, with the
    /// proof, in the live store and every open cut.
    pub(super) fn propagate_ban(&mut self, id: RelayId) {
        let proof =
            self.store.proof(&id).cloned().or_else(|| self.cuts.values().find_map(|c| c.set.proof(&id).cloned()));
        let Some(proof) = proof else { return };
        self.stats.equivocations_proven += 1;
        self.apply_proof(&proof);
    }

    /// Ban on a checked proof in every set that does not hold it yet.
    fn apply_proof(&mut self, proof: &EquivocationProof) {
        if !proof.is_valid() {
            return;
        }
        let id = proof.first.id();
        if self.store.proof(&id).is_none() {
            self.store.ban_with_proof(proof.clone());
        }
        for cut in self.cuts.values_mut().filter(|c| c.frozen.is_none()) {
            if cut.set.proof(&id).is_none() {
                cut.set.ban_with_proof(proof.clone());
            }
        }
    }

    /// The proof pair for `id` as two pushes, if we hold one.
    pub(super) fn proof_descriptors(&self, id: &RelayId) -> Option<[Unverified<Descriptor>; 2]> {
        let proof = self.store.proof(id).or_else(|| self.cuts.values().find_map(|c| c.set.proof(id)))?;
        Some([proof.first.to_unverified(), proof.second.to_unverified()])
    }

    /// Every distinct version of `id`'s descriptor we hold (live store and
    /// cuts), to answer a `Want`.
    pub(super) fn versions_of(&self, id: &RelayId) -> Vec<Verified<Descriptor>> {
        let mut out: Vec<Verified<Descriptor>> = Vec::new();
        let held = std::iter::once(self.store.get(id)).chain(self.cuts.values().map(|c| c.set.get(id)));
        for d in held.flatten() {
            if out.iter().all(|o| o.hash() != d.hash()) {
                out.push(d.clone());
            }
        }
        out
    }
}

/// The descriptors of a cut that its evidence admits (spec §14.2, §14.1):
/// the reachability rule over the whole candidate set ([`admit_set`],
/// bootstrap rule included), then the per-IP identity quota
/// ([`quota::select_per_ip`]) over those admitted: the relays of one IP
/// that enter are the earliest published, ties by the smaller id (the
/// standing clients use, so their own quota pass keeps all of them).
/// Deterministic: a function of the cut's descriptors and attestations.
pub(crate) fn admitted_descriptors(
    epoch: Epoch,
    set: &Store,
    attestations: &EvidenceSet,
    params: &AttestParams,
) -> Vec<Verified<Descriptor>> {
    let candidates: Vec<&Verified<Descriptor>> = set.iter().collect();
    let plain: Vec<&Descriptor> = candidates.iter().map(|v| &***v).collect();
    let evidence: Vec<Attested> = attestations.iter().cloned().collect();
    let reachable = admit_set(&plain, &evidence, epoch.0, params);
    let admitted: Vec<&Verified<Descriptor>> =
        candidates.iter().zip(reachable).filter(|(_, ok)| *ok).map(|(v, _)| *v).collect();
    let cands: Vec<Candidate> = admitted
        .iter()
        .map(|v| Candidate {
            id: v.id(),
            ips: quota::ip_keys(v),
            standing: Standing { evidence: 0, first_seen: v.published() },
        })
        .collect();
    let keep = quota::select_per_ip(&cands, quota::QuotaParams::production().max_per_ip);
    admitted.into_iter().zip(keep).filter(|(_, k)| *k).map(|(v, _)| v.clone()).collect()
}
