//! The epoch scenario (`--epochs K`, spec §13): every engine cuts,
//! reconciles, freezes and signs epochs while relays churn, a fraction
//! drops all gossip and equivocators split descriptors into two halves;
//! simulated clients bootstrap from three seeds.
//!
//! Churn per epoch of length L: every L/30 one random live relay leaves and
//! the one that left before comes back (a restart with its state; it
//! republishes); `n/100` joiners come online spread over the run; around
//! each cutoff `T_e − Δ` five relays republish (a descriptor in flight at
//! the boundary). Equivocators: each signs two descriptors with one
//! sequence and pushes each into 3 relays of one half, spread over the run.
//!
//! Figures, over the epochs that started after the warm-up and are frozen
//! everywhere by the end:
//!
//! - `root_agreement`: for each epoch, the fraction of honest live relays
//!   serving the majority root among those that serve the epoch at all
//!   (worst epoch); `coverage`: the fraction that serve it.
//! - `client_bootstrap`: the fraction of simulated clients (three distinct
//!   seeds drawn from honest live relays) that end on the majority root of
//!   the epoch they compare (client rule of spec §13.4: newest epochs, then
//!   the oldest of them; a strict majority of the three seeds).
//! - `client_bootstrap_any`: the same with seeds drawn from all relays,
//!   droppers and relays that are down included (they do not answer).

use std::collections::{BTreeMap, HashMap};
use std::error::Error;

use lamina_crypto::keys::RelayId;
use lamina_directory::snapshot::Epoch;
use rand_chacha::ChaCha20Rng;
use rand_core::RngCore;

use crate::sim::{Sim, T0};

/// Settings of the epoch scenario.
pub(crate) struct EpochRun {
    /// Epochs to run after the warm-up.
    pub(crate) epochs: u64,
    /// Epoch length (s).
    pub(crate) epoch_len_s: u64,
    /// Equivocating identities.
    pub(crate) equivocators: usize,
    /// Simulated clients.
    pub(crate) clients: usize,
    /// Fraction of relays that drop all gossip.
    pub(crate) drop_fraction: f64,
    /// Joiners (the last nodes of the simulation).
    pub(crate) joiners: usize,
}

/// What the run measured.
pub(crate) struct EpochFigures {
    /// Worst-epoch fraction of serving honest relays on the majority root.
    pub(crate) root_agreement: f64,
    /// Worst-epoch fraction of honest live relays serving the epoch.
    pub(crate) coverage: f64,
    /// Clients with honest seeds that ended on the majority root.
    pub(crate) client_bootstrap: f64,
    /// Clients with seeds from all relays that ended on it.
    pub(crate) client_bootstrap_any: f64,
    /// Epochs measured.
    pub(crate) measured: usize,
    /// Equivocators banned by every honest live relay.
    pub(crate) banned_everywhere: usize,
    /// Gossip bytes per relay per second over the run.
    pub(crate) bytes_per_relay_per_s: f64,
}

/// A uniform index below `n`.
fn pick(rng: &mut ChaCha20Rng, n: usize) -> usize {
    usize::try_from(rng.next_u64() % (n.max(1) as u64)).unwrap_or(0)
}

// The dropper count is in 0..n (fraction below 1).
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
/// Run the scenario on a warmed-up simulation.
pub(crate) fn run(sim: &mut Sim, p: &EpochRun, rng: &mut ChaCha20Rng) -> Result<EpochFigures, Box<dyn Error>> {
    let n = sim.len();
    let founders = n - p.joiners;
    let mut order: Vec<usize> = (0..founders).collect();
    for i in (1..founders).rev() {
        order.swap(i, pick(rng, i + 1));
    }
    let droppers = ((founders as f64) * p.drop_fraction).floor() as usize;
    let mut honest = vec![true; n];
    for &i in order.iter().take(droppers) {
        honest[i] = false;
        sim.set_dropper(i);
    }
    let len_ms = p.epoch_len_s * 1000;
    let start_ms = sim.now_ms();
    let end_ms = start_ms + p.epochs * len_ms;
    let delta = p.epoch_len_s / 4;
    let step_ms = (len_ms / 30).max(1000);
    let mut down: Option<usize> = None;
    let mut joined = 0;
    let mut liars: Vec<RelayId> = Vec::new();
    let mut boundaries_done: Vec<u64> = Vec::new();
    sim.counting = true;
    let bytes0 = sim.bytes;
    let mut t = start_ms;
    while t < end_ms {
        t += step_ms;
        sim.run_until(t, |_| false);
        // A restart: the relay that left comes back, another leaves.
        if let Some(i) = down.take() {
            sim.set_down(i, false)?;
        }
        let live: Vec<usize> = (0..founders).filter(|i| honest[*i]).collect();
        let leaving = live[pick(rng, live.len())];
        sim.set_down(leaving, true)?;
        down = Some(leaving);
        // Joiners spread over the run.
        let due = usize::try_from((t - start_ms) * p.joiners as u64 / (end_ms - start_ms)).unwrap_or(p.joiners);
        while joined < due.min(p.joiners) {
            let from = live[pick(rng, live.len())];
            sim.join(founders + joined, from)?;
            joined += 1;
        }
        // Equivocators spread over the run.
        let due = usize::try_from((t - start_ms) * p.equivocators as u64 / (end_ms - start_ms)).unwrap_or(0);
        while liars.len() < due.min(p.equivocators) {
            liars.push(sim.equivocate(3, rng)?);
        }
        // Republish bursts around each cutoff.
        let unix = T0 + t / 1000;
        let next_epoch = unix / p.epoch_len_s + 1;
        let cutoff = next_epoch * p.epoch_len_s - delta;
        if unix + step_ms / 1000 >= cutoff && !boundaries_done.contains(&next_epoch) {
            boundaries_done.push(next_epoch);
            for _ in 0..5 {
                let i = live[pick(rng, live.len())];
                if Some(i) != down {
                    sim.republish(i)?;
                }
            }
        }
    }
    if let Some(i) = down.take() {
        sim.set_down(i, false)?;
    }
    // Let the last epoch freeze everywhere.
    let settle = sim.now_ms() + len_ms / 2;
    sim.run_until(settle, |_| false);
    sim.counting = false;
    let elapsed_s = (sim.now_ms() - start_ms) as f64 / 1000.0;
    let bytes_per_relay_per_s = (sim.bytes - bytes0) as f64 / n as f64 / elapsed_s;
    let mut f = measure(sim, p, &honest, &liars, start_ms, rng);
    f.bytes_per_relay_per_s = bytes_per_relay_per_s;
    Ok(f)
}

// Counts are far below 2^52.
#[allow(clippy::cast_precision_loss)]
/// The figures at the end of the run.
fn measure(
    sim: &Sim,
    p: &EpochRun,
    honest: &[bool],
    liars: &[RelayId],
    start_ms: u64,
    rng: &mut ChaCha20Rng,
) -> EpochFigures {
    let n = sim.len();
    let live: Vec<usize> = (0..n).filter(|i| honest[*i] && !sim.is_dropper(*i)).collect();
    let first = Epoch((T0 + start_ms / 1000) / p.epoch_len_s + 1);
    let last = Epoch((T0 + sim.now_ms() / 1000) / p.epoch_len_s);
    let mut majority: BTreeMap<Epoch, [u8; 32]> = BTreeMap::new();
    let (mut worst, mut worst_cov) = (1.0_f64, 1.0_f64);
    for e in first.0..=last.0 {
        let mut counts: HashMap<[u8; 32], usize> = HashMap::new();
        for &i in &live {
            if let Some((_, root, _)) = sim.served(i, Some(Epoch(e))) {
                *counts.entry(root).or_default() += 1;
            }
        }
        let serving: usize = counts.values().sum();
        let Some((root, top)) = counts.iter().max_by_key(|(_, c)| **c).map(|(r, c)| (*r, *c)) else { continue };
        crate::say(&format!(
            "epoch {e}: {serving}/{} honest live relays serve it, {} roots, majority {top}",
            live.len(),
            counts.len()
        ));
        majority.insert(Epoch(e), root);
        worst = worst.min(top as f64 / serving as f64);
        worst_cov = worst_cov.min(serving as f64 / live.len() as f64);
    }
    let banned_everywhere = liars.iter().filter(|id| live.iter().all(|i| sim.banned(*i, id))).count();
    let all: Vec<usize> = (0..n).collect();
    let client_bootstrap = clients(sim, &live, &live, &majority, p.clients, rng);
    let client_bootstrap_any = clients(sim, &all, &live, &majority, p.clients, rng);
    EpochFigures {
        root_agreement: worst,
        coverage: worst_cov,
        client_bootstrap,
        client_bootstrap_any,
        measured: majority.len(),
        banned_everywhere,
        bytes_per_relay_per_s: 0.0,
    }
}
// Counts are far below 2^52.
#[allow(clippy::cast_precision_loss)]
/// The fraction of `count` clients, each with three distinct seeds drawn
/// from `pool`, that end on the majority root (only relays in `answering`
/// answer).
fn clients(
    sim: &Sim,
    pool: &[usize],
    answering: &[usize],
    majority: &BTreeMap<Epoch, [u8; 32]>,
    count: usize,
    rng: &mut ChaCha20Rng,
) -> f64 {
    let mut ok = 0usize;
    for _ in 0..count {
        let mut seeds: Vec<usize> = Vec::with_capacity(3);
        while seeds.len() < 3.min(pool.len()) {
            let s = pool[pick(rng, pool.len())];
            if !seeds.contains(&s) {
                seeds.push(s);
            }
        }
        let answers: Vec<Option<Epoch>> = seeds
            .iter()
            .map(|s| if answering.binary_search(s).is_ok() { sim.served(*s, None).map(|(e, _, _)| e) } else { None })
            .collect();
        let Some(lo) = answers.iter().flatten().min().copied() else { continue };
        let mut votes: HashMap<[u8; 32], usize> = HashMap::new();
        for (s, a) in seeds.iter().zip(&answers) {
            if a.is_some() {
                if let Some((_, root, _)) = sim.served(*s, Some(lo)) {
                    *votes.entry(root).or_default() += 1;
                }
            }
        }
        let winner = votes.iter().find(|(_, v)| **v * 2 > seeds.len()).map(|(r, _)| *r);
        if winner.is_some() && winner == majority.get(&lo).copied() {
            ok += 1;
        }
    }
    ok as f64 / count.max(1) as f64
}
