//! The exit-policy summary of a descriptor.
//!
//! A descriptor does not carry a relay's full exit policy (address rules are
//! checked by the exit itself after name resolution, spec §15.1). It
//! carries what a client needs to pick a plausible exit: a flag "exit or
//! not" and up to [`MAX_PORT_RANGES`] accepted destination port ranges.
//!
//! ```text
//! flags bit 0      exit
//! n_ports u8       0 if not an exit; 1..=16 if an exit
//! n_ports x (lo u16, hi u16)
//!                  1 <= lo <= hi, ascending, disjoint, not adjacent
//!                  (hi + 1 < next lo), so each port set has one encoding
//! ```

use lamina_proto::codec::{Reader, Writer};

use super::{truncated, MAX_PORT_RANGES};
use crate::error::DescriptorError;

/// An inclusive range of destination ports an exit accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// First accepted port (≥ 1).
    pub lo: u16,
    /// Last accepted port (≥ `lo`).
    pub hi: u16,
}

impl PortRange {
    /// The range `lo..=hi`.
    pub fn new(lo: u16, hi: u16) -> Self {
        Self { lo, hi }
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }

    /// Check 1 ≤ lo ≤ hi.
    fn check(&self) -> Result<(), DescriptorError> {
        if self.lo == 0 || self.lo > self.hi {
            return Err(DescriptorError::InvalidPortRange { lo: self.lo, hi: self.hi });
        }
        Ok(())
    }
}

/// Whether a relay exits, and to which ports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ExitSummary {
    /// Not an exit: never opens streams to the internet.
    #[default]
    NotExit,
    /// An exit accepting the listed port ranges (canonical: ascending,
    /// disjoint, non-adjacent; 1 to [`MAX_PORT_RANGES`] of them).
    Exit {
        /// Accepted ranges.
        ports: Vec<PortRange>,
    },
}

impl ExitSummary {
    /// An exit summary from any list of ranges: sorts and merges overlapping
    /// and adjacent ranges into canonical form, then checks the count.
    pub fn exit(mut ranges: Vec<PortRange>) -> Result<Self, DescriptorError> {
        for range in &ranges {
            range.check()?;
        }
        ranges.sort();
        let mut merged: Vec<PortRange> = Vec::with_capacity(ranges.len());
        for range in ranges {
            match merged.last_mut() {
                Some(last) if u32::from(range.lo) <= u32::from(last.hi) + 1 => {
                    last.hi = last.hi.max(range.hi);
                }
                _ => merged.push(range),
            }
        }
        if merged.is_empty() {
            return Err(DescriptorError::ExitPolicyMismatch);
        }
        if merged.len() > MAX_PORT_RANGES {
            return Err(DescriptorError::PortRangeCount(u8::try_from(merged.len()).unwrap_or(u8::MAX)));
        }
        Ok(Self::Exit { ports: merged })
    }

    /// An exit accepting every port.
    pub fn exit_all_ports() -> Self {
        Self::Exit { ports: vec![PortRange::new(1, u16::MAX)] }
    }

    /// Whether the relay is an exit.
    pub fn is_exit(&self) -> bool {
        matches!(self, Self::Exit { .. })
    }

    /// The accepted port ranges (empty for a non-exit).
    pub fn ports(&self) -> &[PortRange] {
        match self {
            Self::NotExit => &[],
            Self::Exit { ports } => ports,
        }
    }

    /// Whether the relay would exit to `port`.
    pub fn allows_port(&self, port: u16) -> bool {
        self.ports().iter().any(|r| r.contains(port))
    }
}

/// Decode the port-range list given the exit flag; enforce canonical form.
pub(crate) fn decode_exit(r: &mut Reader<'_>, exit_flag: bool) -> Result<ExitSummary, DescriptorError> {
    let n = r.u8().map_err(truncated)?;
    if usize::from(n) > MAX_PORT_RANGES {
        return Err(DescriptorError::PortRangeCount(n));
    }
    if exit_flag != (n > 0) {
        return Err(DescriptorError::ExitPolicyMismatch);
    }
    let mut ports: Vec<PortRange> = Vec::with_capacity(usize::from(n));
    for _ in 0..n {
        let range = PortRange { lo: r.u16().map_err(truncated)?, hi: r.u16().map_err(truncated)? };
        range.check()?;
        if ports.last().is_some_and(|prev| u32::from(prev.hi) + 1 >= u32::from(range.lo)) {
            return Err(DescriptorError::PortRangesNotCanonical);
        }
        ports.push(range);
    }
    Ok(if exit_flag { ExitSummary::Exit { ports } } else { ExitSummary::NotExit })
}

/// Encode the port-range count and ranges (the flag bit is written by the
/// caller). The summary is canonical by construction.
pub(crate) fn encode_exit(w: &mut Writer, exit: &ExitSummary) {
    let ports = exit.ports();
    w.put_u8(u8::try_from(ports.len()).unwrap_or(u8::MAX));
    for range in ports {
        w.put_u16(range.lo);
        w.put_u16(range.hi);
    }
}

/// Check a summary built by hand (the enum fields are public) before
/// encoding it.
pub(crate) fn check_summary(exit: &ExitSummary) -> Result<(), DescriptorError> {
    match exit {
        ExitSummary::NotExit => Ok(()),
        ExitSummary::Exit { ports } => {
            let normal = ExitSummary::exit(ports.clone())?;
            if normal.ports() == ports.as_slice() {
                Ok(())
            } else {
                Err(DescriptorError::PortRangesNotCanonical)
            }
        }
    }
}
