//! Attestations: round trip, typed decode errors, forgery, the k-of-blocks
//! cut rule, routability and the probe schedule.

use std::collections::{BTreeSet, HashMap};

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::*;
use crate::testing::{fields, identity, signed, T0, TEST_DIFFICULTY};
use crate::verify::Verified;

/// Subject relay 1 at a public address.
fn subject() -> Verified<Descriptor> {
    let mut f = fields(1);
    f.addresses = vec!["8.8.4.4:443".parse().unwrap()];
    signed(&identity(1), f).verify(T0, TEST_DIFFICULTY).unwrap()
}

/// Attestation of `d` by relay `seed` at `epoch`.
fn attest(seed: u8, d: &Descriptor, epoch: u64) -> Attested {
    let body = AttestationBody {
        attester: identity(seed).relay_id(),
        subject: d.id(),
        link_key: d.link_key(),
        address: d.addresses()[0],
        epoch,
        observed_at: T0,
    };
    Attestation::sign(&identity(seed), body).verify().unwrap()
}

/// Attester `seed` lives in block 20.seed/16.
fn blocks_of(seeds: &[u8]) -> HashMap<RelayId, NetBlock> {
    seeds.iter().map(|s| (identity(*s).relay_id(), NetBlock::V4([20, *s]))).collect()
}

#[test]
fn round_trip_and_size() {
    let d = subject();
    let a = attest(2, &d, 7);
    let bytes = a.attestation().encode();
    assert_eq!(bytes.len(), 184);
    assert_eq!(Attestation::decode(&bytes).unwrap(), *a.attestation());
    let mut b6 = a.attestation().body;
    b6.address = "[2a00:1450::1]:443".parse().unwrap();
    let six = Attestation::sign(&identity(2), b6).encode();
    assert_eq!(six.len(), MAX_ATTESTATION_LEN);
    assert!(Attestation::decode(&six).unwrap().verify().is_ok());
}

#[test]
fn decode_errors_are_typed() {
    let d = subject();
    let bytes = attest(2, &d, 7).attestation().encode();
    assert!(matches!(Attestation::decode(&bytes[..100]), Err(EvidenceError::Malformed(_))));
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(Attestation::decode(&long), Err(EvidenceError::Malformed(_))));
    assert!(matches!(Attestation::decode(&[0u8; 300]), Err(EvidenceError::Oversized { .. })));
    let mut v = bytes.clone();
    v[0] = 9;
    assert_eq!(Attestation::decode(&v), Err(EvidenceError::Version(9)));
    let mut fam = bytes.clone();
    fam[97] = 5;
    assert_eq!(Attestation::decode(&fam), Err(EvidenceError::AddressFamily(5)));
    let mut port = bytes.clone();
    port[102] = 0;
    port[103] = 0;
    assert_eq!(Attestation::decode(&port), Err(EvidenceError::Address));
    let mut selfie = bytes;
    selfie[33..65].copy_from_slice(&identity(2).relay_id().0);
    assert_eq!(Attestation::decode(&selfie), Err(EvidenceError::SelfSigned));
}

/// A changed field or a signature by someone else does not verify.
#[test]
fn forgery_is_rejected() {
    let d = subject();
    let mut bytes = attest(2, &d, 7).attestation().encode();
    bytes[110] ^= 1; // epoch
    assert_eq!(Attestation::decode(&bytes).unwrap().verify(), Err(EvidenceError::BadSignature));
    let mut body = attest(2, &d, 7).attestation().body;
    let forged = Attestation::sign(&identity(3), body);
    body.attester = identity(4).relay_id();
    let claimed = Attestation { body, signature: forged.signature };
    assert_eq!(claimed.verify(), Err(EvidenceError::BadSignature));
}

/// k attestations from distinct blocks admit; fewer, same-block, stale,
/// unknown-attester or wrong-key ones do not.
#[test]
fn cut_rule_counts_distinct_blocks() {
    let d = subject();
    let p = AttestParams::production();
    let blocks = blocks_of(&[2, 3, 4, 5]);
    let block_of = |id: &RelayId| blocks.get(id).copied();
    let two = vec![attest(2, &d, 10), attest(3, &d, 10)];
    assert!(!admit_to_cut(&d, &two, 10, &p, block_of));
    let three = vec![attest(2, &d, 10), attest(3, &d, 9), attest(4, &d, 8)];
    assert!(admit_to_cut(&d, &three, 10, &p, block_of));
    // Too old, or from the future.
    assert!(!admit_to_cut(&d, &three, 12, &p, block_of));
    assert!(!admit_to_cut(&d, &three, 9, &p, block_of));
    // Many attesters in one block count once.
    let same = HashMap::from([
        (identity(2).relay_id(), NetBlock::V4([20, 2])),
        (identity(3).relay_id(), NetBlock::V4([20, 2])),
        (identity(4).relay_id(), NetBlock::V4([20, 2])),
    ]);
    assert!(!admit_to_cut(&d, &three, 10, &p, |id| same.get(id).copied()));
    // Attesters in the subject's own block do not count.
    let own = HashMap::from([
        (identity(2).relay_id(), NetBlock::V4([8, 8])),
        (identity(3).relay_id(), NetBlock::V4([20, 3])),
        (identity(4).relay_id(), NetBlock::V4([20, 4])),
    ]);
    assert!(!admit_to_cut(&d, &three, 10, &p, |id| own.get(id).copied()));
    // Unknown attesters do not count.
    assert!(!admit_to_cut(&d, &three, 10, &p, |_| None));
    // An attestation for another link key does not count.
    let mut body = attest(5, &d, 10).attestation().body;
    body.link_key = LinkPublicKey([0x99; 32]);
    let wrong = Attestation::sign(&identity(5), body).verify().unwrap();
    let mixed = vec![attest(2, &d, 10), attest(3, &d, 10), wrong];
    assert!(!admit_to_cut(&d, &mixed, 10, &p, block_of));
}

/// A loopback or private address never enters a production cut, whatever
/// the attestations; a test network accepts it.
#[test]
fn non_routable_refused_unless_test_network() {
    let mut f = fields(1);
    f.addresses = vec!["127.1.0.1:5000".parse().unwrap()];
    let d = signed(&identity(1), f).verify(T0, TEST_DIFFICULTY).unwrap();
    let blocks = blocks_of(&[2, 3, 4]);
    let atts = vec![attest(2, &d, 1), attest(3, &d, 1), attest(4, &d, 1)];
    assert!(!admit_to_cut(&d, &atts, 1, &AttestParams::production(), |id| blocks.get(id).copied()));
    assert!(admit_to_cut(&d, &atts, 1, &AttestParams::test_network(), |id| blocks.get(id).copied()));
    for bad in [
        "10.1.2.3",
        "192.168.1.1",
        "172.16.0.1",
        "100.64.0.1",
        "169.254.1.1",
        "0.1.2.3",
        "224.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "2001:db8::1",
        "2002::1",
        "64:ff9b::1.2.3.4",
        "::ffff:8.8.8.8",
    ] {
        assert!(!is_publicly_routable(bad.parse().unwrap()), "{bad}");
    }
    for good in ["8.8.8.8", "1.1.1.1", "172.32.0.1", "2a00:1450:4001::1", "2606:4700::1111"] {
        assert!(is_publicly_routable(good.parse().unwrap()), "{good}");
    }
}

/// Every peer is probed once before any is probed again; at most the
/// in-flight limit at once; a peer is not re-probed before its interval;
/// failures back off; success yields a verifying attestation.
#[test]
fn probe_scheduler() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let me = identity(100);
    let peers: Vec<_> = (1..=6u8)
        .map(|i| {
            let mut f = fields(1);
            f.addresses = vec![format!("8.8.{i}.1:443").parse().unwrap()];
            signed(&identity(i), f).verify(T0, TEST_DIFFICULTY).unwrap()
        })
        .collect();
    let mut params = AttestParams::production();
    params.max_probes_in_flight = 2;
    let mut s = ProbeScheduler::new(me.relay_id(), params, 100);
    s.set_targets(peers.iter().map(|d| &**d));
    assert_eq!(s.len(), 6);
    let a = s.next_probe(T0, &mut rng).unwrap();
    let b = s.next_probe(T0, &mut rng).unwrap();
    assert_ne!(a.subject, b.subject);
    assert!(s.next_probe(T0, &mut rng).is_none(), "in-flight limit");
    let att = s.on_result(&a, true, T0 + 1, 5, &me).unwrap();
    assert_eq!(att.body.subject, a.subject);
    assert!(att.clone().verify().is_ok());
    assert!(s.on_result(&b, false, T0 + 1, 5, &me).is_none());
    let mut seen = BTreeSet::from([a.subject, b.subject]);
    for _ in 0..4 {
        let t = s.next_probe(T0 + 2, &mut rng).unwrap();
        assert!(seen.insert(t.subject), "a never-probed peer goes first");
        s.on_result(&t, true, T0 + 2, 5, &me);
    }
    assert!(s.next_probe(T0 + 3, &mut rng).is_none(), "nobody is due yet");
    // After one interval, a is due (probed longest ago) but b, which
    // failed, waits twice as long.
    let t = s.next_probe(T0 + params.probe_interval_s, &mut rng).unwrap();
    assert_eq!(t.subject, a.subject);
    s.on_result(&t, true, T0 + params.probe_interval_s, 6, &me);
    let later = T0 + params.probe_interval_s + 10;
    while let Some(t) = s.next_probe(later, &mut rng) {
        assert_ne!(t.subject, b.subject);
        s.on_result(&t, true, later, 6, &me);
    }
    let t = s.next_probe(T0 + 2 * params.probe_interval_s + 1, &mut rng);
    assert!(t.is_some());
    // Our own descriptor and non-routable peers are never targets.
    let mut own = fields(1);
    own.addresses = vec!["8.8.9.9:443".parse().unwrap()];
    let mine = signed(&me, own).verify(T0, TEST_DIFFICULTY).unwrap();
    let mut lo = fields(1);
    lo.addresses = vec!["127.0.0.1:443".parse().unwrap()];
    let local = signed(&identity(50), lo).verify(T0, TEST_DIFFICULTY).unwrap();
    s.set_targets([&*mine, &*local, &*peers[0]]);
    assert_eq!(s.len(), 1);
}

/// Relay `seed` at 20.seed.0.1 (block 20.seed/16).
fn relay_at(seed: u8) -> Verified<Descriptor> {
    let mut f = fields(1);
    f.addresses = vec![SocketAddr::from(([20, seed, 0, 1], 443))];
    signed(&identity(seed), f).verify(T0, TEST_DIFFICULTY).unwrap()
}

/// Bootstrap rule: the count asked is min(k, other candidate blocks); a
/// lone relay needs none, two relays need one each, and a network of more
/// than k blocks asks k of everyone. An unattested relay among attested
/// ones is refused (the attack: a descriptor nobody can reach).
#[test]
fn admit_set_bootstrap_rule() {
    let params = AttestParams::production();
    let lone = relay_at(1);
    assert_eq!(admit_set(&[&*lone], &[], 5, &params), vec![true], "a lone relay forms a network");
    let (a, b) = (relay_at(1), relay_at(2));
    assert_eq!(admit_set(&[&*a, &*b], &[], 5, &params), vec![false, false], "two blocks: one attestation each");
    let mutual = [attest(2, &a, 5), attest(1, &b, 5)];
    assert_eq!(admit_set(&[&*a, &*b], &mutual, 5, &params), vec![true, true]);
    // Five relays in five blocks: k = 3 for each; relay 5 is attested by
    // nobody, the others by three blocks each.
    let rs: Vec<Verified<Descriptor>> = (1..=5).map(relay_at).collect();
    let plain: Vec<&Descriptor> = rs.iter().map(|v| &**v).collect();
    let mut atts = Vec::new();
    for (i, d) in rs.iter().enumerate().take(4) {
        for by in (1..=4u8).filter(|s| usize::from(*s) != i + 1) {
            atts.push(attest(by, d, 5));
        }
    }
    assert_eq!(admit_set(&plain, &atts, 5, &params), vec![true, true, true, true, false]);
    assert_eq!(attesting_counts(&plain, &atts, 5, &params), vec![3, 3, 3, 3, 0]);
    let two_only: Vec<Attested> =
        atts.iter().filter(|a| a.body().attester != identity(4).relay_id()).cloned().collect();
    assert!(!admit_set(&plain, &two_only, 5, &params)[0], "two blocks are not enough once five blocks exist");
}
