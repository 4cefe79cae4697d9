//! Fuzz target: the cell decoder (spec §2) and the typed payload accessors
//! must never panic, whatever bytes a link delivers.
//!
//! Checks, for every input:
//! - `Cell::decode` is deterministic and reports `Incomplete` exactly when
//!   fewer than 512 bytes arrived (a short input never counts as invalid);
//! - a decoded cell re-encodes to exactly the 512 bytes it came from;
//! - the CREATE / CREATED / DESTROY accessors never panic, and whatever they
//!   accept rebuilds the same payload through `Cell::create` / `Cell::created`.

#![no_main]

use lamina_proto::cell::{Cell, CellCommand, CELL_LEN};
use lamina_proto::codec::DecodeError;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let first = Cell::decode(data);
    assert_eq!(first, Cell::decode(data), "Cell::decode is deterministic");
    let cell = match first {
        Ok(cell) => cell,
        Err(DecodeError::Incomplete { deficit }) => {
            assert!(data.len() < CELL_LEN, "a whole cell is never incomplete");
            assert!(deficit > 0 && deficit <= CELL_LEN - data.len(), "deficit {deficit} for {} bytes", data.len());
            return;
        }
        Err(DecodeError::Invalid { .. }) => {
            assert!(data.len() >= CELL_LEN, "a short input is incomplete, not invalid");
            return;
        }
    };
    assert!(data.len() >= CELL_LEN);

    // Re-encoding gives back exactly the first 512 bytes.
    let mut out = Vec::new();
    cell.encode_into(&mut out);
    assert_eq!(out.as_slice(), &data[..CELL_LEN], "cell re-encodes to its input");
    assert_eq!(Cell::decode(&out).as_ref(), Ok(&cell));

    // The typed accessors never panic, whatever the command; what they
    // accept rebuilds the same payload.
    if let Ok(skin) = cell.create_onionskin() {
        let rebuilt = Cell::create(cell.circ, &skin);
        assert_eq!(rebuilt.payload, cell.payload, "CREATE payload round trips");
    }
    if let Ok(reply) = cell.created_reply() {
        let rebuilt = Cell::created(cell.circ, &reply);
        assert_eq!(rebuilt.payload, cell.payload, "CREATED payload round trips");
    }
    let reason = cell.destroy_reason();
    let rebuilt = Cell::destroy(cell.circ, reason);
    assert_eq!(rebuilt.destroy_reason(), reason, "DESTROY reason round trips");
    if cell.command == CellCommand::Destroy && cell.payload[0] <= 8 && cell.payload[1..].iter().all(|b| *b == 0) {
        assert_eq!(rebuilt, cell, "a canonical DESTROY rebuilds exactly");
    }
    // Debug never prints payload bytes, and never panics.
    let _ = format!("{cell:?}");
});
