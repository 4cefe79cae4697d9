#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod cut;
pub mod descriptor;
pub mod error;
pub mod gossip;
pub mod seed;
pub mod snapshot;
pub mod store;
#[cfg(test)]
mod testing;
pub mod verify;
pub mod wire;

pub use cut::{CutEvidence, CutRule, NoEvidence};
pub use descriptor::{Descriptor, DescriptorFields, DescriptorHash, ExitSummary, PortRange, PowNonce};
pub use error::{
    Blame, BuildError, ConfigError, DescriptorError, PeerRejected, PublishError, SnapshotError, WireError,
};
pub use gossip::{
    ConnectPurpose, Direction, Event, GossipConfig, GossipEngine, ImportReport, NetBlock, Now, PeerId, Stats,
};
pub use seed::Seed;
pub use snapshot::{Epoch, Snapshot, SnapshotAssembler, VerifiedSnapshot};
pub use store::{EquivocationProof, InsertOutcome, Store, StoreConfig};
pub use verify::{Unverified, Verified};
pub use wire::Message;
