//! Fuzz target: the exit-policy parser (spec §15.1) never panics, and any
//! policy it accepts, once the implicit rejects are in front, refuses
//! loopback, link-local metadata and private addresses on every port, and
//! summarises its ports as sorted, disjoint ranges within the bound.
//!
//! Input: two bytes of port, then the policy text (UTF-8, lossy).

#![no_main]

use std::net::IpAddr;

use lamina_relay::exit_policy::ExitPolicy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((port, text)) = data.split_first_chunk::<2>() else { return };
    let port = u16::from_be_bytes(*port);
    let text = String::from_utf8_lossy(text);
    let Ok(policy) = ExitPolicy::parse(&text) else { return };
    let ranges = policy.accepted_port_ranges(8);
    assert!(ranges.len() <= 8, "summary longer than its bound");
    assert!(ranges.windows(2).all(|w| w[0].1 < w[1].0), "summary not sorted and disjoint");
    assert!(ranges.iter().all(|(lo, hi)| lo <= hi), "empty range in the summary");
    let own: IpAddr = "203.0.113.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let safe = policy.with_private_rejects(&[own]);
    for ip in ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "64:ff9b::a00:1", "203.0.113.7"] {
        let Ok(ip) = ip.parse::<IpAddr>() else { continue };
        assert!(!safe.allows(ip, port), "implicit reject bypassed");
    }
});
