//! Flags: history, thresholds, Guard needs age, uptime and bandwidth.

use super::*;
use crate::testing::identity;

/// Ids 1..=n.
fn ids(n: u8) -> Vec<RelayId> {
    (1..=n).map(|i| identity(i).relay_id()).collect()
}

#[test]
fn history_tracks_runs_uptime_and_age() {
    let p = FlagParams::test_network();
    let mut h = History::new(p, 100);
    let r = ids(2);
    let both: BTreeSet<RelayId> = r.iter().copied().collect();
    let only0: BTreeSet<RelayId> = [r[0]].into_iter().collect();
    h.observe(10, &both);
    h.observe(11, &only0);
    h.observe(13, &both); // epoch 12 missed by everyone
    h.observe(13, &BTreeSet::new()); // replays ignored
    let a = h.record(&r[0]).unwrap();
    let b = h.record(&r[1]).unwrap();
    assert_eq!((a.first_epoch, a.run_start, a.last_epoch), (10, 13, 13));
    assert_eq!((b.first_epoch, b.run_start), (10, 13));
    assert!(a.wfu_ppm() > b.wfu_ppm());
    assert!(b.wfu_ppm() < PPM);
    // Bounded and forgetting.
    let mut small = History::new(p, 1);
    small.observe(1, &both);
    assert_eq!(small.len(), 1);
    let mut forget = History::new(p, 10);
    forget.observe(1, &both);
    forget.observe(1 + p.forget_after_epochs + 1, &BTreeSet::new());
    assert!(forget.is_empty());
}

/// A long-running, fast, familiar relay is Guard; a newcomer with the same
/// bandwidth is not; a slow one is not; a non-running one has no flags.
#[test]
fn guard_requires_evidence() {
    let p = FlagParams { fast_guarantee_kbps: 100, guard_bw_guarantee_kbps: 2_000, ..FlagParams::test_network() };
    let r = ids(12);
    let mut h = History::new(p, 100);
    let veterans: BTreeSet<RelayId> = r[..10].iter().copied().collect();
    for e in 0..20 {
        h.observe(e, &veterans);
    }
    let all: BTreeSet<RelayId> = r.iter().copied().collect();
    h.observe(20, &all);
    let mut inputs: Vec<FlagInput> =
        r.iter().map(|id| FlagInput { id: *id, running: true, bandwidth_kbps: 5_000 }).collect();
    inputs[9].bandwidth_kbps = 50; // slow veteran
    inputs[10].running = false;
    let flags = compute_flags(&inputs, &h, 20, &p);
    assert!(flags[0].guard && flags[0].fast && flags[0].stable && flags[0].running);
    assert!(!flags[9].guard && !flags[9].fast, "slow: {:?}", flags[9]);
    assert_eq!(flags[10], Flags::default(), "not running");
    assert!(flags[11].running && flags[11].fast && !flags[11].guard, "newcomer: {:?}", flags[11]);
    // Same inputs, same flags (determinism), whatever the order.
    let mut rev = inputs.clone();
    rev.reverse();
    let mut back = compute_flags(&rev, &h, 20, &p);
    back.reverse();
    assert_eq!(back, flags);
}

/// The median rules: when most relays have poor uptime, the WFU threshold
/// drops to their median (as in dir-spec), but a relay below it still
/// misses Guard.
#[test]
fn wfu_threshold_is_median_or_guarantee() {
    let p = FlagParams { wfu_guarantee_ppm: 990_000, ..FlagParams::test_network() };
    let r = ids(3);
    let mut h = History::new(p, 100);
    for e in 0..40u64 {
        let mut up = BTreeSet::new();
        up.insert(r[0]);
        if e % 2 == 0 {
            up.insert(r[1]);
        }
        if e % 4 == 0 {
            up.insert(r[2]);
        }
        h.observe(e, &up);
    }
    let all: BTreeSet<RelayId> = r.iter().copied().collect();
    for e in 40..45 {
        h.observe(e, &all);
    }
    let inputs: Vec<FlagInput> = r.iter().map(|id| FlagInput { id: *id, running: true, bandwidth_kbps: 10 }).collect();
    let flags = compute_flags(&inputs, &h, 44, &p);
    assert!(flags[0].guard && flags[1].guard, "{flags:?}");
    assert!(!flags[2].guard, "{flags:?}");
}

/// Attack test for the weighted quantiles: 1,000 always-up, old identities
/// with 10 KB/s each (9% of the capacity in all) neither earn Guard (they cannot
/// drag the bandwidth median down to their level) nor strip the honest
/// veterans of it (they cannot push the uptime or run medians up).
#[test]
fn sybil_swarm_cannot_move_the_thresholds() {
    let p = FlagParams::production();
    let honest: Vec<RelayId> = (1..=20u8).map(|i| identity(i).relay_id()).collect();
    let sybils: Vec<RelayId> = (0..1_000u32)
        .map(|i| {
            let mut b = [0u8; 32];
            b[..4].copy_from_slice(&i.to_be_bytes());
            b[31] = 0xee;
            RelayId(b)
        })
        .collect();
    let mut h = History::new(p, 10_000);
    let familiar = p.familiar_s / p.epoch_s + 2;
    for e in 0..familiar * 2 {
        let mut up: BTreeSet<RelayId> = sybils.iter().copied().collect();
        // Honest veterans: up from the start but each missed one recent
        // epoch (97% WFU-ish, shorter current run than the sybils).
        for (k, id) in honest.iter().enumerate() {
            if e != familiar + u64::try_from(k).unwrap() {
                up.insert(*id);
            }
        }
        h.observe(e, &up);
    }
    let last = familiar * 2 - 1;
    let mut inputs: Vec<FlagInput> =
        honest.iter().map(|id| FlagInput { id: *id, running: true, bandwidth_kbps: 5_000 }).collect();
    inputs.extend(sybils.iter().map(|id| FlagInput { id: *id, running: true, bandwidth_kbps: 10 }));
    let flags = compute_flags(&inputs, &h, last, &p);
    assert!(flags[..20].iter().all(|f| f.guard), "honest veterans keep Guard");
    assert!(flags[20..].iter().all(|f| !f.guard), "sybils earn no Guard");
}
