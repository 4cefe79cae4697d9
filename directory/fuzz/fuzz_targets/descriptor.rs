//! Fuzz the descriptor decoder: it never panics, accepts only canonical
//! encodings (what it accepts is exactly the input), and verification of
//! anything it accepts never panics either.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = lamina_directory::Descriptor::decode(data) {
        assert_eq!(d.as_bytes(), data);
        let _ = d.verify(1_750_000_000, 0);
    }
});
