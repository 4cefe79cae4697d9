//! Relay settings: command-line flags and an optional TOML file with the
//! same keys; flags override the file (pure: no I/O but reading the file).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::exit_policy::{ExitPolicy, PolicyError};

/// Settings from the TOML file; every field optional.
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Listen address.
    pub listen: Option<SocketAddr>,
    /// Seed relays.
    #[serde(default)]
    pub seeds: Vec<SocketAddr>,
    /// Exit with the default policy.
    pub exit: Option<bool>,
    /// Exit policy text.
    pub exit_policy: Option<String>,
    /// Metrics endpoint.
    pub metrics: Option<SocketAddr>,
    /// CREATE cells per second accepted from one client IP.
    pub create_rate: Option<f64>,
    /// Burst of CREATE cells from one client IP.
    pub create_burst: Option<f64>,
    /// Advertised bandwidth in KB/s.
    pub bandwidth: Option<u32>,
    /// Proof-of-work bits every descriptor must carry.
    pub pow_bits: Option<u8>,
    /// Directory epoch length in seconds.
    pub epoch_secs: Option<u64>,
    /// Declared family members (hex relay ids).
    #[serde(default)]
    pub family: Vec<String>,
    /// Drop the implicit private and own-address exit rejects (spec §15.1;
    /// local test networks only).
    pub allow_private_exit: Option<bool>,
    /// A local test network: extends and links to non-public addresses are
    /// allowed (spec §15.2).
    pub test_network: Option<bool>,
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for these settings.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The exit policy does not parse.
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// A required setting is missing.
    #[error("missing setting: {0} (give the flag or put it in the config file)")]
    Missing(&'static str),
    /// A `--family` member is not a relay id, or there are too many.
    #[error("--family: {0}")]
    Family(String),
}

/// Parse `--family` members (64-digit hex relay ids; the relay's own id is
/// dropped, duplicates merged); at most the descriptor's limit.
pub fn parse_family(
    items: &[String],
    own: &lamina_crypto::keys::RelayId,
) -> Result<Vec<lamina_crypto::keys::RelayId>, ConfigError> {
    let mut family = Vec::new();
    for item in items.iter().map(|i| i.trim()).filter(|i| !i.is_empty()) {
        let bytes: Option<Vec<u8>> = (0..item.len() / 2)
            .map(|i| item.get(2 * i..2 * i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
            .collect();
        let id = bytes
            .filter(|b| item.len() == 64 && b.len() == 32)
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .map(lamina_crypto::keys::RelayId)
            .ok_or_else(|| ConfigError::Family(format!("not a 64-digit hex relay id: {item}")))?;
        if id != *own && !family.contains(&id) {
            family.push(id);
        }
    }
    if family.len() > lamina_directory::descriptor::MAX_FAMILY {
        return Err(ConfigError::Family(format!("at most {} members", lamina_directory::descriptor::MAX_FAMILY)));
    }
    Ok(family)
}

/// Read and parse a TOML config file.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse { path: path.to_path_buf(), message: e.message().to_string() })
}

/// The descriptor's exit summary for `policy` (spec §9).
pub fn exit_summary(policy: &ExitPolicy) -> lamina_directory::ExitSummary {
    let ports: Vec<lamina_directory::PortRange> = policy
        .accepted_port_ranges(lamina_directory::descriptor::MAX_PORT_RANGES)
        .into_iter()
        .map(|(lo, hi)| lamina_directory::PortRange { lo, hi })
        .collect();
    if ports.is_empty() {
        lamina_directory::ExitSummary::NotExit
    } else {
        lamina_directory::ExitSummary::Exit { ports }
    }
}

/// The exit policy implied by `--exit` / `--exit-policy` (spec §15.1, §15.2):
/// a policy text implies exit; `--exit` alone gives the default policy; with
/// neither the relay never exits. Every policy begins with the implicit
/// private and own-address (`own`) rejects unless `allow_private` (the
/// `--allow-private-exit` flag, spec §15.1).
pub fn exit_policy(
    exit: bool,
    policy: Option<&str>,
    own: &[std::net::IpAddr],
    allow_private: bool,
) -> Result<ExitPolicy, ConfigError> {
    let configured = match policy {
        Some(text) => ExitPolicy::parse(text)?,
        None if exit => ExitPolicy::parse("accept *:*")?,
        None => return Ok(ExitPolicy::reject_all()),
    };
    if allow_private {
        Ok(configured)
    } else {
        Ok(configured.with_private_rejects(own))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_flags_follow_the_contract() {
        let own = ["127.0.0.1".parse().unwrap()];
        assert!(!exit_policy(false, None, &own, false).unwrap().is_exit());
        assert!(!exit_policy(false, None, &own, true).unwrap().is_exit());
        let default = exit_policy(true, None, &own, false).unwrap();
        assert!(default.allows("8.8.8.8".parse().unwrap(), 80));
        assert!(!default.allows("127.0.0.1".parse().unwrap(), 80));
        // A custom policy keeps the implicit rejects (review H-3) ...
        let custom = exit_policy(false, Some("accept 127.0.0.0/8:*, reject *:*"), &own, false).unwrap();
        assert!(!custom.allows("127.0.0.1".parse().unwrap(), 80));
        let any = exit_policy(false, Some("accept *:*"), &[], false).unwrap();
        for bad in ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1"] {
            assert!(!any.allows(bad.parse().unwrap(), 80), "{bad}");
        }
        // ... unless --allow-private-exit.
        let allowed = exit_policy(false, Some("accept 127.0.0.0/8:*, reject *:*"), &own, true).unwrap();
        assert!(allowed.allows("127.0.0.1".parse().unwrap(), 80));
        assert!(exit_policy(false, Some("bogus"), &own, false).is_err());
    }

    #[test]
    fn family_members_are_hex_ids_bounded() {
        let own = lamina_crypto::keys::RelayId([1; 32]);
        let a = lamina_crypto::keys::RelayId([0xab; 32]);
        let items = vec![a.to_hex(), own.to_hex(), a.to_hex(), String::new()];
        assert_eq!(parse_family(&items, &own).unwrap(), vec![a]);
        assert!(parse_family(&["xyz".into()], &own).is_err());
        let many: Vec<String> = (2..=10u8).map(|i| lamina_crypto::keys::RelayId([i; 32]).to_hex()).collect();
        assert!(parse_family(&many, &own).is_err());
    }

    #[test]
    fn file_config_rejects_unknown_keys() {
        assert!(toml::from_str::<FileConfig>("listen = \"127.0.0.1:9001\"\nexit = true").is_ok());
        let both = toml::from_str::<FileConfig>("allow_private_exit = true\ntest_network = true").unwrap();
        assert_eq!((both.allow_private_exit, both.test_network), (Some(true), Some(true)));
        assert!(toml::from_str::<FileConfig>("lisen = \"127.0.0.1:9001\"").is_err());
    }
}
