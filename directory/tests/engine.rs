//! Engine tests that inject messages directly (CONTRIBUTING.md P14): every kind of
//! bad descriptor is rejected, never stored and never forwarded; duplicates
//! are never re-forwarded; the anti-entropy exchange, peer buckets, rate
//! limits, queues, republishing and snapshot serving behave as documented.

// Test code: a panic is a test failure, in helpers as in #[test] functions.
#![allow(clippy::unwrap_used)]

#[path = "support/fixtures.rs"]
mod fixtures;

use std::net::SocketAddr;

use fixtures::{
    config, descriptor, drain, engine, fields, identity, now, peer, push, pushed_hashes, raw_push, sign, Engine,
    DIFFICULTY, T0,
};
use lamina_crypto::keys::RelayId;
use lamina_directory::descriptor::pow;
use lamina_directory::wire::SnapshotRequest;
use lamina_directory::{
    ConnectPurpose, Direction, Event, GossipConfig, Message, NetBlock, PeerId, PeerRejected, SnapshotAssembler,
    Unverified,
};

/// Relay number of the engine under test.
const ME: u32 = 1000;

/// An engine with three inbound peers (relays 1, 2, 3), its start-up
/// events and transmissions drained.
fn connected() -> Engine {
    let mut e = engine(ME, config());
    for n in 1..=3 {
        e.add_peer(now(0), peer(n), Direction::Inbound).unwrap();
    }
    e.handle_timeout(now(0));
    while e.poll_event().is_some() {}
    drain(&mut e);
    e
}

/// Deliver `msg` from peer 1 at 1 s, and return what the engine sends.
fn deliver(e: &mut Engine, msg: Message) -> Vec<(PeerId, Message)> {
    e.handle_message(now(1000), peer(1), msg);
    drain(e)
}

/// Deliver raw encoded bytes from peer 1 at 1 s, and return what is sent.
fn deliver_bytes(e: &mut Engine, bytes: &[u8]) -> Vec<(PeerId, Message)> {
    e.handle_encoded(now(1000), peer(1), bytes);
    drain(e)
}

/// Assert `d` is not stored (by hash) and nothing was pushed.
fn assert_dropped(e: &Engine, d: &Unverified<lamina_directory::Descriptor>, sent: &[(PeerId, Message)]) {
    let held = e.store().get(&d.claimed_id());
    assert!(held.is_none_or(|h| h.hash() != d.hash()), "bad descriptor stored");
    assert!(!pushed_hashes(sent).contains(&d.hash()), "bad descriptor forwarded");
}

/// A valid new descriptor is stored and pushed to up to `push_fanout`
/// peers, never back to its sender.
#[test]
fn valid_descriptor_is_stored_and_forwarded() {
    let mut e = connected();
    let d = descriptor(10, 1);
    let sent = deliver(&mut e, push(vec![d.clone()]));
    assert_eq!(e.store().get(&d.claimed_id()).unwrap().hash(), d.hash());
    assert_eq!(pushed_hashes(&sent), vec![d.hash(), d.hash()]);
    assert!(sent.iter().all(|(to, _)| *to != peer(1)));
    assert_eq!(e.stats().accepted, 1);
    assert_eq!(e.stats().forwarded, 2);
}

/// A duplicate is never re-forwarded, from the same or another peer.
#[test]
fn duplicate_is_never_reforwarded() {
    let mut e = connected();
    let d = descriptor(10, 1);
    deliver(&mut e, push(vec![d.clone()]));
    assert!(deliver(&mut e, push(vec![d.clone()])).is_empty());
    e.handle_message(now(2000), peer(2), push(vec![d.clone()]));
    assert!(drain(&mut e).is_empty());
    // Even once the seen-set forgot it, the store recognises the bytes.
    e.handle_message(now(20 * 60_000), peer(3), push(vec![d]));
    assert!(drain(&mut e).is_empty());
    assert_eq!(e.stats().duplicates, 3);
}

/// Forged: a signed byte was altered.
#[test]
fn forged_descriptor_rejected() {
    let mut e = connected();
    let mut bytes = descriptor(10, 1).as_bytes().to_vec();
    bytes[121] ^= 1; // bandwidth
    let d = lamina_directory::Descriptor::decode(&bytes).unwrap();
    let sent = deliver(&mut e, push(vec![d.clone()]));
    assert_dropped(&e, &d, &sent);
    assert_eq!(e.stats().rejected.bad_signature, 1);
    assert!(sent.is_empty());
}

/// Wrongly bound: relay 11's id and work, but relay 10's signature.
#[test]
fn descriptor_signed_by_another_key_rejected() {
    let mut e = connected();
    let mut bytes = descriptor(10, 1).as_bytes().to_vec();
    let other = identity(11).relay_id();
    bytes[1..33].copy_from_slice(other.as_bytes());
    let nonce = pow::solve(&other, DIFFICULTY, 0).unwrap();
    let at = bytes.len() - 72;
    bytes[at..at + 8].copy_from_slice(&nonce.0.to_be_bytes());
    let d = lamina_directory::Descriptor::decode(&bytes).unwrap();
    let sent = deliver(&mut e, push(vec![d.clone()]));
    assert_dropped(&e, &d, &sent);
    assert_eq!(e.stats().rejected.bad_signature, 1);
}

/// Replayed: an older sequence after a newer one.
#[test]
fn replayed_descriptor_rejected() {
    let mut e = connected();
    deliver(&mut e, push(vec![descriptor(10, 5)]));
    let old = descriptor(10, 4);
    let sent = deliver(&mut e, push(vec![old.clone()]));
    assert_dropped(&e, &old, &sent);
    assert!(sent.is_empty());
    assert_eq!(e.stats().rejected.stale, 1);
    assert_eq!(e.store().get(&old.claimed_id()).unwrap().sequence(), 5);
}

/// Equivocating: two different descriptors with one sequence. The second
/// is not forwarded, the first is removed and the relay banned.
#[test]
fn equivocating_relay_is_banned() {
    let mut e = connected();
    let first = descriptor(10, 5);
    deliver(&mut e, push(vec![first.clone()]));
    let mut f = fields(10, 5, T0);
    f.bandwidth_kbps += 1;
    let second = sign(10, f, DIFFICULTY);
    let sent = deliver(&mut e, push(vec![second.clone()]));
    assert_dropped(&e, &second, &sent);
    assert!(sent.is_empty());
    assert!(e.store().get(&first.claimed_id()).is_none());
    assert!(e.store().is_banned(&first.claimed_id()));
    assert_eq!(e.stats().rejected.equivocation, 1);
    let later = descriptor(10, 6);
    let sent = deliver(&mut e, push(vec![later.clone()]));
    assert_dropped(&e, &later, &sent);
    assert_eq!(e.stats().rejected.banned, 1);
}

/// Expired.
#[test]
fn expired_descriptor_rejected() {
    let mut e = connected();
    let d = sign(10, fields(10, 1, T0 - 25 * 3600), DIFFICULTY);
    let sent = deliver(&mut e, push(vec![d.clone()]));
    assert_dropped(&e, &d, &sent);
    assert_eq!(e.stats().rejected.expired, 1);
}

/// Future-dated beyond the clock-skew allowance.
#[test]
fn future_dated_descriptor_rejected() {
    let mut e = connected();
    let d = sign(10, fields(10, 1, T0 + 3600), DIFFICULTY);
    let sent = deliver(&mut e, push(vec![d.clone()]));
    assert_dropped(&e, &d, &sent);
    assert_eq!(e.stats().rejected.future_dated, 1);
}

/// Too little proof of work for the engine's difficulty.
#[test]
fn insufficient_work_rejected() {
    let mut e = engine(ME, GossipConfig { pow_difficulty: 12, ..config() });
    e.add_peer(now(0), peer(1), Direction::Inbound).unwrap();
    e.add_peer(now(0), peer(2), Direction::Inbound).unwrap();
    let id = identity(10);
    let weak = (0..).map(lamina_directory::PowNonce).find(|n| pow::work_bits(&id.relay_id(), *n) < 12).unwrap();
    let d = lamina_directory::Descriptor::sign(&id, fields(10, 1, T0), weak, 0).unwrap();
    let sent = deliver(&mut e, push(vec![d.clone()]));
    assert_dropped(&e, &d, &sent);
    assert_eq!(e.stats().rejected.insufficient_work, 1);
}

/// Oversized: refused from its length prefix, nothing parsed or stored.
#[test]
fn oversized_descriptor_rejected() {
    let mut e = connected();
    let sent = deliver_bytes(&mut e, &raw_push(&vec![0x01; 1025]));
    assert!(sent.is_empty());
    assert_eq!(e.stats().rejected.oversized, 1);
    assert_eq!(e.stats().malformed_messages, 1);
    assert!(e.store().is_empty());
}

/// Non-canonical: two addresses in the wrong order (otherwise intact).
#[test]
fn non_canonical_descriptor_rejected() {
    let mut e = connected();
    let mut f = fields(10, 1, T0);
    f.addresses.push("192.0.2.9:443".parse::<SocketAddr>().unwrap());
    let good = sign(10, f, DIFFICULTY);
    let mut bytes = good.as_bytes().to_vec();
    // The two 7-byte IPv4 address records start at offset 127.
    let (a, b) = (bytes[127..134].to_vec(), bytes[134..141].to_vec());
    bytes[127..134].copy_from_slice(&b);
    bytes[134..141].copy_from_slice(&a);
    let sent = deliver_bytes(&mut e, &raw_push(&bytes));
    assert!(sent.is_empty());
    assert_eq!(e.stats().rejected.malformed, 1);
    assert!(e.store().is_empty());
    // The canonical original is accepted.
    let sent = deliver_bytes(
        &mut e,
        &Message::Push(lamina_directory::wire::Push { descriptors: vec![good] }).to_vec().unwrap(),
    );
    assert_eq!(pushed_hashes(&sent).len(), 2);
}

/// A bad descriptor does not spoil the good ones of the same push, and is
/// not forwarded with them.
#[test]
fn bad_descriptor_in_a_batch_is_singled_out() {
    let mut e = connected();
    let good = descriptor(10, 1);
    let expired = sign(11, fields(11, 1, T0 - 25 * 3600), DIFFICULTY);
    let sent = deliver(&mut e, push(vec![expired.clone(), good.clone()]));
    assert_dropped(&e, &expired, &sent);
    assert_eq!(pushed_hashes(&sent), vec![good.hash(), good.hash()]);
}

/// Messages from peers that are not connected are ignored.
#[test]
fn unknown_peer_ignored() {
    let mut e = connected();
    e.handle_message(now(1000), peer(99), push(vec![descriptor(10, 1)]));
    assert!(e.store().is_empty());
    assert_eq!(e.stats().unknown_peer, 1);
}

/// A burst above the per-peer message bucket is dropped and counted.
#[test]
fn rate_limits_drop_excess() {
    let mut e = connected();
    let req =
        Message::SnapshotRequest(SnapshotRequest { start: 60_000, max_chunks: 1, epoch: lamina_directory::Epoch(0) });
    for _ in 0..300 {
        e.handle_message(now(1000), peer(1), req.clone());
    }
    assert_eq!(e.stats().rate_limited, 100);
    // A second later 50 more tokens have accrued.
    for _ in 0..60 {
        e.handle_message(now(2000), peer(1), req.clone());
    }
    assert_eq!(e.stats().rate_limited, 110);
}

/// A peer's queue never exceeds its capacity: the oldest pushes go first.
#[test]
fn outgoing_queue_is_bounded() {
    let mut e = engine(ME, GossipConfig { peer_queue_capacity: 8, ..config() });
    e.add_peer(now(0), peer(1), Direction::Inbound).unwrap();
    e.add_peer(now(0), peer(2), Direction::Inbound).unwrap();
    for n in 10..30 {
        e.handle_message(now(1000), peer(1), push(vec![descriptor(n, 1)]));
    }
    let sent = drain(&mut e);
    assert_eq!(sent.len(), 8);
    assert_eq!(e.stats().queue_dropped, 12);
    // The newest survived.
    assert!(pushed_hashes(&sent).contains(&descriptor(29, 1).hash()));
}

/// Anti-entropy between two engines: roots first, then buckets, entries,
/// wants and pushes, until both hold the same directory.
#[test]
fn anti_entropy_converges_two_engines() {
    let cfg = GossipConfig { push_fanout: 0, ..config() };
    let (mut a, mut b) = (engine(1, cfg.clone()), engine(2, cfg));
    a.import(now(0), (10..40).map(|n| descriptor(n, 1)).chain([descriptor(2, 1)]));
    b.import(now(0), (30..60).map(|n| descriptor(n, 2)).chain([descriptor(1, 1)]));
    a.publish_own(now(0), descriptor(1, 1).as_bytes()).unwrap();
    b.publish_own(now(0), descriptor(2, 1).as_bytes()).unwrap();
    a.add_peer(now(0), peer(2), Direction::Outbound).unwrap();
    b.add_peer(now(0), peer(1), Direction::Inbound).unwrap();
    for round in 0..300u64 {
        let t = round * 60_000 + 59_999;
        a.handle_timeout(now(t));
        b.handle_timeout(now(t));
        while a.poll_event().is_some() || b.poll_event().is_some() {}
        shuttle(&mut a, &mut b, t);
        if a.digest_root() == b.digest_root() {
            break;
        }
    }
    assert_eq!(a.digest_root(), b.digest_root());
    assert_eq!(a.store().len(), 52);
    let seq = |e: &Engine, n: u32| e.store().get(&identity(n).relay_id()).map(|d| d.sequence());
    assert_eq!(seq(&a, 35), Some(2));
    assert_eq!(seq(&b, 15), Some(1));
    assert!(a.stats().ae_rounds + b.stats().ae_rounds >= 1);
}

/// Deliver messages between two directly connected engines until quiet.
fn shuttle(a: &mut Engine, b: &mut Engine, t: u64) {
    for _ in 0..100 {
        let from_a = drain(a);
        let from_b = drain(b);
        if from_a.is_empty() && from_b.is_empty() {
            return;
        }
        for (_, m) in from_a {
            b.handle_message(now(t), peer(1), m);
        }
        for (_, m) in from_b {
            a.handle_message(now(t), peer(2), m);
        }
    }
}

/// Roots equal: one 45-byte request, no answer.
#[test]
fn anti_entropy_in_sync_costs_one_message() {
    let (mut a, mut b) = (engine(1, config()), engine(2, config()));
    let ds: Vec<_> = (10..20).map(|n| descriptor(n, 1)).chain([descriptor(1, 1), descriptor(2, 1)]).collect();
    a.import(now(0), ds.clone());
    b.import(now(0), ds);
    a.publish_own(now(0), descriptor(1, 1).as_bytes()).unwrap();
    b.publish_own(now(0), descriptor(2, 1).as_bytes()).unwrap();
    a.add_peer(now(0), peer(2), Direction::Outbound).unwrap();
    b.add_peer(now(0), peer(1), Direction::Inbound).unwrap();
    // Force a round with the partner drawn until it is relay 2.
    for round in 0..50u64 {
        a.handle_timeout(now(round * 60_000 + 59_999));
        while a.poll_event().is_some() {}
        let sent = drain(&mut a);
        let live = |m: &Message| matches!(m, Message::DigestRequest(r) if r.epoch == lamina_directory::wire::LIVE);
        if let Some((_, m)) = sent.into_iter().find(|(to, m)| *to == peer(2) && live(m)) {
            assert_eq!(m.encoded_len(), 45);
            b.handle_message(now(round * 60_000 + 59_999), peer(1), m);
            assert!(drain(&mut b).is_empty());
            assert_eq!(b.stats().ae_in_sync, 1);
            return;
        }
    }
    panic!("relay 2 never drawn");
}

/// A partner that is not connected is dialled through an event; the
/// exchange starts once the driver adds it.
#[test]
fn anti_entropy_dials_unconnected_partner() {
    let mut e = engine(ME, GossipConfig { max_outbound: 0, ..config() });
    e.import(now(0), [descriptor(10, 1)]);
    e.handle_timeout(now(60_000));
    let events: Vec<Event> = std::iter::from_fn(|| e.poll_event()).collect();
    assert_eq!(events, vec![Event::Connect { peer: peer(10), purpose: ConnectPurpose::AntiEntropy }]);
    e.add_peer(now(60_100), peer(10), Direction::Transient).unwrap();
    let sent = drain(&mut e);
    assert!(matches!(sent.as_slice(), [(to, Message::DigestRequest(_))] if *to == peer(10)));
    // The transient connection is hung up after the session time-out.
    e.handle_timeout(now(60_100 + 20_000));
    let events: Vec<Event> = std::iter::from_fn(|| e.poll_event()).collect();
    assert!(events.contains(&Event::Disconnect { peer: peer(10) }));
}

/// Summaries and digests nobody asked for are ignored.
#[test]
fn unsolicited_replies_ignored() {
    let mut e = connected();
    let digest = lamina_directory::wire::Digest {
        epoch: lamina_directory::Epoch(0),
        lo: RelayId([0; 32]),
        hi: RelayId([0xff; 32]),
        entries: vec![],
    };
    assert!(deliver(&mut e, Message::Digest(digest)).is_empty());
    assert_eq!(e.stats().unsolicited, 1);
}

/// 1,000 attacker relays in three /16s cannot take the outbound slots:
/// at most two per /16, and honest relays in other blocks get the rest.
#[test]
fn attacker_blocks_cannot_fill_outbound_slots() {
    let mut e = engine(ME, GossipConfig { pow_difficulty: 0, ..config() });
    let attacker_blocks = [[203u8, 0], [198, 51], [192, 0]];
    let attackers: Vec<_> = (0..1000u32)
        .map(|i| {
            let n = 10_000 + i;
            let [x, y] = attacker_blocks[usize::try_from(i % 3).unwrap()];
            let [_, _, c, d] = i.to_be_bytes();
            let mut f = fields(n, 1, T0);
            f.addresses = vec![SocketAddr::from(([x, y, c, d.max(1)], 443))];
            sign(n, f, 0)
        })
        .collect();
    e.import(now(0), attackers);
    e.import(now(0), (1..=10).map(|n| sign(n, fields(n, 1, T0), 0)));
    let mut outbound = Vec::new();
    for step in 0..10u64 {
        e.handle_timeout(now(step * 10_000));
        while let Some(ev) = e.poll_event() {
            if let Event::Connect { peer, purpose: ConnectPurpose::Gossip } = ev {
                e.add_peer(now(step * 10_000), peer, Direction::Outbound).unwrap();
                outbound.push(peer);
            }
        }
    }
    assert_eq!(outbound.len(), 8);
    let in_attacker_blocks =
        outbound.iter().filter(|p| attacker_blocks.iter().any(|b| NetBlock::of(&p.addr) == NetBlock::V4(*b))).count();
    assert!(in_attacker_blocks <= 6, "attacker holds {in_attacker_blocks} slots");
    assert!(outbound.len() - in_attacker_blocks >= 2);
    for b in attacker_blocks {
        assert!(outbound.iter().filter(|p| NetBlock::of(&p.addr) == NetBlock::V4(b)).count() <= 2);
    }
}

/// Offered connections from one /16 beyond the per-block cap are refused.
#[test]
fn per_block_cap_refuses_extra_peers() {
    let mut e = engine(ME, config());
    let in_block =
        |i: u8| PeerId { relay: identity(u32::from(i)).relay_id(), addr: SocketAddr::from(([203, 0, 113, i], 443)) };
    e.add_peer(now(0), in_block(1), Direction::Outbound).unwrap();
    e.add_peer(now(0), in_block(2), Direction::Outbound).unwrap();
    assert_eq!(
        e.add_peer(now(0), in_block(3), Direction::Outbound),
        Err(PeerRejected::BucketFull { addr: in_block(3).addr, direction: "outbound", cap: 2 })
    );
    for i in 3..=6 {
        e.add_peer(now(0), in_block(i), Direction::Inbound).unwrap();
    }
    assert!(matches!(e.add_peer(now(0), in_block(7), Direction::Inbound), Err(PeerRejected::BucketFull { .. })));
    assert_eq!(e.add_peer(now(0), peer(ME), Direction::Inbound), Err(PeerRejected::Ourselves));
    assert_eq!(e.add_peer(now(0), in_block(1), Direction::Outbound), Err(PeerRejected::AlreadyConnected));
}

/// Publishing: pushed to peers, republish requested after a third of the
/// lifetime, sequence must grow, foreign ids refused.
#[test]
fn publish_own_and_republish() {
    let mut e = connected();
    let mine = sign(ME, fields(ME, 1, T0), DIFFICULTY);
    e.publish_own(now(0), mine.as_bytes()).unwrap();
    assert_eq!(pushed_hashes(&drain(&mut e)).len(), 3);
    assert!(matches!(
        e.publish_own(now(0), mine.as_bytes()),
        Err(lamina_directory::PublishError::SequenceNotIncreasing { current: 1, offered: 1 })
    ));
    assert!(matches!(
        e.publish_own(now(0), descriptor(10, 1).as_bytes()),
        Err(lamina_directory::PublishError::NotOurs { .. })
    ));
    let due = 8 * 3600 * 1000;
    assert!(e.poll_timeout().unwrap() <= due);
    e.handle_timeout(now(due - 1));
    assert!(std::iter::from_fn(|| e.poll_event()).all(|ev| ev != Event::RepublishDue));
    e.handle_timeout(now(due));
    assert!(std::iter::from_fn(|| e.poll_event()).any(|ev| ev == Event::RepublishDue));
    // Copies of our own descriptor from peers are never taken in.
    deliver(&mut e, push(vec![sign(ME, fields(ME, 9, T0), DIFFICULTY)]));
    assert_eq!(e.stats().rejected.own_id, 1);
}

/// A served snapshot reassembles and verifies at the client; a relay can
/// download one into its own store.
#[test]
fn snapshot_serving_and_fetching() {
    let mut seed = engine(1, config());
    let early = |n| sign(n, fields(n, 1, T0 - 7200), DIFFICULTY);
    seed.import(now(0), (10..80).map(early));
    seed.publish_own(now(0), early(1).as_bytes()).unwrap();
    let mut twin = engine(3, config());
    twin.import(now(0), (10..80).map(early).chain([early(1)]));
    twin.publish_own(now(0), early(3).as_bytes()).unwrap();
    seed.add_peer(now(0), peer(3), Direction::Inbound).unwrap();
    twin.add_peer(now(0), peer(1), Direction::Outbound).unwrap();
    seed.import(now(0), [early(3)]);
    drain(&mut seed);
    drain(&mut twin);
    // Nothing is served before a peer confirmed the cut.
    let req = SnapshotRequest { start: 0, max_chunks: 16, epoch: lamina_directory::Epoch(0) };
    assert!(seed.serve_snapshot(now(0), req).is_empty());
    twin.handle_timeout(now(0));
    for (_, m) in drain(&mut twin) {
        seed.handle_message(now(0), peer(3), m);
    }
    for (_, m) in drain(&mut seed) {
        twin.handle_message(now(0), peer(1), m);
    }
    let chunks = seed.serve_snapshot(now(0), req);
    assert_eq!(chunks.len(), 3);
    let mut asm = SnapshotAssembler::new();
    let snap = chunks.iter().map(|c| asm.add(c).unwrap()).last().flatten().unwrap();
    let verified = snap.verify_all(T0, DIFFICULTY).unwrap();
    assert_eq!(verified.descriptors.len(), 72);

    let mut fresh = engine(2, config());
    seed.add_peer(now(0), peer(2), Direction::Inbound).unwrap();
    fresh.add_peer(now(0), peer(1), Direction::Outbound).unwrap();
    fresh.request_snapshot(now(0), peer(1));
    shuttle(&mut seed, &mut fresh, 0);
    assert_eq!(fresh.store().len(), 72);
    assert_eq!(fresh.stats().forwarded, 0);
}
