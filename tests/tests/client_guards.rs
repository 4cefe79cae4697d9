//! The guard manager on a live in-process network (spec §10.5, §10.6):
//! never a first hop outside the sample, guards used again when they
//! return, the sample persists, and path bias flags a guard that fails
//! most builds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use lamina_client::{Client, ClientConfig};
use lamina_crypto::keys::RelayId;
use lamina_relay::exit_policy::ExitPolicy;
use lamina_relay::keys::RelayKeys;
use lamina_relay::net::registry::NetConfig;
use lamina_relay::RelayHandle;
use lamina_tests::{relay_ip, relay_settings, wait_for_directory, TestNet};
use tokio::net::TcpListener;

/// A fresh temporary directory for this test.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lamina-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Start a (non-exit) relay with the keys in `dir` on `addr`, seeded from `seed`.
fn start_relay(dir: &std::path::Path, addr: SocketAddr, seed: Option<SocketAddr>, net: NetConfig) -> RelayHandle {
    let keys = RelayKeys::load_or_create(dir, &mut rand_core::OsRng).expect("keys");
    let listener = std::net::TcpListener::bind(addr).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let listener = TcpListener::from_std(listener).expect("listener");
    let advertised = listener.local_addr().expect("addr");
    let policy = ExitPolicy::reject_all();
    let settings = relay_settings(advertised, seed, &policy);
    lamina_relay::spawn_with_directory(listener, keys, policy, net, Some(settings)).expect("relay")
}

/// A client config for these tests: two primary guards retried quickly.
fn config(guard_file: PathBuf) -> ClientConfig {
    ClientConfig {
        prebuilt: 0,
        guards: 2,
        avoid_for: Duration::from_millis(300),
        build_timeout: Duration::from_secs(2),
        guard_file: Some(guard_file),
        ..ClientConfig::for_test_network()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_primary_guard_down_no_other_first_hop_is_used_and_guards_return() {
    let data = temp_dir("guards-down");
    let mut net = TestNet::start_in(6, 3, "127.0.0.1:0".parse().expect("addr"), Some(&data)).await.expect("testnet");
    let client = Client::new(config(data.join("guards")), net.infos.clone(), Vec::new());
    client.probe_build().await.expect("a first circuit");
    let primary = client.guards();
    assert_eq!(primary.len(), 2);
    // Stop both primary guards.
    let mut stopped = Vec::new();
    let mut i = 0;
    while i < net.relays.len() {
        if primary.contains(&net.relays[i].relay_id()) {
            let relay = net.relays.remove(i);
            stopped.push((relay.relay_id(), relay.addr));
            relay.shutdown().await;
        } else {
            i += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let created = |net: &TestNet| -> u64 { net.relays.iter().map(|r| r.ctx.metrics.circuits_created.get()).sum() };
    let before = created(&net);
    // Builds fail (after waiting and retrying), and no other relay is ever
    // used as a first hop: no relay saw a new circuit.
    for round in 0..2 {
        let started = Instant::now();
        let result = client.probe_build().await;
        assert!(result.is_err(), "round {round}: no circuit without a primary guard");
        // It waited and retried its guards (the budget is three build
        // time-outs) rather than failing at once or using another relay.
        assert!(started.elapsed() >= Duration::from_secs(2), "round {round}: waited {:?}", started.elapsed());
    }
    assert_eq!(created(&net), before, "no circuit went through any other relay");
    assert_eq!(client.guards(), primary, "the guards are still the primary ones (still listed)");
    // The guards come back (same keys, same addresses).
    let seed = net.relays.first().map(|r| r.addr);
    let mut restarted = Vec::new();
    for (id, addr) in &stopped {
        let index = (0..6).find(|i| relay_ip(*i) == addr.ip()).expect("a harness relay");
        let relay = start_relay(
            &data.join(format!("relay-{index}")),
            *addr,
            seed,
            NetConfig { test_network: true, ..NetConfig::default() },
        );
        assert_eq!(relay.relay_id(), *id);
        restarted.push(relay);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut built = client.probe_build().await;
    while built.is_err() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        built = client.probe_build().await;
    }
    assert!(built.is_ok(), "the guards are used again once back: {built:?}");
    let through_guards: u64 = restarted.iter().map(|r| r.ctx.metrics.circuits_created.get()).sum();
    assert!(through_guards >= 1, "the new circuit went through a returning guard");
    for relay in restarted {
        relay.shutdown().await;
    }
    net.shutdown().await;
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_sample_persists_across_restarts() {
    let data = temp_dir("guards-persist");
    let net = TestNet::start(6, 3, "127.0.0.1:0".parse().expect("addr")).await.expect("testnet");
    let first = Client::new(config(data.join("guards")), net.infos.clone(), Vec::new());
    let primary = first.guards();
    let sample: Vec<RelayId> = first.guard_set().sample().iter().map(|g| g.id).collect();
    drop(first);
    for _ in 0..3 {
        let again = Client::new(config(data.join("guards")), net.infos.clone(), Vec::new());
        assert_eq!(again.guards(), primary, "the same primary guards after a restart");
        let again_sample: Vec<RelayId> = again.guard_set().sample().iter().map(|g| g.id).collect();
        assert_eq!(again_sample, sample);
    }
    net.shutdown().await;
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guard_that_fails_most_builds_is_flagged_by_path_bias() {
    let data = temp_dir("guards-bias");
    let net = TestNet::start(5, 3, "127.0.0.1:0".parse().expect("addr")).await.expect("testnet");
    // A guard that refuses nearly every CREATE (its rate limit is ~0).
    let stingy = NetConfig { create_rate: 0.001, create_burst: 2.0, test_network: true, ..NetConfig::default() };
    let bad = start_relay(&data.join("bad"), SocketAddr::new(relay_ip(20), 0), Some(net.relays[0].addr), stingy);
    let seeds: Vec<SocketAddr> = net.relays.iter().take(3).map(|r| r.addr).collect();
    let infos = wait_for_directory(&seeds, 6).await.expect("directory").relays();
    let mut cfg = config(data.join("guards"));
    cfg.guard_params.bias_min_circuits = 8;
    let client = Client::new(cfg, infos, vec![bad.relay_id()]);
    assert_eq!(client.guards()[0], bad.relay_id(), "the bad relay is the guard in use");
    let mut failures = 0;
    for _ in 0..12 {
        if client.probe_build().await.is_err() {
            failures += 1;
        }
    }
    assert!(failures >= 1);
    let flagged = client.guard_set().sample().iter().find(|g| g.id == bad.relay_id()).map(|g| g.bias);
    assert!(flagged.is_some_and(|b| b.disabled), "flagged by path bias: {flagged:?}");
    assert!(!client.guards().contains(&bad.relay_id()), "and no longer used");
    // Its replacement builds fine.
    assert!(client.probe_build().await.is_ok());
    bad.shutdown().await;
    net.shutdown().await;
    let _ = std::fs::remove_dir_all(&data);
}
