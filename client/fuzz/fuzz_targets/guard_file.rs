//! Fuzz target: reading the persisted guard sample (spec §10.5) must never
//! panic, keep at most `sample_max` guards, and round-trip what it kept.

#![no_main]

use lamina_client::guard::{GuardParams, GuardSet};
use libfuzzer_sys::fuzz_target;
use rand_chacha::rand_core::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut rng = rand_chacha::ChaCha20Rng::from_seed([0; 32]);
    let params = GuardParams::default();
    let set = GuardSet::from_text(params, &text, &mut rng, 1_000);
    assert!(set.sample().len() <= params.sample_max);
    let again = GuardSet::from_text(params, &set.to_text(), &mut rng, 1_000);
    assert_eq!(again.sample(), set.sample(), "what was kept round-trips");
});
