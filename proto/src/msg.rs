//! Relay messages: what a relay cell carries once its layer is removed
//! (spec §7).
//!
//! ```text
//! 0     1          3          5                 5+len          capacity
//! +-----+----------+----------+-----------------+-----------------+
//! | cmd | stream   | len      | body (len bytes)| padding/filler  |
//! | u8  | u16 BE   | u16 BE   |                 | ignored         |
//! +-----+----------+----------+-----------------+-----------------+
//! ```
//!
//! The plaintext region's capacity depends on the direction and, forward,
//! on the target hop (`lamina_crypto::layer::forward_capacity`): bytes past
//! the message are padding (zero when sent) or, forward, filler that earlier
//! hops' restored padding turned into; receivers ignore them. Stream id 0
//! means the circuit itself (EXTEND, EXTENDED, DROP, circuit SENDME).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use lamina_crypto::handshake::{ONIONSKIN_LEN, REPLY_LEN};
use lamina_crypto::keys::{LinkPublicKey, RelayId};
use lamina_crypto::layer::TAG_LEN;

use crate::cell::HANDSHAKE_NTOR_V1;
use crate::codec::{DecodeError, EncodeError, Reader, Writer};

/// Length of the relay message header.
pub const HEADER_LEN: usize = 5;
/// Longest host name a BEGIN or RESOLVE may carry.
pub const MAX_HOSTNAME_LEN: usize = 255;
/// Most addresses a RESOLVED may carry.
pub const MAX_RESOLVED: usize = 8;

/// A stream id, scoped to one circuit; 0 is the circuit itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub u16);

impl StreamId {
    /// The circuit-level pseudo-stream.
    pub const CIRCUIT: Self = Self(0);
}

/// Where a stream should go: a name (resolved at the exit) or an address.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// A DNS name, resolved by the exit, never by the client.
    Hostname(String),
    /// A literal address.
    Ip(IpAddr),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destinations are sensitive (CONTRIBUTING.md P12): Debug shows only the kind.
        match self {
            Self::Hostname(_) => f.write_str("Target::Hostname(..)"),
            Self::Ip(IpAddr::V4(_)) => f.write_str("Target::Ipv4(..)"),
            Self::Ip(IpAddr::V6(_)) => f.write_str("Target::Ipv6(..)"),
        }
    }
}

/// Why a stream ended (spec §7.4); maps onto SOCKS reply codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// Unspecified failure.
    Misc,
    /// The exit could not resolve the name.
    ResolveFailed,
    /// The destination refused the connection.
    ConnectRefused,
    /// The exit policy forbids the destination.
    ExitPolicy,
    /// The circuit was destroyed.
    Destroyed,
    /// The stream finished normally.
    Done,
    /// Connecting or resolving timed out.
    Timeout,
    /// No route to the destination.
    NoRoute,
    /// A resource limit was hit.
    ResourceLimit,
    /// The connection was reset.
    ConnReset,
    /// The peer violated the protocol on this stream.
    Protocol,
    /// The relay is not an exit or does not serve this kind of stream.
    NotExit,
}

impl EndReason {
    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            Self::Misc => 1,
            Self::ResolveFailed => 2,
            Self::ConnectRefused => 3,
            Self::ExitPolicy => 4,
            Self::Destroyed => 5,
            Self::Done => 6,
            Self::Timeout => 7,
            Self::NoRoute => 8,
            Self::ResourceLimit => 9,
            Self::ConnReset => 10,
            Self::Protocol => 11,
            Self::NotExit => 12,
        }
    }

    /// Parse a wire code; unknown codes read as `Misc`.
    pub fn from_code(code: u8) -> Self {
        match code {
            2 => Self::ResolveFailed,
            3 => Self::ConnectRefused,
            4 => Self::ExitPolicy,
            5 => Self::Destroyed,
            6 => Self::Done,
            7 => Self::Timeout,
            8 => Self::NoRoute,
            9 => Self::ResourceLimit,
            10 => Self::ConnReset,
            11 => Self::Protocol,
            12 => Self::NotExit,
            _ => Self::Misc,
        }
    }
}

/// Where to extend a circuit (spec §7.6): everything the hop needs to open
/// an authenticated link and run the handshake on the client's behalf.
#[derive(Clone, PartialEq, Eq)]
pub struct Extend {
    /// The next hop's identity.
    pub relay_id: RelayId,
    /// The next hop's link key (Noise `XK` responder key).
    pub link_key: LinkPublicKey,
    /// The next hop's address.
    pub addr: SocketAddr,
    /// The client's onionskin for the next hop.
    pub onionskin: [u8; ONIONSKIN_LEN],
}

/// A relay message (spec §7).
#[derive(Clone, PartialEq, Eq)]
pub enum RelayMsg {
    /// Open a stream to `target:port` (exit only).
    Begin {
        /// Destination.
        target: Target,
        /// Destination port.
        port: u16,
    },
    /// Stream bytes.
    Data(Vec<u8>),
    /// The stream ended.
    End(EndReason),
    /// The stream is connected; the exit may say to which address.
    Connected(Option<IpAddr>),
    /// Flow-control acknowledgement carrying the tag of the cell that
    /// completed the acknowledged batch (spec §8.2).
    Sendme([u8; TAG_LEN]),
    /// Extend the circuit by one hop.
    Extend(Box<Extend>),
    /// The next hop's handshake reply.
    Extended([u8; REPLY_LEN]),
    /// Padding the receiving hop drops.
    Drop,
    /// Resolve a name at the exit.
    Resolve(String),
    /// Addresses a name resolved to (empty: failure).
    Resolved(Vec<IpAddr>),
    /// Open a stream to this relay's directory service (spec §7.9).
    BeginDir,
    /// The sender will send no more DATA on this stream; the other
    /// direction stays open (TCP half-close, spec §7.5).
    HalfClose,
    /// Client → last hop, stream 0, before any stream: switch this circuit
    /// to congestion control (spec §8.6). The body is the flow-control
    /// version; only [`CC_VERSION`] exists.
    CcRequest(u8),
    /// Stop packaging DATA on this stream (spec §8.5).
    Xoff,
    /// Resume packaging on this stream; the receiver drains about this many
    /// KiB/s (0: unknown or unlimited; spec §8.5).
    Xon(u32),
}

/// The flow-control version a [`RelayMsg::CcRequest`] carries: RTT-based
/// circuit windows (spec §8.4) and stream rate advisories (spec §8.5).
pub const CC_VERSION: u8 = 1;

/// Names no relay, key or address (L-7, spec §11).
impl std::fmt::Debug for Extend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extend").finish_non_exhaustive()
    }
}

/// The message kind and sizes only: never payload bytes, names, addresses
/// or receipts (L-7, spec §11).
impl std::fmt::Debug for RelayMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Begin { .. } => f.write_str("Begin { .. }"),
            Self::Data(data) => f.debug_struct("Data").field("len", &data.len()).finish(),
            Self::End(reason) => f.debug_tuple("End").field(reason).finish(),
            Self::Connected(_) => f.write_str("Connected(..)"),
            Self::Sendme(_) => f.write_str("Sendme(..)"),
            Self::Extend(e) => f.debug_tuple("Extend").field(e).finish(),
            Self::Extended(_) => f.write_str("Extended(..)"),
            Self::Drop => f.write_str("Drop"),
            Self::Resolve(_) => f.write_str("Resolve(..)"),
            Self::Resolved(addrs) => f.debug_struct("Resolved").field("count", &addrs.len()).finish(),
            Self::BeginDir => f.write_str("BeginDir"),
            Self::HalfClose => f.write_str("HalfClose"),
            Self::CcRequest(v) => f.debug_tuple("CcRequest").field(v).finish(),
            Self::Xoff => f.write_str("Xoff"),
            Self::Xon(rate) => f.debug_tuple("Xon").field(rate).finish(),
        }
    }
}

impl RelayMsg {
    /// The wire command code.
    pub fn code(&self) -> u8 {
        match self {
            Self::Begin { .. } => 0x01,
            Self::Data(_) => 0x02,
            Self::End(_) => 0x03,
            Self::Connected(_) => 0x04,
            Self::Sendme(_) => 0x05,
            Self::Extend(_) => 0x06,
            Self::Extended(_) => 0x07,
            Self::Drop => 0x08,
            Self::Resolve(_) => 0x09,
            Self::Resolved(_) => 0x0a,
            Self::BeginDir => 0x0b,
            Self::HalfClose => 0x0c,
            Self::CcRequest(_) => 0x0d,
            Self::Xoff => 0x0e,
            Self::Xon(_) => 0x0f,
        }
    }

    /// Whether this message must travel on stream 0, on a real stream, or either.
    fn stream_rule(&self) -> StreamRule {
        match self {
            Self::Extend(_) | Self::Extended(_) | Self::Drop | Self::CcRequest(_) => StreamRule::Circuit,
            Self::Sendme(_) => StreamRule::Either,
            _ => StreamRule::Stream,
        }
    }
}

/// Which stream ids a message may use.
enum StreamRule {
    /// Only stream 0.
    Circuit,
    /// Only a non-zero stream.
    Stream,
    /// Either.
    Either,
}

/// A relay message with the stream it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayCell {
    /// The stream (0 = the circuit).
    pub stream: StreamId,
    /// The message.
    pub msg: RelayMsg,
}

impl RelayCell {
    /// Pair a message with a stream.
    pub fn new(stream: StreamId, msg: RelayMsg) -> Self {
        Self { stream, msg }
    }

    /// Encode into `region` (a relay cell's plaintext capacity), zero-filling
    /// the rest. Fails if the message does not fit or breaks a rule.
    pub fn encode_into(&self, region: &mut [u8]) -> Result<(), EncodeError> {
        check_stream(self.stream, &self.msg).map_err(|reason| EncodeError::Invalid { what: "relay cell", reason })?;
        if region.len() < HEADER_LEN {
            return Err(EncodeError::TooLong { what: "relay header", len: HEADER_LEN, max: region.len() });
        }
        let body = encode_body(&self.msg, region.len().saturating_sub(HEADER_LEN))?;
        put_message(region, self.msg.code(), self.stream, &body)
    }

    /// Encode a DATA message straight into `region` (the hot path: no
    /// allocation, one copy). Same bytes as `encode_into` of `Data`.
    pub fn encode_data_into(region: &mut [u8], stream: StreamId, data: &[u8]) -> Result<(), EncodeError> {
        if stream == StreamId::CIRCUIT {
            return Err(EncodeError::Invalid { what: "relay cell", reason: "stream message without a stream" });
        }
        if data.is_empty() {
            return Err(EncodeError::Invalid { what: "data", reason: "empty" });
        }
        put_message(region, 0x02, stream, data)
    }

    /// Where the padding of an encoded message in `region` begins: after its
    /// header and body (the whole region if the header is cut short).
    pub fn padding_start(region: &[u8]) -> usize {
        let len = match region.get(3..5) {
            Some(b) => usize::from(u16::from_be_bytes([b[0], b[1]])),
            None => return region.len(),
        };
        (HEADER_LEN + len).min(region.len())
    }

    /// Decode from a relay cell's plaintext region; bytes after the message
    /// are padding and ignored (spec §7.1).
    pub fn decode(region: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(region);
        let code = r.u8().map_err(|e| e.in_container("relay message"))?;
        let stream = StreamId(r.u16().map_err(|e| e.in_container("relay message"))?);
        let len = usize::from(r.u16().map_err(|e| e.in_container("relay message"))?);
        let body = r.bytes(len).map_err(|e| e.in_container("relay message"))?;
        let msg = decode_body(code, body)?;
        check_stream(stream, &msg).map_err(|reason| DecodeError::invalid("relay message", reason))?;
        Ok(Self { stream, msg })
    }
}

/// Write `header | body | zero padding` into `region`, refusing a body
/// longer than the region's room after the header.
fn put_message(region: &mut [u8], code: u8, stream: StreamId, body: &[u8]) -> Result<(), EncodeError> {
    let max = region.len().saturating_sub(HEADER_LEN);
    let too_long = EncodeError::TooLong { what: "relay body", len: body.len(), max };
    let len = u16::try_from(body.len()).map_err(|_| too_long.clone())?;
    if body.len() > max {
        return Err(too_long);
    }
    region[0] = code;
    region[1..3].copy_from_slice(&stream.0.to_be_bytes());
    region[3..5].copy_from_slice(&len.to_be_bytes());
    region[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(body);
    region[HEADER_LEN + body.len()..].fill(0);
    Ok(())
}

/// Enforce the stream-id rule of a message.
fn check_stream(stream: StreamId, msg: &RelayMsg) -> Result<(), &'static str> {
    match (msg.stream_rule(), stream == StreamId::CIRCUIT) {
        (StreamRule::Circuit, false) => Err("circuit message on a stream"),
        (StreamRule::Stream, true) => Err("stream message without a stream"),
        _ => Ok(()),
    }
}

/// Address type codes shared by BEGIN, CONNECTED, EXTEND and RESOLVED.
mod atype {
    /// No address.
    pub(super) const NONE: u8 = 0x00;
    /// A host name: u8 length, then ASCII.
    pub(super) const HOSTNAME: u8 = 0x01;
    /// Four bytes of IPv4.
    pub(super) const IPV4: u8 = 0x04;
    /// Sixteen bytes of IPv6.
    pub(super) const IPV6: u8 = 0x06;
}

/// Encode a message body (without the header).
fn encode_body(msg: &RelayMsg, max: usize) -> Result<Vec<u8>, EncodeError> {
    let mut w = Writer::with_capacity(max.min(512));
    match msg {
        RelayMsg::Begin { target, port } => {
            put_target(&mut w, target)?;
            w.put_u16(*port);
            w.put_u8(0); // flags, reserved
        }
        RelayMsg::Data(data) => {
            if data.is_empty() {
                return Err(EncodeError::Invalid { what: "data", reason: "empty" });
            }
            w.put_bytes(data);
        }
        RelayMsg::End(reason) => w.put_u8(reason.code()),
        RelayMsg::Connected(addr) => match addr {
            None => w.put_u8(atype::NONE),
            Some(ip) => put_ip(&mut w, ip),
        },
        RelayMsg::Sendme(tag) => w.put_bytes(tag),
        RelayMsg::Extend(ext) => {
            w.put_bytes(ext.relay_id.as_bytes());
            w.put_bytes(&ext.link_key.0);
            put_ip(&mut w, &ext.addr.ip());
            w.put_u16(ext.addr.port());
            w.put_u16(HANDSHAKE_NTOR_V1);
            w.put_bytes_u16_len("onionskin", &ext.onionskin, ONIONSKIN_LEN)?;
        }
        RelayMsg::Extended(reply) => w.put_bytes_u16_len("reply", reply, REPLY_LEN)?,
        RelayMsg::Drop | RelayMsg::BeginDir | RelayMsg::HalfClose | RelayMsg::Xoff => {}
        RelayMsg::CcRequest(version) => {
            if *version != CC_VERSION {
                return Err(EncodeError::Invalid { what: "cc request", reason: "unknown version" });
            }
            w.put_u8(*version);
        }
        RelayMsg::Xon(rate) => w.put_u32(*rate),
        RelayMsg::Resolve(name) => put_hostname(&mut w, name)?,
        RelayMsg::Resolved(addrs) => {
            if addrs.len() > MAX_RESOLVED {
                return Err(EncodeError::TooLong { what: "resolved", len: addrs.len(), max: MAX_RESOLVED });
            }
            w.put_u8(u8::try_from(addrs.len()).unwrap_or(u8::MAX));
            for ip in addrs {
                put_ip(&mut w, ip);
            }
        }
    }
    Ok(w.into_vec())
}

/// Decode a message body of command `code`; the body must be consumed exactly.
fn decode_body(code: u8, body: &[u8]) -> Result<RelayMsg, DecodeError> {
    let mut r = Reader::new(body);
    let msg = decode_fields(code, &mut r).map_err(|e| e.in_container("relay message body"))?;
    r.expect_end("relay message body")?;
    Ok(msg)
}

/// The per-command field decoders.
fn decode_fields(code: u8, r: &mut Reader<'_>) -> Result<RelayMsg, DecodeError> {
    Ok(match code {
        0x01 => {
            let target = get_target(r)?;
            let port = r.u16()?;
            if r.u8()? != 0 {
                return Err(DecodeError::invalid("begin", "unknown flags"));
            }
            RelayMsg::Begin { target, port }
        }
        0x02 => {
            let data = r.rest();
            if data.is_empty() {
                return Err(DecodeError::invalid("data", "empty"));
            }
            RelayMsg::Data(data.to_vec())
        }
        0x03 => RelayMsg::End(EndReason::from_code(r.u8()?)),
        0x04 => match r.u8()? {
            atype::NONE => RelayMsg::Connected(None),
            t => RelayMsg::Connected(Some(get_ip(t, r)?)),
        },
        0x05 => RelayMsg::Sendme(r.array()?),
        0x06 => RelayMsg::Extend(Box::new(get_extend(r)?)),
        0x07 => {
            let reply = r.bytes_u16_len("extended", REPLY_LEN)?;
            RelayMsg::Extended(reply.try_into().map_err(|_| DecodeError::invalid("extended", "short reply"))?)
        }
        0x08 => {
            r.rest();
            RelayMsg::Drop
        }
        0x09 => RelayMsg::Resolve(get_hostname(r)?),
        0x0a => {
            let count = usize::from(r.u8()?);
            if count > MAX_RESOLVED {
                return Err(DecodeError::invalid("resolved", "too many addresses"));
            }
            let mut addrs = Vec::with_capacity(count);
            for _ in 0..count {
                let t = r.u8()?;
                addrs.push(get_ip(t, r)?);
            }
            RelayMsg::Resolved(addrs)
        }
        0x0b => RelayMsg::BeginDir,
        0x0c => RelayMsg::HalfClose,
        0x0d => match r.u8()? {
            CC_VERSION => RelayMsg::CcRequest(CC_VERSION),
            _ => return Err(DecodeError::invalid("cc request", "unknown version")),
        },
        0x0e => RelayMsg::Xoff,
        0x0f => RelayMsg::Xon(r.u32()?),
        _ => return Err(DecodeError::invalid("relay message", "unknown command")),
    })
}

/// Decode the fields of an EXTEND.
fn get_extend(r: &mut Reader<'_>) -> Result<Extend, DecodeError> {
    let relay_id = RelayId(r.array()?);
    let link_key = LinkPublicKey(r.array()?);
    let t = r.u8()?;
    let ip = get_ip(t, r)?;
    let port = r.u16()?;
    if r.u16()? != HANDSHAKE_NTOR_V1 {
        return Err(DecodeError::invalid("extend", "unknown handshake type"));
    }
    let skin = r.bytes_u16_len("extend onionskin", ONIONSKIN_LEN)?;
    let onionskin = skin.try_into().map_err(|_| DecodeError::invalid("extend", "short onionskin"))?;
    Ok(Extend { relay_id, link_key, addr: SocketAddr::new(ip, port), onionskin })
}

/// Write a target (host name or address) with its type byte.
fn put_target(w: &mut Writer, target: &Target) -> Result<(), EncodeError> {
    match target {
        Target::Hostname(name) => put_hostname(w, name),
        Target::Ip(ip) => {
            put_ip(w, ip);
            Ok(())
        }
    }
}

/// Read a target with its type byte.
fn get_target(r: &mut Reader<'_>) -> Result<Target, DecodeError> {
    match r.u8()? {
        atype::HOSTNAME => {
            let name = get_hostname_body(r)?;
            Ok(Target::Hostname(name))
        }
        t => Ok(Target::Ip(get_ip(t, r)?)),
    }
}

/// Write an address with its type byte.
fn put_ip(w: &mut Writer, ip: &IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            w.put_u8(atype::IPV4);
            w.put_bytes(&v4.octets());
        }
        IpAddr::V6(v6) => {
            w.put_u8(atype::IPV6);
            w.put_bytes(&v6.octets());
        }
    }
}

/// Read an address whose type byte `t` was already read.
fn get_ip(t: u8, r: &mut Reader<'_>) -> Result<IpAddr, DecodeError> {
    match t {
        atype::IPV4 => Ok(IpAddr::V4(Ipv4Addr::from(r.array::<4>()?))),
        atype::IPV6 => Ok(IpAddr::V6(Ipv6Addr::from(r.array::<16>()?))),
        _ => Err(DecodeError::invalid("address", "unknown address type")),
    }
}

/// Write a host name with its type byte and length.
fn put_hostname(w: &mut Writer, name: &str) -> Result<(), EncodeError> {
    if !valid_hostname(name.as_bytes()) {
        return Err(EncodeError::Invalid { what: "hostname", reason: "empty or not printable ASCII" });
    }
    w.put_u8(atype::HOSTNAME);
    w.put_bytes_u8_len("hostname", name.as_bytes(), MAX_HOSTNAME_LEN)
}

/// Read a host name including its type byte.
fn get_hostname(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    if r.u8()? != atype::HOSTNAME {
        return Err(DecodeError::invalid("resolve", "not a host name"));
    }
    get_hostname_body(r)
}

/// Read a host name's length and bytes.
fn get_hostname_body(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let bytes = r.bytes_u8_len("hostname", MAX_HOSTNAME_LEN)?;
    if !valid_hostname(bytes) {
        return Err(DecodeError::invalid("hostname", "empty or not printable ASCII"));
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::invalid("hostname", "not UTF-8"))
}

/// Host names are non-empty printable ASCII without spaces.
fn valid_hostname(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(cell: RelayCell) {
        let mut region = [0xAAu8; 454];
        cell.encode_into(&mut region).unwrap();
        assert_eq!(RelayCell::decode(&region).unwrap(), cell);
    }

    #[test]
    fn every_message_round_trips() {
        let s = StreamId(7);
        round_trip(RelayCell::new(s, RelayMsg::Begin { target: Target::Hostname("localhost".into()), port: 80 }));
        round_trip(RelayCell::new(s, RelayMsg::Begin { target: Target::Ip("::1".parse().unwrap()), port: 1 }));
        round_trip(RelayCell::new(s, RelayMsg::Data(vec![1; 449])));
        round_trip(RelayCell::new(s, RelayMsg::End(EndReason::ExitPolicy)));
        round_trip(RelayCell::new(s, RelayMsg::Connected(Some("127.0.0.1".parse().unwrap()))));
        round_trip(RelayCell::new(s, RelayMsg::Connected(None)));
        round_trip(RelayCell::new(StreamId::CIRCUIT, RelayMsg::Sendme([3; 16])));
        round_trip(RelayCell::new(
            StreamId::CIRCUIT,
            RelayMsg::Extend(Box::new(Extend {
                relay_id: RelayId([1; 32]),
                link_key: LinkPublicKey([2; 32]),
                addr: "127.1.0.1:9001".parse().unwrap(),
                onionskin: [4; ONIONSKIN_LEN],
            })),
        ));
        round_trip(RelayCell::new(StreamId::CIRCUIT, RelayMsg::Extended([5; REPLY_LEN])));
        round_trip(RelayCell::new(StreamId::CIRCUIT, RelayMsg::Drop));
        round_trip(RelayCell::new(s, RelayMsg::Resolve("example.org".into())));
        round_trip(RelayCell::new(s, RelayMsg::Resolved(vec!["10.0.0.1".parse().unwrap()])));
        round_trip(RelayCell::new(s, RelayMsg::BeginDir));
        round_trip(RelayCell::new(s, RelayMsg::HalfClose));
        round_trip(RelayCell::new(StreamId::CIRCUIT, RelayMsg::CcRequest(CC_VERSION)));
        round_trip(RelayCell::new(s, RelayMsg::Xoff));
        round_trip(RelayCell::new(s, RelayMsg::Xon(12_345)));
    }

    #[test]
    fn the_data_fast_path_encodes_the_same_bytes() {
        for len in [1usize, 100, 449] {
            let data: Vec<u8> = (0..len).map(|i| u8::try_from(i % 256).unwrap()).collect();
            let (mut a, mut b) = ([0xAAu8; 454], [0x55u8; 454]);
            RelayCell::new(StreamId(9), RelayMsg::Data(data.clone())).encode_into(&mut a).unwrap();
            RelayCell::encode_data_into(&mut b, StreamId(9), &data).unwrap();
            assert_eq!(a, b);
        }
        assert!(RelayCell::encode_data_into(&mut [0u8; 10], StreamId(1), &[1; 6]).is_err());
        assert!(RelayCell::encode_data_into(&mut [0u8; 10], StreamId(0), &[1]).is_err());
        assert!(RelayCell::encode_data_into(&mut [0u8; 10], StreamId(1), &[]).is_err());
    }

    #[test]
    fn data_header_layout_is_frozen() {
        let mut region = [0u8; 16];
        RelayCell::new(StreamId(0x0102), RelayMsg::Data(vec![0xAB, 0xCD])).encode_into(&mut region).unwrap();
        assert_eq!(&region[..7], &[0x02, 0x01, 0x02, 0x00, 0x02, 0xAB, 0xCD]);
        assert!(region[7..].iter().all(|b| *b == 0));
    }

    #[test]
    fn malformed_messages_get_typed_errors() {
        let cases: &[(&[u8], DecodeError)] = &[
            (&[0x02, 0, 1, 0, 0], DecodeError::invalid("data", "empty")),
            (&[0x7f, 0, 1, 0, 0], DecodeError::invalid("relay message", "unknown command")),
            (&[0x02, 0, 1, 0, 9, 1], DecodeError::invalid("relay message", "truncated")),
            (&[0x02, 0, 0, 0, 1, 1], DecodeError::invalid("relay message", "stream message without a stream")),
            (&[0x08, 0, 5, 0, 0], DecodeError::invalid("relay message", "circuit message on a stream")),
            (&[0x03, 0, 1, 0, 2, 1, 1], DecodeError::invalid("relay message body", "trailing bytes")),
            (&[0x01, 0, 1, 0, 4, 0x01, 1, b'a', 0], DecodeError::invalid("relay message body", "truncated")),
            (
                &[0x01, 0, 1, 0, 5, 0x01, 1, b' ', 0, 80],
                DecodeError::invalid("hostname", "empty or not printable ASCII"),
            ),
            (&[0x04, 0, 1, 0, 2, 0x09, 0], DecodeError::invalid("address", "unknown address type")),
            (&[0x0a, 0, 1, 0, 1, 9], DecodeError::invalid("resolved", "too many addresses")),
            (&[0x02], DecodeError::invalid("relay message", "truncated")),
            (&[0x0d, 0, 0, 0, 1, 2], DecodeError::invalid("cc request", "unknown version")),
            (&[0x0d, 0, 1, 0, 1, 1], DecodeError::invalid("relay message", "circuit message on a stream")),
            (&[0x0e, 0, 0, 0, 0], DecodeError::invalid("relay message", "stream message without a stream")),
            (&[0x0e, 0, 1, 0, 1, 0], DecodeError::invalid("relay message body", "trailing bytes")),
            (&[0x0f, 0, 1, 0, 3, 0, 0, 1], DecodeError::invalid("relay message body", "truncated")),
        ];
        for (bytes, err) in cases {
            assert_eq!(RelayCell::decode(bytes).err().as_ref(), Some(err), "input {bytes:02x?}");
        }
    }

    #[test]
    fn oversized_messages_do_not_encode() {
        let mut region = [0u8; 100];
        let cell = RelayCell::new(StreamId(1), RelayMsg::Data(vec![0; 96]));
        assert!(cell.encode_into(&mut region).is_err());
        let cell = RelayCell::new(StreamId(1), RelayMsg::Data(vec![0; 95]));
        assert!(cell.encode_into(&mut region).is_ok());
        let bad = RelayCell::new(StreamId(1), RelayMsg::Begin { target: Target::Hostname("a b".into()), port: 1 });
        assert!(bad.encode_into(&mut [0u8; 400]).is_err());
    }
}
