//! Key derivation: HKDF-SHA256 and HMAC-SHA256 with named labels.
//!
//! Every domain-separation string used anywhere in Lamina is a constant in
//! this module, so the spec (docs/spec.md §5) and the code list the same set.

use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// Protocol identifier of the circuit handshake (spec §4).
pub const PROTOID: &[u8] = b"lamina-ntor-x25519-sha256-1";
/// HKDF-Extract salt of the circuit handshake (spec §5.1).
pub const T_KEY_EXTRACT: &[u8] = b"lamina-ntor-x25519-sha256-1:key_extract";
/// HMAC key that turns the handshake secret into the verify value (spec §5.1).
pub const T_VERIFY: &[u8] = b"lamina-ntor-x25519-sha256-1:verify";
/// HMAC key of the relay's handshake authenticator (spec §5.1).
pub const T_MAC: &[u8] = b"lamina-ntor-x25519-sha256-1:mac";
/// HKDF-Expand info for the per-hop layer keys (spec §5.2).
pub const M_EXPAND: &[u8] = b"lamina-ntor-x25519-sha256-1:key_expand";
/// The role string mixed into the relay's authenticator (spec §4.2).
pub const SERVER_ROLE: &[u8] = b"Server";
/// Signature context of a link-key certificate (spec §3.3).
pub const LINK_CERT_CONTEXT: &[u8] = b"lamina-link-cert-v1";
/// Noise prologue of every link handshake (spec §3.1).
pub const LINK_PROLOGUE: &[u8] = b"lamina-link-v1";
/// Associated data of a forward layer addressed to a later hop (spec §6.2).
pub const AD_FORWARD_ONWARD: &[u8] = b"lamina-layer-fwd-onward";
/// Associated data of a forward layer addressed to this hop (spec §6.2).
pub const AD_FORWARD_RECOGNIZED: &[u8] = b"lamina-layer-fwd-recognized";
/// Associated data of a backward cell sealed by its originating hop (spec §6.3).
pub const AD_BACKWARD_ORIGIN: &[u8] = b"lamina-layer-bwd-origin";

/// HMAC-SHA256(key, parts[0] | parts[1] | …).
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC-SHA256 accepts keys of every length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// HKDF-SHA256: Extract with `salt` over `ikm`, then Expand with `info`
/// into `N` bytes of output key material.
pub fn hkdf_sha256<const N: usize>(salt: &[u8], ikm: &[u8], info: &[u8]) -> Zeroizing<[u8; N]> {
    let hk = Hkdf::<Sha256>::new(Some(salt), ikm);
    let mut okm = Zeroizing::new([0u8; N]);
    // N is a compile-time constant far below 255 * 32, HKDF's output limit.
    hk.expand(info, okm.as_mut_slice()).expect("HKDF output length is below 255 hash lengths");
    okm
}

/// Raw HKDF-SHA256 into a caller buffer, for the RFC 5869 known-answer tests.
///
/// Returns `None` when `okm` is longer than HKDF allows (255 × 32 bytes).
pub fn hkdf_sha256_into(salt: Option<&[u8]>, ikm: &[u8], info: &[u8], okm: &mut [u8]) -> Option<()> {
    Hkdf::<Sha256>::new(salt, ikm).expand(info, okm).ok()
}
