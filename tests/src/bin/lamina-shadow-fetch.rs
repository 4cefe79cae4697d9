//! `lamina-shadow-fetch`: the measuring SOCKS5 client of the Shadow
//! experiments (`tests/shadow/`, spec §16).
//!
//! It fetches from `lamina-shadow-server` through a SOCKS5 proxy (a
//! `lamina-client proxy`) and prints one `key=value` line per transfer,
//! measured as Tor's onionperf does, from the moment the SOCKS connection
//! is opened:
//!
//! ```text
//! transfer name=c1 n=0 size=51200 ok=1 bytes=51200 socks_ms=262.4 ttfb_ms=525.1 ttlb_ms=531.0 max_gap_ms=5.2 error=-
//! ```
//!
//! - `socks_ms`: until the proxy's SOCKS reply (stream open: one circuit
//!   round trip plus the exit's TCP connect, or a circuit build first when
//!   no circuit is ready);
//! - `ttfb_ms`, `ttlb_ms`: until the first and the last byte of the answer;
//! - `max_gap_ms`: the longest pause between two reads (a stall shows here).
//!
//! `--bulk-s S` instead reads one endless answer for S seconds and reports
//! the bytes received (fair-share runs). Only tokio and std; every loop is
//! bounded by a count or a deadline.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the command line asks for.
#[derive(Debug, Clone)]
struct Options {
    /// The SOCKS5 proxy.
    socks: SocketAddr,
    /// The transfer server (an IPv4 address: the exit connects to it).
    server: SocketAddrV4,
    /// Transfer sizes, used in turn.
    sizes: Vec<u64>,
    /// Most transfers.
    count: u64,
    /// Start no transfer after this long since the program started.
    until: Option<Duration>,
    /// Pause between the end of one transfer and the start of the next.
    pause: Duration,
    /// Bulk mode: read one endless answer for this long.
    bulk: Option<Duration>,
    /// A fresh SOCKS username per transfer (a fresh circuit per transfer).
    isolate: bool,
    /// How long to wait for the proxy to start listening.
    wait_socks: Duration,
    /// Time allowed for one transfer.
    timeout: Duration,
    /// A label printed with every line.
    name: String,
}

/// Size requested in bulk mode: the server's limit, never reached.
const BULK_REQUEST: u64 = 16 << 30;
/// Transfers when only `--until-s` bounds the run.
const MAX_TRANSFERS: u64 = 1_000_000;

/// What one transfer measured.
#[derive(Debug, Default)]
struct Measured {
    /// Bytes of the answer received.
    bytes: u64,
    /// Until the SOCKS reply.
    socks: Option<Duration>,
    /// Until the first byte.
    first: Option<Duration>,
    /// Until the last byte.
    last: Option<Duration>,
    /// Longest gap between two reads.
    max_gap: Duration,
}

/// Parse the flags and run the transfers.
fn main() -> std::process::ExitCode {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "lamina-shadow-fetch: {e}\nusage: lamina-shadow-fetch --socks IP:PORT --server IPV4:PORT \
                 [--sizes N,N,..] [--count N] [--until-s S] [--pause-ms MS] [--bulk-s S] [--isolate] \
                 [--wait-socks-s S] [--timeout-s S] [--name LABEL]"
            );
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "lamina-shadow-fetch: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(options));
    std::process::ExitCode::SUCCESS
}

/// Flags → options.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut socks = None;
    let mut server = None;
    let mut o = Options {
        socks: SocketAddr::from(([127, 0, 0, 1], 9050)),
        server: SocketAddrV4::new(Ipv4Addr::LOCALHOST, 80),
        sizes: vec![51_200],
        count: 0,
        until: None,
        pause: Duration::ZERO,
        bulk: None,
        isolate: false,
        wait_socks: Duration::from_secs(120),
        timeout: Duration::from_secs(300),
        name: "fetch".to_owned(),
    };
    while let Some(flag) = args.next() {
        if flag == "--isolate" {
            o.isolate = true;
            continue;
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        let secs = |v: &str| v.parse::<u64>().map(Duration::from_secs).map_err(|e| bad(&e));
        match flag.as_str() {
            "--socks" => socks = Some(value.parse().map_err(|e| bad(&e))?),
            "--server" => server = Some(value.parse().map_err(|e| bad(&e))?),
            "--sizes" => {
                o.sizes =
                    value.split(',').map(|s| s.trim().parse::<u64>().map_err(|e| bad(&e))).collect::<Result<_, _>>()?;
            }
            "--count" => o.count = value.parse().map_err(|e| bad(&e))?,
            "--until-s" => o.until = Some(secs(&value)?),
            "--pause-ms" => o.pause = Duration::from_millis(value.parse().map_err(|e| bad(&e))?),
            "--bulk-s" => o.bulk = Some(secs(&value)?),
            "--wait-socks-s" => o.wait_socks = secs(&value)?,
            "--timeout-s" => o.timeout = secs(&value)?,
            "--name" => o.name.clone_from(&value),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    o.socks = socks.ok_or("--socks IP:PORT is required")?;
    o.server = server.ok_or("--server IPV4:PORT is required")?;
    if o.sizes.is_empty() {
        return Err("--sizes needs at least one size".to_owned());
    }
    if o.count == 0 {
        o.count = if o.until.is_some() { MAX_TRANSFERS } else { 1 };
    }
    Ok(o)
}

/// Wait for the proxy, then run the transfers one after another.
async fn run(o: Options) {
    let started = Instant::now();
    if !wait_for_proxy(o.socks, o.wait_socks).await {
        let _ =
            writeln!(std::io::stdout(), "transfer name={} n=0 size=0 ok=0 bytes=0 error=proxy-not-listening", o.name);
        return;
    }
    for n in 0..o.count {
        if o.until.is_some_and(|until| started.elapsed() >= until) {
            break;
        }
        let size = o.sizes[usize::try_from(n).unwrap_or(0) % o.sizes.len()];
        let user = if o.isolate { format!("{}-{n}", o.name) } else { o.name.clone() };
        let mut measured = Measured::default();
        let began = Instant::now();
        let limit = o.bulk.map_or(o.timeout, |b| b.min(o.timeout));
        let result = tokio::time::timeout(limit, transfer(&o, &user, size, began, &mut measured)).await;
        let (ok, error) = match (result, o.bulk) {
            (Ok(Ok(())), None) if measured.bytes == size => (true, "-".to_owned()),
            (Ok(Ok(())), None) => (false, "short".to_owned()),
            (Err(_), Some(_)) | (Ok(Ok(())), Some(_)) => (measured.bytes > 0, "-".to_owned()),
            (Err(_), None) => (false, "timeout".to_owned()),
            (Ok(Err(e)), _) => (false, e.replace(' ', "-")),
        };
        if o.bulk.is_some() && measured.last.is_none() {
            measured.last = Some(began.elapsed());
        }
        report(&o.name, n, if o.bulk.is_some() { BULK_REQUEST } else { size }, ok, &measured, &error);
        if !o.pause.is_zero() {
            tokio::time::sleep(o.pause).await;
        }
    }
}

/// Retry connecting to the proxy until it listens or `wait` passes.
async fn wait_for_proxy(socks: SocketAddr, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        if TcpStream::connect(socks).await.is_ok() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// One transfer: SOCKS5 (user/password when isolating), the request line,
/// then read to the end (or until the caller's time-out in bulk mode).
async fn transfer(o: &Options, user: &str, size: u64, began: Instant, m: &mut Measured) -> Result<(), String> {
    let mut socket = TcpStream::connect(o.socks).await.map_err(|e| format!("socks connect: {e}"))?;
    let _ = socket.set_nodelay(true);
    socks5_connect(&mut socket, o.server, user).await?;
    m.socks = Some(began.elapsed());
    let request = format!("GET {}\n", if o.bulk.is_some() { BULK_REQUEST } else { size });
    socket.write_all(request.as_bytes()).await.map_err(|e| format!("request: {e}"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut last_read = Instant::now();
    loop {
        let n = socket.read(&mut buf).await.map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        let now = Instant::now();
        if m.first.is_none() {
            m.first = Some(now - began);
        } else {
            m.max_gap = m.max_gap.max(now - last_read);
        }
        last_read = now;
        m.bytes += n as u64;
        m.last = Some(now - began);
        if o.bulk.is_none() && m.bytes >= size {
            // The whole answer is here: done, as onionperf (the close that
            // follows is the server's business, not the transfer's).
            return Ok(());
        }
    }
}

/// The SOCKS5 handshake and CONNECT to an IPv4 address (RFC 1928, RFC 1929).
async fn socks5_connect(socket: &mut TcpStream, server: SocketAddrV4, user: &str) -> Result<(), String> {
    let io = |e: std::io::Error| format!("socks: {e}");
    socket.write_all(&[5, 1, 2]).await.map_err(io)?;
    let mut choice = [0u8; 2];
    socket.read_exact(&mut choice).await.map_err(io)?;
    match choice {
        [5, 0] => {}
        [5, 2] => {
            let user = &user.as_bytes()[..user.len().min(255)];
            let mut auth = vec![1, u8::try_from(user.len()).unwrap_or(255)];
            auth.extend_from_slice(user);
            auth.extend_from_slice(&[1, b'x']);
            socket.write_all(&auth).await.map_err(io)?;
            let mut status = [0u8; 2];
            socket.read_exact(&mut status).await.map_err(io)?;
            if status[1] != 0 {
                return Err("socks: authentication refused".to_owned());
            }
        }
        other => return Err(format!("socks: method {other:?} not offered")),
    }
    let mut request = vec![5, 1, 0, 1];
    request.extend_from_slice(&server.ip().octets());
    request.extend_from_slice(&server.port().to_be_bytes());
    socket.write_all(&request).await.map_err(io)?;
    let mut head = [0u8; 4];
    socket.read_exact(&mut head).await.map_err(io)?;
    if head[1] != 0 {
        return Err(format!("socks-reply-{}", head[1]));
    }
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut len = [0u8; 1];
            socket.read_exact(&mut len).await.map_err(io)?;
            usize::from(len[0]) + 2
        }
        other => return Err(format!("socks: address type {other}")),
    };
    let mut bound = vec![0u8; rest];
    socket.read_exact(&mut bound).await.map_err(io)?;
    Ok(())
}

/// Milliseconds with one decimal, or `-`.
fn ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_owned(), |d| format!("{:.1}", d.as_secs_f64() * 1000.0))
}

/// Print one transfer's line.
fn report(name: &str, n: u64, size: u64, ok: bool, m: &Measured, error: &str) {
    let _ = writeln!(
        std::io::stdout(),
        "transfer name={name} n={n} size={size} ok={} bytes={} socks_ms={} ttfb_ms={} ttlb_ms={} max_gap_ms={} error={error}",
        u8::from(ok),
        m.bytes,
        ms(m.socks),
        ms(m.first),
        ms(m.last),
        ms(Some(m.max_gap)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Options, String> {
        parse_args(list.iter().map(|s| (*s).to_owned()))
    }

    #[test]
    fn flags_parse_with_bounds() {
        let o = args(&["--socks", "127.0.0.1:9050", "--server", "11.9.0.1:80", "--sizes", "51200,1048576"]).unwrap();
        assert_eq!(o.sizes, vec![51_200, 1_048_576]);
        assert_eq!(o.count, 1, "one transfer unless told otherwise");
        let o = args(&["--socks", "127.0.0.1:9050", "--server", "11.9.0.1:80", "--until-s", "60"]).unwrap();
        assert_eq!(o.count, MAX_TRANSFERS, "a deadline bounds the run");
        assert!(args(&["--socks", "127.0.0.1:9050"]).is_err(), "server required");
        assert!(args(&["--socks", "127.0.0.1:9050", "--server", "[::1]:80"]).is_err(), "IPv4 only");
        assert!(args(&["--socks", "127.0.0.1:9050", "--server", "11.9.0.1:80", "--sizes", ""]).is_err());
    }
}
