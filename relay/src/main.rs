//! `lamina-relay`: command line, logging and binding; everything else is
//! the library (CONTRIBUTING.md P2).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use lamina_relay::config::{exit_policy, exit_summary, parse_family, read_file, ConfigError, FileConfig};
use lamina_relay::keys::RelayKeys;
use lamina_relay::net::directory::DirSettings;
use lamina_relay::net::registry::NetConfig;
use tokio::net::TcpListener;
use tracing::info;

/// A Lamina relay: carries circuits for clients, optionally as an exit.
#[derive(Debug, Parser)]
#[command(name = "lamina-relay", version, about, long_about = None)]
struct Args {
    /// Directory for keys and state (created with mode 0700; key files 0600).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Address to listen on for links, e.g. 127.1.0.1:9001.
    #[arg(long, value_name = "IP:PORT")]
    listen: Option<SocketAddr>,
    /// A relay to join the directory gossip through (repeatable):
    /// RELAYID@IP:PORT pins its identity (RELAYID as `lamina-client dir
    /// --json` prints `id`); plain IP:PORT is unauthenticated.
    #[arg(long = "seed", value_name = "[RELAYID@]IP:PORT")]
    seeds: Vec<lamina_directory::Seed>,
    /// Be an exit with the default policy (rejects private, loopback and
    /// special ranges, and this relay's own addresses).
    #[arg(long)]
    exit: bool,
    /// Exit policy, Tor-style, first match wins, e.g.
    /// "accept 127.0.0.0/8:*, reject *:*" (implies --exit).
    #[arg(long, value_name = "RULES")]
    exit_policy: Option<String>,
    /// Drop the implicit exit rejects of private, loopback, link-local,
    /// metadata and special addresses and of this relay's own addresses
    /// (every exit policy begins with them otherwise). For local test
    /// networks only: it exposes the operator's network to every client.
    #[arg(long)]
    allow_private_exit: bool,
    /// A local test network: allow links and extends to non-public
    /// addresses (loopback, private ranges). Never on a real network.
    #[arg(long)]
    test_network: bool,
    /// Serve Prometheus metrics on this address (loopback only, unless
    /// --allow-remote-metrics).
    #[arg(long, value_name = "IP:PORT")]
    metrics: Option<SocketAddr>,
    /// Allow the metrics endpoint on a non-loopback address.
    #[arg(long)]
    allow_remote_metrics: bool,
    /// Advertised bandwidth in KB/s (path selection weight).
    #[arg(long, value_name = "KBPS")]
    bandwidth: Option<u32>,
    /// Proof-of-work bits every descriptor must carry (the whole network
    /// must agree; default 20, about 0.1 s per identity).
    #[arg(long, value_name = "BITS")]
    pow_bits: Option<u8>,
    /// Directory epoch length in seconds (the whole network must agree;
    /// default 3600; seconds for local test networks).
    #[arg(long, value_name = "SECS")]
    epoch_secs: Option<u64>,
    /// TOML file with the same settings; flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Relays run by the same operator (hex relay ids, comma-separated, at
    /// most 8); a family counts only where every member lists the others.
    #[arg(long, value_name = "ID,...", value_delimiter = ',')]
    family: Vec<String>,
}

/// Parse flags, set up logging, run the relay.
fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Load settings and keys, bind, serve until a signal.
async fn run(args: Args) -> anyhow::Result<()> {
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    let data_dir = args.data_dir.or(file.data_dir).ok_or(ConfigError::Missing("--data-dir"))?;
    let listen = args.listen.or(file.listen).ok_or(ConfigError::Missing("--listen"))?;
    let exit = args.exit || file.exit.unwrap_or(false);
    let policy_text = args.exit_policy.or(file.exit_policy);
    let allow_private = args.allow_private_exit || file.allow_private_exit.unwrap_or(false);
    let test_network = args.test_network || file.test_network.unwrap_or(false);
    let policy = exit_policy(exit, policy_text.as_deref(), &own_addresses(listen.ip()), allow_private)?;
    let metrics = args.metrics.or(file.metrics);
    if let Some(addr) = metrics {
        anyhow::ensure!(
            addr.ip().is_loopback() || args.allow_remote_metrics,
            "refusing to serve metrics on non-loopback {addr}: pass --allow-remote-metrics if you mean it"
        );
    }
    let mut seeds = args.seeds;
    if seeds.is_empty() {
        seeds = file.seeds.into_iter().map(lamina_directory::Seed::unpinned).collect();
    }

    let keys = RelayKeys::load_or_create(&data_dir, &mut rand_core::OsRng)
        .with_context(|| format!("keys in {}", data_dir.display()))?;
    let listener = TcpListener::bind(listen).await.with_context(|| format!("cannot listen on {listen}"))?;
    let mut net = NetConfig { test_network, key_dir: Some(data_dir.clone()), ..NetConfig::default() };
    if let Some(rate) = file.create_rate {
        net.create_rate = rate;
    }
    if let Some(burst) = file.create_burst {
        net.create_burst = burst;
    }
    let mut gossip = lamina_directory::GossipConfig::default();
    if let Some(bits) = args.pow_bits.or(file.pow_bits) {
        gossip.pow_difficulty = bits;
    }
    if let Some(secs) = args.epoch_secs.or(file.epoch_secs) {
        gossip.epoch_len_s = secs.max(1);
    }
    // The cut admits only attested relays (spec §14.2).
    gossip.attest = Some(if test_network {
        lamina_directory::attest::AttestParams::test_network()
    } else {
        lamina_directory::attest::AttestParams::production()
    });
    let settings = DirSettings {
        gossip,
        seeds: seeds.clone(),
        advertised: listen,
        bandwidth_kbps: args.bandwidth.or(file.bandwidth).unwrap_or(1000),
        exit: exit_summary(&policy),
        family: parse_family(
            if args.family.is_empty() { &file.family } else { &args.family },
            &keys.identity.relay_id(),
        )?,
        state_file: Some(data_dir.join("descriptors.bin")),
    };
    let relay = lamina_relay::spawn_with_directory(listener, keys, policy, net, Some(settings))?;
    info!(relay = %relay.relay_id().short(), %listen, exit = relay.ctx.policy.is_exit(), seeds = seeds.len(), "relay started");
    if let Some(addr) = metrics {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("cannot serve metrics on {addr}"))?;
        tokio::spawn(lamina_relay::serve_metrics(std::sync::Arc::clone(&relay.ctx), listener));
    }
    shutdown_signal().await;
    info!("shutting down");
    relay.shutdown().await;
    Ok(())
}

/// The relay's own addresses for the implicit exit rejects (spec §15.1):
/// the listen address and every local interface address, as far as the OS
/// tells them (IPv4 and IPv6).
fn own_addresses(listen: std::net::IpAddr) -> Vec<std::net::IpAddr> {
    let mut own = vec![listen];
    if let Ok(interfaces) = nix::ifaddrs::getifaddrs() {
        for ifa in interfaces {
            let Some(addr) = ifa.address else { continue };
            let ip = if let Some(v4) = addr.as_sockaddr_in() {
                std::net::IpAddr::V4(v4.ip())
            } else if let Some(v6) = addr.as_sockaddr_in6() {
                std::net::IpAddr::V6(v6.ip())
            } else {
                continue;
            };
            if !own.contains(&ip) {
                own.push(ip);
            }
        }
    }
    own
}

/// Resolve on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
