//! Gossip and snapshot-fetch messages (README "Wire format").
//!
//! Every message is one type byte and a body, at most [`MAX_MESSAGE_LEN`]
//! bytes in all (checked before parsing anything). All lists carry a count
//! that is checked against its maximum before anything is allocated, all
//! lists of ids are strictly ascending (one encoding per message), and
//! trailing bytes are rejected. Integers are big-endian. Framing (the length
//! of each message on a link) belongs to the driver.
//!
//! ```text
//! 0x01 Push            n u8 (1..=16) | n x (len u16 (<= 1024) | descriptor)
//! 0x02 DigestRequest   scope u64 | root [32] | count u32
//! 0x03 Summary         scope u64 | root [32] | count u32 | 256 x bucket hash [16]
//! 0x04 Digest          scope u64 | lo id [32] | hi id [32] | n u16 (<= 512)
//!                      | n x (id [32] | sequence u64 | descriptor hash [32])
//!                      lo <= hi; ids strictly ascending, all in [lo, hi]
//! 0x05 Want            n u8 (1..=64) | n x id [32], strictly ascending
//! 0x06 SnapshotRequest start u16 | max_chunks u8 (1..=16) | epoch u64
//!                      (epoch 0: the newest the relay serves)
//! 0x07 SnapshotChunk   epoch u64 | root [32] | index u16 | total u16
//!                      (index < total) | n u8 (<= 32)
//!                      | n x (len u16 (<= 1024) | descriptor)
//! 0x08 InSync          scope u64 | root [32]
//! 0x09 Unavailable     newest u64 (0: no snapshot served yet)
//! 0x0a Statement       epoch statement [172] (crate::statement), sent
//!                      before the first chunk of a served snapshot
//! 0x20 Attestations    scope u64 | n u8 (1..=64)
//!                      | n x (len u8 (<= 196) | attestation) (spec §14.2)
//! 0x10 StatementConflict  statement [172] | statement [172]: one relay's
//!                      two different statements for one epoch (spec §13.8)
//! ```
//!
//! `scope` names the set an anti-entropy exchange reconciles: [`LIVE`]
//! (`u64::MAX`) is the live store; any other value `e` is the frozen cut of
//! epoch `e` (spec §13.2). A digest entry carries the descriptor hash, so
//! two versions with one sequence are told apart (spec §13.3).
//!
//! Descriptors inside `Push` and `SnapshotChunk` are parsed (never verified)
//! while decoding: one malformed descriptor makes the whole message invalid.
//! Honest relays only relay descriptors they verified, so this only ever
//! drops an attacker's message.
//!
//! The anti-entropy exchange these messages implement is described in the
//! README ("Anti-entropy") and in [`crate::gossip`].

use lamina_crypto::keys::{RelayId, KEY_LEN};
use lamina_proto::codec::{DecodeError, Encode, EncodeError, Reader, Writer};

use crate::attest::{Attestation, MAX_ATTESTATION_LEN};
use crate::descriptor::{Descriptor, DescriptorHash, MAX_DESCRIPTOR_LEN};
use crate::error::WireError;
use crate::snapshot::Epoch;
use crate::statement::{EpochStatement, StatementConflict, STATEMENT_LEN};
use crate::store::merkle::{BucketHash, BUCKETS, BUCKET_HASH_LEN};
use crate::verify::Unverified;

/// Hard cap on one encoded message (64 KiB).
pub const MAX_MESSAGE_LEN: usize = 64 * 1024;
/// Most descriptors in one [`Push`].
pub const MAX_PUSH: usize = 16;
/// Most entries in one [`Digest`].
pub const MAX_DIGEST_ENTRIES: usize = 512;
/// Most ids in one [`Want`].
pub const MAX_WANT: usize = 64;
/// Most descriptors in one [`SnapshotChunk`].
pub const MAX_CHUNK_DESCRIPTORS: usize = 32;
/// Most chunks one [`SnapshotRequest`] may ask for.
pub const MAX_REQUEST_CHUNKS: u8 = 16;

/// Type byte of [`Push`].
const T_PUSH: u8 = 0x01;
/// Type byte of [`DigestRequest`].
const T_DIGEST_REQUEST: u8 = 0x02;
/// Type byte of [`Summary`].
const T_SUMMARY: u8 = 0x03;
/// Type byte of [`Digest`].
const T_DIGEST: u8 = 0x04;
/// Type byte of [`Want`].
const T_WANT: u8 = 0x05;
/// Type byte of [`SnapshotRequest`].
const T_SNAPSHOT_REQUEST: u8 = 0x06;
/// Type byte of [`SnapshotChunk`].
const T_SNAPSHOT_CHUNK: u8 = 0x07;
/// Type byte of [`InSync`].
const T_IN_SYNC: u8 = 0x08;
/// Type byte of [`Message::Unavailable`].
const T_UNAVAILABLE: u8 = 0x09;
/// Type byte of [`Message::Statement`].
const T_STATEMENT: u8 = 0x0a;
/// Type byte of [`Message::Attestations`].
const T_ATTESTATIONS: u8 = 0x20;
/// Most attestations in one [`AttestationBatch`].
pub const MAX_BATCH_ATTESTATIONS: usize = 64;
/// Type byte of [`Message::StatementConflict`] (0x10: 0x0b.. are left to
/// other message families).
const T_STATEMENT_CONFLICT: u8 = 0x10;
/// Length of an encoded digest entry.
const ENTRY_LEN: usize = KEY_LEN + 8 + 32;

/// The anti-entropy scope of the live store.
pub const LIVE: Epoch = Epoch(u64::MAX);

/// A gossip or snapshot-fetch message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Descriptors the sender believes are news to us.
    Push(Push),
    /// Anti-entropy opener: the sender's digest root.
    DigestRequest(DigestRequest),
    /// Anti-entropy reply when roots differ: the 256 bucket hashes.
    Summary(Summary),
    /// The sender's (id, sequence) entries for an id range.
    Digest(Digest),
    /// Descriptors the sender asks us to push.
    Want(Want),
    /// A request for chunks of our current snapshot.
    SnapshotRequest(SnapshotRequest),
    /// One chunk of a snapshot.
    SnapshotChunk(SnapshotChunk),
    /// "Our sets of this scope have the same root": ends an exchange.
    InSync(InSync),
    /// No snapshot of the requested epoch is served; `newest` is the newest
    /// epoch that is (0 if none yet).
    Unavailable {
        /// The newest epoch served, 0 if none.
        newest: u64,
    },
    /// The serving relay's signed statement about the snapshot that follows.
    Statement(EpochStatement),
    /// A proof that one relay signed two different statements for one
    /// epoch (gossiped between relays, served to clients; spec §13.8).
    StatementConflict(Box<StatementConflict>),
    /// Signed reachability attestations (spec §14.2), parsed, not verified.
    Attestations(AttestationBatch),
}

/// `Attestations`: evidence for the live pool ([`LIVE`]) or for the cut of
/// one epoch (sent during a cut exchange whose roots differ).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttestationBatch {
    /// [`LIVE`] (gossip) or the epoch of the cut they are offered to.
    pub scope: Epoch,
    /// 1 to [`MAX_BATCH_ATTESTATIONS`] attestations.
    pub attestations: Vec<Attestation>,
}

/// `InSync`: the answer to a cut `DigestRequest` whose root matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InSync {
    /// The scope compared.
    pub epoch: Epoch,
    /// The common root.
    pub root: [u8; 32],
}

/// `Push`: descriptors (parsed, not verified).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    /// 1 to [`MAX_PUSH`] descriptors.
    pub descriptors: Vec<Unverified<Descriptor>>,
}

/// `DigestRequest`: "my directory has this digest root".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestRequest {
    /// The sender's current epoch.
    pub epoch: Epoch,
    /// The sender's digest root.
    pub root: [u8; 32],
    /// How many descriptors the sender holds.
    pub count: u32,
}

/// `Summary`: the responder's bucket hashes, sent when roots differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// The responder's epoch.
    pub epoch: Epoch,
    /// The responder's digest root.
    pub root: [u8; 32],
    /// How many descriptors the responder holds.
    pub count: u32,
    /// The 256 truncated bucket hashes.
    pub buckets: Box<[BucketHash; BUCKETS]>,
}

/// One digest entry: a relay, the sequence and the hash of the
/// descriptor held for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigestEntry {
    /// The relay.
    pub id: RelayId,
    /// The sequence number held.
    pub sequence: u64,
    /// The hash of the descriptor held.
    pub hash: DescriptorHash,
}

/// `Digest`: every entry the sender holds with `lo <= id <= hi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    /// The sender's epoch.
    pub epoch: Epoch,
    /// First id of the covered range (inclusive).
    pub lo: RelayId,
    /// Last id of the covered range (inclusive).
    pub hi: RelayId,
    /// At most [`MAX_DIGEST_ENTRIES`] entries, ascending by id.
    pub entries: Vec<DigestEntry>,
}

/// `Want`: relays whose descriptors the sender asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    /// 1 to [`MAX_WANT`] ids, ascending.
    pub ids: Vec<RelayId>,
}

/// `SnapshotRequest`: chunks `start..start + max_chunks` of the snapshot
/// of `epoch` (0: the newest served).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotRequest {
    /// First chunk index wanted.
    pub start: u16,
    /// How many chunks (1 to [`MAX_REQUEST_CHUNKS`]).
    pub max_chunks: u8,
    /// The epoch wanted; `Epoch(0)` asks for the newest served.
    pub epoch: Epoch,
}

/// `SnapshotChunk`: part `index` of `total` of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// The snapshot's epoch.
    pub epoch: Epoch,
    /// The snapshot's Merkle root.
    pub root: [u8; 32],
    /// Index of this chunk (< `total`).
    pub index: u16,
    /// Number of chunks of the snapshot (≥ 1).
    pub total: u16,
    /// At most [`MAX_CHUNK_DESCRIPTORS`] descriptors, in snapshot order.
    pub descriptors: Vec<Unverified<Descriptor>>,
}

/// Map a codec failure into a wire error.
pub(crate) fn wire_err(err: DecodeError) -> WireError {
    match err {
        DecodeError::Incomplete { deficit } => WireError::Truncated { deficit },
        DecodeError::Invalid { what, reason } => WireError::Malformed { what, reason },
    }
}

impl Message {
    /// Decode one whole message. Rejects messages above
    /// [`MAX_MESSAGE_LEN`] before parsing, counts above their maxima before
    /// allocating, non-canonical lists and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() > MAX_MESSAGE_LEN {
            return Err(WireError::Oversized { len: bytes.len(), max: MAX_MESSAGE_LEN });
        }
        let mut r = Reader::new(bytes);
        let msg = match r.u8().map_err(wire_err)? {
            T_PUSH => Self::Push(Push { descriptors: decode_descriptors(&mut r, "push", 1, MAX_PUSH)? }),
            T_DIGEST_REQUEST => Self::DigestRequest(decode_digest_request(&mut r)?),
            T_SUMMARY => Self::Summary(decode_summary(&mut r)?),
            T_DIGEST => Self::Digest(decode_digest(&mut r)?),
            T_WANT => Self::Want(decode_want(&mut r)?),
            T_SNAPSHOT_REQUEST => Self::SnapshotRequest(decode_snapshot_request(&mut r)?),
            T_SNAPSHOT_CHUNK => Self::SnapshotChunk(decode_chunk(&mut r)?),
            T_IN_SYNC => Self::InSync(InSync {
                epoch: Epoch(r.u64().map_err(wire_err)?),
                root: r.array::<32>().map_err(wire_err)?,
            }),
            T_UNAVAILABLE => Self::Unavailable { newest: r.u64().map_err(wire_err)? },
            T_STATEMENT => {
                let bytes = r.bytes(STATEMENT_LEN).map_err(wire_err)?;
                Self::Statement(EpochStatement::decode(bytes)?)
            }
            T_ATTESTATIONS => Self::Attestations(decode_attestations(&mut r)?),
            T_STATEMENT_CONFLICT => {
                let first = EpochStatement::decode(r.bytes(STATEMENT_LEN).map_err(wire_err)?)?;
                let second = EpochStatement::decode(r.bytes(STATEMENT_LEN).map_err(wire_err)?)?;
                Self::StatementConflict(Box::new(StatementConflict { first, second }))
            }
            other => return Err(WireError::UnknownType(other)),
        };
        if r.remaining() != 0 {
            return Err(WireError::TrailingBytes);
        }
        Ok(msg)
    }

    /// The encoding as a fresh vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, EncodeError> {
        let mut w = Writer::with_capacity(self.encoded_len());
        self.encode(&mut w)?;
        Ok(w.into_vec())
    }

    /// Length of the encoding, computed without encoding (for rate limits
    /// and byte accounting).
    pub fn encoded_len(&self) -> usize {
        let descs = |ds: &[Unverified<Descriptor>]| ds.iter().map(|d| 2 + d.as_bytes().len()).sum::<usize>();
        1 + match self {
            Self::Push(p) => 1 + descs(&p.descriptors),
            Self::DigestRequest(_) => 8 + 32 + 4,
            Self::Summary(_) => 8 + 32 + 4 + BUCKETS * BUCKET_HASH_LEN,
            Self::Digest(d) => 8 + 2 * KEY_LEN + 2 + d.entries.len() * ENTRY_LEN,
            Self::Want(w) => 1 + w.ids.len() * KEY_LEN,
            Self::SnapshotRequest(_) => 3 + 8,
            Self::SnapshotChunk(c) => 8 + 32 + 2 + 2 + 1 + descs(&c.descriptors),
            Self::InSync(_) => 8 + 32,
            Self::Unavailable { .. } => 8,
            Self::Statement(_) => STATEMENT_LEN,
            Self::Attestations(b) => 8 + 1 + b.attestations.iter().map(|a| 1 + a.encoded_len()).sum::<usize>(),
            Self::StatementConflict(_) => 2 * STATEMENT_LEN,
        }
    }

    /// A short name of the message kind, for counters and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Push(_) => "push",
            Self::DigestRequest(_) => "digest-request",
            Self::Summary(_) => "summary",
            Self::Digest(_) => "digest",
            Self::Want(_) => "want",
            Self::SnapshotRequest(_) => "snapshot-request",
            Self::SnapshotChunk(_) => "snapshot-chunk",
            Self::InSync(_) => "in-sync",
            Self::Unavailable { .. } => "unavailable",
            Self::Statement(_) => "statement",
            Self::Attestations(_) => "attestations",
            Self::StatementConflict(_) => "statement-conflict",
        }
    }
}

impl Encode for Message {
    fn encode(&self, w: &mut Writer) -> Result<(), EncodeError> {
        match self {
            Self::Push(p) => {
                w.put_u8(T_PUSH);
                encode_descriptors(w, "push", &p.descriptors, 1, MAX_PUSH)?;
            }
            Self::DigestRequest(d) => {
                w.put_u8(T_DIGEST_REQUEST);
                w.put_u64(d.epoch.0);
                w.put_bytes(&d.root);
                w.put_u32(d.count);
            }
            Self::Summary(s) => {
                w.put_u8(T_SUMMARY);
                w.put_u64(s.epoch.0);
                w.put_bytes(&s.root);
                w.put_u32(s.count);
                for b in s.buckets.iter() {
                    w.put_bytes(b);
                }
            }
            Self::Digest(d) => encode_digest(w, d)?,
            Self::Want(want) => {
                w.put_u8(T_WANT);
                check_ids_ascending(&want.ids, "want")?;
                let n = count_u8("want", want.ids.len(), 1, MAX_WANT)?;
                w.put_u8(n);
                for id in &want.ids {
                    w.put_bytes(id.as_bytes());
                }
            }
            Self::SnapshotRequest(s) => {
                w.put_u8(T_SNAPSHOT_REQUEST);
                count_u8("snapshot request", usize::from(s.max_chunks), 1, usize::from(MAX_REQUEST_CHUNKS))?;
                w.put_u16(s.start);
                w.put_u8(s.max_chunks);
                w.put_u64(s.epoch.0);
            }
            Self::SnapshotChunk(c) => {
                w.put_u8(T_SNAPSHOT_CHUNK);
                if c.index >= c.total {
                    return Err(EncodeError::Invalid { what: "snapshot chunk", reason: "index not below total" });
                }
                w.put_u64(c.epoch.0);
                w.put_bytes(&c.root);
                w.put_u16(c.index);
                w.put_u16(c.total);
                encode_descriptors(w, "snapshot chunk", &c.descriptors, 0, MAX_CHUNK_DESCRIPTORS)?;
            }
            Self::InSync(i) => {
                w.put_u8(T_IN_SYNC);
                w.put_u64(i.epoch.0);
                w.put_bytes(&i.root);
            }
            Self::Unavailable { newest } => {
                w.put_u8(T_UNAVAILABLE);
                w.put_u64(*newest);
            }
            Self::Statement(s) => {
                w.put_u8(T_STATEMENT);
                w.put_bytes(&s.encode());
            }
            Self::Attestations(b) => encode_attestations(w, b)?,
            Self::StatementConflict(c) => {
                w.put_u8(T_STATEMENT_CONFLICT);
                w.put_bytes(&c.first.encode());
                w.put_bytes(&c.second.encode());
            }
        }
        Ok(())
    }
}

/// Check `min <= n <= max` and narrow to a u8 count.
fn count_u8(what: &'static str, n: usize, min: usize, max: usize) -> Result<u8, EncodeError> {
    if n < min {
        return Err(EncodeError::Invalid { what, reason: "empty list" });
    }
    if n > max {
        return Err(EncodeError::TooLong { what, len: n, max });
    }
    u8::try_from(n).map_err(|_| EncodeError::TooLong { what, len: n, max })
}

/// Refuse to encode an id list that is not strictly ascending.
fn check_ids_ascending(ids: &[RelayId], what: &'static str) -> Result<(), EncodeError> {
    if ids.windows(2).any(|w| w[0] >= w[1]) {
        return Err(EncodeError::Invalid { what, reason: "ids not strictly ascending" });
    }
    Ok(())
}

/// Encode a counted list of length-prefixed descriptors.
fn encode_descriptors(
    w: &mut Writer,
    what: &'static str,
    ds: &[Unverified<Descriptor>],
    min: usize,
    max: usize,
) -> Result<(), EncodeError> {
    w.put_u8(count_u8(what, ds.len(), min, max)?);
    for d in ds {
        w.put_bytes_u16_len("descriptor", d.as_bytes(), MAX_DESCRIPTOR_LEN)?;
    }
    Ok(())
}

/// Encode a `Digest`, refusing non-canonical entry lists.
fn encode_digest(w: &mut Writer, d: &Digest) -> Result<(), EncodeError> {
    if d.lo > d.hi {
        return Err(EncodeError::Invalid { what: "digest", reason: "empty range" });
    }
    if d.entries.len() > MAX_DIGEST_ENTRIES {
        return Err(EncodeError::TooLong { what: "digest", len: d.entries.len(), max: MAX_DIGEST_ENTRIES });
    }
    let in_range = d.entries.iter().all(|e| d.lo <= e.id && e.id <= d.hi);
    if !in_range || d.entries.windows(2).any(|p| p[0].id >= p[1].id) {
        return Err(EncodeError::Invalid { what: "digest", reason: "entries unsorted or outside the range" });
    }
    w.put_u8(T_DIGEST);
    w.put_u64(d.epoch.0);
    w.put_bytes(d.lo.as_bytes());
    w.put_bytes(d.hi.as_bytes());
    w.put_u16(u16::try_from(d.entries.len()).unwrap_or(u16::MAX));
    for e in &d.entries {
        w.put_bytes(e.id.as_bytes());
        w.put_u64(e.sequence);
        w.put_bytes(&e.hash.0);
    }
    Ok(())
}

/// Decode a counted list of length-prefixed descriptors.
fn decode_descriptors(
    r: &mut Reader<'_>,
    what: &'static str,
    min: usize,
    max: usize,
) -> Result<Vec<Unverified<Descriptor>>, WireError> {
    let n = usize::from(r.u8().map_err(wire_err)?);
    if n > max {
        return Err(WireError::CountAboveMax { what, count: n, max });
    }
    if n < min {
        return Err(WireError::Malformed { what, reason: "empty list" });
    }
    let mut out = Vec::with_capacity(n);
    for index in 0..n {
        let len = usize::from(r.u16().map_err(wire_err)?);
        if len > MAX_DESCRIPTOR_LEN {
            let source = crate::error::DescriptorError::Oversized { len, max: MAX_DESCRIPTOR_LEN };
            return Err(WireError::Descriptor { index, source });
        }
        let bytes = r.bytes(len).map_err(wire_err)?;
        out.push(Descriptor::decode(bytes).map_err(|source| WireError::Descriptor { index, source })?);
    }
    Ok(out)
}

/// Decode the body of a `DigestRequest`.
fn decode_digest_request(r: &mut Reader<'_>) -> Result<DigestRequest, WireError> {
    Ok(DigestRequest {
        epoch: Epoch(r.u64().map_err(wire_err)?),
        root: r.array::<32>().map_err(wire_err)?,
        count: r.u32().map_err(wire_err)?,
    })
}

/// Decode the body of a `Summary`.
fn decode_summary(r: &mut Reader<'_>) -> Result<Summary, WireError> {
    let epoch = Epoch(r.u64().map_err(wire_err)?);
    let root = r.array::<32>().map_err(wire_err)?;
    let count = r.u32().map_err(wire_err)?;
    let mut buckets = Box::new([[0u8; BUCKET_HASH_LEN]; BUCKETS]);
    for b in buckets.iter_mut() {
        *b = r.array::<BUCKET_HASH_LEN>().map_err(wire_err)?;
    }
    Ok(Summary { epoch, root, count, buckets })
}

/// Decode the body of a `Digest`.
fn decode_digest(r: &mut Reader<'_>) -> Result<Digest, WireError> {
    let epoch = Epoch(r.u64().map_err(wire_err)?);
    let lo = RelayId(r.array::<KEY_LEN>().map_err(wire_err)?);
    let hi = RelayId(r.array::<KEY_LEN>().map_err(wire_err)?);
    if lo > hi {
        return Err(WireError::Malformed { what: "digest", reason: "empty range" });
    }
    let n = usize::from(r.u16().map_err(wire_err)?);
    if n > MAX_DIGEST_ENTRIES {
        return Err(WireError::CountAboveMax { what: "digest", count: n, max: MAX_DIGEST_ENTRIES });
    }
    let mut entries: Vec<DigestEntry> = Vec::with_capacity(n);
    for _ in 0..n {
        let id = RelayId(r.array::<KEY_LEN>().map_err(wire_err)?);
        let sequence = r.u64().map_err(wire_err)?;
        let hash = DescriptorHash(r.array::<32>().map_err(wire_err)?);
        if id < lo || id > hi {
            return Err(WireError::Malformed { what: "digest", reason: "entry outside the range" });
        }
        if entries.last().is_some_and(|prev| prev.id >= id) {
            return Err(WireError::Malformed { what: "digest", reason: "entries not strictly ascending" });
        }
        entries.push(DigestEntry { id, sequence, hash });
    }
    Ok(Digest { epoch, lo, hi, entries })
}

/// Decode the body of a `Want`.
fn decode_want(r: &mut Reader<'_>) -> Result<Want, WireError> {
    let n = usize::from(r.u8().map_err(wire_err)?);
    if n > MAX_WANT {
        return Err(WireError::CountAboveMax { what: "want", count: n, max: MAX_WANT });
    }
    if n == 0 {
        return Err(WireError::Malformed { what: "want", reason: "empty list" });
    }
    let mut ids: Vec<RelayId> = Vec::with_capacity(n);
    for _ in 0..n {
        let id = RelayId(r.array::<KEY_LEN>().map_err(wire_err)?);
        if ids.last().is_some_and(|prev| *prev >= id) {
            return Err(WireError::Malformed { what: "want", reason: "ids not strictly ascending" });
        }
        ids.push(id);
    }
    Ok(Want { ids })
}

/// Decode the body of a `SnapshotRequest`.
fn decode_snapshot_request(r: &mut Reader<'_>) -> Result<SnapshotRequest, WireError> {
    let start = r.u16().map_err(wire_err)?;
    let max_chunks = r.u8().map_err(wire_err)?;
    if max_chunks == 0 {
        return Err(WireError::Malformed { what: "snapshot request", reason: "zero chunks requested" });
    }
    if max_chunks > MAX_REQUEST_CHUNKS {
        return Err(WireError::CountAboveMax {
            what: "snapshot request",
            count: usize::from(max_chunks),
            max: usize::from(MAX_REQUEST_CHUNKS),
        });
    }
    let epoch = Epoch(r.u64().map_err(wire_err)?);
    Ok(SnapshotRequest { start, max_chunks, epoch })
}

/// Decode the body of a `SnapshotChunk`.
fn decode_chunk(r: &mut Reader<'_>) -> Result<SnapshotChunk, WireError> {
    let epoch = Epoch(r.u64().map_err(wire_err)?);
    let root = r.array::<32>().map_err(wire_err)?;
    let index = r.u16().map_err(wire_err)?;
    let total = r.u16().map_err(wire_err)?;
    if index >= total {
        return Err(WireError::Malformed { what: "snapshot chunk", reason: "index not below total" });
    }
    let descriptors = decode_descriptors(r, "snapshot chunk", 0, MAX_CHUNK_DESCRIPTORS)?;
    Ok(SnapshotChunk { epoch, root, index, total, descriptors })
}

/// Encode an `Attestations` message.
fn encode_attestations(w: &mut Writer, b: &AttestationBatch) -> Result<(), EncodeError> {
    w.put_u8(T_ATTESTATIONS);
    w.put_u64(b.scope.0);
    w.put_u8(count_u8("attestations", b.attestations.len(), 1, MAX_BATCH_ATTESTATIONS)?);
    for a in &b.attestations {
        let bytes = a.encode();
        let len = u8::try_from(bytes.len())
            .map_err(|_| EncodeError::Invalid { what: "attestation", reason: "longer than 255 bytes" })?;
        w.put_u8(len);
        w.put_bytes(&bytes);
    }
    Ok(())
}

/// Decode the body of an `Attestations` message (no signature check).
fn decode_attestations(r: &mut Reader<'_>) -> Result<AttestationBatch, WireError> {
    let scope = Epoch(r.u64().map_err(wire_err)?);
    let n = usize::from(r.u8().map_err(wire_err)?);
    if n == 0 || n > MAX_BATCH_ATTESTATIONS {
        return Err(WireError::Malformed { what: "attestations", reason: "count out of range" });
    }
    let mut attestations = Vec::with_capacity(n);
    for _ in 0..n {
        let len = usize::from(r.u8().map_err(wire_err)?);
        if len > MAX_ATTESTATION_LEN {
            return Err(WireError::Malformed { what: "attestation", reason: "too long" });
        }
        let bytes = r.bytes(len).map_err(wire_err)?;
        let a = Attestation::decode(bytes)
            .map_err(|_| WireError::Malformed { what: "attestation", reason: "invalid encoding" })?;
        attestations.push(a);
    }
    Ok(AttestationBatch { scope, attestations })
}

#[cfg(test)]
mod tests;
