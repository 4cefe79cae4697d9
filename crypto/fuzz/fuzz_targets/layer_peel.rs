//! Fuzz target: the layer operations that consume bytes from the network
//! (spec §6) must never panic and never accept a modified cell.
//!
//! Input: one mode byte, then 507 bytes.
//! - mode 0–1: the bytes are a forward cell body for `peel_forward` at each
//!   hop of a fixed 3-hop circuit (`has_next_hop` from the mode), and a
//!   backward body for `unwrap_backward`. Random bodies must fail cleanly.
//! - mode 2–255: the bytes are an XOR mask over a genuine cell (forward to
//!   hop `mode % 3`, or backward from it): the cell must be accepted exactly
//!   when the mask is all zeros.

#![no_main]

use lamina_crypto::handshake::HopKeys;
use lamina_crypto::layer::{forward_capacity, LayerStack, Peeled, RelayLayers, BODY_LEN, TAG_LEN};
use libfuzzer_sys::fuzz_target;

/// Fixed keys of hop `h`.
fn keys(h: u8) -> HopKeys {
    HopKeys {
        forward: [0xf0 | h; 32].into(),
        backward: [0xb0 | h; 32].into(),
    }
}

/// A fresh 3-hop circuit: the client stack and the three relays.
fn circuit() -> (LayerStack, Vec<RelayLayers>) {
    let mut stack = LayerStack::new();
    let mut relays = Vec::new();
    for h in 0..3 {
        stack.push(&keys(h)).expect("three hops fit");
        relays.push(RelayLayers::new(&keys(h)));
    }
    (stack, relays)
}

/// XOR `mask` into `body`.
fn xor(body: &mut [u8; BODY_LEN], mask: &[u8; BODY_LEN]) {
    for (b, m) in body.iter_mut().zip(mask) {
        *b ^= m;
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Some(bytes) = rest.get(..BODY_LEN) else {
        return;
    };
    let mut input = [0u8; BODY_LEN];
    input.copy_from_slice(bytes);
    let (mut stack, mut relays) = circuit();

    if mode < 2 {
        for (i, relay) in relays.iter_mut().enumerate() {
            let mut body = input;
            let _ = relay.peel_forward(&mut body, mode == 1 || i < 2);
        }
        let mut body = input;
        let _ = stack.unwrap_backward(&mut body);
        return;
    }

    let hop = usize::from(mode % 3);
    let untouched = input == [0u8; BODY_LEN];
    if mode % 2 == 0 {
        // Forward to `hop`, masked before hop 0.
        let mut body = [0u8; BODY_LEN];
        body[TAG_LEN..TAG_LEN + forward_capacity(hop)].fill(0x42);
        let tag = stack.wrap_forward(hop, &mut body).expect("fresh counters");
        xor(&mut body, &input);
        for (i, relay) in relays.iter_mut().enumerate().take(hop + 1) {
            let result = relay.peel_forward(&mut body, i < 2);
            if !untouched {
                assert!(result.is_err(), "hop {i} accepted a modified cell");
                return;
            }
            let expected = if i == hop {
                Peeled::Recognized { tag }
            } else {
                Peeled::Onward
            };
            assert_eq!(result, Ok(expected));
        }
    } else {
        // Backward from `hop`, masked on the client's link.
        let mut body = [0x24u8; BODY_LEN];
        let tag = relays[hop]
            .originate_backward(&mut body)
            .expect("fresh counter");
        for relay in relays[..hop].iter_mut().rev() {
            relay.relay_backward(&mut body).expect("fresh counter");
        }
        xor(&mut body, &input);
        let result = stack.unwrap_backward(&mut body);
        if untouched {
            assert_eq!(result, Ok((hop, tag)));
        } else {
            assert!(result.is_err(), "client accepted a modified cell");
        }
    }
});
