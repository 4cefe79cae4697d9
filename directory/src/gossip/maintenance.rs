//! Timers: maintenance passes (expiry, session and dial time-outs, outbound
//! slots), anti-entropy rounds, epoch boundaries, republishing.

use std::collections::BTreeMap;

use rand_core::{CryptoRng, RngCore};

use lamina_crypto::keys::RelayId;

use super::peers::choose_outbound;
use super::{next_epoch_ms, ConnectPurpose, Direction, Event, GossipEngine, NetBlock, Now, PeerId, Pending};

impl<R: RngCore + CryptoRng> GossipEngine<R> {
    /// The earliest deadline (monotonic ms) at which
    /// [`GossipEngine::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Option<u64> {
        let t = &self.timers;
        let mut earliest = t.next_round_ms.min(t.next_maintenance_ms).min(t.next_epoch_ms);
        if self.config.serve_snapshots {
            earliest = earliest.min(t.next_cut_sync_ms);
        }
        if let Some(r) = t.republish_ms {
            earliest = earliest.min(r);
        }
        Some(earliest)
    }

    /// Run every timer that is due at `now`.
    pub fn handle_timeout(&mut self, now: Now) {
        let t = now.mono_ms;
        if t >= self.timers.next_maintenance_ms {
            self.maintenance(now);
            self.timers.next_maintenance_ms = t.saturating_add(self.config.maintenance_interval_ms);
        }
        if t >= self.timers.next_round_ms {
            self.start_round(now);
            self.timers.next_round_ms = t.saturating_add(self.config.anti_entropy_interval_ms);
        }
        if self.timers.republish_ms.is_some_and(|r| t >= r) {
            self.emit(Event::RepublishDue);
            self.timers.republish_ms = Some(t.saturating_add(super::REPUBLISH_RETRY_MS));
        }
        if self.config.serve_snapshots && t >= self.timers.next_cut_sync_ms {
            self.cut_sync_tick(now);
            self.timers.next_cut_sync_ms = t.saturating_add(self.config.cut_sync_interval_ms());
        }
        if t >= self.timers.next_epoch_ms {
            // Open the next epoch's cut and reconcile the new current one
            // at once (spec §13.2).
            self.cut_sync_tick(now);
            let next = next_epoch_ms(now, self.config.epoch_len_s);
            // Guard against a wall clock that did not move with the
            // monotonic one: never schedule in the past.
            self.timers.next_epoch_ms = next.max(t.saturating_add(1000));
        }
    }

    /// Expire descriptors, seen hashes, dials and exchanges; hang up
    /// finished transient connections; fill free outbound slots.
    fn maintenance(&mut self, now: Now) {
        let t = now.mono_ms;
        let expired = self.store.expire(now.unix_s);
        self.stats.expired += u64::try_from(expired).unwrap_or(u64::MAX);
        self.seen.purge(t);
        self.pending.retain(|_, p| p.deadline_ms > t);
        self.out_sessions.retain(|_, deadline| *deadline > t);
        self.roll_cuts(now);
        self.in_sessions.retain(|_, s| s.deadline_ms > t);
        if self.snapshot_fetch.as_ref().is_some_and(|f| f.deadline_ms <= t) {
            self.snapshot_fetch = None;
        }
        let timeout = self.config.session_timeout_ms;
        let finished: Vec<PeerId> = self
            .peers
            .peers
            .iter()
            .filter(|(_, p)| p.direction == Direction::Transient && p.since_ms.saturating_add(timeout) <= t)
            .map(|(id, _)| *id)
            .collect();
        for peer in finished {
            self.remove_peer(&peer);
            self.emit(Event::Disconnect { peer });
        }
        self.fill_outbound(now);
    }

    /// Ask the driver to dial relays for free outbound slots, choosing a
    /// network block uniformly first (README "Peer buckets").
    fn fill_outbound(&mut self, now: Now) {
        let pending_gossip: Vec<PeerId> =
            self.pending.iter().filter(|(_, p)| p.purpose == ConnectPurpose::Gossip).map(|(id, _)| *id).collect();
        let taken = self.peers.count(Direction::Outbound) + pending_gossip.len();
        let need = self.config.max_outbound.saturating_sub(taken);
        if need == 0 || self.store.is_empty() {
            return;
        }
        let mut used: BTreeMap<NetBlock, usize> = BTreeMap::new();
        let outbound = self.peers.peers.iter().filter(|(_, p)| p.direction == Direction::Outbound).map(|(id, _)| id);
        for p in outbound.chain(pending_gossip.iter()) {
            *used.entry(NetBlock::of(&p.addr)).or_insert(0) += 1;
        }
        let mut busy: Vec<RelayId> = self.peers.peers.keys().map(|p| p.relay).collect();
        busy.extend(self.pending.keys().map(|p| p.relay));
        busy.push(self.own);
        busy.sort_unstable();
        // One flat list sorted by block (no per-block allocation: this runs
        // over the whole store).
        let mut eligible: Vec<(NetBlock, PeerId)> = self
            .store
            .iter()
            .filter(|d| busy.binary_search(&d.id()).is_err())
            .filter_map(|d| {
                d.addresses().first().map(|addr| (NetBlock::of(addr), PeerId { relay: d.id(), addr: *addr }))
            })
            .collect();
        eligible.sort_unstable_by_key(|(block, _)| *block);
        let per_block = self.config.max_outbound_per_block;
        let chosen = choose_outbound(&mut self.rng, &eligible, used, per_block, need);
        let deadline_ms = now.mono_ms.saturating_add(self.config.session_timeout_ms);
        for peer in chosen {
            self.pending.insert(peer, Pending { purpose: ConnectPurpose::Gossip, deadline_ms });
            self.emit(Event::Connect { peer, purpose: ConnectPurpose::Gossip });
        }
    }
}
