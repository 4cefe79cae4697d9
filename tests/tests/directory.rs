//! The gossiped directory on real sockets: relays converge, and a client
//! whose seeds include a liar still ends on the majority directory.

use std::net::SocketAddr;
use std::time::Duration;

use lamina_client::dir::{bootstrap, DirParams};
use lamina_relay::config::exit_summary;
use lamina_relay::exit_policy::ExitPolicy;
use lamina_relay::keys::RelayKeys;
use lamina_relay::net::directory::DirSettings;
use lamina_relay::net::registry::NetConfig;
use lamina_tests::{relay_ip, relay_settings, testnet_gossip, TestNet, TESTNET_POW_BITS};
use tokio::net::TcpListener;

/// A relay that is alone in its own directory: a seed serving a valid but
/// partial directory (a liar, or an eclipsed relay).
async fn isolated_seed(i: usize) -> lamina_relay::RelayHandle {
    let listener = TcpListener::bind(SocketAddr::new(relay_ip(i), 0)).await.expect("bind the isolated seed");
    let advertised = listener.local_addr().expect("its address");
    let policy = ExitPolicy::reject_all();
    let settings = relay_settings(advertised, None, &policy);
    let keys = RelayKeys::ephemeral(&mut rand_core::OsRng);
    lamina_relay::spawn_with_directory(listener, keys, policy, NetConfig::default(), Some(settings))
        .expect("start the isolated seed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lying_seed_among_three_is_outvoted_and_reported() {
    let net = TestNet::start(5, 2, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let liar = isolated_seed(60).await;
    let params = DirParams { pow_bits: TESTNET_POW_BITS, timeout: Duration::from_secs(5) };
    let seeds = [net.relays[0].addr, net.relays[1].addr, liar.addr];
    let mut outcome = None;
    for _ in 0..50 {
        if let Ok(d) = bootstrap(&seeds, params).await {
            if d.snapshot.descriptors.len() == 5 {
                outcome = Some(d);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let directory = outcome.expect("the majority directory is accepted");
    assert_eq!(directory.agreeing.len(), 2);
    assert_eq!(directory.disagreeing.len(), 1);
    assert_eq!(directory.disagreeing[0].0, liar.addr, "the lying seed is reported");
    assert!(directory.relays().iter().all(|r| r.hop.relay_id != liar.relay_id()));

    // Two seeds that disagree give no majority: the client refuses both.
    let split = bootstrap(&[net.relays[0].addr, liar.addr], params).await;
    assert!(split.is_err(), "no majority between one honest seed and one liar");
    liar.shutdown().await;
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_relay_serves_the_same_directory() {
    let net = TestNet::start(8, 2, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let params = DirParams { pow_bits: TESTNET_POW_BITS, timeout: Duration::from_secs(5) };
    let mut roots = Vec::new();
    for relay in &net.relays {
        let (seed_id, snap) = lamina_client::dir::fetch_snapshot(relay.addr, params).await.unwrap();
        assert_eq!(seed_id, relay.relay_id(), "the seed proved its identity");
        roots.push((snap.root, snap.descriptors.len()));
    }
    // Snapshots are per one-second epoch: allow one boundary in between.
    let full: Vec<_> = roots.iter().filter(|(_, n)| *n == 8).collect();
    assert!(full.len() >= 7, "{roots:?}");
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cached_directory_is_verified_again_when_loaded() {
    let net = TestNet::start(3, 1, "127.0.0.1:0".parse().expect("addr")).await.expect("testnet");
    let params = DirParams { pow_bits: TESTNET_POW_BITS, timeout: Duration::from_secs(5) };
    let seeds: Vec<_> = net.relays.iter().map(|r| r.addr).collect();
    let directory = lamina_tests::wait_for_directory(&seeds, 3).await.expect("directory");
    let dir = std::env::temp_dir().join(format!("lamina-cache-{}", std::process::id()));
    lamina_client::dir::save_cache(&dir, &directory.snapshot).expect("save");
    let loaded = lamina_client::dir::load_cache(&dir, params).expect("load");
    assert_eq!(loaded.root, directory.snapshot.root);
    assert_eq!(loaded.descriptors.len(), 3);
    // One flipped byte anywhere makes the cache unusable.
    let path = dir.join(lamina_client::dir::CACHE_FILE);
    let mut bytes = std::fs::read(&path).expect("read");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&path, &bytes).expect("write");
    assert!(lamina_client::dir::load_cache(&dir, params).is_err());
    let _ = std::fs::remove_dir_all(&dir);
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_relay_remembers_the_directory() {
    let data = std::env::temp_dir().join(format!("lamina-persist-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let mut net = TestNet::start_in(4, 1, "127.0.0.1:0".parse().expect("addr"), Some(&data)).await.expect("testnet");
    // Once relay 3 knows the whole directory, stop it (it saves its store).
    let relay = net.relays.pop().expect("relay 3");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while relay.ctx.metrics.directory_relays.get() < 4 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(relay.ctx.metrics.directory_relays.get(), 4);
    let (id, addr) = (relay.relay_id(), relay.addr);
    relay.shutdown().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Restart it with the same keys and state but no seeds: it must still
    // know all four relays before talking to anyone.
    let dir = data.join("relay-3");
    let keys = RelayKeys::load_or_create(&dir, &mut rand_core::OsRng).expect("keys");
    let listener = TcpListener::bind(addr).await.expect("same address");
    let policy = ExitPolicy::reject_all();
    let settings = DirSettings {
        gossip: testnet_gossip(),
        seeds: Vec::new(),
        advertised: addr,
        bandwidth_kbps: 1000,
        exit: exit_summary(&policy),
        family: Vec::new(),
        state_file: Some(dir.join("descriptors.bin")),
    };
    let restarted = lamina_relay::spawn_with_directory(listener, keys, policy, NetConfig::default(), Some(settings))
        .expect("restart");
    assert_eq!(restarted.relay_id(), id, "same identity from its key files");
    let known = restarted.ctx.metrics.directory_relays.get();
    assert_eq!(known, 4, "the directory came back from disk");
    restarted.shutdown().await;
    net.shutdown().await;
    let _ = std::fs::remove_dir_all(&data);
}
