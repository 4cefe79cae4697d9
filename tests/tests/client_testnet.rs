//! Without `--test-network` the client refuses relays at non-public
//! addresses (spec §10.8); with it, a loopback network works.

use std::time::Duration;

use lamina_client::{Client, ClientConfig};
use lamina_tests::TestNet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_relays_are_used_only_on_a_test_network() {
    let net = TestNet::start(3, 1, "127.0.0.1:0".parse().expect("addr")).await.expect("testnet");
    let strict = ClientConfig { prebuilt: 0, build_timeout: Duration::from_secs(1), ..ClientConfig::default() };
    let client = Client::new(strict, net.infos.clone(), Vec::new());
    assert!(client.guards().is_empty(), "no loopback relay is sampled as a guard");
    assert!(client.probe_build().await.is_err(), "no path through loopback relays");
    let created: u64 = net.relays.iter().map(|r| r.ctx.metrics.circuits_created.get()).sum();
    assert_eq!(created, 0, "no relay saw a circuit");
    let test =
        Client::new(ClientConfig { prebuilt: 0, ..ClientConfig::for_test_network() }, net.infos.clone(), Vec::new());
    assert!(test.probe_build().await.is_ok(), "with --test-network the same relays are used");
    net.shutdown().await;
}
