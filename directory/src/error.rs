//! Errors of the directory crate (CONTRIBUTING.md P9).
//!
//! Each operation has its own narrow enum, and every enum answers "whose
//! fault is it?" through a `blame()` method returning [`Blame`]:
//!
//! - [`DescriptorError`]: a descriptor failed to parse or verify — the fault
//!   of the peer (or relay) that produced or relayed it;
//! - [`BuildError`]: creating our own descriptor failed — bad local input or
//!   configuration;
//! - [`WireError`]: a gossip message failed to parse — the sending peer;
//! - [`SnapshotError`]: a snapshot did not decode, verify or match its root —
//!   the seed that served it;
//! - [`PeerRejected`]: the peer table refused a connection — local policy,
//!   not an error of anyone, but drivers need the reason;
//! - [`PublishError`]: the driver handed the engine a bad own descriptor —
//!   local;
//! - [`ConfigError`]: a configuration value is out of range.

use std::net::SocketAddr;

use lamina_crypto::keys::RelayId;

/// Who is to blame for a failure, so a driver can choose between dropping a
/// peer, logging a bug and refusing to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The remote party sent something that violates the protocol.
    Peer,
    /// A local invariant or local input was wrong (a bug in Lamina or its
    /// caller).
    Local,
    /// A configuration value is unusable.
    Config,
}

/// Why a descriptor was rejected while decoding or verifying it.
///
/// Every variant is the fault of whoever produced or relayed the descriptor
/// ([`Blame::Peer`]). Decoding variants come first, then verification ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DescriptorError {
    /// The encoding is longer than the hard cap; nothing else was parsed.
    #[error("descriptor of {len} bytes exceeds the {max}-byte cap")]
    Oversized {
        /// Length of the offered encoding.
        len: usize,
        /// The cap ([`crate::descriptor::MAX_DESCRIPTOR_LEN`]).
        max: usize,
    },
    /// The encoding ended before the last field.
    #[error("descriptor truncated: {deficit} more bytes needed at least")]
    Truncated {
        /// How many more bytes the decoder needed at least.
        deficit: usize,
    },
    /// The version byte names a format this code does not know.
    #[error("unknown descriptor version {0:#04x}")]
    UnknownVersion(u8),
    /// A flags byte has a bit set that the format reserves.
    #[error("reserved flag bits set: {0:#04x}")]
    ReservedFlags(u8),
    /// The address count is zero or above the maximum.
    #[error("{0} listen addresses; 1 to 4 are allowed")]
    AddressCount(u8),
    /// An address kind byte is neither IPv4 nor IPv6.
    #[error("unknown address kind {0:#04x}")]
    AddressKind(u8),
    /// An address is unusable: port 0, an unspecified IP, or an IPv6 form of
    /// an IPv4 address (which must be written as IPv4).
    #[error("unusable listen address: {0}")]
    InvalidAddress(&'static str),
    /// Listen addresses are not in strictly ascending encoded order
    /// (unsorted or duplicated).
    #[error("listen addresses not in canonical order")]
    AddressesNotCanonical,
    /// The port-range count is above the maximum.
    #[error("{0} exit port ranges; at most 16 are allowed")]
    PortRangeCount(u8),
    /// A port range starts at port 0 or ends before it starts.
    #[error("invalid exit port range {lo}-{hi}")]
    InvalidPortRange {
        /// First port of the range.
        lo: u16,
        /// Last port of the range.
        hi: u16,
    },
    /// Port ranges are unsorted, overlapping or adjacent (adjacent ranges
    /// must be merged so that every port set has one encoding).
    #[error("exit port ranges not in canonical form")]
    PortRangesNotCanonical,
    /// The exit flag and the port ranges disagree: a non-exit lists ports, or
    /// an exit lists none.
    #[error("exit flag and port ranges disagree")]
    ExitPolicyMismatch,
    /// The family count is above the maximum.
    #[error("{0} family members; at most 8 are allowed")]
    FamilyCount(u8),
    /// Family ids are not strictly ascending (unsorted or duplicated).
    #[error("family not in canonical order")]
    FamilyNotCanonical,
    /// The family names the relay itself.
    #[error("family lists the relay's own id")]
    FamilyContainsSelf,
    /// Bytes follow the signature.
    #[error("trailing bytes after the signature")]
    TrailingBytes,
    /// The expiry is not after the publish time.
    #[error("expiry {expires} not after publish time {published}")]
    ExpiresBeforePublished {
        /// Claimed publish time (unix seconds).
        published: u64,
        /// Claimed expiry (unix seconds).
        expires: u64,
    },
    /// The validity window is longer than the 24-hour maximum.
    #[error("lifetime of {lifetime} s exceeds the maximum of {max} s")]
    LifetimeTooLong {
        /// expires − published, in seconds.
        lifetime: u64,
        /// The maximum ([`crate::descriptor::MAX_LIFETIME_S`]).
        max: u64,
    },
    /// The publish time is further in the future than the allowed clock skew.
    #[error("published at {published}, more than the allowed skew after now ({now})")]
    FutureDated {
        /// Claimed publish time (unix seconds).
        published: u64,
        /// The verifier's clock (unix seconds).
        now: u64,
    },
    /// The descriptor has expired.
    #[error("expired at {expires} (now {now})")]
    Expired {
        /// Claimed expiry (unix seconds).
        expires: u64,
        /// The verifier's clock (unix seconds).
        now: u64,
    },
    /// The proof of work is below the required difficulty.
    #[error("proof of work has {found} leading zero bits, {required} required")]
    InsufficientWork {
        /// Bits required by the verifier.
        required: u8,
        /// Bits the proof has.
        found: u32,
    },
    /// The signature does not verify under the descriptor's identity key
    /// (forged, altered, or signed by another key). Deliberately detail-free.
    #[error("bad descriptor signature")]
    BadSignature,
}

impl DescriptorError {
    /// Whose fault the rejection is: always the peer's.
    pub fn blame(&self) -> Blame {
        Blame::Peer
    }

    /// A short static name of the rejection, for counters and for wrapping
    /// into a [`lamina_proto::codec::DecodeError`].
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Oversized { .. } => "oversized",
            Self::Truncated { .. } => "truncated",
            Self::UnknownVersion(_) => "unknown version",
            Self::ReservedFlags(_) => "reserved flags",
            Self::AddressCount(_) => "address count",
            Self::AddressKind(_) => "address kind",
            Self::InvalidAddress(_) => "invalid address",
            Self::AddressesNotCanonical => "addresses not canonical",
            Self::PortRangeCount(_) => "port range count",
            Self::InvalidPortRange { .. } => "invalid port range",
            Self::PortRangesNotCanonical => "port ranges not canonical",
            Self::ExitPolicyMismatch => "exit policy mismatch",
            Self::FamilyCount(_) => "family count",
            Self::FamilyNotCanonical => "family not canonical",
            Self::FamilyContainsSelf => "family contains self",
            Self::TrailingBytes => "trailing bytes",
            Self::ExpiresBeforePublished { .. } => "expires before published",
            Self::LifetimeTooLong { .. } => "lifetime too long",
            Self::FutureDated { .. } => "future dated",
            Self::Expired { .. } => "expired",
            Self::InsufficientWork { .. } => "insufficient work",
            Self::BadSignature => "bad signature",
        }
    }
}

/// Why our own descriptor could not be built and signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The fields do not form a valid descriptor (too many addresses, a port
    /// range of port 0, a lifetime above 24 h, …). Local input.
    #[error("descriptor fields rejected: {0}")]
    InvalidFields(#[source] DescriptorError),
    /// The requested proof-of-work difficulty is above what creation
    /// supports ([`crate::descriptor::pow::MAX_CREATE_DIFFICULTY`]). Configuration.
    #[error("proof-of-work difficulty {requested} above the maximum {max}")]
    DifficultyTooHigh {
        /// The requested difficulty in bits.
        requested: u8,
        /// The largest supported difficulty.
        max: u8,
    },
    /// No nonce with enough work was found within the bounded search
    /// (2^(D+8) tries: failing is astronomically unlikely unless the search
    /// space was exhausted). Local.
    #[error("no proof of work of {difficulty} bits found in {tries} tries")]
    WorkNotFound {
        /// The difficulty searched for.
        difficulty: u8,
        /// How many nonces were tried.
        tries: u64,
    },
    /// The supplied nonce does not carry the requested work. Local input.
    #[error("supplied proof-of-work nonce has {found} bits, {required} required")]
    WeakNonce {
        /// Bits required.
        required: u8,
        /// Bits the nonce has.
        found: u32,
    },
}

impl BuildError {
    /// Whose fault the failure is.
    pub fn blame(&self) -> Blame {
        match self {
            Self::DifficultyTooHigh { .. } => Blame::Config,
            Self::InvalidFields(_) | Self::WorkNotFound { .. } | Self::WeakNonce { .. } => Blame::Local,
        }
    }
}

/// Why a gossip message could not be decoded. Always the sender's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The message is longer than [`crate::wire::MAX_MESSAGE_LEN`]; nothing
    /// was parsed.
    #[error("message of {len} bytes exceeds the {max}-byte cap")]
    Oversized {
        /// Length of the message.
        len: usize,
        /// The cap.
        max: usize,
    },
    /// The message ended early.
    #[error("message truncated: {deficit} more bytes needed at least")]
    Truncated {
        /// How many more bytes the decoder needed at least.
        deficit: usize,
    },
    /// The type byte is not a known message type.
    #[error("unknown message type {0:#04x}")]
    UnknownType(u8),
    /// A count field is above its protocol maximum (checked before any
    /// allocation).
    #[error("{what}: count {count} above the maximum {max}")]
    CountAboveMax {
        /// Which list.
        what: &'static str,
        /// The claimed count.
        count: usize,
        /// The maximum.
        max: usize,
    },
    /// A field is malformed or not in canonical form.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// What was wrong with it.
        reason: &'static str,
    },
    /// A descriptor carried in the message failed to decode.
    #[error("descriptor {index} of the message: {source}")]
    Descriptor {
        /// Position of the descriptor in the message.
        index: usize,
        /// Why it was rejected.
        #[source]
        source: DescriptorError,
    },
    /// Bytes follow the last field.
    #[error("trailing bytes after the message")]
    TrailingBytes,
}

impl WireError {
    /// Whose fault the failure is: always the sender's.
    pub fn blame(&self) -> Blame {
        Blame::Peer
    }
}

/// Why a snapshot was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot encoding is malformed.
    #[error("malformed snapshot: {0}")]
    Malformed(#[source] WireError),
    /// A descriptor failed to decode or verify.
    #[error("snapshot descriptor {index}: {source}")]
    Descriptor {
        /// Position in the snapshot.
        index: usize,
        /// Why it was rejected.
        #[source]
        source: DescriptorError,
    },
    /// Descriptors are not in strictly ascending relay-id order (unsorted or
    /// two descriptors of one relay).
    #[error("snapshot descriptor {index} out of relay-id order")]
    NotSorted {
        /// Position of the first out-of-order descriptor.
        index: usize,
    },
    /// The recomputed Merkle root differs from the claimed one.
    #[error("snapshot root mismatch")]
    RootMismatch,
    /// Chunks of a snapshot download disagree (epoch, root or total), arrive
    /// out of range, or the snapshot has more descriptors than allowed.
    #[error("inconsistent snapshot chunk: {0}")]
    InconsistentChunk(&'static str),
}

impl SnapshotError {
    /// Whose fault the failure is: the seed's that served the snapshot.
    pub fn blame(&self) -> Blame {
        Blame::Peer
    }
}

/// Why the peer table refused a connection. Local policy, reported so the
/// driver can close the connection and log why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerRejected {
    /// The peer is this relay.
    #[error("peer is ourselves")]
    Ourselves,
    /// The peer's identity is banned (it equivocated).
    #[error("peer {0:?} is banned")]
    Banned(RelayId),
    /// The same peer is already connected.
    #[error("peer already connected")]
    AlreadyConnected,
    /// All slots of this direction are taken.
    #[error("all {direction} slots are taken ({cap})")]
    SlotsFull {
        /// Which kind of slot.
        direction: &'static str,
        /// The cap.
        cap: usize,
    },
    /// The peer's network block (/16 or /32) already holds its share of
    /// slots of this direction.
    #[error("network block of {addr} already holds {cap} {direction} peers")]
    BucketFull {
        /// The refused address.
        addr: SocketAddr,
        /// Which kind of slot.
        direction: &'static str,
        /// The per-block cap.
        cap: usize,
    },
}

impl PeerRejected {
    /// Whose fault it is: local policy.
    pub fn blame(&self) -> Blame {
        Blame::Local
    }
}

/// Why the engine refused our own descriptor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// The descriptor does not verify (signature, work, validity window).
    #[error("own descriptor invalid: {0}")]
    Invalid(#[source] DescriptorError),
    /// The descriptor names another relay.
    #[error("descriptor belongs to {found:?}, not to this relay")]
    NotOurs {
        /// The id in the descriptor.
        found: RelayId,
    },
    /// The sequence number does not grow past the one already published.
    #[error("sequence {offered} not above the published {current}")]
    SequenceNotIncreasing {
        /// The published sequence.
        current: u64,
        /// The offered sequence.
        offered: u64,
    },
}

impl PublishError {
    /// Whose fault it is: the local driver's.
    pub fn blame(&self) -> Blame {
        Blame::Local
    }
}

/// A configuration value is out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {field} {reason}")]
pub struct ConfigError {
    /// The offending field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl ConfigError {
    /// Whose fault it is: the configuration's.
    pub fn blame(&self) -> Blame {
        Blame::Config
    }
}
