//! Path selection, pure (spec §10, §14.7): weighted by the
//! earned position weights of spec §14.7 (never by the advertised
//! bandwidth); no relay twice; no two relays of a circuit in the same /16
//! (IPv4) or /32 (IPv6) or mutual family; the exit must accept the port;
//! the guard comes from the client's small persistent guard set.

use std::net::IpAddr;

use lamina_crypto::keys::RelayId;
pub use lamina_directory::weights::PositionWeights;
use lamina_proto::circuit::client::HopSpec;
use rand_core::RngCore;

use crate::error::ClientError;

/// What path selection needs to know about a relay (from its verified
/// descriptor).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayInfo {
    /// Identity, keys and address.
    pub hop: HopSpec,
    /// Advertised bandwidth (KB/s): shown, never used as a weight.
    pub bandwidth: u32,
    /// Earned weight at each position (spec §14.7,
    /// `lamina_directory::weights::path_weights`); 0: never there.
    pub weight: PositionWeights,
    /// Declared family members.
    pub family: Vec<RelayId>,
    /// Ports the exit accepts (inclusive ranges); empty: not an exit.
    pub exit_ports: Vec<(u16, u16)>,
}

impl RelayInfo {
    /// Whether this relay's policy summary accepts `port`.
    pub fn exits_to(&self, port: u16) -> bool {
        self.exit_ports.iter().any(|(lo, hi)| *lo <= port && port <= *hi)
    }

    /// Whether it is an exit at all.
    pub fn is_exit(&self) -> bool {
        !self.exit_ports.is_empty()
    }
}

/// Whether `ip` is publicly routable: not loopback, private, shared,
/// link-local, documentation, benchmarking, multicast, reserved or
/// unspecified (IPv4-mapped IPv6 is judged as IPv4). Relays elsewhere are
/// used only on a local test network (spec §10.8).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(o[0] == 0
                || o[0] == 10
                || o[0] == 127
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 169 && o[1] == 254)
                || (o[0] == 172 && (16..32).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && (o[2] == 0 || o[2] == 2))
                || (o[0] == 192 && o[1] == 168)
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
                || (o[0] == 198 && o[1] == 51 && o[2] == 100)
                || (o[0] == 203 && o[1] == 0 && o[2] == 113)
                || o[0] >= 224)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || s[0] & 0xff00 == 0xff00
                || s[0] & 0xfe00 == 0xfc00
                || s[0] & 0xffc0 == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0))
        }
    }
}

/// The network block a relay's address belongs to (/16 or /32).
pub fn net_block(ip: IpAddr) -> (u8, [u8; 4]) {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (4, [o[0], o[1], 0, 0])
        }
        IpAddr::V6(v6) => {
            let o = v6.octets();
            (6, [o[0], o[1], o[2], o[3]])
        }
    }
}

/// Whether two relays are one family: only when each lists the other
/// (spec §10.7). A one-sided claim has no effect, so a relay cannot push
/// honest relays out of circuits by naming them.
pub fn same_family(a: &RelayInfo, b: &RelayInfo) -> bool {
    a.family.contains(&b.hop.relay_id) && b.family.contains(&a.hop.relay_id)
}

/// Whether two relays may share a circuit.
pub(crate) fn compatible(a: &RelayInfo, b: &RelayInfo) -> bool {
    a.hop.relay_id != b.hop.relay_id && net_block(a.hop.addr.ip()) != net_block(b.hop.addr.ip()) && !same_family(a, b)
}

/// A position of a circuit, selecting which earned weight counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Position {
    /// First hop.
    Guard,
    /// Middle hop.
    Middle,
    /// Last hop.
    Exit,
}

impl Position {
    /// The weight of `r` at this position.
    fn of(self, r: &RelayInfo) -> u64 {
        match self {
            Self::Guard => r.weight.guard,
            Self::Middle => r.weight.middle,
            Self::Exit => r.weight.exit,
        }
    }
}

/// Pick one of `candidates` with probability proportional to its earned
/// weight at `pos`; relays weighing 0 there are never picked.
pub(crate) fn weighted<'a, R: RngCore>(
    rng: &mut R,
    candidates: &[&'a RelayInfo],
    pos: Position,
) -> Option<&'a RelayInfo> {
    let total: u64 = candidates.iter().map(|r| pos.of(r)).fold(0, u64::saturating_add);
    if total == 0 {
        return None;
    }
    let mut pick = rng.next_u64() % total;
    for r in candidates {
        let w = pos.of(r);
        if pick < w {
            return Some(r);
        }
        pick -= w;
    }
    None
}

/// Choose a three-hop path (guard, middle, exit) for `port`
/// (`None`: any exit, e.g. a pre-built circuit).
pub fn select_path<R: RngCore>(
    rng: &mut R,
    relays: &[RelayInfo],
    guards: &[RelayId],
    port: Option<u16>,
    avoid: &[RelayId],
) -> Result<Vec<HopSpec>, ClientError> {
    let usable: Vec<&RelayInfo> = relays.iter().filter(|r| !avoid.contains(&r.hop.relay_id)).collect();
    let exits: Vec<&RelayInfo> =
        usable.iter().copied().filter(|r| port.map_or(r.is_exit(), |p| r.exits_to(p))).collect();
    let exit = weighted(rng, &exits, Position::Exit).ok_or(ClientError::NoPath("no exit accepts the port"))?;
    // With a guard set, the first hop never comes from outside it (spec
    // §10.5); an empty set means no guard restriction (tools, tests).
    let guard_pool: Vec<&RelayInfo> = usable
        .iter()
        .copied()
        .filter(|r| (guards.is_empty() || guards.contains(&r.hop.relay_id)) && compatible(r, exit))
        .collect();
    let guard =
        weighted(rng, &guard_pool, Position::Guard).ok_or(ClientError::NoPath("no guard compatible with the exit"))?;
    let middles: Vec<&RelayInfo> =
        usable.iter().copied().filter(|r| compatible(r, exit) && compatible(r, guard)).collect();
    let middle = weighted(rng, &middles, Position::Middle)
        .ok_or(ClientError::NoPath("no middle relay in a distinct /16 and family"))?;
    Ok(vec![guard.hop.clone(), middle.hop.clone(), exit.hop.clone()])
}

/// Choose middle and exit for a circuit whose first hop is `guard` (chosen
/// first, by the guard manager): both compatible with it and with each
/// other (spec §10.5). `None` for `port`: any exit.
pub fn select_path_through<R: RngCore>(
    rng: &mut R,
    relays: &[RelayInfo],
    guard: &RelayInfo,
    port: Option<u16>,
    avoid: &[RelayId],
) -> Result<Vec<HopSpec>, ClientError> {
    let usable: Vec<&RelayInfo> =
        relays.iter().filter(|r| !avoid.contains(&r.hop.relay_id) && compatible(r, guard)).collect();
    let exits: Vec<&RelayInfo> =
        usable.iter().copied().filter(|r| port.map_or(r.is_exit(), |p| r.exits_to(p))).collect();
    let exit = weighted(rng, &exits, Position::Exit)
        .ok_or(ClientError::NoPath("no exit for the port compatible with the guard"))?;
    let middles: Vec<&RelayInfo> = usable.iter().copied().filter(|r| compatible(r, exit)).collect();
    let middle = weighted(rng, &middles, Position::Middle)
        .ok_or(ClientError::NoPath("no middle relay in a distinct /16 and family"))?;
    Ok(vec![guard.hop.clone(), middle.hop.clone(), exit.hop.clone()])
}

/// Choose `n` guards, weighted by guard weight, in distinct /16s.
pub fn choose_guards<R: RngCore>(rng: &mut R, relays: &[RelayInfo], n: usize) -> Vec<RelayId> {
    let mut chosen: Vec<&RelayInfo> = Vec::new();
    for _ in 0..n {
        let pool: Vec<&RelayInfo> = relays.iter().filter(|r| chosen.iter().all(|c| compatible(c, r))).collect();
        match weighted(rng, &pool, Position::Guard) {
            Some(r) => chosen.push(r),
            None => break,
        }
    }
    chosen.iter().map(|r| r.hop.relay_id).collect()
}

/// A relay for unit tests: keys and id all bytes `i`, port 9001 at `ip`,
/// weight 100 in each position it may hold, an exit to every port if `exit`.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn test_relay(i: u8, ip: &str, exit: bool) -> RelayInfo {
    use lamina_crypto::keys::{LinkPublicKey, OnionPublicKey};
    RelayInfo {
        hop: HopSpec {
            relay_id: RelayId([i; 32]),
            onion_key: OnionPublicKey([i; 32]),
            link_key: LinkPublicKey([i; 32]),
            addr: format!("{ip}:9001").parse().unwrap(),
        },
        bandwidth: 100,
        weight: PositionWeights { guard: 100, middle: 100, exit: if exit { 100 } else { 0 } },
        family: Vec::new(),
        exit_ports: if exit { vec![(1, 65535)] } else { Vec::new() },
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::rand_core::SeedableRng;

    use super::*;

    fn relay(i: u8, ip: &str, exit: bool) -> RelayInfo {
        test_relay(i, ip, exit)
    }

    #[test]
    fn paths_respect_blocks_families_and_exit_ports() {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([1; 32]);
        let mut relays = vec![
            relay(1, "127.1.0.1", false),
            relay(2, "127.1.0.2", false), // same /16 as 1
            relay(3, "127.3.0.1", false),
            relay(4, "127.4.0.1", true),
        ];
        relays[2].family = vec![RelayId([9; 32])];
        for _ in 0..200 {
            let path = select_path(&mut rng, &relays, &[], Some(80), &[]).unwrap();
            assert_eq!(path[2].relay_id, RelayId([4; 32]), "only relay 4 exits");
            let blocks: Vec<_> = path.iter().map(|h| net_block(h.addr.ip())).collect();
            assert!(blocks[0] != blocks[1] && blocks[1] != blocks[2] && blocks[0] != blocks[2]);
        }
        relays[3].exit_ports = vec![(443, 443)];
        assert!(select_path(&mut rng, &relays, &[], Some(80), &[]).is_err());
        // A one-sided family claim by relay 3 has no effect...
        relays[3].exit_ports = vec![(1, 65535)];
        relays[2].family = vec![RelayId([4; 32])];
        assert!(select_path(&mut rng, &relays, &[], Some(80), &[]).is_ok());
        // ...a mutual one excludes relay 4 beside it; with only relays 1
        // and 2 (one /16) left for guard and middle, no path.
        relays[3].family = vec![RelayId([3; 32])];
        assert!(select_path(&mut rng, &relays, &[], Some(80), &[]).is_err());
        relays.push(relay(5, "127.5.0.1", false));
        for _ in 0..50 {
            let path = select_path(&mut rng, &relays, &[], Some(80), &[]).unwrap();
            assert!(path.iter().all(|h| h.relay_id != RelayId([3; 32])));
        }
    }

    /// An exit claiming 4,000,000,000 KB/s but weighing what the other two
    /// exits weigh carries about a third of the exits, not all of them;
    /// a relay weighing 0 at a position is never picked there.
    #[test]
    fn hops_follow_earned_weights_not_claims() {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([4; 32]);
        let mut relays: Vec<RelayInfo> = (1..=7).map(|i| relay(i, &format!("127.{i}.0.1"), i <= 3)).collect();
        relays[0].bandwidth = 4_000_000_000;
        let big = RelayId([1; 32]);
        let mut carried = 0;
        for _ in 0..300 {
            let path = select_path(&mut rng, &relays, &[], Some(80), &[]).unwrap();
            carried += usize::from(path[2].relay_id == big);
        }
        assert!(carried <= 150, "the inflated exit carried {carried} of 300");
        relays[0].weight.exit = 0;
        for _ in 0..100 {
            let path = select_path(&mut rng, &relays, &[], Some(80), &[]).unwrap();
            assert_ne!(path[2].relay_id, big);
        }
    }

    #[test]
    fn guards_come_from_the_guard_set_when_possible() {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([2; 32]);
        let relays: Vec<RelayInfo> = (1..=6).map(|i| relay(i, &format!("127.{i}.0.1"), i == 6)).collect();
        let guards = vec![RelayId([2; 32])];
        for _ in 0..50 {
            let path = select_path(&mut rng, &relays, &guards, Some(80), &[]).unwrap();
            assert_eq!(path[0].relay_id, RelayId([2; 32]));
        }
        let chosen = choose_guards(&mut rng, &relays, 3);
        assert_eq!(chosen.len(), 3);
        // A guard set none of which fits: no path, never another first hop.
        let guards = vec![RelayId([6; 32])];
        assert!(select_path(&mut rng, &relays, &guards, Some(80), &[]).is_err());
    }

    #[test]
    fn only_public_addresses_are_public() {
        for ip in ["8.8.8.8", "1.1.1.1", "2a00:1450::1", "100.128.0.1", "172.32.0.1"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "127.1.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.0.1",
            "100.64.0.1",
            "0.0.0.0",
            "192.0.2.1",
            "198.18.0.1",
            "203.0.113.9",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn middle_and_exit_are_chosen_compatible_with_the_guard() {
        let mut rng = rand_chacha::ChaCha20Rng::from_seed([3; 32]);
        let mut relays: Vec<RelayInfo> = (1..=5).map(|i| relay(i, &format!("127.{i}.0.1"), i >= 4)).collect();
        relays.push(relay(6, "127.1.0.9", true)); // exit in the guard's /16
        let guard = relays[0].clone();
        for _ in 0..100 {
            let path = select_path_through(&mut rng, &relays, &guard, Some(80), &[]).unwrap();
            assert_eq!(path[0].relay_id, guard.hop.relay_id);
            assert_ne!(path[2].relay_id, RelayId([6; 32]), "never an exit in the guard's /16");
            assert_ne!(path[1].relay_id, path[2].relay_id);
        }
    }
}
