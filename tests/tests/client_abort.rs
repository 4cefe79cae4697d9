//! Aborted downloads do not stall their class (issue 10 acceptance): ten
//! downloads in the default class aborted mid-transfer, then a new request
//! in the same class succeeds promptly and completely.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lamina_tests::{serve_payload, socks5_connect, TestNet};
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_aborted_downloads_then_a_new_request_in_the_same_class_succeeds() {
    let net = TestNet::start(3, 1, "127.0.0.1:0".parse().expect("addr")).await.expect("testnet");
    assert!(net.ready(Duration::from_secs(10)).await);
    let payload: Arc<Vec<u8>> = Arc::new((0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect());
    let (server, server_task) = serve_payload("127.0.0.1".parse().expect("ip"), Arc::clone(&payload)).await;
    for round in 0..10 {
        let mut s = socks5_connect(net.socks_addr, "127.0.0.1", server.port(), None)
            .await
            .expect("socks")
            .unwrap_or_else(|code| panic!("round {round}: SOCKS reply {code}"));
        // Read part of it, then abort (drop the socket) mid-transfer.
        let mut got = vec![0u8; 256 * 1024];
        tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut got))
            .await
            .unwrap_or_else(|_| panic!("round {round}: the download stalled"))
            .expect("read");
        drop(s);
    }
    let started = Instant::now();
    let mut s = socks5_connect(net.socks_addr, "127.0.0.1", server.port(), None)
        .await
        .expect("socks")
        .unwrap_or_else(|code| panic!("SOCKS reply {code}"));
    let mut first = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut first))
        .await
        .expect("the new request answers promptly")
        .expect("read");
    let to_first_byte = started.elapsed();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut rest)).await.expect("complete").expect("read");
    let took = started.elapsed();
    assert_eq!(rest.len() + 1, payload.len(), "the whole payload arrived");
    assert_eq!(first[0], payload[0]);
    assert_eq!(&rest[..], &payload[1..]);
    tracing::info!("after ten aborts: first byte in {to_first_byte:?}, 8 MiB in {took:?}");
    server_task.abort();
    net.shutdown().await;
}
