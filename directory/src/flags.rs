//! Flags from evidence (spec §14.4): Running, Stable, Fast and Guard,
//! computed deterministically from the agreed history of epoch cuts and
//! the measured bandwidth, after Tor's dir-spec §3.4.2 rules.
//!
//! - **Running**: in this epoch's cut (attested reachable, spec §14.2).
//! - **Fast**: Running and bandwidth ≥ min(the 1/8 quantile of Running
//!   relays' bandwidth, `fast_guarantee_kbps`): the top 7/8 or fast enough.
//! - **Stable**: Running and its current run (consecutive epochs in the
//!   cut) ≥ min(the median run of Running relays, `stable_guarantee_s`).
//! - **Guard**: Fast, Stable, *familiar* (first in a cut ≥ `familiar_s`
//!   ago), weighted fractional uptime ≥ min(the median WFU of familiar
//!   Running relays, `wfu_guarantee_ppm`), and bandwidth ≥ min(the median
//!   of Running relays, `guard_bw_guarantee_kbps`).
//!
//! Unlike dir-spec, every quantile is *weighted by measured bandwidth*
//! ([`weighted_quantile`]): with count-based medians, a thousand
//! low-capacity identities pull the bandwidth median down to their own
//! level (and the uptime and run medians up), so all of them earn Guard
//! and honest relays lose it — the Sybil experiment showed exactly that.
//!
//! Inputs are the agreed cuts (the same for every client) and the measured
//! weights ([`crate::measure`]); claims never enter, so every client
//! derives the same flags.

use std::collections::{BTreeMap, BTreeSet};

use lamina_crypto::keys::RelayId;

use crate::quota::PPM;

/// Flag thresholds (network parameters, spec §14.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagParams {
    /// Epoch length (seconds): converts epochs to time.
    pub epoch_s: u64,
    /// Guard needs its first cut at least this long ago (seconds).
    pub familiar_s: u64,
    /// A current run this long is Stable regardless of the median (s).
    pub stable_guarantee_s: u64,
    /// A WFU this high qualifies for Guard regardless of the median (ppm).
    pub wfu_guarantee_ppm: u32,
    /// This bandwidth is Fast regardless of the quantile (KB/s).
    pub fast_guarantee_kbps: u64,
    /// This bandwidth qualifies for Guard regardless of the median (KB/s).
    pub guard_bw_guarantee_kbps: u64,
    /// Per-epoch decay of the WFU history (ppm kept per epoch).
    pub wfu_decay_ppm: u32,
    /// Relays absent this many epochs are forgotten.
    pub forget_after_epochs: u64,
}

impl FlagParams {
    /// The public network, with dir-spec's values: 1-hour epochs, 8 days
    /// familiar, 7 days stable, WFU 98%, Fast at 100 KB/s, Guard at
    /// 2 MB/s, WFU decaying ≈ 0.95 per 12 h, 30 days memory.
    pub const fn production() -> Self {
        Self {
            epoch_s: 3_600,
            familiar_s: 8 * 86_400,
            stable_guarantee_s: 7 * 86_400,
            wfu_guarantee_ppm: 980_000,
            fast_guarantee_kbps: 100,
            guard_bw_guarantee_kbps: 2_000,
            wfu_decay_ppm: 995_735,
            forget_after_epochs: 30 * 24,
        }
    }

    /// A local test network (`--test-network`): 1-second epochs, familiar
    /// after 5 s, stable after 3 s, tiny bandwidth guarantees.
    pub const fn test_network() -> Self {
        Self {
            epoch_s: 1,
            familiar_s: 5,
            stable_guarantee_s: 3,
            wfu_guarantee_ppm: 500_000,
            fast_guarantee_kbps: 1,
            guard_bw_guarantee_kbps: 1,
            wfu_decay_ppm: 900_000,
            forget_after_epochs: 600,
        }
    }
}

/// What the agreed history says about one relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayRecord {
    /// First epoch it was in a cut.
    pub first_epoch: u64,
    /// Last epoch it was in a cut.
    pub last_epoch: u64,
    /// First epoch of its current run of consecutive cuts.
    pub run_start: u64,
    /// Decayed count of epochs up (ppm units).
    pub up: u64,
    /// Decayed count of epochs observed (ppm units).
    pub total: u64,
}

impl RelayRecord {
    /// Weighted fractional uptime in ppm.
    pub fn wfu_ppm(&self) -> u32 {
        if self.total == 0 {
            return 0;
        }
        let v = u128::from(self.up) * u128::from(PPM) / u128::from(self.total);
        u32::try_from(v.min(u128::from(PPM))).unwrap_or(PPM)
    }
}

/// The agreed relay history: fed with the Running set of each epoch's
/// cut, in epoch order. Bounded: at most `max_relays` records; relays
/// absent for `forget_after_epochs` are forgotten.
#[derive(Debug, Clone)]
pub struct History {
    /// Parameters.
    params: FlagParams,
    /// Records by relay.
    records: BTreeMap<RelayId, RelayRecord>,
    /// Last epoch observed.
    last_epoch: Option<u64>,
    /// Most records kept.
    max_relays: usize,
}

/// Most missed epochs replayed one by one when a gap is observed.
const MAX_GAP_EPOCHS: u64 = 1_000;

impl History {
    /// An empty history.
    pub fn new(params: FlagParams, max_relays: usize) -> Self {
        Self { params, records: BTreeMap::new(), last_epoch: None, max_relays }
    }

    /// The record of `id`.
    pub fn record(&self, id: &RelayId) -> Option<&RelayRecord> {
        self.records.get(id)
    }

    /// Number of relays remembered.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Record the Running set of `epoch`'s cut. Epochs at or before the
    /// last one observed are ignored (the history only moves forward).
    pub fn observe(&mut self, epoch: u64, running: &BTreeSet<RelayId>) {
        if self.last_epoch.is_some_and(|last| epoch <= last) {
            return;
        }
        let missed = self.last_epoch.map_or(0, |last| (epoch - last - 1).min(MAX_GAP_EPOCHS));
        let decay = u128::from(self.params.wfu_decay_ppm.min(PPM));
        let ppm = u128::from(PPM);
        let step = |v: u64, add: bool| -> u64 {
            let kept = u128::from(v) * decay / ppm + if add { ppm } else { 0 };
            u64::try_from(kept).unwrap_or(u64::MAX)
        };
        for rec in self.records.values_mut() {
            for _ in 0..missed {
                rec.up = step(rec.up, false);
                rec.total = step(rec.total, true);
            }
        }
        self.apply(epoch, running, step);
        self.last_epoch = Some(epoch);
        let forget = self.params.forget_after_epochs;
        self.records.retain(|_, r| epoch - r.last_epoch <= forget);
        while self.records.len() > self.max_relays {
            let oldest = self.records.iter().min_by_key(|(id, r)| (r.last_epoch, std::cmp::Reverse(**id)));
            let Some(id) = oldest.map(|(id, _)| *id) else { break };
            self.records.remove(&id);
        }
    }

    /// The epoch step for every known and newly running relay.
    fn apply(&mut self, epoch: u64, running: &BTreeSet<RelayId>, step: impl Fn(u64, bool) -> u64) {
        for (id, rec) in &mut self.records {
            let up = running.contains(id);
            rec.up = step(rec.up, up);
            rec.total = step(rec.total, true);
            if up {
                if rec.last_epoch + 1 != epoch {
                    rec.run_start = epoch;
                }
                rec.last_epoch = epoch;
            }
        }
        for id in running {
            self.records.entry(*id).or_insert(RelayRecord {
                first_epoch: epoch,
                last_epoch: epoch,
                run_start: epoch,
                up: u64::from(PPM),
                total: u64::from(PPM),
            });
        }
    }
}

/// One relay's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Flags {
    /// In the cut.
    pub running: bool,
    /// Long current run.
    pub stable: bool,
    /// Enough bandwidth.
    pub fast: bool,
    /// May be sampled as a guard.
    pub guard: bool,
}

/// One relay offered to [`compute_flags`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagInput {
    /// The relay.
    pub id: RelayId,
    /// In this epoch's cut.
    pub running: bool,
    /// Its measured base weight ([`crate::measure::base_weight`]), KB/s.
    pub bandwidth_kbps: u64,
}

/// The bandwidth-weighted quantile `num/den` of `(value, weight)` pairs
/// (sorted here): the smallest value whose cumulative weight reaches
/// `num/den` of the total. Weighting by measured bandwidth makes the
/// thresholds Sybil-robust: many identities without capacity cannot drag
/// a median down (or up). 0 when the total weight is 0.
pub fn weighted_quantile(v: &mut [(u64, u64)], num: u64, den: u64) -> u64 {
    v.sort_unstable();
    let total: u128 = v.iter().map(|(_, w)| u128::from(*w)).sum();
    if total == 0 || den == 0 {
        return 0;
    }
    let target = (total * u128::from(num)).div_ceil(u128::from(den)).max(1);
    let mut acc = 0u128;
    for (value, w) in v.iter() {
        acc += u128::from(*w);
        if acc >= target {
            return *value;
        }
    }
    v.last().map_or(0, |(value, _)| *value)
}

/// The flags of every input at `epoch` (aligned with `inputs`), from the
/// agreed `history` (which must already include `epoch`'s cut).
pub fn compute_flags(inputs: &[FlagInput], history: &History, epoch: u64, params: &FlagParams) -> Vec<Flags> {
    let epoch_s = params.epoch_s.max(1);
    let run_s = |id: &RelayId| history.record(id).map_or(0, |r| (epoch.saturating_sub(r.run_start) + 1) * epoch_s);
    let age_s = |id: &RelayId| history.record(id).map_or(0, |r| epoch.saturating_sub(r.first_epoch) * epoch_s);
    let wfu = |id: &RelayId| history.record(id).map_or(0, RelayRecord::wfu_ppm);
    let running: Vec<&FlagInput> = inputs.iter().filter(|i| i.running).collect();
    let mut bws: Vec<(u64, u64)> = running.iter().map(|i| (i.bandwidth_kbps, i.bandwidth_kbps)).collect();
    let fast_thr = weighted_quantile(&mut bws, 1, 8).min(params.fast_guarantee_kbps);
    let guard_bw_thr = weighted_quantile(&mut bws, 1, 2).min(params.guard_bw_guarantee_kbps);
    let mut runs: Vec<(u64, u64)> = running.iter().map(|i| (run_s(&i.id), i.bandwidth_kbps)).collect();
    let stable_thr = weighted_quantile(&mut runs, 1, 2).min(params.stable_guarantee_s);
    let mut wfus: Vec<(u64, u64)> = running
        .iter()
        .filter(|i| age_s(&i.id) >= params.familiar_s)
        .map(|i| (u64::from(wfu(&i.id)), i.bandwidth_kbps))
        .collect();
    let wfu_thr = weighted_quantile(&mut wfus, 1, 2).min(u64::from(params.wfu_guarantee_ppm));
    inputs
        .iter()
        .map(|i| {
            let running = i.running;
            let fast = running && i.bandwidth_kbps >= fast_thr && i.bandwidth_kbps > 0;
            let stable = running && run_s(&i.id) >= stable_thr;
            let familiar = age_s(&i.id) >= params.familiar_s;
            let guard =
                fast && stable && familiar && u64::from(wfu(&i.id)) >= wfu_thr && i.bandwidth_kbps >= guard_bw_thr;
            Flags { running, stable, fast, guard }
        })
        .collect()
}

#[cfg(test)]
mod tests;
