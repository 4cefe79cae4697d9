//! Circuits: the client's view ([`client::ClientCircuit`]) and a relay's
//! per-link table ([`relay::RelayCircuitTable`]), both sans-IO (spec §6–§8).
//!
//! A circuit is a path of hops built telescopically: CREATE to the first hop,
//! then EXTEND through the circuit one hop at a time. The client holds one
//! layer per hop; each relay holds one. Streams are multiplexed on a circuit
//! and end at its last hop.
//!
//! Both cores follow the same shape (CONTRIBUTING.md P1): inputs through
//! `handle_*` methods, outputs through `poll_transmit` (cells for the link),
//! `poll_event`/`poll_action` (things the driver must do) and
//! `poll_timeout`.

pub mod client;
pub mod congestion;
pub mod flow;
pub mod queue;
pub mod relay;

use lamina_crypto::layer::{forward_capacity, BACKWARD_CAPACITY, BODY_LEN, TAG_LEN};

use crate::msg::HEADER_LEN;

/// Most bytes of stream data one DATA cell carries to the hop at 0-based
/// index `hop` (forward direction).
pub const fn forward_data_capacity(hop: usize) -> usize {
    forward_capacity(hop) - HEADER_LEN
}

/// Most bytes of stream data one backward DATA cell carries.
pub const BACKWARD_DATA_CAPACITY: usize = BACKWARD_CAPACITY - HEADER_LEN;

/// Most streams open at once on one circuit.
pub const MAX_STREAMS_PER_CIRCUIT: usize = 512;

/// A fresh all-zero relay cell body.
pub(crate) fn empty_body() -> [u8; BODY_LEN] {
    [0u8; BODY_LEN]
}

/// The backward plaintext region of a body (where an originating hop writes).
pub(crate) fn backward_region(body: &mut [u8; BODY_LEN]) -> &mut [u8] {
    &mut body[TAG_LEN..]
}
