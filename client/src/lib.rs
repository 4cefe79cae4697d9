#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod circmgr;
pub mod dir;
pub mod error;
pub mod guard;
pub mod net;
pub mod path;
pub mod pin;
pub mod socks;

pub use circmgr::{Client, ClientConfig, ClientStream, Isolation, PathPlan, PumpOptions};
pub use error::ClientError;
