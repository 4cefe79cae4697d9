//! Long-term key types of a relay and the public-key newtypes everyone uses.
//!
//! A relay holds three key pairs (spec §2, §3.3):
//! - the **identity** key (Ed25519): its name, the [`RelayId`]; it signs the
//!   relay's descriptor and its link-key certificate;
//! - the **onion** key (X25519): the static key of the circuit handshake;
//! - the **link** key (X25519): the static key of its Noise link handshakes.
//!
//! Secret halves zeroize on drop (the dalek crates' `zeroize` feature) and
//! have hand-written `Debug` impls that print only the public half.

use std::fmt;

use rand_core::{CryptoRng, RngCore};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::error::CryptoError;

/// Length of every public key and secret scalar in bytes.
pub const KEY_LEN: usize = 32;
/// Length of an Ed25519 signature in bytes.
pub const SIGNATURE_LEN: usize = 64;

/// A relay's name: the bytes of its Ed25519 identity public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayId(pub [u8; KEY_LEN]);

impl RelayId {
    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Lower-case hex of the key bytes (how ids are shown to people).
    pub fn to_hex(&self) -> String {
        hex_lower(&self.0)
    }

    /// The first 8 bytes in hex: enough to tell relays apart in logs.
    pub fn short(&self) -> String {
        hex_lower(&self.0[..8])
    }
}

impl fmt::Debug for RelayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayId({})", self.short())
    }
}

impl fmt::Display for RelayId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The public half of a relay's onion key (circuit handshake, spec §4).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OnionPublicKey(pub [u8; KEY_LEN]);

impl fmt::Debug for OnionPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OnionPublicKey({})", hex_lower(&self.0[..8]))
    }
}

/// The public half of a relay's link key (Noise static key, spec §3).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinkPublicKey(pub [u8; KEY_LEN]);

impl fmt::Debug for LinkPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LinkPublicKey({})", hex_lower(&self.0[..8]))
    }
}

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; SIGNATURE_LEN]);

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex_lower(&self.0[..8]))
    }
}

/// A relay's Ed25519 identity key pair.
pub struct IdentityKeypair {
    /// The dalek signing key; zeroized on drop by the dalek crate.
    signing: ed25519_dalek::SigningKey,
}

impl IdentityKeypair {
    /// A fresh identity key from `rng`.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self { signing: ed25519_dalek::SigningKey::generate(rng) }
    }

    /// Rebuild the key pair from its 32-byte secret seed (as stored on disk).
    pub fn from_secret_bytes(secret: &[u8; KEY_LEN]) -> Self {
        Self { signing: ed25519_dalek::SigningKey::from_bytes(secret) }
    }

    /// The secret seed, for persisting to a 0600 key file. Zeroized on drop.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The relay id (the public key).
    pub fn relay_id(&self) -> RelayId {
        RelayId(self.signing.verifying_key().to_bytes())
    }

    /// Sign `msg` (spec §2.2: every signed object starts with a context string).
    pub fn sign(&self, msg: &[u8]) -> Signature {
        use ed25519_dalek::Signer;
        Signature(self.signing.sign(msg).to_bytes())
    }
}

impl fmt::Debug for IdentityKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKeypair").field("public", &self.relay_id()).finish_non_exhaustive()
    }
}

/// An X25519 static key pair: the onion key or the link key of a relay.
pub struct StaticKeypair {
    /// The secret scalar; zeroized on drop by x25519-dalek.
    secret: x25519_dalek::StaticSecret,
    /// The matching public key.
    public: x25519_dalek::PublicKey,
}

impl StaticKeypair {
    /// A fresh key pair from `rng`.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let secret = x25519_dalek::StaticSecret::random_from_rng(rng);
        let public = x25519_dalek::PublicKey::from(&secret);
        Self { secret, public }
    }

    /// Rebuild from the 32 secret bytes (as stored on disk).
    pub fn from_secret_bytes(bytes: &[u8; KEY_LEN]) -> Self {
        let secret = x25519_dalek::StaticSecret::from(*bytes);
        let public = x25519_dalek::PublicKey::from(&secret);
        Self { secret, public }
    }

    /// The secret bytes, for persisting or handing to Noise. Zeroized on drop.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; KEY_LEN]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// The public key bytes.
    pub fn public_bytes(&self) -> [u8; KEY_LEN] {
        self.public.to_bytes()
    }

    /// The public key as an onion key.
    pub fn onion_public(&self) -> OnionPublicKey {
        OnionPublicKey(self.public_bytes())
    }

    /// The public key as a link key.
    pub fn link_public(&self) -> LinkPublicKey {
        LinkPublicKey(self.public_bytes())
    }

    /// X25519 with `their_public`; rejects an all-zero (non-contributory) result.
    pub(crate) fn diffie_hellman(&self, their_public: &[u8; KEY_LEN]) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
        let shared = self.secret.diffie_hellman(&x25519_dalek::PublicKey::from(*their_public));
        contributory(shared)
    }
}

impl fmt::Debug for StaticKeypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticKeypair")
            .field("public", &hex_lower(&self.public.as_bytes()[..8]))
            .finish_non_exhaustive()
    }
}

/// Turn a dalek shared secret into bytes, rejecting the all-zero output that
/// a small-order public key produces (spec §4.3, CONTRIBUTING.md P12).
pub(crate) fn contributory(shared: x25519_dalek::SharedSecret) -> Result<Zeroizing<[u8; KEY_LEN]>, CryptoError> {
    if !shared.was_contributory() {
        return Err(CryptoError::NonContributory);
    }
    Ok(Zeroizing::new(shared.to_bytes()))
}

/// Raw X25519 (RFC 7748 `X25519(k, u)`), exposed for the known-answer tests.
pub fn x25519(scalar: [u8; KEY_LEN], u: [u8; KEY_LEN]) -> [u8; KEY_LEN] {
    x25519_dalek::x25519(scalar, u)
}

/// Constant-time equality of two byte strings of equal length.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// Lower-case hex without pulling a hex crate into the library.
pub(crate) fn hex_lower(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}
