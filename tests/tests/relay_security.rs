//! Relay security through real sockets (issue 9, relay half; spec §15):
//! safe exits, authenticated extends, identity-keyed link registry,
//! privileges from evidence, and relays releasing what they hold.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lamina_client::net::guard::GuardLink;
use lamina_proto::circuit::client::HopSpec;
use lamina_relay::exit_policy::ExitPolicy;
use lamina_relay::keys::RelayKeys;
use lamina_relay::net::link::connect_relay;
use lamina_relay::net::registry::NetConfig;
use lamina_relay::net::setup::LinkSetupError;
use lamina_tests::{serve_echo, socks5_connect, testnet_net_config, TestNet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// SOCKS5 reply "connection not allowed by ruleset".
const NOT_ALLOWED: u8 = 0x02;
/// SOCKS5 reply "general failure".
const GENERAL_FAILURE: u8 = 0x01;

/// The hop of relay `i` of `net` as a client would name it.
fn hop(net: &TestNet, i: usize) -> HopSpec {
    let id = net.relays[i].relay_id();
    net.infos.iter().find(|r| r.hop.relay_id == id).expect("listed").hop.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_all_exit_refuses_private_metadata_and_own_addresses() {
    let net = TestNet::start_with(3, 1, "127.0.0.1:0".parse().unwrap(), None, "accept *:*", false).await.unwrap();
    assert!(net.ready(Duration::from_secs(20)).await);
    let (echo, _server) = serve_echo("127.0.0.1".parse().unwrap()).await;
    let own = net.relays[0].addr;
    for (host, port) in [
        ("127.0.0.1", echo.port()),
        ("10.0.0.1", 80),
        ("169.254.169.254", 80),
        ("::1", 80),
        ("localhost", echo.port()),
        (&own.ip().to_string(), own.port()),
    ] {
        let rejected = net.relays[0].ctx.metrics.streams_rejected_policy.get();
        let reply = socks5_connect(net.socks_addr, host, port, None).await.unwrap();
        // The client retries a policy refusal on another exit; with the only
        // exit refusing, SOCKS reports "not allowed" or a general failure.
        let code = reply.err();
        assert!(matches!(code, Some(NOT_ALLOWED | GENERAL_FAILURE)), "{host}:{port}: SOCKS reply {code:?}");
        let now = net.relays[0].ctx.metrics.streams_rejected_policy.get();
        assert!(now > rejected, "{host}:{port} was refused by the exit policy");
    }
    assert_eq!(net.relays[0].ctx.metrics.streams_opened.get(), 0, "no destination socket was opened");
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allow_private_exit_reaches_loopback() {
    let net = TestNet::start_with(3, 1, "127.0.0.1:0".parse().unwrap(), None, "accept *:*", true).await.unwrap();
    assert!(net.ready(Duration::from_secs(20)).await);
    let (echo, _server) = serve_echo("127.0.0.1".parse().unwrap()).await;
    let mut s = socks5_connect(net.socks_addr, "127.0.0.1", echo.port(), None).await.unwrap().expect("connects");
    s.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut got)).await.unwrap().unwrap();
    assert_eq!(&got, b"ping");
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extend_with_wrong_key_wrong_address_or_unknown_relay_is_refused() {
    let net = TestNet::start(3, 1, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (guard, next) = (hop(&net, 1), hop(&net, 2));
    let link = GuardLink::connect(&guard, Duration::from_secs(10)).await.unwrap();
    // The honest two-hop circuit builds.
    link.build(vec![guard.clone(), next.clone()], Duration::from_secs(10)).await.expect("honest extend");
    let refused = || net.relays[1].ctx.metrics.extends_refused.get();
    assert_eq!(refused(), 0);

    // An attacker's relay: real keys, a real listener, not in the directory.
    let attacker_listener = TcpListener::bind("127.9.0.1:0").await.unwrap();
    let attacker_addr = attacker_listener.local_addr().unwrap();
    let attacker_keys = RelayKeys::ephemeral(&mut rand_core::OsRng);
    let attacker_link = attacker_keys.link.link_public();
    let attacker =
        lamina_relay::spawn(attacker_listener, attacker_keys, ExitPolicy::reject_all(), testnet_net_config()).unwrap();

    let wrong_key = HopSpec { link_key: attacker_link, ..next.clone() };
    let wrong_addr = HopSpec { addr: attacker_addr, ..next.clone() };
    let hijack = HopSpec { link_key: attacker_link, addr: attacker_addr, ..next.clone() };
    let unknown = HopSpec { relay_id: attacker.relay_id(), link_key: attacker_link, addr: attacker_addr, ..next };
    let ourselves = HopSpec { ..guard.clone() };
    for (n, bad) in [wrong_key, wrong_addr, hijack, unknown, ourselves].into_iter().enumerate() {
        let built = link.build(vec![guard.clone(), bad], Duration::from_secs(10)).await;
        assert!(built.is_err(), "bad extend {n} must fail");
        if n < 4 {
            assert_eq!(refused(), n as u64 + 1, "extend {n} refused by the directory check, before dialling");
        }
    }
    // An extend to the relay itself is refused by the circuit core before
    // the directory check is reached (spec §7.6).
    assert_eq!(attacker.ctx.link_count(), 0, "the guard never dialled the attacker");
    attacker.shutdown().await;
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_key_alone_cannot_register_a_link_as_another_relay() {
    let net = TestNet::start(3, 1, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let relay = &net.relays[1];
    let victim = net.relays[2].relay_id();
    let attacker_listener = TcpListener::bind("127.9.0.1:0").await.unwrap();
    let attacker_addr = attacker_listener.local_addr().unwrap();
    let attacker_keys = RelayKeys::ephemeral(&mut rand_core::OsRng);
    let attacker_link = attacker_keys.link.link_public();
    let attacker =
        lamina_relay::spawn(attacker_listener, attacker_keys, ExitPolicy::reject_all(), testnet_net_config()).unwrap();
    // Even bypassing the EXTEND check, dialling "the victim" at the
    // attacker's address with the attacker's link key fails: the XK
    // responder's certificate names the attacker, not the victim.
    let before = relay.ctx.link_to(&victim).map(|(id, _)| id);
    let dialled = connect_relay(&relay.ctx, attacker_addr, victim, attacker_link).await;
    assert!(
        matches!(dialled, Err(LinkSetupError::Handshake(lamina_proto::error::LinkError::UnexpectedPeer))),
        "{dialled:?}"
    );
    assert_eq!(relay.ctx.link_to(&victim).map(|(id, _)| id), before, "the registry entry is untouched");
    if let Some((_, h)) = relay.ctx.link_to(&victim) {
        assert!(!h.inbox.is_closed());
    }
    // The honest link to the attacker's own identity is registered as that
    // identity only.
    let (first, _) =
        connect_relay(&relay.ctx, attacker_addr, attacker.relay_id(), attacker_link).await.expect("honest dial");
    assert_eq!(relay.ctx.link_to(&attacker.relay_id()).map(|(id, _)| id), Some(first));
    // A second link of the same relay does not replace the registered one.
    let (second, _) =
        connect_relay(&relay.ctx, attacker_addr, attacker.relay_id(), attacker_link).await.expect("second dial");
    assert_ne!(first, second);
    assert_eq!(relay.ctx.link_to(&attacker.relay_id()).map(|(id, _)| id), Some(first), "the first link stays");
    assert_ne!(relay.ctx.link_to(&victim).map(|(id, _)| id), relay.ctx.link_to(&attacker.relay_id()).map(|(id, _)| id));
    attacker.shutdown().await;
    net.shutdown().await;
}

/// A relay on `ip` with default (non-test-network) settings but for
/// `config`, and no directory.
async fn lone_relay(ip: &str, config: NetConfig) -> lamina_relay::RelayHandle {
    let ip = ip.parse().expect("an IP address");
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await.expect("bind");
    let keys = RelayKeys::ephemeral(&mut rand_core::OsRng);
    lamina_relay::spawn(listener, keys, ExitPolicy::reject_all(), config).expect("start the relay")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_to_non_public_addresses_need_test_network() {
    let target = lone_relay("127.11.0.1", NetConfig::default()).await;
    let target_link = target.ctx.keys.link.link_public();
    let strict = lone_relay("127.12.0.1", NetConfig::default()).await;
    let dialled = connect_relay(&strict.ctx, target.addr, target.relay_id(), target_link).await;
    assert!(matches!(dialled, Err(LinkSetupError::NonPublic)), "{dialled:?}");
    assert_eq!(target.ctx.link_count(), 0);
    let test = lone_relay("127.13.0.1", NetConfig { test_network: true, ..NetConfig::default() }).await;
    connect_relay(&test.ctx, target.addr, target.relay_id(), target_link).await.expect("test network dials loopback");
    for r in [target, strict, test] {
        r.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlisted_relay_identity_gets_no_create_exemption() {
    // A relay without a directory lists nobody: a peer proving a self-made
    // relay identity is a client and meets the CREATE rate limit (M-2).
    let config = NetConfig { create_rate: 0.001, create_burst: 2.0, test_network: true, ..NetConfig::default() };
    let guard = lone_relay("127.14.0.1", config).await;
    let guard_hop = HopSpec {
        relay_id: guard.relay_id(),
        onion_key: guard.ctx.keys.onion.onion_public(),
        link_key: guard.ctx.keys.link.link_public(),
        addr: guard.addr,
    };
    let fake = lone_relay("127.15.0.1", NetConfig { test_network: true, ..NetConfig::default() }).await;
    let (_, fake_link) = connect_relay(&fake.ctx, guard.addr, guard.relay_id(), guard_hop.link_key).await.unwrap();
    // CREATE cells over the self-certified relay link: only the burst passes.
    for i in 0..10u32 {
        let (_, onionskin) =
            lamina_crypto::handshake::client_start(&mut rand_core::OsRng, &guard_hop.relay_id, &guard_hop.onion_key);
        let cell = lamina_proto::cell::Cell::create(lamina_proto::cell::CircId(2 * i + 1), &onionskin);
        fake_link.queues.push_out(&fake.ctx, vec![cell]);
    }
    let started = Instant::now();
    while guard.ctx.metrics.creates_rate_limited.get() < 8 && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(guard.ctx.metrics.creates_rate_limited.get(), 8, "self-made relay ids are rate-limited");
    assert_eq!(guard.ctx.metrics.circuits_created.get(), 2);
    for r in [guard, fake] {
        r.shutdown().await;
    }
}

/// How many sockets with local address `addr` are in CLOSE-WAIT
/// (`/proc/net/tcp`, IPv4 only).
fn close_wait_count(addr: SocketAddr) -> usize {
    let SocketAddr::V4(v4) = addr else { return 0 };
    let ip = u32::from_le_bytes(v4.ip().octets());
    let local = format!("{ip:08X}:{:04X}", v4.port());
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.get(1) == Some(&local.as_str()) && cols.get(3) == Some(&"08")
        })
        .count()
}

/// How many sockets with local address `addr` and a peer on `peer_ip` are
/// established or in CLOSE-WAIT (`/proc/net/tcp`, IPv4 only).
fn open_sockets(addr: SocketAddr, peer_ip: std::net::Ipv4Addr) -> usize {
    let SocketAddr::V4(v4) = addr else { return 0 };
    let local = format!("{:08X}:{:04X}", u32::from_le_bytes(v4.ip().octets()), v4.port());
    let peer = format!("{:08X}:", u32::from_le_bytes(peer_ip.octets()));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            cols.get(1) == Some(&local.as_str())
                && cols.get(2).is_some_and(|r| r.starts_with(&peer))
                && matches!(cols.get(3), Some(&"01" | &"08"))
        })
        .count()
}

/// Wait (bounded by `limit`) until `done` holds.
async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_down_link_with_an_extended_circuit_leaves_no_close_wait_socket() {
    let net = TestNet::start(3, 1, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (guard, next) = (hop(&net, 1), hop(&net, 2));
    let relay = &net.relays[1];
    // Client links come from 127.0.0.1; relays dial from their own addresses.
    let client_links = || open_sockets(relay.addr, "127.0.0.1".parse().unwrap());
    for round in 0..3 {
        let link = GuardLink::connect(&guard, Duration::from_secs(10)).await.unwrap();
        link.build(vec![guard.clone(), next.clone()], Duration::from_secs(10)).await.expect("extended circuit");
        assert_eq!(client_links(), 1, "round {round}: one client link");
        // The client goes away without closing its circuit.
        drop(link);
        assert!(
            eventually(Duration::from_secs(10), || client_links() == 0).await,
            "round {round}: the link is torn down ({} client sockets still open)",
            client_links()
        );
        assert!(
            eventually(Duration::from_secs(10), || close_wait_count(relay.addr) == 0).await,
            "round {round}: {} sockets of the relay stay in CLOSE-WAIT",
            close_wait_count(relay.addr)
        );
    }
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_anonymous_links_are_closed_and_busy_ones_kept() {
    let timeout = Duration::from_millis(300);
    let config = NetConfig { idle_link_timeout: timeout, test_network: true, ..NetConfig::default() };
    let relay = lone_relay("127.16.0.1", config).await;
    let hop = HopSpec {
        relay_id: relay.relay_id(),
        onion_key: relay.ctx.keys.onion.onion_public(),
        link_key: relay.ctx.keys.link.link_public(),
        addr: relay.addr,
    };
    let busy = GuardLink::connect(&hop, Duration::from_secs(10)).await.unwrap();
    busy.build(vec![hop.clone()], Duration::from_secs(10)).await.expect("one-hop circuit");
    let idle = GuardLink::connect(&hop, Duration::from_secs(10)).await.unwrap();
    assert!(
        eventually(Duration::from_secs(20), || relay.ctx.metrics.links_idle_closed.get() == 1).await,
        "the idle link is closed after its time-out"
    );
    assert!(eventually(Duration::from_secs(10), || idle.is_closed()).await, "the client sees the close");
    assert!(eventually(Duration::from_secs(10), || close_wait_count(relay.addr) == 0).await);
    // Well past the time-out, the link with a circuit is still open.
    tokio::time::sleep(timeout * 4).await;
    assert!(!busy.is_closed());
    assert_eq!(relay.ctx.link_count(), 1);
    assert_eq!(relay.ctx.metrics.links_idle_closed.get(), 1);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_4096_idle_connections_held_a_new_honest_link_is_accepted() {
    // Default limits: 4,096 connections, 64 per address. The attacker holds
    // every slot from 64 addresses and never handshakes.
    let relay = lone_relay("127.19.0.1", NetConfig { test_network: true, ..NetConfig::default() }).await;
    let hop = HopSpec {
        relay_id: relay.relay_id(),
        onion_key: relay.ctx.keys.onion.onion_public(),
        link_key: relay.ctx.keys.link.link_public(),
        addr: relay.addr,
    };
    let mut held = Vec::with_capacity(4096);
    for i in 0..4096usize {
        let source = SocketAddr::new(std::net::Ipv4Addr::new(127, 100, u8::try_from(i / 64).unwrap(), 1).into(), 0);
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(source).unwrap();
        held.push(socket.connect(relay.addr).await.unwrap());
    }
    // Let the slots fill and the attackers age past the shedding minimum.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let started = Instant::now();
    let honest = GuardLink::connect(&hop, Duration::from_secs(15)).await.expect("an honest link is accepted");
    honest.build(vec![hop.clone()], Duration::from_secs(15)).await.expect("and carries a circuit");
    let took = started.elapsed();
    #[allow(clippy::print_stderr)]
    {
        eprintln!("honest link + circuit with 4096 idle connections held: {} ms", took.as_millis());
    }
    drop(held);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_onion_key_is_accepted_until_the_next_rotation() {
    let relay = lone_relay("127.20.0.1", NetConfig { test_network: true, ..NetConfig::default() }).await;
    let k0 = HopSpec {
        relay_id: relay.relay_id(),
        onion_key: relay.ctx.onion_public(),
        link_key: relay.ctx.keys.link.link_public(),
        addr: relay.addr,
    };
    let link = GuardLink::connect(&k0, Duration::from_secs(10)).await.unwrap();
    let build = |hop: &HopSpec| link.build(vec![hop.clone()], Duration::from_secs(10));
    build(&k0).await.expect("the start-up key");

    relay.ctx.rotate_onion(lamina_crypto::keys::StaticKeypair::generate(&mut rand_core::OsRng));
    let k1 = HopSpec { onion_key: relay.ctx.onion_public(), ..k0.clone() };
    assert_ne!(k1.onion_key, k0.onion_key);
    build(&k1).await.expect("the new key");
    build(&k0).await.expect("the previous key during the overlap window");

    relay.ctx.rotate_onion(lamina_crypto::keys::StaticKeypair::generate(&mut rand_core::OsRng));
    let k2 = HopSpec { onion_key: relay.ctx.onion_public(), ..k0.clone() };
    build(&k2).await.expect("the newest key");
    build(&k1).await.expect("the previous key");
    assert!(build(&k0).await.is_err(), "a key two rotations old is refused");
    relay.shutdown().await;
}

/// The inode of the IPv4 socket `local` → `remote` in `/proc/net/tcp`:
/// 0 once no process holds it (closed, orphaned until the kernel is done).
fn socket_inode(local: SocketAddr, remote: SocketAddr) -> Option<u64> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!("{:08X}:{:04X}", u32::from_le_bytes(v4.ip().octets()), v4.port()),
        SocketAddr::V6(_) => String::new(),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.get(1) == Some(&local.as_str()) && cols.get(2) == Some(&remote.as_str()))
            .then(|| cols.get(9).and_then(|c| c.parse().ok()))
            .flatten()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_stream_closes_its_destination_socket() {
    let net = TestNet::start(3, 1, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert!(net.ready(Duration::from_secs(20)).await);
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let watcher = tokio::spawn(async move {
        let (mut socket, exit_side) = server.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        // Until the exit shuts its write side (the client ended the stream).
        while matches!(tokio::time::timeout(Duration::from_secs(20), socket.read(&mut buf)).await, Ok(Ok(n)) if n > 0) {
        }
        // A silent destination: the exit must still close its socket
        // entirely (no process holds it any more), not only its write side.
        let closed =
            eventually(Duration::from_secs(10), || socket_inode(exit_side, server_addr).is_none_or(|i| i == 0));
        (closed.await, socket)
    });
    // A circuit to the exit (relay 0); a stream that the client ENDs.
    let (guard, middle, exit) = (hop(&net, 1), hop(&net, 2), hop(&net, 0));
    let link = GuardLink::connect(&guard, Duration::from_secs(10)).await.unwrap();
    let circ = link.build(vec![guard, middle, exit], Duration::from_secs(10)).await.expect("three hops");
    let target = lamina_proto::msg::Target::Ip(server_addr.ip());
    let (stream, mut events) = link.begin(circ, target, server_addr.port()).await.expect("begin");
    let first = tokio::time::timeout(Duration::from_secs(10), events.recv()).await.unwrap();
    assert!(matches!(first, Some(lamina_client::net::guard::StreamEvent::Connected)), "{first:?}");
    link.send(circ, stream, b"hello".to_vec()).await.unwrap();
    link.end(circ, stream).await;
    let (closed, _socket) = watcher.await.unwrap();
    assert!(closed, "the destination socket was closed when the stream ended");
    net.shutdown().await;
}
