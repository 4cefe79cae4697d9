//! `lamina-client`: command line, logging and binding; the work is the
//! library's (STYLE.md P2).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lamina_client::dir::{bootstrap, fetch_snapshot, hex, load_cache, save_cache, DirParams, Directory};
use lamina_client::pin::PinnedPath;
use lamina_client::{Client, ClientConfig};
use lamina_crypto::keys::RelayId;
use serde::Deserialize;
use tokio::net::TcpListener;
use tracing::{info, warn};

/// The Lamina client: a SOCKS proxy into the Lamina network, and tools.
#[derive(Debug, Parser)]
#[command(name = "lamina-client", version, about)]
struct Args {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run a SOCKS5/SOCKS4a proxy whose streams travel through three-hop circuits.
    Proxy(ProxyArgs),
    /// Print the directory as one seed relay serves it.
    Dir(DirArgs),
}

/// `proxy` flags.
#[derive(Debug, clap::Args)]
struct ProxyArgs {
    /// SOCKS listen address (loopback unless --allow-remote-socks).
    #[arg(long, value_name = "IP:PORT")]
    socks: Option<SocketAddr>,
    /// Seed relays to fetch the directory from (repeat; three or more in
    /// distinct /16s recommended: the majority root wins).
    #[arg(long = "seed", value_name = "IP:PORT")]
    seeds: Vec<SocketAddr>,
    /// Directory for the guard set and the cached directory.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Allow the SOCKS listener on a non-loopback address (anyone who can
    /// reach it can use your circuits).
    #[arg(long)]
    allow_remote_socks: bool,
    /// Proof-of-work bits the network's descriptors carry.
    #[arg(long, value_name = "BITS")]
    pow_bits: Option<u8>,
    /// The network's directory epoch in seconds (the directory is refreshed
    /// once per epoch; default 3600).
    #[arg(long, value_name = "SECS")]
    epoch_secs: Option<u64>,
    /// Experiment setting, never for anonymity: every circuit takes exactly
    /// this guard, middle and exit (relay ids in hex, or relay addresses),
    /// with no fallback (spec §10.9).
    #[arg(long, value_name = "GUARD,MIDDLE,EXIT")]
    pin_path: Option<PinnedPath>,
    /// TOML file with the same settings; flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// `dir` flags.
#[derive(Debug, clap::Args)]
struct DirArgs {
    /// The relay to ask.
    #[arg(long, value_name = "IP:PORT")]
    seed: SocketAddr,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// Proof-of-work bits the network's descriptors carry.
    #[arg(long, value_name = "BITS")]
    pow_bits: Option<u8>,
}

/// The optional TOML file of `proxy`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    /// SOCKS listen address.
    socks: Option<SocketAddr>,
    /// Seeds.
    #[serde(default)]
    seeds: Vec<SocketAddr>,
    /// Data directory.
    data_dir: Option<PathBuf>,
    /// Allow a non-loopback SOCKS address.
    allow_remote_socks: Option<bool>,
    /// Proof-of-work bits.
    pow_bits: Option<u8>,
    /// Directory epoch in seconds.
    epoch_secs: Option<u64>,
    /// Pinned path (experiments), as `--pin-path`.
    pin_path: Option<String>,
}

/// Parse, set up logging, run.
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
    let result = match args.command {
        Command::Proxy(p) => runtime.block_on(proxy(p)),
        Command::Dir(d) => runtime.block_on(dir(d)),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// `lamina-client proxy`.
async fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&text).map_err(|e| anyhow::anyhow!("config file {}: {}", path.display(), e.message()))?
        }
        None => FileConfig::default(),
    };
    let socks = args.socks.or(file.socks).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 9050)));
    let seeds = if args.seeds.is_empty() { file.seeds } else { args.seeds };
    anyhow::ensure!(!seeds.is_empty(), "give at least one --seed IP:PORT (three in distinct /16s recommended)");
    let allow_remote = args.allow_remote_socks || file.allow_remote_socks.unwrap_or(false);
    anyhow::ensure!(
        socks.ip().is_loopback() || allow_remote,
        "refusing to listen for SOCKS on non-loopback {socks}: pass --allow-remote-socks if you mean it"
    );
    let data_dir = args.data_dir.or(file.data_dir);
    let epoch_secs = args.epoch_secs.or(file.epoch_secs).unwrap_or(3600);
    let params = DirParams {
        pow_bits: args.pow_bits.or(file.pow_bits).unwrap_or(DirParams::default().pow_bits),
        ..DirParams::default()
    };

    info!("Bootstrapped 5%: fetching the directory from {} seeds", seeds.len());
    let directory = match bootstrap_until_majority(&seeds, params).await {
        Ok(directory) => {
            if let Some(dir) = &data_dir {
                if let Err(e) = save_cache(dir, &directory.snapshot) {
                    warn!("cannot cache the directory: {e}");
                }
            }
            directory
        }
        Err(e) => {
            let cached = data_dir.as_deref().map(|d| load_cache(d, params));
            match cached {
                Some(Ok(snapshot)) => {
                    warn!("{e:#}; using the cached directory (verified again)");
                    Directory { snapshot, agreeing: Vec::new(), disagreeing: Vec::new() }
                }
                _ => return Err(e),
            }
        }
    };
    info!(
        "Bootstrapped 50%: directory of {} relays, root {}",
        directory.snapshot.descriptors.len(),
        hex(&directory.snapshot.root)
    );
    let pinned_path = pinned_path(args.pin_path, file.pin_path.as_deref())?;
    let guards = data_dir.as_deref().map(load_guards).unwrap_or_default();
    let config = ClientConfig { pinned_path, ..ClientConfig::default() };
    let client = Client::new(config, directory.relays(), guards);
    if let Some(dir) = &data_dir {
        save_guards(dir, &client.guards())?;
    }
    let listener = TcpListener::bind(socks).await.with_context(|| format!("cannot listen for SOCKS on {socks}"))?;
    let addr = listener.local_addr()?;
    info!("Bootstrapped 75%: building circuits");
    anyhow::ensure!(client.ensure_prebuilt().await > 0, "no circuit could be built");
    info!("Bootstrapped 100%: ready");
    #[allow(clippy::print_stdout)]
    {
        println!("ready: socks5://{addr}");
    }
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let serve = tokio::spawn(lamina_client::net::socks_listener::serve(client.clone(), listener, stopped));
    let refresher = tokio::spawn(refresh(client.clone(), seeds, params, epoch_secs, data_dir.clone()));
    tokio::signal::ctrl_c().await?;
    info!("shutting down");
    let _ = stop.send(true);
    refresher.abort();
    let _ = serve.await;
    Ok(())
}

/// The pinned path (experiments, spec §10.9): the flag wins over the file.
fn pinned_path(flag: Option<PinnedPath>, file: Option<&str>) -> anyhow::Result<Option<PinnedPath>> {
    let pin = match (flag, file) {
        (Some(pin), _) => Some(pin),
        (None, Some(text)) => Some(text.parse::<PinnedPath>().context("config file pin_path")?),
        (None, None) => None,
    };
    if let Some(pin) = &pin {
        warn!("experiment setting: every circuit is pinned to one path (no anonymity): {pin}");
    }
    Ok(pin)
}

/// Re-fetch the directory once per epoch, a few seconds after each epoch
/// boundary (when seeds have cut the new snapshot), and cache it.
async fn refresh(client: Client, seeds: Vec<SocketAddr>, params: DirParams, epoch_secs: u64, cache: Option<PathBuf>) {
    let epoch_secs = epoch_secs.max(1);
    loop {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let wait = epoch_secs - now % epoch_secs + (epoch_secs / 60).min(30);
        tokio::time::sleep(Duration::from_secs(wait)).await;
        match bootstrap(&seeds, params).await {
            Ok(directory) => {
                client.set_relays(directory.relays());
                if let Some(dir) = &cache {
                    let _ = save_cache(dir, &directory.snapshot);
                }
            }
            Err(e) => warn!("directory refresh failed: {e}"),
        }
    }
}

/// Bootstrap, retrying for a while (seeds may still be converging).
async fn bootstrap_until_majority(seeds: &[SocketAddr], params: DirParams) -> anyhow::Result<Directory> {
    let mut last = None;
    for _ in 0..10 {
        match bootstrap(seeds, params).await {
            Ok(directory) => return Ok(directory),
            Err(e) => {
                warn!("bootstrap attempt failed: {e}");
                last = Some(e);
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    Err(last.map_or_else(|| anyhow::anyhow!("bootstrap failed"), |e| anyhow::anyhow!("bootstrap failed: {e}")))
}

/// `lamina-client dir`.
#[allow(clippy::print_stdout)]
async fn dir(args: DirArgs) -> anyhow::Result<()> {
    let params = DirParams { pow_bits: args.pow_bits.unwrap_or(DirParams::default().pow_bits), ..DirParams::default() };
    let (_, snapshot) = fetch_snapshot(args.seed, params).await.with_context(|| format!("seed {}", args.seed))?;
    let directory = Directory { snapshot, agreeing: vec![args.seed], disagreeing: Vec::new() };
    let relays = directory.relays();
    let root = hex(&directory.snapshot.root);
    if args.json {
        let list: Vec<serde_json::Value> = relays
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.hop.relay_id.to_hex(),
                    "address": r.hop.addr.to_string(),
                    "exit": r.is_exit(),
                    "exit_ports": r.exit_ports.iter().map(|(lo, hi)| format!("{lo}-{hi}")).collect::<Vec<_>>(),
                    "bandwidth_kbps": r.bandwidth,
                    "flags": flags(r),
                })
            })
            .collect();
        let out = serde_json::json!({ "relays": list, "count": relays.len(), "root": root, "epoch": directory.snapshot.epoch.0 });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for r in &relays {
            println!(
                "{} {} {} {}",
                r.hop.relay_id.to_hex(),
                r.hop.addr,
                flags(r).join(","),
                if r.is_exit() { "exit" } else { "-" }
            );
        }
        println!("relays: {} root: {root}", relays.len());
    }
    Ok(())
}

/// Flags shown for a relay (earned flags are future work; see the README).
fn flags(r: &lamina_client::path::RelayInfo) -> Vec<&'static str> {
    let mut f = vec!["Running"];
    if r.is_exit() {
        f.push("Exit");
    }
    f
}

/// Read the guard set (hex relay ids, one per line).
fn load_guards(dir: &Path) -> Vec<RelayId> {
    let Ok(text) = std::fs::read_to_string(dir.join("guards")) else { return Vec::new() };
    text.lines().filter_map(parse_id).take(16).collect()
}

/// Parse a hex relay id.
fn parse_id(line: &str) -> Option<RelayId> {
    let line = line.trim();
    if line.len() != 64 {
        return None;
    }
    let mut id = [0u8; 32];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(line.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(RelayId(id))
}

/// Persist the guard set.
fn save_guards(dir: &Path, guards: &[RelayId]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let text: String = guards.iter().map(|g| format!("{}\n", g.to_hex())).collect();
    std::fs::write(dir.join("guards"), text).with_context(|| format!("cannot write {}", dir.join("guards").display()))
}
