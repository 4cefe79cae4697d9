//! Fuzz the snapshot decoder, `verify_all` and `verify_served`: none ever
//! panics, and an
//! accepted snapshot re-encodes to exactly the input.
#![no_main]

use lamina_directory::Snapshot;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(snapshot) = Snapshot::decode(data) {
        assert_eq!(snapshot.encode(), data);
        let _ = snapshot.verify_all(1_750_000_000, 0);
        let _ = snapshot.verify_served(1_750_000_000, 0);
    }
});
