//! Ed25519 signing helpers for signed objects (descriptors, link-key
//! certificates).
//!
//! Every signed message starts with a context string naming what is signed,
//! length-prefixed (`len u8 | context | body`, spec §5.3), so a signature
//! over one kind of object can never be replayed as a signature over
//! another, even if one context were a prefix of another.

use crate::error::CryptoError;
use crate::keys::{IdentityKeypair, RelayId, Signature};

/// Sign `context | body` with `identity`.
pub fn sign_with_context(identity: &IdentityKeypair, context: &[u8], body: &[u8]) -> Signature {
    identity.sign(&context_message(context, body))
}

/// `len u8 | context | body`; contexts are short constants (< 256 bytes).
fn context_message(context: &[u8], body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(1 + context.len() + body.len());
    msg.push(u8::try_from(context.len()).unwrap_or(u8::MAX));
    msg.extend_from_slice(context);
    msg.extend_from_slice(body);
    msg
}

/// Verify `sig` over `context | body` under the identity `signer`.
///
/// Uses `verify_strict`: rejects small-order keys and non-canonical
/// signature encodings (malleability).
pub fn verify_with_context(signer: &RelayId, context: &[u8], body: &[u8], sig: &Signature) -> Result<(), CryptoError> {
    verify(signer, &context_message(context, body), sig)
}

/// Verify a raw Ed25519 signature (RFC 8032) strictly.
pub fn verify(signer: &RelayId, msg: &[u8], sig: &Signature) -> Result<(), CryptoError> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(signer.as_bytes()).map_err(|_| CryptoError::MalformedKey)?;
    let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
    key.verify_strict(msg, &sig).map_err(|_| CryptoError::BadSignature)
}
