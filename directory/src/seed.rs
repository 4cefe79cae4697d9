//! Seed addresses, optionally pinned to a relay id (spec §13.4):
//! `RELAYID@IP:PORT` (RELAYID: 64 hex digits, as `lamina-client dir
//! --json` prints `id`) or plain `IP:PORT` (unauthenticated: whoever
//! answers there is believed to be a seed).

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use lamina_crypto::keys::{RelayId, KEY_LEN};

/// A seed: where to reach it, and which relay must answer there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Seed {
    /// The relay id the seed must prove (`None`: not pinned).
    pub id: Option<RelayId>,
    /// Its address.
    pub addr: SocketAddr,
}

impl Seed {
    /// An unpinned seed.
    pub fn unpinned(addr: SocketAddr) -> Self {
        Self { id: None, addr }
    }

    /// Check the identity the seed proved against its pin: `Err` names
    /// both when they differ.
    pub fn check(&self, proved: &RelayId) -> Result<(), String> {
        match self.id {
            Some(pin) if pin != *proved => {
                Err(format!("seed {} proved relay id {} but is pinned to {}", self.addr, proved.to_hex(), pin.to_hex()))
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.id {
            Some(id) => write!(f, "{}@{}", id.to_hex(), self.addr),
            None => write!(f, "{}", self.addr),
        }
    }
}

/// Why a seed did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeedParseError {
    /// The part before `@` is not 64 hex digits.
    #[error("relay id must be 64 hex digits (as `lamina-client dir --json` prints `id`)")]
    BadId,
    /// The address part is not `IP:PORT`.
    #[error("address must be IP:PORT")]
    BadAddress,
}

impl FromStr for Seed {
    type Err = SeedParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, addr) = match s.split_once('@') {
            Some((id, addr)) => (Some(parse_relay_id(id).ok_or(SeedParseError::BadId)?), addr),
            None => (None, s),
        };
        let addr = addr.parse().map_err(|_| SeedParseError::BadAddress)?;
        Ok(Self { id, addr })
    }
}

/// Parse 64 hex digits into a relay id.
pub fn parse_relay_id(hex: &str) -> Option<RelayId> {
    let hex = hex.trim();
    if hex.len() != 2 * KEY_LEN || !hex.is_ascii() {
        return None;
    }
    let mut id = [0u8; KEY_LEN];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(RelayId(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both forms parse and print back; malformed pins are refused.
    #[test]
    fn seed_forms() {
        let id = RelayId([0xab; 32]);
        let text = format!("{}@127.1.0.1:9001", id.to_hex());
        let pinned: Seed = text.parse().expect("pinned seed");
        assert_eq!(pinned, Seed { id: Some(id), addr: "127.1.0.1:9001".parse().expect("addr") });
        assert_eq!(pinned.to_string(), text);
        let plain: Seed = "127.2.0.1:9001".parse().expect("plain seed");
        assert_eq!(plain.id, None);
        assert_eq!("abc@127.1.0.1:1".parse::<Seed>(), Err(SeedParseError::BadId));
        assert_eq!(format!("{}@nowhere", id.to_hex()).parse::<Seed>(), Err(SeedParseError::BadAddress));
        assert!(pinned.check(&id).is_ok());
        assert!(pinned.check(&RelayId([1; 32])).unwrap_err().contains("pinned to"));
        assert!(plain.check(&RelayId([1; 32])).is_ok());
    }
}
