//! Unpredictable padding for the relay cells a relay originates (spec §7.1,
//! §8.2; review L-2).
//!
//! A SENDME proves receipt by echoing the tag of a backward cell. The client
//! holds every hop's keys, so if it could predict a cell's whole plaintext it
//! could compute that tag without reading the cell, and open windows it never
//! earned. Short messages leave most of a cell as padding: filling it with a
//! keystream under a key only this relay holds makes the plaintext, and so
//! the tag, unpredictable to everyone but the relay (Tor's proposal 289 asks
//! the same of relay cells).
//!
//! One source per circuit hop: a ChaCha20 key drawn from the caller's RNG
//! when the hop is created and a counter used as the nonce, one per cell.
//! 40 bytes per hop; nothing is allocated per cell.

use std::fmt;

use chacha20::cipher::{KeyIvInit, StreamCipher};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

/// A keystream for padding, known only to the relay that made it.
pub struct PaddingSource {
    /// The ChaCha20 key (zeroized on drop).
    key: Zeroizing<[u8; 32]>,
    /// Cells padded so far: the nonce of the next one.
    counter: u64,
}

impl PaddingSource {
    /// A fresh source keyed from `rng`.
    pub fn new<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(key.as_mut());
        Self { key, counter: 0 }
    }

    /// Overwrite `out` with the next cell's padding.
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&self.counter.to_le_bytes());
        self.counter = self.counter.wrapping_add(1);
        out.fill(0);
        let mut stream = chacha20::ChaCha20::new(self.key.as_ref().into(), (&nonce).into());
        stream.apply_keystream(out);
    }
}

impl fmt::Debug for PaddingSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaddingSource").field("counter", &self.counter).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn padding_differs_per_cell_and_per_source() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let (mut a, mut b) = (PaddingSource::new(&mut rng), PaddingSource::new(&mut rng));
        let (mut x, mut y, mut z) = ([0u8; 64], [0u8; 64], [0u8; 64]);
        a.fill(&mut x);
        a.fill(&mut y);
        b.fill(&mut z);
        assert_ne!(x, [0u8; 64], "padding is not zero");
        assert_ne!(x, y, "each cell gets fresh padding");
        assert_ne!(x, z, "each hop has its own key");
    }

    #[test]
    fn debug_shows_no_key() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let p = PaddingSource::new(&mut rng);
        let shown = format!("{p:?}");
        assert!(!shown.contains("key"), "{shown}");
    }
}
