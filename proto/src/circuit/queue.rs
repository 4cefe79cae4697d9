//! Per-circuit cell queues with memory accounting (spec §6.6), sans-IO.
//!
//! A relay never waits for another task's queue on the cell path. Instead,
//! every queue between tasks is a [`CircuitQueues`]: one FIFO per circuit,
//! served quietest first (EWMA circuit priority, below), with a bound per
//! circuit. A push never blocks: a
//! circuit that passes its bound is *killed* (its queued items are dropped,
//! later items for it are refused, and the consumer learns it through
//! [`CircuitQueues::take_killed`]), and the link itself is never stalled.
//!
//! Relay-wide memory is capped too (Tor's `MaxMemInQueues`): the driver sums
//! the queues' lengths, and when the sum passes the cap it asks
//! [`choose_victims`] which circuits to kill — those holding the most
//! queued data for the longest, the ones a stalled reader leaves behind.
//!
//! **Priority** (Tor's `CircuitPriorityHalflife`): every circuit keeps an
//! exponentially decaying count of the cells served from it (half-life
//! [`PRIORITY_HALFLIFE_MS`]); each turn goes to the ready circuit with the
//! smallest count, a quantum of cells at a time. A bulk download thus
//! yields to a web fetch that just started, whose first cells leave
//! before the bulk circuit's next quantum (spec §6.6).
//!
//! Time is an argument: `now_ms` is any monotonic millisecond count the
//! driver keeps (the age of an item is measured against it; the priority
//! clock is the latest `now_ms` pushed).

use std::collections::{HashMap, HashSet, VecDeque};

use crate::cell::CircId;

/// Largest congestion window, in DATA cells (`VegasParams::default().cwnd_max`,
/// spec §8.4): the most DATA cells an honest congestion-controlled sender
/// has in flight.
pub const MAX_CIRCUIT_WINDOW: usize = 16_384;

/// Default bound of one circuit's queue, in items: a full circuit window
/// plus room for control cells. An honest peer never passes it, because no
/// hop may have more than a window of DATA cells in flight (spec §8.1,
/// §8.4: the largest congestion window bounds a negotiated circuit, the
/// fixed 2,000-cell window the others).
pub const DEFAULT_CIRCUIT_QUEUE_ITEMS: usize = MAX_CIRCUIT_WINDOW + 256;

/// Most items taken from one circuit per turn.
const QUANTUM: usize = 32;

/// Half-life of a circuit's served-cells count (Tor's default
/// `CircuitPriorityHalflifeMsec`, 30 s).
pub const PRIORITY_HALFLIFE_MS: u64 = 30_000;

/// Fixed-point scale of a priority count: one served cell.
const SCORE_UNIT: u64 = 256;

/// Priority entries kept beyond those of circuits with queued items before
/// decayed entries are pruned (bounds the table on a link whose circuits
/// churn).
const SCORE_SLACK: usize = 1024;

/// A circuit's decaying served-cells count.
#[derive(Debug, Clone, Copy)]
struct Score {
    /// Count in [`SCORE_UNIT`]s as of `at_ms`.
    value: u64,
    /// When `value` was last decayed.
    at_ms: u64,
}

impl Score {
    /// The count decayed to `now_ms`: halved per half-life, linearly
    /// approximated within one (monotone, within 9% of the exponential).
    fn at(self, now_ms: u64) -> u64 {
        let elapsed = now_ms.saturating_sub(self.at_ms);
        let halvings = elapsed / PRIORITY_HALFLIFE_MS;
        if halvings >= 64 {
            return 0;
        }
        let v = self.value >> halvings;
        let rem = u128::from(elapsed % PRIORITY_HALFLIFE_MS);
        let cut = u128::from(v) * rem / u128::from(2 * PRIORITY_HALFLIFE_MS);
        v - u64::try_from(cut).unwrap_or(v)
    }
}

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// The item was queued.
    Queued,
    /// The circuit is dead (killed earlier, not yet forgotten): dropped.
    Dropped,
    /// The circuit passed its bound with this push: it was killed.
    Killed,
}

/// One circuit's FIFO.
#[derive(Debug)]
struct Fifo<T> {
    /// Items with the time they were queued.
    items: VecDeque<(u64, T)>,
}

/// The queues of one link direction: FIFOs per circuit, served round-robin.
#[derive(Debug)]
pub struct CircuitQueues<T> {
    /// Bound of one circuit's FIFO, in items.
    per_circuit: usize,
    /// The FIFOs of circuits with queued items.
    fifos: HashMap<CircId, Fifo<T>>,
    /// Circuits with queued items, in service order.
    ready: VecDeque<CircId>,
    /// Items served before any FIFO (DESTROYs of killed circuits).
    urgent: VecDeque<T>,
    /// Circuits killed and not yet forgotten: their items are dropped.
    dead: HashSet<CircId>,
    /// Circuits killed since the consumer last asked.
    killed: Vec<CircId>,
    /// Items queued in all (urgent ones included).
    len: usize,
    /// Served-cells counts for the priority (bounded: pruned past
    /// `fifos.len() + SCORE_SLACK` entries).
    scores: HashMap<CircId, Score>,
    /// The latest `now_ms` pushed: the priority clock.
    clock_ms: u64,
}

impl<T> CircuitQueues<T> {
    /// Empty queues bounding each circuit to `per_circuit` items (at least 1).
    pub fn new(per_circuit: usize) -> Self {
        Self {
            per_circuit: per_circuit.max(1),
            fifos: HashMap::new(),
            ready: VecDeque::new(),
            urgent: VecDeque::new(),
            dead: HashSet::new(),
            killed: Vec::new(),
            len: 0,
            scores: HashMap::new(),
            clock_ms: 0,
        }
    }

    /// Items queued in all.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Items queued for `circ`.
    pub fn circuit_len(&self, circ: CircId) -> usize {
        self.fifos.get(&circ).map_or(0, |f| f.items.len())
    }

    /// Queue `item` for circuit `circ` at time `now_ms`. Circuit 0 (link
    /// traffic such as gossip) is never killed: past its bound, new items
    /// are dropped instead.
    pub fn push(&mut self, now_ms: u64, circ: CircId, item: T) -> Pushed {
        self.clock_ms = self.clock_ms.max(now_ms);
        if self.dead.contains(&circ) {
            return Pushed::Dropped;
        }
        let fifo = self.fifos.entry(circ).or_insert_with(|| Fifo { items: VecDeque::new() });
        if fifo.items.len() >= self.per_circuit {
            if circ == CircId::LINK {
                return Pushed::Dropped;
            }
            self.kill(circ);
            return Pushed::Killed;
        }
        if fifo.items.is_empty() {
            self.ready.push_back(circ);
        }
        fifo.items.push_back((now_ms, item));
        self.len += 1;
        Pushed::Queued
    }

    /// Queue `item` ahead of every FIFO and drop whatever `circ` still had
    /// queued (a DESTROY makes the circuit's remaining cells useless).
    pub fn push_urgent(&mut self, circ: CircId, item: T) {
        self.drop_fifo(circ);
        self.urgent.push_back(item);
        self.len += 1;
    }

    /// Queue a control item ahead of every FIFO, never dropped. The caller
    /// bounds how many it sends (at most a few per circuit, spec §6.6).
    pub fn push_control(&mut self, item: T) {
        self.urgent.push_back(item);
        self.len += 1;
    }

    /// Kill `circ`: drop its queued items, refuse later ones until
    /// [`forget`](Self::forget), and report it through
    /// [`take_killed`](Self::take_killed). Returns how many items were freed.
    /// Circuit 0 is only emptied.
    pub fn kill(&mut self, circ: CircId) -> usize {
        let freed = self.drop_fifo(circ);
        if circ != CircId::LINK && self.dead.insert(circ) {
            self.killed.push(circ);
        }
        freed
    }

    /// Circuits killed since the last call (each reported once).
    pub fn take_killed(&mut self) -> Vec<CircId> {
        std::mem::take(&mut self.killed)
    }

    /// The consumer has closed `circ`: accept items for the id again (a
    /// new circuit may reuse it).
    pub fn forget(&mut self, circ: CircId) {
        self.dead.remove(&circ);
        self.scores.remove(&circ);
    }

    /// Move up to `max` items into `out`: urgent items first, then the
    /// circuits, quietest first (smallest decayed served count; ties in
    /// arrival order), at most a quantum each per turn. Returns how many.
    pub fn pop_batch(&mut self, max: usize, out: &mut Vec<T>) -> usize {
        let mut taken = 0;
        while taken < max {
            let Some(item) = self.urgent.pop_front() else { break };
            out.push(item);
            taken += 1;
        }
        while taken < max {
            let Some(circ) = self.take_quietest() else { break };
            let Some(fifo) = self.fifos.get_mut(&circ) else { continue };
            let turn = QUANTUM.min(max - taken);
            let mut served = 0u64;
            for _ in 0..turn {
                let Some((_, item)) = fifo.items.pop_front() else { break };
                out.push(item);
                served += 1;
            }
            taken += usize::try_from(served).unwrap_or(turn);
            if fifo.items.is_empty() {
                self.fifos.remove(&circ);
            } else {
                self.ready.push_back(circ);
            }
            let now = self.clock_ms;
            let score = self.scores.entry(circ).or_insert(Score { value: 0, at_ms: now });
            *score = Score { value: score.at(now).saturating_add(served * SCORE_UNIT), at_ms: now };
        }
        self.len -= taken;
        self.prune_scores();
        taken
    }

    /// Remove and return the ready circuit with the smallest decayed count.
    fn take_quietest(&mut self) -> Option<CircId> {
        let now = self.clock_ms;
        let scores = &self.scores;
        let best = self
            .ready
            .iter()
            .enumerate()
            .min_by_key(|(i, c)| (scores.get(*c).map_or(0, |s| s.at(now)), *i))
            .map(|(i, _)| i)?;
        self.ready.remove(best)
    }

    /// Keep the priority table bounded: past `fifos.len() + SCORE_SLACK`
    /// entries, drop those decayed to nothing, then those of idle circuits.
    fn prune_scores(&mut self) {
        if self.scores.len() <= self.fifos.len() + SCORE_SLACK {
            return;
        }
        let now = self.clock_ms;
        self.scores.retain(|_, s| s.at(now) > 0);
        if self.scores.len() > self.fifos.len() + SCORE_SLACK {
            let fifos = &self.fifos;
            self.scores.retain(|c, _| fifos.contains_key(c));
        }
    }

    /// The decayed served-cells count of `circ` (test and metrics view).
    pub fn priority_score(&self, circ: CircId) -> u64 {
        self.scores.get(&circ).map_or(0, |s| s.at(self.clock_ms) / SCORE_UNIT)
    }

    /// Every circuit with queued items (circuit 0 excluded): its id, the
    /// time its oldest item was queued, and how many items it holds.
    pub fn occupancy(&self) -> Vec<(CircId, u64, usize)> {
        self.fifos
            .iter()
            .filter(|(circ, _)| **circ != CircId::LINK)
            .filter_map(|(circ, f)| f.items.front().map(|(t, _)| (*circ, *t, f.items.len())))
            .collect()
    }

    /// Drop the FIFO of `circ`; returns how many items it held.
    fn drop_fifo(&mut self, circ: CircId) -> usize {
        let Some(fifo) = self.fifos.remove(&circ) else { return 0 };
        self.ready.retain(|c| *c != circ);
        let freed = fifo.items.len();
        self.len -= freed;
        freed
    }
}

/// Which circuits to kill to free at least `to_free` items (spec §6.6):
/// those holding the most memory for the longest first, scored by items
/// held × (age of the oldest item + 1 ms). A reader that stopped reading
/// leaves a circuit that is both full and old; a circuit with one control
/// cell waiting a few milliseconds behind a busy writer scores almost
/// nothing, so it is never killed before the circuits actually filling
/// memory. `candidates` are `(key, oldest_ms, items)` measured against
/// `now_ms`; the chosen keys are returned in kill order (ties: older first).
pub fn choose_victims<K>(mut candidates: Vec<(K, u64, usize)>, now_ms: u64, to_free: usize) -> Vec<K> {
    let score = |oldest: u64, items: usize| {
        let age = u128::from(now_ms.saturating_sub(oldest)) + 1;
        age * items as u128
    };
    candidates.sort_by(|a, b| score(b.1, b.2).cmp(&score(a.1, a.2)).then(a.1.cmp(&b.1)));
    let mut freed = 0;
    let mut victims = Vec::new();
    for (key, _, items) in candidates {
        if freed >= to_free {
            break;
        }
        freed += items;
        victims.push(key);
    }
    victims
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: u32) -> CircId {
        CircId(n)
    }

    #[test]
    fn a_quiet_circuit_is_served_before_a_busy_one() {
        let mut q = CircuitQueues::new(10_000);
        for i in 0..1000u32 {
            q.push(0, c(1), (1, i));
        }
        let mut out = Vec::new();
        q.pop_batch(500, &mut out);
        // A web fetch starts while the bulk circuit still has 500 queued.
        for i in 0..5u32 {
            q.push(1, c(2), (2, i));
        }
        out.clear();
        q.pop_batch(QUANTUM, &mut out);
        // Round-robin would serve circuit 1's next quantum first.
        assert!(out[..5].iter().all(|(k, _)| *k == 2), "the quiet circuit goes first: {out:?}");
        assert_eq!(q.priority_score(c(2)), 5);
        assert!(q.priority_score(c(1)) >= 499);
    }

    #[test]
    fn priority_decays_with_the_half_life() {
        let mut q = CircuitQueues::new(10_000);
        for i in 0..1024u32 {
            q.push(0, c(1), i);
        }
        let mut out = Vec::new();
        q.pop_batch(1024, &mut out);
        assert_eq!(q.priority_score(c(1)), 1024);
        q.push(PRIORITY_HALFLIFE_MS, c(9), 0);
        assert_eq!(q.priority_score(c(1)), 512);
        q.push(PRIORITY_HALFLIFE_MS * 70, c(9), 0);
        assert_eq!(q.priority_score(c(1)), 0);
        // Between half-lives the count falls monotonically.
        let s = Score { value: 1 << 20, at_ms: 0 };
        let mut last = u64::MAX;
        for t in (0..3 * PRIORITY_HALFLIFE_MS).step_by(1000) {
            assert!(s.at(t) <= last);
            last = s.at(t);
        }
    }

    #[test]
    fn the_priority_table_stays_bounded() {
        let mut q = CircuitQueues::new(10);
        let mut out = Vec::new();
        for n in 1..20_000u32 {
            q.push(0, c(n), n);
            q.pop_batch(1, &mut out);
        }
        assert!(q.scores.len() <= SCORE_SLACK + 1, "{} entries", q.scores.len());
    }

    #[test]
    fn round_robin_serves_every_circuit_in_turn() {
        let mut q = CircuitQueues::new(1000);
        for i in 0..100u32 {
            assert_eq!(q.push(0, c(1), (1, i)), Pushed::Queued);
        }
        for i in 0..3u32 {
            assert_eq!(q.push(0, c(2), (2, i)), Pushed::Queued);
        }
        let mut out = Vec::new();
        assert_eq!(q.pop_batch(40, &mut out), 40);
        // Circuit 2 is served after one quantum of circuit 1, not after 100.
        assert_eq!(out.iter().filter(|(k, _)| *k == 2).count(), 3);
        assert!(out[..QUANTUM].iter().all(|(k, _)| *k == 1));
        // FIFO order within a circuit.
        let ones: Vec<u32> = out.iter().filter(|(k, _)| *k == 1).map(|(_, i)| *i).collect();
        assert_eq!(ones, (0..37).collect::<Vec<_>>());
        assert_eq!(q.len(), 63);
    }

    #[test]
    fn a_circuit_past_its_bound_is_killed_and_others_are_untouched() {
        let mut q = CircuitQueues::new(10);
        for i in 0..10u32 {
            assert_eq!(q.push(u64::from(i), c(5), i), Pushed::Queued);
        }
        assert_eq!(q.push(0, c(7), 99), Pushed::Queued);
        assert_eq!(q.push(11, c(5), 10), Pushed::Killed);
        assert_eq!(q.circuit_len(c(5)), 0);
        assert_eq!(q.len(), 1);
        assert_eq!(q.take_killed(), vec![c(5)]);
        assert!(q.take_killed().is_empty(), "reported once");
        // Later items of the dead circuit are dropped, not queued.
        assert_eq!(q.push(12, c(5), 11), Pushed::Dropped);
        assert_eq!(q.len(), 1);
        let mut out = Vec::new();
        q.pop_batch(10, &mut out);
        assert_eq!(out, vec![99]);
        // Once forgotten, the id may be used again.
        q.forget(c(5));
        assert_eq!(q.push(13, c(5), 12), Pushed::Queued);
    }

    #[test]
    fn link_traffic_is_dropped_past_its_bound_never_killed() {
        let mut q = CircuitQueues::new(2);
        assert_eq!(q.push(0, CircId::LINK, 1), Pushed::Queued);
        assert_eq!(q.push(0, CircId::LINK, 2), Pushed::Queued);
        assert_eq!(q.push(0, CircId::LINK, 3), Pushed::Dropped);
        assert!(q.take_killed().is_empty());
        assert_eq!(q.len(), 2);
        assert!(q.occupancy().is_empty(), "circuit 0 is never a victim");
    }

    #[test]
    fn urgent_items_go_first_and_replace_the_circuit_backlog() {
        let mut q = CircuitQueues::new(100);
        for i in 0..5 {
            q.push(0, c(3), i);
        }
        q.push(0, c(4), 50);
        q.push_urgent(c(3), 1000);
        assert_eq!(q.len(), 2);
        q.push_control(2000);
        q.kill(c(9));
        assert_eq!(q.len(), 3, "kills never drop control items");
        let mut out = Vec::new();
        q.pop_batch(10, &mut out);
        assert_eq!(out, vec![1000, 2000, 50]);
        assert!(q.is_empty());
    }

    #[test]
    fn occupancy_reports_the_oldest_item() {
        let mut q = CircuitQueues::new(100);
        q.push(5, c(1), ());
        q.push(9, c(1), ());
        q.push(7, c(2), ());
        let mut occ = q.occupancy();
        occ.sort_by_key(|(circ, _, _)| circ.0);
        assert_eq!(occ, vec![(c(1), 5, 2), (c(2), 7, 1)]);
        // Killing frees the circuit's items.
        assert_eq!(q.kill(c(1)), 2);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn victims_hold_the_most_data_for_the_longest() {
        // (key, oldest item at ms, items), judged at 200 ms.
        let cands = vec![("new", 100, 50), ("old", 1, 10), ("mid", 50, 30)];
        // Scores: new 101 × 50 = 5,050; old 200 × 10 = 2,000; mid 151 × 30 = 4,530.
        assert_eq!(choose_victims(cands.clone(), 200, 0), Vec::<&str>::new());
        assert_eq!(choose_victims(cands.clone(), 200, 50), vec!["new"]);
        assert_eq!(choose_victims(cands.clone(), 200, 51), vec!["new", "mid"]);
        assert_eq!(choose_victims(cands, 200, 1000), vec!["new", "mid", "old"]);
    }

    #[test]
    fn a_circuit_with_one_waiting_cell_is_not_killed_before_a_stalled_one() {
        // The slow-reader attack on a loaded relay: 32 circuits each hold
        // one CREATED cell that has waited 120 ms for a busy writer, while
        // the attacker's stalled circuit holds 600 cells queued 100 ms ago.
        // Oldest-first would kill all 32 building circuits (freeing 32
        // cells) before touching the one that fills memory.
        let mut cands: Vec<(u32, u64, usize)> = (1..=32).map(|k| (k, 880, 1)).collect();
        cands.push((0, 900, 600));
        assert_eq!(choose_victims(cands, 1000, 500), vec![0]);
    }
}
