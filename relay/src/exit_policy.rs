//! Exit policies (spec §15.1), pure: parse Tor-style rules
//! and decide whether an exit may connect to an address and port.
//!
//! Text form: comma-separated rules, first match wins, e.g.
//! `accept 127.0.0.0/8:*, reject *:*`. A rule is `accept|reject`, then an
//! address pattern (`*`, `*4`, `*6`, an address, or an address/prefix), `:`,
//! and a port pattern (`*`, a port, or `low-high`). IPv6 addresses are
//! written in brackets: `reject [fc00::]/7:*`. An address no rule matches is
//! rejected.
//!
//! The check runs **after** name resolution, on every resolved address, so a
//! host name cannot smuggle a private address past the policy.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why a policy text did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("exit policy rule {index}: {reason}")]
pub struct PolicyError {
    /// 1-based rule number.
    pub index: usize,
    /// What is wrong.
    pub reason: &'static str,
}

/// Accept or reject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Connect.
    Accept,
    /// Refuse.
    Reject,
}

/// Which addresses a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddrPattern {
    /// Every address.
    Any,
    /// Every IPv4 address.
    AnyV4,
    /// Every IPv6 address.
    AnyV6,
    /// A prefix.
    Prefix(IpAddr, u8),
}

/// One rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rule {
    /// What the rule decides.
    verdict: Verdict,
    /// Addresses covered.
    addr: AddrPattern,
    /// Inclusive port range.
    ports: (u16, u16),
}

/// An ordered list of rules; first match wins; no match rejects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitPolicy {
    /// The rules.
    rules: Vec<Rule>,
}

/// Most rules a policy may have.
pub const MAX_RULES: usize = 256;

/// The ranges every exit policy implicitly begins by rejecting (spec
/// §15.1, Tor's `ExitPolicyRejectPrivate`): loopback, RFC 1918, link-local
/// (with the cloud metadata address 169.254.169.254), CGNAT, benchmarking,
/// multicast, unspecified, reserved and documentation ranges, and the IPv6
/// equivalents — unique-local (with the AWS metadata address
/// `fd00:ec2::254`), site-local, link-local, multicast, IPv4-compatible
/// `::/96`, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, 6to4 `2002::/16`
/// (which embeds an IPv4 address, possibly a private one), Teredo
/// `2001::/32` and documentation `2001:db8::/32`. IPv4-mapped addresses are
/// checked as IPv4.
pub const PRIVATE_REJECTS: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "[::]/96",
    "[::ffff:0:0]/96",
    "[64:ff9b::]/96",
    "[64:ff9b:1::]/48",
    "[100::]/64",
    "[2001::]/32",
    "[2001:db8::]/32",
    "[2002::]/16",
    "[fc00::]/7",
    "[fec0::]/10",
    "[fe80::]/10",
    "[ff00::]/8",
];

/// The reject rules of [`PRIVATE_REJECTS`] followed by one per own address.
fn private_reject_rules(own_addrs: &[IpAddr]) -> Vec<Rule> {
    let mut rules: Vec<Rule> = PRIVATE_REJECTS
        .iter()
        .filter_map(|p| parse_addr_pattern(p).ok())
        .map(|addr| Rule { verdict: Verdict::Reject, addr, ports: (0, u16::MAX) })
        .collect();
    for ip in own_addrs {
        let ip = canonical(*ip);
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        rules.push(Rule { verdict: Verdict::Reject, addr: AddrPattern::Prefix(ip, bits), ports: (0, u16::MAX) });
    }
    rules
}

/// Whether `ip` is publicly routable: outside every range of
/// [`PRIVATE_REJECTS`] (the check behind `--test-network`, spec §15.2).
pub fn is_public(ip: IpAddr) -> bool {
    let ip = canonical(ip);
    !PRIVATE_REJECTS.iter().filter_map(|p| parse_addr_pattern(p).ok()).any(|pattern| matches(&pattern, ip))
}

impl ExitPolicy {
    /// Parse the text form.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let mut rules = Vec::new();
        for (i, raw) in text.split(',').enumerate() {
            let index = i + 1;
            let raw = raw.trim();
            if raw.is_empty() {
                return Err(PolicyError { index, reason: "empty rule" });
            }
            if rules.len() >= MAX_RULES {
                return Err(PolicyError { index, reason: "too many rules" });
            }
            rules.push(parse_rule(raw).map_err(|reason| PolicyError { index, reason })?);
        }
        Ok(Self { rules })
    }

    /// The default exit policy: reject every private/special range and the
    /// relay's own addresses, accept everything else.
    pub fn default_exit(own_addrs: &[IpAddr]) -> Self {
        let mut rules = private_reject_rules(own_addrs);
        rules.push(Rule { verdict: Verdict::Accept, addr: AddrPattern::Any, ports: (0, u16::MAX) });
        Self { rules }
    }

    /// This policy with the implicit rejects in front (spec §15.1): every
    /// range of [`PRIVATE_REJECTS`] and each of `own_addrs`. Configured
    /// policies get them unless the operator passes `--allow-private-exit`.
    #[must_use]
    pub fn with_private_rejects(self, own_addrs: &[IpAddr]) -> Self {
        let mut rules = private_reject_rules(own_addrs);
        rules.extend(self.rules);
        Self { rules }
    }

    /// A policy that never exits.
    pub fn reject_all() -> Self {
        Self { rules: vec![Rule { verdict: Verdict::Reject, addr: AddrPattern::Any, ports: (0, u16::MAX) }] }
    }

    /// The verdict for `ip:port`: the first matching rule's, reject if none
    /// matches. (The implicit private and own-address rejects are rules at
    /// the front, see [`with_private_rejects`](Self::with_private_rejects).)
    pub fn verdict(&self, ip: IpAddr, port: u16) -> Verdict {
        let ip = canonical(ip);
        self.rules
            .iter()
            .find(|r| r.ports.0 <= port && port <= r.ports.1 && matches(&r.addr, ip))
            .map_or(Verdict::Reject, |r| r.verdict)
    }

    /// Whether `ip:port` is allowed.
    pub fn allows(&self, ip: IpAddr, port: u16) -> bool {
        self.verdict(ip, port) == Verdict::Accept
    }

    /// Whether any address is accepted on `port` (for path selection before
    /// resolution: a relay that rejects the port everywhere is no candidate).
    pub fn may_allow_port(&self, port: u16) -> bool {
        self.rules.iter().any(|r| r.verdict == Verdict::Accept && r.ports.0 <= port && port <= r.ports.1)
    }

    /// The port ranges on which some address is accepted, merged and
    /// sorted (the descriptor's exit summary; at most `max` ranges, the
    /// last one widened to cover the rest).
    pub fn accepted_port_ranges(&self, max: usize) -> Vec<(u16, u16)> {
        let mut ranges: Vec<(u16, u16)> =
            self.rules.iter().filter(|r| r.verdict == Verdict::Accept).map(|r| (r.ports.0.max(1), r.ports.1)).collect();
        ranges.retain(|(lo, hi)| lo <= hi);
        ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::new();
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if u32::from(lo) <= u32::from(last.1) + 1 => last.1 = last.1.max(hi),
                _ => merged.push((lo, hi)),
            }
        }
        if max > 0 && merged.len() > max {
            let end = merged.iter().map(|r| r.1).max().unwrap_or(u16::MAX);
            merged.truncate(max);
            if let Some(last) = merged.last_mut() {
                last.1 = end;
            }
        }
        merged
    }

    /// Whether the policy accepts anything at all.
    pub fn is_exit(&self) -> bool {
        self.rules.iter().any(|r| r.verdict == Verdict::Accept)
    }
}

/// IPv4-mapped IPv6 addresses are checked as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `pattern` covers `ip`.
fn matches(pattern: &AddrPattern, ip: IpAddr) -> bool {
    match (pattern, ip) {
        (AddrPattern::Any, _) | (AddrPattern::AnyV4, IpAddr::V4(_)) | (AddrPattern::AnyV6, IpAddr::V6(_)) => true,
        (AddrPattern::Prefix(IpAddr::V4(net), bits), IpAddr::V4(ip)) => prefix_eq(&net.octets(), &ip.octets(), *bits),
        (AddrPattern::Prefix(IpAddr::V6(net), bits), IpAddr::V6(ip)) => prefix_eq(&net.octets(), &ip.octets(), *bits),
        _ => false,
    }
}

/// Whether the first `bits` bits of `a` and `b` agree.
fn prefix_eq(a: &[u8], b: &[u8], bits: u8) -> bool {
    let bits = usize::from(bits);
    let (full, rest) = (bits / 8, bits % 8);
    if a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    (a[full] & mask) == (b[full] & mask)
}

/// Parse `accept|reject ADDR:PORTS`.
fn parse_rule(raw: &str) -> Result<Rule, &'static str> {
    let (word, rest) = raw.split_once(char::is_whitespace).ok_or("expected `accept` or `reject` and a pattern")?;
    let verdict = match word {
        "accept" => Verdict::Accept,
        "reject" => Verdict::Reject,
        _ => return Err("rule must start with `accept` or `reject`"),
    };
    let rest = rest.trim();
    let (addr, ports) = rest.rsplit_once(':').ok_or("expected ADDRESS:PORTS")?;
    Ok(Rule { verdict, addr: parse_addr_pattern(addr)?, ports: parse_ports(ports)? })
}

/// Parse an address pattern.
fn parse_addr_pattern(s: &str) -> Result<AddrPattern, &'static str> {
    match s {
        "*" => return Ok(AddrPattern::Any),
        "*4" => return Ok(AddrPattern::AnyV4),
        "*6" => return Ok(AddrPattern::AnyV6),
        _ => {}
    }
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b.parse::<u8>().map_err(|_| "bad prefix length")?)),
        None => (s, None),
    };
    let ip: IpAddr = if let Some(inner) = addr.strip_prefix('[').and_then(|a| a.strip_suffix(']')) {
        IpAddr::V6(inner.parse::<Ipv6Addr>().map_err(|_| "bad IPv6 address")?)
    } else {
        IpAddr::V4(addr.parse::<Ipv4Addr>().map_err(|_| "bad IPv4 address (write IPv6 in brackets)")?)
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = bits.unwrap_or(max);
    if bits > max {
        return Err("prefix length too long");
    }
    Ok(AddrPattern::Prefix(ip, bits))
}

/// Parse `*`, `N` or `LOW-HIGH`.
fn parse_ports(s: &str) -> Result<(u16, u16), &'static str> {
    if s == "*" {
        return Ok((0, u16::MAX));
    }
    let (lo, hi) = match s.split_once('-') {
        Some((lo, hi)) => (lo, hi),
        None => (s, s),
    };
    let lo: u16 = lo.parse().map_err(|_| "bad port")?;
    let hi: u16 = hi.parse().map_err(|_| "bad port")?;
    if lo > hi {
        return Err("port range is reversed");
    }
    Ok((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn first_match_wins_and_no_match_rejects() {
        let p = ExitPolicy::parse("accept 127.0.0.0/8:*, reject *:*").unwrap();
        assert!(p.allows(ip("127.0.0.1"), 80));
        assert!(p.allows(ip("127.255.1.2"), 1));
        assert!(!p.allows(ip("8.8.8.8"), 80));
        let p = ExitPolicy::parse("accept *:80").unwrap();
        assert!(p.allows(ip("8.8.8.8"), 80));
        assert!(!p.allows(ip("8.8.8.8"), 81), "no rule matched: reject");
        assert!(p.may_allow_port(80) && !p.may_allow_port(22));
    }

    #[test]
    fn default_policy_rejects_private_and_special_ranges() {
        let own = ip("203.0.113.7");
        let p = ExitPolicy::default_exit(&[own]);
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "198.18.0.1",
            "198.19.255.255",
            "224.0.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fc00::1",
            "fd12::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "203.0.113.7",
            "169.254.169.254",
            "fd00:ec2::254",
            "::10.0.0.1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "fec0::1",
            "2002:a00:1::1",
            "2001:db8::1",
            "192.0.2.1",
            "198.51.100.1",
        ] {
            assert!(!p.allows(ip(bad), 443), "{bad} must be rejected");
            assert!(!is_public(ip(bad)), "{bad} is not public");
        }
        for good in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "198.20.0.1", "2a00:1450::1", "1.1.1.1"] {
            assert!(is_public(ip(good)), "{good} is public");
            assert!(p.allows(ip(good), 443), "{good} must be accepted");
        }
        assert!(!ExitPolicy::reject_all().is_exit());
    }

    #[test]
    fn custom_policies_keep_the_private_and_own_rejects() {
        let own = ip("198.100.1.1");
        for text in ["accept *:*", "accept *:80, accept *:443, reject *:*", "accept 127.0.0.0/8:*, reject *:*"] {
            let p = ExitPolicy::parse(text).unwrap().with_private_rejects(&[own]);
            for bad in ["127.0.0.1", "10.0.0.1", "169.254.169.254", "198.100.1.1", "::1", "::ffff:127.0.0.1"] {
                assert!(!p.allows(ip(bad), 80), "{text}: {bad} must be rejected");
            }
        }
        let p = ExitPolicy::parse("accept *:80, reject *:*").unwrap().with_private_rejects(&[own]);
        assert!(p.allows(ip("8.8.8.8"), 80) && !p.allows(ip("8.8.8.8"), 22));
        assert!(p.is_exit() && p.may_allow_port(80) && !p.may_allow_port(22));
        assert_eq!(p.accepted_port_ranges(16), vec![(80, 80)]);
        // Without the implicit rejects (--allow-private-exit) loopback is reachable.
        assert!(ExitPolicy::parse("accept *:*").unwrap().allows(ip("127.0.0.1"), 80));
    }

    #[test]
    fn port_summary_merges_accepted_ranges() {
        let p = ExitPolicy::parse("accept *:80, accept *:443, accept *:81-90, reject *:*").unwrap();
        assert_eq!(p.accepted_port_ranges(16), vec![(80, 90), (443, 443)]);
        assert_eq!(p.accepted_port_ranges(1), vec![(80, 443)]);
        assert!(ExitPolicy::reject_all().accepted_port_ranges(16).is_empty());
        assert_eq!(ExitPolicy::default_exit(&[]).accepted_port_ranges(16), vec![(1, 65535)]);
    }

    #[test]
    fn bad_rules_are_reported_with_their_position() {
        for (text, index) in [
            ("allow *:*", 1),
            ("accept *:*, reject 1.2.3.4/33:*", 2),
            ("accept *:99999", 1),
            ("accept *:90-80", 1),
            ("accept ::1:*", 1),
            ("accept *:*,,", 2),
            ("accept", 1),
        ] {
            assert_eq!(ExitPolicy::parse(text).unwrap_err().index, index, "{text}");
        }
        assert!(ExitPolicy::parse("reject [fc00::]/7:*, accept *6:443").is_ok());
    }
}
