//! Sybil quotas (spec §14.1): how many relay identities one IP address may
//! hold, how many one network block may hold in the store, what share of
//! the total weight one block may carry, and the deterministic ranking that
//! decides who stays when a limit is reached.
//!
//! Everything here is a pure function of descriptors and evidence, so the
//! store, the epoch cut and the path weights apply the same rules and every
//! honest node reaches the same answer whatever order descriptors arrived in.
//!
//! - An *IP key* is an IPv4 address, or the /64 of an IPv6 address (an
//!   IPv6 host gets a whole /64 for free). A relay counts against every IP
//!   key it lists.
//! - A *block* is [`NetBlock`]: an IPv4 /16 or an IPv6 /32.
//! - The *standing* of a relay orders who is kept: more evidence
//!   (reachability attestations, then measured bandwidth) first, then the
//!   older first sighting, then the smaller relay id. A newcomer's claims
//!   (advertised bandwidth, exit policy) never enter the ranking.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

use lamina_crypto::keys::RelayId;

use crate::descriptor::Descriptor;
use crate::gossip::NetBlock;

/// Network-wide limit on relay identities per IP key (Tor's
/// `AuthDirMaxServersPerAddr` allows 2 today, 4 historically).
pub const DEFAULT_MAX_PER_IP: usize = 4;
/// Most descriptors of one block the store holds (squatting bound: filling
/// a 100,000-entry store takes ≥ 391 blocks).
pub const DEFAULT_MAX_PER_BLOCK: usize = 256;
/// Largest share of the total weight one block may carry, in parts per
/// million (5%).
pub const DEFAULT_MAX_BLOCK_SHARE_PPM: u32 = 50_000;
/// One million: the denominator of parts-per-million shares.
pub const PPM: u32 = 1_000_000;

/// The quota parameters (network parameters, spec §14.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuotaParams {
    /// Most relay identities listing one IP key.
    pub max_per_ip: usize,
    /// Most descriptors of one block in the store.
    pub max_per_block: usize,
    /// Largest share of the total weight one block may carry (ppm).
    pub max_block_share_ppm: u32,
}

impl QuotaParams {
    /// The public network's values.
    pub const fn production() -> Self {
        Self {
            max_per_ip: DEFAULT_MAX_PER_IP,
            max_per_block: DEFAULT_MAX_PER_BLOCK,
            max_block_share_ppm: DEFAULT_MAX_BLOCK_SHARE_PPM,
        }
    }

    /// A local test network: the same per-IP limit (so the limit is
    /// testable on loopback), no block share cap (a few relays cannot
    /// satisfy a 5% cap).
    pub const fn test_network() -> Self {
        Self { max_per_ip: DEFAULT_MAX_PER_IP, max_per_block: DEFAULT_MAX_PER_BLOCK, max_block_share_ppm: PPM }
    }
}

impl Default for QuotaParams {
    fn default() -> Self {
        Self::production()
    }
}

/// What one IP quota counts: an IPv4 address or an IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IpKey {
    /// An IPv4 address.
    V4([u8; 4]),
    /// The first 64 bits of an IPv6 address.
    V6([u8; 8]),
}

impl IpKey {
    /// The key of `ip` (IPv4-mapped IPv6 counts as IPv4).
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self::V4(v4.octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(v4.octets()),
                None => {
                    let o = v6.octets();
                    Self::V6([o[0], o[1], o[2], o[3], o[4], o[5], o[6], o[7]])
                }
            },
        }
    }
}

/// The distinct IP keys a descriptor lists, ascending.
pub fn ip_keys(d: &Descriptor) -> Vec<IpKey> {
    let keys: BTreeSet<IpKey> = d.addresses().iter().map(|a| IpKey::of(a.ip())).collect();
    keys.into_iter().collect()
}

/// The distinct blocks a descriptor lists, ascending.
pub fn blocks(d: &Descriptor) -> Vec<NetBlock> {
    let keys: BTreeSet<NetBlock> = d.addresses().iter().map(NetBlock::of).collect();
    keys.into_iter().collect()
}

/// The evidence a relay has earned and when it was first seen: the input
/// of every keep-or-evict decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Standing {
    /// Earned evidence ([`evidence_score`]); 0 for a newcomer.
    pub evidence: u64,
    /// Earliest publish time seen for this relay (unix seconds).
    pub first_seen: u64,
}

/// A total order on relays, larger is kept: evidence, then age (smaller
/// `first_seen`), then the smaller relay id.
pub type RankKey = (u64, Reverse<u64>, Reverse<RelayId>);

/// The rank of relay `id` with standing `s`.
pub fn rank_key(id: RelayId, s: Standing) -> RankKey {
    (s.evidence, Reverse(s.first_seen), Reverse(id))
}

/// The evidence score: the number of distinct blocks attesting the
/// relay's reachability dominates, its measured bandwidth (KB/s) breaks
/// ties. Claims never count.
pub fn evidence_score(attesting_blocks: usize, measured_kbps: Option<u32>) -> u64 {
    let blocks = u64::try_from(attesting_blocks.min(0xffff)).unwrap_or(0xffff);
    (blocks << 32) | u64::from(measured_kbps.unwrap_or(0))
}

/// One relay offered to [`select_per_ip`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The relay.
    pub id: RelayId,
    /// Its IP keys ([`ip_keys`]).
    pub ips: Vec<IpKey>,
    /// Its standing.
    pub standing: Standing,
}

/// The per-IP rule as a pure function for the cut and the path weights:
/// which candidates are kept when at most `max_per_ip` relays may list any
/// one IP key. Candidates are taken best-ranked first; one is kept when
/// every IP key it lists still has room. The result (aligned with `cands`)
/// does not depend on the order of `cands`.
pub fn select_per_ip(cands: &[Candidate], max_per_ip: usize) -> Vec<bool> {
    let mut order: Vec<usize> = (0..cands.len()).collect();
    order.sort_by_key(|&i| Reverse(rank_key(cands[i].id, cands[i].standing)));
    let mut used: HashMap<IpKey, usize> = HashMap::new();
    let mut keep = vec![false; cands.len()];
    for i in order {
        let c = &cands[i];
        if c.ips.iter().all(|ip| used.get(ip).copied().unwrap_or(0) < max_per_ip) {
            for ip in &c.ips {
                *used.entry(*ip).or_insert(0) += 1;
            }
            keep[i] = true;
        }
    }
    keep
}

/// Cap every block's share of the total weight at `max_share_ppm`
/// (water-filling, integer arithmetic so every client gets the same
/// numbers): blocks above the cap are scaled down to exactly the cap of
/// the *resulting* total, the rest are untouched. `weights[i]` belongs to
/// `blocks[i]`. When fewer than `1 / share` blocks carry weight the cap
/// cannot be met and the weights are left as they are (a tiny network).
pub fn cap_block_shares(weights: &mut [u64], blocks: &[NetBlock], max_share_ppm: u32) {
    if max_share_ppm >= PPM || weights.len() != blocks.len() {
        return;
    }
    let mut per_block: BTreeMap<NetBlock, u128> = BTreeMap::new();
    for (w, b) in weights.iter().zip(blocks) {
        *per_block.entry(*b).or_insert(0) += u128::from(*w);
    }
    let share = u128::from(max_share_ppm);
    let ppm = u128::from(PPM);
    let mut capped: BTreeSet<NetBlock> = BTreeSet::new();
    let limit = loop {
        let k = u128::try_from(capped.len()).unwrap_or(u128::MAX);
        let uncapped: u128 = per_block.iter().filter(|(b, _)| !capped.contains(b)).map(|(_, w)| *w).sum();
        let Some(room) = ppm.checked_sub(k.saturating_mul(share)).filter(|r| *r > 0) else {
            return;
        };
        let total = uncapped.saturating_mul(ppm) / room;
        let limit = total.saturating_mul(share) / ppm;
        let over: Vec<NetBlock> =
            per_block.iter().filter(|(b, w)| !capped.contains(b) && **w > limit).map(|(b, _)| *b).collect();
        if over.is_empty() {
            break limit;
        }
        capped.extend(over);
        if capped.len() == per_block.len() {
            return;
        }
    };
    for (w, b) in weights.iter_mut().zip(blocks) {
        if capped.contains(b) {
            let block_total = per_block.get(b).copied().unwrap_or(1).max(1);
            *w = u64::try_from(u128::from(*w).saturating_mul(limit) / block_total).unwrap_or(u64::MAX);
        }
    }
}

/// The store's admission book-keeping (spec §14.1): standing per held
/// relay, holders per IP key and per block, and a global ranking for
/// eviction when the store is full. Kept in step by [`crate::store::Store`].
#[derive(Debug, Default)]
pub(crate) struct Admission {
    /// Standing of every held relay.
    standing: HashMap<RelayId, Standing>,
    /// Held relays per IP key (at most `max_per_ip` each).
    by_ip: HashMap<IpKey, Vec<RelayId>>,
    /// Held relays per block (at most `max_per_block` each).
    by_block: HashMap<NetBlock, Vec<RelayId>>,
    /// All held relays by rank; the first is the next to evict.
    ranked: BTreeSet<RankKey>,
}

impl Admission {
    /// The standing of held relay `id`.
    pub(crate) fn standing(&self, id: &RelayId) -> Option<Standing> {
        self.standing.get(id).copied()
    }

    /// The standing a descriptor would have: the held standing, or a
    /// newcomer's (no evidence, first seen at its publish time).
    fn standing_of(&self, d: &Descriptor) -> Standing {
        match self.standing.get(&d.id()) {
            Some(s) => Standing { first_seen: s.first_seen.min(d.published()), ..*s },
            None => Standing { evidence: 0, first_seen: d.published() },
        }
    }

    /// Record a newly held descriptor.
    pub(crate) fn add(&mut self, d: &Descriptor) {
        self.add_with(d, self.standing_of(d));
    }

    /// Record a held descriptor with standing `s`.
    fn add_with(&mut self, d: &Descriptor, s: Standing) {
        let id = d.id();
        self.standing.insert(id, s);
        self.ranked.insert(rank_key(id, s));
        for ip in ip_keys(d) {
            self.by_ip.entry(ip).or_default().push(id);
        }
        for b in blocks(d) {
            self.by_block.entry(b).or_default().push(id);
        }
    }

    /// Forget a descriptor no longer held.
    pub(crate) fn remove(&mut self, d: &Descriptor) {
        let id = d.id();
        if let Some(s) = self.standing.remove(&id) {
            self.ranked.remove(&rank_key(id, s));
        }
        for ip in ip_keys(d) {
            remove_member(&mut self.by_ip, ip, &id);
        }
        for b in blocks(d) {
            remove_member(&mut self.by_block, b, &id);
        }
    }

    /// Replace held `old` by its update `new`, keeping the standing (the
    /// first sighting stays the earliest).
    pub(crate) fn replace(&mut self, old: &Descriptor, new: &Descriptor) {
        let kept = self.standing_of(new);
        self.remove(old);
        self.add_with(new, kept);
    }

    /// Whether a full store could still take some newcomer: only when its
    /// lowest-ranked relay has no evidence (a newcomer has none, so it can
    /// outrank only relays without evidence).
    pub(crate) fn newcomer_may_enter_full_store(&self) -> bool {
        self.ranked.first().is_some_and(|k| k.0 == 0)
    }

    /// Set the evidence of held relay `id` (no-op for others).
    pub(crate) fn set_evidence(&mut self, id: &RelayId, evidence: u64) {
        if let Some(s) = self.standing.get_mut(id) {
            self.ranked.remove(&rank_key(*id, *s));
            s.evidence = evidence;
            self.ranked.insert(rank_key(*id, *s));
        }
    }

    /// The relays to evict so that `d` (not held now, or held as `old`
    /// with other addresses) fits the quotas and a store of `capacity`
    /// holding `len`; `None` when `d` ranks below someone it would have
    /// to displace, i.e. it is refused.
    pub(crate) fn victims(
        &self,
        d: &Descriptor,
        old: Option<&Descriptor>,
        params: &QuotaParams,
        capacity: usize,
        len: usize,
    ) -> Option<Vec<RelayId>> {
        let id = d.id();
        let mine = rank_key(id, self.standing_of(d));
        let mut victims: Vec<RelayId> = Vec::new();
        let old_ips = old.map(ip_keys).unwrap_or_default();
        for ip in ip_keys(d).into_iter().filter(|ip| !old_ips.contains(ip)) {
            let members = self.by_ip.get(&ip).map(Vec::as_slice).unwrap_or_default();
            self.displace(members, params.max_per_ip, mine, &mut victims)?;
        }
        let old_blocks = old.map(blocks).unwrap_or_default();
        for b in blocks(d).into_iter().filter(|b| !old_blocks.contains(b)) {
            let members = self.by_block.get(&b).map(Vec::as_slice).unwrap_or_default();
            self.displace(members, params.max_per_block, mine, &mut victims)?;
        }
        if old.is_none() {
            let mut ranked = self.ranked.iter();
            while len.saturating_sub(victims.len()) >= capacity {
                let lowest = ranked.find(|k| !victims.contains(&k.2 .0))?;
                if *lowest >= mine {
                    return None;
                }
                victims.push(lowest.2 .0);
            }
        }
        Some(victims)
    }

    /// Within one group of holders (an IP key or a block) limited to
    /// `limit`, add the lowest-ranked holders to `victims` until there is
    /// room; `None` when a holder to displace ranks above `mine`.
    fn displace(&self, members: &[RelayId], limit: usize, mine: RankKey, victims: &mut Vec<RelayId>) -> Option<()> {
        let mut remaining: Vec<RankKey> = members
            .iter()
            .filter(|m| !victims.contains(m))
            .filter_map(|m| self.standing.get(m).map(|s| rank_key(*m, *s)))
            .collect();
        remaining.sort();
        let mut lowest = remaining.into_iter();
        let mut held = members.iter().filter(|m| !victims.contains(m)).count();
        while held >= limit {
            let key = lowest.next()?;
            if key >= mine {
                return None;
            }
            victims.push(key.2 .0);
            held -= 1;
        }
        Some(())
    }
}

/// Remove `id` from the member list of `key`, dropping empty lists.
fn remove_member<K: std::hash::Hash + Eq>(map: &mut HashMap<K, Vec<RelayId>>, key: K, id: &RelayId) {
    if let Some(list) = map.get_mut(&key) {
        list.retain(|m| m != id);
        if list.is_empty() {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests;
