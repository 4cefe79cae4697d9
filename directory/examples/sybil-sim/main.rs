//! `sybil-sim`: the Sybil experiment of spec §14.6, driving the same
//! quota, attestation, measurement, flag and weight functions as the cut.
//!
//! ```text
//! cargo run --release -p lamina-directory --example sybil-sim -- \
//!     [--honest N] [--attacker-blocks A] [--identities I] [--capacity-share C]
//!     [--honest-exit-fraction X] [--honest-blocks B] [--circuits K] [--seed S]
//!     [--defences on|off]
//! ```
//!
//! N honest relays (heavy-tailed real capacities, advertised truthfully,
//! ages up to 30 days, 70% steady (10-day sessions) and 30% flaky (1-day sessions), a fraction X exits, spread over B
//! /16s) and an attacker with A /16s × I identities (four per IP), each
//! claiming the maximum bandwidth and an exit policy, running since the
//! first epoch with 100% uptime, sharing a real capacity that is a
//! fraction C of the total. Attacker measurers lie as much as they can
//! (u32::MAX for the attacker's relays, 0 for honest ones).
//!
//! With `--defences off` weights are the claims and any relay may be a
//! guard (the behaviour before issue 11). With `--defences on` the
//! per-IP quota, the attestation cut rule, assigned measurers with the
//! low-median aggregate, the age ramp, flags from 30 days of agreed cuts,
//! the per-/16 cap and the position weights apply.
//!
//! The last line is exactly
//! `attacker_capacity_share=X attacker_guard_share=Y attacker_exit_share=Z attacker_circuit_share=W`
//! (W: sampled circuits whose first and last hop are both the attacker's).

mod model;

use std::error::Error;

use model::{Config, World};

/// Usage text.
const USAGE: &str = "usage: sybil-sim [--honest N] [--attacker-blocks A] [--identities I] [--capacity-share C] \
                     [--honest-exit-fraction X] [--honest-blocks B] [--circuits K] [--seed S] [--defences on|off]";

/// Parse the command line.
fn parse(mut args: impl Iterator<Item = String>) -> Result<Config, Box<dyn Error>> {
    let mut c = Config::default();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--honest" => c.honest = value.parse()?,
            "--attacker-blocks" => c.attacker_blocks = value.parse()?,
            "--identities" => c.identities = value.parse()?,
            "--capacity-share" => c.capacity_share = value.parse()?,
            "--honest-exit-fraction" => c.honest_exit_fraction = value.parse()?,
            "--honest-blocks" => c.honest_blocks = value.parse()?,
            "--circuits" => c.circuits = value.parse()?,
            "--seed" => c.seed = value.parse()?,
            "--defences" => {
                c.defences = match value.as_str() {
                    "on" => true,
                    "off" => false,
                    _ => return Err(format!("--defences on|off\n{USAGE}").into()),
                }
            }
            _ => return Err(format!("unknown flag {flag}\n{USAGE}").into()),
        }
    }
    let valid = c.honest > 0
        && c.honest_blocks > 0
        && c.honest_blocks <= 60_000
        && c.attacker_blocks <= 200
        && c.identities <= 10_000
        && (0.0..1.0).contains(&c.capacity_share)
        && (0.0..=1.0).contains(&c.honest_exit_fraction)
        && c.circuits > 0;
    if !valid {
        return Err(format!("parameters out of range\n{USAGE}").into());
    }
    Ok(c)
}

/// Print one result line.
#[allow(clippy::print_stdout)] // the example's output
fn say(line: &str) {
    println!("{line}");
}

fn main() -> Result<(), Box<dyn Error>> {
    let config = parse(std::env::args().skip(1))?;
    say(&format!(
        "defences={} honest={} honest_blocks={} attacker={}x{} capacity_share={} honest_exit_fraction={} seed={}",
        if config.defences { "on" } else { "off" },
        config.honest,
        config.honest_blocks,
        config.attacker_blocks,
        config.identities,
        config.capacity_share,
        config.honest_exit_fraction,
        config.seed
    ));
    let world = World::build(&config)?;
    let r = world.evaluate(&config)?;
    say(&format!(
        "in_cut honest={} attacker={} guards honest={} attacker={} exits honest={} attacker={}",
        r.in_cut.0, r.in_cut.1, r.guards.0, r.guards.1, r.exits.0, r.exits.1
    ));
    say(&format!(
        "attacker_share_of_exit_capacity={:.4} attacker_share_of_guard_capacity={:.4} attacker_middle_share={:.4}",
        r.exit_capacity_share, r.guard_capacity_share, r.middle_share
    ));
    say(&format!(
        "attacker_capacity_share={:.4} attacker_guard_share={:.4} attacker_exit_share={:.4} attacker_circuit_share={:.6}",
        r.capacity_share, r.guard_share, r.exit_share, r.circuit_share
    ));
    Ok(())
}
