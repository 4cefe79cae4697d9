//! Errors of the crypto crate.
//!
//! Cryptographic failures are deliberately uninformative (CONTRIBUTING.md P9): a
//! caller learns *that* authentication failed, never which byte or which
//! check. Every variant says whose fault it is through [`CryptoError::kind`].

/// Who is to blame for a failure, so drivers can choose between closing a
/// circuit, retrying and logging a bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The remote party sent something that does not verify.
    Peer,
    /// A local invariant was broken (a bug in Lamina).
    Local,
}

/// A failure of a cryptographic operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// An AEAD tag, a handshake MAC or a Noise message failed to verify.
    #[error("authentication failed")]
    AuthenticationFailed,
    /// A Diffie-Hellman result was all zeros (a small-order point was sent).
    #[error("non-contributory key exchange")]
    NonContributory,
    /// A circuit handshake named an identity or onion key this relay does not hold.
    #[error("handshake addressed to a key this relay does not hold")]
    UnknownKey,
    /// A signature did not verify under the claimed identity.
    #[error("bad signature")]
    BadSignature,
    /// A public key's bytes are not a valid key.
    #[error("malformed public key")]
    MalformedKey,
    /// A per-direction nonce counter reached its maximum; the circuit or
    /// link must be replaced (counters never wrap, spec §3.4).
    #[error("nonce counter exhausted")]
    NonceExhausted,
    /// A hop index outside the layer stack, or a layer operation on a buffer
    /// of the wrong size.
    #[error("layer operation out of range: {0}")]
    OutOfRange(&'static str),
    /// The Noise library refused an operation for a reason other than
    /// authentication (wrong state, buffer too small).
    #[error("noise state error: {0}")]
    NoiseState(&'static str),
}

impl CryptoError {
    /// Whose fault the failure is.
    pub fn kind(&self) -> Blame {
        match self {
            Self::AuthenticationFailed
            | Self::NonContributory
            | Self::UnknownKey
            | Self::BadSignature
            | Self::MalformedKey => Blame::Peer,
            Self::NonceExhausted | Self::OutOfRange(_) | Self::NoiseState(_) => Blame::Local,
        }
    }
}
