//! Fixtures shared by the unit tests: deterministic identities and signed
//! descriptors at a low proof-of-work difficulty.

use std::net::SocketAddr;

use lamina_crypto::keys::{IdentityKeypair, LinkPublicKey, OnionPublicKey};

use crate::descriptor::{pow, Descriptor, DescriptorFields, ExitSummary};
use crate::verify::{Unverified, Verified};

/// Difficulty used by unit tests (16 hashes on average).
pub(crate) const TEST_DIFFICULTY: u8 = 4;
/// A publish time used by fixtures (unix seconds).
pub(crate) const T0: u64 = 1_700_000_000;

/// A deterministic identity from one seed byte.
pub(crate) fn identity(seed: u8) -> IdentityKeypair {
    IdentityKeypair::from_secret_bytes(&[seed; 32])
}

/// Minimal valid fields: one IPv4 address, not an exit, 24 h from `T0`.
pub(crate) fn fields(sequence: u64) -> DescriptorFields {
    DescriptorFields {
        onion_key: OnionPublicKey([0x11; 32]),
        link_key: LinkPublicKey([0x22; 32]),
        sequence,
        published: T0,
        expires: T0 + 24 * 3600,
        bandwidth_kbps: 1000,
        exit: ExitSummary::NotExit,
        addresses: vec![addr("192.0.2.1:443")],
        family: vec![],
    }
}

/// Parse a socket address literal.
pub(crate) fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address literal")
}

/// Sign `fields` for `identity` at the test difficulty.
pub(crate) fn signed(identity: &IdentityKeypair, fields: DescriptorFields) -> Unverified<Descriptor> {
    let nonce = pow::solve(&identity.relay_id(), TEST_DIFFICULTY, 0).expect("test work");
    Descriptor::sign(identity, fields, nonce, TEST_DIFFICULTY).expect("test descriptor")
}

/// A verified descriptor of relay `seed` with `sequence`, at its own IP
/// address `192.0.2.<seed>` (the per-IP quota of spec §14.1 holds).
pub(crate) fn verified(seed: u8, sequence: u64) -> Verified<Descriptor> {
    let mut f = fields(sequence);
    f.addresses = vec![SocketAddr::from(([192, 0, 2, seed], 443))];
    signed(&identity(seed), f).verify(T0, TEST_DIFFICULTY).expect("fixture verifies")
}
