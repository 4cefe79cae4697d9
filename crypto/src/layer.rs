//! Layered relay-cell crypto (spec §6).
//!
//! A circuit of *n* hops has *n* **layers** per direction: the client holds
//! all of them ([`LayerStack`]), each relay holds exactly one pair
//! ([`RelayLayers`]). *Forward* means towards the exit, *backward* towards
//! the client. Every relay cell body is [`BODY_LEN`] bytes at every hop.
//!
//! **Forward** (spec §6.2). Each hop's layer is ChaCha20-Poly1305 with a
//! counter nonce. A hop receives `body = tag | ct`, opens it (so any change
//! made by an earlier hop, any replay and any reordering fails here, at the
//! next honest hop) and forwards `pt | 0^16`, restoring the fixed size. The
//! client precomputes the bytes that these appended zeros turn into under
//! each later hop's keystream (the *filler*), so every hop's tag covers
//! exactly what that hop will see. A hop learns whether a cell is addressed
//! to it from the associated data the tag verifies under
//! ([`AD_FORWARD_ONWARD`] or [`AD_FORWARD_RECOGNIZED`]).
//!
//! **Backward** (spec §6.3). Only the client shares a key with each hop, so
//! only the client can check backward integrity. The originating hop seals
//! the message with its backward AEAD key; every hop between it and the
//! client adds a ChaCha20 stream layer under its own backward key and
//! counter (no expansion, so the size stays fixed). The client strips layers
//! in order and, at each hop, first tries that hop's AEAD: the hop whose tag
//! verifies is the originator. Any modification, replay or reordering on the
//! way makes that final check fail and the client tears the circuit down.
//!
//! Nonces are `0x00000000 | counter` (big-endian u64), one counter per hop
//! per direction, never wrapping: at `u64::MAX` the operation fails with
//! [`CryptoError::NonceExhausted`].

use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use ring::aead::{Aad, LessSafeKey, Nonce, Tag, UnboundKey, CHACHA20_POLY1305};
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::handshake::HopKeys;
use crate::kdf::{AD_BACKWARD_ORIGIN, AD_FORWARD_ONWARD, AD_FORWARD_RECOGNIZED};
use crate::keys::KEY_LEN;

/// Length of a relay cell body: the fixed payload of a RELAY cell (spec §2).
pub const BODY_LEN: usize = 507;
/// Length of one layer's authentication tag.
pub const TAG_LEN: usize = 16;
/// Length of the ciphertext that follows the tag.
pub const CT_LEN: usize = BODY_LEN - TAG_LEN;
/// Most hops a layer stack holds (spec §6.1).
pub const MAX_HOPS: usize = 8;
/// Byte offset of ChaCha20 block 1, where RFC 8439 starts encrypting.
const BLOCK1: u64 = 64;

/// Bytes of relay-message plaintext a forward cell can carry to the hop at
/// 0-based index `hop`: each earlier hop's restored padding costs one tag.
pub const fn forward_capacity(hop: usize) -> usize {
    CT_LEN - TAG_LEN * hop
}

/// Bytes of relay-message plaintext a backward cell carries (any origin).
pub const BACKWARD_CAPACITY: usize = CT_LEN;

/// What a relay learned from peeling a forward cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peeled {
    /// The cell is for a later hop: forward `body` unchanged.
    Onward,
    /// The cell is addressed to this hop; `body[..forward plaintext]` holds
    /// the relay message. `tag` is this layer's tag (flow-control receipts).
    Recognized {
        /// The tag that authenticated the cell at this hop.
        tag: [u8; TAG_LEN],
    },
}

/// One hop's keys and nonce counter for one direction.
///
/// The AEAD is `ring`'s ChaCha20-Poly1305 (RFC 8439): on 491-byte cells it
/// is about five times faster than the pure-Rust implementation here, whose
/// per-message Poly1305 set-up dominates at this size (spec §11).
struct Direction {
    /// The AEAD key schedule.
    aead: LessSafeKey,
    /// The raw key, for the ChaCha20 stream operations (filler, backward
    /// relaying) that need keystream at an offset.
    key: Zeroizing<[u8; KEY_LEN]>,
    /// The next nonce counter.
    counter: u64,
}

impl Direction {
    /// Fresh direction state at counter 0.
    fn new(key: &[u8; KEY_LEN]) -> Self {
        Self { aead: aead_key(key), key: Zeroizing::new(*key), counter: 0 }
    }

    /// The nonce for the current counter, or an error at exhaustion.
    fn nonce(&self) -> Result<[u8; 12], CryptoError> {
        if self.counter == u64::MAX {
            return Err(CryptoError::NonceExhausted);
        }
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&self.counter.to_be_bytes());
        Ok(nonce)
    }

    /// Advance the counter after a successful operation.
    fn advance(&mut self) {
        // `nonce()` refused u64::MAX, so this cannot overflow.
        self.counter += 1;
    }

    /// Seal `buf` in place under the current nonce; returns the tag.
    fn seal(&self, ad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], CryptoError> {
        aead_seal(&self.aead, &self.nonce()?, ad, buf)
    }

    /// Verify and decrypt `buf` in place; on failure `buf` is unchanged.
    fn open(&self, ad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> Result<(), CryptoError> {
        aead_open(&self.aead, &self.nonce()?, ad, buf, tag)
    }

    /// XOR `buf` with this nonce's keystream from block 1 (byte 0 of the
    /// encryption stream): the backward stream layer (spec §6.3).
    ///
    /// ChaCha20-Poly1305 encryption is exactly this XOR plus a tag, so the
    /// AEAD's seal with empty associated data computes it and the tag is
    /// dropped; `ring`'s sealing is about twice as fast per byte as the raw
    /// `chacha20` crate here (it was a fifth of a relay's profile). Frozen
    /// vectors pin the output to [`Self::keystream_xor`]'s.
    fn stream_layer(&self, buf: &mut [u8]) -> Result<(), CryptoError> {
        aead_seal(&self.aead, &self.nonce()?, &[], buf).map(|_| ())
    }

    /// XOR `buf` with this nonce's keystream starting at byte `offset` of
    /// the encryption stream (block 1 onward, as the AEAD uses it).
    fn keystream_xor(&self, offset: usize, buf: &mut [u8]) -> Result<(), CryptoError> {
        let nonce = self.nonce()?;
        let mut stream = chacha20::ChaCha20::new(self.key.as_ref().into(), (&nonce).into());
        let offset = u64::try_from(offset).map_err(|_| CryptoError::OutOfRange("offset"))?;
        stream.seek(BLOCK1 + offset);
        stream.apply_keystream(buf);
        Ok(())
    }
}

/// A relay's single layer pair for one circuit.
pub struct RelayLayers {
    /// Forward (towards the exit) layer.
    forward: Direction,
    /// Backward (towards the client) layer.
    backward: Direction,
}

impl std::fmt::Debug for RelayLayers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayLayers")
            .field("forward_counter", &self.forward.counter)
            .field("backward_counter", &self.backward.counter)
            .finish_non_exhaustive()
    }
}

impl RelayLayers {
    /// The layers a finished circuit handshake yields.
    pub fn new(keys: &HopKeys) -> Self {
        Self { forward: Direction::new(&keys.forward), backward: Direction::new(&keys.backward) }
    }

    /// Remove this hop's forward layer from `body` (spec §6.2).
    ///
    /// `has_next_hop` says whether the circuit continues past this relay:
    /// only then can a cell be [`Peeled::Onward`]. On success `body` holds
    /// `pt | 0^16`; on failure it is unchanged and the circuit must close.
    pub fn peel_forward(&mut self, body: &mut [u8; BODY_LEN], has_next_hop: bool) -> Result<Peeled, CryptoError> {
        let (tag, ct) = body.split_at_mut(TAG_LEN);
        let tag: [u8; TAG_LEN] = (&*tag).try_into().map_err(|_| CryptoError::OutOfRange("tag"))?;
        let peeled = if has_next_hop && self.forward.open(AD_FORWARD_ONWARD, ct, &tag).is_ok() {
            Peeled::Onward
        } else {
            self.forward.open(AD_FORWARD_RECOGNIZED, ct, &tag)?;
            Peeled::Recognized { tag }
        };
        self.forward.advance();
        // Restore the fixed size: pt | 0^16.
        body.copy_within(TAG_LEN.., 0);
        body[CT_LEN..].fill(0);
        Ok(peeled)
    }

    /// Seal a backward message this hop originates (spec §6.3). The caller
    /// has written the plaintext into `body[TAG_LEN..]`; the tag is written
    /// into `body[..TAG_LEN]` and returned.
    pub fn originate_backward(&mut self, body: &mut [u8; BODY_LEN]) -> Result<[u8; TAG_LEN], CryptoError> {
        let (tag_slot, pt) = body.split_at_mut(TAG_LEN);
        let tag = self.backward.seal(AD_BACKWARD_ORIGIN, pt)?;
        tag_slot.copy_from_slice(&tag);
        self.backward.advance();
        Ok(tag)
    }

    /// Add this hop's backward stream layer to a cell from the next hop.
    pub fn relay_backward(&mut self, body: &mut [u8; BODY_LEN]) -> Result<(), CryptoError> {
        self.backward.stream_layer(body)?;
        self.backward.advance();
        Ok(())
    }
}

/// One hop's layer pair as the client holds it.
struct ClientHop {
    /// Forward layer of this hop.
    forward: Direction,
    /// Backward layer of this hop.
    backward: Direction,
}

/// The client's ordered layers for one circuit: index 0 is the guard.
#[derive(Default)]
pub struct LayerStack {
    /// One entry per hop, in path order.
    hops: Vec<ClientHop>,
}

impl std::fmt::Debug for LayerStack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LayerStack").field("hops", &self.hops.len()).finish_non_exhaustive()
    }
}

impl LayerStack {
    /// An empty stack (no hops yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of hops.
    pub fn len(&self) -> usize {
        self.hops.len()
    }

    /// Whether the stack has no hops.
    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    /// Append the layers of a newly extended hop.
    pub fn push(&mut self, keys: &HopKeys) -> Result<(), CryptoError> {
        if self.hops.len() >= MAX_HOPS {
            return Err(CryptoError::OutOfRange("too many hops"));
        }
        self.hops.push(ClientHop { forward: Direction::new(&keys.forward), backward: Direction::new(&keys.backward) });
        Ok(())
    }

    /// Wrap a forward cell for the hop at 0-based index `target` (spec §6.2).
    ///
    /// The caller has written the relay message into
    /// `body[TAG_LEN..TAG_LEN + forward_capacity(target)]`; the rest of the
    /// body is overwritten. Returns the target layer's tag.
    pub fn wrap_forward(&mut self, target: usize, body: &mut [u8; BODY_LEN]) -> Result<[u8; TAG_LEN], CryptoError> {
        let hops = self.hops.get(..=target).ok_or(CryptoError::OutOfRange("target hop"))?;
        for hop in hops {
            hop.forward.nonce()?;
        }
        // Filler: G_0 = ∅; G_h = (G_{h-1} | 0^16) ⊕ S_h[L-16h .. L] (spec §6.2).
        let filler_start = TAG_LEN + forward_capacity(target);
        let filler = &mut body[filler_start..];
        filler.fill(0);
        for (h, hop) in hops.iter().enumerate().skip(1) {
            let len = TAG_LEN * h;
            hop.forward.keystream_xor(CT_LEN - len, &mut filler[..len])?;
        }
        let mut target_tag = [0u8; TAG_LEN];
        for h in (0..=target).rev() {
            if h < target {
                // pt_h = body_{h+1}[0..L]; the dropped 16 bytes are zero by construction.
                body.copy_within(..CT_LEN, TAG_LEN);
            }
            let ad = if h == target { AD_FORWARD_RECOGNIZED } else { AD_FORWARD_ONWARD };
            let (tag_slot, pt) = body.split_at_mut(TAG_LEN);
            let tag = hops[h].forward.seal(ad, pt)?;
            tag_slot.copy_from_slice(&tag);
            if h == target {
                target_tag = tag;
            }
        }
        for hop in &mut self.hops[..=target] {
            hop.forward.advance();
        }
        Ok(target_tag)
    }

    /// Remove backward layers until one hop's origin tag verifies (spec §6.3).
    ///
    /// Returns the 0-based index of the originating hop and its tag; the
    /// plaintext is in `body[TAG_LEN..]`. On failure the circuit must close.
    pub fn unwrap_backward(&mut self, body: &mut [u8; BODY_LEN]) -> Result<(usize, [u8; TAG_LEN]), CryptoError> {
        for hop in &self.hops {
            hop.backward.nonce()?;
        }
        let Some(last) = self.hops.len().checked_sub(1) else {
            // No hop could have sealed it.
            return Err(CryptoError::AuthenticationFailed);
        };
        // Fast path: almost every backward cell comes from the last hop, so
        // remove every earlier hop's stream layer first and try the last
        // hop's tag once, instead of failing a tag check at every hop.
        for hop in &self.hops[..last] {
            hop.backward.stream_layer(body)?;
        }
        if let Some(tag) = self.try_origin(last, body) {
            return Ok((last, tag));
        }
        // Slow path: undo (the stream layers are XORs) and try hop by hop.
        for hop in &self.hops[..last] {
            hop.backward.stream_layer(body)?;
        }
        for h in 0..last {
            if let Some(tag) = self.try_origin(h, body) {
                return Ok((h, tag));
            }
            self.hops[h].backward.stream_layer(body)?;
        }
        Err(CryptoError::AuthenticationFailed)
    }

    /// If hop `h`'s origin tag verifies on `body` (with the layers of hops
    /// before it already removed), decrypt it, advance the backward counters
    /// of hops `0..=h`, and return the tag.
    fn try_origin(&mut self, h: usize, body: &mut [u8; BODY_LEN]) -> Option<[u8; TAG_LEN]> {
        let (tag, ct) = body.split_at_mut(TAG_LEN);
        let tag: [u8; TAG_LEN] = (&*tag).try_into().ok()?;
        self.hops.get(h)?.backward.open(AD_BACKWARD_ORIGIN, ct, &tag).ok()?;
        for earlier in &mut self.hops[..=h] {
            earlier.backward.advance();
        }
        Some(tag)
    }

    /// Test hook: set every counter of one hop (to exercise exhaustion).
    #[doc(hidden)]
    pub fn dangerously_set_counters(&mut self, hop: usize, counter: u64) {
        if let Some(h) = self.hops.get_mut(hop) {
            h.forward.counter = counter;
            h.backward.counter = counter;
        }
    }
}

impl RelayLayers {
    /// Test hook: set both counters (to exercise exhaustion).
    #[doc(hidden)]
    pub fn dangerously_set_counters(&mut self, counter: u64) {
        self.forward.counter = counter;
        self.backward.counter = counter;
    }
}

/// Raw ChaCha20-Poly1305 (RFC 8439 §2.8) seal of `buf` in place under `key`
/// and the full 96-bit `nonce`, authenticating `ad`; returns the detached tag.
///
/// Not used by the layers themselves (they build their nonces from
/// counters); exposed so the known-answer tests can check the primitive
/// against RFC 8439 §2.8.2 through this crate rather than the dependency.
pub fn chacha20poly1305_seal_raw(
    key: &[u8; KEY_LEN],
    nonce: &[u8; 12],
    ad: &[u8],
    buf: &mut [u8],
) -> Result<[u8; TAG_LEN], CryptoError> {
    aead_seal(&aead_key(key), nonce, ad, buf)
}

/// Raw ChaCha20-Poly1305 (RFC 8439 §2.8) open of `buf` in place: the
/// counterpart of [`chacha20poly1305_seal_raw`]. On failure `buf` is
/// unchanged and the error is [`CryptoError::AuthenticationFailed`].
pub fn chacha20poly1305_open_raw(
    key: &[u8; KEY_LEN],
    nonce: &[u8; 12],
    ad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), CryptoError> {
    aead_open(&aead_key(key), nonce, ad, buf, tag)
}

/// A ChaCha20-Poly1305 key schedule.
fn aead_key(key: &[u8; KEY_LEN]) -> LessSafeKey {
    // A 32-byte key is always valid for ChaCha20-Poly1305.
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("ChaCha20-Poly1305 takes 32-byte keys"))
}

/// Seal `buf` in place; returns the detached tag.
fn aead_seal(key: &LessSafeKey, nonce: &[u8; 12], ad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN], CryptoError> {
    let tag = key
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(ad), buf)
        .map_err(|_| CryptoError::OutOfRange("aead input too long"))?;
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(tag.as_ref());
    Ok(out)
}

/// Verify and decrypt `buf` in place. `ring` may overwrite the buffer when
/// the tag is wrong, so a copy is restored on failure: callers rely on an
/// unchanged buffer to try another key or associated data (spec §6.2, §6.3).
fn aead_open(
    key: &LessSafeKey,
    nonce: &[u8; 12],
    ad: &[u8],
    buf: &mut [u8],
    tag: &[u8; TAG_LEN],
) -> Result<(), CryptoError> {
    // Cell-sized buffers are backed up on the stack, larger ones (raw
    // known-answer tests only) on the heap.
    let mut stack = [0u8; BODY_LEN];
    let heap;
    let backup: &[u8] = if buf.len() <= BODY_LEN {
        stack[..buf.len()].copy_from_slice(buf);
        &stack[..buf.len()]
    } else {
        heap = buf.to_vec();
        &heap
    };
    let nonce = Nonce::assume_unique_for_key(*nonce);
    if key.open_in_place_separate_tag(nonce, Aad::from(ad), Tag::from(*tag), buf, 0..).is_ok() {
        return Ok(());
    }
    buf.copy_from_slice(backup);
    Err(CryptoError::AuthenticationFailed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_layer_is_the_raw_keystream() {
        for counter in [0u64, 1, 77, u64::MAX - 1] {
            let mut d = Direction::new(&[0x42; KEY_LEN]);
            d.counter = counter;
            let mut a: Vec<u8> = (0..BODY_LEN).map(|i| u8::try_from(i % 256).unwrap()).collect();
            let mut b = a.clone();
            d.keystream_xor(0, &mut a).unwrap();
            d.stream_layer(&mut b).unwrap();
            assert_eq!(a, b, "counter {counter}");
        }
    }
}
