//! RTT-based congestion control for circuits and rate advisories for
//! streams (spec §8.4–§8.6), sans-IO: time is an argument.
//!
//! **Circuits** ([`CongestionControl`]): instead of a fixed window of 2,000
//! cells, the sender keeps a *congestion window* (`cwnd`, in DATA cells)
//! driven by round-trip times, as Tor's `TOR_VEGAS` (proposal 324 §3.3).
//! Every `sendme_inc`-th DATA cell is remembered with its layer tag and send
//! time; the receiver answers every `sendme_inc` cells *received* with a
//! SENDME carrying that tag (spec §8.2: only a peer that got the cells knows
//! the tag). The time between the two is one RTT sample. From the smallest
//! RTT seen (`min_rtt`, the path without queues) and the current RTT (the
//! smallest sample of the last round, one window of SENDMEs, as Linux's
//! Vegas; Tor uses an N-EWMA, which the bursts of slow start inflate), the
//! sender estimates the bandwidth-delay product
//! `bdp = cwnd · min_rtt / current_rtt` and the cells sitting in queues
//! along the path, `queue_use = cwnd − bdp`. Then:
//!
//! - *slow start*: the window grows by `cwnd` per round trip (doubles), by
//!   `ss_cap / 2` per round trip once above `ss_cap` (limited slow start,
//!   RFC 3742); at the end of the first round whose queues reach `gamma`,
//!   `cwnd = bdp + gamma` and slow start ends;
//! - *steady state*, once per window of SENDMEs: `queue_use > delta` →
//!   `cwnd = bdp + delta − cwnd_inc` (back off hard); `> beta` → shrink by
//!   `cwnd_inc`; `< alpha` → grow by `cwnd_inc`; else keep;
//! - the window only grows while the sender actually filled it (an idle or
//!   application-limited circuit learns nothing about the path), and stays
//!   within `[cwnd_min, cwnd_max]` always.
//!
//! So a circuit keeps about `alpha`–`beta` cells queued in the whole path,
//! whatever its bandwidth-delay product: a wide-area path fills, and queues
//! (hence the delay added to other circuits) stay short.
//!
//! **Streams** ([`StreamRecvEdge`], [`StreamSendEdge`]): with the circuit
//! window driven by the network, a stream no longer needs its own credit
//! window. The receiving edge (the exit's or the client's socket side)
//! buffers what it cannot write yet; past `xoff_bytes` it sends XOFF, and
//! once drained it sends XON with the rate it drains at (proposal 324 §4).
//! The sending edge stops packaging on XOFF and paces at the advised rate
//! after XON. The receiving buffer is bounded: a peer that keeps sending
//! past `hard_cap_bytes` ignores XOFF, and that is a protocol violation.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use lamina_crypto::keys::ct_eq;
use lamina_crypto::layer::TAG_LEN;

/// What went wrong in congestion or flow control. Every variant is the
/// peer's fault: the driver closes the circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CongestionError {
    /// A SENDME arrived when no batch was outstanding.
    #[error("congestion control: unexpected sendme")]
    UnexpectedSendme,
    /// A SENDME's receipt does not match the tag of the batch it acknowledges.
    #[error("congestion control: sendme receipt does not match")]
    ReceiptMismatch,
    /// The peer sent XOFF before we sent enough to fill its buffer.
    #[error("flow control: xoff before the peer's buffer could fill")]
    XoffTooEarly,
    /// The peer sent XON without a preceding XOFF, too often.
    #[error("flow control: unsolicited xon")]
    UnsolicitedXon,
    /// The peer kept sending past our edge buffer's hard cap (it ignored XOFF).
    #[error("flow control: edge buffer overflow, xoff ignored")]
    EdgeOverflow,
}

/// Tunables of [`CongestionControl`], in DATA cells (proposal 324 §6.5
/// names the same parameters; our defaults are explained in spec §8.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VegasParams {
    /// Cells per SENDME (and per RTT sample).
    pub sendme_inc: u32,
    /// Initial window.
    pub cwnd_init: u32,
    /// Smallest window.
    pub cwnd_min: u32,
    /// Largest window (bounds what one circuit keeps in flight and so in
    /// any relay's queue).
    pub cwnd_max: u32,
    /// Steady-state step.
    pub cwnd_inc: u32,
    /// Steady state: grow while fewer cells than this are queued.
    pub alpha: u32,
    /// Steady state: shrink while more cells than this are queued.
    pub beta: u32,
    /// Slow start ends when this many cells are queued.
    pub gamma: u32,
    /// Steady state: back off to `bdp + delta − cwnd_inc` above this.
    pub delta: u32,
    /// Above this window, slow start grows by `ss_cap / 2` per RTT instead of
    /// doubling (limited slow start).
    pub ss_cap: u32,
    /// Smoothing of the current RTT: an N-EWMA over this many samples at
    /// most (fewer when a window holds fewer SENDMEs).
    pub ewma_max: u32,
}

impl Default for VegasParams {
    /// Tor's exit-circuit values (sendme_inc 31, alpha/beta/gamma/delta 3, 4,
    /// 3, 5 times 62 cells), with a larger slow-start cap and a finite
    /// maximum window (spec §8.4).
    fn default() -> Self {
        Self {
            sendme_inc: 31,
            cwnd_init: 124,
            cwnd_min: 62,
            cwnd_max: 16_384,
            cwnd_inc: 31,
            alpha: 186,
            beta: 248,
            gamma: 186,
            delta: 310,
            ss_cap: 2_048,
            ewma_max: 10,
        }
    }
}

impl VegasParams {
    /// The same parameters with the ordering the algorithm needs enforced:
    /// `1 ≤ sendme_inc`, `sendme_inc ≤ cwnd_min ≤ cwnd_init ≤ cwnd_max`,
    /// `alpha ≤ beta ≤ delta`, `cwnd_inc ≥ 1`.
    pub fn sanitized(mut self) -> Self {
        self.sendme_inc = self.sendme_inc.max(1);
        self.cwnd_min = self.cwnd_min.max(self.sendme_inc);
        self.cwnd_max = self.cwnd_max.max(self.cwnd_min);
        self.cwnd_init = self.cwnd_init.clamp(self.cwnd_min, self.cwnd_max);
        self.cwnd_inc = self.cwnd_inc.max(1);
        self.beta = self.beta.max(self.alpha);
        self.delta = self.delta.max(self.beta);
        self.ss_cap = self.ss_cap.max(self.cwnd_min);
        self.ewma_max = self.ewma_max.max(1);
        self
    }
}

/// The sending side of one circuit under RTT-based congestion control.
#[derive(Debug, Clone)]
pub struct CongestionControl {
    /// Tunables (sanitized).
    params: VegasParams,
    /// The congestion window, in DATA cells.
    cwnd: u32,
    /// DATA cells sent and not yet acknowledged.
    inflight: u32,
    /// Cells sent since the last batch boundary.
    since_boundary: u32,
    /// Tag and send time of every cell that completed a batch, oldest
    /// first; at most `cwnd_max / sendme_inc + 1` entries.
    outstanding: VecDeque<([u8; TAG_LEN], Instant)>,
    /// Still in slow start.
    slow_start: bool,
    /// Smallest RTT seen.
    min_rtt: Option<Duration>,
    /// Smoothed RTT.
    ewma_rtt: Option<Duration>,
    /// Smallest RTT sample of the round in progress.
    round_min: Option<Duration>,
    /// Smallest RTT sample of the last complete round: the "current RTT"
    /// of the queue estimate.
    current_rtt: Option<Duration>,
    /// SENDMEs left in the round in progress (a round: one window).
    round_left: u32,
    /// The window was full at some send since the last update.
    cwnd_full: bool,
}

impl CongestionControl {
    /// A circuit sender with `params` (made consistent first).
    pub fn new(params: VegasParams) -> Self {
        let params = params.sanitized();
        Self {
            params,
            cwnd: params.cwnd_init,
            inflight: 0,
            since_boundary: 0,
            outstanding: VecDeque::new(),
            slow_start: true,
            min_rtt: None,
            ewma_rtt: None,
            round_min: None,
            current_rtt: None,
            round_left: (params.cwnd_init / params.sendme_inc).max(1),
            cwnd_full: false,
        }
    }

    /// Whether a DATA cell may be sent now.
    pub fn can_send(&self) -> bool {
        self.inflight < self.cwnd
    }

    /// DATA cells that may be sent now.
    pub fn available(&self) -> u32 {
        self.cwnd.saturating_sub(self.inflight)
    }

    /// Record a DATA cell sent at `now` whose layer tag was `tag`. The
    /// caller checked [`Self::can_send`]; a cell beyond the window is still
    /// accounted (the window then just stays closed longer), and the
    /// remembered batches stay bounded.
    pub fn on_send(&mut self, tag: [u8; TAG_LEN], now: Instant) {
        self.inflight = self.inflight.saturating_add(1);
        if self.inflight.saturating_add(self.params.sendme_inc) >= self.cwnd {
            self.cwnd_full = true;
        }
        self.since_boundary += 1;
        if self.since_boundary >= self.params.sendme_inc {
            self.since_boundary = 0;
            // Bounded even if a caller ignores can_send: dropping the
            // oldest expectation makes its SENDME mismatch, which closes
            // the circuit (fails safe).
            if self.outstanding.len()
                > usize::try_from(self.params.cwnd_max / self.params.sendme_inc).unwrap_or(usize::MAX)
            {
                self.outstanding.pop_front();
            }
            self.outstanding.push_back((tag, now));
        }
    }

    /// Check a SENDME received at `now` against the oldest outstanding
    /// batch, take its RTT sample and update the window.
    pub fn on_sendme(&mut self, tag: &[u8; TAG_LEN], now: Instant) -> Result<(), CongestionError> {
        let (expected, sent) = self.outstanding.pop_front().ok_or(CongestionError::UnexpectedSendme)?;
        if !ct_eq(&expected, tag) {
            return Err(CongestionError::ReceiptMismatch);
        }
        self.inflight = self.inflight.saturating_sub(self.params.sendme_inc);
        // A zero sample (coarse clock) is floored: it only lowers min_rtt.
        let rtt = now.saturating_duration_since(sent).max(Duration::from_micros(1));
        let round_done = self.sample_rtt(rtt);
        self.update_window(round_done);
        Ok(())
    }

    /// Fold one RTT sample into `min_rtt`, `ewma_rtt` (N-EWMA with
    /// `N = min(ewma_max, SENDMEs per window)`, 2 in slow start) and the
    /// round's minimum; returns whether this sample completed a round.
    fn sample_rtt(&mut self, rtt: Duration) -> bool {
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
        let n = if self.slow_start { 2 } else { (self.cwnd / self.params.sendme_inc).clamp(1, self.params.ewma_max) };
        self.ewma_rtt = Some(match self.ewma_rtt {
            None => rtt,
            Some(old) => (rtt * 2 + old * (n - 1)) / (n + 1),
        });
        self.round_min = Some(self.round_min.map_or(rtt, |m| m.min(rtt)));
        self.round_left = self.round_left.saturating_sub(1);
        if self.round_left > 0 {
            return false;
        }
        self.current_rtt = self.round_min.take();
        self.round_left = self.sendmes_per_window();
        true
    }

    /// The bandwidth-delay product estimate, in cells:
    /// `cwnd · min_rtt / current_rtt`, where the current RTT is the smallest
    /// sample of the last round (as Linux's Vegas: the cells one SENDME
    /// releases arrive at a bottleneck together, and the queue they build
    /// for a moment is not the path's), the smoothed RTT before the first
    /// round completes.
    pub fn bdp(&self) -> u32 {
        let (Some(min), Some(current)) = (self.min_rtt, self.current_rtt.or(self.ewma_rtt)) else { return self.cwnd };
        let current = current.as_micros().max(1);
        let bdp = u128::from(self.cwnd) * min.as_micros() / current;
        u32::try_from(bdp).unwrap_or(u32::MAX).min(self.cwnd)
    }

    /// Cells the estimate puts in queues along the path: `cwnd − bdp`.
    pub fn queue_use(&self) -> u32 {
        self.cwnd - self.bdp()
    }

    /// Apply the Vegas rules (module documentation): slow-start growth on
    /// every SENDME, every other decision once per round (`round_done`).
    fn update_window(&mut self, round_done: bool) {
        let p = self.params;
        if self.slow_start {
            self.slow_start_step(round_done);
        } else if round_done {
            self.steady_step();
        } else {
            return;
        }
        self.cwnd = self.cwnd.clamp(p.cwnd_min, p.cwnd_max);
        if !self.slow_start && self.cwnd == p.cwnd_min {
            // Stuck at the floor: the path's base RTT may have grown (a
            // route change), so forget the old minimum (Tor's rtt_reset).
            self.min_rtt = self.current_rtt.or(self.ewma_rtt);
        }
        if round_done {
            // Start the next round knowing only whether the window is full
            // now. Once per round, not per SENDME (Tor's
            // `cwnd_full_per_cwnd`): SENDMEs read in one batch before the
            // sender refills would otherwise grow slow start by one step
            // per round instead of doubling it (found wiring it, spec §8.6).
            self.cwnd_full = self.inflight.saturating_add(p.sendme_inc) >= self.cwnd;
        }
    }

    /// One slow-start step: at the end of a round, if queues reached
    /// `gamma`, settle at `bdp + gamma` and leave slow start; otherwise grow
    /// when the window was full.
    fn slow_start_step(&mut self, round_done: bool) {
        let p = self.params;
        if round_done && self.queue_use() >= p.gamma {
            self.cwnd = self.bdp().saturating_add(p.gamma);
            self.slow_start = false;
            self.round_left = self.sendmes_per_window();
            return;
        }
        if !self.cwnd_full {
            return;
        }
        // +sendme_inc per SENDME doubles the window per RTT; above ss_cap
        // the growth per RTT is ss_cap / 2 (limited slow start).
        let step = if self.cwnd <= p.ss_cap {
            p.sendme_inc
        } else {
            let per_sendme = u64::from(p.ss_cap / 2) * u64::from(p.sendme_inc) / u64::from(self.cwnd);
            u32::try_from(per_sendme).unwrap_or(u32::MAX).max(1)
        };
        self.cwnd = self.cwnd.saturating_add(step);
    }

    /// One steady-state step on the estimated queue use.
    fn steady_step(&mut self) {
        let p = self.params;
        let queue_use = self.queue_use();
        if queue_use > p.delta {
            self.cwnd = self.bdp().saturating_add(p.delta).saturating_sub(p.cwnd_inc);
        } else if queue_use > p.beta {
            self.cwnd = self.cwnd.saturating_sub(p.cwnd_inc);
        } else if queue_use < p.alpha && self.cwnd_full {
            self.cwnd = self.cwnd.saturating_add(p.cwnd_inc);
        }
    }

    /// SENDMEs one window's worth of cells brings back (at least 1).
    fn sendmes_per_window(&self) -> u32 {
        (self.cwnd / self.params.sendme_inc).max(1)
    }

    /// The congestion window, in cells.
    pub fn cwnd(&self) -> u32 {
        self.cwnd
    }

    /// Cells in flight.
    pub fn inflight(&self) -> u32 {
        self.inflight
    }

    /// Still in slow start.
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// The smallest RTT seen.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt
    }

    /// The smoothed current RTT.
    pub fn ewma_rtt(&self) -> Option<Duration> {
        self.ewma_rtt
    }

    /// The parameters in force.
    pub fn params(&self) -> VegasParams {
        self.params
    }
}

/// The receiving side of a congestion-controlled circuit: a SENDME for
/// every `sendme_inc` DATA cells *received* (not consumed: stream edges
/// bound buffering, [`StreamRecvEdge`]).
#[derive(Debug, Clone)]
pub struct SendmeReceipts {
    /// Cells per SENDME.
    sendme_inc: u32,
    /// Cells received since the last SENDME.
    since: u32,
}

impl SendmeReceipts {
    /// A receiver acknowledging every `sendme_inc` cells.
    pub fn new(sendme_inc: u32) -> Self {
        Self { sendme_inc: sendme_inc.max(1), since: 0 }
    }

    /// Account a received DATA cell with layer tag `tag`; returns the
    /// receipt to send in a SENDME now when it completes a batch.
    pub fn on_receive(&mut self, tag: [u8; TAG_LEN]) -> Option<[u8; TAG_LEN]> {
        self.since += 1;
        if self.since >= self.sendme_inc {
            self.since = 0;
            return Some(tag);
        }
        None
    }
}

/// A stream rate advisory (proposal 324 §4), sent in a relay message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowAdvisory {
    /// Stop packaging data on this stream.
    Xoff,
    /// Resume, at most `kib_per_s` KiB/s (0: no limit).
    Xon {
        /// The advised rate in KiB/s; 0 means unlimited.
        kib_per_s: u32,
    },
}

/// Tunables of the stream edges, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowParams {
    /// Buffered bytes above which the receiving edge sends XOFF.
    pub xoff_bytes: u64,
    /// Buffered bytes the receiving edge accepts at most: `xoff_bytes` plus
    /// what the peer may still have had in flight when it got the XOFF
    /// (one maximal circuit window). More is a protocol violation.
    pub hard_cap_bytes: u64,
    /// After XON, drained bytes between two rate re-advertisements.
    pub xon_interval_bytes: u64,
    /// A new XON is sent when the drain rate changed by more than this
    /// percentage since the last advertised one.
    pub xon_change_pct: u64,
}

impl Default for FlowParams {
    /// 2,048 cells of 498 bytes before XOFF (Tor's `xoff_client` is 500:
    /// Lamina's SOCKS side writes up to 256 KiB, 526 cells, per batch
    /// before it reports consumption, so 500 sent an XOFF, and waited a
    /// round trip for the XON, on most batches of a wide-area download),
    /// plus 16,384 cells of slack (the default `cwnd_max`). Rate updates
    /// are measured over the same 2,048 cells.
    fn default() -> Self {
        Self {
            xoff_bytes: 2_048 * 498,
            hard_cap_bytes: (2_048 + 16_384) * 498,
            xon_interval_bytes: 2_048 * 498,
            xon_change_pct: 25,
        }
    }
}

/// The receiving edge of a stream: data from the circuit waits here until
/// the local socket takes it.
#[derive(Debug, Clone)]
pub struct StreamRecvEdge {
    /// Tunables.
    params: FlowParams,
    /// Bytes waiting for the socket.
    buffered: u64,
    /// XOFF sent and no XON since.
    xoff_sent: bool,
    /// Start of the current drain-rate measurement.
    drain_since: Option<Instant>,
    /// Bytes drained since `drain_since`.
    drained: u64,
    /// The rate last advertised in an XON (KiB/s), if any.
    advertised: Option<u32>,
}

impl StreamRecvEdge {
    /// An empty receiving edge.
    pub fn new(params: FlowParams) -> Self {
        Self { params, buffered: 0, xoff_sent: false, drain_since: None, drained: 0, advertised: None }
    }

    /// `bytes` of stream data arrived from the circuit. Returns XOFF when
    /// the buffer crossed `xoff_bytes`; fails past the hard cap.
    pub fn on_data(&mut self, bytes: u64) -> Result<Option<FlowAdvisory>, CongestionError> {
        self.buffered = self.buffered.saturating_add(bytes);
        if self.buffered > self.params.hard_cap_bytes {
            return Err(CongestionError::EdgeOverflow);
        }
        if !self.xoff_sent && self.buffered > self.params.xoff_bytes {
            self.xoff_sent = true;
            return Ok(Some(FlowAdvisory::Xoff));
        }
        Ok(None)
    }

    /// The socket took `bytes` at `now`. Returns XON with the measured
    /// drain rate when an XOFF is outstanding and the buffer emptied, or
    /// when the drain rate moved by more than `xon_change_pct` since the
    /// last XON (measured over `xon_interval_bytes`).
    pub fn on_drained(&mut self, bytes: u64, now: Instant) -> Option<FlowAdvisory> {
        self.buffered = self.buffered.saturating_sub(bytes);
        let since = *self.drain_since.get_or_insert(now);
        self.drained = self.drained.saturating_add(bytes);
        let rate = kib_per_s(self.drained, now.saturating_duration_since(since));
        if self.xoff_sent && self.buffered == 0 {
            self.xoff_sent = false;
            return Some(self.advertise(rate, now));
        }
        if self.drained >= self.params.xon_interval_bytes {
            let changed = self
                .advertised
                .is_some_and(|old| u64::from(old.abs_diff(rate)) * 100 > u64::from(old) * self.params.xon_change_pct);
            self.drain_since = Some(now);
            self.drained = 0;
            if changed && !self.xoff_sent {
                return Some(self.advertise(rate, now));
            }
        }
        None
    }

    /// Remember and return an XON advertising `rate`.
    fn advertise(&mut self, rate: u32, now: Instant) -> FlowAdvisory {
        self.advertised = Some(rate);
        self.drain_since = Some(now);
        self.drained = 0;
        FlowAdvisory::Xon { kib_per_s: rate }
    }

    /// Bytes waiting for the socket.
    pub fn buffered(&self) -> u64 {
        self.buffered
    }

    /// Whether an XOFF is outstanding.
    pub fn xoff_sent(&self) -> bool {
        self.xoff_sent
    }
}

/// KiB/s of `bytes` over `elapsed` (0 when no time passed: "unlimited").
fn kib_per_s(bytes: u64, elapsed: Duration) -> u32 {
    let micros = elapsed.as_micros();
    if micros == 0 {
        return 0;
    }
    let rate = u128::from(bytes) * 1_000_000 / 1024 / micros;
    u32::try_from(rate).unwrap_or(u32::MAX).max(1)
}

/// The sending edge of a stream: obeys XOFF and paces at the rate of the
/// last XON.
#[derive(Debug, Clone)]
pub struct StreamSendEdge {
    /// Tunables (the peer's `xoff_bytes` decides when an XOFF is plausible).
    params: FlowParams,
    /// Packaging stopped by an XOFF.
    paused: bool,
    /// Advised rate in bytes per second (`None`: unlimited).
    rate: Option<u64>,
    /// Pacing credit in bytes, refilled at `rate`, at most one burst.
    credit: u64,
    /// When `credit` was last refilled.
    refilled: Option<Instant>,
    /// Bytes packaged on this stream so far.
    sent: u64,
    /// XOFFs received so far.
    xoffs: u64,
    /// XONs received without an XOFF before them (tolerated a few times:
    /// rate updates).
    spare_xons: u64,
}

/// Rate updates (XON without XOFF) tolerated per XOFF-limit of data sent.
const SPARE_XONS_PER_WINDOW: u64 = 4;
/// Pacing burst: 50 ms of the advised rate, at least one cell.
const BURST: Duration = Duration::from_millis(50);
/// One cell's worth of stream data (the smallest burst).
const MIN_BURST_BYTES: u64 = 498;

impl StreamSendEdge {
    /// A sending edge, unpaused and unlimited.
    pub fn new(params: FlowParams) -> Self {
        Self { params, paused: false, rate: None, credit: 0, refilled: None, sent: 0, xoffs: 0, spare_xons: 0 }
    }

    /// The peer sent XOFF. It fails when we have not yet sent enough bytes
    /// to fill the peer's buffer once per XOFF (an XOFF the data cannot
    /// justify is an attempt to stall or fingerprint the stream).
    pub fn on_xoff(&mut self) -> Result<(), CongestionError> {
        self.xoffs += 1;
        if self.sent < self.params.xoff_bytes.saturating_mul(self.xoffs) {
            return Err(CongestionError::XoffTooEarly);
        }
        self.paused = true;
        Ok(())
    }

    /// The peer sent XON advising `kib_per_s` (0: unlimited) at `now`.
    pub fn on_xon(&mut self, kib_per_s: u32, now: Instant) -> Result<(), CongestionError> {
        if !self.paused {
            // A rate update: allowed a few times per buffer of data sent.
            self.spare_xons += 1;
            let allowed = SPARE_XONS_PER_WINDOW * (1 + self.sent / self.params.xoff_bytes.max(1));
            if self.spare_xons > allowed {
                return Err(CongestionError::UnsolicitedXon);
            }
        }
        self.paused = false;
        self.rate = (kib_per_s > 0).then(|| u64::from(kib_per_s) * 1024);
        self.credit = self.burst();
        self.refilled = Some(now);
        Ok(())
    }

    /// Largest pacing credit.
    fn burst(&self) -> u64 {
        self.rate.map_or(u64::MAX, |r| {
            (u128::from(r) * BURST.as_micros() / 1_000_000)
                .max(u128::from(MIN_BURST_BYTES))
                .try_into()
                .unwrap_or(u64::MAX)
        })
    }

    /// Bytes that may be packaged now (0 while paused).
    pub fn budget(&mut self, now: Instant) -> u64 {
        if self.paused {
            return 0;
        }
        let Some(rate) = self.rate else { return u64::MAX };
        let last = *self.refilled.get_or_insert(now);
        let add = u128::from(rate) * now.saturating_duration_since(last).as_micros() / 1_000_000;
        if add > 0 {
            self.credit = self.credit.saturating_add(u64::try_from(add).unwrap_or(u64::MAX)).min(self.burst());
            self.refilled = Some(now);
        }
        self.credit
    }

    /// `bytes` were packaged (after [`Self::budget`] allowed them).
    pub fn on_packaged(&mut self, bytes: u64) {
        self.sent = self.sent.saturating_add(bytes);
        self.credit = self.credit.saturating_sub(bytes);
    }

    /// When the driver should ask for [`Self::budget`] again: the moment
    /// one cell's worth of credit will have accrued (`None`: paused, or
    /// not rate-limited).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let (Some(rate), Some(last), false) = (self.rate, self.refilled, self.paused) else { return None };
        let missing = MIN_BURST_BYTES.saturating_sub(self.credit);
        let micros = u128::from(missing) * 1_000_000 / u128::from(rate.max(1));
        Some(last + Duration::from_micros(u64::try_from(micros).unwrap_or(u64::MAX)))
    }

    /// Whether an XOFF holds packaging.
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The advised rate in bytes/s, if any.
    pub fn rate(&self) -> Option<u64> {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn slow_start_doubles_even_when_sendmes_arrive_in_one_batch() {
        let mut cc = CongestionControl::new(VegasParams::default());
        let mut now = t0();
        let mut n = 0u64;
        let mut windows = Vec::new();
        for _ in 0..4 {
            let mut tags = Vec::new();
            while cc.can_send() {
                n += 1;
                cc.on_send(tag(n), now);
                if n % 31 == 0 {
                    tags.push(tag(n));
                }
            }
            now += Duration::from_millis(100);
            for t in &tags {
                cc.on_sendme(t, now).unwrap();
            }
            windows.push(cc.cwnd());
        }
        // Without the per-round full flag: 155, 186, 217, 248 (one step per
        // round trip). With it, close to a doubling per round trip.
        assert_eq!(windows[0], 248);
        for pair in windows.windows(2) {
            assert!(pair[1] * 10 >= pair[0] * 18, "windows {windows:?}");
        }
    }

    #[test]
    fn the_queue_bound_covers_the_largest_window() {
        assert_eq!(VegasParams::default().cwnd_max as usize, crate::circuit::queue::MAX_CIRCUIT_WINDOW);
    }

    /// The one clock reading of these tests: an opaque origin for virtual time.
    #[allow(clippy::disallowed_methods)]
    fn t0() -> Instant {
        Instant::now()
    }

    /// A distinct tag per cell number.
    fn tag(n: u64) -> [u8; TAG_LEN] {
        let mut t = [0u8; TAG_LEN];
        t[..8].copy_from_slice(&n.to_be_bytes());
        t
    }

    /// One greedy sender through a FIFO bottleneck of `cells_per_s`, with
    /// `base_rtt` of propagation; SENDMEs come back unqueued.
    struct Bottleneck {
        /// Virtual time origin.
        origin: Instant,
        /// Serialisation time of one cell.
        per_cell: Duration,
        /// Propagation round trip.
        base_rtt: Duration,
        /// When the bottleneck finishes sending everything queued so far.
        busy_until: Duration,
        /// Cells sent per flow.
        sent: Vec<u64>,
        /// SENDME arrivals: (time, flow, tag), earliest first.
        sendmes: BinaryHeap<Reverse<(Duration, usize, u64)>>,
        /// Largest queueing delay seen after `settle`.
        max_queue_delay: Duration,
        /// Cells that left the bottleneck per flow after `settle`.
        delivered_after_settle: Vec<u64>,
    }

    impl Bottleneck {
        fn new(cells_per_s: u64, base_rtt: Duration, flows: usize) -> Self {
            Self {
                origin: t0(),
                per_cell: Duration::from_nanos(1_000_000_000 / cells_per_s),
                base_rtt,
                busy_until: Duration::ZERO,
                sent: vec![0; flows],
                sendmes: BinaryHeap::new(),
                max_queue_delay: Duration::ZERO,
                delivered_after_settle: vec![0; flows],
            }
        }

        /// Let `flow` send all it may at virtual time `now`.
        fn fill(&mut self, flow: usize, cc: &mut CongestionControl, now: Duration, settle: Duration) {
            while cc.can_send() {
                let n = self.sent[flow];
                self.sent[flow] += 1;
                cc.on_send(tag(n), self.origin + now);
                self.busy_until = self.busy_until.max(now) + self.per_cell;
                if now >= settle {
                    self.max_queue_delay = self.max_queue_delay.max(self.busy_until - now - self.per_cell);
                    self.delivered_after_settle[flow] += 1;
                }
                if (n + 1) % u64::from(cc.params().sendme_inc) == 0 {
                    self.sendmes.push(Reverse((self.busy_until + self.base_rtt, flow, n)));
                }
            }
        }

        /// Run `flows` (started at the given offsets) until `end`; returns
        /// the average cwnd of each flow after `settle`.
        fn run(&mut self, flows: &mut [(CongestionControl, Duration)], end: Duration, settle: Duration) -> Vec<f64> {
            let mut cwnd_sum = vec![0f64; flows.len()];
            let mut samples = vec![0u32; flows.len()];
            let mut started = vec![false; flows.len()];
            let mut now = Duration::ZERO;
            while now < end {
                for (i, (cc, start)) in flows.iter_mut().enumerate() {
                    if !started[i] && *start <= now {
                        started[i] = true;
                        self.fill(i, cc, now, settle);
                    }
                }
                let next_start = flows.iter().zip(&started).filter(|(_, s)| !**s).map(|((_, t), _)| *t).min();
                let Some(Reverse((at, flow, n))) = self.sendmes.peek().copied() else {
                    match next_start {
                        Some(t) => {
                            now = t;
                            continue;
                        }
                        None => break,
                    }
                };
                if next_start.is_some_and(|t| t < at) {
                    now = next_start.unwrap_or(at);
                    continue;
                }
                self.sendmes.pop();
                now = at;
                let cc = &mut flows[flow].0;
                cc.on_sendme(&tag(n), self.origin + now).unwrap();
                if now >= settle {
                    cwnd_sum[flow] += f64::from(cc.cwnd());
                    samples[flow] += 1;
                }
                self.fill(flow, cc, now, settle);
            }
            cwnd_sum.iter().zip(&samples).map(|(s, n)| s / f64::from((*n).max(1))).collect()
        }
    }

    #[test]
    fn window_converges_near_the_bdp_and_keeps_queues_short() {
        // 10,000 cells/s (about 40 Mbit/s of cells), 200 ms: BDP 2,000 cells,
        // far above the fixed 2,000... and far above the initial 124.
        for (rate, rtt_ms) in [(10_000u64, 200u64), (25_000, 260), (2_000, 50)] {
            let bdp = rate * rtt_ms / 1000;
            let mut net = Bottleneck::new(rate, Duration::from_millis(rtt_ms), 1);
            let mut flows = [(CongestionControl::new(VegasParams::default()), Duration::ZERO)];
            let settle = Duration::from_secs(20);
            let avg = net.run(&mut flows, Duration::from_secs(40), settle)[0];
            let p = VegasParams::default();
            let cc = &flows[0].0;
            assert!(!cc.in_slow_start(), "left slow start (rate {rate}, rtt {rtt_ms})");
            // Steady state keeps alpha..beta cells queued above the BDP.
            let (lo, hi) = (bdp as f64, (bdp + u64::from(p.delta + p.cwnd_inc)) as f64);
            assert!(avg >= lo && avg <= hi, "average cwnd {avg} outside [{lo}, {hi}] (rate {rate}, rtt {rtt_ms})");
            // Throughput: the bottleneck stayed busy (≥ 97% of its rate).
            let delivered = net.delivered_after_settle[0] as f64;
            assert!(delivered >= 0.97 * rate as f64 * 20.0, "delivered {delivered} cells in 20 s at {rate}/s");
            // Queue delay stays bounded by about delta cells' worth.
            let bound = Duration::from_nanos(1_000_000_000 * u64::from(p.delta + 2 * p.cwnd_inc) / rate);
            assert!(net.max_queue_delay <= bound, "queue delay {:?} above {bound:?}", net.max_queue_delay);
            assert!(cc.min_rtt().unwrap() >= Duration::from_millis(rtt_ms));
        }
    }

    #[test]
    fn slow_start_fills_a_wide_area_path_within_seconds() {
        // 25,000 cells/s at 260 ms (the bulk-wan path, about 100 Mbit/s):
        // from 124 cells to a BDP of 6,500 in about a dozen round trips.
        let mut net = Bottleneck::new(25_000, Duration::from_millis(260), 1);
        let mut flows = [(CongestionControl::new(VegasParams::default()), Duration::ZERO)];
        net.run(&mut flows, Duration::from_secs(8), Duration::from_secs(4));
        let delivered = net.delivered_after_settle[0];
        assert!(delivered >= 25_000 * 4 * 95 / 100, "delivered {delivered} cells in seconds 4-8");
        assert!(!flows[0].0.in_slow_start());
    }

    #[test]
    fn a_fixed_window_would_be_window_bound_where_vegas_is_not() {
        // The motivation (spec §8.4): at 25,000 cells/s and 260 ms, a fixed
        // 1,000-cell window moves 1,000 cells per RTT, 15% of the link.
        let mut net = Bottleneck::new(25_000, Duration::from_millis(260), 1);
        let fixed = VegasParams { cwnd_init: 1_000, cwnd_min: 1_000, cwnd_max: 1_000, ..VegasParams::default() };
        let mut flows = [(CongestionControl::new(fixed), Duration::ZERO)];
        net.run(&mut flows, Duration::from_secs(20), Duration::from_secs(10));
        let fixed_cells = net.delivered_after_settle[0];
        let mut net = Bottleneck::new(25_000, Duration::from_millis(260), 1);
        let mut flows = [(CongestionControl::new(VegasParams::default()), Duration::ZERO)];
        net.run(&mut flows, Duration::from_secs(20), Duration::from_secs(10));
        let vegas_cells = net.delivered_after_settle[0];
        assert!(fixed_cells < 25_000 * 10 / 5, "fixed window delivered {fixed_cells}");
        assert!(vegas_cells > 25_000 * 10 * 95 / 100, "vegas delivered {vegas_cells}");
    }

    #[test]
    fn two_circuits_share_a_bottleneck_fairly() {
        let mut net = Bottleneck::new(20_000, Duration::from_millis(100), 2);
        let mut flows = [
            (CongestionControl::new(VegasParams::default()), Duration::ZERO),
            (CongestionControl::new(VegasParams::default()), Duration::from_millis(50)),
        ];
        net.run(&mut flows, Duration::from_secs(60), Duration::from_secs(30));
        let (a, b) = (net.delivered_after_settle[0] as f64, net.delivered_after_settle[1] as f64);
        let share = a / (a + b);
        assert!((0.35..=0.65).contains(&share), "share of the first circuit {share:.2}");
        assert!(a + b >= 0.97 * 20_000.0 * 30.0, "together they fill the link: {}", a + b);
    }

    #[test]
    fn sendmes_must_carry_the_right_receipt_in_order() {
        let now = t0();
        let mut cc = CongestionControl::new(VegasParams::default());
        assert_eq!(cc.on_sendme(&tag(30), now), Err(CongestionError::UnexpectedSendme));
        for n in 0..62 {
            cc.on_send(tag(n), now);
        }
        assert_eq!(cc.inflight(), 62);
        // Cell 61 completed the second batch, not the first.
        assert_eq!(cc.on_sendme(&tag(61), now), Err(CongestionError::ReceiptMismatch));
        assert_eq!(cc.inflight(), 62, "a bad receipt opens nothing");
        assert_eq!(cc.on_sendme(&tag(61), now + Duration::from_millis(10)), Ok(()));
        assert_eq!(cc.inflight(), 31);
        assert_eq!(cc.on_sendme(&tag(61), now), Err(CongestionError::UnexpectedSendme));
        // A caller that ignores can_send cannot grow the remembered batches
        // without bound; the dropped batch's receipt then fails.
        let mut cc = CongestionControl::new(VegasParams::default());
        for n in 0..310_000 {
            cc.on_send(tag(n), now);
        }
        assert!(cc.outstanding.len() <= 16_384 / 31 + 1);
        assert_eq!(cc.on_sendme(&tag(30), now), Err(CongestionError::ReceiptMismatch));
    }

    #[test]
    fn an_application_limited_circuit_does_not_grow() {
        let origin = t0();
        let mut cc = CongestionControl::new(VegasParams::default());
        let start = cc.cwnd();
        // Send one batch per RTT: far below the window, for a long time.
        for round in 0..200u64 {
            let now = origin + Duration::from_millis(100 * round);
            for i in 0..31 {
                cc.on_send(tag(round * 31 + i), now);
            }
            cc.on_sendme(&tag(round * 31 + 30), now + Duration::from_millis(50)).unwrap();
        }
        assert_eq!(cc.cwnd(), start, "no evidence the path carries more");
    }

    #[test]
    fn receipts_come_every_sendme_inc_cells() {
        let mut r = SendmeReceipts::new(3);
        assert_eq!(r.on_receive(tag(0)), None);
        assert_eq!(r.on_receive(tag(1)), None);
        assert_eq!(r.on_receive(tag(2)), Some(tag(2)));
        assert_eq!(r.on_receive(tag(3)), None);
    }

    proptest! {
        /// Whatever the RTTs (growing, shrinking, jittering), the window
        /// stays in [cwnd_min, cwnd_max] and in-flight cells never exceed it.
        #[test]
        fn cwnd_stays_within_bounds(rtts in proptest::collection::vec(1u64..2_000, 1..400), small in any::<bool>()) {
            let params = if small {
                VegasParams { cwnd_init: 40, cwnd_min: 31, cwnd_max: 300, ss_cap: 100, ..VegasParams::default() }
            } else {
                VegasParams::default()
            };
            let mut cc = CongestionControl::new(params);
            let p = cc.params();
            let origin = t0();
            let mut now = Duration::ZERO;
            let mut next = 0u64;
            let mut batches: VecDeque<(u64, Duration)> = VecDeque::new();
            for rtt in rtts {
                while cc.can_send() {
                    cc.on_send(tag(next), origin + now);
                    if (next + 1) % u64::from(p.sendme_inc) == 0 {
                        batches.push_back((next, now));
                    }
                    next += 1;
                }
                prop_assert!(cc.inflight() <= p.cwnd_max);
                let Some((n, sent)) = batches.pop_front() else { break };
                now = now.max(sent + Duration::from_millis(rtt));
                cc.on_sendme(&tag(n), origin + now).unwrap();
                prop_assert!(cc.cwnd() >= p.cwnd_min && cc.cwnd() <= p.cwnd_max, "cwnd {}", cc.cwnd());
                prop_assert!(batches.len() as u64 <= u64::from(p.cwnd_max / p.sendme_inc) + 1);
            }
        }
    }

    #[test]
    fn the_receiving_edge_sends_xoff_then_xon_with_its_drain_rate() {
        let origin = t0();
        let params =
            FlowParams { xoff_bytes: 1_000, hard_cap_bytes: 5_000, xon_interval_bytes: 1_000, xon_change_pct: 25 };
        let mut edge = StreamRecvEdge::new(params);
        assert_eq!(edge.on_data(600), Ok(None));
        assert_eq!(edge.on_data(600), Ok(Some(FlowAdvisory::Xoff)));
        assert_eq!(edge.on_data(600), Ok(None), "one XOFF until drained");
        assert!(edge.xoff_sent());
        // The socket takes 600 bytes every 100 ms: 5.9 KiB/s.
        assert_eq!(edge.on_drained(600, origin), None);
        assert_eq!(edge.on_drained(600, origin + Duration::from_millis(100)), None);
        let xon = edge.on_drained(600, origin + Duration::from_millis(200));
        // Measured over the last xon_interval_bytes: 600 B in 0.1 s.
        assert_eq!(xon, Some(FlowAdvisory::Xon { kib_per_s: 5 }));
        assert_eq!(edge.buffered(), 0);
        // Past the hard cap the peer ignored XOFF.
        assert_eq!(edge.on_data(4_000), Ok(Some(FlowAdvisory::Xoff)));
        assert_eq!(edge.on_data(1_001), Err(CongestionError::EdgeOverflow));
    }

    #[test]
    fn the_receiving_edge_readvertises_a_changed_rate() {
        let origin = t0();
        let params =
            FlowParams { xoff_bytes: 1_000, hard_cap_bytes: 50_000, xon_interval_bytes: 1_000, xon_change_pct: 25 };
        let mut edge = StreamRecvEdge::new(params);
        edge.on_data(1_500).unwrap();
        assert_eq!(edge.on_drained(1_500, origin), Some(FlowAdvisory::Xon { kib_per_s: 0 }));
        // 0 was advertised ("unlimited"); now it drains 1,000 B per second.
        let mut t = origin;
        let mut advisories = Vec::new();
        for _ in 0..5 {
            t += Duration::from_secs(1);
            edge.on_data(1_000).unwrap();
            advisories.extend(edge.on_drained(1_000, t));
        }
        assert_eq!(advisories.first(), Some(&FlowAdvisory::Xon { kib_per_s: 1 }), "{advisories:?}");
        assert_eq!(advisories.len(), 1, "a steady rate is advertised once: {advisories:?}");
    }

    #[test]
    fn the_sending_edge_refuses_early_xoff_and_xon_floods() {
        let now = t0();
        let params = FlowParams { xoff_bytes: 1_000, ..FlowParams::default() };
        let mut edge = StreamSendEdge::new(params);
        edge.on_packaged(999);
        assert_eq!(edge.on_xoff(), Err(CongestionError::XoffTooEarly), "the peer cannot have 1,000 bytes buffered");
        let mut edge = StreamSendEdge::new(params);
        edge.on_packaged(1_000);
        assert_eq!(edge.on_xoff(), Ok(()));
        assert_eq!(edge.budget(now), 0, "paused");
        assert_eq!(edge.on_xoff(), Err(CongestionError::XoffTooEarly), "a second XOFF needs another buffer of data");
        let mut edge = StreamSendEdge::new(params);
        let flood = (0..100).map(|_| edge.on_xon(1, now)).find(Result::is_err);
        assert_eq!(flood, Some(Err(CongestionError::UnsolicitedXon)));
    }

    #[test]
    fn xoff_bounds_the_edge_buffer_and_xon_paces_to_the_drain_rate() {
        // A fast sender, a 100 ms one-way circuit, a reader draining 100
        // KiB/s. Sender and receiver talk only through advisories.
        let origin = t0();
        let params = FlowParams::default();
        let mut send = StreamSendEdge::new(params);
        let mut recv = StreamRecvEdge::new(params);
        let one_way = Duration::from_millis(100);
        let step = Duration::from_millis(10);
        let drain_per_step = 1_024u64; // 100 KiB/s
        let mut in_flight: VecDeque<(Duration, u64)> = VecDeque::new();
        let mut advisories: VecDeque<(Duration, FlowAdvisory)> = VecDeque::new();
        let (mut max_buffered, mut delivered_late) = (0u64, 0u64);
        let mut now = Duration::ZERO;
        while now < Duration::from_secs(60) {
            while advisories.front().is_some_and(|(t, _)| *t <= now) {
                match advisories.pop_front().map(|(_, a)| a) {
                    Some(FlowAdvisory::Xoff) => send.on_xoff().unwrap(),
                    Some(FlowAdvisory::Xon { kib_per_s }) => send.on_xon(kib_per_s, origin + now).unwrap(),
                    None => {}
                }
            }
            // The sender packages up to 64 KiB per step, within its budget.
            let n = send.budget(origin + now).min(64 * 1024);
            if n > 0 {
                send.on_packaged(n);
                in_flight.push_back((now + one_way, n));
            }
            while in_flight.front().is_some_and(|(t, _)| *t <= now) {
                let (_, n) = in_flight.pop_front().unwrap();
                if let Some(a) = recv.on_data(n).unwrap() {
                    advisories.push_back((now + one_way, a));
                }
            }
            let drained = recv.buffered().min(drain_per_step);
            if drained > 0 {
                if let Some(a) = recv.on_drained(drained, origin + now) {
                    advisories.push_back((now + one_way, a));
                }
                if now >= Duration::from_secs(30) {
                    delivered_late += drained;
                }
            }
            max_buffered = max_buffered.max(recv.buffered());
            now += step;
        }
        assert!(max_buffered <= params.hard_cap_bytes, "buffer {max_buffered}");
        // Without XOFF the fast sender would have buffered ~60 s × 6.4 MB/s.
        assert!(max_buffered < 8 * 1024 * 1024, "buffer {max_buffered}");
        // The reader was kept busy: ≥ 90% of its rate in the second half.
        assert!(delivered_late >= 30 * 100 * 1024 * 9 / 10, "delivered {delivered_late}");
        assert!(send.rate().is_some(), "paced at an advised rate");
    }
}
