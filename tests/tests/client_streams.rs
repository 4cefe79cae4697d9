//! Streams never kill their neighbours (spec §10.1): a class whose circuit
//! is full of streams gets another circuit; no live stream is destroyed.

// Test support code: a broken set-up should fail loudly (CONTRIBUTING.md P15).
#![allow(clippy::unwrap_used)]
use std::net::SocketAddr;
use std::time::Duration;

use lamina_tests::{socks5_connect, TestNet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server that reads a request line, holds it for `hold`, then answers
/// `ok <request>` and closes.
async fn serve_slow(hold: Duration) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let Ok(n) = socket.read(&mut buf).await else { return };
                tokio::time::sleep(hold).await;
                let mut reply = b"ok ".to_vec();
                reply.extend_from_slice(&buf[..n]);
                let _ = socket.write_all(&reply).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (addr, task)
}

/// One request through the proxy in the default class; true on the right answer.
async fn request(proxy: SocketAddr, port: u16, i: usize) -> Result<(), String> {
    let mut s = match socks5_connect(proxy, "127.0.0.1", port, None).await {
        Ok(Ok(s)) => s,
        Ok(Err(code)) => return Err(format!("SOCKS reply {code}")),
        Err(e) => return Err(e.to_string()),
    };
    let msg = format!("req{i}");
    s.write_all(msg.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut back = Vec::new();
    s.read_to_end(&mut back).await.map_err(|e| e.to_string())?;
    if back == format!("ok {msg}").as_bytes() {
        Ok(())
    } else {
        Err(format!("wrong answer {:?}", String::from_utf8_lossy(&back)))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_concurrent_streams_in_one_class_all_complete() {
    let net = TestNet::start(4, 2, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert!(net.ready(Duration::from_secs(10)).await);
    let (server, server_task) = serve_slow(Duration::from_secs(1)).await;
    let proxy = net.socks_addr;
    let tasks: Vec<_> = (0..600)
        .map(|i| {
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(60), request(proxy, server.port(), i)).await
            })
        })
        .collect();
    let mut failures = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{i}: {e}")),
            Err(_) => failures.push(format!("{i}: timed out")),
        }
    }
    assert!(failures.is_empty(), "{} of 600 failed, e.g. {:?}", failures.len(), &failures[..failures.len().min(5)]);
    // More than one circuit carried the class (512 streams per circuit at most).
    let default_class: Vec<_> =
        net.client.isolation_map().into_iter().filter(|(c, _)| c.is_none()).flat_map(|(_, c)| c).collect();
    assert!(default_class.len() >= 2, "the class got a second circuit: {default_class:?}");
    server_task.abort();
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_is_bounded_in_circuits_and_creates_are_paced() {
    use lamina_client::{Client, ClientConfig, ClientError};
    let net = TestNet::start(4, 2, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (server, server_task) = serve_slow(Duration::from_secs(30)).await;
    let config = ClientConfig {
        prebuilt: 0,
        streams_per_circuit: 2,
        max_circuits_per_class: 2,
        create_rate: 4.0,
        create_burst: 1.0,
        ..ClientConfig::for_test_network()
    };
    let client = Client::new(config, net.infos.clone(), Vec::new());
    let target = lamina_proto::msg::Target::Ip("127.0.0.1".parse().unwrap());
    let class = Some((b"u".to_vec(), b"p".to_vec()));
    let mut streams = Vec::new();
    for _ in 0..4 {
        streams.push(client.connect(target.clone(), server.port(), class.clone()).await.unwrap());
    }
    let map = client.isolation_map();
    let circuits = &map.iter().find(|(c, _)| *c == class).unwrap().1;
    assert_eq!(circuits.len(), 2, "two streams per circuit, two circuits: {circuits:?}");
    // The class is at its cap and every circuit is full: refused, and no
    // live stream is touched.
    let fifth = client.connect(target.clone(), server.port(), class.clone()).await;
    assert!(matches!(fifth, Err(ClientError::Busy(_))), "{fifth:?}");
    assert_eq!(client.circuit_count(), 2);
    // Another class is not affected.
    let other = client.connect(target.clone(), server.port(), None).await;
    assert!(other.is_ok(), "{other:?}");
    // An ended stream frees its place for the class.
    drop(streams.pop());
    let again = client.connect(target.clone(), server.port(), class.clone()).await;
    assert!(again.is_ok(), "{again:?}");
    // CREATE pacing: burst 1 at 4/s per guard. Seven builds over at most
    // three guards put three on one guard: two waits of 0.25 s at least.
    // None is refused.
    let started = std::time::Instant::now();
    for _ in 0..7 {
        client.probe_build().await.unwrap();
    }
    assert!(started.elapsed() >= Duration::from_millis(490), "paced: {:?}", started.elapsed());
    drop(streams);
    server_task.abort();
    net.shutdown().await;
}
