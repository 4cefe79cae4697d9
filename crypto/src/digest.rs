//! SHA-256 helpers for content addressing, Merkle trees and proof of work.
//!
//! The directory crate hashes descriptors (Merkle leaves, anti-entropy
//! digests, a cache key for verification results) and checks a hashcash-style
//! proof of work bound to a relay identity. It may not name `sha2` itself
//! (only this crate names primitive crates, CONTRIBUTING.md A.3), so the few hashing
//! primitives it needs live here:
//!
//! - [`sha256`]: SHA-256 over the concatenation of several byte strings, so
//!   callers can prepend a domain-separation tag without copying;
//! - [`leading_zero_bits`]: the number of leading zero bits of a digest, the
//!   work measure of a hashcash proof.

use sha2::{Digest as _, Sha256};

/// Length of a SHA-256 digest in bytes.
pub const SHA256_LEN: usize = 32;

/// SHA-256 of `parts[0] | parts[1] | …` (concatenation, no separators).
///
/// Callers that hash structured data must make the split unambiguous
/// themselves (fixed-length fields, or a tag byte first), as the Merkle and
/// proof-of-work constructions of the directory do.
pub fn sha256(parts: &[&[u8]]) -> [u8; SHA256_LEN] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().into()
}

/// Number of leading zero bits of `digest`, read big-endian (bit 7 of byte 0
/// first). A hashcash proof "of difficulty D" is a digest with at least D
/// leading zero bits; finding one costs about 2^D hash evaluations.
pub fn leading_zero_bits(digest: &[u8]) -> u32 {
    let mut bits = 0;
    for byte in digest {
        if *byte == 0 {
            bits += 8;
        } else {
            bits += byte.leading_zeros();
            break;
        }
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    /// FIPS 180-2 test vector "abc", split across parts.
    #[test]
    fn sha256_of_parts_is_sha256_of_concatenation() {
        let expected = hex::decode("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad").unwrap();
        assert_eq!(sha256(&[b"abc"]).to_vec(), expected);
        assert_eq!(sha256(&[b"a", b"", b"bc"]).to_vec(), expected);
    }

    /// Leading zero bits count whole zero bytes, then the first non-zero byte.
    #[test]
    fn leading_zero_bits_counts_across_bytes() {
        assert_eq!(leading_zero_bits(&[0x80, 0]), 0);
        assert_eq!(leading_zero_bits(&[0x0f, 0xff]), 4);
        assert_eq!(leading_zero_bits(&[0, 0x01]), 15);
        assert_eq!(leading_zero_bits(&[0, 0]), 16);
        assert_eq!(leading_zero_bits(&[]), 0);
    }
}
