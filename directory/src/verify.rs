//! Parse, then verify, then use (CONTRIBUTING.md P6).
//!
//! Decoding a descriptor yields an [`Unverified`] wrapper. Its content is
//! reachable only through [`Unverified::verify`], which checks, in order of
//! cost:
//!
//! 1. the validity window against the caller's clock: expiry after publish,
//!    lifetime at most 24 h, publish time at most 5 minutes in the future,
//!    not yet expired;
//! 2. the proof of work at the caller's difficulty (one SHA-256);
//! 3. the Ed25519 signature by the identity key over the context string and
//!    the body (≈ 50 µs).
//!
//! The time-independent results (work bits, signature) are memoized on the
//! shared decoded value, so a descriptor whose bytes were already verified
//! is never verified again (README "Verification cache").
//!
//! The few claims an engine needs *before* verifying, to discard stale and
//! duplicate copies cheaply, are exposed with a `claimed_` prefix.

use std::ops::Deref;

use lamina_crypto::keys::RelayId;

use crate::descriptor::{Descriptor, DescriptorHash, MAX_CLOCK_SKEW_S, MAX_LIFETIME_S};
use crate::error::DescriptorError;

/// A value that has been parsed but not verified.
#[derive(Clone, PartialEq, Eq)]
pub struct Unverified<T> {
    /// The parsed, unchecked value.
    inner: T,
}

/// A value that passed verification at some time and difficulty.
#[derive(Clone, PartialEq, Eq)]
pub struct Verified<T> {
    /// The checked value.
    inner: T,
}

impl<T> Unverified<T> {
    /// Wrap a freshly parsed value.
    pub(crate) fn new(inner: T) -> Self {
        Self { inner }
    }

    /// Skip verification. **For tests and simulations only**: a
    /// descriptor obtained this way was never checked.
    pub fn dangerously_assume_verified(self) -> Verified<T> {
        Verified { inner: self.inner }
    }
}

impl Unverified<Descriptor> {
    /// Verify at `now_unix` (unix seconds) with a proof of work of at least
    /// `pow_difficulty` bits.
    pub fn verify(self, now_unix: u64, pow_difficulty: u8) -> Result<Verified<Descriptor>, DescriptorError> {
        check_window(&self.inner, now_unix)?;
        let found = self.inner.work_bits();
        if found < u32::from(pow_difficulty) {
            return Err(DescriptorError::InsufficientWork { required: pow_difficulty, found });
        }
        if !self.inner.signature_ok() {
            return Err(DescriptorError::BadSignature);
        }
        Ok(Verified { inner: self.inner })
    }

    /// The relay id the descriptor claims (unverified).
    pub fn claimed_id(&self) -> RelayId {
        self.inner.id()
    }

    /// The sequence number the descriptor claims (unverified).
    pub fn claimed_sequence(&self) -> u64 {
        self.inner.sequence()
    }

    /// The (publish, expiry) times the descriptor claims (unverified).
    pub fn claimed_window(&self) -> (u64, u64) {
        (self.inner.published(), self.inner.expires())
    }

    /// The content hash of the received bytes (a fact, not a claim).
    pub fn hash(&self) -> DescriptorHash {
        self.inner.hash()
    }

    /// The received bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.inner.as_bytes()
    }
}

impl<T> Verified<T> {
    /// Take the verified value out of the wrapper.
    pub fn into_inner(self) -> T {
        self.inner
    }
}

impl Verified<Descriptor> {
    /// Whether the descriptor is still inside its validity window at
    /// `now_unix` (stores drop it once it is not).
    pub fn is_valid_at(&self, now_unix: u64) -> bool {
        check_window(&self.inner, now_unix).is_ok()
    }

    /// Turn back into an unverified value (to send it, or to re-verify it
    /// under other parameters). Cheap: the value is shared.
    pub fn to_unverified(&self) -> Unverified<Descriptor> {
        Unverified { inner: self.inner.clone() }
    }
}

impl<T> Deref for Verified<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T> std::fmt::Debug for Unverified<T>
where
    T: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Unverified").field(&self.inner).finish()
    }
}

impl<T> std::fmt::Debug for Verified<T>
where
    T: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Verified").field(&self.inner).finish()
    }
}

/// The validity-window rules of README "Verification".
fn check_window(d: &Descriptor, now_unix: u64) -> Result<(), DescriptorError> {
    let (published, expires) = (d.published(), d.expires());
    let Some(lifetime) = expires.checked_sub(published).filter(|l| *l > 0) else {
        return Err(DescriptorError::ExpiresBeforePublished { published, expires });
    };
    if lifetime > MAX_LIFETIME_S {
        return Err(DescriptorError::LifetimeTooLong { lifetime, max: MAX_LIFETIME_S });
    }
    if published > now_unix.saturating_add(MAX_CLOCK_SKEW_S) {
        return Err(DescriptorError::FutureDated { published, now: now_unix });
    }
    if now_unix >= expires {
        return Err(DescriptorError::Expired { expires, now: now_unix });
    }
    Ok(())
}
