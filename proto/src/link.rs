//! Links: the Noise-encrypted TCP connection between two nodes (spec §3).
//!
//! A link starts with a two-byte preamble from the initiator
//! (`version = 0x01`, `pattern = 0x01 XK | 0x02 XX`), then Noise handshake
//! messages, then transport messages; every message after the preamble is
//! framed as
//!
//! ```text
//! +-----------+----------------------------+
//! | len u16BE | Noise message (len bytes)  |
//! +-----------+----------------------------+
//! ```
//!
//! Handshake payloads (spec §3.3) carry a fixed-size [`LinkAuth`]: a relay
//! proves its identity with a certificate (its identity key's signature over
//! its link key); a client sends the anonymous form, with a throwaway static
//! key, so every link looks alike on the wire. Transport messages carry a
//! batch of 1..=[`MAX_BATCH_CELLS`] whole cells.
//!
//! [`LinkHandshake`] is sans-IO: feed it bytes with
//! [`handle_input`](LinkHandshake::handle_input), send what
//! [`poll_transmit`](LinkHandshake::poll_transmit) returns, and when
//! [`is_finished`](LinkHandshake::is_finished), turn it into the
//! [`LinkSender`]/[`LinkReceiver`] pair.

use lamina_crypto::kdf::LINK_CERT_CONTEXT;
use lamina_crypto::keys::{IdentityKeypair, LinkPublicKey, RelayId, Signature, StaticKeypair, SIGNATURE_LEN};
use lamina_crypto::noise::{LinkPattern, NoiseHandshake, NoiseReceiver, NoiseSender, NOISE_MAX_MSG, NOISE_TAG_LEN};
use lamina_crypto::sign::{sign_with_context, verify_with_context};
use rand_core::{CryptoRng, RngCore};

use crate::cell::{Cell, CELL_LEN};
use crate::codec::{DecodeError, Reader};
use crate::error::LinkError;

/// Link protocol version in the preamble.
pub const LINK_VERSION: u8 = 0x01;
/// Most cells in one transport message.
pub const MAX_BATCH_CELLS: usize = 64;
/// Length of the frame header.
pub const FRAME_HEADER_LEN: usize = 2;
/// Length of the handshake authentication payload.
pub const LINK_AUTH_LEN: usize = 128;
/// Largest frame on the wire (header + Noise message).
pub const MAX_FRAME_LEN: usize = FRAME_HEADER_LEN + MAX_BATCH_CELLS * CELL_LEN + NOISE_TAG_LEN;

const _: () = assert!(MAX_BATCH_CELLS * CELL_LEN + NOISE_TAG_LEN <= NOISE_MAX_MSG);

/// A relay's link certificate: its identity's signature over its link key
/// with the context `LINK_CERT_CONTEXT` (spec §3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkCert {
    /// The relay that signed.
    pub relay_id: RelayId,
    /// Signature over `LINK_CERT_CONTEXT | link key`.
    pub signature: Signature,
}

impl LinkCert {
    /// Certify `link_key` with `identity`.
    pub fn new(identity: &IdentityKeypair, link_key: &LinkPublicKey) -> Self {
        Self { relay_id: identity.relay_id(), signature: sign_with_context(identity, LINK_CERT_CONTEXT, &link_key.0) }
    }

    /// Check that this certificate binds `link_key` to `relay_id`.
    pub fn verify(&self, link_key: &LinkPublicKey) -> Result<(), LinkError> {
        verify_with_context(&self.relay_id, LINK_CERT_CONTEXT, &link_key.0, &self.signature)
            .map_err(|source| LinkError::Crypto { context: "link certificate", source })
    }
}

/// The authentication payload of a handshake message (spec §3.3):
///
/// ```text
/// +------+--------------+---------------+-----------------+
/// | kind | relay id 32  | signature 64  | zero padding    |  = 128 bytes
/// +------+--------------+---------------+-----------------+
/// kind 0x00 = anonymous (id and signature all zero), 0x01 = relay
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkAuth {
    /// An anonymous client.
    Anonymous,
    /// A relay with its certificate.
    Relay(LinkCert),
}

impl LinkAuth {
    /// Encode to exactly [`LINK_AUTH_LEN`] bytes.
    pub fn encode(&self) -> [u8; LINK_AUTH_LEN] {
        let mut out = [0u8; LINK_AUTH_LEN];
        if let Self::Relay(cert) = self {
            out[0] = 0x01;
            out[1..33].copy_from_slice(cert.relay_id.as_bytes());
            out[33..33 + SIGNATURE_LEN].copy_from_slice(&cert.signature.0);
        }
        out
    }

    /// Decode exactly [`LINK_AUTH_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() != LINK_AUTH_LEN {
            return Err(DecodeError::invalid("link auth", "wrong length"));
        }
        let mut r = Reader::new(bytes);
        let kind = r.u8()?;
        let relay_id = RelayId(r.array()?);
        let signature = Signature(r.array()?);
        r.expect_zero_padding("link auth")?;
        match kind {
            0x00 if relay_id.0 == [0; 32] && signature.0 == [0; SIGNATURE_LEN] => Ok(Self::Anonymous),
            0x01 => Ok(Self::Relay(LinkCert { relay_id, signature })),
            _ => Err(DecodeError::invalid("link auth", "unknown kind or non-zero anonymous fields")),
        }
    }
}

/// Who we are on a link we open.
pub enum LocalAuth<'a> {
    /// An anonymous client: a throwaway static key, no certificate.
    Anonymous,
    /// A relay: its link key and certificate.
    Relay {
        /// Our link key.
        link_key: &'a StaticKeypair,
        /// Our certificate over it.
        cert: LinkCert,
    },
}

/// What the initiator knows about the responder.
#[derive(Debug, Clone, Copy)]
pub enum PeerExpectation {
    /// A relay from a verified descriptor: handshake `XK`.
    Known {
        /// Its identity.
        relay_id: RelayId,
        /// Its link key.
        link_key: LinkPublicKey,
    },
    /// An address only (a seed): handshake `XX`; the identity is learned.
    Unknown,
}

/// Who the peer proved to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerIdentity {
    /// An anonymous client.
    Anonymous,
    /// A relay.
    Relay(RelayId),
}

/// Handshake states, named for what they wait for (CONTRIBUTING.md P7).
enum State {
    /// Initiator: sent preamble and message 1, awaiting message 2.
    AwaitingMsg2 {
        /// Noise state.
        noise: Box<NoiseHandshake>,
        /// Pattern in use.
        pattern: LinkPattern,
        /// Our payload for message 3.
        auth: LinkAuth,
        /// What we expect of the responder.
        expect: PeerExpectation,
    },
    /// Responder: awaiting the two-byte preamble.
    AwaitingPreamble {
        /// Our link key.
        link_key: Box<StaticKeypair>,
        /// Our certificate (sent in `XX` message 2).
        cert: LinkCert,
    },
    /// Responder: awaiting message 1.
    AwaitingMsg1 {
        /// Noise state.
        noise: Box<NoiseHandshake>,
        /// Pattern in use.
        pattern: LinkPattern,
        /// Our certificate.
        cert: LinkCert,
    },
    /// Responder: sent message 2, awaiting message 3.
    AwaitingMsg3 {
        /// Noise state.
        noise: Box<NoiseHandshake>,
    },
    /// Done: the transport and the peer's identity.
    Finished {
        /// Noise state (finished).
        noise: Box<NoiseHandshake>,
        /// Who the peer is.
        peer: PeerIdentity,
    },
    /// Failed or taken; nothing more can happen.
    Dead,
}

/// A link handshake in progress (either side).
pub struct LinkHandshake {
    /// Where we are.
    state: State,
    /// Bytes waiting to be sent.
    out: Vec<u8>,
}

impl std::fmt::Debug for LinkHandshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkHandshake").field("finished", &self.is_finished()).finish_non_exhaustive()
    }
}

impl LinkHandshake {
    /// Open a link: queues the preamble and message 1.
    pub fn initiator<R: RngCore + CryptoRng>(
        rng: &mut R,
        local: &LocalAuth<'_>,
        expect: PeerExpectation,
    ) -> Result<Self, LinkError> {
        let crypto = |source| LinkError::Crypto { context: "noise initiator", source };
        let throwaway;
        let (static_key, auth) = match local {
            LocalAuth::Anonymous => {
                throwaway = StaticKeypair::generate(rng);
                (&throwaway, LinkAuth::Anonymous)
            }
            LocalAuth::Relay { link_key, cert } => (*link_key, LinkAuth::Relay(*cert)),
        };
        let (pattern, remote) = match &expect {
            PeerExpectation::Known { link_key, .. } => (LinkPattern::Xk, Some(link_key)),
            PeerExpectation::Unknown => (LinkPattern::Xx, None),
        };
        let mut noise = Box::new(NoiseHandshake::initiator(rng, pattern, static_key, remote).map_err(crypto)?);
        let mut out = vec![LINK_VERSION, pattern_code(pattern)];
        write_frame(&mut noise, &[], &mut out)?;
        Ok(Self { state: State::AwaitingMsg2 { noise, pattern, auth, expect }, out })
    }

    /// Accept a link as a relay with `link_key` and its `cert`.
    pub fn responder(link_key: &StaticKeypair, cert: LinkCert) -> Self {
        let link_key = Box::new(StaticKeypair::from_secret_bytes(&link_key.secret_bytes()));
        Self { state: State::AwaitingPreamble { link_key, cert }, out: Vec::new() }
    }

    /// Feed received bytes; returns how many were consumed. Call again
    /// with the unconsumed rest after more bytes arrive.
    pub fn handle_input<R: RngCore + CryptoRng>(&mut self, rng: &mut R, input: &[u8]) -> Result<usize, LinkError> {
        let mut used = 0;
        loop {
            if self.is_finished() {
                // Bytes after the last handshake message are transport frames.
                return Ok(used);
            }
            let step = self.step(rng, &input[used..]);
            match step {
                Ok(0) => return Ok(used),
                Ok(n) => used += n,
                Err(e) => {
                    self.state = State::Dead;
                    return Err(e);
                }
            }
        }
    }

    /// Bytes to send now, if any.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        if self.out.is_empty() {
            None
        } else {
            Some(std::mem::take(&mut self.out))
        }
    }

    /// Whether the handshake completed.
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished { .. })
    }

    /// The peer's static (link) key once the handshake proved it: for a
    /// relay peer, the key its certificate binds to its identity.
    pub fn peer_link_key(&self) -> Option<LinkPublicKey> {
        match &self.state {
            State::Finished { noise, .. } => noise.remote_static(),
            _ => None,
        }
    }

    /// Turn a finished handshake into the transport halves and the peer's identity.
    pub fn into_transport(self) -> Result<(LinkSender, LinkReceiver, PeerIdentity), LinkError> {
        let State::Finished { noise, peer } = self.state else {
            return Err(LinkError::State("handshake not finished"));
        };
        let (tx, rx) =
            noise.into_transport().map_err(|source| LinkError::Crypto { context: "noise split", source })?.split();
        Ok((
            LinkSender { noise: tx, plain: Vec::with_capacity(MAX_BATCH_CELLS * CELL_LEN) },
            LinkReceiver { noise: rx, scratch: vec![0; NOISE_MAX_MSG] },
            peer,
        ))
    }

    /// Make at most one state transition from the front of `input`;
    /// returns bytes consumed (0 = need more input or nothing to do).
    fn step<R: RngCore + CryptoRng>(&mut self, rng: &mut R, input: &[u8]) -> Result<usize, LinkError> {
        match std::mem::replace(&mut self.state, State::Dead) {
            State::AwaitingPreamble { link_key, cert } => self.on_preamble(rng, input, link_key, cert),
            State::AwaitingMsg1 { noise, pattern, cert } => self.on_msg1(input, noise, pattern, cert),
            State::AwaitingMsg3 { noise } => self.on_msg3(input, noise),
            State::AwaitingMsg2 { noise, pattern, auth, expect } => self.on_msg2(input, noise, pattern, auth, expect),
            finished @ (State::Finished { .. } | State::Dead) => {
                self.state = finished;
                if input.is_empty() {
                    Ok(0)
                } else {
                    Err(LinkError::Protocol("bytes after handshake before transport"))
                }
            }
        }
    }

    /// Responder: the two-byte preamble chooses the pattern.
    fn on_preamble<R: RngCore + CryptoRng>(
        &mut self,
        rng: &mut R,
        input: &[u8],
        link_key: Box<StaticKeypair>,
        cert: LinkCert,
    ) -> Result<usize, LinkError> {
        let [version, code, ..] = *input else {
            self.state = State::AwaitingPreamble { link_key, cert };
            return Ok(0);
        };
        if version != LINK_VERSION {
            return Err(LinkError::Protocol("unsupported link version"));
        }
        let pattern = pattern_from_code(code)?;
        let noise = NoiseHandshake::responder(rng, pattern, &link_key)
            .map_err(|source| LinkError::Crypto { context: "noise responder", source })?;
        self.state = State::AwaitingMsg1 { noise: Box::new(noise), pattern, cert };
        Ok(2)
    }

    /// Responder: message 1 (empty payload); answer with message 2.
    fn on_msg1(
        &mut self,
        input: &[u8],
        mut noise: Box<NoiseHandshake>,
        pattern: LinkPattern,
        cert: LinkCert,
    ) -> Result<usize, LinkError> {
        let Some((frame, used)) = read_frame(input)? else {
            self.state = State::AwaitingMsg1 { noise, pattern, cert };
            return Ok(0);
        };
        let payload = read_noise(&mut noise, frame)?;
        if !payload.is_empty() {
            return Err(LinkError::Protocol("payload in message 1"));
        }
        // The responder proves its relay identity in message 2, in XK as in
        // XX (spec §3.3): XK alone proves only that it holds the link key.
        write_frame(&mut noise, &LinkAuth::Relay(cert).encode(), &mut self.out)?;
        self.state = State::AwaitingMsg3 { noise };
        Ok(used)
    }

    /// Responder: message 3 carries the initiator's `LinkAuth`.
    fn on_msg3(&mut self, input: &[u8], mut noise: Box<NoiseHandshake>) -> Result<usize, LinkError> {
        let Some((frame, used)) = read_frame(input)? else {
            self.state = State::AwaitingMsg3 { noise };
            return Ok(0);
        };
        let payload = read_noise(&mut noise, frame)?;
        let peer = authenticate(&noise, &payload)?;
        self.state = State::Finished { noise, peer };
        Ok(used)
    }

    /// Initiator: message 2 (the responder's `LinkAuth` in XX); answer with message 3.
    fn on_msg2(
        &mut self,
        input: &[u8],
        mut noise: Box<NoiseHandshake>,
        pattern: LinkPattern,
        auth: LinkAuth,
        expect: PeerExpectation,
    ) -> Result<usize, LinkError> {
        let Some((frame, used)) = read_frame(input)? else {
            self.state = State::AwaitingMsg2 { noise, pattern, auth, expect };
            return Ok(0);
        };
        let payload = read_noise(&mut noise, frame)?;
        // Both patterns: the responder's certificate must verify against its
        // proven static key; in XK it must also name the expected relay
        // (review H-1: a link key alone does not make a relay).
        let peer = match (authenticate(&noise, &payload)?, pattern, expect) {
            (PeerIdentity::Anonymous, ..) => return Err(LinkError::UnexpectedPeer),
            (PeerIdentity::Relay(id), LinkPattern::Xk, PeerExpectation::Known { relay_id, .. }) if id != relay_id => {
                return Err(LinkError::UnexpectedPeer)
            }
            (PeerIdentity::Relay(id), ..) => id,
        };
        write_frame(&mut noise, &auth.encode(), &mut self.out)?;
        self.state = State::Finished { noise, peer: PeerIdentity::Relay(peer) };
        Ok(used)
    }
}

/// Check a handshake payload against the peer's proven static key.
fn authenticate(noise: &NoiseHandshake, payload: &[u8]) -> Result<PeerIdentity, LinkError> {
    match LinkAuth::decode(payload)? {
        LinkAuth::Anonymous => Ok(PeerIdentity::Anonymous),
        LinkAuth::Relay(cert) => {
            let remote = noise.remote_static().ok_or(LinkError::State("no remote static key"))?;
            cert.verify(&remote)?;
            Ok(PeerIdentity::Relay(cert.relay_id))
        }
    }
}

/// Pattern → preamble code.
fn pattern_code(pattern: LinkPattern) -> u8 {
    match pattern {
        LinkPattern::Xk => 0x01,
        LinkPattern::Xx => 0x02,
    }
}

/// Preamble code → pattern.
fn pattern_from_code(code: u8) -> Result<LinkPattern, LinkError> {
    match code {
        0x01 => Ok(LinkPattern::Xk),
        0x02 => Ok(LinkPattern::Xx),
        _ => Err(LinkError::Protocol("unknown handshake pattern")),
    }
}

/// Split one frame off the front of `input`: `Ok(None)` if incomplete.
pub fn read_frame(input: &[u8]) -> Result<Option<(&[u8], usize)>, LinkError> {
    let mut r = Reader::new(input);
    let len = match r.u16() {
        Ok(len) => usize::from(len),
        Err(DecodeError::Incomplete { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    if len == 0 || len > MAX_FRAME_LEN - FRAME_HEADER_LEN {
        return Err(LinkError::Protocol("frame length out of range"));
    }
    match r.bytes(len) {
        Ok(frame) => Ok(Some((frame, FRAME_HEADER_LEN + len))),
        Err(DecodeError::Incomplete { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Read a handshake message and return its payload.
fn read_noise(noise: &mut NoiseHandshake, frame: &[u8]) -> Result<Vec<u8>, LinkError> {
    let mut payload = vec![0u8; frame.len()];
    let n = noise
        .read_message(frame, &mut payload)
        .map_err(|source| LinkError::Crypto { context: "handshake message", source })?;
    payload.truncate(n);
    Ok(payload)
}

/// Write a framed handshake message carrying `payload`.
fn write_frame(noise: &mut NoiseHandshake, payload: &[u8], out: &mut Vec<u8>) -> Result<(), LinkError> {
    let mut buf = vec![0u8; 1024];
    let n = noise
        .write_message(payload, &mut buf)
        .map_err(|source| LinkError::Crypto { context: "handshake write", source })?;
    let len = u16::try_from(n).map_err(|_| LinkError::State("handshake message too long"))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&buf[..n]);
    Ok(())
}

/// The sending half of an established link.
#[derive(Debug)]
pub struct LinkSender {
    /// Noise sending state.
    noise: NoiseSender,
    /// Encoding buffer for one batch, kept between calls (no allocation per write).
    plain: Vec<u8>,
}

impl LinkSender {
    /// Encrypt `cells` (whole encoded cells, 1..=[`MAX_BATCH_CELLS`]) as one
    /// frame appended to `out`.
    pub fn seal_encoded(&mut self, cells: &[u8], out: &mut Vec<u8>) -> Result<(), LinkError> {
        if cells.is_empty() || cells.len() % CELL_LEN != 0 || cells.len() > MAX_BATCH_CELLS * CELL_LEN {
            return Err(LinkError::State("batch is not 1..=64 whole cells"));
        }
        let start = out.len();
        let ct_len = cells.len() + NOISE_TAG_LEN;
        let len = u16::try_from(ct_len).map_err(|_| LinkError::State("frame too long"))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.resize(start + FRAME_HEADER_LEN + ct_len, 0);
        let n = self
            .noise
            .encrypt(cells, &mut out[start + FRAME_HEADER_LEN..])
            .map_err(|source| LinkError::Crypto { context: "transport encrypt", source })?;
        debug_assert_eq!(n, ct_len);
        Ok(())
    }

    /// Encode and encrypt `cells`, batching [`MAX_BATCH_CELLS`] per frame.
    pub fn seal_cells(&mut self, cells: &[Cell], out: &mut Vec<u8>) -> Result<(), LinkError> {
        let mut plain = std::mem::take(&mut self.plain);
        let mut result = Ok(());
        for chunk in cells.chunks(MAX_BATCH_CELLS) {
            plain.clear();
            for cell in chunk {
                cell.encode_into(&mut plain);
            }
            result = self.seal_encoded(&plain, out);
            if result.is_err() {
                break;
            }
        }
        self.plain = plain;
        result
    }
}

/// The receiving half of an established link.
pub struct LinkReceiver {
    /// Noise receiving state.
    noise: NoiseReceiver,
    /// Decryption buffer, allocated once.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for LinkReceiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkReceiver").field("noise", &self.noise).finish_non_exhaustive()
    }
}

impl LinkReceiver {
    /// Decrypt one frame from the front of `input`, appending its cells to
    /// `cells`. Returns bytes consumed, or `Ok(None)` if the frame is
    /// incomplete. Any failure is fatal to the link.
    pub fn open_frame(&mut self, input: &[u8], cells: &mut Vec<Cell>) -> Result<Option<usize>, LinkError> {
        let Some((frame, used)) = read_frame(input)? else {
            return Ok(None);
        };
        let n = self
            .noise
            .decrypt(frame, &mut self.scratch)
            .map_err(|source| LinkError::Crypto { context: "transport decrypt", source })?;
        let plain = &self.scratch[..n];
        if plain.is_empty() || plain.len() % CELL_LEN != 0 {
            return Err(LinkError::Protocol("frame is not a whole number of cells"));
        }
        for chunk in plain.chunks_exact(CELL_LEN) {
            cells.push(Cell::decode(chunk)?);
        }
        Ok(Some(used))
    }
}

#[cfg(test)]
mod tests;
