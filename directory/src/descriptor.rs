//! Relay descriptors: a relay's signed, time-bounded self-description
//! (README "Overview", spec §9).
//!
//! A descriptor names a relay (its Ed25519 identity key *is* its
//! [`RelayId`]), carries the keys a client needs to build circuits through it
//! (onion key, link key), where to reach it, whether it exits and to which
//! ports, its advertised bandwidth and declared family, a sequence number
//! that only grows, a validity window of at most 24 hours, a proof of work
//! bound to the identity, and an Ed25519 signature by the identity over all
//! of that.
//!
//! # Encoding
//!
//! One canonical binary form, big-endian, at most [`MAX_DESCRIPTOR_LEN`]
//! bytes (checked before anything else is parsed):
//!
//! ```text
//! offset size  field
//!      0    1  version = 0x01
//!      1   32  identity: Ed25519 public key (the relay id)
//!     33   32  onion key (X25519 public key, circuit handshake)
//!     65   32  link key (X25519 public key, Noise static key)
//!     97    8  sequence (u64; only grows)
//!    105    8  published (u64 unix seconds)
//!    113    8  expires (u64 unix seconds; 0 < expires - published <= 86400)
//!    121    4  bandwidth (u32 KB/s, advertised)
//!    125    1  flags: bit 0 = exit; bits 1..7 must be zero
//!    126    1  n_addr (1..=4)
//!    127    .  n_addr x address, strictly ascending as encoded bytes:
//!                kind u8 (0x04 = IPv4 | 0x06 = IPv6), IP (4 | 16 bytes), port u16
//!      .    1  n_ports (0..=16): 0 if and only if the exit flag is clear
//!      .    .  n_ports x port range: lo u16, hi u16
//!                1 <= lo <= hi; ranges ascending, disjoint and not adjacent
//!      .    1  n_family (0..=8)
//!      .    .  n_family x 32-byte relay id, strictly ascending, never the identity
//!      .    8  proof-of-work nonce (u64, see [`pow`])
//!      .   64  signature: Ed25519 over 0x14 | "lamina-descriptor-v1" | every byte above
//! ```
//!
//! The signed message is the length-prefixed context (0x14 = 20, its
//! length) then the body, as for every Lamina signature (spec §5.3).
//!
//! The smallest descriptor (one IPv4 address, no ports, no family) is 208
//! bytes, the largest possible one 597 bytes. Every set of field values has
//! exactly one encoding: lists are sorted without duplicates, flag bits are
//! defined or zero, and there is no padding. "Canonical" matters because the
//! store detects equivocation by comparing bytes and the Merkle root hashes
//! bytes.
//!
//! # Parse, verify, use
//!
//! [`Descriptor::decode`] only parses: it yields an [`Unverified`] wrapper.
//! The inner value is reachable only through [`Unverified::verify`], which
//! checks the validity window, the proof of work and the signature (CONTRIBUTING.md
//! P6). Keeping the signature check out of the decoder lets fuzzers reach the
//! parser.

pub mod addr;
pub mod exit;
pub mod pow;
mod sign;

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use lamina_crypto::digest::sha256;
use lamina_crypto::keys::{LinkPublicKey, OnionPublicKey, RelayId, Signature, KEY_LEN, SIGNATURE_LEN};
use lamina_proto::codec::{DecodeError, Reader, Writer};

pub use self::exit::{ExitSummary, PortRange};
pub use self::pow::PowNonce;
use crate::error::DescriptorError;
use crate::verify::Unverified;

/// The version byte of the descriptor format described above.
pub const DESCRIPTOR_VERSION: u8 = 0x01;
/// Hard cap on an encoded descriptor (directory/README.md "Descriptor": 1 KiB).
pub const MAX_DESCRIPTOR_LEN: usize = 1024;
/// Smallest possible encoded descriptor (one IPv4 address, nothing optional).
pub const MIN_DESCRIPTOR_LEN: usize = 208;
/// Most listen addresses a descriptor may carry.
pub const MAX_ADDRESSES: usize = 4;
/// Most accepted exit port ranges a descriptor may carry.
pub const MAX_PORT_RANGES: usize = 16;
/// Most family members a descriptor may declare.
pub const MAX_FAMILY: usize = 8;
/// Longest validity window: expires − published ≤ 24 h (directory/README.md).
pub const MAX_LIFETIME_S: u64 = 24 * 3600;
/// How far in the future a publish time may lie, to tolerate clock skew.
pub const MAX_CLOCK_SKEW_S: u64 = 5 * 60;
/// Signature context: the signed message is `len u8 | this string | body`
/// (spec §5.3).
pub const DESCRIPTOR_SIG_CONTEXT: &[u8] = b"lamina-descriptor-v1";
/// Flag bit 0: the relay is an exit.
const FLAG_EXIT: u8 = 0x01;
/// Length of the signature, the last field.
const SIG_LEN: usize = SIGNATURE_LEN;
/// Domain-separation byte of a Merkle leaf (see [`DescriptorHash`]).
const LEAF_TAG: u8 = 0x00;

/// The content hash of a descriptor: SHA-256(0x00 | encoded bytes).
///
/// It is the descriptor's Merkle leaf (README "Merkle construction"), the key
/// of the gossip seen-set and the identity of a verification result.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DescriptorHash(pub [u8; 32]);

impl DescriptorHash {
    /// The leaf hash of `bytes`: SHA-256(0x00 | bytes).
    pub fn of(bytes: &[u8]) -> Self {
        Self(sha256(&[&[LEAF_TAG], bytes]))
    }
}

impl fmt::Debug for DescriptorHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DescriptorHash(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// The fields a relay chooses for its descriptor: everything except the
/// identity (taken from the signing key), the proof of work and the
/// signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorFields {
    /// The relay's current onion key (circuit handshake).
    pub onion_key: OnionPublicKey,
    /// The relay's link key (Noise static key).
    pub link_key: LinkPublicKey,
    /// Sequence number; a newer descriptor of the same relay must carry a
    /// larger one.
    pub sequence: u64,
    /// Publish time, unix seconds.
    pub published: u64,
    /// Expiry, unix seconds (at most [`MAX_LIFETIME_S`] after `published`).
    pub expires: u64,
    /// Advertised bandwidth in KB/s.
    pub bandwidth_kbps: u32,
    /// Exit-policy summary.
    pub exit: ExitSummary,
    /// Listen addresses (1 to [`MAX_ADDRESSES`]); the builder sorts them.
    pub addresses: Vec<SocketAddr>,
    /// Declared family (at most [`MAX_FAMILY`]); the builder sorts them.
    pub family: Vec<RelayId>,
}

/// A decoded descriptor. Cheap to clone (shared, immutable).
///
/// Obtainable only through [`Unverified::verify`] (or the test bypass), so a
/// `Descriptor` in hand outside this crate has passed verification.
#[derive(Clone)]
pub struct Descriptor {
    /// The shared decoded value.
    inner: Arc<Inner>,
}

/// The shared part of a [`Descriptor`].
struct Inner {
    /// The relay id (identity key).
    id: RelayId,
    /// Everything the relay chose.
    fields: DescriptorFields,
    /// The proof-of-work nonce.
    pow_nonce: PowNonce,
    /// The signature over the context and the body.
    signature: Signature,
    /// The canonical encoding, exactly as received.
    bytes: Box<[u8]>,
    /// SHA-256(0x00 | bytes).
    hash: DescriptorHash,
    /// Memoized time-independent check: leading zero bits of the work hash.
    work_bits: OnceLock<u32>,
    /// Memoized time-independent check: does the signature verify.
    signature_ok: OnceLock<bool>,
}

impl Descriptor {
    /// Parse a descriptor (no signature, work or time checks: see
    /// [`Unverified::verify`]).
    ///
    /// Rejects encodings above [`MAX_DESCRIPTOR_LEN`] before reading any
    /// field, trailing bytes, and every non-canonical form.
    pub fn decode(bytes: &[u8]) -> Result<Unverified<Self>, DescriptorError> {
        if bytes.len() > MAX_DESCRIPTOR_LEN {
            return Err(DescriptorError::Oversized { len: bytes.len(), max: MAX_DESCRIPTOR_LEN });
        }
        let mut r = Reader::new(bytes);
        let (id, fields) = decode_body(&mut r)?;
        let pow_nonce = PowNonce(r.u64().map_err(truncated)?);
        let signature = Signature(r.array::<SIG_LEN>().map_err(truncated)?);
        if r.remaining() != 0 {
            return Err(DescriptorError::TrailingBytes);
        }
        let inner = Inner {
            id,
            fields,
            pow_nonce,
            signature,
            bytes: bytes.into(),
            hash: DescriptorHash::of(bytes),
            work_bits: OnceLock::new(),
            signature_ok: OnceLock::new(),
        };
        Ok(Unverified::new(Self { inner: Arc::new(inner) }))
    }

    /// The relay id (Ed25519 identity key).
    pub fn id(&self) -> RelayId {
        self.inner.id
    }

    /// All relay-chosen fields.
    pub fn fields(&self) -> &DescriptorFields {
        &self.inner.fields
    }

    /// The onion key.
    pub fn onion_key(&self) -> OnionPublicKey {
        self.inner.fields.onion_key
    }

    /// The link key.
    pub fn link_key(&self) -> LinkPublicKey {
        self.inner.fields.link_key
    }

    /// The sequence number.
    pub fn sequence(&self) -> u64 {
        self.inner.fields.sequence
    }

    /// Publish time (unix seconds).
    pub fn published(&self) -> u64 {
        self.inner.fields.published
    }

    /// Expiry (unix seconds).
    pub fn expires(&self) -> u64 {
        self.inner.fields.expires
    }

    /// Advertised bandwidth (KB/s).
    pub fn bandwidth_kbps(&self) -> u32 {
        self.inner.fields.bandwidth_kbps
    }

    /// Exit-policy summary.
    pub fn exit(&self) -> &ExitSummary {
        &self.inner.fields.exit
    }

    /// Listen addresses, in canonical order.
    pub fn addresses(&self) -> &[SocketAddr] {
        &self.inner.fields.addresses
    }

    /// Declared family, ascending.
    pub fn family(&self) -> &[RelayId] {
        &self.inner.fields.family
    }

    /// The proof-of-work nonce.
    pub fn pow_nonce(&self) -> PowNonce {
        self.inner.pow_nonce
    }

    /// The signature.
    pub fn signature(&self) -> &Signature {
        &self.inner.signature
    }

    /// The canonical encoding.
    pub fn as_bytes(&self) -> &[u8] {
        &self.inner.bytes
    }

    /// The content hash (Merkle leaf).
    pub fn hash(&self) -> DescriptorHash {
        self.inner.hash
    }

    /// Leading zero bits of the proof-of-work hash (computed once).
    pub(crate) fn work_bits(&self) -> u32 {
        *self.inner.work_bits.get_or_init(|| pow::work_bits(&self.inner.id, self.inner.pow_nonce))
    }

    /// Whether the signature verifies (computed once per decoded value, so
    /// identical shared bytes are never verified twice).
    pub(crate) fn signature_ok(&self) -> bool {
        *self.inner.signature_ok.get_or_init(|| {
            let body_len = self.inner.bytes.len().saturating_sub(SIG_LEN);
            let body = self.inner.bytes.get(..body_len).unwrap_or_default();
            lamina_crypto::sign::verify_with_context(
                &self.inner.id,
                DESCRIPTOR_SIG_CONTEXT,
                body,
                &self.inner.signature,
            )
            .is_ok()
        })
    }
}

impl PartialEq for Descriptor {
    fn eq(&self, other: &Self) -> bool {
        self.inner.bytes == other.inner.bytes
    }
}

impl Eq for Descriptor {}

impl fmt::Debug for Descriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Descriptor")
            .field("id", &self.inner.id)
            .field("sequence", &self.inner.fields.sequence)
            .field("hash", &self.inner.hash)
            .finish_non_exhaustive()
    }
}

/// Map a primitive read failure: those reads only fail for lack of bytes.
fn truncated(err: DecodeError) -> DescriptorError {
    match err {
        DecodeError::Incomplete { deficit } => DescriptorError::Truncated { deficit },
        // The primitive reads used here never report Invalid; if a future
        // codec does, the encoding is still too short for what we read.
        DecodeError::Invalid { .. } => DescriptorError::Truncated { deficit: 0 },
    }
}

/// Parse everything before the proof-of-work nonce.
fn decode_body(r: &mut Reader<'_>) -> Result<(RelayId, DescriptorFields), DescriptorError> {
    let version = r.u8().map_err(truncated)?;
    if version != DESCRIPTOR_VERSION {
        return Err(DescriptorError::UnknownVersion(version));
    }
    let id = RelayId(r.array::<KEY_LEN>().map_err(truncated)?);
    let onion_key = OnionPublicKey(r.array::<KEY_LEN>().map_err(truncated)?);
    let link_key = LinkPublicKey(r.array::<KEY_LEN>().map_err(truncated)?);
    let sequence = r.u64().map_err(truncated)?;
    let published = r.u64().map_err(truncated)?;
    let expires = r.u64().map_err(truncated)?;
    let bandwidth_kbps = r.u32().map_err(truncated)?;
    let flags = r.u8().map_err(truncated)?;
    if flags & !FLAG_EXIT != 0 {
        return Err(DescriptorError::ReservedFlags(flags));
    }
    let addresses = addr::decode_addresses(r)?;
    let exit = exit::decode_exit(r, flags & FLAG_EXIT != 0)?;
    let family = decode_family(r, &id)?;
    let fields =
        DescriptorFields { onion_key, link_key, sequence, published, expires, bandwidth_kbps, exit, addresses, family };
    Ok((id, fields))
}

/// Parse the family list: count, then strictly ascending ids other than `own`.
fn decode_family(r: &mut Reader<'_>, own: &RelayId) -> Result<Vec<RelayId>, DescriptorError> {
    let n = r.u8().map_err(truncated)?;
    if usize::from(n) > MAX_FAMILY {
        return Err(DescriptorError::FamilyCount(n));
    }
    let mut family: Vec<RelayId> = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let member = RelayId(r.array::<KEY_LEN>().map_err(truncated)?);
        if family.last().is_some_and(|prev| *prev >= member) {
            return Err(DescriptorError::FamilyNotCanonical);
        }
        if member == *own {
            return Err(DescriptorError::FamilyContainsSelf);
        }
        family.push(member);
    }
    Ok(family)
}

/// Append the body (everything the signature covers except the nonce is
/// written by the caller after this) for `id` and `fields`, which the
/// builder has already put in canonical order.
fn encode_body(w: &mut Writer, id: &RelayId, fields: &DescriptorFields) {
    w.put_u8(DESCRIPTOR_VERSION);
    w.put_bytes(id.as_bytes());
    w.put_bytes(&fields.onion_key.0);
    w.put_bytes(&fields.link_key.0);
    w.put_u64(fields.sequence);
    w.put_u64(fields.published);
    w.put_u64(fields.expires);
    w.put_u32(fields.bandwidth_kbps);
    w.put_u8(if fields.exit.is_exit() { FLAG_EXIT } else { 0 });
    addr::encode_addresses(w, &fields.addresses);
    exit::encode_exit(w, &fields.exit);
    // The builder capped the family at MAX_FAMILY, so the count fits a u8.
    w.put_u8(u8::try_from(fields.family.len()).unwrap_or(u8::MAX));
    for member in &fields.family {
        w.put_bytes(member.as_bytes());
    }
}

#[cfg(test)]
mod tests;
