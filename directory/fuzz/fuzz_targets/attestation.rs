//! Fuzz the attestation decoder: it never panics, and an accepted
//! attestation re-encodes to exactly the input (canonical form).
#![no_main]

use lamina_directory::attest::Attestation;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(a) = Attestation::decode(data) {
        assert_eq!(a.encode(), data);
        let _ = a.verify();
    }
});
