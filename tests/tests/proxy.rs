//! The SOCKS front on real sockets: stream isolation by credentials, many
//! parallel requests, hostile SOCKS clients and hostile link peers.

use std::collections::HashSet;
use std::time::Duration;

use lamina_tests::{serve_echo, socks5_connect, TestNet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Round-trip `msg` through a SOCKS5 stream to `echo`.
async fn echo_once(proxy: std::net::SocketAddr, port: u16, auth: Option<(&str, &str)>, msg: &[u8]) -> bool {
    let Ok(Ok(mut s)) = socks5_connect(proxy, "127.0.0.1", port, auth).await else { return false };
    if s.write_all(msg).await.is_err() {
        return false;
    }
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await.is_ok() && back == msg
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_credentials_never_share_a_circuit() {
    let net = TestNet::start(6, 3, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert!(net.ready(Duration::from_secs(10)).await);
    let (echo, echo_task) = serve_echo("127.0.0.1".parse().unwrap()).await;
    let before: HashSet<_> = net.client.circuits().into_iter().collect();

    // Keep streams open so each class's circuit is visible at once.
    let mut alice =
        socks5_connect(net.socks_addr, "127.0.0.1", echo.port(), Some(("alice", "a"))).await.unwrap().unwrap();
    let mut alice2 =
        socks5_connect(net.socks_addr, "127.0.0.1", echo.port(), Some(("alice", "a"))).await.unwrap().unwrap();
    let mut bob = socks5_connect(net.socks_addr, "127.0.0.1", echo.port(), Some(("bob", "b"))).await.unwrap().unwrap();
    for s in [&mut alice, &mut alice2, &mut bob] {
        s.write_all(b"x").await.unwrap();
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await.unwrap();
    }
    let after: HashSet<_> = net.client.circuits().into_iter().collect();
    // Pre-built circuits are claimed by the first class that uses them:
    // alice's two streams share one circuit, bob's uses a different one.
    let used = net.client.isolation_map();
    let alice_circ = used.iter().find(|(k, _)| k.as_ref().is_some_and(|(u, _)| u == b"alice")).map(|(_, c)| c.clone());
    let bob_circ = used.iter().find(|(k, _)| k.as_ref().is_some_and(|(u, _)| u == b"bob")).map(|(_, c)| c.clone());
    let (alice_circ, bob_circ) = (alice_circ.unwrap(), bob_circ.unwrap());
    assert_eq!(alice_circ.len(), 1, "same credentials share one circuit: {alice_circ:?}");
    assert_eq!(bob_circ.len(), 1);
    assert!(alice_circ.iter().all(|c| !bob_circ.contains(c)), "different credentials never share");
    assert!(after.len() >= before.len());
    echo_task.abort();
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_parallel_requests_all_succeed() {
    let net = TestNet::start(8, 3, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert!(net.ready(Duration::from_secs(10)).await);
    let (echo, echo_task) = serve_echo("127.0.0.1".parse().unwrap()).await;
    let proxy = net.socks_addr;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            tokio::spawn(async move {
                let msg = format!("request {i}").into_bytes();
                echo_once(proxy, echo.port(), None, &msg).await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    assert_eq!(ok, 200);
    echo_task.abort();
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_unsupported_socks_requests_hurt_only_themselves() {
    let net = TestNet::start(4, 2, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert!(net.ready(Duration::from_secs(10)).await);
    let (echo, echo_task) = serve_echo("127.0.0.1".parse().unwrap()).await;
    // Garbage greeting: the connection is closed.
    let mut s = TcpStream::connect(net.socks_addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0, "garbage gets the connection closed");
    // A client that hangs up mid-handshake.
    let mut s = TcpStream::connect(net.socks_addr).await.unwrap();
    s.write_all(&[5, 1]).await.unwrap();
    drop(s);
    // BIND and UDP ASSOCIATE: reply 0x07.
    for cmd in [2u8, 3] {
        let mut s = TcpStream::connect(net.socks_addr).await.unwrap();
        s.write_all(&[5, 1, 0]).await.unwrap();
        let mut r = [0u8; 2];
        s.read_exact(&mut r).await.unwrap();
        s.write_all(&[5, cmd, 0, 1, 127, 0, 0, 1, 0, 80]).await.unwrap();
        let mut reply = [0u8; 10];
        s.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply[1], 0x07);
    }
    // Later requests are unharmed.
    assert!(echo_once(net.socks_addr, echo.port(), None, b"still fine").await);
    echo_task.abort();
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_link_peers_cannot_crash_a_relay() {
    let net = TestNet::start(3, 1, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let relay = net.relays[0].addr;
    // Garbage instead of a preamble, a bad pattern, and a handshake that
    // names the wrong responder key: each closes only that connection.
    for junk in [&b"\xff\xff\xff\xff garbage"[..], &[0x01, 0x09][..], &[0x01, 0x01, 0x00, 0x30, 1, 2, 3][..]] {
        let mut s = TcpStream::connect(relay).await.unwrap();
        let _ = s.write_all(junk).await;
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "connection closed");
    }
    let mut wrong = net.infos[0].hop.clone();
    wrong.link_key = net.infos[1].hop.link_key;
    assert!(lamina_client::net::guard::GuardLink::connect(&wrong, Duration::from_secs(5)).await.is_err());
    // The relay still serves real clients.
    assert!(net.ready(Duration::from_secs(10)).await);
    assert!(net.relays[0].ctx.metrics.handshakes_failed.get() >= 3);
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_create_rate_is_limited_per_ip() {
    use lamina_relay::exit_policy::ExitPolicy;
    use lamina_relay::keys::RelayKeys;
    use lamina_relay::net::registry::NetConfig;
    let listener = tokio::net::TcpListener::bind("127.90.0.1:0").await.unwrap();
    let keys = RelayKeys::ephemeral(&mut rand_core::OsRng);
    let hop = lamina_proto::circuit::client::HopSpec {
        relay_id: keys.identity.relay_id(),
        onion_key: keys.onion.onion_public(),
        link_key: keys.link.link_public(),
        addr: listener.local_addr().unwrap(),
    };
    let config = NetConfig { create_rate: 0.001, create_burst: 5.0, ..NetConfig::default() };
    let relay = lamina_relay::spawn(listener, keys, ExitPolicy::reject_all(), config).unwrap();
    // Two links from the same IP share one bucket of five.
    let a = lamina_client::net::guard::GuardLink::connect(&hop, Duration::from_secs(5)).await.unwrap();
    let b = lamina_client::net::guard::GuardLink::connect(&hop, Duration::from_secs(5)).await.unwrap();
    let mut built = 0;
    for i in 0..10 {
        let link = if i % 2 == 0 { &a } else { &b };
        built += usize::from(link.build(vec![hop.clone()], Duration::from_secs(5)).await.is_ok());
    }
    assert_eq!(built, 5);
    assert_eq!(relay.ctx.metrics.creates_rate_limited.get(), 5);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_reaches_the_destination_and_the_reply_comes_back() {
    let net = TestNet::start(4, 2, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert!(net.ready(Duration::from_secs(10)).await);
    // A server that reads until EOF, then answers with what it counted.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).await.unwrap();
        s.write_all(format!("got {} bytes", all.len()).as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
    });
    let mut s = socks5_connect(net.socks_addr, "127.0.0.1", port, None).await.unwrap().unwrap();
    s.write_all(&vec![b'x'; 100_000]).await.unwrap();
    s.shutdown().await.unwrap(); // half-close: we still read
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut reply)).await.unwrap().unwrap();
    assert_eq!(reply, "got 100000 bytes");
    server.await.unwrap();
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retired_circuits_leave_the_pool_and_close_when_idle() {
    use lamina_client::{Client, ClientConfig};
    let net = TestNet::start(3, 1, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (echo, echo_task) = serve_echo("127.0.0.1".parse().unwrap()).await;
    let config =
        ClientConfig { max_dirtiness: Duration::from_millis(100), prebuilt: 1, ..ClientConfig::for_test_network() };
    let client = Client::new(config, net.infos.clone(), Vec::new());
    assert!(client.ensure_prebuilt().await > 0);
    let target = lamina_proto::msg::Target::Ip("127.0.0.1".parse().unwrap());
    // Circuit ids are per guard link: identify circuits by (guard, id).
    let claimed = |client: &Client| -> Vec<_> {
        client.isolation_map().into_iter().filter(|(class, _)| class.is_none()).flat_map(|(_, c)| c).collect()
    };
    let first = client.connect(target.clone(), echo.port(), None).await.unwrap();
    let first_key = claimed(&client);
    assert_eq!(first_key.len(), 1);
    drop(first); // the stream's owner goes away; the stream ends with it
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = client.connect(target, echo.port(), None).await.unwrap();
    let second_key = claimed(&client);
    assert_eq!(second_key.len(), 1);
    assert_ne!(second_key, first_key, "a retired circuit takes no new streams");
    assert!(!client.circuits().contains(&first_key[0]), "and leaves the pool");
    // The retired circuit is idle (its stream ended when its owner went
    // away), so it is closed: each of its three hops reports it.
    let closed = || net.relays.iter().map(|r| r.ctx.metrics.circuits_closed.get()).sum::<u64>();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while closed() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed() >= 3, "the retired circuit was closed at every hop ({} closes)", closed());
    drop(second);
    echo_task.abort();
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_serves_prometheus_text() {
    let net = TestNet::start(3, 1, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert!(net.ready(Duration::from_secs(10)).await);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let ctx = std::sync::Arc::clone(&net.relays[0].ctx);
    let server = tokio::spawn(lamina_relay::serve_metrics(ctx, listener));
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).await.unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"));
    for name in [
        "lamina_circuits_created_total",
        "lamina_cells_received_total",
        "lamina_link_bytes_sent_total",
        "lamina_directory_relays",
    ] {
        assert!(text.contains(&format!("# TYPE {name}")), "{name} in {text}");
    }
    // The directory gauge reports the three relays, circuits were created.
    assert!(text.contains("lamina_directory_relays 3"), "{text}");
    assert!(!text.contains("lamina_circuits_created_total 0\n"), "{text}");
    server.abort();
    net.shutdown().await;
}
