//! Fuzz the measurement decoder: it never panics, and an accepted
//! measurement re-encodes to exactly the input (canonical form).
#![no_main]

use lamina_directory::measure::Measurement;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Measurement::decode(data) {
        assert_eq!(m.encode(), data);
        let _ = m.verify();
    }
});
