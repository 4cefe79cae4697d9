//! `lamina-testnet`: a whole Lamina network on this machine, with a SOCKS
//! proxy, until Ctrl-C.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use clap::Parser;
use lamina_tests::TestNet;

/// Start a local Lamina network: relays on 127.1.0.1, 127.2.0.1, … (distinct
/// /16s), some of them exits allowed to reach loopback, and a client SOCKS
/// proxy. Prints `ready: socks5://IP:PORT` once a circuit can be built.
#[derive(Debug, Parser)]
#[command(name = "lamina-testnet", version, about)]
struct Args {
    /// Number of relays.
    #[arg(long, default_value_t = 10)]
    relays: usize,
    /// How many of them are exits.
    #[arg(long, default_value_t = 3)]
    exits: usize,
    /// SOCKS listen address.
    #[arg(long, default_value = "127.0.0.1:9050", value_name = "IP:PORT")]
    socks: SocketAddr,
    /// Keep relay keys and directory state here (default: in memory only).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
}

/// Parse flags, set up logging, run the network.
fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.relays < 3 || args.exits == 0 || args.exits > args.relays {
        tracing::error!("need at least 3 relays and between 1 and --relays exits");
        return std::process::ExitCode::FAILURE;
    }
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

/// Start the network, print the ready line, wait for Ctrl-C.
async fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let net = TestNet::start_in(args.relays, args.exits, args.socks, args.data_dir.as_deref()).await?;
    tracing::info!("Bootstrapped 50%: {} relays listening", net.relays.len());
    if !net.ready(Duration::from_secs(30)).await {
        anyhow::bail!("no circuit could be built within 30 s");
    }
    tracing::info!("Bootstrapped 100%: circuit ready in {} ms", started.elapsed().as_millis());
    #[allow(clippy::print_stdout)]
    {
        println!("ready: socks5://{}", net.socks_addr);
    }
    tokio::signal::ctrl_c().await?;
    tracing::info!("shutting down");
    net.shutdown().await;
    Ok(())
}
