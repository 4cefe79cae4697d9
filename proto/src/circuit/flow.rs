//! Credit windows with receipt-proving acknowledgements (spec §8).
//!
//! Each side of a circuit and of each stream has a *send window*: DATA
//! cells it may still send. The receiver, after its consumer has taken
//! `increment` DATA cells, sends a SENDME carrying the layer tag of the
//! cell that completed the batch. The sender remembered the tags of the
//! cells that complete each batch and checks the SENDME against them in
//! constant time: a peer that did not receive the cells cannot produce the
//! tag, so it cannot open the window early and make us flood (Tor's
//! authenticated SENDME, proposal 289, with AEAD tags as the digest).
//!
//! Windows are tied to *consumption*, not receipt, so a slow reader never
//! makes a relay or client buffer more than one window per stream and per
//! circuit.

use std::collections::VecDeque;

use lamina_crypto::keys::ct_eq;
use lamina_crypto::layer::TAG_LEN;

/// Initial circuit-level window, in DATA cells.
pub const CIRCUIT_WINDOW_START: u32 = 2000;
/// Circuit-level SENDME increment.
pub const CIRCUIT_WINDOW_INCREMENT: u32 = 100;
/// Initial stream-level window, in DATA cells.
pub const STREAM_WINDOW_START: u32 = 1000;
/// Stream-level SENDME increment.
pub const STREAM_WINDOW_INCREMENT: u32 = 50;

/// The sending side of one window.
#[derive(Debug, Clone)]
pub struct SendWindow {
    /// DATA cells we may still send.
    window: u32,
    /// Cells per acknowledgement.
    increment: u32,
    /// Cells sent since the last recorded batch boundary.
    since_boundary: u32,
    /// Tags of cells that completed a batch, oldest first (bounded by
    /// start / increment entries).
    expected: VecDeque<[u8; TAG_LEN]>,
    /// The window's initial (and maximum) size.
    start: u32,
}

impl SendWindow {
    /// A window of `start` cells acknowledged every `increment`.
    pub fn new(start: u32, increment: u32) -> Self {
        Self { window: start, increment, since_boundary: 0, expected: VecDeque::new(), start }
    }

    /// Whether a DATA cell may be sent now.
    pub fn can_send(&self) -> bool {
        self.window > 0
    }

    /// Record a sent DATA cell whose layer tag was `tag`.
    pub fn on_send(&mut self, tag: [u8; TAG_LEN]) {
        self.window = self.window.saturating_sub(1);
        self.since_boundary += 1;
        if self.since_boundary == self.increment {
            self.since_boundary = 0;
            self.expected.push_back(tag);
        }
    }

    /// Check a SENDME's receipt and reopen the window.
    pub fn on_sendme(&mut self, tag: &[u8; TAG_LEN]) -> Result<(), &'static str> {
        let expected = self.expected.pop_front().ok_or("unexpected sendme")?;
        if !ct_eq(&expected, tag) {
            return Err("sendme receipt does not match");
        }
        self.window = self.window.saturating_add(self.increment).min(self.start);
        Ok(())
    }

    /// Cells we may still send.
    pub fn available(&self) -> u32 {
        self.window
    }
}

/// The receiving side of one window.
#[derive(Debug, Clone)]
pub struct RecvWindow {
    /// DATA cells the peer may still send us.
    window: u32,
    /// Cells per acknowledgement.
    increment: u32,
    /// Cells received since the last batch boundary.
    received_since: u32,
    /// Cells consumed but not yet acknowledged.
    consumed_since: u32,
    /// Tags of received cells that completed a batch, awaiting consumption.
    boundaries: VecDeque<[u8; TAG_LEN]>,
}

impl RecvWindow {
    /// A window of `start` cells acknowledged every `increment`.
    pub fn new(start: u32, increment: u32) -> Self {
        Self { window: start, increment, received_since: 0, consumed_since: 0, boundaries: VecDeque::new() }
    }

    /// Account a received DATA cell; fails if the peer overran the window.
    pub fn on_receive(&mut self, tag: [u8; TAG_LEN]) -> Result<(), &'static str> {
        if self.window == 0 {
            return Err("data beyond the window");
        }
        self.window -= 1;
        self.received_since += 1;
        if self.received_since == self.increment {
            self.received_since = 0;
            self.boundaries.push_back(tag);
        }
        Ok(())
    }

    /// Account a consumed DATA cell; returns the receipt to send in a
    /// SENDME when a batch is complete.
    pub fn on_consumed(&mut self) -> Option<[u8; TAG_LEN]> {
        self.consumed_since += 1;
        if self.consumed_since >= self.increment {
            let tag = self.boundaries.pop_front()?;
            self.consumed_since -= self.increment;
            self.window += self.increment;
            return Some(tag);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_closes_and_reopens_only_with_the_right_receipt() {
        let (mut send, mut recv) = (SendWindow::new(4, 2), RecvWindow::new(4, 2));
        for i in 0..4u8 {
            assert!(send.can_send());
            send.on_send([i; TAG_LEN]);
            recv.on_receive([i; TAG_LEN]).unwrap();
        }
        assert!(!send.can_send());
        assert_eq!(recv.on_receive([9; TAG_LEN]), Err("data beyond the window"));
        assert_eq!(recv.on_consumed(), None);
        let receipt = recv.on_consumed().unwrap();
        assert_eq!(receipt, [1; TAG_LEN]);
        assert_eq!(send.on_sendme(&[7; TAG_LEN]), Err("sendme receipt does not match"));
        // The mismatched receipt consumed the expectation: a second try is unexpected.
        let mut send2 = SendWindow::new(4, 2);
        send2.on_send([0; TAG_LEN]);
        send2.on_send([1; TAG_LEN]);
        send2.on_send([2; TAG_LEN]);
        send2.on_send([3; TAG_LEN]);
        send2.on_sendme(&receipt).unwrap();
        assert_eq!(send2.available(), 2);
        assert_eq!(send2.on_sendme(&[3; TAG_LEN]), Ok(()));
        assert_eq!(send2.on_sendme(&[3; TAG_LEN]), Err("unexpected sendme"));
    }
}
