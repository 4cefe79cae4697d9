//! Directory messages over a link (spec §2.6): a message of up to
//! [`MAX_DIR_MESSAGE`] bytes travels as DIRECTORY cells on circuit 0, each
//! carrying one fragment:
//!
//! ```text
//! +-------+-----------+----------------------+--------------+
//! | flags | len u16BE | fragment (len bytes) | zero padding |
//! +-------+-----------+----------------------+--------------+
//! flags: 0x01 = last fragment of the message; other bits zero
//! ```
//!
//! Relays gossip descriptors this way, and a client fetches a snapshot from
//! a seed it reached with an `XX` link before it knows any relay's keys.
//! The reassembler holds at most one message per link and refuses anything
//! longer than the limit, so a peer cannot make it allocate more.

use crate::cell::{Cell, CellCommand, CircId, PAYLOAD_LEN};
use crate::codec::{DecodeError, Reader};

/// Largest directory message carried over a link.
pub const MAX_DIR_MESSAGE: usize = 64 * 1024;
/// Fragment bytes per DIRECTORY cell.
pub const FRAGMENT_LEN: usize = PAYLOAD_LEN - 3;
/// Flag: last fragment.
const LAST: u8 = 0x01;

/// Split `message` into DIRECTORY cells; `None` if it is too long or empty.
pub fn fragment(message: &[u8]) -> Option<Vec<Cell>> {
    if message.is_empty() || message.len() > MAX_DIR_MESSAGE {
        return None;
    }
    let chunks: Vec<&[u8]> = message.chunks(FRAGMENT_LEN).collect();
    let last = chunks.len() - 1;
    let mut cells = Vec::with_capacity(chunks.len());
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut cell = Cell::new(CircId::LINK, CellCommand::Directory);
        cell.payload[0] = if i == last { LAST } else { 0 };
        let len = u16::try_from(chunk.len()).ok()?;
        cell.payload[1..3].copy_from_slice(&len.to_be_bytes());
        cell.payload[3..3 + chunk.len()].copy_from_slice(chunk);
        cells.push(cell);
    }
    Some(cells)
}

/// Reassembles directory messages from DIRECTORY cells.
#[derive(Debug, Default)]
pub struct Reassembler {
    /// The message being received.
    partial: Vec<u8>,
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add one DIRECTORY cell; returns a complete message when its last
    /// fragment arrives. A malformed fragment or an over-long message is an
    /// error (close the link) and clears the state.
    pub fn push(&mut self, cell: &Cell) -> Result<Option<Vec<u8>>, DecodeError> {
        let result = self.push_inner(cell);
        if result.is_err() {
            self.partial = Vec::new();
        }
        result
    }

    /// The checks and bookkeeping of [`push`](Self::push).
    fn push_inner(&mut self, cell: &Cell) -> Result<Option<Vec<u8>>, DecodeError> {
        if cell.command != CellCommand::Directory || cell.circ != CircId::LINK {
            return Err(DecodeError::invalid("directory cell", "not a directory cell on circuit 0"));
        }
        let mut r = Reader::new(&cell.payload);
        let flags = r.u8()?;
        if flags & !LAST != 0 {
            return Err(DecodeError::invalid("directory cell", "unknown flags"));
        }
        let fragment = r.bytes_u16_len("directory fragment", FRAGMENT_LEN)?;
        r.expect_zero_padding("directory cell")?;
        if fragment.is_empty() {
            return Err(DecodeError::invalid("directory cell", "empty fragment"));
        }
        if self.partial.len() + fragment.len() > MAX_DIR_MESSAGE {
            return Err(DecodeError::invalid("directory message", "longer than the limit"));
        }
        self.partial.extend_from_slice(fragment);
        if flags & LAST != 0 {
            return Ok(Some(std::mem::take(&mut self.partial)));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_cells() {
        for len in [1, FRAGMENT_LEN, FRAGMENT_LEN + 1, 10_000, MAX_DIR_MESSAGE] {
            let msg: Vec<u8> = (0..len).map(|i| u8::try_from(i % 256).unwrap()).collect();
            let cells = fragment(&msg).unwrap();
            assert_eq!(cells.len(), len.div_ceil(FRAGMENT_LEN));
            let mut r = Reassembler::new();
            let mut out = None;
            for c in &cells {
                out = r.push(c).unwrap();
            }
            assert_eq!(out.unwrap(), msg);
        }
        assert!(fragment(&[]).is_none());
        assert!(fragment(&vec![0; MAX_DIR_MESSAGE + 1]).is_none());
    }

    #[test]
    fn hostile_fragments_are_refused() {
        let mut r = Reassembler::new();
        let mut cell = fragment(&[1, 2, 3]).unwrap().remove(0);
        cell.payload[0] = 0x80;
        assert!(r.push(&cell).is_err());
        let mut cell = fragment(&[1, 2, 3]).unwrap().remove(0);
        cell.payload[100] = 1;
        assert!(r.push(&cell).is_err(), "non-zero padding");
        // A message that never ends stops at the limit.
        let mut chunk = fragment(&vec![9; FRAGMENT_LEN]).unwrap().remove(0);
        chunk.payload[0] = 0;
        let mut refused = false;
        for _ in 0..(MAX_DIR_MESSAGE / FRAGMENT_LEN + 2) {
            if r.push(&chunk).is_err() {
                refused = true;
                break;
            }
        }
        assert!(refused);
    }
}
