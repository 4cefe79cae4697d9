//! Pinned seeds and the client's vote rule on real sockets (spec §13.4):
//! a seed that proves its pinned id is accepted, one that proves another is
//! refused and named; a client with three seeds, one mis-pinned, ends on
//! the honest root and reports the refused seed.

use std::time::Duration;

use lamina_client::dir::{bootstrap_seeds, fetch_from, DirParams};
use lamina_crypto::keys::RelayId;
use lamina_directory::{Epoch, Seed};
use lamina_tests::{TestNet, TESTNET_POW_BITS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_seeds_are_checked() {
    let net = TestNet::start(4, 1, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let params = DirParams { pow_bits: TESTNET_POW_BITS, timeout: Duration::from_secs(5) };
    let r0 = &net.relays[0];
    let right = Seed { id: Some(r0.relay_id()), addr: r0.addr };
    let (id, snap) = fetch_from(right, Epoch(0), params).await.expect("the right pin is accepted");
    assert_eq!(id, r0.relay_id());
    assert_eq!(snap.descriptors.len(), 4);

    let wrong = Seed { id: Some(RelayId([0x42; 32])), addr: r0.addr };
    let err = fetch_from(wrong, Epoch(0), params).await.expect_err("a wrong pin is refused");
    let text = err.to_string();
    assert!(text.contains("pinned to") && text.contains(&r0.addr.to_string()), "{text}");

    // A relay pinned with another relay's id: that seed is left out of the
    // vote, the two honest seeds still make a majority, and it is named.
    let seeds = [
        Seed { id: Some(net.relays[1].relay_id()), addr: net.relays[1].addr },
        Seed { id: Some(net.relays[2].relay_id()), addr: net.relays[2].addr },
        Seed { id: Some(net.relays[1].relay_id()), addr: net.relays[3].addr },
    ];
    let mut accepted = None;
    for _ in 0..30 {
        if let Ok(d) = bootstrap_seeds(&seeds, params).await {
            accepted = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let d = accepted.expect("the honest seeds make a majority");
    assert_eq!(d.snapshot.descriptors.len(), 4);
    assert_eq!(d.agreeing.len(), 2);
    assert!(d.disagreeing.iter().any(|(addr, e)| *addr == net.relays[3].addr && e.contains("pinned to")));
    net.shutdown().await;
}

/// Every relay of a running network serves the same root for the same
/// epoch, asked by epoch (the previous epoch is served too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_agree_per_epoch() {
    let net = TestNet::start(6, 1, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let params = DirParams { pow_bits: TESTNET_POW_BITS, timeout: Duration::from_secs(5) };
    let mut by_epoch: std::collections::BTreeMap<u64, Vec<[u8; 32]>> = std::collections::BTreeMap::new();
    for _ in 0..3 {
        for relay in &net.relays {
            if let Ok((_, snap)) = fetch_from(Seed::unpinned(relay.addr), Epoch(0), params).await {
                by_epoch.entry(snap.epoch.0).or_default().push(snap.root);
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(!by_epoch.is_empty());
    for (epoch, roots) in &by_epoch {
        assert!(roots.windows(2).all(|w| w[0] == w[1]), "epoch {epoch}: two roots served");
    }
    net.shutdown().await;
}
