//! The SOCKS front cannot be starved (spec §10.4): idle connections are
//! dropped oldest-first when the front is full, applications that close or
//! half-close give their slot back, the handshake time-out is configurable,
//! and optimistic data is delivered.

// Test support code: a broken set-up should fail loudly (CONTRIBUTING.md P15).
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lamina_client::net::socks_listener::{serve_with, SocksSettings};
use lamina_tests::{serve_echo, socks5_connect, TestNet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Round-trip `msg` through a SOCKS5 stream to `echo`.
async fn echo_once(proxy: SocketAddr, port: u16, msg: &[u8]) -> Result<(), String> {
    let mut s = match socks5_connect(proxy, "127.0.0.1", port, None).await {
        Ok(Ok(s)) => s,
        Ok(Err(code)) => return Err(format!("SOCKS reply {code}")),
        Err(e) => return Err(format!("SOCKS: {e}")),
    };
    s.write_all(msg).await.map_err(|e| e.to_string())?;
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await.map_err(|e| e.to_string())?;
    if back == msg {
        Ok(())
    } else {
        Err("wrong echo".into())
    }
}

/// The soft open-files limit of this process (`/proc/self/limits`).
fn open_files_limit() -> usize {
    let text = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// A SOCKS listener with `settings` in front of `net`'s client.
async fn front(net: &TestNet, settings: SocksSettings) -> (SocketAddr, watch::Sender<bool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(serve_with(net.client.clone(), listener, stopped, settings));
    (addr, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_do_not_starve_an_honest_request() {
    let net = TestNet::start(3, 1, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert!(net.ready(Duration::from_secs(10)).await);
    let (echo, echo_task) = serve_echo("127.0.0.1".parse().unwrap()).await;
    // Each idle connection costs two descriptors here (both ends live in
    // this process); scale down only if the soft limit cannot hold 2,000.
    let idle_count = 2000.min(open_files_limit().saturating_sub(600) / 2);
    assert!(idle_count >= 1100, "the open-files limit is too low for this test ({})", open_files_limit());
    let mut idle = Vec::with_capacity(idle_count);
    for i in 0..idle_count {
        let mut s = TcpStream::connect(net.socks_addr).await.unwrap();
        if i % 2 == 0 {
            // Half of them start a greeting and stall.
            s.write_all(&[5]).await.unwrap();
        }
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 0..5 {
        let started = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(2), echo_once(net.socks_addr, echo.port(), b"hi")).await;
        assert!(
            matches!(result, Ok(Ok(()))),
            "round {round}: honest request with {idle_count} idle connections held: {result:?} after {:?}",
            started.elapsed()
        );
    }
    drop(idle);
    echo_task.abort();
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applications_that_half_close_or_close_give_their_slot_back() {
    let net = TestNet::start(3, 1, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert!(net.ready(Duration::from_secs(10)).await);
    let (echo, echo_task) = serve_echo("127.0.0.1".parse().unwrap()).await;
    // A destination that never answers and never closes.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let silent_task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let settings = SocksSettings { max_connections: 4, ..SocksSettings::default() };
    let (proxy, stop) = front(&net, settings).await;
    // Fill every slot with connected streams whose applications then
    // half-close (two) or close (two).
    let mut kept = Vec::new();
    for i in 0..4 {
        let mut s = socks5_connect(proxy, "127.0.0.1", silent_port, None).await.unwrap().unwrap();
        s.write_all(b"request").await.unwrap();
        if i % 2 == 0 {
            s.shutdown().await.unwrap();
            kept.push(s);
        }
    }
    // Their slots come back: an honest request gets through.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut result = Err(String::from("no attempt"));
    while Instant::now() < deadline {
        result = echo_once(proxy, echo.port(), b"hello").await;
        if result.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(result.is_ok(), "slots of closed and half-closed applications were released: {result:?}");
    let _ = stop.send(true);
    drop(kept);
    silent_task.abort();
    echo_task.abort();
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handshake_time_out_is_configurable() {
    let net = TestNet::start(3, 1, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let settings = SocksSettings { handshake_timeout: Duration::from_millis(300), ..SocksSettings::default() };
    let (proxy, stop) = front(&net, settings).await;
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(&[5, 1]).await.unwrap();
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "a stalled handshake is closed: {read:?}");
    let _ = stop.send(true);
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_data_gets_its_response() {
    let net = TestNet::start(3, 1, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    assert!(net.ready(Duration::from_secs(10)).await);
    let (echo, echo_task) = serve_echo("127.0.0.1".parse().unwrap()).await;
    let mut s = TcpStream::connect(net.socks_addr).await.unwrap();
    // Greeting, request and payload in one write, without waiting.
    let mut bytes = vec![5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1];
    bytes.extend_from_slice(&echo.port().to_be_bytes());
    bytes.extend_from_slice(b"optimistic hello");
    s.write_all(&bytes).await.unwrap();
    let mut head = [0u8; 12];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut head)).await.unwrap().unwrap();
    assert_eq!(&head[..2], &[5, 0]);
    assert_eq!(head[3], 0, "SOCKS success");
    let mut back = vec![0u8; b"optimistic hello".len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back)).await.unwrap().unwrap();
    assert_eq!(back, b"optimistic hello");
    echo_task.abort();
    net.shutdown().await;
}
