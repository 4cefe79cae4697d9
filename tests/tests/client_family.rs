//! Families count only when mutual (spec §10.7): a relay that names honest
//! relays as its family cannot push them out of its circuits.

use std::time::Duration;

use lamina_client::{Client, ClientConfig};
use lamina_crypto::keys::RelayId;
use lamina_relay::config::exit_summary;
use lamina_relay::exit_policy::ExitPolicy;
use lamina_relay::keys::RelayKeys;
use lamina_relay::net::directory::DirSettings;
use lamina_relay::net::registry::NetConfig;
use lamina_relay::RelayHandle;
use lamina_tests::{relay_ip, testnet_gossip, wait_for_directory, TESTNET_EXIT_POLICY};
use tokio::net::TcpListener;

/// Three relays in three /16s (the last an exit) with the given families.
async fn three_relays(base: usize, families: [Vec<usize>; 3]) -> (Vec<RelayHandle>, Client) {
    let keys: Vec<RelayKeys> = (0..3).map(|_| RelayKeys::ephemeral(&mut rand_core::OsRng)).collect();
    let ids: Vec<RelayId> = keys.iter().map(|k| k.identity.relay_id()).collect();
    let mut handles: Vec<RelayHandle> = Vec::new();
    for (i, (keys, family)) in keys.into_iter().zip(families).enumerate() {
        let listener = TcpListener::bind((relay_ip(base + i), 0)).await.expect("bind");
        let advertised = listener.local_addr().expect("addr");
        let policy =
            if i == 2 { ExitPolicy::parse(TESTNET_EXIT_POLICY).expect("policy") } else { ExitPolicy::reject_all() };
        let settings = DirSettings {
            gossip: testnet_gossip(),
            seeds: handles.first().map(|h| vec![lamina_directory::seed::Seed::unpinned(h.addr)]).unwrap_or_default(),
            advertised,
            bandwidth_kbps: 1000,
            exit: exit_summary(&policy),
            family: family.iter().map(|j| ids[*j]).collect(),
            state_file: None,
        };
        let net =
            NetConfig { create_rate: 10_000.0, create_burst: 10_000.0, test_network: true, ..NetConfig::default() };
        handles.push(lamina_relay::spawn_with_directory(listener, keys, policy, net, Some(settings)).expect("relay"));
    }
    let seeds: Vec<_> = handles.iter().map(|h| h.addr).collect();
    let infos = wait_for_directory(&seeds, 3).await.expect("directory").relays();
    let config =
        ClientConfig { prebuilt: 0, build_timeout: Duration::from_secs(2), ..ClientConfig::for_test_network() };
    (handles, Client::new(config, infos, Vec::new()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_sided_family_declaration_has_no_effect() {
    // The exit claims both other relays as its family; they do not agree.
    let (relays, client) = three_relays(40, [vec![], vec![], vec![0, 1]]).await;
    let exit = client.guard_set().info(relays[2].relay_id()).map(|r| r.family.clone());
    assert_eq!(exit.map(|f| f.len()), Some(2), "the claim is in the directory");
    for _ in 0..3 {
        assert!(client.probe_build().await.is_ok(), "the only possible path is still used");
    }
    for r in relays {
        r.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutual_family_is_never_on_one_circuit() {
    // Relay 0 and the exit list each other: no three-relay path remains.
    let (relays, client) = three_relays(50, [vec![2], vec![], vec![0]]).await;
    assert!(client.probe_build().await.is_err(), "a mutual family never shares a circuit");
    for r in relays {
        r.shutdown().await;
    }
}
