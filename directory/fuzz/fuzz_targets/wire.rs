//! Fuzz the gossip wire decoder: it never panics, and every message it
//! accepts re-encodes to exactly the input (one encoding per message).
#![no_main]

use lamina_directory::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = Message::decode(data) {
        let again = msg.to_vec().expect("a decoded message encodes");
        assert_eq!(again, data);
        assert_eq!(msg.encoded_len(), data.len());
    }
});
