//! Gossip of epoch statements and of statement conflicts between relays
//! (spec §13.8).
//!
//! A relay that freezes a cut signs a statement about it
//! ([`crate::statement`]) and pushes it to `push_fanout` gossip peers; a
//! relay that receives a validly signed statement it did not hold keeps it
//! and forwards it the same way. Two different valid statements of one
//! relay for one epoch form a [`StatementConflict`]: the relay keeps the
//! proof, forwards it (`StatementConflict`, 0x10) and serves the proofs it
//! holds to clients before a snapshot, so a client that asks any honest
//! seed learns that the liar's vote is void.
//!
//! Bounds: statements are held only for the epochs from
//! `current − STATEMENT_EPOCHS` to `current + 1` and at most
//! [`MAX_STATEMENTS`] of them (oldest epoch dropped first); at most
//! [`MAX_CONFLICTS`] proofs are kept (oldest forgotten first). Statements
//! for other epochs, unsigned claims and invalid proofs are dropped and
//! counted; a relay with a held proof has its further statements ignored.

use std::collections::{BTreeMap, VecDeque};

use rand_core::{CryptoRng, RngCore};

use lamina_crypto::keys::RelayId;

use super::{GossipEngine, Now, PeerId};
use crate::snapshot::Epoch;
use crate::statement::{EpochStatement, StatementConflict};
use crate::wire::Message;

/// Most statements held (about 10 epochs of a 1,600-relay network, or
/// more than one epoch of 10,000 relays; 173 bytes each).
pub const MAX_STATEMENTS: usize = 16_384;
/// Most statement-conflict proofs held.
pub const MAX_CONFLICTS: usize = 1_024;
/// How many epochs back statements are accepted and kept.
pub const STATEMENT_EPOCHS: u64 = 4;
/// Most proofs served to a client before one snapshot.
pub const MAX_SERVED_PROOFS: usize = 16;

/// What a relay knows about other relays' statements.
#[derive(Debug, Default)]
pub(crate) struct StatementBook {
    /// Held statements by (epoch, relay): the oldest epoch sorts first.
    held: BTreeMap<(Epoch, RelayId), EpochStatement>,
    /// Proofs by relay.
    conflicts: BTreeMap<RelayId, StatementConflict>,
    /// Relays with a proof, oldest first (for eviction).
    order: VecDeque<RelayId>,
}

/// What offering a statement to the book did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Offered {
    /// New: kept; forward it.
    New,
    /// Already held, or its relay is already proven: nothing to do.
    Known,
    /// It conflicts with the held one: a new proof, kept; forward it.
    Conflict(Box<StatementConflict>),
}

impl StatementBook {
    /// Offer a statement whose signature was checked.
    pub(crate) fn offer(&mut self, s: EpochStatement) -> Offered {
        if self.conflicts.contains_key(&s.relay) {
            return Offered::Known;
        }
        match self.held.get(&(s.epoch, s.relay)) {
            Some(held) if *held == s => Offered::Known,
            Some(held) => match StatementConflict::of(held, &s) {
                Some(proof) => {
                    self.add_conflict(proof);
                    Offered::Conflict(Box::new(proof))
                }
                // Same content, another signature encoding: not news.
                None => Offered::Known,
            },
            None => {
                if self.held.len() >= MAX_STATEMENTS {
                    self.held.pop_first();
                }
                self.held.insert((s.epoch, s.relay), s);
                Offered::New
            }
        }
    }

    /// Keep a checked proof; false if one for that relay is held already.
    pub(crate) fn add_conflict(&mut self, proof: StatementConflict) -> bool {
        let relay = proof.first.relay;
        if self.conflicts.contains_key(&relay) {
            return false;
        }
        if self.order.len() >= MAX_CONFLICTS {
            if let Some(oldest) = self.order.pop_front() {
                self.conflicts.remove(&oldest);
            }
        }
        self.conflicts.insert(relay, proof);
        self.order.push_back(relay);
        true
    }

    /// Forget statements of epochs before `oldest`.
    pub(crate) fn expire(&mut self, oldest: Epoch) {
        self.held = self.held.split_off(&(oldest, RelayId([0; 32])));
    }
}

impl<R: RngCore + CryptoRng> GossipEngine<R> {
    /// Proofs that a relay signed two different statements for one epoch,
    /// newest first.
    pub fn statement_conflicts(&self) -> impl Iterator<Item = &StatementConflict> + '_ {
        self.statements.order.iter().rev().filter_map(|r| self.statements.conflicts.get(r))
    }

    /// The held proof against `relay`, if any.
    pub fn statement_conflict(&self, relay: &RelayId) -> Option<&StatementConflict> {
        self.statements.conflicts.get(relay)
    }

    /// The statement held from `relay` for `epoch` (ours included).
    pub fn held_statement(&self, relay: &RelayId, epoch: Epoch) -> Option<&EpochStatement> {
        self.statements.held.get(&(epoch, *relay))
    }

    /// The proofs served to a client before a snapshot (spec §13.8).
    pub fn served_proofs(&self) -> Vec<StatementConflict> {
        self.statement_conflicts().take(MAX_SERVED_PROOFS).copied().collect()
    }

    /// Our own statement was signed: keep it and push it to our peers.
    pub(super) fn gossip_own_statement(&mut self, s: EpochStatement) {
        if self.statements.offer(s) == Offered::New {
            self.stats.statements_gossiped += 1;
            self.fan_out(Message::Statement(s), None);
        }
    }

    /// A `Statement` from a relay peer.
    pub(super) fn handle_statement(&mut self, now: Now, from: PeerId, s: EpochStatement) {
        if !s.verify() {
            self.stats.bad_statements += 1;
            return;
        }
        self.offer_statement(now, Some(from), s);
    }

    /// Keep a checked statement if its epoch is held, forward it if new,
    /// and forward the proof if it conflicts with one held.
    fn offer_statement(&mut self, now: Now, from: Option<PeerId>, s: EpochStatement) {
        let cur = self.epoch(now);
        let oldest = Epoch(cur.0.saturating_sub(STATEMENT_EPOCHS));
        if s.epoch < oldest || s.epoch.0 > cur.0.saturating_add(1) {
            self.stats.bad_statements += 1;
            return;
        }
        self.statements.expire(oldest);
        match self.statements.offer(s) {
            Offered::Known => {}
            Offered::New => {
                self.stats.statements_gossiped += 1;
                self.fan_out(Message::Statement(s), from);
            }
            Offered::Conflict(proof) => {
                self.stats.statement_conflicts += 1;
                // The sender may not hold the other half: it gets the proof too.
                self.fan_out(Message::StatementConflict(proof), None);
            }
        }
    }

    /// A `StatementConflict` from a relay peer: check it, keep it if new,
    /// forward it.
    pub(super) fn handle_statement_conflict(&mut self, from: PeerId, proof: Box<StatementConflict>) {
        if !proof.is_valid() {
            self.stats.bad_statements += 1;
            return;
        }
        if self.statements.add_conflict(*proof) {
            self.stats.statement_conflicts += 1;
            self.fan_out(Message::StatementConflict(proof), Some(from));
        }
    }

    /// Queue `msg` for `push_fanout` random gossip peers other than `except`.
    fn fan_out(&mut self, msg: Message, except: Option<PeerId>) {
        for target in self.push_targets(except) {
            self.enqueue(target, msg.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::identity;

    /// A statement, its duplicate, a conflicting one (a proof, kept once),
    /// and the relay's later statements ignored; old epochs expire.
    #[test]
    fn book_detects_conflicts_and_is_bounded() {
        let mut book = StatementBook::default();
        let a = EpochStatement::sign(&identity(1), Epoch(7), [1; 32], 3, [0; 32]);
        let b = EpochStatement::sign(&identity(1), Epoch(7), [2; 32], 3, [0; 32]);
        assert_eq!(book.offer(a), Offered::New);
        assert_eq!(book.offer(a), Offered::Known);
        let Offered::Conflict(proof) = book.offer(b) else { panic!("no proof") };
        assert!(proof.is_valid());
        assert!(!book.add_conflict(*proof), "one proof per relay");
        let later = EpochStatement::sign(&identity(1), Epoch(8), [2; 32], 3, [1; 32]);
        assert_eq!(book.offer(later), Offered::Known, "a proven liar's statements are not kept");
        let other = EpochStatement::sign(&identity(2), Epoch(6), [2; 32], 3, [1; 32]);
        assert_eq!(book.offer(other), Offered::New);
        book.expire(Epoch(7));
        assert!(!book.held.contains_key(&(Epoch(6), identity(2).relay_id())));
        assert!(book.held.contains_key(&(Epoch(7), identity(1).relay_id())));
    }

    /// A proof travels as `StatementConflict` (0x10) and decodes to itself;
    /// a truncated one is refused.
    #[test]
    fn proof_on_the_wire() {
        let first = EpochStatement::sign(&identity(3), Epoch(9), [1; 32], 3, [0; 32]);
        let second = EpochStatement::sign(&identity(3), Epoch(9), [2; 32], 3, [0; 32]);
        let msg = Message::StatementConflict(Box::new(StatementConflict { first, second }));
        let bytes = msg.to_vec().expect("encode");
        assert_eq!(bytes.len(), msg.encoded_len());
        assert_eq!(bytes[0], 0x10);
        assert_eq!(Message::decode(&bytes), Ok(msg));
        assert!(Message::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    /// The proof map never holds more than [`MAX_CONFLICTS`] proofs.
    #[test]
    fn conflicts_are_bounded() {
        let mut book = StatementBook::default();
        for i in 0..MAX_CONFLICTS + 3 {
            let mut first = EpochStatement::sign(&identity(1), Epoch(7), [1; 32], 3, [0; 32]);
            // Distinct relay keys: the proofs are not checked here.
            first.relay = RelayId([0; 32]);
            first.relay.0[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let mut second = first;
            second.root = [2; 32];
            assert!(book.add_conflict(StatementConflict { first, second }));
        }
        assert_eq!(book.conflicts.len(), MAX_CONFLICTS);
        assert_eq!(book.order.len(), MAX_CONFLICTS);
    }
}
