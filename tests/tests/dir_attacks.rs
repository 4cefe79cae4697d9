//! Attacks on the agreed directory, against a network of real relays on
//! loopback sockets (spec §13.3, §13.4, §13.5, §13.8).
//!
//! The attacker's gossip is handed to a relay's directory task as if it
//! came from a relay link of its own (the link layer is skipped for the
//! attacker only; everything after it is the relays' own code).

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lamina_client::dir::{bootstrap_seeds, bootstrap_seeds_skewed, fetch_from, fetch_signed, DirParams};
use lamina_crypto::keys::{IdentityKeypair, LinkPublicKey, OnionPublicKey, RelayId};
use lamina_directory::descriptor::pow;
use lamina_directory::statement::EpochStatement;
use lamina_directory::wire::Push;
use lamina_directory::{Descriptor, DescriptorFields, Epoch, ExitSummary, Message, Seed};
use lamina_proto::circuit::relay::LinkId;
use lamina_relay::net::directory::DirCmd;
use lamina_relay::RelayHandle;
use lamina_tests::{TestNet, TESTNET_POW_BITS};
use tokio::net::{TcpListener, TcpStream};

/// Client parameters of the test network.
fn params() -> DirParams {
    DirParams { pow_bits: TESTNET_POW_BITS, timeout: Duration::from_secs(5) }
}

/// Wall-clock unix seconds.
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Hand `msg` to `relay`'s directory task as if relay `from` (at `addr`)
/// had sent it over a link.
async fn inject(relay: &RelayHandle, from: RelayId, addr: SocketAddr, msg: &Message) {
    let bytes = msg.to_vec().expect("encode");
    let inbox = relay.ctx.dir_inbox.as_ref().expect("a directory relay");
    let cmd = DirCmd::Message { link: LinkId(u64::MAX - u64::from(from.0[0])), relay: Some(from), addr, bytes };
    inbox.send(cmd).await.expect("directory task running");
}

/// A descriptor of `identity` with `sequence`, advertising `bandwidth`.
fn descriptor(identity: &IdentityKeypair, sequence: u64, bandwidth: u32) -> Message {
    let now = unix_now();
    let fields = DescriptorFields {
        onion_key: OnionPublicKey([0x11; 32]),
        link_key: LinkPublicKey([0x22; 32]),
        sequence,
        published: now.saturating_sub(1),
        expires: now + 3600,
        bandwidth_kbps: bandwidth,
        exit: ExitSummary::NotExit,
        addresses: vec!["127.220.0.1:9".parse().expect("address")],
        family: vec![],
    };
    let nonce = pow::solve(&identity.relay_id(), TESTNET_POW_BITS, 0).expect("work");
    let d = Descriptor::sign(identity, fields, nonce, TESTNET_POW_BITS).expect("descriptor");
    Message::Push(Push { descriptors: vec![d] })
}

/// A fake gossip peer, one per /16.
fn fake_peer(i: u8) -> (RelayId, SocketAddr) {
    (RelayId([0xA0 + i; 32]), SocketAddr::from(([127, 230 + i, 0, 1], 1)))
}

/// (a) One identity signs two descriptors with one sequence and pushes
/// each into one half of the network. Every relay ends holding the proof
/// (the identity banned), and all serve one root without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equivocation_into_two_halves_ends_banned_everywhere() {
    let net = TestNet::start(6, 1, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let liar = IdentityKeypair::from_secret_bytes(&[0x5a; 32]);
    let sequence = unix_now();
    let (one, two) = (descriptor(&liar, sequence, 1_000), descriptor(&liar, sequence, 2_000));
    for (i, relay) in net.relays.iter().enumerate() {
        let (id, addr) = fake_peer(u8::try_from(i).unwrap());
        inject(relay, id, addr, if i < 3 { &one } else { &two }).await;
    }
    let started = Instant::now();
    let mut last = String::new();
    let mut done = false;
    while started.elapsed() < Duration::from_secs(40) && !done {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let proven = net.relays.iter().filter(|r| r.ctx.metrics.directory_equivocations.get() >= 1).count();
        let Ok((_, newest)) = fetch_from(Seed::unpinned(net.relays[0].addr), Epoch(0), params()).await else {
            continue;
        };
        let mut roots = Vec::new();
        for relay in &net.relays {
            match fetch_from(Seed::unpinned(relay.addr), newest.epoch, params()).await {
                Ok((_, s)) => roots.push((s.root, s.descriptors.iter().any(|d| d.id() == liar.relay_id()))),
                Err(e) => last = e.to_string(),
            }
        }
        let one_root = roots.len() == net.relays.len() && roots.windows(2).all(|w| w[0].0 == w[1].0);
        let excluded = roots.iter().all(|(_, has_liar)| !has_liar);
        last = format!(
            "{proven} relays proved it; {} answers, one root: {one_root}, excluded: {excluded}; {last}",
            roots.len()
        );
        done = proven == net.relays.len() && one_root && excluded;
    }
    assert!(done, "not banned everywhere with one root: {last}");
    net.shutdown().await;
}

/// (b) A relay signs a second statement for an epoch it already stated
/// and gets it into the gossip. The honest relays find the conflict and
/// serve the proof; a client with that relay and two honest ones as seeds
/// logs the proof, ignores the liar's vote and ends on the honest root.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_statements_void_the_liars_vote() {
    let net = TestNet::start(6, 1, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let liar = &net.relays[0];
    let honest = liar.ctx.keys.identity.relay_id();
    let mut stated = None;
    for _ in 0..50 {
        if let Ok(f) = fetch_signed(Seed { id: Some(honest), addr: liar.addr }, Epoch(0), params()).await {
            if f.statement.is_some() {
                stated = f.statement;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = stated.expect("the relay signs what it serves");
    let second =
        EpochStatement::sign(&liar.ctx.keys.identity, first.epoch, [0xee; 32], first.count, first.previous_root);
    let (id, addr) = fake_peer(9);
    inject(&net.relays[4], id, addr, &Message::Statement(second)).await;
    // The relays also hear the liar's own statement of that epoch: hand it
    // to another relay too, so the pair meets even if the first one was
    // forwarded before the forgery arrived.
    let (id, addr) = fake_peer(10);
    inject(&net.relays[5], id, addr, &Message::Statement(first)).await;

    let seeds: Vec<Seed> = net.relays.iter().take(3).map(|r| Seed { id: Some(r.relay_id()), addr: r.addr }).collect();
    let started = Instant::now();
    let mut last = String::new();
    let mut accepted = None;
    while started.elapsed() < Duration::from_secs(30) && accepted.is_none() {
        tokio::time::sleep(Duration::from_millis(300)).await;
        match bootstrap_seeds(&seeds, params()).await {
            Ok(d) if d.conflicts.iter().any(|c| c.first.relay == honest) => accepted = Some(d),
            Ok(d) => last = format!("accepted without the proof, {} agreeing", d.agreeing.len()),
            Err(e) => last = e.to_string(),
        }
    }
    let d = accepted.unwrap_or_else(|| panic!("no proof reached the client: {last}"));
    assert!(d.conflicts.iter().all(|c| c.is_valid()));
    assert!(!d.agreeing.contains(&liar.addr), "the liar's vote is void");
    assert_eq!(d.agreeing.len(), 2);
    assert!(d.disagreeing.iter().any(|(a, e)| *a == liar.addr && e.contains("two statements")));
    assert_eq!(d.snapshot.descriptors.len(), 6);
    let spread = net.relays.iter().filter(|r| r.ctx.metrics.directory_statement_conflicts.get() >= 1).count();
    assert!(spread >= 3, "the proof is gossiped ({spread} relays hold it)");
    net.shutdown().await;
}

/// Forward every connection to `listen` to `target` until aborted.
async fn forwarder(listen: SocketAddr, target: SocketAddr) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind(listen).await.expect("bind");
    let addr = listener.local_addr().expect("bound");
    let task = tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, task)
}

/// (c) One relay reached at two addresses (in two /16s) is one vote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_seeds_with_one_relay_id_are_one_vote() {
    let net = TestNet::start(4, 1, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (alias, task) = forwarder("127.240.0.1:0".parse().unwrap(), net.relays[0].addr).await;
    let seeds = [Seed::unpinned(net.relays[0].addr), Seed::unpinned(alias), Seed::unpinned(net.relays[1].addr)];
    let mut accepted = None;
    for _ in 0..30 {
        if let Ok(d) = bootstrap_seeds(&seeds, params()).await {
            accepted = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let d = accepted.expect("a directory");
    assert_eq!(d.agreeing.len(), 2, "the relay behind two addresses votes once: {:?}", d.agreeing);
    assert!(d.agreeing.contains(&net.relays[1].addr));
    assert!(!(d.agreeing.contains(&alias) && d.agreeing.contains(&net.relays[0].addr)));
    task.abort();
    net.shutdown().await;
}

/// (d) A client whose clock is five minutes behind or ahead still
/// bootstraps on the whole directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_five_minutes_off_bootstraps() {
    let net = TestNet::start(4, 1, "127.0.0.1:0".parse().unwrap()).await.unwrap();
    let seeds: Vec<Seed> = net.relays.iter().take(3).map(|r| Seed::unpinned(r.addr)).collect();
    for skew in [-300, 300] {
        let mut got = None;
        for _ in 0..30 {
            if let Ok(d) = bootstrap_seeds_skewed(&seeds, params(), skew).await {
                got = Some(d);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let d = got.unwrap_or_else(|| panic!("no directory with the clock {skew} s off"));
        assert_eq!(d.snapshot.descriptors.len(), 4, "clock {skew} s off: every descriptor usable");
    }
    net.shutdown().await;
}
