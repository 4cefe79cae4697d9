#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
// The harness is test support code: failing loudly on a broken set-up is
// what a test wants, so unwrap/expect are allowed here (CONTRIBUTING.md P15).
#![allow(clippy::unwrap_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lamina_client::dir::{bootstrap, DirParams, Directory};
use lamina_client::path::RelayInfo;
use lamina_client::{Client, ClientConfig};
use lamina_directory::GossipConfig;
use lamina_relay::config::{exit_policy, exit_summary};
use lamina_relay::keys::RelayKeys;
use lamina_relay::net::directory::DirSettings;
use lamina_relay::net::registry::NetConfig;
use lamina_relay::RelayHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The policy of testnet exits: loopback destinations only.
pub const TESTNET_EXIT_POLICY: &str = "accept 127.0.0.0/8:*, accept [::1]:*, reject *:*";

/// The driver settings of a local test network relay: `test_network`
/// (links and extends to loopback, spec §15.2) and a CREATE rate fit for
/// one client building many circuits quickly.
pub fn testnet_net_config() -> NetConfig {
    NetConfig { create_rate: 10_000.0, create_burst: 10_000.0, test_network: true, ..NetConfig::default() }
}

/// Directory settings of a test relay at `advertised` with `policy`,
/// joining through `seed` (none: the first relay), without a state file.
pub fn relay_settings(
    advertised: SocketAddr,
    seed: Option<SocketAddr>,
    policy: &lamina_relay::exit_policy::ExitPolicy,
) -> DirSettings {
    DirSettings {
        gossip: testnet_gossip(),
        seeds: seed.into_iter().map(lamina_directory::Seed::unpinned).collect(),
        advertised,
        bandwidth_kbps: 1000,
        exit: exit_summary(policy),
        family: Vec::new(),
        state_file: None,
    }
}

/// The exits' policy in a [`TestNet`].
#[derive(Debug, Clone, Copy)]
struct Policy<'a> {
    /// Policy text (Tor-style rules).
    text: &'a str,
    /// Drop the implicit private and own-address rejects (spec §15.1).
    allow_private_exit: bool,
}

/// A whole network in this process.
#[derive(Debug)]
pub struct TestNet {
    /// The relays, in start order.
    pub relays: Vec<RelayHandle>,
    /// What the client knows about them.
    pub infos: Vec<RelayInfo>,
    /// The client.
    pub client: Client,
    /// Where the SOCKS listener listens.
    pub socks_addr: SocketAddr,
    /// Stops the SOCKS listener.
    socks_shutdown: watch::Sender<bool>,
    /// The SOCKS listener task.
    socks_task: JoinHandle<()>,
}

/// Proof-of-work bits of the local test network (cheap: identities cost
/// nothing to mint on one's own machine).
pub const TESTNET_POW_BITS: u8 = 8;

/// Gossip settings of the local test network: cheap work, one-second
/// epochs and fast anti-entropy, so the directory converges in moments.
pub fn testnet_gossip() -> GossipConfig {
    GossipConfig {
        pow_difficulty: TESTNET_POW_BITS,
        epoch_len_s: 1,
        anti_entropy_interval_ms: 1_000,
        push_fanout: 16,
        attest: Some(lamina_directory::attest::AttestParams::test_network()),
        ..GossipConfig::default()
    }
}

/// Bootstrap from `seeds` until the majority directory lists `expected`
/// relays (bounded: 30 s).
pub async fn wait_for_directory(seeds: &[SocketAddr], expected: usize) -> anyhow::Result<Directory> {
    let params = DirParams { pow_bits: TESTNET_POW_BITS, timeout: Duration::from_secs(5) };
    let started = Instant::now();
    let mut last = String::from("no attempt");
    while started.elapsed() < Duration::from_secs(30) {
        match bootstrap(seeds, params).await {
            Ok(d) if d.snapshot.descriptors.len() >= expected => return Ok(d),
            Ok(d) => last = format!("{} of {expected} relays", d.snapshot.descriptors.len()),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the directory did not converge: {last}")
}

/// Wait until every relay's verified directory lists `expected` relays
/// (relays extend only to relays they list, spec §15.3; bounded: 30 s).
pub async fn wait_for_relays(relays: &[RelayHandle], expected: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        // The view the link tasks check EXTENDs against (spec §15.3), not
        // only the store: it is what a circuit build needs.
        let known = relays.iter().map(|r| r.ctx.listed_count()).min().unwrap_or(0);
        if known >= expected && every_relay_serves(relays, expected).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("not every relay lists all {expected} relays")
}

/// Whether every relay serves a frozen snapshot of at least `expected`
/// relays (a relay whose store is complete may not have frozen a cut yet,
/// spec §13.2).
async fn every_relay_serves(relays: &[RelayHandle], expected: usize) -> bool {
    let params = DirParams { pow_bits: TESTNET_POW_BITS, timeout: Duration::from_secs(5) };
    for r in relays {
        match lamina_client::dir::fetch_snapshot(r.addr, params).await {
            Ok((_, snap)) if snap.descriptors.len() >= expected => {}
            _ => return false,
        }
    }
    true
}

/// The loopback address of relay `i`: 127.(i+1).0.1, a distinct /16 each.
pub fn relay_ip(i: usize) -> IpAddr {
    let octet = u8::try_from(i + 1).unwrap_or(u8::MAX);
    IpAddr::V4(Ipv4Addr::new(127, octet, 0, 1))
}

impl TestNet {
    /// Start `relays` relays, the first `exits` of them exits (loopback
    /// allowed), joined into one gossip directory through relay 0; then a
    /// client that bootstraps from three seeds (majority root) once every
    /// relay is in the directory, and a SOCKS listener on `socks`.
    pub async fn start(relays: usize, exits: usize, socks: SocketAddr) -> anyhow::Result<Self> {
        Self::start_in(relays, exits, socks, None).await
    }

    /// As [`start`](Self::start), keeping each relay's keys and directory
    /// state under `data_dir/relay-N` (so a restart keeps identities).
    pub async fn start_in(
        relays: usize,
        exits: usize,
        socks: SocketAddr,
        data_dir: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        Self::start_with(relays, exits, socks, data_dir, TESTNET_EXIT_POLICY, true).await
    }

    /// As [`start_in`](Self::start_in), the exits with `exit_policy` and,
    /// unless `allow_private_exit`, the implicit private and own-address
    /// rejects in front of it (spec §15.1).
    pub async fn start_with(
        relays: usize,
        exits: usize,
        socks: SocketAddr,
        data_dir: Option<&std::path::Path>,
        exit_policy_text: &str,
        allow_private_exit: bool,
    ) -> anyhow::Result<Self> {
        let policy = Policy { text: exit_policy_text, allow_private_exit };
        Self::start_full(relays, exits, socks, data_dir, policy, NetConfig::default()).await
    }

    /// As [`start_in`](Self::start_in), with the relays' driver tunables
    /// taken from `base` (the CREATE rate is raised and test-network
    /// addresses are allowed for the local network).
    pub async fn start_with_net(
        relays: usize,
        exits: usize,
        socks: SocketAddr,
        data_dir: Option<&std::path::Path>,
        base: NetConfig,
    ) -> anyhow::Result<Self> {
        let policy = Policy { text: TESTNET_EXIT_POLICY, allow_private_exit: true };
        Self::start_full(relays, exits, socks, data_dir, policy, base).await
    }

    /// As [`start`](Self::start), relay `i` advertising `bandwidths[i]`
    /// KB/s (relays past the end of the list advertise 1000).
    pub async fn start_with_bandwidths(
        relays: usize,
        exits: usize,
        socks: SocketAddr,
        bandwidths: &[u32],
    ) -> anyhow::Result<Self> {
        let policy = Policy { text: TESTNET_EXIT_POLICY, allow_private_exit: true };
        Self::start_inner(relays, exits, socks, None, policy, NetConfig::default(), bandwidths).await
    }

    /// The start path behind the others, every relay advertising 1000 KB/s.
    async fn start_full(
        relays: usize,
        exits: usize,
        socks: SocketAddr,
        data_dir: Option<&std::path::Path>,
        exit_rules: Policy<'_>,
        base: NetConfig,
    ) -> anyhow::Result<Self> {
        Self::start_inner(relays, exits, socks, data_dir, exit_rules, base, &[]).await
    }

    /// The one start path behind the others.
    async fn start_inner(
        relays: usize,
        exits: usize,
        socks: SocketAddr,
        data_dir: Option<&std::path::Path>,
        exit_rules: Policy<'_>,
        base: NetConfig,
        bandwidths: &[u32],
    ) -> anyhow::Result<Self> {
        let mut handles: Vec<RelayHandle> = Vec::with_capacity(relays);
        for i in 0..relays {
            let listener = TcpListener::bind(SocketAddr::new(relay_ip(i), 0)).await?;
            let advertised = listener.local_addr()?;
            let relay_dir = data_dir.map(|d| d.join(format!("relay-{i}")));
            let keys = match &relay_dir {
                Some(dir) => RelayKeys::load_or_create(dir, &mut rand_core::OsRng)?,
                None => RelayKeys::ephemeral(&mut rand_core::OsRng),
            };
            let exit = i < exits;
            // A local test network: exits reach loopback (allow-private-exit),
            // one client builds many circuits quickly.
            let policy =
                exit_policy(exit, exit.then_some(exit_rules.text), &[advertised.ip()], exit_rules.allow_private_exit)?;
            let config =
                NetConfig { create_rate: 10_000.0, create_burst: 10_000.0, test_network: true, ..base.clone() };
            let settings = DirSettings {
                gossip: testnet_gossip(),
                seeds: handles.first().map(|h| vec![lamina_directory::Seed::unpinned(h.addr)]).unwrap_or_default(),
                advertised,
                bandwidth_kbps: bandwidths.get(i).copied().unwrap_or(1000),
                exit: exit_summary(&policy),
                family: Vec::new(),
                state_file: relay_dir.map(|d| d.join("descriptors.bin")),
            };
            handles.push(lamina_relay::spawn_with_directory(listener, keys, policy, config, Some(settings))?);
        }
        let seeds: Vec<SocketAddr> = handles.iter().take(3).map(|h| h.addr).collect();
        let directory = wait_for_directory(&seeds, relays).await?;
        wait_for_relays(&handles, relays).await?;
        let infos = directory.relays();
        let client = Client::new(ClientConfig::for_test_network(), infos.clone(), Vec::new());
        let listener = TcpListener::bind(socks).await?;
        let socks_addr = listener.local_addr()?;
        let (socks_shutdown, rx) = watch::channel(false);
        let socks_task = tokio::spawn(lamina_client::net::socks_listener::serve(client.clone(), listener, rx));
        Ok(Self { relays: handles, infos, client, socks_addr, socks_shutdown, socks_task })
    }

    /// Wait until the client holds a built circuit (or `limit` passes).
    pub async fn ready(&self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if self.client.ensure_prebuilt().await > 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Stop everything.
    pub async fn shutdown(self) {
        let _ = self.socks_shutdown.send(true);
        let _ = self.socks_task.await;
        for relay in self.relays {
            relay.shutdown().await;
        }
    }
}

/// A local TCP server that sends `payload` to every connection, then
/// closes; stopped when the handle is aborted or dropped with the runtime.
pub async fn serve_payload(ip: IpAddr, payload: std::sync::Arc<Vec<u8>>) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let payload = std::sync::Arc::clone(&payload);
            tokio::spawn(async move {
                let _ = socket.write_all(&payload).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (addr, task)
}

/// A local echo server.
pub async fn serve_echo(ip: IpAddr) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if socket.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, task)
}

/// Open a SOCKS5 CONNECT to `host:port` through `proxy` (no auth or
/// username/password); returns the socket after a success reply, or the
/// reply code.
pub async fn socks5_connect(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    auth: Option<(&str, &str)>,
) -> std::io::Result<Result<tokio::net::TcpStream, u8>> {
    let mut s = tokio::net::TcpStream::connect(proxy).await?;
    match auth {
        None => s.write_all(&[5, 1, 0]).await?,
        Some(_) => s.write_all(&[5, 1, 2]).await?,
    }
    let mut reply = [0u8; 2];
    s.read_exact(&mut reply).await?;
    if let Some((user, pass)) = auth {
        let mut msg = vec![1, u8::try_from(user.len()).unwrap()];
        msg.extend_from_slice(user.as_bytes());
        msg.push(u8::try_from(pass.len()).unwrap());
        msg.extend_from_slice(pass.as_bytes());
        s.write_all(&msg).await?;
        s.read_exact(&mut reply).await?;
    }
    let mut req = vec![5, 1, 0];
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => {
            req.push(1);
            req.extend_from_slice(&v4.octets());
        }
        Ok(IpAddr::V6(v6)) => {
            req.push(4);
            req.extend_from_slice(&v6.octets());
        }
        Err(_) => {
            req.push(3);
            req.push(u8::try_from(host.len()).unwrap());
            req.extend_from_slice(host.as_bytes());
        }
    }
    req.extend_from_slice(&port.to_be_bytes());
    s.write_all(&req).await?;
    let mut head = [0u8; 10];
    s.read_exact(&mut head).await?;
    if head[1] == 0 {
        Ok(Ok(s))
    } else {
        Ok(Err(head[1]))
    }
}
