//! Client errors (CONTRIBUTING.md P9): what failed, and whose fault it was.

use lamina_proto::cell::DestroyReason;
use lamina_proto::error::{CircuitError, LinkError};
use lamina_proto::msg::EndReason;

/// A client-side failure.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Socket failure.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The link handshake failed.
    #[error("{0}")]
    Link(#[from] LinkError),
    /// A circuit operation failed.
    #[error("{0}")]
    Circuit(CircuitError),
    /// The guard link closed.
    #[error("the link to the guard closed")]
    LinkClosed,
    /// The circuit closed.
    #[error("the circuit closed")]
    CircuitClosed,
    /// A circuit failed to build while adding hop `failed_hop` (0 = guard).
    #[error("circuit build failed at hop {failed_hop}: {reason:?}")]
    BuildFailed {
        /// Why the circuit closed.
        reason: DestroyReason,
        /// The hop being added when it failed.
        failed_hop: usize,
    },
    /// The stream was refused or ended.
    #[error("stream ended: {0:?}")]
    StreamEnded(EndReason),
    /// The stream closed under us.
    #[error("the stream closed")]
    StreamClosed,
    /// Something took too long.
    #[error("timed out: {0}")]
    Timeout(&'static str),
    /// No path satisfies the constraints.
    #[error("no usable path: {0}")]
    NoPath(&'static str),
    /// The directory could not be obtained or verified.
    #[error("directory: {0}")]
    Directory(String),
    /// A local bound is reached (circuits per class, CREATE pacing); the
    /// request is refused rather than growing a table (spec §10.2).
    #[error("busy: {0}")]
    Busy(&'static str),
    /// A local bug.
    #[error("internal error: {0}")]
    Internal(&'static str),
}
