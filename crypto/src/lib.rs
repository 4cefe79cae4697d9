#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod digest;
pub mod error;
pub mod handshake;
pub mod kdf;
pub mod keys;
pub mod layer;
pub mod noise;
pub mod padding;
pub mod sign;

pub use error::{Blame, CryptoError};
