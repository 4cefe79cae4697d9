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
use std::time::Instant;

use lamina_crypto::keys::ct_eq;
use lamina_crypto::layer::TAG_LEN;

use super::congestion::{
    CongestionControl, CongestionError, FlowAdvisory, FlowParams, SendmeReceipts, StreamRecvEdge, StreamSendEdge,
    VegasParams,
};

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

/// Stream bytes one DATA cell counts for at a stream edge (spec §8.5):
/// edges count cells, not their lengths, so a peer sending one-byte cells
/// cannot hold more cells than a full-sized buffer would.
pub const EDGE_CELL_BYTES: u64 = 498;

/// DATA cells a stream edge may hold before the peer broke the protocol:
/// `FlowParams::default().hard_cap_bytes / EDGE_CELL_BYTES` (spec §8.5).
/// Drivers size their per-stream channels by it (a fixed-window stream
/// holds at most `STREAM_WINDOW_START`, fewer).
pub const EDGE_HARD_CAP_CELLS: usize = 2_048 + 16_384;

/// A circuit's sending side: the fixed window (spec §8.1) or, once
/// negotiated, RTT-based congestion control (spec §8.4, §8.6).
#[derive(Debug, Clone)]
pub enum CircuitSender {
    /// Fixed window with SENDMEs after consumption.
    Fixed(SendWindow),
    /// Vegas congestion window.
    Vegas(Box<CongestionControl>),
}

impl CircuitSender {
    /// The fixed window of spec §8.1.
    pub fn fixed() -> Self {
        Self::Fixed(SendWindow::new(CIRCUIT_WINDOW_START, CIRCUIT_WINDOW_INCREMENT))
    }

    /// Congestion control with the default parameters (spec §8.4).
    pub fn vegas() -> Self {
        Self::Vegas(Box::new(CongestionControl::new(VegasParams::default())))
    }

    /// Whether a DATA cell may be sent now.
    pub fn can_send(&self) -> bool {
        match self {
            Self::Fixed(w) => w.can_send(),
            Self::Vegas(cc) => cc.can_send(),
        }
    }

    /// DATA cells that may be sent now.
    pub fn available(&self) -> u32 {
        match self {
            Self::Fixed(w) => w.available(),
            Self::Vegas(cc) => cc.available(),
        }
    }

    /// Record a DATA cell sent at `now` with layer tag `tag`.
    pub fn on_send(&mut self, tag: [u8; TAG_LEN], now: Instant) {
        match self {
            Self::Fixed(w) => w.on_send(tag),
            Self::Vegas(cc) => cc.on_send(tag, now),
        }
    }

    /// A circuit-level SENDME arrived at `now`.
    pub fn on_sendme(&mut self, tag: &[u8; TAG_LEN], now: Instant) -> Result<(), &'static str> {
        match self {
            Self::Fixed(w) => w.on_sendme(tag),
            Self::Vegas(cc) => cc.on_sendme(tag, now).map_err(congestion_reason),
        }
    }
}

/// A circuit's receiving side: SENDMEs after consumption (fixed window) or
/// on receipt (congestion control, spec §8.4).
#[derive(Debug, Clone)]
pub enum CircuitReceiver {
    /// Fixed window.
    Fixed(RecvWindow),
    /// A receipt every `sendme_inc` cells received.
    Vegas(SendmeReceipts),
}

impl CircuitReceiver {
    /// The fixed window of spec §8.1.
    pub fn fixed() -> Self {
        Self::Fixed(RecvWindow::new(CIRCUIT_WINDOW_START, CIRCUIT_WINDOW_INCREMENT))
    }

    /// Receipts for a congestion-controlled sender (spec §8.4).
    pub fn vegas() -> Self {
        Self::Vegas(SendmeReceipts::new(VegasParams::default().sendme_inc))
    }

    /// Account a received DATA cell; returns a receipt to send at once
    /// (congestion control) and fails if the peer overran a fixed window.
    pub fn on_receive(&mut self, tag: [u8; TAG_LEN]) -> Result<Option<[u8; TAG_LEN]>, &'static str> {
        match self {
            Self::Fixed(w) => w.on_receive(tag).map(|()| None),
            Self::Vegas(r) => Ok(r.on_receive(tag)),
        }
    }

    /// Account a consumed DATA cell; returns a receipt when a fixed-window
    /// batch completes (never under congestion control: it acknowledged
    /// on receipt).
    pub fn on_consumed(&mut self) -> Option<[u8; TAG_LEN]> {
        match self {
            Self::Fixed(w) => w.on_consumed(),
            Self::Vegas(_) => None,
        }
    }
}

/// A stream's sending side: the fixed stream window, or XON/XOFF (spec §8.5).
#[derive(Debug, Clone)]
pub enum StreamSender {
    /// Fixed window with stream SENDMEs.
    Fixed(SendWindow),
    /// Rate advisories.
    Edge(StreamSendEdge),
}

impl StreamSender {
    /// A fixed stream window (spec §8.1) or, with `cc`, an advisory edge.
    pub fn new(cc: bool) -> Self {
        if cc {
            Self::Edge(StreamSendEdge::new(FlowParams::default()))
        } else {
            Self::Fixed(SendWindow::new(STREAM_WINDOW_START, STREAM_WINDOW_INCREMENT))
        }
    }

    /// Whether a DATA cell may be sent now.
    pub fn can_send(&self) -> bool {
        match self {
            Self::Fixed(w) => w.can_send(),
            Self::Edge(e) => !e.is_paused(),
        }
    }

    /// Record a sent DATA cell with layer tag `tag`.
    pub fn on_send(&mut self, tag: [u8; TAG_LEN]) {
        match self {
            Self::Fixed(w) => w.on_send(tag),
            Self::Edge(e) => e.on_packaged(EDGE_CELL_BYTES),
        }
    }

    /// A stream-level SENDME: only valid with a fixed window.
    pub fn on_sendme(&mut self, tag: &[u8; TAG_LEN]) -> Result<(), &'static str> {
        match self {
            Self::Fixed(w) => w.on_sendme(tag),
            Self::Edge(_) => Err("stream sendme under congestion control"),
        }
    }

    /// XOFF from the peer: only valid with advisories (spec §8.5).
    pub fn on_xoff(&mut self) -> Result<(), &'static str> {
        match self {
            Self::Fixed(_) => Err("xoff without congestion control"),
            Self::Edge(e) => e.on_xoff().map_err(congestion_reason),
        }
    }

    /// XON from the peer at `now`. The advised rate is checked for
    /// plausibility but not paced (spec §8.6): the edge resumes unlimited.
    pub fn on_xon(&mut self, kib_per_s: u32, now: Instant) -> Result<(), &'static str> {
        let _ = kib_per_s;
        match self {
            Self::Fixed(_) => Err("xon without congestion control"),
            Self::Edge(e) => e.on_xon(0, now).map_err(congestion_reason),
        }
    }
}

/// What a stream receiver asks to send after its consumer took a cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamReceipt {
    /// A stream SENDME (fixed window).
    Sendme([u8; TAG_LEN]),
    /// An XON or XOFF (congestion control).
    Advisory(FlowAdvisory),
}

/// A stream's receiving side: the fixed stream window, or a bounded edge
/// buffer with advisories (spec §8.5).
#[derive(Debug, Clone)]
pub enum StreamReceiver {
    /// Fixed window.
    Fixed(RecvWindow),
    /// Bounded edge buffer.
    Edge(StreamRecvEdge),
}

impl StreamReceiver {
    /// A fixed stream window (spec §8.1) or, with `cc`, an advisory edge.
    pub fn new(cc: bool) -> Self {
        if cc {
            Self::Edge(StreamRecvEdge::new(FlowParams::default()))
        } else {
            Self::Fixed(RecvWindow::new(STREAM_WINDOW_START, STREAM_WINDOW_INCREMENT))
        }
    }

    /// Account a received DATA cell handed towards the consumer; returns an
    /// XOFF to send, and fails past the window or the edge's hard cap.
    pub fn on_receive(&mut self, tag: [u8; TAG_LEN]) -> Result<Option<StreamReceipt>, &'static str> {
        match self {
            Self::Fixed(w) => w.on_receive(tag).map(|()| None),
            Self::Edge(e) => {
                e.on_data(EDGE_CELL_BYTES).map(|a| a.map(StreamReceipt::Advisory)).map_err(congestion_reason)
            }
        }
    }

    /// The consumer took one DATA cell at `now`.
    pub fn on_consumed(&mut self, now: Instant) -> Option<StreamReceipt> {
        match self {
            Self::Fixed(w) => w.on_consumed().map(StreamReceipt::Sendme),
            Self::Edge(e) => e.on_drained(EDGE_CELL_BYTES, now).map(StreamReceipt::Advisory),
        }
    }
}

/// The protocol-violation reason of a congestion error.
fn congestion_reason(e: CongestionError) -> &'static str {
    match e {
        CongestionError::UnexpectedSendme => "unexpected sendme",
        CongestionError::ReceiptMismatch => "sendme receipt does not match",
        CongestionError::XoffTooEarly => "xoff before the buffer could fill",
        CongestionError::UnsolicitedXon => "unsolicited xon",
        CongestionError::EdgeOverflow => "edge buffer overflow: xoff ignored",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_cap_in_cells_matches_the_flow_parameters() {
        let cells = FlowParams::default().hard_cap_bytes / EDGE_CELL_BYTES;
        assert_eq!(usize::try_from(cells).unwrap(), EDGE_HARD_CAP_CELLS);
        assert!(EDGE_HARD_CAP_CELLS >= STREAM_WINDOW_START as usize);
    }

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
