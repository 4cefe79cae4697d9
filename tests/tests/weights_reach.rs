//! Reachability in the agreed cut on real sockets (spec §14.2): relays
//! probe each other's advertised address and handshake against the
//! descriptor's link key; a relay whose descriptor names a port nobody
//! listens on is gossiped like any other (it is in every store) but is
//! never in a served snapshot, while the reachable relays are.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use lamina_client::dir::{fetch_snapshot, DirParams};
use lamina_relay::exit_policy::ExitPolicy;
use lamina_relay::keys::RelayKeys;
use lamina_relay::RelayHandle;
use lamina_tests::{relay_ip, relay_settings, testnet_net_config, TESTNET_POW_BITS};
use tokio::net::TcpListener;

/// A relay listening on relay address `i`, advertising `advertised` (its
/// real address when `None`), seeded by `seed`.
async fn relay(i: usize, advertised: Option<SocketAddr>, seed: Option<SocketAddr>) -> RelayHandle {
    let listener = TcpListener::bind(SocketAddr::new(relay_ip(i), 0)).await.expect("bind");
    let real = listener.local_addr().expect("address");
    let policy = ExitPolicy::reject_all();
    let settings = relay_settings(advertised.unwrap_or(real), seed, &policy);
    let keys = RelayKeys::ephemeral(&mut rand_core::OsRng);
    lamina_relay::spawn_with_directory(listener, keys, policy, testnet_net_config(), Some(settings)).expect("start")
}

/// A port on relay address `i` that nothing listens on.
async fn dead_port(i: usize) -> SocketAddr {
    let l = TcpListener::bind(SocketAddr::new(relay_ip(i), 0)).await.expect("bind");
    l.local_addr().expect("address")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_relay_is_never_served() {
    let seed = relay(0, None, None).await;
    let mut relays = vec![relay(1, None, Some(seed.addr)).await, relay(2, None, Some(seed.addr)).await];
    let wrong = dead_port(3).await;
    let phantom = relay(3, Some(wrong), Some(seed.addr)).await;
    let phantom_id = phantom.relay_id();
    relays.insert(0, seed);
    let reachable: BTreeSet<_> = relays.iter().map(RelayHandle::relay_id).collect();
    let params = DirParams { pow_bits: TESTNET_POW_BITS, timeout: Duration::from_secs(5) };
    // Until every reachable relay serves a cut holding the three of them
    // (bounded: 40 s), and for a few epochs more, no served cut lists the
    // phantom.
    let started = Instant::now();
    let mut settled_at: Option<Instant> = None;
    let mut last = String::from("no answer");
    while started.elapsed() < Duration::from_secs(40) {
        let mut all = true;
        for r in &relays {
            match fetch_snapshot(r.addr, params).await {
                Ok((_, snap)) => {
                    let ids: BTreeSet<_> = snap.descriptors.iter().map(|d| d.id()).collect();
                    assert!(!ids.contains(&phantom_id), "the unreachable relay was served");
                    all &= reachable.is_subset(&ids);
                    last = format!("{} relays served", ids.len());
                }
                Err(e) => {
                    all = false;
                    last = e.to_string();
                }
            }
        }
        match settled_at {
            Some(t) if t.elapsed() >= Duration::from_secs(4) => break,
            None if all => settled_at = Some(Instant::now()),
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(settled_at.is_some(), "the reachable relays were never all served: {last}");
    // The phantom was gossiped: every store knows it (so without the
    // reachability rule it would be in the cut).
    for r in &relays {
        assert!(r.ctx.metrics.directory_relays.get() >= 4, "the phantom's descriptor reached every store");
    }
    phantom.shutdown().await;
    for r in relays {
        r.shutdown().await;
    }
}
