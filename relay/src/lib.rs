#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod config;
pub mod exit_policy;
pub mod keys;
pub mod metrics;
pub mod net;

use std::net::SocketAddr;
use std::sync::Arc;

use lamina_crypto::keys::RelayId;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::exit_policy::ExitPolicy;
use crate::keys::RelayKeys;
use crate::net::directory::{DirSettings, DirectoryTask};
use crate::net::registry::{NetConfig, RelayContext};

/// A running relay (in this process).
#[derive(Debug)]
pub struct RelayHandle {
    /// Shared state of the relay's tasks.
    pub ctx: Arc<RelayContext>,
    /// The address the relay listens on.
    pub addr: SocketAddr,
    /// Flips to `true` to stop every task.
    shutdown: watch::Sender<bool>,
    /// The accept loop.
    task: JoinHandle<()>,
}

impl RelayHandle {
    /// The relay's identity.
    pub fn relay_id(&self) -> RelayId {
        self.ctx.relay_id
    }

    /// Stop accepting, close every link, and wait for the accept loop.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }

    /// Signal shutdown without waiting.
    pub fn stop(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// Start a relay on an already-bound `listener` (CONTRIBUTING.md P2: tests inject
/// it), without a directory (links and circuits only).
pub fn spawn(
    listener: TcpListener,
    keys: RelayKeys,
    policy: ExitPolicy,
    config: NetConfig,
) -> std::io::Result<RelayHandle> {
    spawn_with_directory(listener, keys, policy, config, None)
}

/// Start a relay that also takes part in the directory gossip with
/// `settings` (its descriptor is signed and published at once).
pub fn spawn_with_directory(
    listener: TcpListener,
    keys: RelayKeys,
    policy: ExitPolicy,
    config: NetConfig,
    settings: Option<DirSettings>,
) -> std::io::Result<RelayHandle> {
    let addr = listener.local_addr()?;
    let mut config = config;
    if config.bind_ip.is_none() && !addr.ip().is_unspecified() {
        config.bind_ip = Some(addr.ip());
    }
    let (shutdown, rx) = watch::channel(false);
    let (dir_tx, dir_rx) = tokio::sync::mpsc::channel(net::directory::DIR_INBOX);
    let dir_tx = settings.as_ref().map(|_| dir_tx);
    let ctx = RelayContext::new(keys, policy, config, rx, dir_tx);
    if let Some(settings) = settings {
        let task = DirectoryTask::new(Arc::clone(&ctx), settings).map_err(std::io::Error::other)?;
        tokio::spawn(task.run(dir_rx));
    }
    tokio::spawn(rotate_onion_keys(Arc::clone(&ctx)));
    let task = tokio::spawn(net::listener::serve(Arc::clone(&ctx), listener));
    Ok(RelayHandle { ctx, addr, shutdown, task })
}

/// Rotate the onion key every `onion_rotation` (spec §15.6): the first
/// rotation when the key on disk reaches that age, then at that interval;
/// each publishes a fresh descriptor. A failure to write the new key keeps
/// the old one (logged).
async fn rotate_onion_keys(ctx: Arc<RelayContext>) {
    let period = ctx.config.onion_rotation.max(std::time::Duration::from_secs(1));
    let age = ctx.config.key_dir.as_deref().and_then(keys::onion_key_age).unwrap_or_default();
    let mut wait = period.saturating_sub(age);
    let mut shutdown = ctx.shutdown.clone();
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {},
            _ = shutdown.changed() => return,
        }
        wait = period;
        let fresh = match &ctx.config.key_dir {
            Some(dir) => match keys::rotate_onion_on_disk(dir, &mut rand_core::OsRng) {
                Ok(fresh) => fresh,
                Err(e) => {
                    tracing::warn!("cannot rotate the onion key: {e}");
                    continue;
                }
            },
            None => lamina_crypto::keys::StaticKeypair::generate(&mut rand_core::OsRng),
        };
        ctx.rotate_onion(fresh);
        tracing::info!("rotated the onion key");
        if let Some(dir) = &ctx.dir_inbox {
            let _ = dir.try_send(net::directory::DirCmd::Republish);
        }
    }
}

/// Serve the Prometheus text format on `listener` until shutdown.
pub async fn serve_metrics(ctx: Arc<RelayContext>, listener: TcpListener) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut shutdown = ctx.shutdown.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let Ok((mut socket, _)) = accepted else { continue };
        let ctx = Arc::clone(&ctx);
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), socket.read(&mut request)).await;
            let body = ctx.metrics.render();
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(response.as_bytes()).await;
        });
    }
}
