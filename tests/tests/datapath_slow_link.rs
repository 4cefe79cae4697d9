//! The slow-link-reader attack (issue 9, spec §6.6), in one process on
//! loopback: an attacker built from `lamina-proto` opens links to both
//! guards, builds many circuits through the same relays as an honest
//! client (over the relay pair in both directions), has the exit send a
//! full window on every stream, and then stops reading its link sockets.
//!
//! Without per-circuit queues the guard's reader would wait on the stalled
//! writer and freeze the guard–middle link for everyone; here the honest
//! client keeps its throughput, the relay-wide queue cap closes the
//! attacker's oldest circuits, and the write-progress time-out closes the
//! attacker's links.

// Test support: loud failure is what a test wants; the figure is reported on stderr.
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lamina_proto::cell::{Cell, CircId, CELL_LEN};
use lamina_proto::circuit::client::{ClientCircuit, ClientEvent, HopSpec};
use lamina_proto::link::{LinkHandshake, LinkReceiver, LinkSender, LocalAuth, PeerExpectation};
use lamina_proto::msg::Target;
use lamina_relay::net::registry::NetConfig;
use lamina_tests::{serve_payload, socks5_connect, TestNet};
use rand_core::OsRng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Circuits the attacker builds per link.
const ATTACK_CIRCUITS: u32 = 32;
/// Streams per attacker circuit (two stream windows fill a circuit window).
const ATTACK_STREAMS: usize = 2;
/// The relays' queue cap in this test.
const CAP_BYTES: usize = 4 * 1024 * 1024;

/// Run a link handshake on `socket`.
async fn handshake(socket: &mut TcpStream, mut hs: LinkHandshake) -> (LinkSender, LinkReceiver, Vec<u8>) {
    let mut buf = Vec::with_capacity(4096);
    loop {
        while let Some(out) = hs.poll_transmit() {
            socket.write_all(&out).await.unwrap();
        }
        if hs.is_finished() {
            let (tx, rx, _) = hs.into_transport().unwrap();
            return (tx, rx, buf);
        }
        assert!(socket.read_buf(&mut buf).await.unwrap() > 0, "guard closed during the handshake");
        let used = hs.handle_input(&mut OsRng, &buf).unwrap();
        buf.drain(..used);
    }
}

/// Open a link to `path[0]`, build `ATTACK_CIRCUITS` circuits along `path`,
/// begin `ATTACK_STREAMS` downloads from `port` on each, and return the
/// socket without ever reading from it again.
async fn attacker(path: &[HopSpec], port: u16) -> TcpStream {
    let guard = &path[0];
    let mut socket = TcpStream::connect(guard.addr).await.unwrap();
    let expect = PeerExpectation::Known { relay_id: guard.relay_id, link_key: guard.link_key };
    let hs = LinkHandshake::initiator(&mut OsRng, &LocalAuth::Anonymous, expect).unwrap();
    let (mut tx, mut rx, mut buf) = handshake(&mut socket, hs).await;
    let mut circuits = HashMap::new();
    for i in 0..ATTACK_CIRCUITS {
        let id = CircId(CircId::INITIATOR_BIT | (i + 1));
        let c = ClientCircuit::new(&mut OsRng, Instant::now(), id, path.to_vec(), Duration::from_secs(30)).unwrap();
        circuits.insert(id, c);
    }
    let mut begun = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut out = Vec::new();
    loop {
        let mut cells: Vec<Cell> = Vec::new();
        for c in circuits.values_mut() {
            while let Some(cell) = c.poll_transmit() {
                cells.push(cell);
            }
        }
        if !cells.is_empty() {
            out.clear();
            tx.seal_cells(&cells, &mut out).unwrap();
            socket.write_all(&out).await.unwrap();
        }
        let closed = circuits.values().filter(|c| c.is_closed()).count();
        if begun + closed == circuits.len() {
            eprintln!("attacker: {begun} circuits downloading, {closed} failed to build");
            assert!(begun * 2 >= circuits.len(), "most attacker circuits build");
            return socket; // From now on the attacker never reads.
        }
        assert!(Instant::now() < deadline, "attacker circuits did not build");
        let n = tokio::time::timeout(Duration::from_secs(30), socket.read_buf(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "guard closed the attacker link early");
        let mut got = Vec::new();
        let mut pos = 0;
        while let Some(used) = rx.open_frame(&buf[pos..], &mut got).unwrap() {
            pos += used;
        }
        buf.drain(..pos);
        for cell in got {
            let Some(c) = circuits.get_mut(&cell.circ) else { continue };
            if let Err(e) = c.handle_cell(&mut OsRng, cell, Instant::now()) {
                eprintln!("attacker circuit error: {e}");
            }
            while let Some(ev) = c.poll_event() {
                if ev != ClientEvent::Built {
                    eprintln!("attacker event: {ev:?}");
                }
                if ev == ClientEvent::Built {
                    for _ in 0..ATTACK_STREAMS {
                        c.begin(Target::Ip("127.0.0.1".parse().unwrap()), port).unwrap();
                    }
                    begun += 1;
                }
            }
        }
    }
}

/// Download everything from `port` through the honest client; returns bytes and seconds.
async fn honest_download(net: &TestNet, port: u16) -> (usize, f64) {
    let start = Instant::now();
    let mut s = socks5_connect(net.socks_addr, "127.0.0.1", port, None).await.unwrap().unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), s.read_to_end(&mut got)).await.unwrap().unwrap();
    (got.len(), start.elapsed().as_secs_f64())
}

/// Resident memory of this process, in KiB (Linux).
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Links open at relays 1 and 2 (the guards).
fn guard_links(net: &TestNet) -> usize {
    net.relays[1].ctx.link_count() + net.relays[2].ctx.link_count()
}

/// Circuits closed so far at relays 1 and 2.
fn guard_closed(net: &TestNet) -> u64 {
    net.relays[1].ctx.metrics.circuits_closed.get() + net.relays[2].ctx.metrics.circuits_closed.get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_link_does_not_slow_others() {
    let config =
        NetConfig { max_queued_bytes: CAP_BYTES, write_stall_timeout: Duration::from_secs(10), ..NetConfig::default() };
    // Three relays in three /16s, relay 0 the exit: every circuit uses the
    // pair (1, 2) in one direction or the other.
    let net = TestNet::start_with_net(3, 1, "127.0.0.1:0".parse().unwrap(), None, config).await.unwrap();
    assert!(net.ready(Duration::from_secs(20)).await, "a circuit builds");
    let payload = Arc::new(vec![0x5a; 8 * 1024 * 1024]);
    let (server, server_task) = serve_payload("127.0.0.1".parse().unwrap(), Arc::clone(&payload)).await;

    let (len, base_s) = honest_download(&net, server.port()).await;
    assert_eq!(len, payload.len());

    let links_before = guard_links(&net);
    let closed_before = guard_closed(&net);
    // The attack: both orders of the relay pair (circuits in opposite
    // directions over the same link), receivers stalled at the link.
    let exit = net.infos.iter().find(|r| r.is_exit()).unwrap().hop.clone();
    let pair: Vec<HopSpec> = net.infos.iter().filter(|r| !r.is_exit()).map(|r| r.hop.clone()).collect();
    let a = attacker(&[pair[0].clone(), pair[1].clone(), exit.clone()], server.port()).await;
    let b = attacker(&[pair[1].clone(), pair[0].clone(), exit], server.port()).await;
    let links_during = guard_links(&net);
    eprintln!("guard links before the attack {links_before}, during {links_during}");
    assert!(links_during >= 2, "the attacker's links are up");
    // Let the exit fill the attacker's windows.
    let mut peak_queued = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak_queued = peak_queued.max(net.relays.iter().map(|r| r.ctx.queued_cells()).max().unwrap_or(0));
    }
    for r in &net.relays {
        eprintln!(
            "relay: links {} queued {} kills {} closed {} cells_out {} streams {}",
            r.ctx.link_count(),
            r.ctx.queued_cells(),
            r.ctx.queue_kills.load(Ordering::Relaxed),
            r.ctx.metrics.circuits_closed.get(),
            r.ctx.metrics.cells_out.get(),
            r.ctx.metrics.streams_opened.get()
        );
    }

    let (len, attack_s) = honest_download(&net, server.port()).await;
    assert_eq!(len, payload.len(), "the honest download completes during the attack");
    let ratio = base_s / attack_s;
    peak_queued = peak_queued.max(net.relays.iter().map(|r| r.ctx.queued_cells()).max().unwrap_or(0));
    let rss = rss_kib();
    eprintln!(
        "slow-link attack: honest {:.1} MB/s before, {:.1} MB/s during (ratio {ratio:.2}); \
         largest relay queue {} KiB; process RSS {} MiB",
        payload.len() as f64 / base_s / 1e6,
        payload.len() as f64 / attack_s / 1e6,
        peak_queued * CELL_LEN / 1024,
        rss / 1024,
    );
    // A loose bound that cannot flake on a loaded machine; the figure is reported.
    assert!(ratio > 0.25, "honest throughput collapsed during the attack: ratio {ratio:.2}");

    // Every attacker circuit is closed at its guard and its middle: by the
    // queue cap (oldest data first) or, for those still holding data when
    // the write-progress time-out fires, with its link (the attacker still
    // holds its sockets and never reads).
    let attack = 2 * u64::from(ATTACK_CIRCUITS);
    // Wait until every attacker circuit is closed, or until the relays hold
    // no queued cell for two seconds after the write-progress time-out had
    // its chance: a circuit whose last cells fitted into the kernel's socket
    // buffer leaves its writer idle, not stalled, and holds no relay memory
    // (its window is spent, so the exit sends nothing more).
    let started = Instant::now();
    let deadline = started + Duration::from_secs(90);
    let mut idle_since: Option<Instant> = None;
    while guard_closed(&net) - closed_before < 2 * attack && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let queued: usize = net.relays.iter().map(|r| r.ctx.queued_cells()).sum();
        if queued > 0 || started.elapsed() < Duration::from_secs(12) {
            idle_since = None;
        } else if idle_since.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    let closed = guard_closed(&net) - closed_before;
    eprintln!(
        "attacker circuits closed at guards and middles: {closed} of {}; stalled links closed: {}",
        2 * attack,
        links_during.saturating_sub(guard_links(&net))
    );
    // Most are closed; any left hold nothing queued at the relays (their
    // windows are spent and their last cells sit in the kernel's buffer).
    assert!(closed >= attack, "most attacker circuits were closed ({closed} of {})", 2 * attack);
    drop((a, b));
    let kills: u64 = net.relays.iter().map(|r| r.ctx.queue_kills.load(Ordering::Relaxed)).sum();
    assert!(kills > 0, "the queue cap closed the attacker's oldest circuits");
    // Every relay stayed within its cap (plus one gather of slack) and let go.
    for r in &net.relays {
        assert!(r.ctx.queued_cells() * CELL_LEN <= CAP_BYTES + 1024 * CELL_LEN);
    }
    assert!(rss < 1024 * 1024, "process RSS {rss} KiB");

    // Honest traffic still works afterwards.
    let (len, _) = honest_download(&net, server.port()).await;
    assert_eq!(len, payload.len());
    server_task.abort();
    net.shutdown().await;
}
