//! Fuzz the seed parser (`RELAYID@IP:PORT` or `IP:PORT`): it never panics,
//! and an accepted seed prints back to a form that parses to the same seed.
#![no_main]

use lamina_directory::Seed;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(seed) = text.parse::<Seed>() {
            assert_eq!(seed.to_string().parse::<Seed>(), Ok(seed));
        }
    }
});
