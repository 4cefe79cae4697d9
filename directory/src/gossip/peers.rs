//! The peer table: connected peers by direction, bucketed by network block
//! (README "Peer buckets").
//!
//! An address belongs to the block of its first 16 bits (IPv4, a /16) or
//! first 32 bits (IPv6, a /32: a typical allocation to one provider). Each
//! direction has a total cap and a per-block cap, so an attacker holding a
//! few blocks — however many addresses and identities it has in them —
//! holds at most `blocks × per-block cap` slots. Outbound slots matter most
//! (we choose them, so they are our view of the network); they are filled by
//! choosing a *block* uniformly first and then a relay inside it (see
//! [`choose_outbound`]), so a block with a thousand relays is no likelier to
//! be chosen than a block with one.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};

use rand_core::RngCore;

use super::rate::Limiter;
use super::{uniform, Direction, PeerId};
use crate::wire::Message;

/// A network block: the unit of the per-block caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NetBlock {
    /// An IPv4 /16.
    V4([u8; 2]),
    /// An IPv6 /32.
    V6([u8; 4]),
}

impl NetBlock {
    /// The block of `addr` (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn of(addr: &SocketAddr) -> Self {
        match addr.ip() {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                Self::V4([o[0], o[1]])
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => {
                    let o = v4.octets();
                    Self::V4([o[0], o[1]])
                }
                None => {
                    let o = v6.octets();
                    Self::V6([o[0], o[1], o[2], o[3]])
                }
            },
        }
    }
}

/// The engine's state for one connected peer.
#[derive(Debug)]
pub(crate) struct PeerState {
    /// How the connection came about.
    pub(crate) direction: Direction,
    /// Messages waiting for `poll_transmit`.
    pub(crate) queue: VecDeque<Message>,
    /// Whether the peer is in the engine's ready list.
    pub(crate) in_ready: bool,
    /// Inbound rate limits.
    pub(crate) limiter: Limiter,
    /// When the connection was added (engine milliseconds).
    pub(crate) since_ms: u64,
}

/// Connected peers, ordered (deterministic iteration for reproducible
/// simulations).
#[derive(Debug, Default)]
pub(crate) struct PeerTable {
    /// The peers.
    pub(crate) peers: BTreeMap<PeerId, PeerState>,
}

impl PeerTable {
    /// Number of peers of `direction`.
    pub(crate) fn count(&self, direction: Direction) -> usize {
        self.peers.values().filter(|p| p.direction == direction).count()
    }

    /// Number of peers of `direction` in `block`.
    pub(crate) fn count_in_block(&self, direction: Direction, block: NetBlock) -> usize {
        self.peers.iter().filter(|(id, p)| p.direction == direction && NetBlock::of(&id.addr) == block).count()
    }

    /// A connected peer with relay id `relay`, if any.
    pub(crate) fn find_relay(&self, relay: &lamina_crypto::keys::RelayId) -> Option<PeerId> {
        self.peers.keys().find(|p| p.relay == *relay).copied()
    }

    /// Peers that take part in push gossip (not transient).
    pub(crate) fn gossip_peers(&self) -> Vec<PeerId> {
        self.peers.iter().filter(|(_, p)| p.direction != Direction::Transient).map(|(id, _)| *id).collect()
    }
}

/// Choose up to `need` outbound candidates: repeatedly draw a block
/// uniformly among blocks that still have room and candidates, then a
/// candidate uniformly inside it.
///
/// `eligible` lists candidates sorted by block (one relay id at most once);
/// `used` gives how many outbound slots (connected or being dialled) each
/// block already holds.
pub(crate) fn choose_outbound<R: RngCore>(
    rng: &mut R,
    eligible: &[(NetBlock, PeerId)],
    mut used: BTreeMap<NetBlock, usize>,
    per_block: usize,
    need: usize,
) -> Vec<PeerId> {
    // Index ranges of the blocks that still have room.
    let mut groups: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    while start < eligible.len() {
        let block = eligible[start].0;
        let len = eligible[start..].iter().take_while(|(b, _)| *b == block).count();
        if used.get(&block).copied().unwrap_or(0) < per_block {
            groups.push((start, start + len));
        }
        start += len;
    }
    let mut chosen: Vec<PeerId> = Vec::with_capacity(need);
    while chosen.len() < need && !groups.is_empty() {
        // Each pass either chooses a relay or retires a block: bounded.
        let g = uniform(rng, groups.len());
        let (lo, hi) = groups[g];
        let open: Vec<&(NetBlock, PeerId)> = eligible[lo..hi].iter().filter(|(_, p)| !chosen.contains(p)).collect();
        let Some(&&(block, pick)) = open.get(uniform(rng, open.len())) else {
            groups.swap_remove(g);
            continue;
        };
        chosen.push(pick);
        let in_block = used.entry(block).or_insert(0);
        *in_block += 1;
        if *in_block >= per_block || open.len() == 1 {
            groups.swap_remove(g);
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    /// /16 for IPv4 (and mapped IPv4), /32 for IPv6.
    #[test]
    fn blocks() {
        let a: SocketAddr = "10.1.2.3:1".parse().unwrap();
        let b: SocketAddr = "10.1.200.3:2".parse().unwrap();
        let c: SocketAddr = "10.2.2.3:1".parse().unwrap();
        let m: SocketAddr = "[::ffff:10.1.9.9]:1".parse().unwrap();
        assert_eq!(NetBlock::of(&a), NetBlock::of(&b));
        assert_ne!(NetBlock::of(&a), NetBlock::of(&c));
        assert_eq!(NetBlock::of(&a), NetBlock::of(&m));
        let x: SocketAddr = "[2001:db8:1::1]:1".parse().unwrap();
        let y: SocketAddr = "[2001:db8:ffff::1]:1".parse().unwrap();
        let z: SocketAddr = "[2001:db9::1]:1".parse().unwrap();
        assert_eq!(NetBlock::of(&x), NetBlock::of(&y));
        assert_ne!(NetBlock::of(&x), NetBlock::of(&z));
    }
}
