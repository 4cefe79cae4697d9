#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod codec;
pub mod cell;
pub mod msg;
pub mod error;
pub mod link;
pub mod circuit;
pub mod redact;
