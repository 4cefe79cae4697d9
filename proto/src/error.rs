//! Errors of the protocol crate (CONTRIBUTING.md P9). Each says what failed, with
//! context, and whose fault it was ([`Fault`]).

use lamina_crypto::CryptoError;

use crate::cell::CircId;
use crate::codec::{DecodeError, EncodeError};
use crate::msg::StreamId;

/// Whose fault an error is, so drivers choose between closing a circuit or
/// link (peer), logging a bug (local) and retrying (environment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The peer violated the protocol.
    Peer,
    /// A local bug or broken invariant.
    Local,
    /// A resource limit or time-out: nobody broke a rule.
    Environment,
}

/// A failure on a link (spec §3).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// Bytes from the peer did not decode.
    #[error("link: malformed {0}")]
    Decode(#[from] DecodeError),
    /// A Noise or certificate check failed.
    #[error("link: {context}: {source}")]
    Crypto {
        /// What was being checked.
        context: &'static str,
        /// The crypto failure.
        source: CryptoError,
    },
    /// The peer proved a different identity than expected, or none.
    #[error("link: peer is not the relay we dialled")]
    UnexpectedPeer,
    /// The peer did something out of order.
    #[error("link: protocol violation: {0}")]
    Protocol(&'static str),
    /// The handshake was used after it finished or failed.
    #[error("link: handshake state misuse: {0}")]
    State(&'static str),
}

impl LinkError {
    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        match self {
            Self::Decode(_) | Self::UnexpectedPeer | Self::Protocol(_) => Fault::Peer,
            Self::Crypto { source, .. } => match source.kind() {
                lamina_crypto::Blame::Peer => Fault::Peer,
                lamina_crypto::Blame::Local => Fault::Local,
            },
            Self::State(_) => Fault::Local,
        }
    }
}

/// A failure of one circuit (spec §6–§8). It ends that circuit only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CircuitError {
    /// A cell or relay message did not decode.
    #[error("circuit {circ:?}: malformed cell: {source}")]
    Decode {
        /// The circuit.
        circ: CircId,
        /// The decode failure.
        source: DecodeError,
    },
    /// A layer, handshake or receipt failed to authenticate.
    #[error("circuit {circ:?}: {context}: {source}")]
    Crypto {
        /// The circuit.
        circ: CircId,
        /// What was being checked (e.g. "forward layer", "hop 2 handshake").
        context: &'static str,
        /// The crypto failure.
        source: CryptoError,
    },
    /// The peer broke a protocol rule (wrong state, window overrun, …).
    #[error("circuit {circ:?}: protocol violation: {reason}")]
    Protocol {
        /// The circuit.
        circ: CircId,
        /// The rule broken.
        reason: &'static str,
    },
    /// A per-circuit or per-link limit was reached.
    #[error("circuit {circ:?}: limit reached: {what}")]
    Limit {
        /// The circuit.
        circ: CircId,
        /// The limit.
        what: &'static str,
    },
    /// A stream operation named an unknown or closed stream.
    #[error("circuit {circ:?}: no such stream {stream:?}")]
    NoSuchStream {
        /// The circuit.
        circ: CircId,
        /// The stream.
        stream: StreamId,
    },
    /// The circuit is not open (still building, or closed).
    #[error("circuit {circ:?}: not open")]
    NotOpen {
        /// The circuit.
        circ: CircId,
    },
    /// The circuit took too long to build.
    #[error("circuit {circ:?}: build timed out")]
    Timeout {
        /// The circuit.
        circ: CircId,
    },
    /// A message could not be encoded (a local bug or oversized input).
    #[error("circuit {circ:?}: cannot encode: {source}")]
    Encode {
        /// The circuit.
        circ: CircId,
        /// The encode failure.
        source: EncodeError,
    },
}

impl CircuitError {
    /// Whose fault it is.
    pub fn fault(&self) -> Fault {
        match self {
            Self::Decode { .. } | Self::Protocol { .. } => Fault::Peer,
            Self::Crypto { source, .. } => match source.kind() {
                lamina_crypto::Blame::Peer => Fault::Peer,
                lamina_crypto::Blame::Local => Fault::Local,
            },
            Self::Limit { .. } | Self::Timeout { .. } => Fault::Environment,
            Self::NoSuchStream { .. } | Self::NotOpen { .. } | Self::Encode { .. } => Fault::Local,
        }
    }
}
