//! Fixtures shared by the integration tests: deterministic identities,
//! descriptors, engines and peers.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::net::{Ipv4Addr, SocketAddr};

use lamina_crypto::keys::{IdentityKeypair, LinkPublicKey, OnionPublicKey};
use lamina_directory::descriptor::pow;
use lamina_directory::wire::Push;
use lamina_directory::{
    Descriptor, DescriptorFields, DescriptorHash, ExitSummary, GossipConfig, GossipEngine, Message, Now, PeerId,
    Unverified,
};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

/// Wall-clock origin of the tests (unix seconds).
pub(crate) const T0: u64 = 1_700_000_000;
/// Difficulty the test engines require.
pub(crate) const DIFFICULTY: u8 = 4;

/// The test engine type.
pub(crate) type Engine = GossipEngine<ChaCha20Rng>;

/// A deterministic identity from a number.
pub(crate) fn identity(n: u32) -> IdentityKeypair {
    let mut secret = [0x5a; 32];
    secret[..4].copy_from_slice(&n.to_be_bytes());
    IdentityKeypair::from_secret_bytes(&secret)
}

/// A distinct /16 per number: 10.0.0.0/8 is avoided only for readability.
pub(crate) fn addr_of(n: u32) -> SocketAddr {
    let [_, _, a, b] = n.to_be_bytes();
    SocketAddr::from((Ipv4Addr::new(a.wrapping_add(11), b, 0, 1), 443))
}

/// `now` at `ms` milliseconds into the test (wall clock moves along).
pub(crate) fn now(ms: u64) -> Now {
    Now { mono_ms: ms, unix_s: T0 + ms / 1000 }
}

/// Fields of relay `n` with `sequence`, valid for 24 h from `published`.
pub(crate) fn fields(n: u32, sequence: u64, published: u64) -> DescriptorFields {
    DescriptorFields {
        onion_key: OnionPublicKey([0x11; 32]),
        link_key: LinkPublicKey([0x22; 32]),
        sequence,
        published,
        expires: published + 24 * 3600,
        bandwidth_kbps: 100,
        exit: ExitSummary::NotExit,
        addresses: vec![addr_of(n)],
        family: vec![],
    }
}

/// Sign `fields` for relay `n` with a proof of `difficulty` bits.
pub(crate) fn sign(n: u32, fields: DescriptorFields, difficulty: u8) -> Unverified<Descriptor> {
    let id = identity(n);
    let nonce = pow::solve(&id.relay_id(), difficulty, 0).expect("work");
    Descriptor::sign(&id, fields, nonce, difficulty).expect("sign")
}

/// A valid descriptor of relay `n` with `sequence`, published at `T0`.
pub(crate) fn descriptor(n: u32, sequence: u64) -> Unverified<Descriptor> {
    sign(n, fields(n, sequence, T0), DIFFICULTY)
}

/// The peer id of relay `n` at its address.
pub(crate) fn peer(n: u32) -> PeerId {
    PeerId { relay: identity(n).relay_id(), addr: addr_of(n) }
}

/// Test configuration: low difficulty, otherwise defaults.
pub(crate) fn config() -> GossipConfig {
    GossipConfig { pow_difficulty: DIFFICULTY, ..GossipConfig::default() }
}

/// An engine for relay `n` started at time 0.
pub(crate) fn engine(n: u32, config: GossipConfig) -> Engine {
    GossipEngine::new(identity(n).relay_id(), config, ChaCha20Rng::seed_from_u64(u64::from(n)), now(0))
        .expect("valid config")
}

/// Everything the engine wants to transmit.
pub(crate) fn drain(engine: &mut Engine) -> Vec<(PeerId, Message)> {
    std::iter::from_fn(|| engine.poll_transmit()).collect()
}

/// A `Push` of `ds`.
pub(crate) fn push(ds: Vec<Unverified<Descriptor>>) -> Message {
    Message::Push(Push { descriptors: ds })
}

/// An encoded `Push` of one raw descriptor encoding (possibly invalid).
pub(crate) fn raw_push(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0x01, 1];
    out.extend_from_slice(&u16::try_from(bytes.len()).expect("short").to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

/// Hashes of every descriptor carried by `Push` messages in `sent`.
pub(crate) fn pushed_hashes(sent: &[(PeerId, Message)]) -> Vec<DescriptorHash> {
    sent.iter()
        .filter_map(|(_, m)| match m {
            Message::Push(p) => Some(p.descriptors.iter().map(Unverified::hash).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect()
}
