//! The deterministic cut (spec §13.1): which descriptors make up the
//! snapshot of an epoch.
//!
//! ```text
//! T_e      = e × epoch_len                      (start of epoch e)
//! cutoff_e = T_e − Δ                            (Δ = cut_delay_s)
//! end_e    = T_{e+1}
//! snapshot(e) = for every relay id not proven equivocating, the descriptor
//!               with the highest sequence among those with
//!               published ≤ cutoff_e and expires > end_e
//!               and admitted by the cut evidence
//! ```
//!
//! The rule depends only on the descriptors themselves (their signed
//! publish and expiry times), never on when a relay received them or when a
//! client asks, so every honest relay that holds the same descriptors
//! computes the same set. Relays make sure they hold the same descriptors by
//! reconciling the cut itself (anti-entropy keyed by epoch, see
//! [`crate::gossip`]) before serving it.
//!
//! [`CutEvidence`] is the hook through which later rules (reachability
//! attestations, per-network quotas) narrow the cut. Whatever it decides
//! must itself be a function of agreed state, or relays will disagree.

use crate::descriptor::Descriptor;
use crate::snapshot::Epoch;

/// Extra evidence a descriptor needs to enter the cut of an epoch. It must
/// be deterministic: every honest relay must decide the same for the same
/// descriptor and epoch.
pub trait CutEvidence: std::fmt::Debug + Send {
    /// Whether `d` may enter the cut of `epoch` (the time rule already
    /// holds when this is asked).
    fn admits(&self, epoch: Epoch, d: &Descriptor) -> bool;
}

/// The evidence rule of today: none is needed.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvidence;

impl CutEvidence for NoEvidence {
    fn admits(&self, _epoch: Epoch, _d: &Descriptor) -> bool {
        true
    }
}

/// The time part of the cut rule for one network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutRule {
    /// Epoch length in seconds (positive).
    pub epoch_len_s: u64,
    /// Δ: how long before the epoch starts a descriptor must have been
    /// published to be in its cut.
    pub delay_s: u64,
}

impl CutRule {
    /// The start `T_e` of `epoch` (unix seconds).
    pub fn start(&self, epoch: Epoch) -> u64 {
        epoch.0.saturating_mul(self.epoch_len_s)
    }

    /// `cutoff_e = T_e − Δ`: the latest publish time admitted.
    pub fn cutoff(&self, epoch: Epoch) -> u64 {
        self.start(epoch).saturating_sub(self.delay_s)
    }

    /// The end of `epoch` (the start of the next).
    pub fn end(&self, epoch: Epoch) -> u64 {
        epoch.0.saturating_add(1).saturating_mul(self.epoch_len_s)
    }

    /// Whether a descriptor published at `published` and expiring at
    /// `expires` satisfies the time rule of `epoch`.
    pub fn window_admits(&self, epoch: Epoch, published: u64, expires: u64) -> bool {
        published <= self.cutoff(epoch) && expires > self.end(epoch)
    }

    /// The whole rule: time window and evidence.
    pub fn admits(&self, epoch: Epoch, d: &Descriptor, evidence: &dyn CutEvidence) -> bool {
        self.window_admits(epoch, d.published(), d.expires()) && evidence.admits(epoch, d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Published at the cutoff is in; one second later is out; a
    /// descriptor expiring at the end of the epoch is out.
    #[test]
    fn window_edges() {
        let rule = CutRule { epoch_len_s: 10, delay_s: 3 };
        let e = Epoch(100);
        assert_eq!(rule.start(e), 1000);
        assert_eq!(rule.cutoff(e), 997);
        assert!(rule.window_admits(e, 997, 1011));
        assert!(!rule.window_admits(e, 998, 1011));
        assert!(!rule.window_admits(e, 990, 1010), "expires at the end of the epoch");
        assert!(rule.window_admits(e, 0, u64::MAX));
    }
}
