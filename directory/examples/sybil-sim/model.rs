//! The population and the evaluation of `sybil-sim` (see main.rs).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr};

use lamina_crypto::keys::{IdentityKeypair, LinkPublicKey, OnionPublicKey, RelayId};
use lamina_directory::attest::{admit_to_cut, AttestParams, Attestation, AttestationBody, Attested};
use lamina_directory::flags::{compute_flags, FlagInput, FlagParams, Flags, History};
use lamina_directory::measure::{
    aggregate, assigned_blocks, base_weight, MeasureParams, Measured, Measurement, MeasurementBody,
};
use lamina_directory::quota::{ip_keys, select_per_ip, Candidate, QuotaParams, Standing};
use lamina_directory::weights::{position_weights, PositionWeights, RelayWeightInput};
use lamina_directory::{Descriptor, DescriptorFields, ExitSummary, NetBlock, PowNonce, Verified};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

/// "Now" of the simulation (unix seconds).
const NOW: u64 = 1_750_000_000;
/// Epochs of agreed history simulated (30 days of 1-hour epochs).
const EPOCHS: u64 = 720;
/// Attestations gathered per relay.
const ATTESTERS: usize = 3;

/// Experiment parameters.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// Honest relays.
    pub(crate) honest: usize,
    /// /16s the honest relays are spread over.
    pub(crate) honest_blocks: usize,
    /// Attacker /16s.
    pub(crate) attacker_blocks: usize,
    /// Attacker identities per /16.
    pub(crate) identities: usize,
    /// Attacker's share of the real capacity.
    pub(crate) capacity_share: f64,
    /// Fraction of honest relays that are exits.
    pub(crate) honest_exit_fraction: f64,
    /// Circuits sampled.
    pub(crate) circuits: usize,
    /// Seed of every random choice.
    pub(crate) seed: u64,
    /// Whether the defences of issue 11 apply.
    pub(crate) defences: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            honest: 1_000,
            honest_blocks: 400,
            attacker_blocks: 10,
            identities: 100,
            capacity_share: 0.05,
            honest_exit_fraction: 0.33,
            circuits: 100_000,
            seed: 1,
            defences: true,
        }
    }
}

/// One simulated relay.
struct Relay {
    /// Run by the attacker.
    attacker: bool,
    /// Its identity.
    identity: IdentityKeypair,
    /// Its descriptor.
    desc: Verified<Descriptor>,
    /// Its /16.
    block: NetBlock,
    /// What an honest measurer sees (KB/s): its real capacity; for an
    /// attacker identity, its block's capacity shared by the identities
    /// measured in the same slot.
    capacity: f64,
    /// Advertised bandwidth (KB/s).
    advertised: u32,
    /// Exit policy allows exiting.
    exit: bool,
    /// First epoch it ran.
    start_epoch: u64,
    /// Mean up-session length (epochs).
    up_mean: f64,
    /// Mean down-time length (epochs).
    down_mean: f64,
}

/// The population.
pub(crate) struct World {
    /// All relays, honest first.
    relays: Vec<Relay>,
}

/// The figures of one run.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Relays in the cut (honest, attacker).
    pub(crate) in_cut: (usize, usize),
    /// Relays with a guard weight (honest, attacker).
    pub(crate) guards: (usize, usize),
    /// Relays with an exit weight (honest, attacker).
    pub(crate) exits: (usize, usize),
    /// Attacker's share of the real capacity.
    pub(crate) capacity_share: f64,
    /// Attacker's share of real capacity among relays usable as exits.
    pub(crate) exit_capacity_share: f64,
    /// Attacker's share of real capacity among relays usable as guards.
    pub(crate) guard_capacity_share: f64,
    /// Attacker's share of guard weight.
    pub(crate) guard_share: f64,
    /// Attacker's share of middle weight.
    pub(crate) middle_share: f64,
    /// Attacker's share of exit weight.
    pub(crate) exit_share: f64,
    /// Fraction of sampled circuits with attacker guard and exit.
    pub(crate) circuit_share: f64,
}

/// Position weights, cut membership and flags of every relay.
type Outcome = (Vec<PositionWeights>, Vec<bool>, Vec<Flags>);

/// A uniform f64 in [0, 1).
fn unit(rng: &mut ChaCha20Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// A standard normal deviate (Box–Muller).
fn normal(rng: &mut ChaCha20Rng) -> f64 {
    let u1 = unit(rng).max(1e-12);
    let u2 = unit(rng);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// KB/s as u32, clamped.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped to the u32 range first
fn kbps(x: f64) -> u32 {
    x.clamp(0.0, f64::from(u32::MAX)) as u32
}

/// A uniform index below `n` (n > 0).
fn below(rng: &mut ChaCha20Rng, n: usize) -> usize {
    let n64 = u64::try_from(n).unwrap_or(u64::MAX).max(1);
    usize::try_from(rng.next_u64() % n64).unwrap_or(0)
}

/// A signed, verified descriptor.
fn descriptor(
    identity: &IdentityKeypair,
    addr: SocketAddr,
    bw: u32,
    exit: bool,
) -> Result<Verified<Descriptor>, Box<dyn Error>> {
    let fields = DescriptorFields {
        onion_key: OnionPublicKey([0x11; 32]),
        link_key: LinkPublicKey(identity.relay_id().0),
        sequence: 1,
        published: NOW - 3_600,
        expires: NOW + 36_000,
        bandwidth_kbps: bw,
        exit: if exit { ExitSummary::exit_all_ports() } else { ExitSummary::NotExit },
        addresses: vec![addr],
        family: vec![],
    };
    Ok(Descriptor::sign(identity, fields, PowNonce(0), 0)?.verify(NOW, 0)?)
}

impl World {
    /// Build the population of `c`.
    pub(crate) fn build(c: &Config) -> Result<Self, Box<dyn Error>> {
        let mut rng = ChaCha20Rng::seed_from_u64(c.seed);
        let mut relays = Vec::new();
        let mut honest_total = 0.0;
        for i in 0..c.honest {
            let b = i % c.honest_blocks;
            let (o1, o2) = (11 + u8::try_from(b / 256)?, u8::try_from(b % 256)?);
            let host = u16::try_from(i / c.honest_blocks)?;
            let [h1, h2] = (host + 1).to_be_bytes();
            let addr = SocketAddr::from((Ipv4Addr::new(o1, o2, h1, h2), 9001));
            let capacity = (2_000.0 * normal(&mut rng).exp()).clamp(50.0, 1_000_000.0);
            honest_total += capacity;
            let exit = unit(&mut rng) < c.honest_exit_fraction;
            let identity = IdentityKeypair::generate(&mut rng);
            let desc = descriptor(&identity, addr, kbps(capacity), exit)?;
            let start_epoch = u64::try_from(below(&mut rng, usize::try_from(EPOCHS)?))?;
            // 70% steady relays (10-day sessions, 2-hour outages), 30%
            // flaky ones (1-day sessions, 12-hour outages).
            let (up_mean, down_mean) = if unit(&mut rng) < 0.7 { (240.0, 2.0) } else { (24.0, 12.0) };
            let block = NetBlock::V4([o1, o2]);
            let advertised = kbps(capacity);
            relays.push(Relay {
                attacker: false,
                identity,
                desc,
                block,
                capacity,
                advertised,
                exit,
                start_epoch,
                up_mean,
                down_mean,
            });
        }
        let attacker_total = honest_total * c.capacity_share / (1.0 - c.capacity_share);
        let per_identity = attacker_total / (c.attacker_blocks.max(1) * c.identities.max(1)) as f64;
        for a in 0..c.attacker_blocks {
            for j in 0..c.identities {
                let ip = Ipv4Addr::new(80, u8::try_from(a)?, u8::try_from(j / 4 / 256)?, u8::try_from((j / 4) % 256)?);
                let addr = SocketAddr::from((ip, 9001 + u16::try_from(j % 4)?));
                let identity = IdentityKeypair::generate(&mut rng);
                let desc = descriptor(&identity, addr, u32::MAX, true)?;
                let block = NetBlock::V4([80, u8::try_from(a)?]);
                relays.push(Relay {
                    attacker: true,
                    identity,
                    desc,
                    block,
                    capacity: per_identity,
                    advertised: u32::MAX,
                    exit: true,
                    start_epoch: 0,
                    up_mean: f64::INFINITY,
                    down_mean: 1.0,
                });
            }
        }
        Ok(Self { relays })
    }

    /// Run the experiment.
    pub(crate) fn evaluate(&self, c: &Config) -> Result<Report, Box<dyn Error>> {
        let mut rng = ChaCha20Rng::seed_from_u64(c.seed ^ 0x5eed);
        let (weights, in_cut, flags) = if c.defences { self.defended(&mut rng)? } else { self.undefended() };
        let mut r = Report { in_cut: self.count(&in_cut), ..Report::default() };
        let guard_usable: Vec<bool> = weights.iter().map(|w| w.guard > 0).collect();
        let exit_usable: Vec<bool> = weights.iter().map(|w| w.exit > 0).collect();
        r.guards = self.count(&guard_usable);
        r.exits = self.count(&exit_usable);
        let all = vec![true; self.relays.len()];
        r.capacity_share = self.capacity_share(&all);
        let exit_capable: Vec<bool> = self.relays.iter().zip(&in_cut).map(|(x, k)| x.exit && *k).collect();
        r.exit_capacity_share = self.capacity_share(&exit_capable);
        let guard_capable: Vec<bool> = flags.iter().map(|f| f.guard).collect();
        r.guard_capacity_share = self.capacity_share(&guard_capable);
        r.guard_share = self.weight_share(&weights, |w| w.guard);
        r.middle_share = self.weight_share(&weights, |w| w.middle);
        r.exit_share = self.weight_share(&weights, |w| w.exit);
        r.circuit_share = self.circuits(&weights, c.circuits, &mut rng);
        Ok(r)
    }

    /// (honest, attacker) counts of `mask`.
    fn count(&self, mask: &[bool]) -> (usize, usize) {
        let mut out = (0, 0);
        for (x, m) in self.relays.iter().zip(mask) {
            if *m {
                if x.attacker {
                    out.1 += 1;
                } else {
                    out.0 += 1;
                }
            }
        }
        out
    }

    /// Attacker's share of real capacity among `mask`.
    fn capacity_share(&self, mask: &[bool]) -> f64 {
        let (mut a, mut t) = (0.0, 0.0);
        for (x, m) in self.relays.iter().zip(mask) {
            if *m {
                t += x.capacity;
                if x.attacker {
                    a += x.capacity;
                }
            }
        }
        if t > 0.0 {
            a / t
        } else {
            0.0
        }
    }

    /// Attacker's share of one position's weight.
    fn weight_share(&self, w: &[PositionWeights], pick: impl Fn(&PositionWeights) -> u64) -> f64 {
        let (mut a, mut t) = (0u128, 0u128);
        for (x, pw) in self.relays.iter().zip(w) {
            t += u128::from(pick(pw));
            if x.attacker {
                a += u128::from(pick(pw));
            }
        }
        if t > 0 {
            a as f64 / t as f64
        } else {
            0.0
        }
    }

    /// Today's behaviour: weight = claim everywhere, any relay a guard,
    /// every exit claim an exit.
    fn undefended(&self) -> Outcome {
        let weights = self
            .relays
            .iter()
            .map(|x| {
                let w = u64::from(x.advertised);
                PositionWeights { guard: w, middle: w, exit: if x.exit { w } else { 0 } }
            })
            .collect();
        let flags = vec![Flags { running: true, stable: true, fast: true, guard: true }; self.relays.len()];
        (weights, vec![true; self.relays.len()], flags)
    }

    /// The defended pipeline: quota, cut, measurement, history, flags,
    /// weights.
    fn defended(&self, rng: &mut ChaCha20Rng) -> Result<Outcome, Box<dyn Error>> {
        let quota = QuotaParams::production();
        let cands: Vec<Candidate> = self
            .relays
            .iter()
            .map(|x| Candidate {
                id: x.desc.id(),
                ips: ip_keys(&x.desc),
                standing: Standing { evidence: 0, first_seen: x.start_epoch },
            })
            .collect();
        let kept = select_per_ip(&cands, quota.max_per_ip);
        let in_cut = self.cut(&kept, rng)?;
        let aggregates = self.measure(&in_cut, rng)?;
        let history = self.history(&in_cut, rng);
        let mp = MeasureParams::production();
        let fp = FlagParams::production();
        let base: Vec<u64> = self
            .relays
            .iter()
            .zip(&aggregates)
            .map(|(x, agg)| base_weight(x.advertised, *agg, (EPOCHS - x.start_epoch) * fp.epoch_s, &mp))
            .collect();
        let inputs: Vec<FlagInput> = self
            .relays
            .iter()
            .zip(&in_cut)
            .zip(&base)
            .map(|((x, k), b)| FlagInput { id: x.desc.id(), running: *k, bandwidth_kbps: *b })
            .collect();
        let flags = compute_flags(&inputs, &history, EPOCHS - 1, &fp);
        let wi: Vec<RelayWeightInput> = self
            .relays
            .iter()
            .zip(&base)
            .zip(&flags)
            .map(|((x, b), f)| RelayWeightInput {
                block: x.block,
                base_weight: *b,
                flags: *f,
                exit: x.desc.exit().is_exit(),
            })
            .collect();
        let (weights, _) = position_weights(&wi, &quota);
        Ok((weights, in_cut, flags))
    }

    /// Attestations and the cut rule: each relay is probed by
    /// [`ATTESTERS`] relays of its own side in other blocks (the attacker
    /// vouches for its own relays, which are reachable).
    fn cut(&self, kept: &[bool], rng: &mut ChaCha20Rng) -> Result<Vec<bool>, Box<dyn Error>> {
        let params = AttestParams::production();
        let block_of: HashMap<RelayId, NetBlock> = self.relays.iter().map(|x| (x.desc.id(), x.block)).collect();
        let side = |attacker: bool| -> Vec<usize> {
            (0..self.relays.len()).filter(|i| self.relays[*i].attacker == attacker && kept[*i]).collect()
        };
        let (honest, attacker) = (side(false), side(true));
        let mut out = vec![false; self.relays.len()];
        for (i, x) in self.relays.iter().enumerate() {
            if !kept[i] {
                continue;
            }
            let pool = if x.attacker { &attacker } else { &honest };
            let mut atts: Vec<Attested> = Vec::new();
            let mut blocks_used = BTreeSet::new();
            for _ in 0..64 {
                if atts.len() >= ATTESTERS || pool.is_empty() {
                    break;
                }
                let a = &self.relays[pool[below(rng, pool.len())]];
                if a.block == x.block || !blocks_used.insert(a.block) {
                    continue;
                }
                let body = AttestationBody {
                    attester: a.desc.id(),
                    subject: x.desc.id(),
                    link_key: x.desc.link_key(),
                    address: x.desc.addresses()[0],
                    epoch: EPOCHS - 1,
                    observed_at: NOW,
                };
                atts.push(Attestation::decode(&Attestation::sign(&a.identity, body).encode())?.verify()?);
            }
            out[i] = admit_to_cut(&x.desc, &atts, EPOCHS - 1, &params, |id| block_of.get(id).copied());
        }
        Ok(out)
    }

    /// Measurements by assigned blocks and the robust aggregate.
    fn measure(&self, in_cut: &[bool], rng: &mut ChaCha20Rng) -> Result<Vec<Option<u32>>, Box<dyn Error>> {
        let params = MeasureParams::production();
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        let mut by_block: BTreeMap<NetBlock, usize> = BTreeMap::new();
        for (i, x) in self.relays.iter().enumerate() {
            if in_cut[i] {
                by_block.entry(x.block).or_insert(i);
            }
        }
        let all: BTreeSet<NetBlock> = by_block.keys().copied().collect();
        let block_of: HashMap<RelayId, NetBlock> = self.relays.iter().map(|x| (x.desc.id(), x.block)).collect();
        let mut out = vec![None; self.relays.len()];
        for (i, x) in self.relays.iter().enumerate() {
            if !in_cut[i] {
                continue;
            }
            let assigned = assigned_blocks(&x.desc.id(), &[x.block], &seed, &all, &params);
            let mut ms: Vec<Measured> = Vec::new();
            for b in &assigned {
                let Some(&mi) = by_block.get(b) else { continue };
                let m = &self.relays[mi];
                let value = match (m.attacker, x.attacker) {
                    (true, true) => u32::MAX,
                    (true, false) => 0,
                    (false, true) => kbps(x.capacity),
                    (false, false) => kbps(x.capacity * (0.85 + 0.15 * unit(rng))),
                };
                let body = MeasurementBody {
                    measurer: m.desc.id(),
                    subject: x.desc.id(),
                    epoch: EPOCHS - 1,
                    measured_kbps: value,
                    observed_at: NOW,
                };
                ms.push(Measurement::decode(&Measurement::sign(&m.identity, body).encode())?.verify()?);
            }
            out[i] = aggregate(&x.desc.id(), &ms, EPOCHS - 1, &assigned, |id| block_of.get(id).copied(), &params);
        }
        Ok(out)
    }

    /// 30 days of agreed cuts: honest relays alternate up sessions and
    /// outages (geometric lengths) from their start, the attacker is always
    /// up; the last epoch is the cut.
    fn history(&self, in_cut: &[bool], rng: &mut ChaCha20Rng) -> History {
        let mut h = History::new(FlagParams::production(), 1 << 20);
        let mut up = vec![true; self.relays.len()];
        for e in 0..EPOCHS {
            for (x, u) in self.relays.iter().zip(up.iter_mut()) {
                let flip = if *u { 1.0 / x.up_mean } else { 1.0 / x.down_mean };
                if x.start_epoch < e && unit(rng) < flip {
                    *u = !*u;
                }
            }
            let running: BTreeSet<RelayId> = self
                .relays
                .iter()
                .zip(in_cut)
                .zip(&up)
                .filter(|((x, k), u)| if e == EPOCHS - 1 { **k } else { x.start_epoch <= e && **u })
                .map(|((x, _), _)| x.desc.id())
                .collect();
            h.observe(e, &running);
        }
        h
    }

    /// Sample circuits (guard, middle, exit by their weights, three
    /// distinct /16s) and return the fraction with attacker guard and exit.
    fn circuits(&self, w: &[PositionWeights], n: usize, rng: &mut ChaCha20Rng) -> f64 {
        let guard = Picker::new(w.iter().map(|p| p.guard));
        let middle = Picker::new(w.iter().map(|p| p.middle));
        let exit = Picker::new(w.iter().map(|p| p.exit));
        let (mut both, mut built) = (0usize, 0usize);
        for _ in 0..n {
            let Some(g) = guard.pick(rng) else { break };
            let Some(e) =
                (0..100).filter_map(|_| exit.pick(rng)).find(|e| self.relays[*e].block != self.relays[g].block)
            else {
                continue;
            };
            let blocks = [self.relays[g].block, self.relays[e].block];
            if (0..100).filter_map(|_| middle.pick(rng)).any(|m| !blocks.contains(&self.relays[m].block)) {
                built += 1;
                if self.relays[g].attacker && self.relays[e].attacker {
                    both += 1;
                }
            }
        }
        if built > 0 {
            both as f64 / built as f64
        } else {
            0.0
        }
    }
}

/// Weighted random choice by prefix sums.
struct Picker {
    /// Cumulative weights.
    prefix: Vec<u128>,
}

impl Picker {
    /// A picker over `weights`.
    fn new(weights: impl Iterator<Item = u64>) -> Self {
        let mut acc = 0u128;
        let prefix = weights
            .map(|w| {
                acc += u128::from(w);
                acc
            })
            .collect();
        Self { prefix }
    }

    /// An index chosen with probability proportional to its weight.
    fn pick(&self, rng: &mut ChaCha20Rng) -> Option<usize> {
        let total = *self.prefix.last()?;
        if total == 0 {
            return None;
        }
        let r = (u128::from(rng.next_u64()) * total) >> 64;
        Some(self.prefix.partition_point(|p| *p <= r))
    }
}
