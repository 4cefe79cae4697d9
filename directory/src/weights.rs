//! Position weights (spec §14.5): every client derives the same (guard,
//! middle, exit) weight for every relay from the agreed cut, flags and
//! measured base weights.
//!
//! 1. Base weight ([`crate::measure::base_weight`]); 0 unless Running.
//! 2. Per-block cap ([`crate::quota::cap_block_shares`]): no /16 carries
//!    more than `max_block_share_ppm` of the total.
//! 3. Classes, as in Tor's dir-spec §3.8.3: G = Guard only, E = exit
//!    only, D = Guard and exit, M = neither; T = G + M + E + D.
//! 4. Bandwidth weights ([`bandwidth_weights`], scale 10,000) balance the
//!    three positions at T/3 each where the flagged capacity allows, and
//!    keep a *scarce* class for its own position: when exit capacity
//!    E + D ≤ T/3, exits serve only as exits (Wee = Wed = 1, Wme = Wmd =
//!    Wgd = 0); otherwise E and D are scaled alike to T/3 at the exit
//!    position (Wee = Wed = (T/3)/(E + D)). When guard capacity is scarce,
//!    guards serve only as guards and D's remainder fills the guard
//!    position.
//!    Each relay's fractions sum to at most 1 (Wgg + Wmg = 1, Wee + Wme =
//!    1, Wgd + Wmd + Wed = 1), so no relay is counted twice.
//! 5. guard = base × (Wgg | Wgd) for Guard relays, exit = base × (Wee |
//!    Wed) for exits, middle = base × (Wmg | Wmm | Wme | Wmd); 0 elsewhere.
//!
//! Integer arithmetic only, so every client computes identical numbers.

use crate::descriptor::{Descriptor, ExitSummary};
use crate::flags::Flags;
use crate::gossip::NetBlock;
use crate::measure::{base_weight, MeasureParams};
use crate::quota::{blocks, cap_block_shares, ip_keys, select_per_ip, Candidate, QuotaParams, Standing};
use crate::verify::Verified;

/// The scale of bandwidth weights (Tor's `bwweightscale`).
pub const WEIGHT_SCALE: u64 = 10_000;

/// The bandwidth weights, each in 0..=[`WEIGHT_SCALE`]. Names as in
/// dir-spec: W(position)(class), position g/m/e, class g/m/e/d.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BandwidthWeights {
    /// Guard-only relays at the guard position.
    pub wgg: u64,
    /// Guard+exit relays at the guard position.
    pub wgd: u64,
    /// Guard-only relays at the middle position.
    pub wmg: u64,
    /// Unflagged relays at the middle position.
    pub wmm: u64,
    /// Exit-only relays at the middle position.
    pub wme: u64,
    /// Guard+exit relays at the middle position.
    pub wmd: u64,
    /// Exit-only relays at the exit position.
    pub wee: u64,
    /// Guard+exit relays at the exit position.
    pub wed: u64,
}

/// `WEIGHT_SCALE × num / den`, clamped to the scale (0 when `den` is 0).
fn frac(num: u128, den: u128) -> u64 {
    if den == 0 {
        return 0;
    }
    let v = (u128::from(WEIGHT_SCALE) * num / den).min(u128::from(WEIGHT_SCALE));
    u64::try_from(v).unwrap_or(WEIGHT_SCALE)
}

/// The bandwidth weights for class totals `g`, `m`, `e`, `d` (see the
/// module documentation for the rule).
pub fn bandwidth_weights(g: u64, m: u64, e: u64, d: u64) -> BandwidthWeights {
    let (g, m, e, d) = (u128::from(g), u128::from(m), u128::from(e), u128::from(d));
    let third = (g + m + e + d) / 3;
    let s = WEIGHT_SCALE;
    // Exit position first: exit capacity is the scarcest in practice.
    // When it is not scarce, E and D are scaled alike, so an attacker's
    // exit share is its share of exit capacity (preferring E would hand
    // the exit position to exit-only relays, the cheapest class to fake).
    let (wee, wed) = if e + d <= third {
        (s, if d > 0 { s } else { 0 })
    } else {
        let f = frac(third, e + d);
        (f, if d > 0 { f } else { 0 })
    };
    // Guard position from what exits left of D.
    let d_left = s - wed;
    let (wgg, wgd) = if g >= third {
        (frac(third, g), 0)
    } else {
        let need = third - g;
        let wgd = if d > 0 { frac(need, d).min(d_left) } else { 0 };
        (s, wgd)
    };
    BandwidthWeights { wgg, wgd, wmg: s - wgg, wmm: s, wme: s - wee, wmd: s - wed - wgd, wee, wed }
}

/// One relay offered to [`position_weights`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayWeightInput {
    /// Its block ([`crate::quota::blocks`], the first).
    pub block: NetBlock,
    /// Its base weight ([`crate::measure::base_weight`]).
    pub base_weight: u64,
    /// Its flags ([`crate::flags::compute_flags`]).
    pub flags: Flags,
    /// Whether its exit policy allows exiting at all.
    pub exit: bool,
}

/// A relay's weight at each position (0: never chosen there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PositionWeights {
    /// First hop (only Guard relays).
    pub guard: u64,
    /// Middle hop.
    pub middle: u64,
    /// Last hop (only exits).
    pub exit: u64,
}

/// The class of a relay: (is guard, is exit).
fn class(r: &RelayWeightInput) -> (bool, bool) {
    (r.flags.guard, r.exit)
}

/// Every relay's position weights (aligned with `relays`) and the
/// bandwidth weights used. The same inputs give every client the same
/// answer.
pub fn position_weights(relays: &[RelayWeightInput], quota: &QuotaParams) -> (Vec<PositionWeights>, BandwidthWeights) {
    let mut base: Vec<u64> = relays.iter().map(|r| if r.flags.running { r.base_weight } else { 0 }).collect();
    let blocks: Vec<NetBlock> = relays.iter().map(|r| r.block).collect();
    cap_block_shares(&mut base, &blocks, quota.max_block_share_ppm);
    let (mut g, mut m, mut e, mut d) = (0u64, 0u64, 0u64, 0u64);
    for (r, w) in relays.iter().zip(&base) {
        let slot = match class(r) {
            (true, true) => &mut d,
            (true, false) => &mut g,
            (false, true) => &mut e,
            (false, false) => &mut m,
        };
        *slot = slot.saturating_add(*w);
    }
    let bw = bandwidth_weights(g, m, e, d);
    let scale =
        |w: u64, f: u64| u64::try_from(u128::from(w) * u128::from(f) / u128::from(WEIGHT_SCALE)).unwrap_or(u64::MAX);
    let out = relays
        .iter()
        .zip(&base)
        .map(|(r, w)| {
            let (gf, mf, ef) = match class(r) {
                (true, true) => (bw.wgd, bw.wmd, bw.wed),
                (true, false) => (bw.wgg, bw.wmg, 0),
                (false, true) => (0, bw.wme, bw.wee),
                (false, false) => (0, bw.wmm, 0),
            };
            PositionWeights { guard: scale(*w, gf), middle: scale(*w, mf), exit: scale(*w, ef) }
        })
        .collect();
    (out, bw)
}

/// The network parameters [`path_weights`] depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathWeightParams {
    /// Unmeasured cap, advertised clip, age ramp.
    pub measure: MeasureParams,
    /// Per-IP limit and per-block share cap.
    pub quota: QuotaParams,
}

impl PathWeightParams {
    /// The public network's values.
    pub const fn production() -> Self {
        Self { measure: MeasureParams::production(), quota: QuotaParams::production() }
    }

    /// A local test network's values (`--test-network`).
    pub const fn test_network() -> Self {
        Self { measure: MeasureParams::test_network(), quota: QuotaParams::test_network() }
    }
}

/// The path weights of every descriptor of an agreed snapshot (aligned
/// with `descriptors`), spec §14.7: the same snapshot gives every client
/// the same numbers.
///
/// - Per-IP quota ([`select_per_ip`], standing = no evidence, first seen =
///   published): relays over it get weight 0 everywhere.
/// - Base weight ([`base_weight`]) from the advertised bandwidth with **no
///   measurement**: measurements are not gossiped yet, so every relay is
///   unmeasured and weighs at most `unmeasured_cap_kbps`, whatever it
///   claims. The age is not agreed either (the [`crate::flags::History`]
///   of cuts is not served to clients), so no ramp is applied: a uniform
///   factor would not change any relay's share.
/// - Flags: every relay of the snapshot is Running (it is in the cut) and,
///   as long as clients have no agreed history, Guard; the position
///   weights of [`position_weights`] then keep scarce exit capacity for the
///   exit position.
pub fn path_weights(descriptors: &[Verified<Descriptor>], params: &PathWeightParams) -> Vec<PositionWeights> {
    let cands: Vec<Candidate> = descriptors
        .iter()
        .map(|d| Candidate {
            id: d.id(),
            ips: ip_keys(d),
            standing: Standing { evidence: 0, first_seen: d.published() },
        })
        .collect();
    let keep = select_per_ip(&cands, params.quota.max_per_ip);
    let inputs: Vec<RelayWeightInput> = descriptors
        .iter()
        .zip(&keep)
        .map(|(d, kept)| RelayWeightInput {
            block: blocks(d).first().copied().unwrap_or(NetBlock::V4([0, 0])),
            base_weight: base_weight(d.bandwidth_kbps(), None, params.measure.ramp_s, &params.measure),
            flags: Flags { running: *kept, stable: false, fast: true, guard: true },
            exit: !matches!(d.exit(), ExitSummary::NotExit),
        })
        .collect();
    position_weights(&inputs, &params.quota).0
}

#[cfg(test)]
mod tests;
