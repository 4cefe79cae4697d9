//! Signed epoch statements (spec §13.7): "for epoch `e` I serve `root` over
//! `count` descriptors, and my previous served root was `previous_root`",
//! signed with the relay's identity key.
//!
//! ```text
//! relay id [32] | epoch u64 | root [32] | count u32 | previous root [32]
//! | signature [64]      Ed25519 over len | "lamina-epoch-statement-v1" | body
//! ```
//!
//! Two valid statements of one relay for one epoch that differ are a
//! [`StatementConflict`]: a transferable proof that the relay served two
//! directories for the same epoch. A client keeps the [`ChainHead`] it
//! accepted and checks that the next statement continues it.
//!
//! This module is the format and its checks; statements are served with
//! snapshots (spec §13.7) and gossiped between relays, with their conflicts,
//! by [`crate::gossip`] (spec §13.8).

use lamina_crypto::keys::{IdentityKeypair, RelayId, Signature, KEY_LEN, SIGNATURE_LEN};
use lamina_crypto::sign::{sign_with_context, verify_with_context};
use lamina_proto::codec::{Reader, Writer};

use crate::error::WireError;
use crate::snapshot::Epoch;
use crate::wire::wire_err;

/// Signature context of epoch statements.
pub const STATEMENT_CONTEXT: &[u8] = b"lamina-epoch-statement-v1";
/// Length of the signed body.
const BODY_LEN: usize = KEY_LEN + 8 + 32 + 4 + 32;
/// Length of an encoded statement.
pub const STATEMENT_LEN: usize = BODY_LEN + SIGNATURE_LEN;

/// A relay's signed statement about the snapshot it serves for an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochStatement {
    /// The signing relay.
    pub relay: RelayId,
    /// The epoch.
    pub epoch: Epoch,
    /// The Merkle root served for it.
    pub root: [u8; 32],
    /// How many descriptors the snapshot holds.
    pub count: u32,
    /// The root the relay served for the epoch before (zeros if none).
    pub previous_root: [u8; 32],
    /// Ed25519 signature over the context and the body.
    pub signature: Signature,
}

impl EpochStatement {
    /// Sign a statement with `identity`.
    pub fn sign(identity: &IdentityKeypair, epoch: Epoch, root: [u8; 32], count: u32, previous_root: [u8; 32]) -> Self {
        let relay = identity.relay_id();
        let body = body(&relay, epoch, &root, count, &previous_root);
        let signature = sign_with_context(identity, STATEMENT_CONTEXT, &body);
        Self { relay, epoch, root, count, previous_root, signature }
    }

    /// Whether the signature is the relay's.
    pub fn verify(&self) -> bool {
        let body = body(&self.relay, self.epoch, &self.root, self.count, &self.previous_root);
        verify_with_context(&self.relay, STATEMENT_CONTEXT, &body, &self.signature).is_ok()
    }

    /// The encoding (see the module documentation).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = body(&self.relay, self.epoch, &self.root, self.count, &self.previous_root);
        out.extend_from_slice(&self.signature.0);
        out
    }

    /// Decode exactly one statement (the signature is not checked: see
    /// [`EpochStatement::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        if bytes.len() != STATEMENT_LEN {
            return Err(WireError::Malformed { what: "epoch statement", reason: "wrong length" });
        }
        let mut r = Reader::new(bytes);
        let statement = Self {
            relay: RelayId(r.array::<KEY_LEN>().map_err(wire_err)?),
            epoch: Epoch(r.u64().map_err(wire_err)?),
            root: r.array::<32>().map_err(wire_err)?,
            count: r.u32().map_err(wire_err)?,
            previous_root: r.array::<32>().map_err(wire_err)?,
            signature: Signature(r.array::<SIGNATURE_LEN>().map_err(wire_err)?),
        };
        Ok(statement)
    }
}

/// The signed body.
fn body(relay: &RelayId, epoch: Epoch, root: &[u8; 32], count: u32, previous_root: &[u8; 32]) -> Vec<u8> {
    let mut w = Writer::with_capacity(BODY_LEN);
    w.put_bytes(relay.as_bytes());
    w.put_u64(epoch.0);
    w.put_bytes(root);
    w.put_u32(count);
    w.put_bytes(previous_root);
    w.into_vec()
}

/// Proof that one relay signed two different statements for one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatementConflict {
    /// One statement.
    pub first: EpochStatement,
    /// The other.
    pub second: EpochStatement,
}

impl StatementConflict {
    /// The proof formed by `a` and `b`, if they are one: same relay, same
    /// epoch, different content, both validly signed.
    pub fn of(a: &EpochStatement, b: &EpochStatement) -> Option<Self> {
        let differ = (a.root, a.count, a.previous_root) != (b.root, b.count, b.previous_root);
        (a.relay == b.relay && a.epoch == b.epoch && differ && a.verify() && b.verify())
            .then_some(Self { first: *a, second: *b })
    }

    /// Check the proof again (for one received from someone else).
    pub fn is_valid(&self) -> bool {
        Self::of(&self.first, &self.second).is_some()
    }
}

/// The newest epoch and root a client accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainHead {
    /// Its epoch.
    pub epoch: Epoch,
    /// Its root.
    pub root: [u8; 32],
}

/// How a new statement relates to the held chain head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continuity {
    /// The next epoch, and its previous root is the held root.
    Extends,
    /// The same epoch and root as held.
    Same,
    /// A later epoch whose previous root is not the held root: epochs were
    /// missed, or the seed's chain differs from ours (log it).
    Gap,
    /// The same epoch with another root: the seeds disagree.
    Conflict,
    /// An epoch older than the held one.
    Older,
}

impl ChainHead {
    /// Relate `next` to this head.
    pub fn check(&self, next: &EpochStatement) -> Continuity {
        match next.epoch.cmp(&self.epoch) {
            std::cmp::Ordering::Less => Continuity::Older,
            std::cmp::Ordering::Equal if next.root == self.root => Continuity::Same,
            std::cmp::Ordering::Equal => Continuity::Conflict,
            std::cmp::Ordering::Greater
                if next.epoch.0 == self.epoch.0.saturating_add(1) && next.previous_root == self.root =>
            {
                Continuity::Extends
            }
            std::cmp::Ordering::Greater => Continuity::Gap,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::identity;

    /// Sign, encode, decode, verify; any changed byte breaks the signature
    /// or the decoding.
    #[test]
    fn round_trip_and_tamper() {
        let s = EpochStatement::sign(&identity(1), Epoch(7), [1; 32], 20, [2; 32]);
        assert!(s.verify());
        let bytes = s.encode();
        assert_eq!(bytes.len(), STATEMENT_LEN);
        assert_eq!(EpochStatement::decode(&bytes), Ok(s));
        for i in [0, 33, 50, 75, 90, STATEMENT_LEN - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            assert!(EpochStatement::decode(&bad).is_ok_and(|d| !d.verify()), "byte {i}");
        }
        assert!(EpochStatement::decode(&bytes[1..]).is_err());
        let mut long = bytes;
        long.push(0);
        assert!(EpochStatement::decode(&long).is_err());
    }

    /// Two different statements for one epoch by one relay are a proof;
    /// the same statement twice, other epochs or other relays are not.
    #[test]
    fn conflicts() {
        let a = EpochStatement::sign(&identity(1), Epoch(7), [1; 32], 20, [2; 32]);
        let b = EpochStatement::sign(&identity(1), Epoch(7), [3; 32], 20, [2; 32]);
        let proof = StatementConflict::of(&a, &b).expect("a proof");
        assert!(proof.is_valid());
        assert!(StatementConflict::of(&a, &a).is_none());
        let later = EpochStatement::sign(&identity(1), Epoch(8), [3; 32], 20, [1; 32]);
        assert!(StatementConflict::of(&a, &later).is_none());
        let other = EpochStatement::sign(&identity(2), Epoch(7), [3; 32], 20, [2; 32]);
        assert!(StatementConflict::of(&a, &other).is_none());
        let mut forged = b;
        forged.signature.0[0] ^= 1;
        assert!(StatementConflict::of(&a, &forged).is_none(), "an unsigned claim proves nothing");
    }

    /// Continuity of a client's chain head.
    #[test]
    fn chain_continuity() {
        let head = ChainHead { epoch: Epoch(7), root: [1; 32] };
        let s = |e, root, prev| EpochStatement::sign(&identity(1), Epoch(e), [root; 32], 1, [prev; 32]);
        assert_eq!(head.check(&s(8, 2, 1)), Continuity::Extends);
        assert_eq!(head.check(&s(7, 1, 0)), Continuity::Same);
        assert_eq!(head.check(&s(7, 2, 0)), Continuity::Conflict);
        assert_eq!(head.check(&s(8, 2, 9)), Continuity::Gap);
        assert_eq!(head.check(&s(10, 2, 1)), Continuity::Gap);
        assert_eq!(head.check(&s(6, 2, 1)), Continuity::Older);
    }
}
