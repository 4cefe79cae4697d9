//! Property tests of the cell and relay-message codecs (CONTRIBUTING.md P5, P10):
//! every valid relay message survives encode → decode unchanged; any bytes
//! at all decode without panicking, and the same bytes always give the same
//! answer; a short cell is `Incomplete` (with the deficit of the next
//! field), and a short relay message inside its fixed region is invalid.

use std::net::{IpAddr, SocketAddr};

use lamina_crypto::handshake::{ONIONSKIN_LEN, REPLY_LEN};
use lamina_crypto::keys::{LinkPublicKey, RelayId};
use lamina_crypto::layer::{BACKWARD_CAPACITY, TAG_LEN};
use lamina_proto::cell::{Cell, CellCommand, CircId, CELL_LEN, PAYLOAD_LEN};
use lamina_proto::codec::DecodeError;
use lamina_proto::msg::{EndReason, Extend, RelayCell, RelayMsg, StreamId, Target, HEADER_LEN, MAX_RESOLVED};
use proptest::prelude::*;

/// Largest DATA body in a backward region.
const MAX_DATA: usize = BACKWARD_CAPACITY - HEADER_LEN;

/// `N` arbitrary bytes.
fn bytes<const N: usize>() -> impl Strategy<Value = [u8; N]> {
    prop::collection::vec(any::<u8>(), N).prop_map(|v| v.try_into().expect("the vector has N bytes"))
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![any::<[u8; 4]>().prop_map(IpAddr::from), any::<[u8; 16]>().prop_map(IpAddr::from)]
}

/// Valid host names: 1..=255 printable ASCII characters, no space.
fn hostname() -> impl Strategy<Value = String> {
    "[!-~]{1,255}"
}

fn target() -> impl Strategy<Value = Target> {
    prop_oneof![hostname().prop_map(Target::Hostname), ip().prop_map(Target::Ip)]
}

fn end_reason() -> impl Strategy<Value = EndReason> {
    (1u8..=12).prop_map(EndReason::from_code)
}

fn stream() -> impl Strategy<Value = StreamId> {
    (1u16..=u16::MAX).prop_map(StreamId)
}

fn extend() -> impl Strategy<Value = Extend> {
    (any::<[u8; 32]>(), any::<[u8; 32]>(), ip(), any::<u16>(), bytes::<ONIONSKIN_LEN>()).prop_map(
        |(id, link, ip, port, onionskin)| Extend {
            relay_id: RelayId(id),
            link_key: LinkPublicKey(link),
            addr: SocketAddr::new(ip, port),
            onionskin,
        },
    )
}

/// Every relay message kind, with valid contents, on a stream id its
/// stream rule allows.
fn relay_cell() -> impl Strategy<Value = RelayCell> {
    prop_oneof![
        (stream(), target(), any::<u16>())
            .prop_map(|(s, target, port)| RelayCell::new(s, RelayMsg::Begin { target, port })),
        (stream(), prop::collection::vec(any::<u8>(), 1..=MAX_DATA))
            .prop_map(|(s, d)| RelayCell::new(s, RelayMsg::Data(d))),
        (stream(), end_reason()).prop_map(|(s, r)| RelayCell::new(s, RelayMsg::End(r))),
        (stream(), prop::option::of(ip())).prop_map(|(s, a)| RelayCell::new(s, RelayMsg::Connected(a))),
        (any::<u16>(), any::<[u8; TAG_LEN]>()).prop_map(|(s, t)| RelayCell::new(StreamId(s), RelayMsg::Sendme(t))),
        extend().prop_map(|e| RelayCell::new(StreamId::CIRCUIT, RelayMsg::Extend(Box::new(e)))),
        bytes::<REPLY_LEN>().prop_map(|r| RelayCell::new(StreamId::CIRCUIT, RelayMsg::Extended(r))),
        Just(RelayCell::new(StreamId::CIRCUIT, RelayMsg::Drop)),
        (stream(), hostname()).prop_map(|(s, h)| RelayCell::new(s, RelayMsg::Resolve(h))),
        (stream(), prop::collection::vec(ip(), 0..=MAX_RESOLVED))
            .prop_map(|(s, a)| RelayCell::new(s, RelayMsg::Resolved(a))),
        stream().prop_map(|s| RelayCell::new(s, RelayMsg::BeginDir)),
    ]
}

/// A cell with a known command and any contents.
fn cell() -> impl Strategy<Value = Cell> {
    (any::<u32>(), 0u8..5, bytes::<PAYLOAD_LEN>()).prop_map(|(circ, code, payload)| Cell {
        circ: CircId(circ),
        command: CellCommand::from_code(code).expect("codes 0..5 are known"),
        payload,
    })
}

/// Bytes shaped like a relay message (known-ish command, a length field
/// matching the body most of the time) so decoding gets past the header.
fn relay_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    (0u8..=0x0d, any::<u16>(), prop::collection::vec(any::<u8>(), 0..300), any::<bool>(), any::<u16>()).prop_map(
        |(code, stream, body, honest_len, len)| {
            let len = if honest_len { u16::try_from(body.len()).expect("bodies are short") } else { len };
            let mut out = vec![code];
            out.extend_from_slice(&stream.to_be_bytes());
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&body);
            out
        },
    )
}

/// The deficit `Cell::decode` reports for `len` bytes: that of the field it
/// was reading (circuit id, command, payload).
fn cell_deficit(len: usize) -> usize {
    match len {
        0..=3 => 4 - len,
        4 => 1,
        _ => CELL_LEN - len,
    }
}

proptest! {
    #[test]
    fn relay_cells_round_trip(cell in relay_cell(), filler in any::<u8>()) {
        let mut region = [filler; BACKWARD_CAPACITY];
        cell.encode_into(&mut region).unwrap();
        prop_assert_eq!(RelayCell::decode(&region), Ok(cell.clone()));
        // The message alone, without the padding, decodes the same.
        let len = usize::from(u16::from_be_bytes([region[3], region[4]]));
        prop_assert!(region[HEADER_LEN + len..].iter().all(|b| *b == 0));
        prop_assert_eq!(RelayCell::decode(&region[..HEADER_LEN + len]), Ok(cell));
    }

    #[test]
    fn truncated_relay_messages_are_invalid(cell in relay_cell(), cut in any::<prop::sample::Index>()) {
        let mut region = [0u8; BACKWARD_CAPACITY];
        cell.encode_into(&mut region).unwrap();
        let len = HEADER_LEN + usize::from(u16::from_be_bytes([region[3], region[4]]));
        let cut = cut.index(len);
        prop_assert_eq!(
            RelayCell::decode(&region[..cut]),
            Err(DecodeError::Invalid { what: "relay message", reason: "truncated" })
        );
    }

    #[test]
    fn relay_decode_never_panics_and_is_deterministic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let first = RelayCell::decode(&bytes);
        prop_assert_eq!(&first, &RelayCell::decode(&bytes));
        if let Ok(cell) = first {
            let mut region = [0u8; BACKWARD_CAPACITY];
            if cell.encode_into(&mut region).is_ok() {
                prop_assert_eq!(RelayCell::decode(&region), Ok(cell));
            }
        }
    }

    #[test]
    fn relay_like_bytes_decode_deterministically_and_reencode(bytes in relay_like_bytes()) {
        let first = RelayCell::decode(&bytes);
        prop_assert_eq!(&first, &RelayCell::decode(&bytes));
        // A short input is never reported as incomplete: the region is fixed.
        let incomplete = matches!(first, Err(DecodeError::Incomplete { .. }));
        prop_assert!(!incomplete, "a relay message is never incomplete");
        if let Ok(cell) = first {
            let mut region = [0u8; BACKWARD_CAPACITY];
            cell.encode_into(&mut region).unwrap();
            prop_assert_eq!(RelayCell::decode(&region), Ok(cell));
        }
    }

    #[test]
    fn cell_decode_never_panics_and_is_deterministic(bytes in prop::collection::vec(any::<u8>(), 0..1100)) {
        let first = Cell::decode(&bytes);
        prop_assert_eq!(&first, &Cell::decode(&bytes));
        match first {
            Ok(cell) => {
                let mut out = Vec::new();
                cell.encode_into(&mut out);
                prop_assert_eq!(out.as_slice(), &bytes[..CELL_LEN]);
            }
            Err(DecodeError::Incomplete { deficit }) => {
                prop_assert!(bytes.len() < CELL_LEN);
                prop_assert_eq!(deficit, cell_deficit(bytes.len()));
            }
            Err(DecodeError::Invalid { what, reason }) => {
                prop_assert!(bytes.len() >= CELL_LEN);
                prop_assert_eq!((what, reason), ("cell", "unknown command"));
                prop_assert!(bytes[4] > 0x04);
            }
        }
    }

    #[test]
    fn prefixes_of_a_cell_are_incomplete(cell in cell(), cut in any::<prop::sample::Index>()) {
        let mut out = Vec::new();
        cell.encode_into(&mut out);
        prop_assert_eq!(out.len(), CELL_LEN);
        let cut = cut.index(CELL_LEN);
        prop_assert_eq!(Cell::decode(&out[..cut]), Err(DecodeError::Incomplete { deficit: cell_deficit(cut) }));
        prop_assert_eq!(Cell::decode(&out), Ok(cell));
    }

    #[test]
    fn cell_accessors_never_panic(cell in cell()) {
        if let Ok(skin) = cell.create_onionskin() {
            prop_assert_eq!(Cell::create(cell.circ, &skin).payload, cell.payload);
        }
        if let Ok(reply) = cell.created_reply() {
            prop_assert_eq!(Cell::created(cell.circ, &reply).payload, cell.payload);
        }
        let _ = cell.destroy_reason();
    }
}

#[test]
fn every_prefix_of_one_cell_is_incomplete() {
    let cell = Cell::create(CircId(0x8000_0001), &[0x5a; ONIONSKIN_LEN]);
    let mut out = Vec::new();
    cell.encode_into(&mut out);
    for cut in 0..CELL_LEN {
        assert_eq!(Cell::decode(&out[..cut]), Err(DecodeError::Incomplete { deficit: cell_deficit(cut) }), "{cut}");
    }
}
