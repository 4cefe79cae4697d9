//! Pinned paths (spec §10.9) on real sockets: every circuit takes exactly
//! the pinned relays, and a pin that cannot be honoured fails instead of
//! falling back to other relays.

use std::time::Duration;

use lamina_client::pin::PinnedPath;
use lamina_client::{Client, ClientConfig};
use lamina_proto::msg::Target;
use lamina_tests::{serve_echo, TestNet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the directory says about relay `i` (in start order; relays
/// `0..exits` are the exits).
fn info(net: &TestNet, i: usize) -> &lamina_client::path::RelayInfo {
    net.infos.iter().find(|r| r.hop.addr == net.relays[i].addr).expect("every relay is in the directory")
}

/// Circuits created so far at each relay, in start order.
fn created(net: &TestNet) -> Vec<u64> {
    net.relays.iter().map(|r| r.ctx.metrics.circuits_created.get()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_circuit_takes_the_pinned_relays_and_no_other() {
    // Six relays, the first two exits (TestNet order). Pin a path the
    // weights would rarely pick as a whole: relay 5 → relay 3 → exit 1.
    let net = TestNet::start(6, 2, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (echo, echo_task) = serve_echo("127.0.0.1".parse().unwrap()).await;
    let pin: PinnedPath =
        format!("{},{},{}", info(&net, 5).hop.relay_id.to_hex(), info(&net, 3).hop.addr, info(&net, 1).hop.addr)
            .parse()
            .unwrap();
    let before = created(&net);
    let config = ClientConfig { pinned_path: Some(pin), prebuilt: 1, ..ClientConfig::for_test_network() };
    let client = Client::new(config, net.infos.clone(), Vec::new());
    // Eight isolation classes: eight circuits, each built on the pin.
    let target = Target::Ip("127.0.0.1".parse().unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let socket_pairs = 8;
    let mut pumps = Vec::new();
    for i in 0..socket_pairs {
        let class = Some((format!("user{i}").into_bytes(), b"x".to_vec()));
        let stream = client.connect(target.clone(), echo.port(), class).await.unwrap();
        let (mut ours, theirs) = tokio::join!(TcpStream::connect(listener.local_addr().unwrap()), listener.accept());
        pumps.push(tokio::spawn(stream.pump(theirs.unwrap().0)));
        let ours = ours.as_mut().unwrap();
        ours.write_all(b"pinned").await.unwrap();
        let mut back = [0u8; 6];
        tokio::time::timeout(Duration::from_secs(10), ours.read_exact(&mut back)).await.unwrap().unwrap();
        assert_eq!(&back, b"pinned");
    }
    let after = created(&net);
    let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    // (A background pre-build may be on its way through the pin: ≥, not =.)
    assert!(delta[5] >= socket_pairs, "every circuit enters at the pinned guard: {delta:?}");
    assert!(delta[3] >= socket_pairs, "and crosses the pinned middle: {delta:?}");
    assert!(delta[1] >= socket_pairs, "and leaves at the pinned exit: {delta:?}");
    for i in [0, 2, 4] {
        assert_eq!(delta[i], 0, "relay {i} is not pinned and carries nothing: {delta:?}");
    }
    assert!(client.circuits().iter().all(|(guard, _)| *guard == info(&net, 5).hop.relay_id));
    for p in pumps {
        p.abort();
    }
    echo_task.abort();
    net.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_that_cannot_be_honoured_fails_instead_of_falling_back() {
    let net = TestNet::start(4, 2, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (echo, echo_task) = serve_echo("127.0.0.1".parse().unwrap()).await;
    let target = Target::Ip("127.0.0.1".parse().unwrap());
    let before = created(&net);
    // The pinned exit is not in the directory (nobody listens there).
    let gone: PinnedPath =
        format!("{},{},127.200.0.1:9001", info(&net, 2).hop.addr, info(&net, 3).hop.addr).parse().unwrap();
    // The pinned "exit" is relay 3, which is no exit.
    let not_exit: PinnedPath =
        format!("{},{},{}", info(&net, 0).hop.addr, info(&net, 2).hop.addr, info(&net, 3).hop.addr).parse().unwrap();
    for pin in [gone, not_exit] {
        let config = ClientConfig { pinned_path: Some(pin), prebuilt: 1, ..ClientConfig::for_test_network() };
        let client = Client::new(config, net.infos.clone(), Vec::new());
        assert_eq!(client.ensure_prebuilt().await, 0, "no circuit on another path");
        assert!(client.connect(target.clone(), echo.port(), None).await.is_err(), "no stream on another path");
        assert_eq!(client.circuit_count(), 0);
    }
    assert_eq!(created(&net), before, "no relay saw a circuit");
    echo_task.abort();
    net.shutdown().await;
}
