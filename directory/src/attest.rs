//! Reachability attestations (spec §14.2).
//!
//! A relay that connected to another relay's advertised address and
//! completed the link handshake against the link key of its descriptor
//! signs an [`Attestation`]: "I, `attester`, reached `subject` with link key
//! `link_key` at `address` during `epoch`". A descriptor enters the cut only
//! with valid attestations from at least `k` relays in distinct blocks
//! ([`admit_to_cut`]), none in the subject's own block, and only if all of
//! its addresses are publicly routable (unless the network is a local test
//! network, [`AttestParams::test_network`]).
//!
//! The relay-side [`ProbeScheduler`] decides, sans-IO, which peer to probe
//! next; the driver does the TCP connect and handshake and reports back.
//!
//! Encoding (big-endian, [`lamina_proto::codec`]):
//!
//! ```text
//! version     u8  (= 1)
//! attester    [32]  relay id (Ed25519 key) of the signer
//! subject     [32]  relay id attested
//! link_key    [32]  the subject's link key the handshake completed against
//! family      u8  (4 | 6)
//! ip          [4] | [16]
//! port        u16 (non-zero)
//! epoch       u64  epoch number of the probe
//! observed_at u64  unix seconds of the probe
//! signature   [64] Ed25519 by attester over len | "lamina-attestation-v1" | all above
//! ```
//!
//! 184 bytes for IPv4, 196 for IPv6 ([`MAX_ATTESTATION_LEN`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use lamina_crypto::keys::{IdentityKeypair, LinkPublicKey, RelayId, Signature, SIGNATURE_LEN};
use lamina_crypto::sign::{sign_with_context, verify_with_context};
use lamina_proto::codec::{DecodeError, Reader, Writer};
use rand_core::RngCore;

use crate::descriptor::Descriptor;
use crate::gossip::NetBlock;
use crate::quota;

/// Format version of attestations (and of measurements, [`crate::measure`]).
pub const EVIDENCE_VERSION: u8 = 1;
/// Largest attestation encoding (IPv6).
pub const MAX_ATTESTATION_LEN: usize = 196;
/// Signature context of attestations.
pub const ATTESTATION_SIG_CONTEXT: &[u8] = b"lamina-attestation-v1";

/// Why signed evidence (an attestation or a measurement) was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvidenceError {
    /// Longer than the format allows (checked before parsing).
    #[error("evidence too long: {len} bytes, at most {max}")]
    Oversized {
        /// Length offered.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Truncated, trailing bytes or a malformed field.
    #[error("malformed evidence: {0}")]
    Malformed(#[from] DecodeError),
    /// Unknown format version.
    #[error("unknown evidence version {0}")]
    Version(u8),
    /// Address family byte not 4 or 6.
    #[error("unknown address family {0}")]
    AddressFamily(u8),
    /// Port 0, an unspecified or an IPv4-mapped address.
    #[error("unusable address in evidence")]
    Address,
    /// A relay vouching for itself.
    #[error("relay signed evidence about itself")]
    SelfSigned,
    /// The signature does not verify under the signer's id.
    #[error("bad evidence signature")]
    BadSignature,
}

/// Attestation rules (network parameters, spec §14.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttestParams {
    /// Attestations from this many distinct blocks admit a descriptor.
    pub k: usize,
    /// Attestations older than this many epochs do not count.
    pub max_age_epochs: u64,
    /// Whether loopback, private and other non-global addresses are
    /// accepted (local test networks only).
    pub allow_non_routable: bool,
    /// A prober re-tests a peer at most this often (seconds).
    pub probe_interval_s: u64,
    /// Probes one relay runs at once.
    pub max_probes_in_flight: usize,
}

impl AttestParams {
    /// The public network: 3 blocks, 3 epochs, global addresses only, a
    /// peer re-tested every 30 minutes, 4 probes at once.
    pub const fn production() -> Self {
        Self { k: 3, max_age_epochs: 3, allow_non_routable: false, probe_interval_s: 1_800, max_probes_in_flight: 4 }
    }

    /// A local test network (`--test-network`): 2 blocks, loopback
    /// allowed, a peer re-tested every 2 seconds.
    pub const fn test_network() -> Self {
        Self { k: 2, max_age_epochs: 5, allow_non_routable: true, probe_interval_s: 2, max_probes_in_flight: 8 }
    }
}

/// The signed fields of an attestation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttestationBody {
    /// The relay that probed (and signs).
    pub attester: RelayId,
    /// The relay reached.
    pub subject: RelayId,
    /// The subject's link key the handshake completed against.
    pub link_key: LinkPublicKey,
    /// The address reached.
    pub address: SocketAddr,
    /// Epoch number of the probe.
    pub epoch: u64,
    /// Unix seconds of the probe.
    pub observed_at: u64,
}

/// A decoded attestation whose signature has not been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attestation {
    /// The signed fields.
    pub body: AttestationBody,
    /// Ed25519 by `body.attester`.
    pub signature: Signature,
}

/// An attestation whose signature verified. Only [`Attestation::verify`]
/// makes one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attested(Attestation);

impl Attested {
    /// The signed fields.
    pub fn body(&self) -> &AttestationBody {
        &self.0.body
    }

    /// The attestation.
    pub fn attestation(&self) -> &Attestation {
        &self.0
    }
}

/// Append the canonical encoding of `addr` (family, ip, port).
pub(crate) fn put_addr(w: &mut Writer, addr: &SocketAddr) {
    match addr.ip() {
        IpAddr::V4(v4) => {
            w.put_u8(4);
            w.put_bytes(&v4.octets());
        }
        IpAddr::V6(v6) => {
            w.put_u8(6);
            w.put_bytes(&v6.octets());
        }
    }
    w.put_u16(addr.port());
}

/// Read an address written by [`put_addr`], rejecting non-canonical forms.
pub(crate) fn get_addr(r: &mut Reader<'_>) -> Result<SocketAddr, EvidenceError> {
    let ip = match r.u8()? {
        4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
        6 => {
            let v6 = Ipv6Addr::from(r.array::<16>()?);
            if v6.to_ipv4_mapped().is_some() {
                return Err(EvidenceError::Address);
            }
            IpAddr::V6(v6)
        }
        other => return Err(EvidenceError::AddressFamily(other)),
    };
    let port = r.u16()?;
    if port == 0 || ip.is_unspecified() {
        return Err(EvidenceError::Address);
    }
    Ok(SocketAddr::new(ip, port))
}

/// Map a short read inside a complete message to a malformed message.
pub(crate) fn whole(e: EvidenceError) -> EvidenceError {
    match e {
        EvidenceError::Malformed(d) => EvidenceError::Malformed(d.in_container("evidence")),
        other => other,
    }
}

impl AttestationBody {
    /// The signed bytes.
    fn encode_into(&self, w: &mut Writer) {
        w.put_u8(EVIDENCE_VERSION);
        w.put_bytes(&self.attester.0);
        w.put_bytes(&self.subject.0);
        w.put_bytes(&self.link_key.0);
        put_addr(w, &self.address);
        w.put_u64(self.epoch);
        w.put_u64(self.observed_at);
    }
}

impl Attestation {
    /// Sign `body` (its `attester` is replaced by `identity`'s id).
    pub fn sign(identity: &IdentityKeypair, mut body: AttestationBody) -> Self {
        body.attester = identity.relay_id();
        let mut w = Writer::with_capacity(MAX_ATTESTATION_LEN);
        body.encode_into(&mut w);
        let signature = sign_with_context(identity, ATTESTATION_SIG_CONTEXT, w.as_slice());
        Self { body, signature }
    }

    /// The canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(MAX_ATTESTATION_LEN);
        self.body.encode_into(&mut w);
        w.put_bytes(&self.signature.0);
        w.into_vec()
    }

    /// Length of [`Attestation::encode`].
    pub fn encoded_len(&self) -> usize {
        let ip = if self.body.address.is_ipv4() { 4 } else { 16 };
        1 + 32 * 3 + 1 + ip + 2 + 8 + 8 + SIGNATURE_LEN
    }

    /// Parse an attestation (no signature check: [`Attestation::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, EvidenceError> {
        if bytes.len() > MAX_ATTESTATION_LEN {
            return Err(EvidenceError::Oversized { len: bytes.len(), max: MAX_ATTESTATION_LEN });
        }
        Self::decode_fields(&mut Reader::new(bytes)).map_err(whole)
    }

    /// The field decoder behind [`Attestation::decode`].
    fn decode_fields(r: &mut Reader<'_>) -> Result<Self, EvidenceError> {
        let version = r.u8()?;
        if version != EVIDENCE_VERSION {
            return Err(EvidenceError::Version(version));
        }
        let attester = RelayId(r.array::<32>()?);
        let subject = RelayId(r.array::<32>()?);
        let link_key = LinkPublicKey(r.array::<32>()?);
        let address = get_addr(r)?;
        let epoch = r.u64()?;
        let observed_at = r.u64()?;
        let signature = Signature(r.array::<SIGNATURE_LEN>()?);
        r.expect_end("attestation")?;
        if attester == subject {
            return Err(EvidenceError::SelfSigned);
        }
        Ok(Self { body: AttestationBody { attester, subject, link_key, address, epoch, observed_at }, signature })
    }

    /// Check the signature under the attester's id.
    pub fn verify(self) -> Result<Attested, EvidenceError> {
        if self.body.attester == self.body.subject {
            return Err(EvidenceError::SelfSigned);
        }
        let mut w = Writer::with_capacity(MAX_ATTESTATION_LEN);
        self.body.encode_into(&mut w);
        verify_with_context(&self.body.attester, ATTESTATION_SIG_CONTEXT, w.as_slice(), &self.signature)
            .map_err(|_| EvidenceError::BadSignature)?;
        Ok(Attested(self))
    }
}

/// Whether `ip` is publicly routable: not loopback, private (RFC 1918,
/// ULA), shared (100.64/10), link-local, multicast, documentation,
/// benchmarking, reserved, broadcast, or an IPv6 transition prefix that
/// embeds another address (6to4, Teredo, NAT64, IPv4-mapped/compatible).
pub fn is_publicly_routable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4_routable(v4),
        IpAddr::V6(v6) => v6_routable(v6),
    }
}

/// IPv4 part of [`is_publicly_routable`].
fn v4_routable(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    let special = a == 0
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b))
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 192 && b == 0 && c == 2)
        || (a == 192 && b == 88 && c == 99)
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b))
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || a >= 224;
    !special
}

/// IPv6 part of [`is_publicly_routable`]: global unicast 2000::/3 minus
/// documentation, 6to4, Teredo/ORCHID/benchmarking (2001::/23) and NAT64.
fn v6_routable(v6: Ipv6Addr) -> bool {
    let s = v6.segments();
    if s[0] & 0xe000 != 0x2000 {
        return false;
    }
    let special = (s[0] == 0x2001 && s[1] == 0x0db8) || s[0] == 0x2002 || (s[0] == 0x2001 && s[1] < 0x0200);
    !special
}

/// Whether a descriptor address may be used under `params`.
pub fn address_allowed(addr: &SocketAddr, params: &AttestParams) -> bool {
    params.allow_non_routable || is_publicly_routable(addr.ip())
}

/// The distinct blocks that validly attest `d` at `epoch`: attestations
/// about `d`'s id, link key and one of its addresses, at most
/// `max_age_epochs` old and not from the future, from attesters whose block
/// (`block_of`, from the cut or the store) is known and is not one of
/// `d`'s own blocks. One block counts once however many attesters it has.
pub fn attesting_blocks(
    d: &Descriptor,
    attestations: &[Attested],
    epoch: u64,
    params: &AttestParams,
    block_of: impl Fn(&RelayId) -> Option<NetBlock>,
) -> usize {
    let own = quota::blocks(d);
    let link = d.link_key();
    let counted: BTreeSet<NetBlock> = attestations
        .iter()
        .map(Attested::body)
        .filter(|a| a.subject == d.id() && a.link_key.0 == link.0 && a.attester != d.id())
        .filter(|a| a.epoch <= epoch && epoch - a.epoch <= params.max_age_epochs)
        .filter(|a| d.addresses().contains(&a.address))
        .filter_map(|a| block_of(&a.attester))
        .filter(|b| !own.contains(b))
        .collect();
    counted.len()
}

/// The cut rule (spec §14.2): `d` enters the cut of `epoch` only if every
/// address it lists is allowed and at least `k` distinct blocks attest it.
pub fn admit_to_cut(
    d: &Descriptor,
    attestations: &[Attested],
    epoch: u64,
    params: &AttestParams,
    block_of: impl Fn(&RelayId) -> Option<NetBlock>,
) -> bool {
    d.addresses().iter().all(|a| address_allowed(a, params))
        && attesting_blocks(d, attestations, epoch, params, block_of) >= params.k
}

/// The attestation count a descriptor needs in a cut whose candidate set
/// spans `candidate_blocks` (spec §14.2, bootstrap rule):
/// `min(k, number of candidate blocks other than d's own)`. A fresh network
/// of a few relays can form (two relays in two blocks need one attestation
/// each; a lone relay, or relays sharing one block, need none) while a
/// network spanning at least `k` other blocks always asks for `k`. It is a
/// function of the cut's own candidate set, so every relay holding the same
/// cut computes the same number.
pub fn required_attestations(d: &Descriptor, candidate_blocks: &BTreeSet<NetBlock>, params: &AttestParams) -> usize {
    let own = quota::blocks(d);
    let others = candidate_blocks.iter().filter(|b| !own.contains(b)).count();
    params.k.min(others)
}

/// The evidence part of the cut rule over a whole candidate set (spec
/// §14.2): which candidates (aligned with `candidates`) enter the cut of
/// `epoch`. `attestations` are the cut's agreed attestations; an attester
/// counts only with a descriptor among the candidates (its block is read
/// there). Every address must be allowed, and [`attesting_blocks`] must
/// reach [`required_attestations`]. Order-independent.
pub fn admit_set(
    candidates: &[&Descriptor],
    attestations: &[Attested],
    epoch: u64,
    params: &AttestParams,
) -> Vec<bool> {
    let all_blocks: BTreeSet<NetBlock> = candidates.iter().flat_map(|d| quota::blocks(d)).collect();
    candidates
        .iter()
        .zip(attesting_counts(candidates, attestations, epoch, params))
        .map(|(d, have)| {
            d.addresses().iter().all(|a| address_allowed(a, params))
                && have >= required_attestations(d, &all_blocks, params)
        })
        .collect()
}

/// [`attesting_blocks`] of every candidate (aligned with `candidates`),
/// attesters' blocks read from the candidates: the evidence a cut earns
/// each relay (it ranks the store, spec §14.1).
pub fn attesting_counts(
    candidates: &[&Descriptor],
    attestations: &[Attested],
    epoch: u64,
    params: &AttestParams,
) -> Vec<usize> {
    let block_of: BTreeMap<RelayId, NetBlock> =
        candidates.iter().filter_map(|d| quota::blocks(d).first().map(|b| (d.id(), *b))).collect();
    let mut by_subject: BTreeMap<RelayId, Vec<Attested>> = BTreeMap::new();
    for a in attestations {
        by_subject.entry(a.body().subject).or_default().push(a.clone());
    }
    candidates
        .iter()
        .map(|d| {
            let mine = by_subject.get(&d.id()).map_or(&[][..], Vec::as_slice);
            attesting_blocks(d, mine, epoch, params, |id| block_of.get(id).copied())
        })
        .collect()
}

/// A probe the driver should run: connect to `address` and complete the
/// link handshake expecting `link_key`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeTask {
    /// The relay to test.
    pub subject: RelayId,
    /// Where.
    pub address: SocketAddr,
    /// The link key its descriptor names.
    pub link_key: LinkPublicKey,
}

/// What the scheduler remembers per peer.
#[derive(Debug, Clone, Copy)]
struct Target {
    /// First address of its descriptor.
    address: SocketAddr,
    /// Its link key.
    link_key: LinkPublicKey,
    /// When the last probe started.
    last_attempt: Option<u64>,
    /// Consecutive failures (backs the interval off, up to 16×).
    failures: u32,
    /// Whether a probe is running.
    in_flight: bool,
}

/// The relay-side prober (sans-IO): which peer to probe when.
///
/// Never-probed peers first (in random order), then the peer probed
/// longest ago; each peer at most once per `probe_interval_s` (doubled per
/// consecutive failure, up to 16×); at most `max_probes_in_flight` at
/// once; at most `max_targets` peers tracked.
#[derive(Debug)]
pub struct ProbeScheduler {
    /// Parameters.
    params: AttestParams,
    /// Our own id (never probed).
    own: RelayId,
    /// Peers by id.
    targets: BTreeMap<RelayId, Target>,
    /// Most peers tracked.
    max_targets: usize,
}

impl ProbeScheduler {
    /// A scheduler for relay `own`.
    pub fn new(own: RelayId, params: AttestParams, max_targets: usize) -> Self {
        Self { params, own, targets: BTreeMap::new(), max_targets }
    }

    /// Number of peers tracked.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    /// Whether no peer is tracked.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Replace the peer set with the relays of `descriptors` (our own and
    /// disallowed addresses skipped); peers whose address and key are
    /// unchanged keep their history.
    pub fn set_targets<'a>(&mut self, descriptors: impl IntoIterator<Item = &'a Descriptor>) {
        let mut next = BTreeMap::new();
        for d in descriptors {
            let Some(address) = d.addresses().first().copied() else { continue };
            if d.id() == self.own || !address_allowed(&address, &self.params) || next.len() >= self.max_targets {
                continue;
            }
            let link_key = d.link_key();
            let fresh = Target { address, link_key, last_attempt: None, failures: 0, in_flight: false };
            let t = match self.targets.get(&d.id()) {
                Some(old) if old.address == address && old.link_key.0 == link_key.0 => *old,
                _ => fresh,
            };
            next.insert(d.id(), t);
        }
        self.targets = next;
    }

    /// The next probe to start at `now`, if any is due.
    pub fn next_probe(&mut self, now: u64, rng: &mut impl RngCore) -> Option<ProbeTask> {
        let running = self.targets.values().filter(|t| t.in_flight).count();
        if running >= self.params.max_probes_in_flight {
            return None;
        }
        let interval = self.params.probe_interval_s;
        let due = |t: &Target| {
            !t.in_flight && t.last_attempt.is_none_or(|last| now >= last.saturating_add(interval << t.failures.min(4)))
        };
        let never: Vec<RelayId> =
            self.targets.iter().filter(|(_, t)| due(t) && t.last_attempt.is_none()).map(|(id, _)| *id).collect();
        let chosen = if never.is_empty() {
            self.targets.iter().filter(|(_, t)| due(t)).min_by_key(|(_, t)| t.last_attempt).map(|(id, _)| *id)?
        } else {
            let n = u64::try_from(never.len()).unwrap_or(u64::MAX);
            let i = usize::try_from(rng.next_u64() % n).unwrap_or(0);
            *never.get(i)?
        };
        let t = self.targets.get_mut(&chosen)?;
        t.last_attempt = Some(now);
        t.in_flight = true;
        Some(ProbeTask { subject: chosen, address: t.address, link_key: t.link_key })
    }

    /// The driver reports a probe's outcome; on success the signed
    /// attestation to gossip is returned.
    pub fn on_result(
        &mut self,
        task: &ProbeTask,
        reached: bool,
        now: u64,
        epoch: u64,
        identity: &IdentityKeypair,
    ) -> Option<Attestation> {
        let t = self.targets.get_mut(&task.subject)?;
        t.in_flight = false;
        if !reached || t.address != task.address || t.link_key.0 != task.link_key.0 {
            t.failures = t.failures.saturating_add(u32::from(!reached));
            return None;
        }
        t.failures = 0;
        let body = AttestationBody {
            attester: identity.relay_id(),
            subject: task.subject,
            link_key: task.link_key,
            address: task.address,
            epoch,
            observed_at: now,
        };
        Some(Attestation::sign(identity, body))
    }
}

#[cfg(test)]
mod tests;
