//! The deterministic, reconciled cut (spec §13): relays that hold the same
//! descriptors serve the same root for an epoch, whatever the order and
//! time things arrived or were asked for; a relay whose store lacks part
//! of the cut reconciles before serving; an identity that equivocates into
//! two halves is proven, banned everywhere and left out of the cut.

// Test code: a panic is a test failure, in helpers as in #[test] functions.
#![allow(clippy::unwrap_used)]

#[path = "support/fixtures.rs"]
mod fixtures;

use fixtures::{config, drain, engine, fields, identity, now, peer, push, sign, Engine, DIFFICULTY, T0};
use lamina_directory::wire::SnapshotRequest;
use lamina_directory::{Descriptor, Direction, Epoch, GossipConfig, Unverified};

/// Ten-second epochs (Δ = 2 s): `T0` is an epoch boundary.
fn cfg() -> GossipConfig {
    GossipConfig { epoch_len_s: 10, ..config() }
}

/// The epoch that starts at `T0`.
const E0: Epoch = Epoch(T0 / 10);

/// The epoch `k` after `E0`.
fn ep(k: u64) -> Epoch {
    Epoch(E0.0 + k)
}

/// Relay `n`'s descriptor with `sequence`, published at `published`.
fn desc(n: u32, sequence: u64, published: u64) -> Unverified<Descriptor> {
    sign(n, fields(n, sequence, published), DIFFICULTY)
}

/// Engines `nums`, each holding `shared` and its own descriptor (all
/// published well before `T0`), linked along `links`.
fn net(nums: &[u32], shared: &[Unverified<Descriptor>], links: &[(u32, u32)]) -> Vec<(u32, Engine)> {
    let mut out: Vec<(u32, Engine)> = nums
        .iter()
        .map(|n| {
            let mut e = engine(*n, cfg());
            e.import(now(0), shared.iter().cloned());
            e.publish_own(now(0), desc(*n, 1, T0 - 100).as_bytes()).unwrap();
            (*n, e)
        })
        .collect();
    for (a, b) in links {
        for (n, e) in &mut out {
            if n == a {
                e.add_peer(now(0), peer(*b), Direction::Outbound).unwrap();
            } else if n == b {
                e.add_peer(now(0), peer(*a), Direction::Inbound).unwrap();
            }
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

/// Shared descriptors of relays 10..20, published an hour before `T0`.
fn shared() -> Vec<Unverified<Descriptor>> {
    (10..20).map(|n| desc(n, 1, T0 - 3600)).collect()
}

/// A descriptor published after the cutoff is not in the cut however early
/// it arrives; the served root does not change with query time; the cut is
/// frozen only once the epoch began and a peer agreed.
#[test]
fn cut_is_deterministic_and_frozen_after_reconciliation() {
    let mut n = net(&[1, 2], &shared(), &[(1, 2)]);
    // The first exchange brings each engine the other's descriptor; the
    // second finds the cuts equal and freezes them.
    tick(&mut n, 0);
    assert!(n[0].1.served(None).is_none(), "not frozen before a peer agreed");
    tick(&mut n, 1_000);
    let first = n[0].1.served(None).unwrap();
    assert_eq!(first.0, E0);
    assert_eq!(first.2, 12, "ten shared relays and the two engines");
    assert_eq!(n[1].1.served(None), Some(first));
    // Published at T0+9 > cutoff(E0+1) = T0+8: in the store, not in the cut.
    let late = desc(30, 1, T0 + 9);
    n[0].1.handle_message(now(9_000), peer(2), push(vec![late.clone()]));
    settle(&mut n, 9_000);
    assert!(n[0].1.store().get(&late.claimed_id()).is_some(), "in the live store as usual");
    for t in [9_000, 9_500] {
        let chunks = n[0].1.serve_snapshot(now(t), SnapshotRequest { start: 0, max_chunks: 16, epoch: Epoch(0) });
        assert_eq!((chunks[0].epoch, chunks[0].root), (first.0, first.1), "queries do not cut");
    }
    tick(&mut n, 10_000);
    tick(&mut n, 11_000);
    let next = n[0].1.served(None).unwrap();
    assert_eq!(next.0, ep(1));
    assert_eq!(next.2, 12, "the late descriptor waits for the epoch after");
    assert_eq!(n[1].1.served(None), Some(next));
    assert_eq!(n[1].1.served(Some(E0)), Some(first), "the previous epoch is still served");
    let old = n[1].1.serve_snapshot(now(11_000), SnapshotRequest { start: 0, max_chunks: 16, epoch: E0 });
    assert_eq!(old[0].root, first.1, "seeds answer for a requested epoch");
}

/// A relay whose store holds only a newer version (published after the
/// cutoff) of some relay cannot serve the cut until it has reconciled the
/// cut with a peer, and then serves the same root as that peer.
#[test]
fn incomplete_store_reconciles_before_serving() {
    let mut a = shared();
    a.push(desc(40, 1, T0 - 3600));
    let mut b = shared();
    b.push(desc(40, 2, T0 + 9));
    let mut n = net(&[1], &a, &[]);
    n.extend(net(&[2], &b, &[]));
    assert!(n[1].1.served(None).is_none());
    // Link them at the boundary of E0+1 (as after a restart).
    n[0].1.add_peer(now(10_000), peer(2), Direction::Outbound).unwrap();
    n[1].1.add_peer(now(10_000), peer(1), Direction::Inbound).unwrap();
    assert!(n[1].1.serve_snapshot(now(10_000), SnapshotRequest { start: 0, max_chunks: 1, epoch: ep(1) }).is_empty());
    tick(&mut n, 10_000);
    tick(&mut n, 11_000);
    tick(&mut n, 12_000);
    let served_a = n[0].1.served(Some(ep(1))).unwrap();
    assert_eq!(served_a.2, 13, "relay 40's older version is in the cut");
    assert_eq!(n[1].1.served(Some(ep(1))), Some(served_a), "same root after reconciling");
    assert_eq!(n[1].1.store().get(&identity(40).relay_id()).unwrap().sequence(), 2, "the live store keeps the newest");
}

/// Relay 50 signs two descriptors with one sequence and gives one to relay
/// 1 and 3, the other to relay 2; 3 never talks to 2. The cut exchanges
/// before the boundary expose the pair, the proof reaches 3 through 1, and
/// all three serve one root without relay 50.
#[test]
fn equivocation_in_two_halves_is_proven_everywhere() {
    let v_a = desc(50, 7, T0 - 3600);
    let mut twin = fields(50, 7, T0 - 3600);
    twin.bandwidth_kbps += 7;
    let v_b = sign(50, twin, DIFFICULTY);
    let mut n = net(&[1, 2, 3], &shared(), &[(1, 2), (1, 3)]);
    for (k, d) in [(0usize, &v_a), (1, &v_b), (2, &v_a)] {
        n[k].1.import(now(5_000), [d.clone()]);
    }
    for t in (8_000..=13_000).step_by(1_000) {
        tick(&mut n, t);
    }
    let bad = identity(50).relay_id();
    let root = n[0].1.served(Some(ep(1))).unwrap();
    assert_eq!(root.2, 13, "ten shared relays and the three engines, not relay 50");
    for (k, e) in &n {
        assert!(e.store().is_banned(&bad), "relay {k} banned the equivocator");
        assert_eq!(e.served(Some(ep(1))), Some(root), "relay {k} serves the one root");
    }
    assert!(n[2].1.stats().equivocations_proven >= 1, "relay 3 checked the proof itself");
}
