//! Measured bandwidth (spec §14.3): bounded active probes by peer relays,
//! signed, aggregated robustly, and the weight formula.
//!
//! Design (after FlashFlow, Traudt, Jansen and Johnson 2021, with peer
//! relays as measurers instead of a trusted team):
//!
//! - *Who measures whom* is not chosen by anyone: for each subject, the
//!   `measurers_per_relay` blocks with the smallest
//!   `SHA-256("lamina-measure-assign" | seed | subject | block)` are
//!   assigned ([`assigned_blocks`]); `seed` is agreed per epoch (the
//!   previous epoch's root), so an attacker cannot pick its own measurers.
//! - *When*: all relays of one block are probed in the same slot of the
//!   epoch ([`measurement_slot`]), so identities sharing a host or an
//!   uplink share their real capacity in the measurement instead of each
//!   showing the whole of it.
//! - *How much*: the measurer sends echo traffic and counts only what
//!   comes back verified, so a target cannot report more than it carried
//!   (FlashFlow bounds a lying target to 1.33× its true capacity).
//! - *Aggregate* ([`aggregate`]): one value per assigned block (the low
//!   median of its measurers), then the low median over blocks; fewer than
//!   `min_blocks` reporting blocks means *unmeasured*.
//! - *Weight* ([`base_weight`]): min(advertised capped at
//!   `max_advertised_kbps`, aggregate), or min(advertised,
//!   `unmeasured_cap_kbps`) when unmeasured, times an age ramp from
//!   `ramp_floor_ppm` to 1 over `ramp_s`.
//!
//! Bound on a lying measurer: the low median of n block values is above
//! every honest value only if at least ⌈(n+1)/2⌉ of them lie, and below
//! every honest value only if at least ⌊(n−1)/2⌋+1 lie: a strict majority of
//! the assigned blocks either way. An attacker holding a fraction f of the
//! blocks holds each assigned slot with probability ≈ f, so with 5 slots
//! and f = 1% a given relay's aggregate is controlled with probability
//! ≈ 10·f³ ≈ 10⁻⁵; and it never exceeds the subject's own claim.
//!
//! Encoding (big-endian, fixed 149 bytes, [`MEASUREMENT_LEN`]):
//!
//! ```text
//! version       u8  (= 1)
//! measurer      [32] relay id of the signer
//! subject       [32] relay id measured
//! epoch         u64  epoch number of the measurement
//! measured_kbps u32  verified echo throughput, KB/s
//! observed_at   u64  unix seconds
//! signature     [64] Ed25519 by measurer over len | "lamina-measurement-v1" | all above
//! ```

use std::collections::{BTreeMap, BTreeSet};

use lamina_crypto::digest::sha256;
use lamina_crypto::keys::{IdentityKeypair, RelayId, Signature, SIGNATURE_LEN};
use lamina_crypto::sign::{sign_with_context, verify_with_context};
use lamina_proto::codec::{Reader, Writer};

use crate::attest::{whole, EvidenceError, EVIDENCE_VERSION};
use crate::gossip::NetBlock;
use crate::quota::PPM;

/// Length of a measurement encoding.
pub const MEASUREMENT_LEN: usize = 149;
/// Signature context of measurements.
pub const MEASUREMENT_SIG_CONTEXT: &[u8] = b"lamina-measurement-v1";

/// Measurement rules (network parameters, spec §14.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasureParams {
    /// Blocks assigned to measure each relay.
    pub measurers_per_relay: usize,
    /// Reporting blocks needed for a relay to count as measured.
    pub min_blocks: usize,
    /// Weight of an unmeasured relay at most (KB/s; Tor uses 20).
    pub unmeasured_cap_kbps: u32,
    /// Advertised bandwidth is clipped to this (KB/s).
    pub max_advertised_kbps: u32,
    /// Measurements older than this many epochs do not count.
    pub max_age_epochs: u64,
    /// Age at which a relay's weight has ramped to full (seconds).
    pub ramp_s: u64,
    /// Fraction of its weight a brand-new relay gets (ppm).
    pub ramp_floor_ppm: u32,
    /// Measurement slots per epoch.
    pub slots: u32,
}

impl MeasureParams {
    /// The public network: 5 assigned blocks, 3 must report, 20 KB/s
    /// unmeasured, claims clipped at 10 Gbit/s, measurements valid 24
    /// epochs, a 3-day ramp from 10%, 60 slots.
    pub const fn production() -> Self {
        Self {
            measurers_per_relay: 5,
            min_blocks: 3,
            unmeasured_cap_kbps: 20,
            max_advertised_kbps: 1_250_000,
            max_age_epochs: 24,
            ramp_s: 3 * 24 * 3600,
            ramp_floor_ppm: 100_000,
            slots: 60,
        }
    }

    /// A local test network: 2 assigned blocks, 1 must report, ramp over
    /// 10 seconds.
    pub const fn test_network() -> Self {
        Self {
            measurers_per_relay: 2,
            min_blocks: 1,
            unmeasured_cap_kbps: 20,
            max_advertised_kbps: 1_250_000,
            max_age_epochs: 10,
            ramp_s: 10,
            ramp_floor_ppm: 100_000,
            slots: 2,
        }
    }
}

/// The signed fields of a measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeasurementBody {
    /// The relay that measured (and signs).
    pub measurer: RelayId,
    /// The relay measured.
    pub subject: RelayId,
    /// Epoch number.
    pub epoch: u64,
    /// Verified echo throughput, KB/s.
    pub measured_kbps: u32,
    /// Unix seconds.
    pub observed_at: u64,
}

/// A decoded measurement whose signature has not been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measurement {
    /// The signed fields.
    pub body: MeasurementBody,
    /// Ed25519 by `body.measurer`.
    pub signature: Signature,
}

/// A measurement whose signature verified (only [`Measurement::verify`]
/// makes one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Measured(Measurement);

impl Measured {
    /// The signed fields.
    pub fn body(&self) -> &MeasurementBody {
        &self.0.body
    }
}

impl MeasurementBody {
    /// The signed bytes.
    fn encode_into(&self, w: &mut Writer) {
        w.put_u8(EVIDENCE_VERSION);
        w.put_bytes(&self.measurer.0);
        w.put_bytes(&self.subject.0);
        w.put_u64(self.epoch);
        w.put_u32(self.measured_kbps);
        w.put_u64(self.observed_at);
    }
}

impl Measurement {
    /// Sign `body` (its `measurer` is replaced by `identity`'s id).
    pub fn sign(identity: &IdentityKeypair, mut body: MeasurementBody) -> Self {
        body.measurer = identity.relay_id();
        let mut w = Writer::with_capacity(MEASUREMENT_LEN);
        body.encode_into(&mut w);
        let signature = sign_with_context(identity, MEASUREMENT_SIG_CONTEXT, w.as_slice());
        Self { body, signature }
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(MEASUREMENT_LEN);
        self.body.encode_into(&mut w);
        w.put_bytes(&self.signature.0);
        w.into_vec()
    }

    /// Parse a measurement (no signature check: [`Measurement::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, EvidenceError> {
        if bytes.len() > MEASUREMENT_LEN {
            return Err(EvidenceError::Oversized { len: bytes.len(), max: MEASUREMENT_LEN });
        }
        Self::decode_fields(&mut Reader::new(bytes)).map_err(whole)
    }

    /// The field decoder behind [`Measurement::decode`].
    fn decode_fields(r: &mut Reader<'_>) -> Result<Self, EvidenceError> {
        let version = r.u8()?;
        if version != EVIDENCE_VERSION {
            return Err(EvidenceError::Version(version));
        }
        let measurer = RelayId(r.array::<32>()?);
        let subject = RelayId(r.array::<32>()?);
        let epoch = r.u64()?;
        let measured_kbps = r.u32()?;
        let observed_at = r.u64()?;
        let signature = Signature(r.array::<SIGNATURE_LEN>()?);
        r.expect_end("measurement")?;
        if measurer == subject {
            return Err(EvidenceError::SelfSigned);
        }
        Ok(Self { body: MeasurementBody { measurer, subject, epoch, measured_kbps, observed_at }, signature })
    }

    /// Check the signature under the measurer's id.
    pub fn verify(self) -> Result<Measured, EvidenceError> {
        if self.body.measurer == self.body.subject {
            return Err(EvidenceError::SelfSigned);
        }
        let mut w = Writer::with_capacity(MEASUREMENT_LEN);
        self.body.encode_into(&mut w);
        verify_with_context(&self.body.measurer, MEASUREMENT_SIG_CONTEXT, w.as_slice(), &self.signature)
            .map_err(|_| EvidenceError::BadSignature)?;
        Ok(Measured(self))
    }
}

/// Canonical bytes of a block for hashing.
fn block_bytes(b: &NetBlock) -> Vec<u8> {
    match b {
        NetBlock::V4(x) => vec![4, x[0], x[1]],
        NetBlock::V6(x) => vec![6, x[0], x[1], x[2], x[3]],
    }
}

/// The blocks assigned to measure `subject` this epoch: the
/// `measurers_per_relay` blocks of `all_blocks` (excluding the subject's
/// own `subject_blocks`) with the smallest assignment hash under `seed`.
pub fn assigned_blocks(
    subject: &RelayId,
    subject_blocks: &[NetBlock],
    seed: &[u8; 32],
    all_blocks: &BTreeSet<NetBlock>,
    params: &MeasureParams,
) -> Vec<NetBlock> {
    let mut ranked: Vec<([u8; 32], NetBlock)> = all_blocks
        .iter()
        .filter(|b| !subject_blocks.contains(b))
        .map(|b| (sha256(&[b"lamina-measure-assign", seed, &subject.0, &block_bytes(b)]), *b))
        .collect();
    ranked.sort();
    ranked.into_iter().take(params.measurers_per_relay).map(|(_, b)| b).collect()
}

/// The slot (0..`slots`) of the epoch in which every relay of `block` is
/// measured, so co-located relays are measured at the same time.
pub fn measurement_slot(block: &NetBlock, seed: &[u8; 32], params: &MeasureParams) -> u32 {
    let h = sha256(&[b"lamina-measure-slot", seed, &block_bytes(block)]);
    let v = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
    v % params.slots.max(1)
}

/// The low median (the lower of the two middle values) of `v`, sorted here.
pub fn low_median(v: &mut [u32]) -> Option<u32> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    v.get((v.len() - 1) / 2).copied()
}

/// The robust aggregate of `measurements` about `subject` at `epoch`
/// (spec §14.3): only measurements from measurers whose block
/// (`block_of`) is in `assigned`, at most `max_age_epochs` old; the newest
/// epoch per measurer; one low-median value per block; the low median over
/// blocks. `None` (unmeasured) when fewer than `min_blocks` blocks report.
pub fn aggregate(
    subject: &RelayId,
    measurements: &[Measured],
    epoch: u64,
    assigned: &[NetBlock],
    block_of: impl Fn(&RelayId) -> Option<NetBlock>,
    params: &MeasureParams,
) -> Option<u32> {
    let mut newest: BTreeMap<RelayId, (u64, u32)> = BTreeMap::new();
    for m in measurements.iter().map(Measured::body) {
        if m.subject != *subject || m.epoch > epoch || epoch - m.epoch > params.max_age_epochs {
            continue;
        }
        let slot = newest.entry(m.measurer).or_insert((m.epoch, m.measured_kbps));
        if m.epoch > slot.0 || (m.epoch == slot.0 && m.measured_kbps < slot.1) {
            *slot = (m.epoch, m.measured_kbps);
        }
    }
    let mut per_block: BTreeMap<NetBlock, Vec<u32>> = BTreeMap::new();
    for (measurer, (_, kbps)) in newest {
        match block_of(&measurer) {
            Some(b) if assigned.contains(&b) => per_block.entry(b).or_default().push(kbps),
            _ => {}
        }
    }
    if per_block.len() < params.min_blocks.max(1) {
        return None;
    }
    let mut values: Vec<u32> = per_block.into_values().filter_map(|mut v| low_median(&mut v)).collect();
    low_median(&mut values)
}

/// A relay's base weight (KB/s, before position weights and block caps):
/// min(advertised clipped to `max_advertised_kbps`, the aggregate), or
/// min(advertised, `unmeasured_cap_kbps`) when unmeasured, ramped by age.
pub fn base_weight(advertised_kbps: u32, aggregate: Option<u32>, age_s: u64, params: &MeasureParams) -> u64 {
    let claimed = advertised_kbps.min(params.max_advertised_kbps);
    let base = u64::from(claimed.min(aggregate.unwrap_or(params.unmeasured_cap_kbps)));
    let ramp = ramp_ppm(age_s, params);
    let scaled = u128::from(base) * u128::from(ramp) / u128::from(PPM);
    u64::try_from(scaled).unwrap_or(u64::MAX)
}

/// The age ramp in ppm: `ramp_floor_ppm` at age 0, linear to 10⁶ at
/// `ramp_s`.
pub fn ramp_ppm(age_s: u64, params: &MeasureParams) -> u32 {
    if params.ramp_s == 0 || age_s >= params.ramp_s {
        return PPM;
    }
    let floor = u128::from(params.ramp_floor_ppm.min(PPM));
    let span = u128::from(PPM) - floor;
    let v = floor + span * u128::from(age_s) / u128::from(params.ramp_s);
    u32::try_from(v).unwrap_or(PPM)
}

#[cfg(test)]
mod tests;
