//! Quotas: per-IP selection, block share caps, store admission and
//! eviction independent of arrival order.

use std::net::SocketAddr;

use super::*;
use crate::store::{InsertOutcome, Store, StoreConfig};
use crate::testing::{fields, identity, signed, T0, TEST_DIFFICULTY};
use crate::verify::Verified;

/// Relay `seed` at `addr`, published at `T0 + age_offset`.
fn relay_at(seed: u8, addr: &str, published_offset: u64) -> Verified<Descriptor> {
    let mut f = fields(1);
    f.addresses = vec![addr.parse::<SocketAddr>().unwrap()];
    f.published = T0 + published_offset;
    f.expires = f.published + 3600;
    signed(&identity(seed), f).verify(T0 + published_offset, TEST_DIFFICULTY).unwrap()
}

/// A store with room for `capacity` and the production quotas.
fn store(capacity: usize) -> Store {
    Store::new(StoreConfig { capacity, ..StoreConfig::default() })
}

/// The sorted ids held.
fn held(s: &Store) -> Vec<RelayId> {
    s.iter().map(|d| d.id()).collect()
}

/// Six relays on one IP (different ports): at most four are admitted, and
/// the same four whatever the arrival order.
#[test]
fn six_relays_on_one_ip_keep_four_independent_of_order() {
    let relays: Vec<_> = (1..=6u8).map(|i| relay_at(i, &format!("198.51.100.7:{}", 9000 + u16::from(i)), 0)).collect();
    let orders: [[usize; 6]; 4] = [[0, 1, 2, 3, 4, 5], [5, 4, 3, 2, 1, 0], [2, 5, 0, 3, 1, 4], [4, 0, 5, 1, 3, 2]];
    let mut results = Vec::new();
    for order in orders {
        let mut s = store(100);
        for i in order {
            s.insert(relays[i].clone());
        }
        // Re-offering everything changes nothing: the choice is stable.
        for i in order {
            s.insert(relays[i].clone());
        }
        assert_eq!(s.len(), DEFAULT_MAX_PER_IP);
        results.push(held(&s));
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]), "{results:?}");
    // The kept ones are the four smallest ids (equal standing otherwise).
    let mut ids: Vec<RelayId> = relays.iter().map(|d| d.id()).collect();
    ids.sort();
    assert_eq!(results[0], ids[..4].to_vec());
}

/// Evidence beats a newcomer: a relay with earned evidence is never
/// displaced from its IP by a newcomer, however good the newcomer's claims.
#[test]
fn evidence_protects_against_newcomers() {
    let mut s = store(100);
    let olds: Vec<_> = (1..=4u8).map(|i| relay_at(i, &format!("198.51.100.7:{}", 9000 + u16::from(i)), 0)).collect();
    for d in &olds {
        assert_eq!(s.insert(d.clone()), InsertOutcome::Inserted);
        s.set_evidence(&d.id(), evidence_score(3, Some(500)));
    }
    for i in 10..30u8 {
        let mut f = fields(1);
        f.addresses = vec![format!("198.51.100.7:{}", 9000 + u16::from(i)).parse().unwrap()];
        f.bandwidth_kbps = u32::MAX;
        let d = signed(&identity(i), f).verify(T0, TEST_DIFFICULTY).unwrap();
        assert_eq!(s.insert(d), InsertOutcome::Full);
    }
    assert_eq!(held(&s).len(), 4);
    assert!(olds.iter().all(|d| s.get(&d.id()).is_some()));
}

/// A full store evicts the lowest-ranked relay for a better newcomer (an
/// older one), refuses a worse one, and never evicts relays with evidence
/// for a newcomer.
#[test]
fn full_store_evicts_by_rank() {
    let mut s = store(3);
    let a = relay_at(1, "198.51.100.1:1", 100);
    let b = relay_at(2, "198.51.100.2:1", 200);
    let c = relay_at(3, "198.51.100.3:1", 300);
    for d in [&a, &b, &c] {
        s.insert(d.clone());
    }
    // Newer than everyone held: refused.
    assert_eq!(s.insert(relay_at(4, "198.51.100.4:1", 400)), InsertOutcome::Full);
    // Older than c: c (the newest) goes.
    let older = relay_at(5, "198.51.100.5:1", 50);
    assert_eq!(s.insert(older.clone()), InsertOutcome::Inserted);
    assert!(s.get(&c.id()).is_none());
    // With evidence everywhere, the store is closed to newcomers, even
    // before verification.
    for d in [&a, &b, &older] {
        s.set_evidence(&d.id(), evidence_score(1, None));
    }
    let oldest = relay_at(6, "198.51.100.6:1", 0);
    assert_eq!(s.precheck(&oldest.id(), oldest.sequence(), &oldest.hash()), crate::store::Precheck::Full);
    assert_eq!(s.insert(oldest), InsertOutcome::Full);
    assert_eq!(s.len(), 3);
}

/// An update that moves a relay onto a full IP competes like a newcomer;
/// an update that keeps its address is always accepted.
#[test]
fn updates_moving_address_obey_the_quota() {
    let mut s = store(100);
    let olds: Vec<_> = (1..=4u8).map(|i| relay_at(i, &format!("198.51.100.7:{}", 9000 + u16::from(i)), 0)).collect();
    for d in &olds {
        s.insert(d.clone());
        s.set_evidence(&d.id(), 7);
    }
    let mover = relay_at(9, "203.0.113.9:1", 0);
    s.insert(mover.clone());
    let mut f = fields(2);
    f.addresses = vec!["198.51.100.7:1".parse().unwrap()];
    let moved = signed(&identity(9), f).verify(T0, TEST_DIFFICULTY).unwrap();
    assert_eq!(s.insert(moved), InsertOutcome::Full);
    assert_eq!(s.get(&mover.id()).map(|d| d.sequence()), Some(1));
    let mut f = fields(3);
    f.addresses = vec!["203.0.113.9:1".parse().unwrap()];
    let same = signed(&identity(9), f).verify(T0, TEST_DIFFICULTY).unwrap();
    assert_eq!(s.insert(same), InsertOutcome::Updated { previous: 1 });
    // The standing survives the update.
    s.set_evidence(&mover.id(), 42);
    let mut f = fields(4);
    f.addresses = vec!["203.0.113.9:1".parse().unwrap()];
    s.insert(signed(&identity(9), f).verify(T0, TEST_DIFFICULTY).unwrap());
    assert_eq!(s.standing(&mover.id()).map(|st| st.evidence), Some(42));
}

/// The per-block count limit holds in the store.
#[test]
fn block_limit_holds() {
    let mut s = Store::new(StoreConfig {
        capacity: 100,
        quota: QuotaParams { max_per_block: 3, ..QuotaParams::production() },
        ..StoreConfig::default()
    });
    for i in 1..=8u8 {
        s.insert(relay_at(i, &format!("198.51.{i}.1:1"), 0));
    }
    assert_eq!(s.len(), 3);
}

/// Removal and expiry free the quota again.
#[test]
fn expiry_frees_the_quota() {
    let mut s = store(100);
    for i in 1..=6u8 {
        s.insert(relay_at(i, &format!("198.51.100.7:{i}"), 0));
    }
    assert_eq!(s.len(), 4);
    s.expire(T0 + 3600);
    assert_eq!(s.len(), 0);
    for i in 1..=4u8 {
        assert_eq!(s.insert(relay_at(i + 20, &format!("198.51.100.7:{i}"), 3600)), InsertOutcome::Inserted);
    }
}

/// The pure per-IP rule agrees with the store and ignores input order;
/// a relay listing two IPs counts against both.
#[test]
fn select_per_ip_is_order_independent() {
    let ip = |s: &str| IpKey::of(s.parse().unwrap());
    let cand = |seed: u8, ips: &[&str], evidence: u64| Candidate {
        id: identity(seed).relay_id(),
        ips: ips.iter().map(|s| ip(s)).collect(),
        standing: Standing { evidence, first_seen: T0 },
    };
    let mut cands = vec![
        cand(1, &["198.51.100.1"], 0),
        cand(2, &["198.51.100.1", "198.51.100.2"], 5),
        cand(3, &["198.51.100.2"], 9),
        cand(4, &["198.51.100.1"], 1),
    ];
    let keep = select_per_ip(&cands, 2);
    let kept: BTreeSet<RelayId> = cands.iter().zip(&keep).filter(|(_, k)| **k).map(|(c, _)| c.id).collect();
    assert_eq!(kept.len(), 3);
    assert!(!kept.contains(&identity(1).relay_id()));
    cands.reverse();
    let keep2 = select_per_ip(&cands, 2);
    let kept2: BTreeSet<RelayId> = cands.iter().zip(&keep2).filter(|(_, k)| **k).map(|(c, _)| c.id).collect();
    assert_eq!(kept, kept2);
}

/// IPv6 addresses in one /64 share a key; IPv4-mapped counts as IPv4.
#[test]
fn ipv6_slash64_is_one_key() {
    let a = IpKey::of("2001:db8:1:2::1".parse().unwrap());
    let b = IpKey::of("2001:db8:1:2:ffff::9".parse().unwrap());
    let c = IpKey::of("2001:db8:1:3::1".parse().unwrap());
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(IpKey::of("::ffff:192.0.2.1".parse().unwrap()), IpKey::of("192.0.2.1".parse().unwrap()));
}

/// No block ends above the cap of the resulting total; blocks below it are
/// untouched; an infeasible cap leaves weights alone.
#[test]
fn block_share_cap() {
    let b = |x: u8| NetBlock::V4([10, x]);
    // One heavy block with two relays and 30 light blocks.
    let mut blocks = vec![b(0), b(0)];
    let mut weights = vec![500_000u64, 500_000];
    for i in 1..=30u8 {
        blocks.push(b(i));
        weights.push(1_000);
    }
    cap_block_shares(&mut weights, &blocks, 50_000);
    let total: u64 = weights.iter().sum();
    let heavy = weights[0] + weights[1];
    assert!(heavy * 1_000_000 <= total * 50_000 + 1_000_000, "heavy {heavy} of {total}");
    assert!(heavy * 1_000_000 >= total * 49_000, "cap applied exactly: {heavy} of {total}");
    assert_eq!(weights[0], weights[1]);
    assert!(weights[2..].iter().all(|w| *w == 1_000));
    // Too few blocks for a 5% cap: unchanged.
    let mut few = vec![10u64, 1_000];
    cap_block_shares(&mut few, &[b(1), b(2)], 50_000);
    assert_eq!(few, vec![10, 1_000]);
}

/// Squatting attack: identities from two /16s (four per IP) flood the
/// store; the per-block limit holds them to 2 × 256 entries, and honest
/// relays from other blocks still get in.
#[test]
fn squatting_from_few_blocks_is_bounded() {
    let mut s = store(1_000);
    let sign = |n: u32, addr: SocketAddr| {
        let mut seed = [9u8; 32];
        seed[..4].copy_from_slice(&n.to_be_bytes());
        let mut f = fields(1);
        f.addresses = vec![addr];
        signed(&lamina_crypto::keys::IdentityKeypair::from_secret_bytes(&seed), f).verify(T0, TEST_DIFFICULTY).unwrap()
    };
    for n in 0..800u32 {
        let block = u8::try_from(n % 2).unwrap();
        let host = u8::try_from(n / 8).unwrap();
        let port = u16::try_from(n % 8).unwrap() + 1;
        s.insert(sign(n, SocketAddr::from(([198, 18 + block, 1, host], port))));
    }
    assert_eq!(s.len(), 2 * DEFAULT_MAX_PER_BLOCK);
    for n in 0..100u32 {
        let b = u8::try_from(n).unwrap();
        assert_eq!(s.insert(sign(10_000 + n, SocketAddr::from(([203, b, 0, 1], 443)))), InsertOutcome::Inserted);
    }
    assert_eq!(s.len(), 2 * DEFAULT_MAX_PER_BLOCK + 100);
}
