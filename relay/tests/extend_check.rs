//! The EXTEND check of spec §15.3, refusal by refusal, on a relay context
//! with a known verified-directory view (no sockets: the check runs before
//! any dialling).

use std::net::SocketAddr;

use lamina_crypto::keys::{IdentityKeypair, StaticKeypair};
use lamina_proto::msg::Extend;
use lamina_relay::exit_policy::ExitPolicy;
use lamina_relay::keys::RelayKeys;
use lamina_relay::net::link::{check_extend, ExtendRefusal};
use lamina_relay::net::registry::{KnownRelay, NetConfig, RelayContext};

/// An EXTEND to `relay_id` with `link_key` at `addr`.
fn extend(
    relay_id: lamina_crypto::keys::RelayId,
    link_key: lamina_crypto::keys::LinkPublicKey,
    addr: SocketAddr,
) -> Extend {
    Extend { relay_id, link_key, addr, onionskin: [0u8; lamina_crypto::handshake::ONIONSKIN_LEN] }
}

#[test]
fn every_refusal_of_the_extend_check() {
    let mut rng = rand_core::OsRng;
    let (_tx, rx) = tokio::sync::watch::channel(false);
    let config = NetConfig::default();
    let ctx = RelayContext::new(RelayKeys::ephemeral(&mut rng), ExitPolicy::reject_all(), config, rx, None);
    let (v_id, v_key) =
        (IdentityKeypair::generate(&mut rng).relay_id(), StaticKeypair::generate(&mut rng).link_public());
    let (p_id, p_key) =
        (IdentityKeypair::generate(&mut rng).relay_id(), StaticKeypair::generate(&mut rng).link_public());
    let public: SocketAddr = "8.8.8.8:9001".parse().unwrap();
    let private: SocketAddr = "10.0.0.7:9001".parse().unwrap();
    let attacker_key = StaticKeypair::generate(&mut rng).link_public();

    // Before the directory lists anyone, every relay is unknown.
    assert_eq!(check_extend(&ctx, &extend(v_id, v_key, public), None), Err(ExtendRefusal::Unknown));
    ctx.publish_directory(3, || {
        vec![
            (v_id, KnownRelay { link_key: v_key, addrs: vec![public] }),
            (p_id, KnownRelay { link_key: p_key, addrs: vec![private] }),
        ]
    });
    assert_eq!(check_extend(&ctx, &extend(v_id, v_key, public), None), Ok(()));
    assert_eq!(check_extend(&ctx, &extend(v_id, attacker_key, public), None), Err(ExtendRefusal::WrongKey));
    let elsewhere: SocketAddr = "8.8.4.4:9001".parse().unwrap();
    assert_eq!(check_extend(&ctx, &extend(v_id, v_key, elsewhere), None), Err(ExtendRefusal::WrongAddress));
    assert_eq!(check_extend(&ctx, &extend(v_id, v_key, public), Some(v_id)), Err(ExtendRefusal::PreviousHop));
    assert_eq!(check_extend(&ctx, &extend(v_id, v_key, public), Some(p_id)), Ok(()));
    let own = (ctx.relay_id, ctx.keys.link.link_public());
    assert_eq!(check_extend(&ctx, &extend(own.0, own.1, public), None), Err(ExtendRefusal::Ourselves));
    // A listed relay at a private address: refused outside a test network.
    assert_eq!(check_extend(&ctx, &extend(p_id, p_key, private), None), Err(ExtendRefusal::NonPublic));

    let (_tx2, rx2) = tokio::sync::watch::channel(false);
    let test = NetConfig { test_network: true, ..NetConfig::default() };
    let ctx = RelayContext::new(RelayKeys::ephemeral(&mut rng), ExitPolicy::reject_all(), test, rx2, None);
    ctx.publish_directory(1, || vec![(p_id, KnownRelay { link_key: p_key, addrs: vec![private] })]);
    assert_eq!(check_extend(&ctx, &extend(p_id, p_key, private), None), Ok(()), "a test network extends anywhere");
}
