//! Fuzz target: the relay message decoder (spec §7) must never panic.
//!
//! The input is a relay cell's plaintext region, capped at the backward
//! capacity (491 bytes, `lamina_crypto::layer::CT_LEN`), the largest region
//! any message is decoded from. Checks:
//! - `RelayCell::decode` is deterministic;
//! - any accepted message re-encodes into a 491-byte region and decodes to
//!   the same value; the re-encoding is the canonical form of the input's
//!   message: byte-identical, except that DROP ignores its body and an
//!   unknown END reason reads (and so re-encodes) as `Misc`;
//! - decoding ignores whatever follows the message (padding / filler).

#![no_main]

use lamina_crypto::layer::CT_LEN;
use lamina_proto::msg::{EndReason, RelayCell, RelayMsg, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let region = &data[..data.len().min(CT_LEN)];
    let first = RelayCell::decode(region);
    assert_eq!(first, RelayCell::decode(region), "RelayCell::decode is deterministic");
    let Ok(cell) = first else {
        return;
    };

    let mut out = [0xA5u8; CT_LEN];
    cell.encode_into(&mut out).expect("a decoded message re-encodes into a full region");
    assert_eq!(RelayCell::decode(&out).as_ref(), Ok(&cell), "re-encoded message decodes equal");

    // Header and body match the input byte for byte, bar the two documented
    // normalisations.
    let body_len = usize::from(u16::from_be_bytes([out[3], out[4]]));
    assert_eq!(out[..3], region[..3], "command and stream id are preserved");
    let end = HEADER_LEN + body_len;
    match cell.msg {
        RelayMsg::Drop => {}
        RelayMsg::End(reason) => {
            assert_eq!(out[..HEADER_LEN], region[..HEADER_LEN]);
            if (1..=12).contains(&region[HEADER_LEN]) {
                assert_eq!(reason.code(), region[HEADER_LEN], "known END reasons are preserved");
            } else {
                assert_eq!(reason, EndReason::Misc, "unknown END reasons read as Misc");
            }
        }
        _ => assert_eq!(out[..end], region[..end], "canonical encoding equals the input"),
    }
    assert!(out[HEADER_LEN + body_len..].iter().all(|b| *b == 0), "the rest of the region is zero");

    // Whatever follows the message is ignored.
    let mut noisy = out;
    for b in &mut noisy[HEADER_LEN + body_len..] {
        *b = 0xFF;
    }
    assert_eq!(RelayCell::decode(&noisy).as_ref(), Ok(&cell), "trailing padding is ignored");
});
