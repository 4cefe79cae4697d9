//! Position weights: scarce exits stay exits, positions balance, caps.

use super::*;

/// Relay flags shorthand.
fn relay(block: u8, w: u64, guard: bool, exit: bool) -> RelayWeightInput {
    RelayWeightInput {
        block: NetBlock::V4([50, block]),
        base_weight: w,
        flags: Flags { running: true, stable: guard, fast: true, guard },
        exit,
    }
}

/// Each class's fractions sum to the scale.
fn sums_ok(w: &BandwidthWeights) -> bool {
    w.wgg + w.wmg == WEIGHT_SCALE && w.wee + w.wme == WEIGHT_SCALE && w.wgd + w.wmd + w.wed == WEIGHT_SCALE
}

#[test]
fn scarce_exit_capacity_is_kept_for_exits() {
    // Exits 10% of capacity: all of it at exit, none at middle or guard.
    let w = bandwidth_weights(400, 500, 60, 40);
    assert_eq!((w.wee, w.wed, w.wme, w.wmd, w.wgd), (WEIGHT_SCALE, WEIGHT_SCALE, 0, 0, 0));
    assert!(sums_ok(&w));
    // Guards plentiful: guard position gets T/3 of guard capacity.
    let t = 1_000u64;
    assert_eq!(w.wgg, WEIGHT_SCALE * (t / 3) / 400);
}

#[test]
fn plentiful_exits_are_balanced() {
    let w = bandwidth_weights(100, 100, 700, 100);
    assert!(sums_ok(&w));
    // Exit position gets T/3 = 333 from E and D alike.
    assert_eq!(w.wee, WEIGHT_SCALE * 333 / 800);
    assert_eq!(w.wed, w.wee);
    // Guards scarce: all guard-only at guard, D's remainder fills the gap.
    assert_eq!(w.wgg, WEIGHT_SCALE);
    assert_eq!(w.wgd, WEIGHT_SCALE - w.wed);
    let w = bandwidth_weights(0, 0, 0, 0);
    assert!(w.wgg <= WEIGHT_SCALE && w.wee <= WEIGHT_SCALE);
}

#[test]
fn position_weights_follow_flags_and_caps() {
    let mut relays = vec![relay(1, 1_000, true, false), relay(2, 1_000, false, true), relay(3, 1_000, false, false)];
    let mut off = relay(4, 1_000_000, true, true);
    off.flags.running = false;
    relays.push(off);
    let (pw, _) = position_weights(&relays, &QuotaParams::test_network());
    assert!(pw[0].guard > 0 && pw[0].exit == 0);
    assert!(pw[1].guard == 0 && pw[1].exit == 1_000, "scarce exit keeps all: {:?}", pw[1]);
    assert!(pw[2].guard == 0 && pw[2].exit == 0 && pw[2].middle == 1_000);
    assert_eq!(pw[3], PositionWeights::default());
    // A heavy block is capped to 5% of the total.
    let mut many: Vec<RelayWeightInput> = (0..40u8).map(|i| relay(i, 100, false, false)).collect();
    many.push(relay(200, 1_000_000, false, false));
    let (pw, _) = position_weights(&many, &QuotaParams::production());
    let total: u64 = pw.iter().map(|p| p.middle).sum();
    assert!(pw[40].middle * 100 <= total * 5 + 100, "{} of {total}", pw[40].middle);
}
