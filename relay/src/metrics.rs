//! Relay counters and their Prometheus text rendering (`--metrics`).
//!
//! Plain atomics, updated with relaxed ordering on the hot path; the text
//! format is rendered on demand. No label carries an address or destination.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// One counter or gauge.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Add `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// Add one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Subtract one (gauges).
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Set (gauges).
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every counter the relay exports.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Links open now.
    pub links_open: Counter,
    /// Link handshakes completed.
    pub handshakes_ok: Counter,
    /// Link handshakes failed.
    pub handshakes_failed: Counter,
    /// Connections refused by a limit.
    pub connections_refused: Counter,
    /// Circuits created at this relay.
    pub circuits_created: Counter,
    /// Circuits closed (any reason) at this relay.
    pub circuits_closed: Counter,
    /// Circuits closed for a protocol violation by a peer.
    pub circuits_rejected_protocol: Counter,
    /// CREATEs refused by the rate limit.
    pub creates_rate_limited: Counter,
    /// Cells received on links.
    pub cells_in: Counter,
    /// Cells sent on links.
    pub cells_out: Counter,
    /// Bytes received on links.
    pub bytes_in: Counter,
    /// Bytes sent on links.
    pub bytes_out: Counter,
    /// Exit streams opened.
    pub streams_opened: Counter,
    /// Exit streams refused by the exit policy.
    pub streams_rejected_policy: Counter,
    /// Exit streams that failed to resolve or connect.
    pub streams_failed: Counter,
    /// Relays in the directory.
    pub directory_relays: Counter,
    /// Identities proven equivocating (descriptor pairs, spec §13.3).
    pub directory_equivocations: Counter,
    /// Relays proven to have signed two statements for one epoch (§13.8).
    pub directory_statement_conflicts: Counter,
    /// EXTENDs refused by the directory, self or address checks (spec §15.3).
    pub extends_refused: Counter,
    /// Anonymous links closed after their idle time-out (spec §15.5).
    pub links_idle_closed: Counter,
}

impl Metrics {
    /// Render in the Prometheus text exposition format.
    pub fn render(&self) -> String {
        let rows: [(&str, &str, &str, &Counter); 20] = [
            ("lamina_links_open", "gauge", "Links open now", &self.links_open),
            ("lamina_handshakes_total", "counter", "Link handshakes completed", &self.handshakes_ok),
            ("lamina_handshakes_failed_total", "counter", "Link handshakes failed", &self.handshakes_failed),
            (
                "lamina_connections_refused_total",
                "counter",
                "Connections refused by a limit",
                &self.connections_refused,
            ),
            ("lamina_circuits_created_total", "counter", "Circuits created here", &self.circuits_created),
            ("lamina_circuits_closed_total", "counter", "Circuits closed here", &self.circuits_closed),
            (
                "lamina_circuits_rejected_total",
                "counter",
                "Circuits closed for a protocol violation",
                &self.circuits_rejected_protocol,
            ),
            (
                "lamina_creates_rate_limited_total",
                "counter",
                "CREATE cells refused by the rate limit",
                &self.creates_rate_limited,
            ),
            ("lamina_cells_received_total", "counter", "Cells received", &self.cells_in),
            ("lamina_cells_sent_total", "counter", "Cells sent", &self.cells_out),
            ("lamina_link_bytes_received_total", "counter", "Link bytes received", &self.bytes_in),
            ("lamina_link_bytes_sent_total", "counter", "Link bytes sent", &self.bytes_out),
            ("lamina_exit_streams_opened_total", "counter", "Exit streams opened", &self.streams_opened),
            (
                "lamina_exit_streams_rejected_policy_total",
                "counter",
                "Exit streams refused by the policy",
                &self.streams_rejected_policy,
            ),
            ("lamina_exit_streams_failed_total", "counter", "Exit streams that failed", &self.streams_failed),
            ("lamina_directory_relays", "gauge", "Relays in the directory", &self.directory_relays),
            (
                "lamina_directory_equivocations_total",
                "counter",
                "Identities proven equivocating",
                &self.directory_equivocations,
            ),
            (
                "lamina_directory_statement_conflicts_total",
                "counter",
                "Relays proven to have signed two statements for one epoch",
                &self.directory_statement_conflicts,
            ),
            ("lamina_extends_refused_total", "counter", "EXTENDs refused before dialling", &self.extends_refused),
            ("lamina_links_idle_closed_total", "counter", "Idle anonymous links closed", &self.links_idle_closed),
        ];
        let mut out = String::new();
        for (name, kind, help, counter) in rows {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}", counter.get());
        }
        out
    }
}
