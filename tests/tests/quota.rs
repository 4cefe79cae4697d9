//! Sybil quota on real sockets (spec §14.1): six relays on one IP address
//! (different ports) — no relay's directory ever lists more than four of
//! them, and the relays that sync all keep the same four.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lamina_client::dir::{fetch_snapshot, DirParams};
use lamina_directory::quota::DEFAULT_MAX_PER_IP;
use lamina_relay::exit_policy::ExitPolicy;
use lamina_relay::keys::RelayKeys;
use lamina_relay::net::registry::NetConfig;
use lamina_relay::RelayHandle;
use lamina_tests::{relay_ip, relay_settings, TESTNET_POW_BITS};
use tokio::net::TcpListener;

/// The one address the six relays share.
const SHARED: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 77, 0, 1));

/// A relay listening on `ip` (any port), seeded by `seed`.
async fn relay_on(ip: IpAddr, seed: Option<SocketAddr>) -> RelayHandle {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await.expect("bind");
    let advertised = listener.local_addr().expect("address");
    let policy = ExitPolicy::reject_all();
    let settings = relay_settings(advertised, seed, &policy);
    let keys = RelayKeys::ephemeral(&mut rand_core::OsRng);
    lamina_relay::spawn_with_directory(
        listener,
        keys,
        policy,
        NetConfig { test_network: true, ..NetConfig::default() },
        Some(settings),
    )
    .expect("start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_relays_on_one_ip_at_most_four_listed() {
    let seed = relay_on(relay_ip(0), None).await;
    let mut relays = vec![];
    for _ in 0..6 {
        relays.push(relay_on(SHARED, Some(seed.addr)).await);
    }
    let params = DirParams { pow_bits: TESTNET_POW_BITS, timeout: Duration::from_secs(5) };
    let shared_ids = |snap: &lamina_directory::VerifiedSnapshot| -> BTreeSet<_> {
        snap.descriptors.iter().filter(|d| d.addresses().iter().any(|a| a.ip() == SHARED)).map(|d| d.id()).collect()
    };
    // Until every relay lists four of them (bounded: 30 s), no relay ever
    // lists more.
    let started = Instant::now();
    let mut settled = false;
    let mut last = Vec::new();
    while started.elapsed() < Duration::from_secs(30) && !settled {
        let mut views = Vec::new();
        for r in std::iter::once(&seed).chain(&relays) {
            if let Ok((_, snap)) = fetch_snapshot(r.addr, params).await {
                let ids = shared_ids(&snap);
                assert!(ids.len() <= DEFAULT_MAX_PER_IP, "{} relays of one IP listed", ids.len());
                views.push(ids);
            }
        }
        last = views.iter().map(BTreeSet::len).collect();
        // The seed and the four admitted relays agree on the same four. (The
        // two refused relays are not admitted as gossip peers — the engine's
        // per-/16 inbound bucket — so they may serve nothing, lacking the
        // attestations their cut needs (spec §14.2), or, since the cut
        // applies the per-IP quota to its whole set (§14.1), the same four.)
        settled = views.len() > DEFAULT_MAX_PER_IP
            && views[0].len() == DEFAULT_MAX_PER_IP
            && views.iter().filter(|v| **v == views[0]).count() > DEFAULT_MAX_PER_IP;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(settled, "the seed and the admitted four agree on four of the six; last counts {last:?}");
    for r in relays {
        r.shutdown().await;
    }
    seed.shutdown().await;
}
