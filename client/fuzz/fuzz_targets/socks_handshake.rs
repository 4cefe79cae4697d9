//! Fuzz target: the SOCKS server handshake (spec §10.4) must never panic,
//! never consume more than it was given, and finish or ask for more.
//!
//! The input is fed in chunks whose sizes come from its first byte, as a
//! socket would deliver it.

#![no_main]

use lamina_client::socks::{SocksHandshake, Step};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, input)) = data.split_first() else { return };
    let chunk = usize::from(chunk.max(1));
    let mut hs = SocksHandshake::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0;
    for _ in 0..64 {
        let end = (fed + chunk).min(input.len());
        buf.extend_from_slice(&input[fed..end]);
        fed = end;
        let Ok((used, step)) = hs.handle(&buf) else { return };
        assert!(used <= buf.len(), "consumed more than given");
        buf.drain(..used);
        match step {
            Step::Request(_) | Step::Refuse(_) => return,
            Step::Send(_) => {}
            Step::NeedMore if fed == input.len() => return,
            Step::NeedMore => {}
        }
    }
});
