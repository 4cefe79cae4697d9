//! The Noise wrapper used by links (spec §3): the only place that names
//! `snow`, so the link state machine in `lamina-proto` sees a small API.
//!
//! Two patterns, both `25519_ChaChaPoly_SHA256`, both three messages:
//! - `XK` when the initiator knows the responder's link key (from a verified
//!   descriptor): the responder is authenticated by the first message.
//! - `XX` when it does not (bootstrapping from a seed given only as an
//!   address): the responder sends its static key and a link certificate.
//!
//! Randomness is injected (CONTRIBUTING.md P3): the caller's RNG seeds a ChaCha20
//! generator that `snow` draws its ephemeral keys from, through a resolver
//! that otherwise delegates to `snow`'s default primitives.

use std::sync::Arc;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore};
use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver, RingResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::kdf::LINK_PROLOGUE;
use crate::keys::{LinkPublicKey, StaticKeypair, KEY_LEN};

/// Largest Noise message (handshake or transport) in bytes.
pub const NOISE_MAX_MSG: usize = 65_535;
/// Overhead of one Noise transport message (the AEAD tag).
pub const NOISE_TAG_LEN: usize = 16;

/// Which Noise handshake pattern a link uses (spec §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkPattern {
    /// `Noise_XK`: the responder's static key is known in advance.
    Xk,
    /// `Noise_XX`: the responder's static key is learned in the handshake.
    Xx,
}

impl LinkPattern {
    /// The full Noise protocol name.
    pub fn protocol_name(self) -> &'static str {
        match self {
            Self::Xk => "Noise_XK_25519_ChaChaPoly_SHA256",
            Self::Xx => "Noise_XX_25519_ChaChaPoly_SHA256",
        }
    }
}

/// A Noise handshake in progress.
pub struct NoiseHandshake {
    /// The snow state.
    state: snow::HandshakeState,
}

impl std::fmt::Debug for NoiseHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseHandshake").field("finished", &self.state.is_handshake_finished()).finish()
    }
}

impl NoiseHandshake {
    /// Start as initiator with our static key `local`. `remote` is required
    /// for [`LinkPattern::Xk`] and ignored for [`LinkPattern::Xx`].
    pub fn initiator<R: RngCore + CryptoRng>(
        rng: &mut R,
        pattern: LinkPattern,
        local: &StaticKeypair,
        remote: Option<&LinkPublicKey>,
    ) -> Result<Self, CryptoError> {
        let secret = local.secret_bytes();
        let mut builder = builder(rng, pattern)?.local_private_key(secret.as_slice());
        if pattern == LinkPattern::Xk {
            let remote = remote.ok_or(CryptoError::NoiseState("XK needs the responder's key"))?;
            builder = builder.remote_public_key(&remote.0);
        }
        let state = builder.build_initiator().map_err(|_| CryptoError::NoiseState("build initiator"))?;
        Ok(Self { state })
    }

    /// Start as responder with our static key `local`.
    pub fn responder<R: RngCore + CryptoRng>(
        rng: &mut R,
        pattern: LinkPattern,
        local: &StaticKeypair,
    ) -> Result<Self, CryptoError> {
        let secret = local.secret_bytes();
        let state = builder(rng, pattern)?
            .local_private_key(secret.as_slice())
            .build_responder()
            .map_err(|_| CryptoError::NoiseState("build responder"))?;
        Ok(Self { state })
    }

    /// Write our next handshake message carrying `payload` into `out`.
    pub fn write_message(&mut self, payload: &[u8], out: &mut [u8]) -> Result<usize, CryptoError> {
        self.state.write_message(payload, out).map_err(|_| CryptoError::NoiseState("write handshake"))
    }

    /// Read the peer's handshake message; its payload goes to `payload`.
    pub fn read_message(&mut self, msg: &[u8], payload: &mut [u8]) -> Result<usize, CryptoError> {
        self.state.read_message(msg, payload).map_err(|_| CryptoError::AuthenticationFailed)
    }

    /// Whether all handshake messages have been exchanged.
    pub fn is_finished(&self) -> bool {
        self.state.is_handshake_finished()
    }

    /// The peer's static key, once the handshake has revealed it.
    pub fn remote_static(&self) -> Option<LinkPublicKey> {
        let bytes: [u8; KEY_LEN] = self.state.get_remote_static()?.try_into().ok()?;
        Some(LinkPublicKey(bytes))
    }

    /// The handshake hash (channel binding), available during the handshake.
    pub fn handshake_hash(&self) -> Vec<u8> {
        self.state.get_handshake_hash().to_vec()
    }

    /// Turn a finished handshake into the transport that carries cells.
    pub fn into_transport(self) -> Result<NoiseTransport, CryptoError> {
        let state =
            self.state.into_stateless_transport_mode().map_err(|_| CryptoError::NoiseState("handshake unfinished"))?;
        let state = Arc::new(state);
        Ok(NoiseTransport {
            sender: NoiseSender { state: Arc::clone(&state), nonce: 0 },
            receiver: NoiseReceiver { state, nonce: 0 },
        })
    }
}

/// An established Noise transport. `snow`'s stateless transport takes the
/// nonce as an argument, so this wrapper keeps one counter per direction
/// and can [`split`](Self::split) into halves that live in different tasks.
pub struct NoiseTransport {
    /// Sending half.
    sender: NoiseSender,
    /// Receiving half.
    receiver: NoiseReceiver,
}

impl std::fmt::Debug for NoiseTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NoiseTransport { .. }")
    }
}

impl NoiseTransport {
    /// Encrypt `plain` into `out`; returns the ciphertext length.
    pub fn encrypt(&mut self, plain: &[u8], out: &mut [u8]) -> Result<usize, CryptoError> {
        self.sender.encrypt(plain, out)
    }

    /// Decrypt `msg` into `out`; returns the plaintext length.
    pub fn decrypt(&mut self, msg: &[u8], out: &mut [u8]) -> Result<usize, CryptoError> {
        self.receiver.decrypt(msg, out)
    }

    /// Split into independent sending and receiving halves.
    pub fn split(self) -> (NoiseSender, NoiseReceiver) {
        (self.sender, self.receiver)
    }
}

/// The sending half of a Noise transport.
pub struct NoiseSender {
    /// Shared snow state (keys only; holds no counters).
    state: Arc<snow::StatelessTransportState>,
    /// Next sending nonce; never wraps.
    nonce: u64,
}

impl std::fmt::Debug for NoiseSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseSender").field("nonce", &self.nonce).finish_non_exhaustive()
    }
}

impl NoiseSender {
    /// Encrypt `plain` into `out`; returns the ciphertext length.
    pub fn encrypt(&mut self, plain: &[u8], out: &mut [u8]) -> Result<usize, CryptoError> {
        if self.nonce == u64::MAX {
            return Err(CryptoError::NonceExhausted);
        }
        let n = self
            .state
            .write_message(self.nonce, plain, out)
            .map_err(|_| CryptoError::NoiseState("transport encrypt"))?;
        self.nonce += 1;
        Ok(n)
    }
}

/// The receiving half of a Noise transport.
pub struct NoiseReceiver {
    /// Shared snow state (keys only; holds no counters).
    state: Arc<snow::StatelessTransportState>,
    /// Next expected nonce: a replayed, dropped or reordered message fails.
    nonce: u64,
}

impl std::fmt::Debug for NoiseReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseReceiver").field("nonce", &self.nonce).finish_non_exhaustive()
    }
}

impl NoiseReceiver {
    /// Decrypt `msg` into `out`; returns the plaintext length.
    pub fn decrypt(&mut self, msg: &[u8], out: &mut [u8]) -> Result<usize, CryptoError> {
        if self.nonce == u64::MAX {
            return Err(CryptoError::NonceExhausted);
        }
        let n = self.state.read_message(self.nonce, msg, out).map_err(|_| CryptoError::AuthenticationFailed)?;
        self.nonce += 1;
        Ok(n)
    }
}

/// A snow builder for `pattern` whose randomness comes from `rng`.
fn builder<R: RngCore + CryptoRng>(rng: &mut R, pattern: LinkPattern) -> Result<snow::Builder<'static>, CryptoError> {
    let params = pattern.protocol_name().parse().map_err(|_| CryptoError::NoiseState("noise params"))?;
    let mut seed = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(seed.as_mut_slice());
    let resolver = SeededResolver { seed };
    Ok(snow::Builder::with_resolver(params, Box::new(resolver)).prologue(LINK_PROLOGUE))
}

/// A resolver that hands snow a generator seeded by the caller's RNG, takes
/// the cipher from snow's `ring` resolver, and every other primitive from
/// snow's default resolver.
struct SeededResolver {
    /// Seed of the generator; zeroized on drop.
    seed: Zeroizing<[u8; 32]>,
}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRng(ChaCha20Rng::from_seed(*self.seed))))
    }

    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }

    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }

    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        // ring's ChaCha20-Poly1305 is several times faster than the
        // pure-Rust one on link frames (the link cipher dominated the
        // relay's profile); same RFC 8439 construction.
        RingResolver.resolve_cipher(choice).or_else(|| DefaultResolver.resolve_cipher(choice))
    }
}

/// ChaCha20 generator wrapped so it can implement snow's `Random`.
struct SeededRng(ChaCha20Rng);

impl RngCore for SeededRng {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.try_fill_bytes(dest)
    }
}

impl CryptoRng for SeededRng {}
impl Random for SeededRng {}
