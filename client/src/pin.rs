//! Pinned paths: an experiment setting that fixes every circuit's guard,
//! middle and exit (spec §10.9), as Tor's `EntryNodes`, `MiddleNodes` and
//! `ExitNodes` with `StrictNodes 1`.
//!
//! A pinned path is checked before normal path selection. It is strict:
//! when a pinned relay is not in the directory, or the pinned exit does not
//! accept the port, the build fails; the client never falls back to another
//! relay. The /16 and family rules of normal selection are *not* applied
//! (an experiment may mean to measure exactly such a path), so a pinned
//! path is for measurements, never for anonymity.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use lamina_crypto::keys::RelayId;
use lamina_proto::circuit::client::HopSpec;

use crate::error::ClientError;
use crate::path::RelayInfo;

/// One pinned hop: a relay named by identity or by its advertised address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinnedHop {
    /// The relay with this identity (64 hex digits).
    Id(RelayId),
    /// The relay advertising this `IP:PORT` (handy in generated experiments,
    /// where addresses are known before identities exist).
    Addr(SocketAddr),
}

impl PinnedHop {
    /// Whether `relay` is the pinned one.
    fn matches(&self, relay: &RelayInfo) -> bool {
        match self {
            Self::Id(id) => relay.hop.relay_id == *id,
            Self::Addr(addr) => relay.hop.addr == *addr,
        }
    }
}

impl fmt::Display for PinnedHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => f.write_str(&id.to_hex()),
            Self::Addr(addr) => write!(f, "{addr}"),
        }
    }
}

/// A fixed guard, middle and exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinnedPath {
    /// Guard, middle, exit.
    pub hops: [PinnedHop; 3],
}

/// Why a `--pin-path` value does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinParseError {
    /// Not exactly three comma-separated hops.
    #[error("a pinned path is GUARD,MIDDLE,EXIT (three hops), got {0}")]
    HopCount(usize),
    /// A hop is neither 64 hex digits nor `IP:PORT`.
    #[error("pinned hop {0:?} is neither a 64-hex-digit relay id nor IP:PORT")]
    BadHop(String),
    /// The same relay twice.
    #[error("pinned hop {0} appears twice")]
    Repeated(String),
}

impl FromStr for PinnedHop {
    type Err = PinParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Self::Addr(addr));
        }
        parse_hex_id(s).map(Self::Id).ok_or_else(|| PinParseError::BadHop(s.to_owned()))
    }
}

impl FromStr for PinnedPath {
    type Err = PinParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(',').collect();
        let [guard, middle, exit] = parts.as_slice() else { return Err(PinParseError::HopCount(parts.len())) };
        let hops: [PinnedHop; 3] = [guard.parse()?, middle.parse()?, exit.parse()?];
        for (i, hop) in hops.iter().enumerate() {
            if hops[..i].contains(hop) {
                return Err(PinParseError::Repeated(hop.to_string()));
            }
        }
        Ok(Self { hops })
    }
}

impl fmt::Display for PinnedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [g, m, e] = &self.hops;
        write!(f, "{g},{m},{e}")
    }
}

/// 64 hex digits → a relay id.
fn parse_hex_id(s: &str) -> Option<RelayId> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut id = [0u8; 32];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(RelayId(id))
}

/// The pinned path's hops from the current directory, strictly: every hop
/// must be in `relays`, they must be three distinct relays, and the exit
/// must accept `port` (`None`: be an exit at all).
pub fn pinned_path(relays: &[RelayInfo], pin: &PinnedPath, port: Option<u16>) -> Result<Vec<HopSpec>, ClientError> {
    let mut path: Vec<&RelayInfo> = Vec::with_capacity(3);
    for hop in &pin.hops {
        let relay = relays
            .iter()
            .find(|r| hop.matches(r))
            .ok_or(ClientError::NoPath("a pinned relay is not in the directory"))?;
        if path.iter().any(|p| p.hop.relay_id == relay.hop.relay_id) {
            return Err(ClientError::NoPath("the pinned path names one relay twice"));
        }
        path.push(relay);
    }
    let exit = path[2];
    if !port.map_or(exit.is_exit(), |p| exit.exits_to(p)) {
        return Err(ClientError::NoPath("the pinned exit does not accept the port"));
    }
    Ok(path.iter().map(|r| r.hop.clone()).collect())
}

#[cfg(test)]
mod tests {

    use super::*;

    fn relay(i: u8, ip: &str, exit: bool) -> RelayInfo {
        crate::path::test_relay(i, ip, exit)
    }

    #[test]
    fn parses_ids_and_addresses_and_refuses_the_rest() {
        let id = RelayId([0xab; 32]).to_hex();
        let pin: PinnedPath = format!("{id},11.2.0.1:9001, 11.3.0.1:9001").parse().unwrap();
        assert_eq!(pin.hops[0], PinnedHop::Id(RelayId([0xab; 32])));
        assert_eq!(pin.hops[2], PinnedHop::Addr("11.3.0.1:9001".parse().unwrap()));
        assert_eq!(pin.to_string().parse::<PinnedPath>().unwrap(), pin, "display round-trips");
        assert_eq!("11.1.0.1:9001,11.2.0.1:9001".parse::<PinnedPath>(), Err(PinParseError::HopCount(2)));
        assert!(matches!("a,b,c".parse::<PinnedPath>(), Err(PinParseError::BadHop(_))));
        assert!(matches!(format!("{}zz,b,c", &id[..62]).parse::<PinnedPath>(), Err(PinParseError::BadHop(_))));
        assert!(matches!(
            "11.1.0.1:9001,11.2.0.1:9001,11.1.0.1:9001".parse::<PinnedPath>(),
            Err(PinParseError::Repeated(_))
        ));
    }

    #[test]
    fn pinned_paths_are_strict_and_ignore_weights() {
        // Relay 1 and 2 share a /16, which normal selection forbids; a pin
        // takes exactly what it names, in order.
        let mut relays = vec![
            relay(1, "11.1.0.1", false),
            relay(2, "11.1.0.2", false),
            relay(3, "11.3.0.1", true),
            relay(4, "11.4.0.1", true),
        ];
        relays[3].bandwidth = 1_000_000;
        let pin: PinnedPath = format!("{},11.1.0.2:9001,11.3.0.1:9001", RelayId([1; 32]).to_hex()).parse().unwrap();
        for _ in 0..10 {
            let path = pinned_path(&relays, &pin, Some(80)).unwrap();
            let ids: Vec<u8> = path.iter().map(|h| h.relay_id.0[0]).collect();
            assert_eq!(ids, vec![1, 2, 3]);
        }
        // The pinned exit refuses the port: no fallback to relay 4.
        relays[2].exit_ports = vec![(443, 443)];
        assert!(pinned_path(&relays, &pin, Some(80)).is_err());
        assert!(pinned_path(&relays, &pin, Some(443)).is_ok());
        // A pinned relay missing from the directory: no fallback either.
        relays.remove(1);
        assert!(pinned_path(&relays, &pin, Some(443)).is_err());
        // Two names of one relay (by id and by address).
        let twice: PinnedPath = format!("{},11.1.0.1:9001,11.3.0.1:9001", RelayId([1; 32]).to_hex()).parse().unwrap();
        assert!(pinned_path(&relays, &twice, Some(443)).is_err());
    }
}
