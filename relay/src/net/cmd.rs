//! Commands between the relay's tasks that more than one module sends
//! (CONTRIBUTING.md P16: tasks hand work over through bounded queues).
//! Kept apart from the tasks that receive them, so the modules of `net`
//! depend on each other without cycles:
//!
//! ```text
//! cmd <- registry <- setup <- link <- listener
//!                            link <- directory -> prober -> setup
//! ```

use std::net::SocketAddr;

use lamina_crypto::keys::RelayId;
use lamina_directory::{ConnectPurpose, PeerId};
use lamina_proto::circuit::relay::LinkId;

/// What the directory task hears.
#[derive(Debug)]
pub enum DirCmd {
    /// Our keys changed (onion-key rotation, spec §15.6): publish a fresh
    /// descriptor now.
    Republish,
    /// A complete directory message from a link.
    Message {
        /// The link.
        link: LinkId,
        /// The peer relay, if the link is authenticated as one.
        relay: Option<RelayId>,
        /// The remote socket address.
        addr: SocketAddr,
        /// The message bytes.
        bytes: Vec<u8>,
    },
    /// A link to a relay came up.
    LinkUp {
        /// The peer relay.
        relay: RelayId,
        /// The remote socket address.
        addr: SocketAddr,
        /// Whether we dialled it.
        outbound: bool,
    },
    /// A link to a relay went down.
    LinkDown {
        /// The peer relay.
        relay: RelayId,
    },
    /// A reachability probe finished (spec §14.2).
    Probed {
        /// What was probed.
        task: lamina_directory::attest::ProbeTask,
        /// Whether the handshake against the descriptor's link key completed.
        reached: bool,
    },
    /// A dial the engine asked for finished.
    Dialed {
        /// Whom.
        peer: PeerId,
        /// Why.
        purpose: ConnectPurpose,
        /// Whether it worked.
        ok: bool,
    },
}
