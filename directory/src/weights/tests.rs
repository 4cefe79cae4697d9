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

/// A descriptor of relay `seed` at `ip`, claiming `kbps`, exit or not.
fn desc(seed: u8, ip: [u8; 4], kbps: u32, exit: bool) -> Verified<Descriptor> {
    use crate::descriptor::{ExitSummary, PortRange};
    use crate::testing::{fields, identity, signed, T0, TEST_DIFFICULTY};
    let mut f = fields(1);
    f.addresses = vec![std::net::SocketAddr::from((ip, 443))];
    f.bandwidth_kbps = kbps;
    if exit {
        f.exit = ExitSummary::Exit { ports: vec![PortRange { lo: 1, hi: 65535 }] };
    }
    signed(&identity(seed), f).verify(T0, TEST_DIFFICULTY).unwrap()
}

/// Seven relays, three exits, one exit claiming 4,000,000,000 KB/s: its
/// claim buys it nothing over the others (all unmeasured), at any
/// position; the answer does not depend on anything but the snapshot.
#[test]
fn path_weights_ignore_inflated_claims() {
    let mut ds: Vec<_> = (1..=7u8).map(|i| desc(i, [198, 50 + i, 0, 1], 1000, i <= 3)).collect();
    ds[0] = desc(1, [198, 51, 0, 1], 4_000_000_000, true);
    for params in [PathWeightParams::production(), PathWeightParams::test_network()] {
        let w = path_weights(&ds, &params);
        assert_eq!(w.len(), 7);
        assert_eq!(w[0], w[1], "the inflated exit weighs what an honest exit weighs");
        assert_eq!(w[1], w[2]);
        assert!(w[0].exit > 0 && w[3].exit == 0, "only exits at the exit position");
        assert!(w[3].guard > 0 && w[3].middle > 0);
        let total_exit: u64 = w.iter().map(|p| p.exit).sum();
        assert!(w[0].exit * 3 <= total_exit, "at most a third of the exit weight");
        assert_eq!(w, path_weights(&ds, &params), "deterministic");
    }
}

/// The per-IP quota of the path weights: a fifth relay on one IP gets
/// weight 0, the same one whatever the snapshot order.
#[test]
fn path_weights_apply_the_ip_quota() {
    let ds: Vec<_> = (1..=5u8).map(|i| desc(i, [198, 51, 0, 1], 1000, false)).collect();
    let w = path_weights(&ds, &PathWeightParams::test_network());
    let zero: Vec<usize> = (0..5).filter(|&i| w[i] == PositionWeights::default()).collect();
    assert_eq!(zero.len(), 1, "exactly one over the limit of four");
    let mut rev = ds.clone();
    rev.reverse();
    let wr = path_weights(&rev, &PathWeightParams::test_network());
    assert_eq!(wr[4 - zero[0]], PositionWeights::default(), "the same relay, whatever the order");
}
