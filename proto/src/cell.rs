//! Cells: the fixed-size unit every link carries (spec §2).
//!
//! ```text
//! 0        4     5                                              512
//! +--------+-----+------------------------------------------------+
//! | circ   | cmd | payload (507 bytes)                            |
//! | u32 BE | u8  |                                                |
//! +--------+-----+------------------------------------------------+
//! ```
//!
//! Every relay sees the same cell size in both directions whatever its
//! position in a circuit. Circuit id 0 is reserved for link-level cells
//! (padding). Ids are per link: the link initiator allocates ids with the
//! top bit set, the responder ids with it clear (spec §2.3), so both ends
//! can open circuits on one link without collisions.

use lamina_crypto::handshake::{ONIONSKIN_LEN, REPLY_LEN};
use lamina_crypto::layer::BODY_LEN;

use crate::codec::{DecodeError, Reader};

/// Length of a cell on the wire.
pub const CELL_LEN: usize = 512;
/// Length of a cell's payload.
pub const PAYLOAD_LEN: usize = CELL_LEN - 5;
/// Handshake type of the ntor-shaped circuit handshake (spec §4).
pub const HANDSHAKE_NTOR_V1: u16 = 0x0001;

const _: () = assert!(PAYLOAD_LEN == BODY_LEN, "a relay cell body is the whole payload");

/// A circuit id, scoped to one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CircId(pub u32);

impl CircId {
    /// The link-level id: cells on it belong to no circuit.
    pub const LINK: Self = Self(0);
    /// The bit that marks ids allocated by the link's initiator.
    pub const INITIATOR_BIT: u32 = 0x8000_0000;
}

/// Cell commands (spec §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CellCommand {
    /// Link padding; ignored.
    Padding,
    /// Open a circuit: carries the client's onionskin.
    Create,
    /// The relay's handshake reply.
    Created,
    /// A layered relay cell.
    Relay,
    /// Tear a circuit down, with a reason.
    Destroy,
    /// A fragment of a directory message on circuit 0 (spec §2.6).
    Directory,
    /// A layered relay cell a relay counts: EXTEND travels only in these,
    /// and a circuit carries at most [`MAX_RELAY_EARLY`] (spec §7.6).
    RelayEarly,
}

/// Most RELAY_EARLY cells one circuit may carry (Tor's limit too): caps a
/// circuit at nine hops, whatever its client does.
pub const MAX_RELAY_EARLY: u8 = 8;

impl CellCommand {
    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            Self::Padding => 0x00,
            Self::Create => 0x01,
            Self::Created => 0x02,
            Self::Relay => 0x03,
            Self::Destroy => 0x04,
            Self::Directory => 0x05,
            Self::RelayEarly => 0x06,
        }
    }

    /// Parse a wire code.
    pub fn from_code(code: u8) -> Result<Self, DecodeError> {
        Ok(match code {
            0x00 => Self::Padding,
            0x01 => Self::Create,
            0x02 => Self::Created,
            0x03 => Self::Relay,
            0x04 => Self::Destroy,
            0x05 => Self::Directory,
            0x06 => Self::RelayEarly,
            _ => return Err(DecodeError::invalid("cell", "unknown command")),
        })
    }
}

/// Why a circuit was torn down (spec §2.5). Carried by DESTROY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestroyReason {
    /// No reason given.
    None,
    /// The peer violated the protocol (bad cell, failed authentication).
    Protocol,
    /// A local error on the sender's side.
    Internal,
    /// The client asked for it.
    Requested,
    /// A resource limit was hit.
    ResourceLimit,
    /// Extending to the next hop failed.
    ConnectFailed,
    /// The circuit finished normally.
    Finished,
    /// The circuit timed out.
    Timeout,
    /// The link or next hop went away.
    Destroyed,
}

impl DestroyReason {
    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Protocol => 1,
            Self::Internal => 2,
            Self::Requested => 3,
            Self::ResourceLimit => 4,
            Self::ConnectFailed => 5,
            Self::Finished => 6,
            Self::Timeout => 7,
            Self::Destroyed => 8,
        }
    }

    /// Parse a wire code; unknown codes read as `None` (forward compatible).
    pub fn from_code(code: u8) -> Self {
        match code {
            1 => Self::Protocol,
            2 => Self::Internal,
            3 => Self::Requested,
            4 => Self::ResourceLimit,
            5 => Self::ConnectFailed,
            6 => Self::Finished,
            7 => Self::Timeout,
            8 => Self::Destroyed,
            _ => Self::None,
        }
    }
}

/// One cell: circuit id, command and the fixed-size payload.
#[derive(Clone, PartialEq, Eq)]
pub struct Cell {
    /// The circuit this cell belongs to on this link.
    pub circ: CircId,
    /// What the cell does.
    pub command: CellCommand,
    /// The payload; for RELAY cells, the layered relay cell body.
    pub payload: [u8; PAYLOAD_LEN],
}

impl std::fmt::Debug for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Payload bytes are never printed (CONTRIBUTING.md P12).
        f.debug_struct("Cell").field("circ", &self.circ).field("command", &self.command).finish_non_exhaustive()
    }
}

impl Cell {
    /// A cell with an all-zero payload.
    pub fn new(circ: CircId, command: CellCommand) -> Self {
        Self { circ, command, payload: [0; PAYLOAD_LEN] }
    }

    /// A RELAY cell carrying `body`.
    pub fn relay(circ: CircId, body: [u8; PAYLOAD_LEN]) -> Self {
        Self { circ, command: CellCommand::Relay, payload: body }
    }

    /// A DESTROY cell with `reason`.
    pub fn destroy(circ: CircId, reason: DestroyReason) -> Self {
        let mut cell = Self::new(circ, CellCommand::Destroy);
        cell.payload[0] = reason.code();
        cell
    }

    /// A CREATE cell carrying `onionskin` (spec §2.4):
    /// `handshake type u16 | length u16 | onionskin | zero padding`.
    pub fn create(circ: CircId, onionskin: &[u8; ONIONSKIN_LEN]) -> Self {
        let mut cell = Self::new(circ, CellCommand::Create);
        cell.payload[..2].copy_from_slice(&HANDSHAKE_NTOR_V1.to_be_bytes());
        cell.payload[2..4].copy_from_slice(&u16::try_from(ONIONSKIN_LEN).unwrap_or(u16::MAX).to_be_bytes());
        cell.payload[4..4 + ONIONSKIN_LEN].copy_from_slice(onionskin);
        cell
    }

    /// A CREATED cell carrying `reply`: `length u16 | reply | zero padding`.
    pub fn created(circ: CircId, reply: &[u8; REPLY_LEN]) -> Self {
        let mut cell = Self::new(circ, CellCommand::Created);
        cell.payload[..2].copy_from_slice(&u16::try_from(REPLY_LEN).unwrap_or(u16::MAX).to_be_bytes());
        cell.payload[2..2 + REPLY_LEN].copy_from_slice(reply);
        cell
    }

    /// Encode into exactly [`CELL_LEN`] bytes appended to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.circ.0.to_be_bytes());
        out.push(self.command.code());
        out.extend_from_slice(&self.payload);
    }

    /// Decode one cell from the front of `bytes`.
    ///
    /// Short input is [`DecodeError::Incomplete`]; an unknown command is
    /// invalid. Payload contents are checked by the typed accessors.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let circ = CircId(r.u32()?);
        let code = r.u8()?;
        let payload = r.array::<PAYLOAD_LEN>()?;
        let command = CellCommand::from_code(code)?;
        Ok(Self { circ, command, payload })
    }

    /// The onionskin of a CREATE cell.
    pub fn create_onionskin(&self) -> Result<[u8; ONIONSKIN_LEN], DecodeError> {
        let mut r = Reader::new(&self.payload);
        let (htype, len) = (r.u16()?, usize::from(r.u16()?));
        if htype != HANDSHAKE_NTOR_V1 {
            return Err(DecodeError::invalid("create", "unknown handshake type"));
        }
        if len != ONIONSKIN_LEN {
            return Err(DecodeError::invalid("create", "wrong onionskin length"));
        }
        let skin = r.array::<ONIONSKIN_LEN>()?;
        r.expect_zero_padding("create")?;
        Ok(skin)
    }

    /// The reply of a CREATED cell.
    pub fn created_reply(&self) -> Result<[u8; REPLY_LEN], DecodeError> {
        let mut r = Reader::new(&self.payload);
        if usize::from(r.u16()?) != REPLY_LEN {
            return Err(DecodeError::invalid("created", "wrong reply length"));
        }
        let reply = r.array::<REPLY_LEN>()?;
        r.expect_zero_padding("created")?;
        Ok(reply)
    }

    /// The reason of a DESTROY cell.
    pub fn destroy_reason(&self) -> DestroyReason {
        DestroyReason::from_code(self.payload[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_round_trips_and_is_512_bytes() {
        let cell = Cell::create(CircId(0x8000_0001), &[7; ONIONSKIN_LEN]);
        let mut out = Vec::new();
        cell.encode_into(&mut out);
        assert_eq!(out.len(), CELL_LEN);
        assert_eq!(&out[..5], &[0x80, 0, 0, 1, 0x01]);
        let back = Cell::decode(&out).unwrap();
        assert_eq!(back, cell);
        assert_eq!(back.create_onionskin().unwrap(), [7; ONIONSKIN_LEN]);
    }

    #[test]
    fn short_cell_is_incomplete_and_unknown_command_invalid() {
        assert_eq!(Cell::decode(&[0; 100]).err(), Some(DecodeError::Incomplete { deficit: 412 }));
        let mut bytes = vec![0u8; CELL_LEN];
        bytes[4] = 0x77;
        assert_eq!(Cell::decode(&bytes).err(), Some(DecodeError::invalid("cell", "unknown command")));
    }

    #[test]
    fn create_payload_is_checked() {
        let mut cell = Cell::create(CircId(1), &[1; ONIONSKIN_LEN]);
        cell.payload[1] = 9;
        assert!(cell.create_onionskin().is_err());
        let mut cell = Cell::create(CircId(1), &[1; ONIONSKIN_LEN]);
        cell.payload[200] = 1;
        assert_eq!(cell.create_onionskin().err(), Some(DecodeError::invalid("create", "non-zero padding")));
        let cell = Cell::created(CircId(1), &[2; REPLY_LEN]);
        assert_eq!(cell.created_reply().unwrap(), [2; REPLY_LEN]);
    }
}
