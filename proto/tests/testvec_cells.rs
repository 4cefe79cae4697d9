//! Frozen wire vectors for cells (spec §2) and relay messages (spec §7)
//! (CONTRIBUTING.md P5, P14): hex → value → hex, plus malformed inputs asserting
//! the exact [`DecodeError`] (and, for values the encoder must refuse, the
//! exact [`EncodeError`]).
//!
//! The hex strings were written by hand from the layouts drawn in the doc
//! comments of `cell.rs` and `msg.rs`, field by field, so these tests check
//! the layout rather than echo the encoder. Cells are 512 bytes; their
//! vectors give the meaningful prefix and the rest is zero.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use lamina_crypto::handshake::{ONIONSKIN_LEN, REPLY_LEN};
use lamina_crypto::keys::{LinkPublicKey, RelayId};
use lamina_crypto::layer::{BACKWARD_CAPACITY, TAG_LEN};
use lamina_proto::cell::{Cell, CellCommand, CircId, DestroyReason, CELL_LEN, PAYLOAD_LEN};
use lamina_proto::codec::{DecodeError, EncodeError};
use lamina_proto::msg::{EndReason, Extend, RelayCell, RelayMsg, StreamId, Target, HEADER_LEN};

// ---------------------------------------------------------------- helpers

/// Decode hex, ignoring spaces and underscores (used to separate fields).
fn unhex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b" _\n".contains(b)).collect();
    assert!(digits.len() % 2 == 0, "odd hex length in {s:?}");
    digits
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).expect("ASCII"), 16).expect("hex digits"))
        .collect()
}

/// Lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `byte` (two hex digits) repeated `n` times.
fn rep(byte: &str, n: usize) -> String {
    assert_eq!(byte.len(), 2);
    byte.repeat(n)
}

/// A whole cell from the hex of its meaningful prefix; the rest is zero.
fn cell_bytes(prefix: &str) -> Vec<u8> {
    let mut bytes = unhex(prefix);
    assert!(bytes.len() <= CELL_LEN, "cell vector longer than a cell");
    bytes.resize(CELL_LEN, 0);
    bytes
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("a valid address")
}

fn invalid(what: &'static str, reason: &'static str) -> DecodeError {
    DecodeError::Invalid { what, reason }
}

// ------------------------------------------------------------------ cells

/// The onionskin used by the CREATE vectors: bytes 0x00, 0x01, …, 0x5f.
fn skin() -> [u8; ONIONSKIN_LEN] {
    std::array::from_fn(|i| u8::try_from(i).expect("i < 96"))
}

/// The onionskin bytes, written out.
const SKIN_HEX: &str = "000102030405060708090a0b0c0d0e0f 101112131415161718191a1b1c1d1e1f \
                        202122232425262728292a2b2c2d2e2f 303132333435363738393a3b3c3d3e3f \
                        404142434445464748494a4b4c4d4e4f 505152535455565758595a5b5c5d5e5f";

/// The relay body used by the RELAY vector: a 16-byte tag, then bytes that
/// happen to spell a DATA message (the body is opaque at this layer).
fn relay_body() -> [u8; PAYLOAD_LEN] {
    let mut body = [0u8; PAYLOAD_LEN];
    body[..TAG_LEN].copy_from_slice(&[0xa5; TAG_LEN]);
    body[TAG_LEN..TAG_LEN + 7].copy_from_slice(&[0x02, 0x00, 0x01, 0x00, 0x02, 0xbe, 0xef]);
    body[PAYLOAD_LEN - 1] = 0x7f;
    body
}

/// (name, hex of the cell's prefix — the rest is zero, value).
fn cell_vectors() -> Vec<(&'static str, String, Cell)> {
    vec![
        (
            // circ | cmd 01 | htype 0001 | len 0060 | onionskin | zero padding
            "CREATE",
            format!("80000001 01 0001 0060 {SKIN_HEX}"),
            Cell::create(CircId(0x8000_0001), &skin()),
        ),
        (
            // circ | cmd 02 | len 0040 | reply | zero padding
            "CREATED",
            format!("80000001 02 0040 {}", rep("c3", REPLY_LEN)),
            Cell::created(CircId(0x8000_0001), &[0xc3; REPLY_LEN]),
        ),
        (
            // circ | cmd 04 | reason 07 (timeout) | zero padding
            "DESTROY",
            "00000005 04 07".to_string(),
            Cell::destroy(CircId(5), DestroyReason::Timeout),
        ),
        ("DESTROY none", "7fffffff 04 00".to_string(), Cell::destroy(CircId(0x7fff_ffff), DestroyReason::None)),
        ("PADDING", "00000000 00".to_string(), Cell::new(CircId::LINK, CellCommand::Padding)),
        (
            // circ | cmd 03 | body (507 bytes: tag | ciphertext)
            "RELAY",
            format!("80000002 03 {} 02 0001 0002 beef {} 7f", rep("a5", 16), rep("00", PAYLOAD_LEN - 16 - 7 - 1)),
            Cell::relay(CircId(0x8000_0002), relay_body()),
        ),
    ]
}

#[test]
fn cell_vectors_encode_to_frozen_hex_and_decode_back() {
    for (name, prefix, cell) in cell_vectors() {
        let expected = cell_bytes(&prefix);
        let mut out = Vec::new();
        cell.encode_into(&mut out);
        assert_eq!(out.len(), CELL_LEN, "{name}");
        assert_eq!(hex(&out), hex(&expected), "{name}: encoding differs from the frozen vector");
        assert_eq!(Cell::decode(&expected).as_ref(), Ok(&cell), "{name}: decoding the vector");
    }
}

#[test]
fn cell_vectors_have_the_documented_typed_payloads() {
    let create = Cell::decode(&cell_bytes(&format!("80000001 01 0001 0060 {SKIN_HEX}"))).unwrap();
    assert_eq!(create.circ, CircId(0x8000_0001));
    assert_eq!(create.command, CellCommand::Create);
    assert_eq!(create.create_onionskin(), Ok(skin()));

    let created = Cell::decode(&cell_bytes(&format!("80000001 02 0040 {}", rep("c3", 64)))).unwrap();
    assert_eq!(created.command, CellCommand::Created);
    assert_eq!(created.created_reply(), Ok([0xc3; REPLY_LEN]));

    let destroy = Cell::decode(&cell_bytes("00000005 04 07")).unwrap();
    assert_eq!(destroy.destroy_reason(), DestroyReason::Timeout);

    let relay = Cell::decode(&cell_bytes(&format!("80000002 03 {} 0200010002beef", rep("a5", 16)))).unwrap();
    assert_eq!(relay.command, CellCommand::Relay);
    assert_eq!(&relay.payload[..TAG_LEN], &[0xa5; TAG_LEN]);
    assert_eq!(&relay.payload[TAG_LEN..TAG_LEN + 7], &[0x02, 0x00, 0x01, 0x00, 0x02, 0xbe, 0xef]);
}

#[test]
fn cell_command_and_destroy_reason_codes_are_frozen() {
    let commands = [
        (0x00, CellCommand::Padding),
        (0x01, CellCommand::Create),
        (0x02, CellCommand::Created),
        (0x03, CellCommand::Relay),
        (0x04, CellCommand::Destroy),
        (0x05, CellCommand::Directory),
        (0x06, CellCommand::RelayEarly),
    ];
    for (code, command) in commands {
        assert_eq!(command.code(), code);
        assert_eq!(CellCommand::from_code(code), Ok(command));
    }
    let reasons = [
        (0, DestroyReason::None),
        (1, DestroyReason::Protocol),
        (2, DestroyReason::Internal),
        (3, DestroyReason::Requested),
        (4, DestroyReason::ResourceLimit),
        (5, DestroyReason::ConnectFailed),
        (6, DestroyReason::Finished),
        (7, DestroyReason::Timeout),
        (8, DestroyReason::Destroyed),
    ];
    for (code, reason) in reasons {
        assert_eq!(reason.code(), code);
        assert_eq!(DestroyReason::from_code(code), reason);
        let cell = Cell::decode(&cell_bytes(&format!("00000009 04 {code:02x}"))).unwrap();
        assert_eq!(cell.destroy_reason(), reason);
    }
    // Unknown reasons read as None (forward compatible), in a cell too.
    for code in [9u8, 0x80, 0xff] {
        assert_eq!(DestroyReason::from_code(code), DestroyReason::None);
        let cell = Cell::decode(&cell_bytes(&format!("00000009 04 {code:02x}"))).unwrap();
        assert_eq!(cell.destroy_reason(), DestroyReason::None);
    }
}

#[test]
fn short_cells_are_incomplete_with_the_deficit_of_the_next_field() {
    let cases: &[(usize, usize)] = &[
        (0, 4),   // circuit id
        (3, 1),   // circuit id
        (4, 1),   // command
        (5, 507), // payload
        (100, 412),
        (511, 1),
    ];
    for &(len, deficit) in cases {
        let bytes = vec![0x03u8; len];
        assert_eq!(Cell::decode(&bytes), Err(DecodeError::Incomplete { deficit }), "{len} bytes");
    }
}

#[test]
fn cell_decode_reads_one_cell_from_the_front() {
    let mut two = cell_bytes("00000005 04 07");
    two.extend(cell_bytes("00000006 04 08"));
    assert_eq!(Cell::decode(&two), Ok(Cell::destroy(CircId(5), DestroyReason::Timeout)));
}

#[test]
fn malformed_cells_get_the_exact_error() {
    for code in ["07", "7f", "80", "ff"] {
        let bytes = cell_bytes(&format!("80000001 {code}"));
        assert_eq!(Cell::decode(&bytes), Err(invalid("cell", "unknown command")), "command {code}");
    }

    // (name, prefix hex of a cell that decodes, accessor error).
    let create_cases: Vec<(&str, String, DecodeError)> = vec![
        (
            "non-zero padding right after the onionskin",
            format!("80000001 01 0001 0060 {SKIN_HEX} 01"),
            invalid("create", "non-zero padding"),
        ),
        (
            "non-zero padding in the last byte",
            format!("80000001 01 0001 0060 {SKIN_HEX} {} 01", rep("00", PAYLOAD_LEN - 4 - 96 - 1)),
            invalid("create", "non-zero padding"),
        ),
        (
            "onionskin length 95",
            format!("80000001 01 0001 005f {SKIN_HEX}"),
            invalid("create", "wrong onionskin length"),
        ),
        (
            "onionskin length 97",
            format!("80000001 01 0001 0061 {SKIN_HEX}"),
            invalid("create", "wrong onionskin length"),
        ),
        ("onionskin length 0", "80000001 01 0001 0000".to_string(), invalid("create", "wrong onionskin length")),
        ("handshake type 2", format!("80000001 01 0002 0060 {SKIN_HEX}"), invalid("create", "unknown handshake type")),
        ("handshake type 0", format!("80000001 01 0000 0060 {SKIN_HEX}"), invalid("create", "unknown handshake type")),
    ];
    for (name, prefix, err) in create_cases {
        let cell = Cell::decode(&cell_bytes(&prefix)).unwrap();
        assert_eq!(cell.create_onionskin(), Err(err), "CREATE: {name}");
    }

    let created_cases: Vec<(&str, String, DecodeError)> = vec![
        ("reply length 63", format!("80000001 02 003f {}", rep("c3", 64)), invalid("created", "wrong reply length")),
        ("reply length 0", "80000001 02 0000".to_string(), invalid("created", "wrong reply length")),
        (
            "non-zero padding",
            format!("80000001 02 0040 {} 00 01", rep("c3", 64)),
            invalid("created", "non-zero padding"),
        ),
    ];
    for (name, prefix, err) in created_cases {
        let cell = Cell::decode(&cell_bytes(&prefix)).unwrap();
        assert_eq!(cell.created_reply(), Err(err), "CREATED: {name}");
    }
}

// --------------------------------------------------------- relay messages

/// The EXTEND used by the vectors: id 11…, link key 22…, onionskin 33….
fn extend(addr: &str) -> RelayMsg {
    RelayMsg::Extend(Box::new(Extend {
        relay_id: RelayId([0x11; 32]),
        link_key: LinkPublicKey([0x22; 32]),
        addr: addr.parse::<SocketAddr>().expect("a valid socket address"),
        onionskin: [0x33; ONIONSKIN_LEN],
    }))
}

/// `example.com`, in hex.
const EXAMPLE_COM: &str = "6578616d706c652e636f6d";

/// (name, hex: cmd | stream | len | body, value).
#[allow(clippy::too_many_lines)] // A vector table: one entry per case, nothing to factor out.
fn relay_vectors() -> Vec<(&'static str, String, RelayCell)> {
    let s7 = StreamId(7);
    let v = |stream, msg| RelayCell::new(stream, msg);
    vec![
        (
            // atype 01 | len 0b | name | port 01bb | flags 00
            "BEGIN hostname",
            format!("01 0007 0010  01 0b {EXAMPLE_COM} 01bb 00"),
            v(s7, RelayMsg::Begin { target: Target::Hostname("example.com".into()), port: 443 }),
        ),
        (
            "BEGIN ipv4",
            "01 0007 0008  04 c0000201 0050 00".into(),
            v(s7, RelayMsg::Begin { target: Target::Ip(ip("192.0.2.1")), port: 80 }),
        ),
        (
            "BEGIN ipv6",
            "01 0007 0014  06 20010db8000000000000000000000001 1f90 00".into(),
            v(s7, RelayMsg::Begin { target: Target::Ip(ip("2001:db8::1")), port: 8080 }),
        ),
        ("DATA", "02 0102 0005  68656c6c6f".into(), v(StreamId(0x0102), RelayMsg::Data(b"hello".to_vec()))),
        ("DATA one byte", "02 ffff 0001  00".into(), v(StreamId(0xffff), RelayMsg::Data(vec![0]))),
        ("END", "03 0007 0001  06".into(), v(s7, RelayMsg::End(EndReason::Done))),
        ("CC_REQUEST", "0d 0000 0001  01".into(), v(StreamId(0), RelayMsg::CcRequest(1))),
        ("XOFF", "0e 0007 0000".into(), v(s7, RelayMsg::Xoff)),
        ("XON", "0f 0007 0004  00003039".into(), v(s7, RelayMsg::Xon(12_345))),
        ("CONNECTED none", "04 0007 0001  00".into(), v(s7, RelayMsg::Connected(None))),
        ("CONNECTED ipv4", "04 0007 0005  04 0a010203".into(), v(s7, RelayMsg::Connected(Some(ip("10.1.2.3"))))),
        (
            "CONNECTED ipv6",
            "04 0007 0011  06 00000000000000000000000000000001".into(),
            v(s7, RelayMsg::Connected(Some(IpAddr::V6(Ipv6Addr::LOCALHOST)))),
        ),
        (
            "SENDME circuit",
            "05 0000 0010  00112233445566778899aabbccddeeff".into(),
            v(
                StreamId::CIRCUIT,
                RelayMsg::Sendme(unhex("00112233445566778899aabbccddeeff").try_into().expect("16 bytes")),
            ),
        ),
        ("SENDME stream", format!("05 0007 0010  {}", rep("5e", 16)), v(s7, RelayMsg::Sendme([0x5e; TAG_LEN]))),
        (
            // relay id | link key | atype 04 + addr | port | htype 0001 | len 0060 | onionskin
            "EXTEND ipv4",
            format!("06 0000 00ab  {} {} 04 7f000001 2329 0001 0060 {}", rep("11", 32), rep("22", 32), rep("33", 96)),
            v(StreamId::CIRCUIT, extend("127.0.0.1:9001")),
        ),
        (
            "EXTEND ipv6",
            format!(
                "06 0000 00b7  {} {} 06 20010db8000000000000000000000002 01bb 0001 0060 {}",
                rep("11", 32),
                rep("22", 32),
                rep("33", 96)
            ),
            v(StreamId::CIRCUIT, extend("[2001:db8::2]:443")),
        ),
        (
            // len 0040 | reply
            "EXTENDED",
            format!("07 0000 0042  0040 {}", rep("44", 64)),
            v(StreamId::CIRCUIT, RelayMsg::Extended([0x44; REPLY_LEN])),
        ),
        ("DROP", "08 0000 0000".into(), v(StreamId::CIRCUIT, RelayMsg::Drop)),
        (
            "RESOLVE",
            format!("09 0009 000d  01 0b {EXAMPLE_COM}"),
            v(StreamId(9), RelayMsg::Resolve("example.com".into())),
        ),
        (
            // count | (atype | addr)*
            "RESOLVED",
            "0a 0009 0017  02 04 c0000201 06 20010db8000000000000000000000001".into(),
            v(StreamId(9), RelayMsg::Resolved(vec![ip("192.0.2.1"), ip("2001:db8::1")])),
        ),
        ("RESOLVED none", "0a 0009 0001  00".into(), v(StreamId(9), RelayMsg::Resolved(vec![]))),
        (
            "RESOLVED eight",
            format!("0a 0009 0029  08 {}", "04 7f000001 ".repeat(8)),
            v(StreamId(9), RelayMsg::Resolved(vec![IpAddr::V4(Ipv4Addr::LOCALHOST); 8])),
        ),
        ("BEGIN_DIR", "0b 0005 0000".into(), v(StreamId(5), RelayMsg::BeginDir)),
    ]
}

#[test]
fn relay_vectors_encode_to_frozen_hex_and_decode_back() {
    for (name, hex_str, cell) in relay_vectors() {
        let expected = unhex(&hex_str);
        // Encode into a region with room to spare: the tail must be zeroed.
        let mut region = vec![0xAAu8; expected.len() + 9];
        cell.encode_into(&mut region).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(hex(&region[..expected.len()]), hex(&expected), "{name}: encoding differs from the frozen vector");
        assert!(region[expected.len()..].iter().all(|b| *b == 0), "{name}: padding is zero");
        // An exact-size region works too.
        let mut exact = vec![0xAAu8; expected.len()];
        cell.encode_into(&mut exact).unwrap();
        assert_eq!(exact, expected, "{name}: exact region");

        assert_eq!(RelayCell::decode(&expected).as_ref(), Ok(&cell), "{name}: decoding the vector");
        // Whatever follows the message (padding, filler) is ignored.
        let mut noisy = expected.clone();
        noisy.extend_from_slice(&[0xff, 0x01, 0x02, 0x03]);
        assert_eq!(RelayCell::decode(&noisy).as_ref(), Ok(&cell), "{name}: trailing filler");
        // The header is the documented one.
        assert_eq!(expected[0], cell.msg.code(), "{name}: command byte");
        assert_eq!(u16::from_be_bytes([expected[1], expected[2]]), cell.stream.0, "{name}: stream id");
        assert_eq!(usize::from(u16::from_be_bytes([expected[3], expected[4]])), expected.len() - HEADER_LEN);
    }
}

#[test]
fn relay_command_codes_are_frozen() {
    for (name, hex_str, cell) in relay_vectors() {
        let code = match cell.msg {
            RelayMsg::Begin { .. } => 0x01,
            RelayMsg::Data(_) => 0x02,
            RelayMsg::End(_) => 0x03,
            RelayMsg::Connected(_) => 0x04,
            RelayMsg::Sendme(_) => 0x05,
            RelayMsg::Extend(_) => 0x06,
            RelayMsg::Extended(_) => 0x07,
            RelayMsg::Drop => 0x08,
            RelayMsg::Resolve(_) => 0x09,
            RelayMsg::Resolved(_) => 0x0a,
            RelayMsg::BeginDir => 0x0b,
            RelayMsg::HalfClose => 0x0c,
            RelayMsg::CcRequest(_) => 0x0d,
            RelayMsg::Xoff => 0x0e,
            RelayMsg::Xon(_) => 0x0f,
        };
        assert_eq!(cell.msg.code(), code, "{name}");
        assert_eq!(unhex(&hex_str)[0], code, "{name}");
    }
}

#[test]
fn end_reason_codes_are_frozen() {
    let reasons = [
        (1, EndReason::Misc),
        (2, EndReason::ResolveFailed),
        (3, EndReason::ConnectRefused),
        (4, EndReason::ExitPolicy),
        (5, EndReason::Destroyed),
        (6, EndReason::Done),
        (7, EndReason::Timeout),
        (8, EndReason::NoRoute),
        (9, EndReason::ResourceLimit),
        (10, EndReason::ConnReset),
        (11, EndReason::Protocol),
        (12, EndReason::NotExit),
    ];
    for (code, reason) in reasons {
        assert_eq!(reason.code(), code);
        let bytes = unhex(&format!("03 0001 0001 {code:02x}"));
        assert_eq!(RelayCell::decode(&bytes), Ok(RelayCell::new(StreamId(1), RelayMsg::End(reason))));
        let mut region = [0u8; 6];
        RelayCell::new(StreamId(1), RelayMsg::End(reason)).encode_into(&mut region).unwrap();
        assert_eq!(region.as_slice(), bytes.as_slice());
    }
}

#[test]
fn accepted_non_canonical_relay_messages() {
    // (name, hex, decodes to): inputs a decoder accepts although the encoder
    // never produces them.
    let cases: Vec<(&str, &str, RelayCell)> = vec![
        // DROP's body is padding, whatever it holds.
        ("DROP with a body", "08 0000 0003 010203", RelayCell::new(StreamId::CIRCUIT, RelayMsg::Drop)),
        // Unknown END reasons read as Misc.
        ("END reason 0", "03 0007 0001 00", RelayCell::new(StreamId(7), RelayMsg::End(EndReason::Misc))),
        ("END reason 13", "03 0007 0001 0d", RelayCell::new(StreamId(7), RelayMsg::End(EndReason::Misc))),
        ("END reason ff", "03 0007 0001 ff", RelayCell::new(StreamId(7), RelayMsg::End(EndReason::Misc))),
    ];
    for (name, hex_str, value) in cases {
        assert_eq!(RelayCell::decode(&unhex(hex_str)), Ok(value), "{name}");
    }
}

/// A complete EXTEND body (after the header) with these middle fields.
fn extend_body(addr_hex: &str, htype: &str, skin_len: &str, skin_bytes: usize) -> String {
    format!("{} {} {addr_hex} 2329 {htype} {skin_len} {}", rep("11", 32), rep("22", 32), rep("33", skin_bytes))
}

/// Shorthands for the errors the malformed-input tables expect.
mod err {
    use super::{invalid, DecodeError};

    pub(crate) fn truncated() -> DecodeError {
        invalid("relay message", "truncated")
    }
    pub(crate) fn body_truncated() -> DecodeError {
        invalid("relay message body", "truncated")
    }
    pub(crate) fn trailing() -> DecodeError {
        invalid("relay message body", "trailing bytes")
    }
    pub(crate) fn bad_host() -> DecodeError {
        invalid("hostname", "empty or not printable ASCII")
    }
    pub(crate) fn bad_addr() -> DecodeError {
        invalid("address", "unknown address type")
    }
    pub(crate) fn on_stream() -> DecodeError {
        invalid("relay message", "circuit message on a stream")
    }
    pub(crate) fn no_stream() -> DecodeError {
        invalid("relay message", "stream message without a stream")
    }
}

/// Decode every `(name, hex, error)` case and compare the exact error.
fn check_malformed(cases: Vec<(&str, String, DecodeError)>) {
    for (name, hex_str, err) in cases {
        assert_eq!(RelayCell::decode(&unhex(&hex_str)), Err(err), "{name}: {hex_str}");
    }
}

#[allow(clippy::too_many_lines)] // A vector table: one entry per case, nothing to factor out.
#[test]
fn malformed_headers_and_stream_messages() {
    check_malformed(vec![
        // Truncation: header, then body.
        ("empty", String::new(), err::truncated()),
        ("command only", "02".into(), err::truncated()),
        ("half a stream id", "02 00".into(), err::truncated()),
        ("no length", "02 0001".into(), err::truncated()),
        ("half a length", "02 0001 00".into(), err::truncated()),
        ("body shorter than its length", "02 0001 0009 01".into(), err::truncated()),
        ("length beyond any region", "02 0001 ffff 01".into(), err::truncated()),
        // Unknown commands.
        ("command 00", "00 0001 0000".into(), invalid("relay message", "unknown command")),
        ("command 10", "10 0001 0000".into(), invalid("relay message", "unknown command")),
        ("CC_REQUEST empty", "0d 0000 0000".into(), invalid("relay message body", "truncated")),
        ("command ff", "ff 0001 0000".into(), invalid("relay message", "unknown command")),
        // DATA.
        ("empty DATA", "02 0001 0000".into(), invalid("data", "empty")),
        // BEGIN.
        ("BEGIN empty hostname", "01 0001 0005 01 00 0050 00".into(), err::bad_host()),
        ("BEGIN control character", "01 0001 0006 01 01 07 0050 00".into(), err::bad_host()),
        ("BEGIN space in hostname", "01 0001 0008 01 03 612062 0050 00".into(), err::bad_host()),
        ("BEGIN DEL in hostname", "01 0001 0006 01 01 7f 0050 00".into(), err::bad_host()),
        ("BEGIN hostname past the body", "01 0001 0004 01 ff 6162".into(), err::body_truncated()),
        ("BEGIN unknown flags", "01 0007 0008 04 c0000201 0050 01".into(), invalid("begin", "unknown flags")),
        ("BEGIN no address type", "01 0007 0004 00 0050 00".into(), err::bad_addr()),
        ("BEGIN address type 05", "01 0007 0008 05 c0000201 0050 00".into(), err::bad_addr()),
        ("BEGIN without port", "01 0007 0005 04 c0000201".into(), err::body_truncated()),
        ("BEGIN without flags", "01 0007 0007 04 c0000201 0050".into(), err::body_truncated()),
        ("BEGIN trailing byte", "01 0007 0009 04 c0000201 0050 00 00".into(), err::trailing()),
    ]);
}

#[test]
fn malformed_names_addresses_and_counts() {
    check_malformed(vec![
        // RESOLVE.
        ("RESOLVE non-ASCII", "09 0001 0004 01 02 c3a9".into(), err::bad_host()),
        ("RESOLVE empty hostname", "09 0001 0002 01 00".into(), err::bad_host()),
        ("RESOLVE an address", "09 0001 0005 04 01020304".into(), invalid("resolve", "not a host name")),
        ("RESOLVE hostname past the body", "09 0001 0003 01 05 61".into(), err::body_truncated()),
        // RESOLVED.
        ("RESOLVED count 9", "0a 0001 0001 09".into(), invalid("resolved", "too many addresses")),
        ("RESOLVED count 255", "0a 0001 0001 ff".into(), invalid("resolved", "too many addresses")),
        ("RESOLVED fewer addresses than counted", "0a 0001 0006 02 04 01020304".into(), err::body_truncated()),
        ("RESOLVED a hostname", "0a 0001 0003 01 01 61".into(), err::bad_addr()),
        ("RESOLVED trailing byte", "0a 0001 0007 01 04 01020304 00".into(), err::trailing()),
    ]);
}

#[allow(clippy::too_many_lines)] // A vector table: one entry per case, nothing to factor out.
#[test]
fn malformed_fixed_fields_and_handshakes() {
    check_malformed(vec![
        // CONNECTED.
        ("CONNECTED address type 05", "04 0007 0002 05 00".into(), err::bad_addr()),
        ("CONNECTED short IPv4", "04 0007 0003 04 0a01".into(), err::body_truncated()),
        ("CONNECTED short IPv6", "04 0007 0005 06 00000000".into(), err::body_truncated()),
        ("CONNECTED empty", "04 0007 0000".into(), err::body_truncated()),
        // END.
        ("END trailing byte", "03 0007 0002 06 00".into(), err::trailing()),
        ("END without reason", "03 0007 0000".into(), err::body_truncated()),
        // SENDME.
        ("SENDME short receipt", format!("05 0000 000f {}", rep("5e", 15)), err::body_truncated()),
        ("SENDME long receipt", format!("05 0000 0011 {}", rep("5e", 17)), err::trailing()),
        // EXTEND.
        (
            "EXTEND handshake type 2",
            format!("06 0000 00ab {}", extend_body("04 7f000001", "0002", "0060", 96)),
            invalid("extend", "unknown handshake type"),
        ),
        (
            "EXTEND onionskin length 95",
            format!("06 0000 00aa {}", extend_body("04 7f000001", "0001", "005f", 95)),
            invalid("extend", "short onionskin"),
        ),
        (
            "EXTEND onionskin length 97",
            format!("06 0000 00ac {}", extend_body("04 7f000001", "0001", "0061", 97)),
            invalid("extend onionskin", "length above protocol maximum"),
        ),
        (
            "EXTEND hostname address",
            format!("06 0000 00ab {}", extend_body("01 7f000001", "0001", "0060", 96)),
            err::bad_addr(),
        ),
        ("EXTEND truncated", format!("06 0000 0040 {}", rep("11", 64)), err::body_truncated()),
        // EXTENDED.
        (
            "EXTENDED reply length 63",
            format!("07 0000 0041 003f {}", rep("44", 63)),
            invalid("extended", "short reply"),
        ),
        (
            "EXTENDED reply length 65",
            format!("07 0000 0043 0041 {}", rep("44", 65)),
            invalid("extended", "length above protocol maximum"),
        ),
        ("EXTENDED trailing byte", format!("07 0000 0043 0040 {} 00", rep("44", 64)), err::trailing()),
        // BEGIN_DIR.
        ("BEGIN_DIR with a body", "0b 0005 0001 00".into(), err::trailing()),
    ]);
}

#[test]
fn stream_id_rule_violations() {
    check_malformed(vec![
        // Stream-id rules: circuit messages only on stream 0 …
        (
            "EXTEND on a stream",
            format!("06 0005 00ab {}", extend_body("04 7f000001", "0001", "0060", 96)),
            err::on_stream(),
        ),
        ("EXTENDED on a stream", format!("07 0005 0042 0040 {}", rep("44", 64)), err::on_stream()),
        ("DROP on a stream", "08 0005 0000".into(), err::on_stream()),
        // … stream messages never on stream 0.
        ("BEGIN on stream 0", "01 0000 0008 04 c0000201 0050 00".into(), err::no_stream()),
        ("DATA on stream 0", "02 0000 0001 ff".into(), err::no_stream()),
        ("END on stream 0", "03 0000 0001 06".into(), err::no_stream()),
        ("CONNECTED on stream 0", "04 0000 0001 00".into(), err::no_stream()),
        ("RESOLVE on stream 0", format!("09 0000 000d 01 0b {EXAMPLE_COM}"), err::no_stream()),
        ("RESOLVED on stream 0", "0a 0000 0001 00".into(), err::no_stream()),
        ("BEGIN_DIR on stream 0", "0b 0000 0000".into(), err::no_stream()),
        // The body is checked before the stream rule.
        ("empty DATA on stream 0", "02 0000 0000".into(), invalid("data", "empty")),
    ]);
}

#[allow(clippy::too_many_lines)] // A vector table: one entry per case, nothing to factor out.
#[test]
fn values_the_encoder_refuses_get_the_exact_error() {
    let begin =
        |name: &str| RelayCell::new(StreamId(1), RelayMsg::Begin { target: Target::Hostname(name.into()), port: 80 });
    let bad_host = EncodeError::Invalid { what: "hostname", reason: "empty or not printable ASCII" };
    let max_body = BACKWARD_CAPACITY - HEADER_LEN;
    let cases: Vec<(&str, RelayCell, EncodeError)> = vec![
        ("hostname too long", begin(&"a".repeat(256)), EncodeError::TooLong { what: "hostname", len: 256, max: 255 }),
        ("hostname empty", begin(""), bad_host.clone()),
        ("hostname with a space", begin("a b"), bad_host.clone()),
        ("hostname with a control character", begin("a\u{7}"), bad_host.clone()),
        ("hostname non-ASCII", begin("é.example"), bad_host.clone()),
        ("RESOLVE empty", RelayCell::new(StreamId(1), RelayMsg::Resolve(String::new())), bad_host.clone()),
        (
            "RESOLVE too long",
            RelayCell::new(StreamId(1), RelayMsg::Resolve("b".repeat(300))),
            EncodeError::TooLong { what: "hostname", len: 300, max: 255 },
        ),
        (
            "empty DATA",
            RelayCell::new(StreamId(1), RelayMsg::Data(Vec::new())),
            EncodeError::Invalid { what: "data", reason: "empty" },
        ),
        (
            "DATA larger than the region",
            RelayCell::new(StreamId(1), RelayMsg::Data(vec![1; max_body + 1])),
            EncodeError::TooLong { what: "relay body", len: max_body + 1, max: max_body },
        ),
        (
            "RESOLVED with nine addresses",
            RelayCell::new(StreamId(1), RelayMsg::Resolved(vec![ip("10.0.0.1"); 9])),
            EncodeError::TooLong { what: "resolved", len: 9, max: 8 },
        ),
        (
            "DATA on stream 0",
            RelayCell::new(StreamId::CIRCUIT, RelayMsg::Data(vec![1])),
            EncodeError::Invalid { what: "relay cell", reason: "stream message without a stream" },
        ),
        (
            "DROP on a stream",
            RelayCell::new(StreamId(3), RelayMsg::Drop),
            EncodeError::Invalid { what: "relay cell", reason: "circuit message on a stream" },
        ),
        (
            "EXTENDED on a stream",
            RelayCell::new(StreamId(3), RelayMsg::Extended([0; REPLY_LEN])),
            EncodeError::Invalid { what: "relay cell", reason: "circuit message on a stream" },
        ),
    ];
    for (name, cell, err) in cases {
        let mut region = [0x77u8; BACKWARD_CAPACITY];
        assert_eq!(cell.encode_into(&mut region), Err(err), "{name}");
    }
    // The limits themselves are fine.
    let mut region = [0u8; BACKWARD_CAPACITY];
    begin(&"a".repeat(255)).encode_into(&mut region).unwrap();
    assert_eq!(&region[..HEADER_LEN + 2], &unhex("01 0001 0104 01 ff")[..]);
    RelayCell::new(StreamId(1), RelayMsg::Data(vec![1; max_body])).encode_into(&mut region).unwrap();
    assert_eq!(&region[..HEADER_LEN], &unhex("02 0001 01e6")[..]);
}
