//! Merkle hashing of a sorted descriptor set (README "Merkle construction").
//!
//! ```text
//! leaf  = SHA-256(0x00 | descriptor bytes)            (DescriptorHash)
//! node  = SHA-256(0x01 | left | right)
//! level = pair up left to right; an odd last node is promoted unchanged
//! root  = the single node left; the empty set's root is SHA-256("lamina-empty")
//! ```
//!
//! The tag bytes separate leaves from inner nodes, so a leaf can never be
//! passed off as a subtree (second-preimage attacks on naive Merkle trees).
//! Promoting the odd node instead of duplicating it avoids the
//! duplicated-last-leaf ambiguity that made two different sets share a root
//! in Bitcoin (CVE-2012-2459).
//!
//! The anti-entropy *digest root* is a second, two-level construction over
//! the same leaves, cheap to keep current under updates:
//!
//! ```text
//! bucket b      = first 16 bytes of the Merkle root of the leaves whose
//!                 relay id starts with byte b (256 buckets)
//! digest root   = SHA-256("lamina-digest-v1" | bucket 0 | … | bucket 255)
//! ```

use lamina_crypto::digest::sha256;

use crate::descriptor::DescriptorHash;

/// Number of anti-entropy buckets: one per value of a relay id's first byte.
pub const BUCKETS: usize = 256;
/// Length of a truncated bucket hash.
pub const BUCKET_HASH_LEN: usize = 16;
/// Root of the empty set is SHA-256 of this string.
pub const EMPTY_ROOT_INPUT: &[u8] = b"lamina-empty";
/// Domain-separation prefix of the digest root.
pub const DIGEST_ROOT_CONTEXT: &[u8] = b"lamina-digest-v1";
/// Tag byte of an inner node.
const NODE_TAG: u8 = 0x01;

/// A truncated per-bucket Merkle root.
pub type BucketHash = [u8; BUCKET_HASH_LEN];

/// The Merkle root of `leaves`, in the given (sorted) order.
pub fn merkle_root(leaves: &[DescriptorHash]) -> [u8; 32] {
    if leaves.is_empty() {
        return sha256(&[EMPTY_ROOT_INPUT]);
    }
    let mut level: Vec<[u8; 32]> = leaves.iter().map(|h| h.0).collect();
    while level.len() > 1 {
        let mut next = Vec::with_capacity(level.len().div_ceil(2));
        for pair in level.chunks(2) {
            match pair {
                [left, right] => next.push(sha256(&[&[NODE_TAG], left, right])),
                [odd] => next.push(*odd),
                _ => {}
            }
        }
        level = next;
    }
    level.first().copied().unwrap_or_else(|| sha256(&[EMPTY_ROOT_INPUT]))
}

/// The truncated Merkle root of one bucket's leaves.
pub fn bucket_hash(leaves: &[DescriptorHash]) -> BucketHash {
    let root = merkle_root(leaves);
    let mut out = [0u8; BUCKET_HASH_LEN];
    out.copy_from_slice(&root[..BUCKET_HASH_LEN]);
    out
}

/// The digest root over all bucket hashes.
pub fn digest_root(buckets: &[BucketHash; BUCKETS]) -> [u8; 32] {
    let mut parts: Vec<&[u8]> = Vec::with_capacity(BUCKETS + 1);
    parts.push(DIGEST_ROOT_CONTEXT);
    parts.extend(buckets.iter().map(|b| b.as_slice()));
    sha256(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Helper: a leaf from one byte.
    fn leaf(b: u8) -> DescriptorHash {
        DescriptorHash([b; 32])
    }

    /// Helper: an inner node.
    fn node(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
        sha256(&[&[NODE_TAG], l, r])
    }

    /// The empty root is SHA-256("lamina-empty"); one leaf is its own root.
    #[test]
    fn empty_and_single() {
        assert_eq!(merkle_root(&[]), sha256(&[b"lamina-empty"]));
        assert_eq!(merkle_root(&[leaf(1)]), [1; 32]);
    }

    /// Three leaves: the odd third is promoted, not duplicated.
    #[test]
    fn odd_node_is_promoted() {
        let ab = node(&[1; 32], &[2; 32]);
        assert_eq!(merkle_root(&[leaf(1), leaf(2), leaf(3)]), node(&ab, &[3; 32]));
        // With duplication, [1,2,3] and [1,2,3,3] would collide; here they differ.
        assert_ne!(merkle_root(&[leaf(1), leaf(2), leaf(3)]), merkle_root(&[leaf(1), leaf(2), leaf(3), leaf(3)]));
    }

    /// Five leaves: ((12)(34))5.
    #[test]
    fn five_leaves() {
        let l12 = node(&[1; 32], &[2; 32]);
        let l34 = node(&[3; 32], &[4; 32]);
        let expected = node(&node(&l12, &l34), &[5; 32]);
        assert_eq!(merkle_root(&[leaf(1), leaf(2), leaf(3), leaf(4), leaf(5)]), expected);
    }
}
