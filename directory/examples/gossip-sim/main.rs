//! `gossip-sim`: drives N real `GossipEngine`s over a simulated network in
//! virtual time and measures the dissemination figures of CONTRIBUTING.md "Figures".
//!
//! ```text
//! cargo run --release -p lamina-directory --example gossip-sim -- \
//!     --nodes N [--drop-fraction F] [--seed S] [--difficulty D] [--steady-secs W] [--fanout K]
//!     [--latency geo|uniform]
//!     [--epochs K [--epoch-len S] [--equivocators E] [--clients C]]
//! ```
//!
//! With `--epochs K` the epoch scenario of `epochs.rs` runs instead of
//! phases 2–4 (cuts, statements, churn, equivocators, 3-seed clients); its
//! last line is `nodes=N root_agreement=A client_bootstrap=B ...`.
//!
//! Scenario:
//!
//! 1. **Bootstrap.** N relays, each in its own synthetic /16, with
//!    descriptors published at random times in the last 8 hours (so
//!    republishing every 8 hours is spread evenly). Every engine imports the
//!    whole directory (as from a seed snapshot), then fills its outbound
//!    slots with random relays; two anti-entropy intervals of warm-up follow
//!    and the digest roots of all relays must agree.
//! 2. **Steady state.** For W virtual seconds (default 600) every byte of
//!    every gossip message is counted (plus 18 bytes of link framing per
//!    message): `bytes_per_relay_per_s` = bytes / N / W.
//! 3. **Push.** One relay publishes a new descriptor. The simulator carries
//!    a hop count in each message envelope (not in the protocol);
//!    `hops_to_99` is the smallest H such that 99% of relays stored the
//!    descriptor at most H hops from the publisher.
//! 4. **Repair under attack.** A fraction F (default 0.2) of relays start
//!    silently dropping all gossip (they neither push nor answer); another
//!    relay publishes a new descriptor. `rounds_to_100` is the number of
//!    anti-entropy intervals (60 s) until 100% of honest relays hold it.
//!
//! The last line is exactly
//! `nodes=N hops_to_99=H rounds_to_100=R bytes_per_relay_per_s=B`.

mod epochs;
mod sim;

use std::error::Error;

use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

use sim::{Latency, Sim};

/// Command-line parameters.
struct Params {
    /// Number of relays.
    nodes: usize,
    /// Fraction of relays that drop gossip in phase 4.
    drop_fraction: f64,
    /// Seed of every random choice.
    seed: u64,
    /// Proof-of-work difficulty (low: the simulation measures gossip).
    difficulty: u8,
    /// Length of the steady-state window (virtual seconds).
    steady_secs: u64,
    /// Push fan-out (default: the engine's default).
    fanout: Option<usize>,
    /// Link latency model.
    latency: Latency,
    /// Epochs of the epoch scenario (`None`: the default scenario).
    epochs: Option<u64>,
    /// Epoch length of the epoch scenario (s).
    epoch_len_s: u64,
    /// Equivocating identities of the epoch scenario.
    equivocators: usize,
    /// Simulated clients of the epoch scenario.
    clients: usize,
}

/// Usage text.
const USAGE: &str = "usage: gossip-sim --nodes N [--drop-fraction F] [--seed S] [--difficulty D] [--steady-secs W] [--fanout K] [--latency geo|uniform] [--epochs K [--epoch-len S] [--equivocators E] [--clients C]]";

impl Params {
    /// Parse `--flag value` pairs by hand (no clap in this crate).
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Self, Box<dyn Error>> {
        let mut p = Self {
            nodes: 1000,
            drop_fraction: 0.2,
            seed: 1,
            difficulty: 4,
            steady_secs: 600,
            fanout: None,
            latency: Latency::Geo,
            epochs: None,
            epoch_len_s: 600,
            equivocators: 10,
            clients: 1000,
        };
        while let Some(flag) = args.next() {
            if flag == "--help" || flag == "-h" {
                return Err(USAGE.into());
            }
            let value = args.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
            match flag.as_str() {
                "--nodes" => p.nodes = value.parse()?,
                "--drop-fraction" => p.drop_fraction = value.parse()?,
                "--seed" => p.seed = value.parse()?,
                "--difficulty" => p.difficulty = value.parse()?,
                "--steady-secs" => p.steady_secs = value.parse()?,
                "--fanout" => p.fanout = Some(value.parse()?),
                "--epochs" => p.epochs = Some(value.parse()?),
                "--epoch-len" => p.epoch_len_s = value.parse()?,
                "--equivocators" => p.equivocators = value.parse()?,
                "--clients" => p.clients = value.parse()?,
                "--latency" => {
                    p.latency = match value.as_str() {
                        "geo" => Latency::Geo,
                        "uniform" => Latency::Uniform,
                        _ => return Err(format!("--latency geo|uniform\n{USAGE}").into()),
                    }
                }
                other => return Err(format!("unknown flag {other}\n{USAGE}").into()),
            }
        }
        if p.nodes < 2 || !(0.0..1.0).contains(&p.drop_fraction) || p.steady_secs == 0 {
            return Err(format!("need --nodes >= 2, 0 <= --drop-fraction < 1, --steady-secs > 0\n{USAGE}").into());
        }
        Ok(p)
    }
}

/// Print one line of the report (a CLI example's output).
#[allow(clippy::print_stdout)]
pub(crate) fn say(line: &str) {
    println!("{line}");
}

/// Wall-clock seconds since `start`, for progress lines. The simulator is a
/// driver: reading the clock here is fine, the engines never see it.
#[allow(clippy::disallowed_methods)]
fn wall() -> std::time::Instant {
    std::time::Instant::now()
}

fn main() -> Result<(), Box<dyn Error>> {
    let p = Params::parse(std::env::args().skip(1))?;
    let started = wall();
    let mut rng = ChaCha20Rng::seed_from_u64(p.seed);
    say(&format!(
        "gossip-sim: nodes={} drop_fraction={} seed={} difficulty={} steady_secs={} fanout={} latency={:?}",
        p.nodes,
        p.drop_fraction,
        p.seed,
        p.difficulty,
        p.steady_secs,
        p.fanout.map_or_else(|| "default".to_string(), |f| f.to_string()),
        p.latency
    ));
    let joiners = if p.epochs.is_some() { p.nodes / 100 } else { 0 };
    let epochs = p.epochs.map(|_| p.epoch_len_s);
    let mut sim = Sim::new(p.nodes, p.seed, p.difficulty, p.fanout, p.latency, epochs, joiners, &mut rng)?;
    say(&format!(
        "bootstrap: {} relays, directory imported by all ({:.1} s wall)",
        sim.len(),
        started.elapsed().as_secs_f64()
    ));

    let interval = sim.config().anti_entropy_interval_ms;
    sim.run_until(2 * interval, |_| false);
    // Republishing never stops, so roots agree only between two floods:
    // step one virtual second at a time until they do (at most a minute).
    let mut converged = sim.converged();
    for _ in 0..60 {
        if converged {
            break;
        }
        let t = sim.now_ms();
        sim.run_until(t + 1000, |_| false);
        converged = sim.converged();
    }
    let (min_out, mean_out) = sim.outbound_degree();
    say(&format!(
        "warm-up: all digest roots equal={converged} at t={} s; outbound peers min={min_out} mean={mean_out:.1} ({:.1} s wall)",
        sim.now_ms() / 1000,
        started.elapsed().as_secs_f64()
    ));

    if let Some(k) = p.epochs {
        let run = epochs::EpochRun {
            epochs: k,
            epoch_len_s: p.epoch_len_s,
            equivocators: p.equivocators,
            clients: p.clients,
            drop_fraction: p.drop_fraction,
            joiners,
        };
        let f = epochs::run(&mut sim, &run, &mut rng)?;
        say(&format!(
            "epochs: {} measured; worst coverage {:.4}; equivocators banned by every honest live relay {}/{} ({:.1} s wall)",
            f.measured,
            f.coverage,
            f.banned_everywhere,
            p.equivocators,
            started.elapsed().as_secs_f64()
        ));
        say(&format!(
            "nodes={} root_agreement={:.4} client_bootstrap={:.4} client_bootstrap_any={:.4} bytes_per_relay_per_s={:.0}",
            p.nodes, f.root_agreement, f.client_bootstrap, f.client_bootstrap_any, f.bytes_per_relay_per_s
        ));
        return Ok(());
    }
    let bytes_per_relay = steady_state(&mut sim, &p);
    say(&format!("steady: {bytes_per_relay:.1} bytes/relay/s ({:.1} s wall)", started.elapsed().as_secs_f64()));

    let hops = push_phase(&mut sim, &mut rng)?;
    say(&format!("push: ({:.1} s wall)", started.elapsed().as_secs_f64()));

    let rounds = repair_phase(&mut sim, &mut rng, p.drop_fraction)?;
    say(&format!("repair: ({:.1} s wall)", started.elapsed().as_secs_f64()));

    say(&format!(
        "nodes={} hops_to_99={} rounds_to_100={} bytes_per_relay_per_s={:.0}",
        p.nodes, hops, rounds, bytes_per_relay
    ));
    Ok(())
}

/// Count every gossip byte over the steady window; bytes per relay per s.
fn steady_state(sim: &mut Sim, p: &Params) -> f64 {
    let start = sim.now_ms();
    let accepted_before = sim.total(|s| s.accepted);
    sim.counting = true;
    sim.run_until(start + p.steady_secs * 1000, |_| false);
    sim.counting = false;
    let republished = sim.total(|s| s.accepted) - accepted_before;
    let rounds = sim.total(|s| s.ae_rounds);
    say(&format!(
        "steady: {} messages, {} bytes in {} s; {} descriptor receptions accepted; {} AE rounds so far, {} in sync",
        sim.messages,
        sim.bytes,
        p.steady_secs,
        republished,
        rounds,
        sim.total(|s| s.ae_in_sync)
    ));
    sim.bytes as f64 / sim.len() as f64 / p.steady_secs as f64
}

/// Publish a new descriptor at a random relay; hops until 99% hold it.
fn push_phase(sim: &mut Sim, rng: &mut ChaCha20Rng) -> Result<u32, Box<dyn Error>> {
    let n = sim.len();
    let publisher = usize::try_from(rng.next_u64() % n as u64)?;
    let t = sim.now_ms();
    sim.publish_tracked(publisher)?;
    sim.run_until(t + 30_000, |s| s.track.as_ref().is_some_and(|k| k.have == n));
    let Some(track) = sim.track.as_ref() else { return Err("no tracked descriptor".into()) };
    let mut hops: Vec<u32> = track.hop.clone();
    hops.sort_unstable();
    let need = (n * 99).div_ceil(100);
    let hops_to_99 = hops.get(need - 1).copied().unwrap_or(u32::MAX);
    let max_hop = hops.iter().copied().filter(|h| *h != u32::MAX).max().unwrap_or(0);
    let histogram: Vec<String> = (0..=max_hop).map(|h| hops.iter().filter(|x| **x == h).count().to_string()).collect();
    let mut times: Vec<u64> = track.at_ms.iter().filter(|t| **t != u64::MAX).map(|at| at - t).collect();
    times.sort_unstable();
    let t99 = times.get(need - 1).copied().unwrap_or(u64::MAX);
    say(&format!(
        "push: {}/{} relays within 30 s; relays per hop [{}]; 99% at {} ms, last at {} ms",
        track.have,
        n,
        histogram.join(" "),
        t99,
        times.last().copied().unwrap_or(0)
    ));
    Ok(hops_to_99)
}

// `fraction` is in 0.0..1.0, so the dropper count is in 0..n.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
/// Turn a fraction of relays into droppers, publish at an honest relay,
/// and count anti-entropy intervals until every honest relay has it.
fn repair_phase(sim: &mut Sim, rng: &mut ChaCha20Rng, fraction: f64) -> Result<u64, Box<dyn Error>> {
    let n = sim.len();
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = usize::try_from(rng.next_u64() % (i as u64 + 1))?;
        order.swap(i, j);
    }
    let droppers = ((n as f64) * fraction).floor() as usize;
    let (bad, good) = order.split_at(droppers);
    for &i in bad {
        sim.set_dropper(i);
    }
    let publisher = *good.first().ok_or("no honest relay")?;
    let honest = good.len();
    let interval = sim.config().anti_entropy_interval_ms;
    let t = sim.now_ms();
    sim.publish_tracked(publisher)?;
    let done = sim.run_until(t + 40 * interval, |s| s.track.as_ref().is_some_and(|k| k.have >= honest));
    let Some(track) = sim.track.as_ref() else { return Err("no tracked descriptor".into()) };
    let mut times: Vec<u64> =
        (0..n).filter(|i| !sim.is_dropper(*i)).map(|i| track.at_ms[i].saturating_sub(t)).collect();
    times.sort_unstable();
    let last = times.last().copied().unwrap_or(0);
    let after_push = times.iter().filter(|x| **x <= 5_000).count();
    say(&format!(
        "repair: {droppers} droppers; {after_push}/{honest} honest relays within 5 s (push), {}/{honest} in the end; \
         last at {last} ms",
        track.have
    ));
    if !done {
        say("repair: NOT all honest relays reached within 40 rounds");
        return Ok(41);
    }
    Ok(last.div_ceil(interval))
}
