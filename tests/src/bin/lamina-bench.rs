//! `lamina-bench`: end-to-end figures measured in one run, each with its
//! baseline from the same run (CONTRIBUTING.md "Figures"): bulk transfer through one
//! three-hop circuit vs. three plain TCP forwarders, circuit build time,
//! time to first byte, and relay memory per idle circuit.
//!
//! Everything runs on loopback. Usage:
//! `cargo run --release -p lamina-tests --bin lamina-bench -- [--mib N] [--builds N] [--idle-circuits N]`

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use lamina_client::net::guard::GuardLink;
use lamina_proto::circuit::client::HopSpec;
use lamina_relay::keys::RelayKeys;
use lamina_tests::{serve_payload, socks5_connect, TestNet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// End-to-end benchmark of a local Lamina network.
#[derive(Debug, Parser)]
#[command(name = "lamina-bench", about)]
struct Args {
    /// MiB transferred per bulk run.
    #[arg(long, default_value_t = 256)]
    mib: usize,
    /// Circuit builds measured.
    #[arg(long, default_value_t = 200)]
    builds: usize,
    /// Streams measured for time to first byte.
    #[arg(long, default_value_t = 200)]
    ttfb: usize,
    /// Idle circuits opened on one relay process for the memory figure (0 skips).
    #[arg(long, default_value_t = 10_000)]
    idle_circuits: usize,
    /// Path of the lamina-relay binary (default: next to this one).
    #[arg(long)]
    relay_bin: Option<PathBuf>,
}

/// Entry point.
fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(run(args))
}

/// Run every measurement and print the figures.
#[allow(clippy::print_stdout)]
async fn run(args: Args) -> anyhow::Result<()> {
    let bytes = args.mib * 1024 * 1024;
    let payload = Arc::new((0..bytes).map(|i| u8::try_from(i % 253).unwrap_or(0)).collect::<Vec<u8>>());
    let (server, _server_task) = serve_payload("127.0.0.1".parse()?, Arc::clone(&payload)).await;

    // (b) raw limit: three plain TCP forwarders.
    let chain = forwarder_chain(server, 3).await?;
    let raw = time_download(chain, bytes).await?;
    let raw_mbs = mbs(bytes, raw);
    println!("raw chain (3 TCP forwarders): {raw_mbs:.1} MB/s ({} MiB in {:.2} s)", args.mib, raw.as_secs_f64());

    // (a) one three-hop circuit.
    let net = TestNet::start(3, 1, "127.0.0.1:0".parse()?).await?;
    anyhow::ensure!(net.ready(Duration::from_secs(10)).await, "no circuit");
    let started = Instant::now();
    let mut s = socks5_connect(net.socks_addr, "127.0.0.1", server.port(), None)
        .await?
        .map_err(|code| anyhow::anyhow!("SOCKS reply {code}"))?;
    let got = drain(&mut s).await?;
    let lamina = started.elapsed();
    anyhow::ensure!(got == bytes, "short transfer: {got} of {bytes}");
    let lamina_mbs = mbs(bytes, lamina);
    println!("lamina 3-hop circuit: {lamina_mbs:.1} MB/s ({} MiB in {:.2} s)", args.mib, lamina.as_secs_f64());
    println!("ratio lamina/raw: {:.3}", lamina_mbs / raw_mbs);

    // (c) circuit build time.
    let mut builds = Vec::with_capacity(args.builds);
    for _ in 0..args.builds {
        builds.push(net.client.probe_build().await?);
    }
    let (median, p90, p99) = percentiles(&mut builds);
    println!("circuit build (3 hops, n={}): median {median:.3} ms, p90 {p90:.3} ms, p99 {p99:.3} ms", args.builds);

    // (d) time to first byte of a new stream on a built circuit, vs. direct TCP.
    let (kib_server, _kib_task) = serve_payload("127.0.0.1".parse()?, Arc::new(vec![7u8; 1024])).await;
    let mut direct = Vec::new();
    let mut through = Vec::new();
    for _ in 0..args.ttfb {
        let t = Instant::now();
        let mut s = TcpStream::connect(kib_server).await?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await?;
        direct.push(t.elapsed());
        let t = Instant::now();
        let mut s = socks5_connect(net.socks_addr, "127.0.0.1", kib_server.port(), None)
            .await?
            .map_err(|code| anyhow::anyhow!("SOCKS reply {code}"))?;
        s.read_exact(&mut b).await?;
        through.push(t.elapsed());
    }
    let (d50, _, _) = percentiles(&mut direct);
    let (t50, t90, t99) = percentiles(&mut through);
    println!(
        "time to first byte of 1 KiB (n={}): lamina median {t50:.3} ms (p90 {t90:.3}, p99 {t99:.3}); direct TCP median {d50:.3} ms",
        args.ttfb
    );
    net.shutdown().await;

    // (e) relay memory per idle circuit.
    if args.idle_circuits > 0 {
        idle_memory(&args).await?;
    }
    Ok(())
}

/// Megabytes (10^6) per second.
fn mbs(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64() / 1e6
}

/// Median, p90 and p99 in milliseconds.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // rank of a small sample
fn percentiles(samples: &mut [Duration]) -> (f64, f64, f64) {
    samples.sort();
    let at = |q: f64| {
        let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    };
    (at(0.5), at(0.9), at(0.99))
}

/// Read until EOF, counting bytes.
async fn drain(s: &mut TcpStream) -> anyhow::Result<usize> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
    }
}

/// Download everything `addr` sends and time it.
async fn time_download(addr: SocketAddr, bytes: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let got = drain(&mut s).await?;
    anyhow::ensure!(got == bytes, "raw chain short transfer");
    Ok(started.elapsed())
}

/// `n` TCP forwarders in a chain ending at `target`; returns the first hop.
async fn forwarder_chain(target: SocketAddr, n: usize) -> anyhow::Result<SocketAddr> {
    let mut next = target;
    for i in 0..n {
        let ip = lamina_tests::relay_ip(100 + i);
        let listener = TcpListener::bind((ip, 0)).await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(next).await else { return };
                    let _ = inbound.set_nodelay(true);
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    let _ = outbound.shutdown().await;
                });
            }
        });
        next = addr;
    }
    Ok(next)
}

/// Start a relay process, open `idle_circuits` one-hop circuits to it over
/// 50 links, and report its RSS growth per circuit.
#[allow(clippy::print_stdout)]
async fn idle_memory(args: &Args) -> anyhow::Result<()> {
    let relay_bin = match &args.relay_bin {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("lamina-relay"),
    };
    let dir = std::env::temp_dir().join(format!("lamina-bench-relay-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let keys = RelayKeys::load_or_create(&dir, &mut rand_core::OsRng)?;
    let port = TcpListener::bind("127.50.0.1:0").await?.local_addr()?.port();
    let addr: SocketAddr = format!("127.50.0.1:{port}").parse()?;
    let config = dir.with_extension("toml");
    std::fs::write(&config, "create_rate = 100000.0\ncreate_burst = 100000.0\n")?;
    let mut child = tokio::process::Command::new(&relay_bin)
        .args([
            "--data-dir",
            &dir.to_string_lossy(),
            "--listen",
            &addr.to_string(),
            "--config",
            &config.to_string_lossy(),
        ])
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {} (build it with --bin lamina-relay)", relay_bin.display()))?;
    let pid = child.id().context("relay pid")?;
    let hop = HopSpec {
        relay_id: keys.identity.relay_id(),
        onion_key: keys.onion.onion_public(),
        link_key: keys.link.link_public(),
        addr,
    };
    let mut ready = false;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::ensure!(ready, "relay did not start");
    let links = 50;
    let mut guards = Vec::new();
    for _ in 0..links {
        guards.push(GuardLink::connect(&hop, Duration::from_secs(10)).await?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid)?;
    let per_link = args.idle_circuits.div_ceil(links);
    let mut built = 0usize;
    for g in &guards {
        let mut tasks = Vec::new();
        for _ in 0..per_link {
            let g = g.clone();
            let hop = hop.clone();
            tasks.push(tokio::spawn(async move { g.build(vec![hop], Duration::from_secs(30)).await.is_ok() }));
        }
        for t in tasks {
            built += usize::from(t.await.unwrap_or(false));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid)?;
    let per_circuit = (after.saturating_sub(before)) as f64 * 1024.0 / built.max(1) as f64;
    println!(
        "relay RSS: {before} KiB with {links} links, {after} KiB with {built} idle circuits: {per_circuit:.0} bytes per idle circuit"
    );
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&config);
    Ok(())
}

/// Resident set size of `pid` in KiB.
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("VmRSS value")?.parse()?)
}
