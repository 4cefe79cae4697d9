//! A relay at its descriptor limit (spec §15.5): the accept loop backs off
//! instead of spinning on `EMFILE`, and accepts links again once
//! descriptors free up. The relay runs as a child process with a low
//! `RLIMIT_NOFILE` (set by `sh -c 'ulimit -n …'`); loopback only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lamina_proto::link::{LinkHandshake, LocalAuth, PeerExpectation};
use lamina_relay::keys::RelayKeys;

/// The child relay, killed by its handle when dropped.
struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// User + system CPU time of `pid`, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the relay runs");
    // Fields after the parenthesised command name: state is field 3, so
    // utime (14) and stime (15) are at 11 and 12 after it.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Complete an anonymous link handshake with the relay (bounded).
fn handshake(addr: SocketAddr, expect: PeerExpectation) -> bool {
    let Ok(mut socket) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else { return false };
    let _ = socket.set_read_timeout(Some(Duration::from_secs(2)));
    let mut rng = rand_core::OsRng;
    let Ok(mut hs) = LinkHandshake::initiator(&mut rng, &LocalAuth::Anonymous, expect) else { return false };
    let mut buf = Vec::new();
    for _ in 0..10 {
        while let Some(out) = hs.poll_transmit() {
            if socket.write_all(&out).is_err() {
                return false;
            }
        }
        if hs.is_finished() {
            return true;
        }
        let mut chunk = [0u8; 4096];
        match socket.read(&mut chunk) {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        match hs.handle_input(&mut rng, &buf) {
            Ok(used) => {
                buf.drain(..used);
            }
            Err(_) => return false,
        }
    }
    false
}

#[test]
fn at_the_descriptor_limit_the_accept_loop_idles_and_recovers() {
    let dir = std::env::temp_dir().join(format!("lamina-fd-limit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let keys = RelayKeys::load_or_create(&dir, &mut rand_core::OsRng).expect("keys");
    let expect = PeerExpectation::Known { relay_id: keys.identity.relay_id(), link_key: keys.link.link_public() };
    let port = std::net::TcpListener::bind("127.21.0.1:0").expect("free port").local_addr().expect("addr").port();
    let addr: SocketAddr = format!("127.21.0.1:{port}").parse().expect("addr");
    let child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 48 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_lamina-relay"))
        .args(["--data-dir", dir.to_str().expect("utf-8"), "--listen", &addr.to_string(), "--test-network"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the relay");
    let relay = Relay(child);
    let pid = relay.0.id();
    let started = Instant::now();
    while !handshake(addr, expect) {
        assert!(started.elapsed() < Duration::from_secs(20), "the relay did not start");
        std::thread::sleep(Duration::from_millis(100));
    }

    // Hold more connections than the relay has descriptors: the rest wait in
    // the backlog and every accept fails with EMFILE.
    let held: Vec<TcpStream> = (0..80).filter_map(|_| TcpStream::connect(addr).ok()).collect();
    assert!(held.len() >= 60, "the backlog takes the connections");
    std::thread::sleep(Duration::from_millis(500));
    let (t0, w0) = (cpu_ticks(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (used, wall) = (cpu_ticks(pid) - t0, w0.elapsed());
    // Clock ticks are 1/100 s on Linux: under 10% of one core.
    let share = used as f64 / (wall.as_secs_f64() * 100.0);
    #[allow(clippy::print_stderr)]
    {
        eprintln!("relay at its descriptor limit: {:.1}% CPU over {:.1} s", share * 100.0, wall.as_secs_f64());
    }
    assert!(share < 0.10, "a relay at its descriptor limit used {:.0}% CPU", share * 100.0);

    // Descriptors free up: links are accepted again.
    drop(held);
    let started = Instant::now();
    while !handshake(addr, expect) {
        assert!(started.elapsed() < Duration::from_secs(30), "the relay did not recover");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}
