#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod cell;
pub mod circuit;
pub mod codec;
pub mod dirlink;
pub mod error;
pub mod link;
pub mod msg;
pub mod redact;
