//! Counters for metrics (a relay exports them in the Prometheus format).

use crate::error::DescriptorError;

/// Descriptors rejected, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejections {
    /// Encoding above the 1 KiB cap.
    pub oversized: u64,
    /// Any other decoding failure (truncated, non-canonical, bad flags…).
    pub malformed: u64,
    /// Signature did not verify (forged, altered, or signed by another key).
    pub bad_signature: u64,
    /// Proof of work below the configured difficulty.
    pub insufficient_work: u64,
    /// Expired.
    pub expired: u64,
    /// Publish time too far in the future.
    pub future_dated: u64,
    /// Validity window longer than 24 h or empty.
    pub bad_lifetime: u64,
    /// Older than the held (or remembered) sequence: a replay.
    pub stale: u64,
    /// Same sequence, different bytes: the relay was banned.
    pub equivocation: u64,
    /// From a banned relay.
    pub banned: u64,
    /// A new relay while the store is full.
    pub store_full: u64,
    /// A copy of our own descriptor from a peer (only we publish ours).
    pub own_id: u64,
}

impl Rejections {
    /// Count a decoding or verification failure.
    pub(crate) fn record(&mut self, err: &DescriptorError) {
        let counter = match err {
            DescriptorError::Oversized { .. } => &mut self.oversized,
            DescriptorError::BadSignature => &mut self.bad_signature,
            DescriptorError::InsufficientWork { .. } => &mut self.insufficient_work,
            DescriptorError::Expired { .. } => &mut self.expired,
            DescriptorError::FutureDated { .. } => &mut self.future_dated,
            DescriptorError::LifetimeTooLong { .. } | DescriptorError::ExpiresBeforePublished { .. } => {
                &mut self.bad_lifetime
            }
            _ => &mut self.malformed,
        };
        *counter += 1;
    }

    /// All rejections.
    pub fn total(&self) -> u64 {
        self.oversized
            + self.malformed
            + self.bad_signature
            + self.insufficient_work
            + self.expired
            + self.future_dated
            + self.bad_lifetime
            + self.stale
            + self.equivocation
            + self.banned
            + self.store_full
            + self.own_id
    }
}

/// Engine counters. All monotonic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages handed to the engine from connected peers.
    pub messages_received: u64,
    /// Their encoded bytes.
    pub bytes_received: u64,
    /// Messages handed out by `poll_transmit`.
    pub messages_sent: u64,
    /// Their encoded bytes.
    pub bytes_sent: u64,
    /// Messages that failed to decode (whole message dropped).
    pub malformed_messages: u64,
    /// Messages dropped by the per-peer rate limits.
    pub rate_limited: u64,
    /// Messages from a peer that is not connected (dropped).
    pub unknown_peer: u64,
    /// Anti-entropy replies we did not ask for (dropped).
    pub unsolicited: u64,
    /// Descriptors offered to the engine (pushed, answered, imported).
    pub descriptors_received: u64,
    /// Descriptors accepted into the store as news.
    pub accepted: u64,
    /// Copies of descriptors we had already processed.
    pub duplicates: u64,
    /// Descriptor copies queued to peers by push forwarding.
    pub forwarded: u64,
    /// Rejected descriptors by reason.
    pub rejected: Rejections,
    /// Queued messages dropped because a peer's queue was full.
    pub queue_dropped: u64,
    /// Events dropped because the event queue was full.
    pub events_dropped: u64,
    /// Anti-entropy rounds we started.
    pub ae_rounds: u64,
    /// Digest requests answered "in sync" (roots equal).
    pub ae_in_sync: u64,
    /// Digest requests refused because too many exchanges were open.
    pub ae_refused: u64,
    /// `Digest` messages sent.
    pub digests_sent: u64,
    /// Relay ids asked for with `Want`.
    pub wants_sent: u64,
    /// Cut exchanges (anti-entropy of an epoch's cut) started.
    pub cut_exchanges: u64,
    /// Cuts frozen (served from then on).
    pub cuts_frozen: u64,
    /// Relays banned on an equivocation proof (found or shown to us).
    pub equivocations_proven: u64,
    /// Descriptors pushed in answer to `Want` or `Digest`.
    pub repairs_sent: u64,
    /// Descriptors expired out of the store.
    pub expired: u64,
    /// Attestations verified and new to the pool or a cut (spec §14.2).
    pub attestations_accepted: u64,
    /// Attestations refused (bad signature, unknown attester, bounds).
    pub attestations_rejected: u64,
    /// Descriptors a cut left out for want of attestations (at freeze).
    pub cut_unattested: u64,
    /// Epoch statements kept and forwarded (ours included; spec §13.8).
    pub statements_gossiped: u64,
    /// Statement-conflict proofs learned (found here or received).
    pub statement_conflicts: u64,
    /// Statements and proofs dropped: bad signature, epoch not held.
    pub bad_statements: u64,
}
