//! Values that must not reach logs at info level and above (CONTRIBUTING.md P12):
//! stream destinations, client addresses, full paths.
//!
//! `Redacted<T>` prints `[redacted]` through `Display` and `Debug` unless
//! the process enabled unsafe logging for debugging
//! ([`set_unsafe_logging`]); drivers wrap sensitive values in it at the
//! logging call site.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether sensitive values are printed (off by default).
static UNSAFE_LOGGING: AtomicBool = AtomicBool::new(false);

/// Allow or forbid printing sensitive values (for local debugging only).
pub fn set_unsafe_logging(enabled: bool) {
    UNSAFE_LOGGING.store(enabled, Ordering::Relaxed);
}

/// A value shown as `[redacted]` in logs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Redacted<T>(pub T);

impl<T: fmt::Display> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if UNSAFE_LOGGING.load(Ordering::Relaxed) {
            self.0.fmt(f)
        } else {
            f.write_str("[redacted]")
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if UNSAFE_LOGGING.load(Ordering::Relaxed) {
            self.0.fmt(f)
        } else {
            f.write_str("[redacted]")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_hides_the_value_by_default() {
        let addr: std::net::SocketAddr = "10.1.2.3:443".parse().unwrap();
        assert_eq!(format!("{}", Redacted(addr)), "[redacted]");
        assert_eq!(format!("{:?}", Redacted(addr)), "[redacted]");
    }
}
