//! Fuzz target: the relay side of the circuit handshake (spec §4) must never
//! panic, whatever 96 bytes arrive as an onionskin.
//!
//! The first input byte chooses the mode: odd values feed the 96 bytes as
//! they are (almost always `UnknownKey`); even values keep the relay's own
//! `ID | B` prefix and take only `X` from the input, so the fuzzer reaches
//! the Diffie-Hellman and small-order checks.

#![no_main]

use lamina_crypto::handshake::{self, ONIONSKIN_LEN};
use lamina_crypto::keys::{IdentityKeypair, StaticKeypair};
use lamina_crypto::CryptoError;
use libfuzzer_sys::fuzz_target;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some(input) = rest.get(..ONIONSKIN_LEN) else {
        return;
    };
    let identity = IdentityKeypair::from_secret_bytes(&[0x11; 32]);
    let onion = StaticKeypair::from_secret_bytes(&[0x22; 32]);
    let relay_id = identity.relay_id();
    let mut onionskin = [0u8; ONIONSKIN_LEN];
    onionskin.copy_from_slice(input);
    if mode % 2 == 0 {
        onionskin[..32].copy_from_slice(relay_id.as_bytes());
        onionskin[32..64].copy_from_slice(&onion.public_bytes());
    }
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    match handshake::relay_respond(&mut rng, &relay_id, &onion, &onionskin) {
        Ok((reply, _keys)) => assert_ne!(reply, [0u8; handshake::REPLY_LEN]),
        Err(CryptoError::UnknownKey | CryptoError::NonContributory) => {}
        Err(other) => panic!("unexpected handshake error {other:?}"),
    }
});
