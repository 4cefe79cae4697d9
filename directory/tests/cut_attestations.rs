//! The reachability rule in the cut (spec §14.2): a descriptor enters the
//! agreed cut only with attestations from `k` other blocks (bootstrap: at
//! most the number of other blocks the cut spans); the attestations are
//! reconciled with the descriptors before a cut is frozen, so relays that
//! missed some gossip still serve the same root.

// Test code: a panic is a test failure, in helpers as in #[test] functions.
#![allow(clippy::unwrap_used)]

#[path = "support/fixtures.rs"]
mod fixtures;

use fixtures::{addr_of, config, drain, engine, fields, identity, now, peer, sign, Engine, DIFFICULTY, T0};
use lamina_crypto::keys::LinkPublicKey;
use lamina_directory::attest::{AttestParams, Attestation, AttestationBody};
use lamina_directory::wire::AttestationBatch;
use lamina_directory::{Descriptor, Direction, Epoch, GossipConfig, Message, Unverified};

/// Ten-second epochs (Δ = 2 s), attestations from two blocks required.
fn cfg(attest: bool) -> GossipConfig {
    let params = AttestParams { k: 2, ..AttestParams::production() };
    GossipConfig { epoch_len_s: 10, attest: attest.then_some(params), ..config() }
}

/// The epoch that starts at `T0` (the tests start in it).
const E0: Epoch = Epoch(T0 / 10);
/// The epoch after: its cutoff `T0 + 8` lies ahead, its cut is the one
/// reconciled and frozen at `T0 + 10`.
const E1: Epoch = Epoch(T0 / 10 + 1);

/// Relay `n`'s descriptor, published an hour before `T0`.
fn desc(n: u32) -> Unverified<Descriptor> {
    sign(n, fields(n, 1, T0 - 3600), DIFFICULTY)
}

/// Relay `by` attests that it reached relay `subject` at its address
/// shortly before the cutoff of `E0`.
fn attest(by: u32, subject: u32) -> Attestation {
    let body = AttestationBody {
        attester: identity(by).relay_id(),
        subject: identity(subject).relay_id(),
        link_key: LinkPublicKey([0x22; 32]),
        address: addr_of(subject),
        epoch: E0.0 - 1,
        observed_at: T0 - 5,
    };
    Attestation::sign(&identity(by), body)
}

/// Engines 1..=3, fully linked, each holding relays 10 (never reached)
/// and 11 (reached by engines 1 and 2).
fn net(attest: bool) -> Vec<(u32, Engine)> {
    let shared = [desc(10), desc(11)];
    let mut out: Vec<(u32, Engine)> = [1, 2, 3]
        .iter()
        .map(|n| {
            let mut e = engine(*n, cfg(attest));
            e.import(now(0), shared.iter().cloned());
            e.publish_own(now(0), desc(*n).as_bytes()).unwrap();
            for m in [1, 2, 3] {
                e.import(now(0), [desc(m)]);
            }
            (*n, e)
        })
        .collect();
    for (i, (a, ea)) in out.iter_mut().enumerate() {
        for b in [1u32, 2, 3].into_iter().filter(|b| b != a) {
            let dir = if usize::try_from(b).unwrap() > i + 1 { Direction::Outbound } else { Direction::Inbound };
            ea.add_peer(now(0), peer(b), dir).unwrap();
        }
    }
    for (_, e) in &mut out {
        drain(e);
    }
    out
}

/// Deliver every queued message until the network is quiet.
fn settle(net: &mut [(u32, Engine)], t: u64) {
    for _ in 0..100 {
        let mut mail = Vec::new();
        for (n, e) in net.iter_mut() {
            mail.extend(drain(e).into_iter().map(|(to, m)| (*n, to, m)));
        }
        if mail.is_empty() {
            return;
        }
        for (from, to, m) in mail {
            if let Some((_, e)) = net.iter_mut().find(|(k, _)| peer(*k) == to) {
                e.handle_message(now(t), peer(from), m);
            }
        }
    }
}

/// Run every engine's timers at `t` and settle.
fn tick(net: &mut [(u32, Engine)], t: u64) {
    for (_, e) in net.iter_mut() {
        e.handle_timeout(now(t));
        while e.poll_event().is_some() {}
    }
    settle(net, t);
}

/// Every engine attests every other engine and relay 11, except the
/// (attester, subject) pairs in `skip`.
fn attest_all(n: &mut [(u32, Engine)], skip: &[(u32, u32)]) {
    for (me, e) in n.iter_mut() {
        for s in [1, 2, 3, 11].into_iter().filter(|s| s != me && !skip.contains(&(*me, *s))) {
            assert!(e.add_attestation(attest(*me, s)));
        }
    }
}

/// The unreached relay 10 is left out of every served cut; the attested
/// ones are in, and all engines serve one root. Without the rule (the
/// attack: a descriptor pointing at an address nobody can reach) relay 10
/// is served like the others.
#[test]
fn unattested_relay_is_not_in_the_cut() {
    let mut n = net(true);
    attest_all(&mut n, &[(3, 11)]);
    settle(&mut n, 0);
    tick(&mut n, 8_000);
    tick(&mut n, 10_000);
    tick(&mut n, 11_000);
    let served = n[0].1.served(Some(E1)).expect("frozen");
    assert_eq!(served.2, 4, "engines 1-3 and relay 11; not relay 10");
    for (_, e) in &n {
        assert_eq!(e.served(Some(E1)), Some(served), "one root everywhere");
    }
    assert!(n[0].1.stats().cut_unattested >= 1);

    let mut open = net(false);
    tick(&mut open, 8_000);
    tick(&mut open, 10_000);
    tick(&mut open, 11_000);
    assert_eq!(open[0].1.served(Some(E1)).expect("frozen").2, 5, "without the rule relay 10 is served");
}

/// An attestation that reached only one engine (its gossip was lost) is
/// reconciled in the cut exchange: every engine ends up serving relay 11.
#[test]
fn missed_attestations_are_reconciled_before_freezing() {
    let mut n = net(true);
    attest_all(&mut n, &[(2, 11), (3, 11)]);
    settle(&mut n, 0);
    // Engine 2 attests 11 too, but its gossip is lost: only engine 2 holds
    // two attesting blocks for 11 when the cutoff passes.
    assert!(n[1].1.add_attestation(attest(2, 11)));
    drain(&mut n[1].1);
    for t in [8_000, 10_000, 11_000, 12_000] {
        tick(&mut n, t);
    }
    let served = n[0].1.served(Some(E1)).expect("frozen");
    for (_, e) in &n {
        assert_eq!(e.served(Some(E1)), Some(served), "one root everywhere");
    }
    assert_eq!(served.2, 4);
}

/// A forged attestation (signed by another key) is refused.
#[test]
fn forged_attestation_is_refused() {
    let mut n = net(true);
    let mut forged = attest(1, 10);
    forged.body.attester = identity(2).relay_id();
    assert!(!n[0].1.add_attestation(forged));
    assert_eq!(n[0].1.stats().attestations_rejected, 1);
    // From a peer: a forgery, and a valid attestation by an identity with
    // no descriptor (it could fill the bounded sets for free), are refused
    // in gossip and in a cut exchange alike.
    let mut bad = attest(2, 11);
    bad.signature.0[0] ^= 1;
    let stranger = attest(99, 11);
    for scope in [lamina_directory::wire::LIVE, E1] {
        let batch = AttestationBatch { scope, attestations: vec![bad.clone(), stranger.clone()] };
        n[0].1.handle_message(now(0), peer(2), Message::Attestations(batch));
    }
    assert_eq!(n[0].1.stats().attestations_rejected, 5);
    assert_eq!(n[0].1.stats().attestations_accepted, 0);
}
