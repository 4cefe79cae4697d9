//! The relay's long-term keys on disk (spec §2; key files 0600, CONTRIBUTING.md P12).
//!
//! Three files in the data directory, created on first start with mode 0600
//! (the directory itself 0700): `identity.key` (Ed25519 seed), `onion.key`
//! and `link.key` (X25519 secrets), each exactly 32 raw bytes. A key file
//! that exists with the wrong size is an error, never silently replaced; a
//! key file readable by others is refused.
//!
//! Onion keys rotate (spec §15.6): [`rotate_onion_on_disk`] moves
//! `onion.key` to `onion.key.old` and creates a fresh `onion.key`; the relay
//! accepts CREATEs for both until the next rotation.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use lamina_crypto::keys::{IdentityKeypair, StaticKeypair, KEY_LEN};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

/// A relay's three key pairs.
pub struct RelayKeys {
    /// Ed25519 identity (the relay id).
    pub identity: IdentityKeypair,
    /// X25519 circuit-handshake key.
    pub onion: StaticKeypair,
    /// X25519 link (Noise static) key.
    pub link: StaticKeypair,
}

impl std::fmt::Debug for RelayKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayKeys").field("relay_id", &self.identity.relay_id()).finish_non_exhaustive()
    }
}

/// Why keys could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Filesystem failure.
    #[error("key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A key file has the wrong size or unsafe permissions.
    #[error("key file {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
}

impl RelayKeys {
    /// Load the keys from `dir`, creating any that are missing.
    pub fn load_or_create<R: RngCore + CryptoRng>(dir: &Path, rng: &mut R) -> Result<Self, KeyError> {
        fs::create_dir_all(dir).map_err(|source| KeyError::Io { path: dir.to_path_buf(), source })?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|source| KeyError::Io { path: dir.to_path_buf(), source })?;
        let identity = load_or_create_secret(&dir.join("identity.key"), rng)?;
        let onion = load_or_create_secret(&dir.join("onion.key"), rng)?;
        let link = load_or_create_secret(&dir.join("link.key"), rng)?;
        Ok(Self {
            identity: IdentityKeypair::from_secret_bytes(&identity),
            onion: StaticKeypair::from_secret_bytes(&onion),
            link: StaticKeypair::from_secret_bytes(&link),
        })
    }

    /// Fresh keys held only in memory (tests, the local testnet).
    pub fn ephemeral<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self {
            identity: IdentityKeypair::generate(rng),
            onion: StaticKeypair::generate(rng),
            link: StaticKeypair::generate(rng),
        }
    }
}

/// How long ago `dir`'s onion key was created (its file's modification
/// time), if known.
pub fn onion_key_age(dir: &Path) -> Option<std::time::Duration> {
    fs::metadata(dir.join("onion.key")).ok()?.modified().ok()?.elapsed().ok()
}

/// The previous onion key kept in `dir` by the last rotation, if any.
pub fn load_previous_onion(dir: &Path) -> Result<Option<StaticKeypair>, KeyError> {
    let path = dir.join("onion.key.old");
    if !path.exists() {
        return Ok(None);
    }
    let secret = load_or_create_secret(&path, &mut rand_core::OsRng)?;
    Ok(Some(StaticKeypair::from_secret_bytes(&secret)))
}

/// Rotate the onion key in `dir`: `onion.key` becomes `onion.key.old` and a
/// fresh `onion.key` (mode 0600) is created and returned.
pub fn rotate_onion_on_disk<R: RngCore + CryptoRng>(dir: &Path, rng: &mut R) -> Result<StaticKeypair, KeyError> {
    let (current, old) = (dir.join("onion.key"), dir.join("onion.key.old"));
    fs::rename(&current, &old).map_err(|source| KeyError::Io { path: current.clone(), source })?;
    let secret = load_or_create_secret(&current, rng)?;
    Ok(StaticKeypair::from_secret_bytes(&secret))
}

/// Read a 32-byte secret, or create one with mode 0600.
fn load_or_create_secret<R: RngCore + CryptoRng>(
    path: &Path,
    rng: &mut R,
) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    let io = |source| KeyError::Io { path: path.to_path_buf(), source };
    match fs::metadata(path) {
        Ok(meta) => {
            if meta.permissions().mode() & 0o077 != 0 {
                return Err(KeyError::Invalid {
                    path: path.to_path_buf(),
                    reason: "readable by group or others (chmod 600)",
                });
            }
            let bytes = Zeroizing::new(fs::read(path).map_err(io)?);
            let mut secret = Zeroizing::new([0u8; KEY_LEN]);
            if bytes.len() != KEY_LEN {
                return Err(KeyError::Invalid { path: path.to_path_buf(), reason: "not a 32-byte key" });
            }
            secret.copy_from_slice(&bytes);
            Ok(secret)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut secret = Zeroizing::new([0u8; KEY_LEN]);
            rng.fill_bytes(secret.as_mut_slice());
            let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(io)?;
            file.write_all(secret.as_slice()).map_err(io)?;
            file.sync_all().map_err(io)?;
            Ok(secret)
        }
        Err(e) => Err(io(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_persist_with_strict_permissions() {
        let dir = std::env::temp_dir().join(format!("lamina-keys-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut rng = rand_core::OsRng;
        let first = RelayKeys::load_or_create(&dir, &mut rng).unwrap();
        let again = RelayKeys::load_or_create(&dir, &mut rng).unwrap();
        assert_eq!(first.identity.relay_id(), again.identity.relay_id());
        assert_eq!(first.onion.public_bytes(), again.onion.public_bytes());
        for name in ["identity.key", "onion.key", "link.key"] {
            let mode = fs::metadata(dir.join(name)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{name}");
        }
        fs::set_permissions(dir.join("link.key"), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(RelayKeys::load_or_create(&dir, &mut rng), Err(KeyError::Invalid { .. })));
        fs::set_permissions(dir.join("link.key"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(dir.join("link.key"), b"short").unwrap();
        assert!(matches!(RelayKeys::load_or_create(&dir, &mut rng), Err(KeyError::Invalid { .. })));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn onion_rotation_keeps_the_previous_key() {
        let dir = std::env::temp_dir().join(format!("lamina-onion-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let mut rng = rand_core::OsRng;
        let first = RelayKeys::load_or_create(&dir, &mut rng).unwrap();
        assert!(load_previous_onion(&dir).unwrap().is_none());
        assert!(onion_key_age(&dir).is_some());
        let fresh = rotate_onion_on_disk(&dir, &mut rng).unwrap();
        assert_ne!(fresh.public_bytes(), first.onion.public_bytes());
        let previous = load_previous_onion(&dir).unwrap().unwrap();
        assert_eq!(previous.public_bytes(), first.onion.public_bytes());
        let again = RelayKeys::load_or_create(&dir, &mut rng).unwrap();
        assert_eq!(again.onion.public_bytes(), fresh.public_bytes(), "the rotated key is the current one");
        assert_eq!(again.identity.relay_id(), first.identity.relay_id());
        let mode = fs::metadata(dir.join("onion.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let _ = fs::remove_dir_all(&dir);
    }
}
