//! The proxy with a real SOCKS client: curl in every SOCKS mode it has,
//! against a local HTTP server reached through three hops. curl is part of
//! the machine image (and `.ci/run` installs it if missing).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use lamina_tests::TestNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A minimal HTTP/1.1 server answering every request with `body`.
async fn serve_http(body: Arc<Vec<u8>>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let body = Arc::clone(&body);
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16 * 1024 {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(&body).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (addr, task)
}

/// Run curl with `args`; returns the body it downloaded.
async fn curl(args: &[String]) -> Vec<u8> {
    let out = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "60"])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("curl runs (install curl)");
    assert!(out.status.success(), "curl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_fetches_intact_in_every_socks_mode() {
    let net = TestNet::start(6, 3, "127.0.0.1:0".parse().expect("addr")).await.expect("testnet");
    let body: Arc<Vec<u8>> =
        Arc::new((0..8 * 1024 * 1024).map(|i: usize| u8::try_from(i * 7 % 256).unwrap_or(0)).collect());
    let (server, task) = serve_http(Arc::clone(&body)).await;
    let proxy = net.socks_addr;
    let port = server.port();
    let modes: Vec<Vec<String>> = vec![
        vec!["--socks5-hostname".into(), proxy.to_string(), format!("http://localhost:{port}/blob")],
        vec!["--socks5".into(), proxy.to_string(), format!("http://127.0.0.1:{port}/blob")],
        vec!["--socks4a".into(), proxy.to_string(), format!("http://localhost:{port}/blob")],
        vec!["--socks4".into(), proxy.to_string(), format!("http://127.0.0.1:{port}/blob")],
        vec!["-x".into(), format!("socks5h://alice:secret@{proxy}"), format!("http://localhost:{port}/blob")],
    ];
    for args in modes {
        let got = curl(&args).await;
        assert_eq!(got.len(), body.len(), "{args:?}");
        assert!(got == *body, "{args:?}: body intact");
    }
    // A closed port: curl reports a proxy failure within seconds, never hangs.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let closed_port = closed.local_addr().expect("addr").port();
    drop(closed);
    let started = std::time::Instant::now();
    let out = tokio::process::Command::new("curl")
        .args(["--silent", "--max-time", "20", "--socks5-hostname", &proxy.to_string()])
        .arg(format!("http://localhost:{closed_port}/"))
        .kill_on_drop(true)
        .output()
        .await
        .expect("curl runs");
    assert!(!out.status.success());
    assert!(started.elapsed() < Duration::from_secs(10));
    task.abort();
    net.shutdown().await;
}
