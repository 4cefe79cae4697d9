//! Fuzz target: operation sequences against one client circuit
//! (spec §6–§8). Nothing the relays send, and no order of calls, may panic
//! a `ClientCircuit`.
//!
//! The relays of the path (one to three hops, fixed keys from a seeded
//! `ChaCha20Rng`) are emulated with `lamina-crypto` directly: the harness
//! answers CREATE and EXTEND with genuine handshakes, peels the client's
//! forward cells to learn what it sent, and can *originate* any backward
//! message at any built hop with genuine layers. So the fuzzer reaches the
//! client's message handling past the backward AEAD: CONNECTED, DATA, END,
//! SENDME (with genuine or forged receipts), EXTENDED, RESOLVED, DROP,
//! forward-only messages, arbitrary plaintext, tampered and replayed cells,
//! and raw cells of any command. Client calls: `begin`, `begin_dir`,
//! `send_data`, `end_stream`, `stream_consumed`, `handle_timeout`, `close`.
//!
//! Checks after every step: an error from `handle_cell` has closed the
//! circuit; a tampered or replayed backward cell is always rejected; after
//! `Closed` the client emits nothing; `Built` and `Closed` come at most
//! once; stream events name streams the client opened, none follows that
//! stream's `StreamEnded`; `send_data` accepts at most what it was given,
//! and something whenever `can_send` said it could.

#![no_main]

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use lamina_crypto::handshake::{relay_respond, ONIONSKIN_LEN, REPLY_LEN};
use lamina_crypto::keys::{IdentityKeypair, LinkPublicKey, RelayId, StaticKeypair};
use lamina_crypto::layer::{Peeled, RelayLayers, BODY_LEN, TAG_LEN};
use lamina_proto::cell::{Cell, CellCommand, CircId, DestroyReason, PAYLOAD_LEN};
use lamina_proto::circuit::client::{ClientCircuit, ClientEvent, HopSpec};
use lamina_proto::circuit::MAX_STREAMS_PER_CIRCUIT;
use lamina_proto::error::CircuitError;
use lamina_proto::msg::{EndReason, Extend, RelayCell, RelayMsg, StreamId, Target};
use libfuzzer_sys::fuzz_target;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// The client's circuit id.
const CIRC: CircId = CircId(0x8000_0001);
/// The build timeout.
const BUILD_TIMEOUT: Duration = Duration::from_secs(10);

/// One emulated relay's keys.
struct RelayKeys {
    /// Its id.
    relay_id: RelayId,
    /// Onion key.
    onion: StaticKeypair,
    /// Link key.
    link: StaticKeypair,
}

/// Three relays, generated once from a seeded RNG, and a base instant.
fn fixture() -> &'static (Vec<RelayKeys>, Instant) {
    static FIXTURE: OnceLock<(Vec<RelayKeys>, Instant)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let mut rng = ChaCha20Rng::from_seed([0xc1; 32]);
        let relays = (0..3)
            .map(|_| RelayKeys {
                relay_id: IdentityKeypair::generate(&mut rng).relay_id(),
                onion: StaticKeypair::generate(&mut rng),
                link: StaticKeypair::generate(&mut rng),
            })
            .collect();
        #[allow(clippy::disallowed_methods)] // The harness is the driver: it owns the clock.
        let now = Instant::now();
        (relays, now)
    })
}

/// A stream chosen by the fuzzer.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum StreamSel {
    /// One the client opened (by index).
    Opened(u8),
    /// Any id.
    Raw(u16),
}

/// An address.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    /// IPv4.
    V4([u8; 4]),
    /// IPv6.
    V6([u8; 16]),
}

impl Addr {
    /// As an `IpAddr`.
    fn ip(self) -> IpAddr {
        match self {
            Self::V4(b) => IpAddr::from(b),
            Self::V6(b) => IpAddr::from(b),
        }
    }
}

/// A backward message a hop originates.
#[derive(Arbitrary, Debug, Clone)]
enum Msg {
    /// CONNECTED.
    Connected(Option<Addr>),
    /// DATA of `len` (mod 487) bytes.
    Data(u16),
    /// END.
    End(u8),
    /// SENDME with the receipt of the `n`th batch-completing cell the client sent.
    SendmeKnown(u8),
    /// SENDME with any receipt.
    SendmeRaw([u8; TAG_LEN]),
    /// EXTENDED with any reply.
    Extended([u8; REPLY_LEN]),
    /// DROP.
    Drop,
    /// RESOLVED.
    Resolved(Vec<Addr>),
    /// A forward-only message (BEGIN_DIR, BEGIN, RESOLVE, EXTEND, CC_REQUEST).
    ForwardOnly(u8),
    /// XOFF (spec §8.5).
    Xoff,
    /// XON with a rate.
    Xon(u32),
}

/// One operation.
#[derive(Arbitrary, Debug)]
enum Op {
    /// `begin` to a host name (or to an address).
    Begin { ip: Option<[u8; 4]>, port: u16 },
    /// `begin` to a host name from the input (may be invalid).
    BeginName(String),
    /// `begin_dir`.
    BeginDir,
    /// `send_data` of `len` bytes.
    SendData { stream: StreamSel, len: u16 },
    /// `end_stream`.
    EndStream { stream: StreamSel, reason: u8 },
    /// `stream_consumed`.
    Consumed { stream: StreamSel },
    /// `handle_timeout` `secs` after the start.
    Timeout(u8),
    /// `close`.
    Close(u8),
    /// Hop `hop` originates `msg` on `stream`.
    Reply { hop: u8, stream: StreamSel, msg: Msg },
    /// Hop `hop` originates arbitrary plaintext.
    ReplyRaw { hop: u8, plaintext: Vec<u8> },
    /// Like `Reply`, with bit `bit` of the cell flipped on the way.
    Tamper { hop: u8, bit: u16, msg: Msg },
    /// Deliver the last backward RELAY cell again.
    Replay,
    /// A raw cell (any command byte mod 5, payload) on our circuit id.
    Cell { command: u8, payload: Vec<u8> },
}

/// One fuzz case.
#[derive(Arbitrary, Debug)]
struct Input {
    /// Path length minus one, mod 3.
    hops: u8,
    /// The emulated relays answer CREATE/EXTEND and BEGIN on their own.
    auto: bool,
    /// The client asks for congestion control (spec §8.6).
    cc: bool,
    /// The operations.
    ops: Vec<Op>,
}

/// The emulated relays and what they have seen.
struct Harness {
    /// Randomness.
    rng: ChaCha20Rng,
    /// The client under test.
    client: ClientCircuit,
    /// Path length.
    path_len: usize,
    /// Layers of the hops built so far, as the relays hold them.
    layers: Vec<RelayLayers>,
    /// Whether the relays answer on their own.
    auto: bool,
    /// Whether the relays consider the circuit dead.
    relay_dead: bool,
    /// Streams the client opened, in order.
    opened: Vec<StreamId>,
    /// Streams the client reported ended.
    ended: BTreeSet<StreamId>,
    /// Layer tags of the client's DATA cells at the last hop (SENDME receipts).
    data_tags: Vec<[u8; TAG_LEN]>,
    /// The last backward RELAY cell delivered.
    last_backward: Option<Cell>,
    /// Whether `Built` was reported.
    built: bool,
    /// Whether `Closed` was reported (and the client drained since).
    closed: bool,
}

fuzz_target!(|input: Input| {
    let (relays, start) = fixture();
    let path_len = 1 + usize::from(input.hops % 3);
    let path: Vec<HopSpec> = relays[..path_len]
        .iter()
        .enumerate()
        .map(|(i, r)| HopSpec {
            relay_id: r.relay_id,
            onion_key: r.onion.onion_public(),
            link_key: r.link.link_public(),
            addr: (IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + u8::try_from(i).unwrap_or(0))), 9001).into(),
        })
        .collect();
    let mut rng = ChaCha20Rng::from_seed([0x5e; 32]);
    let mut client = ClientCircuit::new(&mut rng, *start, CIRC, path, BUILD_TIMEOUT).expect("a valid path");
    if input.cc {
        client.request_congestion_control();
    }
    assert_eq!(client.poll_timeout(), start.checked_add(BUILD_TIMEOUT));
    let mut h = Harness {
        rng,
        client,
        path_len,
        layers: Vec::new(),
        auto: input.auto,
        relay_dead: false,
        opened: Vec::new(),
        ended: BTreeSet::new(),
        data_tags: Vec::new(),
        last_backward: None,
        built: false,
        closed: false,
    };
    h.pump();
    for op in input.ops.into_iter().take(128) {
        h.apply(op);
        h.pump();
    }
});

impl Harness {
    /// Resolve a stream selector.
    fn stream(&self, sel: StreamSel) -> StreamId {
        match sel {
            StreamSel::Opened(i) if !self.opened.is_empty() => self.opened[usize::from(i) % self.opened.len()],
            StreamSel::Opened(i) => StreamId(u16::from(i)),
            StreamSel::Raw(id) => StreamId(id),
        }
    }

    /// Run one operation.
    fn apply(&mut self, op: Op) {
        let (_, start) = fixture();
        match op {
            Op::Begin { ip, port } => {
                let target = match ip {
                    Some(ip) => Target::Ip(IpAddr::from(ip)),
                    None => Target::Hostname("example.org".into()),
                };
                self.open(|c| c.begin(target, port));
            }
            Op::BeginName(name) => self.open(|c| c.begin(Target::Hostname(name), 443)),
            Op::BeginDir => self.open(ClientCircuit::begin_dir),
            Op::SendData { stream, len } => {
                let stream = self.stream(stream);
                let could = self.client.can_send(stream);
                let data = vec![0x42; usize::from(len)];
                match self.client.send_data(stream, &data, fixture().1) {
                    Ok(n) => {
                        assert!(n <= data.len(), "send_data accepted more than it was given");
                        assert!(!could || data.is_empty() || n > 0, "can_send said yes, send_data took nothing");
                    }
                    Err(_) => assert!(!could || data.is_empty(), "can_send said yes, send_data failed"),
                }
            }
            Op::EndStream { stream, reason } => {
                let stream = self.stream(stream);
                let _ = self.client.end_stream(stream, EndReason::from_code(reason));
            }
            Op::Consumed { stream } => {
                let stream = self.stream(stream);
                let _ = self.client.stream_consumed(stream, fixture().1);
            }
            Op::Timeout(secs) => {
                let now = *start + Duration::from_secs(u64::from(secs));
                let due = self.client.poll_timeout().is_some_and(|t| now >= t);
                self.client.handle_timeout(now);
                if due {
                    assert!(self.client.is_closed(), "a build past its deadline is abandoned");
                }
            }
            Op::Close(code) => {
                self.client.close(DestroyReason::from_code(code));
                assert!(self.client.is_closed());
            }
            Op::Reply { hop, stream, msg } => {
                let stream = self.stream(stream);
                if let Some(cell) = self.originate(hop, stream, &msg) {
                    self.to_client(cell, false);
                }
            }
            Op::ReplyRaw { hop, plaintext } => {
                if let Some(cell) = self.originate_raw(hop, &plaintext) {
                    self.to_client(cell, false);
                }
            }
            Op::Tamper { hop, bit, msg } => {
                let stream = self.opened.first().copied().unwrap_or(StreamId(1));
                if let Some(mut cell) = self.originate(hop, stream, &msg) {
                    let bit = usize::from(bit) % (PAYLOAD_LEN * 8);
                    cell.payload[bit / 8] ^= 1 << (bit % 8);
                    self.to_client(cell, true);
                }
            }
            Op::Replay => {
                if let Some(cell) = self.last_backward.clone() {
                    self.to_client(cell, true);
                }
            }
            Op::Cell { command, payload } => {
                let command = CellCommand::from_code(command % 6).unwrap_or(CellCommand::Padding);
                let mut cell = Cell::new(CIRC, command);
                let n = payload.len().min(PAYLOAD_LEN);
                cell.payload[..n].copy_from_slice(&payload[..n]);
                self.to_client(cell, false);
            }
        }
    }

    /// Open a stream with `begin`/`begin_dir` and record it. A failed
    /// call must leave no stream behind.
    fn open(&mut self, call: impl FnOnce(&mut ClientCircuit) -> Result<StreamId, CircuitError>) {
        let before = self.client.stream_count();
        match call(&mut self.client) {
            Ok(stream) => {
                assert_ne!(stream, StreamId::CIRCUIT);
                assert!(!self.opened.contains(&stream) || self.ended.contains(&stream), "a live stream id was reused");
                assert_eq!(self.client.stream_count(), before + 1);
                self.ended.remove(&stream);
                self.opened.push(stream);
            }
            Err(e) => assert_eq!(self.client.stream_count(), before, "a failed begin left a stream behind ({e})"),
        }
    }

    /// Hand a cell to the client; `must_fail` for tampered or replayed cells.
    fn to_client(&mut self, cell: Cell, must_fail: bool) {
        let was_closed = self.client.is_closed();
        if cell.command == CellCommand::Relay && !must_fail {
            self.last_backward = Some(cell.clone());
        }
        let result = self.client.handle_cell(&mut self.rng, cell, fixture().1);
        if result.is_err() {
            assert!(self.client.is_closed(), "an error closes the circuit: {result:?}");
        }
        if must_fail && !was_closed {
            assert!(result.is_err(), "a tampered or replayed cell was accepted");
        }
    }

    /// A backward cell originated at hop `hop` carrying `msg` on `stream`.
    fn originate(&mut self, hop: u8, stream: StreamId, msg: &Msg) -> Option<Cell> {
        let msg = match msg {
            Msg::Connected(addr) => RelayMsg::Connected(addr.map(Addr::ip)),
            Msg::Data(len) => RelayMsg::Data(vec![0x24; 1 + usize::from(*len) % 486]),
            Msg::End(code) => RelayMsg::End(EndReason::from_code(*code)),
            Msg::SendmeKnown(i) => {
                let tag = self.data_tags.get(usize::from(*i) % self.data_tags.len().max(1)).copied();
                RelayMsg::Sendme(tag.unwrap_or([0; TAG_LEN]))
            }
            Msg::SendmeRaw(tag) => RelayMsg::Sendme(*tag),
            Msg::Extended(reply) => RelayMsg::Extended(*reply),
            Msg::Drop => RelayMsg::Drop,
            Msg::Resolved(addrs) => RelayMsg::Resolved(addrs.iter().take(8).map(|a| a.ip()).collect()),
            Msg::Xoff => RelayMsg::Xoff,
            Msg::Xon(rate) => RelayMsg::Xon(*rate),
            Msg::ForwardOnly(k) => match k % 5 {
                4 => RelayMsg::CcRequest(lamina_proto::msg::CC_VERSION),
                0 => RelayMsg::BeginDir,
                1 => RelayMsg::Begin { target: Target::Hostname("a.example".into()), port: 1 },
                2 => RelayMsg::Resolve("a.example".into()),
                _ => {
                    let (relays, _) = fixture();
                    RelayMsg::Extend(Box::new(Extend {
                        relay_id: relays[0].relay_id,
                        link_key: LinkPublicKey([7; 32]),
                        addr: (IpAddr::V4(Ipv4Addr::LOCALHOST), 1).into(),
                        onionskin: [9; ONIONSKIN_LEN],
                    }))
                }
            },
        };
        // Circuit-level messages go on stream 0, the rest on `stream`.
        let stream = match msg {
            RelayMsg::Extended(_) | RelayMsg::Drop | RelayMsg::Extend(_) | RelayMsg::CcRequest(_) => StreamId::CIRCUIT,
            _ => stream,
        };
        let mut plain = [0u8; BODY_LEN - TAG_LEN];
        RelayCell::new(stream, msg).encode_into(&mut plain).ok()?;
        self.originate_raw(hop, &plain)
    }

    /// A backward cell originated at hop `hop` carrying `plaintext`.
    fn originate_raw(&mut self, hop: u8, plaintext: &[u8]) -> Option<Cell> {
        if self.layers.is_empty() || self.relay_dead {
            return None;
        }
        let hop = usize::from(hop) % self.layers.len();
        let mut body = [0u8; BODY_LEN];
        let n = plaintext.len().min(BODY_LEN - TAG_LEN);
        body[TAG_LEN..TAG_LEN + n].copy_from_slice(&plaintext[..n]);
        self.layers[hop].originate_backward(&mut body).expect("counters are far from exhaustion");
        for earlier in self.layers[..hop].iter_mut().rev() {
            earlier.relay_backward(&mut body).expect("counters are far from exhaustion");
        }
        Some(Cell::relay(CIRC, body))
    }

    /// Move the client's cells to the emulated relays and drain its events.
    fn pump(&mut self) {
        for _ in 0..64 {
            let mut moved = false;
            while let Some(cell) = self.client.poll_transmit() {
                assert!(!self.closed, "a closed circuit sends nothing");
                assert_eq!(cell.circ, CIRC);
                moved = true;
                self.at_relays(cell);
            }
            moved |= self.drain_events();
            if !moved {
                return;
            }
        }
    }

    /// Check and record the client's events; returns whether there were any.
    fn drain_events(&mut self) -> bool {
        let mut any = false;
        while let Some(ev) = self.client.poll_event() {
            any = true;
            assert!(!self.closed, "no events after Closed: {ev:?}");
            match ev {
                ClientEvent::Built => {
                    assert!(!self.built, "Built twice");
                    self.built = true;
                    assert!(self.client.is_open());
                }
                ClientEvent::Closed { .. } => {
                    self.closed = true;
                    assert!(self.client.is_closed());
                    assert_eq!(self.client.stream_count(), 0);
                }
                ClientEvent::StreamConnected { stream, .. }
                | ClientEvent::StreamWritable { stream }
                | ClientEvent::StreamData { stream, .. } => {
                    assert!(self.opened.contains(&stream), "event for a stream never opened");
                    assert!(!self.ended.contains(&stream), "event after StreamEnded");
                    if let ClientEvent::StreamData { data, .. } = &ev {
                        assert!(!data.is_empty());
                        let _ = self.client.stream_consumed(stream, fixture().1);
                    }
                }
                ClientEvent::StreamEnded { stream, .. } => {
                    assert!(self.opened.contains(&stream), "StreamEnded for a stream never opened");
                    assert!(self.ended.insert(stream), "StreamEnded twice");
                }
            }
        }
        assert!(self.client.stream_count() <= MAX_STREAMS_PER_CIRCUIT);
        any
    }

    /// What the emulated relays do with a cell from the client.
    fn at_relays(&mut self, cell: Cell) {
        if self.relay_dead {
            return;
        }
        match cell.command {
            CellCommand::Create => {
                assert!(self.layers.is_empty(), "one CREATE per circuit");
                let skin = cell.create_onionskin().expect("the client's CREATE is well formed");
                self.handshake(0, &skin, None);
            }
            CellCommand::Destroy => self.relay_dead = true,
            CellCommand::Relay | CellCommand::RelayEarly => self.peel(cell),
            CellCommand::Created | CellCommand::Padding | CellCommand::Directory => {
                panic!("the client sent {:?}", cell.command)
            }
        }
    }

    /// Hop `hop` answers an onionskin: CREATED (`via` = None) or EXTENDED from hop `via`.
    fn handshake(&mut self, hop: usize, skin: &[u8; ONIONSKIN_LEN], via: Option<usize>) {
        if !self.auto {
            return;
        }
        let (relays, _) = fixture();
        let relay = &relays[hop];
        let (reply, keys) = relay_respond(&mut self.rng, &relay.relay_id, &relay.onion, skin)
            .expect("the client addresses the right keys");
        self.layers.push(RelayLayers::new(&keys));
        let cell = match via {
            None => Cell::created(CIRC, &reply),
            Some(from) => {
                let mut plain = [0u8; BODY_LEN - TAG_LEN];
                RelayCell::new(StreamId::CIRCUIT, RelayMsg::Extended(reply)).encode_into(&mut plain).expect("fits");
                let Some(cell) = self.originate_raw(u8::try_from(from).unwrap_or(0), &plain) else {
                    return;
                };
                cell
            }
        };
        let was_closed = self.client.is_closed();
        let result = self.client.handle_cell(&mut self.rng, cell, fixture().1);
        assert!(result.is_ok() || was_closed, "a genuine handshake reply was rejected: {result:?}");
    }

    /// Peel a forward cell through the built hops and act on its message.
    fn peel(&mut self, mut cell: Cell) {
        let n = self.layers.len();
        for h in 0..n {
            match self.layers[h].peel_forward(&mut cell.payload, h + 1 < n) {
                Ok(Peeled::Onward) => continue,
                Ok(Peeled::Recognized { tag }) => {
                    let rc = RelayCell::decode(&cell.payload).expect("the client sends well-formed messages");
                    self.at_hop(h, rc, tag);
                    return;
                }
                Err(e) => panic!("hop {h} could not peel a genuine client cell: {e:?}"),
            }
        }
        panic!("a client cell was recognized by no hop");
    }

    /// Hop `h` handles a message from the client.
    fn at_hop(&mut self, h: usize, rc: RelayCell, tag: [u8; TAG_LEN]) {
        match rc.msg {
            RelayMsg::Extend(ext) => {
                assert_eq!(h + 1, self.layers.len(), "EXTEND goes to the last built hop");
                assert!(h + 1 < self.path_len, "no EXTEND past the end of the path");
                self.handshake(h + 1, &ext.onionskin, Some(h));
            }
            RelayMsg::Begin { .. } | RelayMsg::BeginDir => {
                assert_eq!(h + 1, self.path_len, "streams open at the last hop");
                assert!(self.opened.contains(&rc.stream), "BEGIN for a stream begin() did not return");
                if self.auto {
                    if let Some(cell) = self.originate(u8::try_from(h).unwrap_or(0), rc.stream, &Msg::Connected(None)) {
                        self.to_client(cell, false);
                    }
                }
            }
            RelayMsg::Data(data) => {
                assert!(!data.is_empty());
                if self.data_tags.len() < 4096 {
                    self.data_tags.push(tag);
                }
            }
            RelayMsg::End(_) | RelayMsg::Sendme(_) | RelayMsg::Drop => {}
            RelayMsg::CcRequest(_) => {
                assert_eq!(h + 1, self.path_len, "congestion control is asked of the last hop");
                assert!(self.opened.is_empty(), "CC_REQUEST precedes every stream");
            }
            RelayMsg::Xoff | RelayMsg::Xon(_) => {
                assert!(self.client.congestion_controlled(), "advisories only under congestion control");
            }
            other => panic!("the client sent {other:?}"),
        }
    }
}
