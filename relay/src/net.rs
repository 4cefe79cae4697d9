//! The relay's tokio drivers (CONTRIBUTING.md P2): they move bytes between sockets
//! and the sans-IO cores of `lamina-proto`, nothing more.
//!
//! - [`listener`] accepts TCP connections (bounded) and runs the responder
//!   link handshake;
//! - [`link`] runs one link: a reader task that owns the link's circuit
//!   table, and a writer task that batches cells into Noise frames;
//! - [`exit`] opens exit streams (resolve, check the policy on every
//!   resolved address, connect with a time-out) and pumps their bytes;
//! - [`registry`] maps link ids and relay ids to the channels of live links;
//! - [`directory`] drives the gossip engine and serves snapshots.

pub mod directory;
pub mod exit;
pub mod link;
pub mod listener;
pub mod prober;
pub mod registry;
