//! `lamina-shadow-server`: the transfer server of the Shadow experiments
//! (`tests/shadow/`, spec §16).
//!
//! It listens on one TCP address. A client sends one ASCII request line,
//! `GET <bytes>\n`, and the server answers with exactly that many bytes (a
//! repeating pattern) and closes its side. That is all the experiments need
//! to measure time to first and last byte of a transfer of a known size
//! (Tor's onionperf sizes: 50 KiB, 1 MiB, 5 MiB) or to keep a bulk transfer
//! running for a fixed time.
//!
//! Only tokio and std; it runs under Shadow (IPv4 only) and on loopback.
//! Every connection is bounded: the request line is at most
//! [`MAX_REQUEST_LINE`] bytes and must arrive within
//! [`REQUEST_TIMEOUT`], at most [`MAX_CONNECTIONS`] connections are served
//! at once, and no answer is longer than [`MAX_TRANSFER`] bytes.

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Longest request line accepted, newline included.
const MAX_REQUEST_LINE: usize = 64;
/// Time a client has to send its request line.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 4096;
/// Largest answer (16 GiB: a bulk transfer that the client stops).
const MAX_TRANSFER: u64 = 16 << 30;
/// Bytes written per call.
const CHUNK: usize = 64 * 1024;

/// Parse `--listen IP:PORT`, serve until killed.
fn main() -> std::process::ExitCode {
    let listen = match parse_args(std::env::args().skip(1)) {
        Ok(addr) => addr,
        Err(e) => {
            let _ =
                writeln!(std::io::stderr(), "lamina-shadow-server: {e}\nusage: lamina-shadow-server --listen IP:PORT");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "lamina-shadow-server: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(listen)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "lamina-shadow-server: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The listen address from the command line.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<SocketAddr, String> {
    let mut listen = None;
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--listen" => {
                let value = args.next().ok_or("--listen needs IP:PORT")?;
                listen = Some(value.parse::<SocketAddr>().map_err(|e| format!("--listen {value}: {e}"))?);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    listen.ok_or_else(|| "--listen IP:PORT is required".to_owned())
}

/// Accept connections and answer each in its own task.
async fn serve(listen: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let _ = writeln!(std::io::stdout(), "listening: {}", listener.local_addr()?);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else { return Ok(()) };
        let (socket, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            if let Err(e) = answer(socket).await {
                let _ = writeln!(std::io::stderr(), "connection failed: {e}");
            }
            drop(permit);
        });
    }
}

/// Read one request line and send the bytes it asks for.
async fn answer(mut socket: TcpStream) -> std::io::Result<()> {
    let _ = socket.set_nodelay(true);
    let line = tokio::time::timeout(REQUEST_TIMEOUT, read_line(&mut socket))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request line"))??;
    let size = parse_request(&line).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    let pattern: Vec<u8> = (0..CHUNK).map(|i| b"lamina-shadow-"[i % 14]).collect();
    let mut left = size;
    while left > 0 {
        let n = usize::try_from(left.min(CHUNK as u64)).unwrap_or(CHUNK);
        socket.write_all(&pattern[..n]).await?;
        left -= n as u64;
    }
    socket.shutdown().await
}

/// Read up to and including the first newline, at most
/// [`MAX_REQUEST_LINE`] bytes.
async fn read_line(socket: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut line = Vec::with_capacity(MAX_REQUEST_LINE);
    let mut byte = [0u8; 1];
    while line.len() < MAX_REQUEST_LINE {
        if socket.read(&mut byte).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before the request line"));
        }
        if byte[0] == b'\n' {
            return Ok(line);
        }
        line.push(byte[0]);
    }
    Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "request line too long"))
}

/// `GET <bytes>` → the size, at most [`MAX_TRANSFER`].
fn parse_request(line: &[u8]) -> Result<u64, String> {
    let text = std::str::from_utf8(line).map_err(|_| "request is not UTF-8".to_owned())?;
    let size = text.trim_end_matches('\r').strip_prefix("GET ").ok_or("request must be `GET <bytes>`")?;
    let size: u64 = size.trim().parse().map_err(|e| format!("bad size {size:?}: {e}"))?;
    if size > MAX_TRANSFER {
        return Err(format!("size {size} above the limit {MAX_TRANSFER}"));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_and_are_bounded() {
        assert_eq!(parse_request(b"GET 51200"), Ok(51200));
        assert_eq!(parse_request(b"GET 0\r"), Ok(0));
        assert!(parse_request(b"PUT 1").is_err());
        assert!(parse_request(b"GET -1").is_err());
        assert!(parse_request(format!("GET {}", MAX_TRANSFER + 1).as_bytes()).is_err());
    }

    #[tokio::test]
    async fn serves_exactly_the_requested_bytes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            answer(socket).await.unwrap();
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"GET 200000\n").await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got.len(), 200_000);
        assert_eq!(&got[..14], b"lamina-shadow-");
    }
}
