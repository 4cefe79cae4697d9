//! The seen-set: descriptor hashes processed recently, bounded in size and
//! time (the gossipsub `time_cache` idea, CONTRIBUTING.md A.3).
//!
//! Every descriptor the engine processes — accepted, duplicate, stale or
//! rejected — is remembered here for `ttl`, so a copy arriving again is
//! discarded before any store lookup or verification, and nothing is ever
//! forwarded twice. When full, the oldest hash is forgotten first; a
//! forgotten hash costs at most one more cheap store lookup, because the
//! store itself recognises duplicates and stale copies.

use std::collections::{HashMap, VecDeque};

use crate::descriptor::DescriptorHash;

/// Bounded, time-expiring set of descriptor hashes.
#[derive(Debug)]
pub(crate) struct SeenCache {
    /// Hash → expiry (engine milliseconds).
    map: HashMap<DescriptorHash, u64>,
    /// (expiry, hash) in insertion order; may hold outdated pairs, which
    /// are skipped when they no longer match `map`.
    order: VecDeque<(u64, DescriptorHash)>,
    /// Most hashes remembered.
    cap: usize,
    /// Lifetime of an entry.
    ttl_ms: u64,
}

impl SeenCache {
    /// An empty cache.
    pub(crate) fn new(cap: usize, ttl_ms: u64) -> Self {
        Self { map: HashMap::new(), order: VecDeque::new(), cap, ttl_ms }
    }

    /// Whether `hash` was seen and has not expired.
    pub(crate) fn contains(&self, hash: &DescriptorHash, now_ms: u64) -> bool {
        self.map.get(hash).is_some_and(|expiry| *expiry > now_ms)
    }

    /// Remember `hash` until `now + ttl`.
    pub(crate) fn insert(&mut self, hash: DescriptorHash, now_ms: u64) {
        if self.cap == 0 {
            return;
        }
        self.purge(now_ms);
        let expiry = now_ms.saturating_add(self.ttl_ms);
        self.map.insert(hash, expiry);
        self.order.push_back((expiry, hash));
        while self.map.len() > self.cap || self.order.len() > self.cap.saturating_mul(2) {
            let Some((e, h)) = self.order.pop_front() else { break };
            if self.map.get(&h) == Some(&e) {
                self.map.remove(&h);
            }
        }
    }

    /// Forget expired hashes.
    pub(crate) fn purge(&mut self, now_ms: u64) {
        while let Some((e, h)) = self.order.front().copied() {
            if e > now_ms {
                break;
            }
            self.order.pop_front();
            if self.map.get(&h) == Some(&e) {
                self.map.remove(&h);
            }
        }
    }

    /// Number of hashes remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Entries expire after the ttl and the size stays within the cap.
    #[test]
    fn bounded_in_time_and_size() {
        let mut s = SeenCache::new(2, 100);
        s.insert(DescriptorHash([1; 32]), 0);
        assert!(s.contains(&DescriptorHash([1; 32]), 99));
        assert!(!s.contains(&DescriptorHash([1; 32]), 100));
        s.insert(DescriptorHash([2; 32]), 10);
        s.insert(DescriptorHash([3; 32]), 20);
        s.insert(DescriptorHash([4; 32]), 30);
        assert!(s.len() <= 2);
        assert!(s.contains(&DescriptorHash([4; 32]), 30));
        s.purge(1000);
        assert_eq!(s.len(), 0);
    }
}
