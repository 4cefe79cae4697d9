//! End-to-end scenarios on real loopback sockets: relays in this process,
//! a client and its SOCKS proxy, local target servers.

use std::sync::Arc;
use std::time::Duration;

use lamina_tests::{relay_ip, serve_echo, serve_payload, socks5_connect, TestNet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| u8::try_from(i % 251).unwrap_or(0) ^ u8::try_from((i >> 12) % 256).unwrap_or(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_mebibytes_download_and_upload_through_three_hops() {
    let net = TestNet::start(6, 3, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert!(net.ready(Duration::from_secs(10)).await, "a circuit builds");

    let payload = Arc::new(pattern(20 * 1024 * 1024));
    let (server, server_task) = serve_payload("127.0.0.1".parse().unwrap(), Arc::clone(&payload)).await;
    let mut s = socks5_connect(net.socks_addr, "localhost", server.port(), None).await.unwrap().unwrap();
    let mut got = Vec::with_capacity(payload.len());
    s.read_to_end(&mut got).await.unwrap();
    assert_eq!(got.len(), payload.len());
    assert!(got == *payload, "download intact");

    let (echo, echo_task) = serve_echo("127.0.0.1".parse().unwrap()).await;
    let s = socks5_connect(net.socks_addr, "127.0.0.1", echo.port(), None).await.unwrap().unwrap();
    let (mut r, mut w) = s.into_split();
    let up = Arc::new(pattern(20 * 1024 * 1024));
    let up2 = Arc::clone(&up);
    let writer = tokio::spawn(async move {
        w.write_all(&up2).await.unwrap();
        w
    });
    let mut back = vec![0u8; up.len()];
    r.read_exact(&mut back).await.unwrap();
    assert!(back == *up, "upload echoed intact");
    drop(writer.await.unwrap());

    server_task.abort();
    echo_task.abort();
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hop_saw_exactly_one_circuit_layer() {
    let net = TestNet::start(3, 1, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert!(net.ready(Duration::from_secs(10)).await);
    // With three relays in three /16s, every circuit uses all three: each
    // relay created exactly one circuit per client circuit (one layer each).
    let circuits = net.client.circuit_count() as u64;
    for relay in &net.relays {
        assert_eq!(relay.ctx.metrics.circuits_created.get(), circuits);
    }
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_streams() {
    let net = TestNet::start(6, 3, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert!(net.ready(Duration::from_secs(10)).await);
    let (echo, echo_task) = serve_echo("127.0.0.1".parse().unwrap()).await;
    let mut tasks = Vec::new();
    for i in 0..100u32 {
        let proxy = net.socks_addr;
        tasks.push(tokio::spawn(async move {
            let mut s = socks5_connect(proxy, "127.0.0.1", echo.port(), None).await.unwrap().unwrap();
            let msg = format!("stream {i} ").repeat(500).into_bytes();
            s.write_all(&msg).await.unwrap();
            let mut back = vec![0u8; msg.len()];
            s.read_exact(&mut back).await.unwrap();
            back == msg
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap());
    }
    echo_task.abort();
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_destination_gets_a_socks_failure_and_no_connection() {
    let net = TestNet::start(4, 2, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert!(net.ready(Duration::from_secs(10)).await);
    // 10.0.0.1 is outside every testnet exit's policy; the exit must refuse
    // before connecting (the policy is checked before any connect).
    let started = std::time::Instant::now();
    let reply = socks5_connect(net.socks_addr, "10.0.0.1", 80, None).await.unwrap();
    assert_eq!(reply.err(), Some(0x02), "connection not allowed by ruleset");
    assert!(started.elapsed() < Duration::from_secs(10));
    let opened: u64 = net.relays.iter().map(|r| r.ctx.metrics.streams_opened.get()).sum();
    let refused: u64 = net.relays.iter().map(|r| r.ctx.metrics.streams_rejected_policy.get()).sum();
    assert_eq!(opened, 0, "no exit opened a connection");
    assert!(refused >= 1);
    // A closed port gets "connection refused".
    let closed = tokio::net::TcpListener::bind((relay_ip(200), 0)).await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let reply = socks5_connect(net.socks_addr, "127.201.0.1", port, None).await.unwrap();
    assert_eq!(reply.err(), Some(0x05));
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_relay_costs_only_its_streams() {
    let mut net = TestNet::start(6, 3, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert!(net.ready(Duration::from_secs(10)).await);
    let (echo, echo_task) = serve_echo("127.0.0.1".parse().unwrap()).await;
    let mut s = socks5_connect(net.socks_addr, "127.0.0.1", echo.port(), None).await.unwrap().unwrap();
    s.write_all(b"hello").await.unwrap();
    let mut back = [0u8; 5];
    s.read_exact(&mut back).await.unwrap();
    // Kill every exit but one: streams through them die cleanly.
    let killed: Vec<_> = net.relays.drain(0..2).collect();
    for relay in killed {
        relay.shutdown().await;
    }
    let started = std::time::Instant::now();
    let mut ok = false;
    let mut seen = Vec::new();
    while started.elapsed() < Duration::from_secs(20) {
        match socks5_connect(net.socks_addr, "127.0.0.1", echo.port(), None).await {
            Ok(Ok(mut s)) => {
                if s.write_all(b"again").await.is_ok() {
                    let mut back = [0u8; 5];
                    match tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back)).await {
                        Ok(Ok(_)) => {
                            ok = back == *b"again";
                            break;
                        }
                        other => seen.push(format!("{:?}: read {other:?}", started.elapsed())),
                    }
                }
            }
            other => seen.push(format!("{:?}: {other:?}", started.elapsed())),
        }
    }
    assert!(ok, "a new request succeeds on a fresh circuit; failed attempts: {seen:#?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    echo_task.abort();
    net.shutdown().await;
}
