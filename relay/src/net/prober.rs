//! The reachability prober (spec §14.2): the driver of the sans-IO
//! [`ProbeScheduler`]. It dials the advertised address of the relays the
//! scheduler picks, completes the link handshake against the link key of
//! their descriptor, hangs up, and reports the outcome to the directory
//! task, which has the scheduler sign an attestation and hands it to the
//! gossip engine. No decision is made here: which relay, how often, how
//! many at once and what counts all live in `lamina_directory::attest`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lamina_crypto::keys::{IdentityKeypair, LinkPublicKey, RelayId};
use lamina_directory::attest::{AttestParams, Attestation, ProbeScheduler, ProbeTask};
use lamina_directory::Descriptor;
use rand_chacha::ChaCha20Rng;
use tracing::debug;

use super::cmd::DirCmd;
use super::registry::RelayContext;
use super::setup::open_relay;

/// Most relays the scheduler tracks.
const MAX_TARGETS: usize = 100_000;
/// How often the scheduler's peer set is refreshed from the store.
const TARGETS_EVERY: Duration = Duration::from_secs(1);

/// The prober state the directory task owns.
#[derive(Debug)]
pub struct Prober {
    /// The sans-IO scheduler.
    scheduler: ProbeScheduler,
    /// When the peer set was last refreshed.
    refreshed: Option<Instant>,
    /// How many descriptors the store held at that refresh.
    refreshed_len: usize,
}

impl Prober {
    /// A prober for relay `own` under `params`.
    pub fn new(own: RelayId, params: AttestParams) -> Self {
        Self { scheduler: ProbeScheduler::new(own, params, MAX_TARGETS), refreshed: None, refreshed_len: 0 }
    }

    /// Refresh the peer set (once a second, and at once when the store
    /// grew: a newcomer is probed as soon as it is known, so a fresh test
    /// network has attested relays at its first epoch boundary) and start
    /// every probe that is due; each reports back with [`DirCmd::Probed`].
    pub fn tick<'a>(
        &mut self,
        ctx: &Arc<RelayContext>,
        store_len: usize,
        descriptors: impl IntoIterator<Item = &'a Descriptor>,
        now_unix: u64,
        rng: &mut ChaCha20Rng,
    ) {
        if store_len > self.refreshed_len || self.refreshed.is_none_or(|t| t.elapsed() >= TARGETS_EVERY) {
            self.scheduler.set_targets(descriptors);
            self.refreshed = Some(Instant::now());
            self.refreshed_len = store_len;
        }
        while let Some(task) = self.scheduler.next_probe(now_unix, rng) {
            let ctx = Arc::clone(ctx);
            tokio::spawn(async move {
                let reached = probe(&ctx, task.address, task.subject, task.link_key).await;
                if !reached {
                    debug!(relay = %task.subject.short(), "reachability probe failed");
                }
                if let Some(tx) = &ctx.dir_inbox {
                    let _ = tx.send(DirCmd::Probed { task, reached }).await;
                }
            });
        }
    }

    /// A probe finished: the attestation to gossip, if it reached the relay.
    pub fn on_result(
        &mut self,
        task: &ProbeTask,
        reached: bool,
        now_unix: u64,
        epoch: u64,
        identity: &IdentityKeypair,
    ) -> Option<Attestation> {
        self.scheduler.on_result(task, reached, now_unix, epoch, identity)
    }
}

/// Connect to `addr` and complete the link handshake expecting `relay_id`
/// and `link_key` (the same set-up as an outbound link, bounded by the
/// handshake time-out); then hang up (no link is started).
async fn probe(ctx: &Arc<RelayContext>, addr: SocketAddr, relay_id: RelayId, link_key: LinkPublicKey) -> bool {
    open_relay(ctx, addr, relay_id, link_key).await.is_ok()
}
