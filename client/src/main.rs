//! `lamina-client`: command line, logging and binding; the work is the
//! library's (CONTRIBUTING.md P2).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use lamina_client::dir::{
    advance_chain, bootstrap_seeds, fetch_from, hex, load_cache, save_cache, warn_if_stale, DirParams, Directory,
};
use lamina_client::net::socks_listener::SocksSettings;
use lamina_client::pin::PinnedPath;
use lamina_client::{Client, ClientConfig};
use lamina_directory::statement::ChainHead;
use lamina_directory::{Epoch, Seed};
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
    /// distinct /16s recommended: the majority root wins). RELAYID@IP:PORT
    /// pins the seed's identity (RELAYID as `dir --json` prints `id`).
    #[arg(long = "seed", value_name = "[RELAYID@]IP:PORT")]
    seeds: Vec<Seed>,
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
    /// Most SOCKS connections at once (default 1024); when full, the oldest
    /// connection still in its SOCKS handshake is dropped for a new one.
    #[arg(long, value_name = "N")]
    socks_max_connections: Option<usize>,
    /// Seconds a SOCKS client has to complete its handshake (default 10).
    #[arg(long, value_name = "SECS")]
    socks_handshake_timeout: Option<u64>,
    /// Seconds a SOCKS connection whose application half-closed (or
    /// closed) its side may go without reply bytes before the stream is
    /// ended and the socket closed (default 15).
    #[arg(long, value_name = "SECS")]
    socks_half_closed_timeout: Option<u64>,
    /// A local test network: use relays at loopback and private addresses
    /// (without it they are left out of every path).
    #[arg(long)]
    test_network: bool,
}

/// `dir` flags.
#[derive(Debug, clap::Args)]
struct DirArgs {
    /// The relay to ask: RELAYID@IP:PORT (the seed must prove that id, or
    /// the command fails) or IP:PORT (unauthenticated).
    #[arg(long, value_name = "[RELAYID@]IP:PORT")]
    seed: Seed,
    /// The epoch to ask for (default: the newest the seed serves).
    #[arg(long, value_name = "EPOCH")]
    epoch: Option<u64>,
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
    /// Most SOCKS connections at once.
    socks_max_connections: Option<usize>,
    /// SOCKS handshake time-out in seconds.
    socks_handshake_timeout_secs: Option<u64>,
    /// Half-closed SOCKS connection time-out in seconds.
    socks_half_closed_timeout_secs: Option<u64>,
    /// A local test network.
    test_network: Option<bool>,
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
    let socks_settings = socks_settings(&args, &file)?;
    let seeds = proxy_seeds(args.seeds, file.seeds);
    anyhow::ensure!(!seeds.is_empty(), "give at least one --seed IP:PORT (three in distinct /16s recommended)");
    let allow_remote = args.allow_remote_socks || file.allow_remote_socks.unwrap_or(false);
    anyhow::ensure!(
        socks.ip().is_loopback() || allow_remote,
        "refusing to listen for SOCKS on non-loopback {socks}: pass --allow-remote-socks if you mean it"
    );
    let data_dir = args.data_dir.or(file.data_dir).or_else(default_data_dir);
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
                    warn_if_stale(snapshot.epoch, epoch_secs, unix_now());
                    Directory::unvoted(snapshot, Vec::new())
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
    // The guard sample persists in the data directory (spec §10.5).
    let config = ClientConfig {
        guard_file: data_dir.as_ref().map(|d| d.join("guards")),
        test_network: args.test_network || file.test_network.unwrap_or(false),
        pinned_path,
        ..ClientConfig::default()
    };
    let client = Client::new(config, directory.relays(), Vec::new());
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
    let serve =
        tokio::spawn(lamina_client::net::socks_listener::serve_with(client.clone(), listener, stopped, socks_settings));
    let held = (directory.snapshot.epoch, epoch_secs, advance_chain(None, &directory));
    let refresher = tokio::spawn(refresh(client.clone(), seeds, params, held, data_dir.clone()));
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

/// The seeds from flags, else the file; unpinned ones are logged as
/// unauthenticated (spec §13).
fn proxy_seeds(flags: Vec<Seed>, file: Vec<SocketAddr>) -> Vec<Seed> {
    let seeds: Vec<Seed> = if flags.is_empty() { file.into_iter().map(Seed::unpinned).collect() } else { flags };
    for seed in seeds.iter().filter(|s| s.id.is_none()) {
        info!(seed = %seed.addr, "seed is not pinned (IP:PORT): its identity is not authenticated");
    }
    seeds
}

/// The SOCKS front settings from flags, else the file, else defaults.
fn socks_settings(args: &ProxyArgs, file: &FileConfig) -> anyhow::Result<SocksSettings> {
    let mut settings = SocksSettings::default();
    if let Some(max) = args.socks_max_connections.or(file.socks_max_connections) {
        anyhow::ensure!(max > 0, "--socks-max-connections must be at least 1");
        settings.max_connections = max;
    }
    if let Some(secs) = args.socks_handshake_timeout.or(file.socks_handshake_timeout_secs) {
        anyhow::ensure!(secs > 0, "--socks-handshake-timeout must be at least 1 second");
        settings.handshake_timeout = Duration::from_secs(secs);
    }
    if let Some(secs) = args.socks_half_closed_timeout.or(file.socks_half_closed_timeout_secs) {
        anyhow::ensure!(secs > 0, "--socks-half-closed-timeout must be at least 1 second");
        settings.half_closed_idle = Duration::from_secs(secs);
    }
    Ok(settings)
}

/// Re-fetch the directory once per epoch at a random point of the first
/// half of the epoch (so clients do not all ask at the boundary), retrying
/// with back-off on failure, and cache it (spec §13.5).
/// `held` is the epoch of the directory in use, the epoch length and the
/// chain head accepted; the client says when the directory it runs on has
/// gone stale, and when a new one does not continue the chain.
async fn refresh(
    client: Client,
    seeds: Vec<Seed>,
    params: DirParams,
    held: (Epoch, u64, Option<ChainHead>),
    cache: Option<PathBuf>,
) {
    use rand_core::RngCore;
    let (mut held, epoch_secs, mut head) = (held.0, held.1.max(1), held.2);
    loop {
        let now = unix_now();
        let settle = (epoch_secs / 60).clamp(1, 30);
        let jitter = rand_core::OsRng.next_u64() % (epoch_secs / 2).max(1);
        let wait = epoch_secs - now % epoch_secs + settle + jitter;
        tokio::time::sleep(Duration::from_secs(wait)).await;
        let mut backoff = Duration::from_secs(2);
        for attempt in 0..5 {
            match bootstrap_seeds(&seeds, params).await {
                Ok(directory) => {
                    client.set_relays(directory.relays());
                    held = directory.snapshot.epoch;
                    head = advance_chain(head, &directory);
                    if let Some(dir) = &cache {
                        let _ = save_cache(dir, &directory.snapshot);
                    }
                    break;
                }
                Err(e) => warn!(attempt, "directory refresh failed: {e}"),
            }
            warn_if_stale(held, epoch_secs, unix_now());
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(epoch_secs / 4 + 1));
        }
    }
}

/// Wall-clock unix seconds.
fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Bootstrap, retrying for a while (seeds may still be converging).
async fn bootstrap_until_majority(seeds: &[Seed], params: DirParams) -> anyhow::Result<Directory> {
    let mut last = None;
    for _ in 0..10 {
        match bootstrap_seeds(seeds, params).await {
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
    if args.seed.id.is_none() {
        info!(seed = %args.seed.addr, "seed is not pinned (IP:PORT): its identity is not authenticated");
    }
    let epoch = Epoch(args.epoch.unwrap_or(0));
    let (_, snapshot) = fetch_from(args.seed, epoch, params).await.with_context(|| format!("seed {}", args.seed))?;
    let directory = Directory::unvoted(snapshot, vec![args.seed.addr]);
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

/// The per-user data directory used when none is given:
/// `$XDG_DATA_HOME/lamina`, else `$HOME/.local/share/lamina`.
fn default_data_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("share")))?;
    Some(base.join("lamina"))
}
