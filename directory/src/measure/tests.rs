//! Measurements: round trip, typed errors, forgery, assignment, the robust
//! aggregate against lying measurers, the weight formula and the ramp.

use std::collections::HashMap;

use super::*;
use crate::testing::identity;

/// A verified measurement of `subject` by relay `seed`.
fn m(seed: u8, subject: &RelayId, epoch: u64, kbps: u32) -> Measured {
    let body = MeasurementBody {
        measurer: identity(seed).relay_id(),
        subject: *subject,
        epoch,
        measured_kbps: kbps,
        observed_at: 1,
    };
    Measurement::sign(&identity(seed), body).verify().unwrap()
}

#[test]
fn round_trip_and_errors() {
    let subject = identity(1).relay_id();
    let x = m(2, &subject, 3, 500);
    let bytes = x.0.encode();
    assert_eq!(bytes.len(), MEASUREMENT_LEN);
    assert_eq!(Measurement::decode(&bytes).unwrap(), x.0);
    assert!(matches!(Measurement::decode(&bytes[..148]), Err(EvidenceError::Malformed(_))));
    assert!(matches!(Measurement::decode(&[0; 150]), Err(EvidenceError::Oversized { .. })));
    let mut v = bytes.clone();
    v[0] = 0;
    assert_eq!(Measurement::decode(&v), Err(EvidenceError::Version(0)));
    let mut forged = bytes.clone();
    forged[80] ^= 0x40; // measured_kbps
    assert_eq!(Measurement::decode(&forged).unwrap().verify(), Err(EvidenceError::BadSignature));
    let mut selfie = bytes;
    selfie[33..65].copy_from_slice(&identity(2).relay_id().0);
    assert_eq!(Measurement::decode(&selfie), Err(EvidenceError::SelfSigned));
}

/// Assignment is deterministic, excludes the subject's block, changes with
/// the seed, and spreads load.
#[test]
fn assignment() {
    let p = MeasureParams::production();
    let all: BTreeSet<NetBlock> = (0..100u8).map(|i| NetBlock::V4([30, i])).collect();
    let s = identity(1).relay_id();
    let own = [NetBlock::V4([30, 7])];
    let a = assigned_blocks(&s, &own, &[1; 32], &all, &p);
    assert_eq!(a.len(), 5);
    assert!(!a.contains(&own[0]));
    assert_eq!(a, assigned_blocks(&s, &own, &[1; 32], &all, &p));
    assert_ne!(a, assigned_blocks(&s, &own, &[2; 32], &all, &p));
    let slot = measurement_slot(&own[0], &[1; 32], &p);
    assert!(slot < p.slots);
}

/// A minority of lying blocks cannot move the low median outside the
/// honest range; unassigned measurers and stale measurements do not
/// count; too few blocks means unmeasured.
#[test]
fn aggregate_resists_lying_minorities() {
    let p = MeasureParams::production();
    let s = identity(1).relay_id();
    let assigned: Vec<NetBlock> = (2..=6u8).map(|i| NetBlock::V4([40, i])).collect();
    let mut blocks: HashMap<RelayId, NetBlock> =
        (2..=6u8).map(|i| (identity(i).relay_id(), NetBlock::V4([40, i]))).collect();
    blocks.insert(identity(9).relay_id(), NetBlock::V4([99, 9]));
    let block_of = |id: &RelayId| blocks.get(id).copied();
    // Honest: 900..1000; two liars claim u32::MAX.
    let ms =
        vec![m(2, &s, 10, 900), m(3, &s, 10, 950), m(4, &s, 10, 1000), m(5, &s, 10, u32::MAX), m(6, &s, 10, u32::MAX)];
    let agg = aggregate(&s, &ms, 10, &assigned, block_of, &p).unwrap();
    assert!((900..=1000).contains(&agg), "{agg}");
    // Two liars claiming 0 cannot push it below the honest range either.
    let low = vec![m(2, &s, 10, 900), m(3, &s, 10, 950), m(4, &s, 10, 1000), m(5, &s, 10, 0), m(6, &s, 10, 0)];
    let agg = aggregate(&s, &low, 10, &assigned, block_of, &p).unwrap();
    assert!((900..=1000).contains(&agg), "{agg}");
    // A majority of liars does (this is the bound, not a bug).
    let maj = vec![
        m(2, &s, 10, 900),
        m(3, &s, 10, 950),
        m(4, &s, 10, u32::MAX),
        m(5, &s, 10, u32::MAX),
        m(6, &s, 10, u32::MAX),
    ];
    assert_eq!(aggregate(&s, &maj, 10, &assigned, block_of, &p), Some(u32::MAX));
    // Unassigned measurer (block 99.9) is ignored: two blocks < min 3.
    let few = vec![m(2, &s, 10, 900), m(3, &s, 10, 950), m(9, &s, 10, u32::MAX)];
    assert_eq!(aggregate(&s, &few, 10, &assigned, block_of, &p), None);
    // Stale measurements do not count.
    let stale = vec![m(2, &s, 1, 900), m(3, &s, 1, 950), m(4, &s, 1, 1000)];
    assert_eq!(aggregate(&s, &stale, 30, &assigned, block_of, &p), None);
    // A measurer's newest epoch counts.
    let newer = vec![m(2, &s, 9, 5), m(2, &s, 10, 900), m(3, &s, 10, 950), m(4, &s, 10, 1000)];
    assert_eq!(aggregate(&s, &newer, 10, &assigned, block_of, &p), Some(950));
}

/// min(capped claim, measurement); unmeasured capped; the ramp.
#[test]
fn weight_formula() {
    let p = MeasureParams::production();
    let full = p.ramp_s;
    assert_eq!(base_weight(u32::MAX, Some(300), full, &p), 300);
    assert_eq!(base_weight(200, Some(300), full, &p), 200);
    assert_eq!(base_weight(u32::MAX, Some(u32::MAX), full, &p), u64::from(p.max_advertised_kbps));
    assert_eq!(base_weight(u32::MAX, None, full, &p), 20);
    assert_eq!(base_weight(1000, Some(1000), 0, &p), 100);
    assert_eq!(base_weight(1000, Some(1000), full / 2, &p), 550);
    assert_eq!(ramp_ppm(full * 2, &p), PPM);
    let mut v = [5, 1, 4, 2];
    assert_eq!(low_median(&mut v), Some(2));
    assert_eq!(low_median(&mut []), None);
}
