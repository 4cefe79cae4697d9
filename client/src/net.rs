//! The client's tokio drivers: the guard links that carry its circuits and
//! the SOCKS listener in front of them.

pub mod guard;
pub mod socks_listener;
