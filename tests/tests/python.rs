//! A Python SOCKS client (python-socks) through the proxy. The test installs
//! python-socks into a private directory with pip if the interpreter does
//! not already have it (PyPI is one of the registries this project uses).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lamina_tests::{serve_payload, TestNet};

/// A PYTHONPATH entry that provides python-socks (empty if already installed).
async fn python_socks_path() -> Option<PathBuf> {
    let have = tokio::process::Command::new("python3").args(["-c", "import python_socks"]).status().await;
    if have.is_ok_and(|s| s.success()) {
        return None;
    }
    let dir = std::env::temp_dir().join("lamina-python-socks");
    if !dir.join("python_socks").exists() {
        let status = tokio::process::Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--target"])
            .arg(&dir)
            .arg("python-socks>=2,<4")
            .status()
            .await
            .expect("pip runs");
        assert!(status.success(), "installing python-socks with pip");
    }
    Some(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_socks_client_fetches_intact() {
    let extra_path = python_socks_path().await;
    let net = TestNet::start(4, 2, "127.0.0.1:0".parse().expect("addr")).await.expect("testnet");
    assert!(net.ready(Duration::from_secs(10)).await);
    let payload: Arc<Vec<u8>> =
        Arc::new((0..2 * 1024 * 1024).map(|i: usize| u8::try_from(i % 251).unwrap_or(0)).collect());
    let (server, task) = serve_payload("127.0.0.1".parse().expect("ip"), Arc::clone(&payload)).await;
    let script = format!(
        r#"
import hashlib
from python_socks.sync import Proxy
for url, host in [("socks5://{proxy}", "localhost"), ("socks5://bob:pw@{proxy}", "localhost"), ("socks4://{proxy}", "127.0.0.1")]:
    sock = Proxy.from_url(url, rdns=True).connect(dest_host=host, dest_port={port}, timeout=30)
    data = bytearray()
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        data += chunk
    print(url.split(":")[0], len(data), hashlib.sha256(data).hexdigest())
"#,
        proxy = net.socks_addr,
        port = server.port()
    );
    let mut cmd = tokio::process::Command::new("python3");
    cmd.args(["-c", &script]).kill_on_drop(true);
    if let Some(dir) = &extra_path {
        cmd.env("PYTHONPATH", dir);
    }
    let out =
        tokio::time::timeout(Duration::from_secs(120), cmd.output()).await.expect("in time").expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let expected = {
        use std::fmt::Write;
        let digest = sha256_hex(&payload);
        let mut s = String::new();
        for scheme in ["socks5", "socks5", "socks4"] {
            let _ = writeln!(s, "{scheme} {} {digest}", payload.len());
        }
        s
    };
    assert_eq!(stdout, expected);
    task.abort();
    net.shutdown().await;
}

/// SHA-256 in hex via Python's hashlib is compared with ours: use the
/// workspace's crypto crate.
fn sha256_hex(bytes: &[u8]) -> String {
    lamina_crypto::digest::sha256(&[bytes]).iter().map(|b| format!("{b:02x}")).collect()
}
