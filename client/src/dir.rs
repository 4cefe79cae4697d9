//! Directory bootstrap (DESIGN.md §4 "Directory"): fetch the snapshot from
//! several seeds, verify every descriptor, recompute each root, and accept
//! the root a majority of the seeds agree on, logging any seed that
//! disagrees. A seed is known only by its address, so the link uses Noise
//! `XX` and the seed proves its identity with its link certificate; the
//! snapshot itself is trusted only through the descriptors' signatures and
//! the cross-check between seeds.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lamina_crypto::keys::RelayId;
use lamina_directory::wire::{SnapshotRequest, MAX_REQUEST_CHUNKS};
use lamina_directory::{ExitSummary, Message, SnapshotAssembler, VerifiedSnapshot};
use lamina_proto::cell::{Cell, CellCommand, CELL_LEN};
use lamina_proto::circuit::client::HopSpec;
use lamina_proto::dirlink::{fragment, Reassembler};
use lamina_proto::link::{LinkHandshake, LocalAuth, PeerExpectation, PeerIdentity, MAX_BATCH_CELLS};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{info, warn};

use crate::error::ClientError;
use crate::net::guard::drive;
use crate::path::RelayInfo;

/// Settings the whole network agrees on, needed to verify descriptors.
#[derive(Debug, Clone, Copy)]
pub struct DirParams {
    /// Proof-of-work bits every descriptor must carry.
    pub pow_bits: u8,
    /// Time allowed per seed.
    pub timeout: Duration,
}

impl Default for DirParams {
    fn default() -> Self {
        Self { pow_bits: lamina_directory::descriptor::pow::DEFAULT_POW_DIFFICULTY, timeout: Duration::from_secs(15) }
    }
}

/// A verified directory and how the seeds voted.
#[derive(Debug, Clone)]
pub struct Directory {
    /// The accepted snapshot.
    pub snapshot: VerifiedSnapshot,
    /// Seeds that served the accepted root.
    pub agreeing: Vec<SocketAddr>,
    /// Seeds that served another root or failed, with what went wrong.
    pub disagreeing: Vec<(SocketAddr, String)>,
}

impl Directory {
    /// The relays in the form path selection uses.
    pub fn relays(&self) -> Vec<RelayInfo> {
        self.snapshot
            .descriptors
            .iter()
            .filter_map(|d| {
                let addr = *d.addresses().first()?;
                let exit_ports = match d.exit() {
                    ExitSummary::NotExit => Vec::new(),
                    ExitSummary::Exit { ports } => ports.iter().map(|p| (p.lo, p.hi)).collect(),
                };
                Some(RelayInfo {
                    hop: HopSpec { relay_id: d.id(), onion_key: d.onion_key(), link_key: d.link_key(), addr },
                    bandwidth: d.bandwidth_kbps(),
                    family: d.family().to_vec(),
                    exit_ports,
                })
            })
            .collect()
    }
}

/// File name of the cached directory inside a client's data directory.
pub const CACHE_FILE: &str = "directory.bin";
/// Most bytes of cache read back.
const MAX_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Save the accepted snapshot in `dir` (it is re-verified when loaded).
pub fn save_cache(dir: &std::path::Path, snapshot: &VerifiedSnapshot) -> std::io::Result<()> {
    let raw = lamina_directory::Snapshot {
        epoch: snapshot.epoch,
        root: snapshot.root,
        descriptors: snapshot.descriptors.iter().map(|d| d.as_bytes().to_vec()).collect(),
    };
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!("{CACHE_FILE}.tmp"));
    std::fs::write(&tmp, raw.encode())?;
    std::fs::rename(tmp, dir.join(CACHE_FILE))
}

/// Load the cached snapshot from `dir` and verify it again now (signatures,
/// validity windows, root): a stale or tampered cache is refused.
pub fn load_cache(dir: &std::path::Path, params: DirParams) -> Result<VerifiedSnapshot, ClientError> {
    let path = dir.join(CACHE_FILE);
    let len = std::fs::metadata(&path)?.len();
    if len > MAX_CACHE_BYTES {
        return Err(ClientError::Directory("cached directory too large".into()));
    }
    let bytes = std::fs::read(&path)?;
    let snapshot = lamina_directory::Snapshot::decode(&bytes).map_err(|e| ClientError::Directory(e.to_string()))?;
    snapshot.verify_all(unix_now(), params.pow_bits).map_err(|e| ClientError::Directory(e.to_string()))
}

/// Wall-clock unix seconds.
fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Fetch and verify the snapshot of one seed. Returns the seed's relay id
/// (from its link certificate) and the verified snapshot.
pub async fn fetch_snapshot(seed: SocketAddr, params: DirParams) -> Result<(RelayId, VerifiedSnapshot), ClientError> {
    tokio::time::timeout(params.timeout, fetch_inner(seed, params))
        .await
        .map_err(|_| ClientError::Timeout("directory fetch"))?
}

/// The fetch without its time-out.
async fn fetch_inner(seed: SocketAddr, params: DirParams) -> Result<(RelayId, VerifiedSnapshot), ClientError> {
    let mut rng = ChaCha20Rng::from_rng(rand_core::OsRng).map_err(|_| ClientError::Internal("rng"))?;
    let mut socket = TcpStream::connect(seed).await?;
    socket.set_nodelay(true)?;
    let hs = LinkHandshake::initiator(&mut rng, &LocalAuth::Anonymous, PeerExpectation::Unknown)?;
    let (mut tx, mut rx, peer, mut buf) = drive(&mut socket, hs, &mut rng).await?;
    let PeerIdentity::Relay(seed_id) = peer else {
        return Err(ClientError::Directory("the seed did not prove a relay identity".into()));
    };
    let mut assembler = SnapshotAssembler::new();
    let mut reassembler = Reassembler::new();
    let mut next_start: u16 = 0;
    let mut received: u16 = 0;
    loop {
        if received == next_start {
            let req = Message::SnapshotRequest(SnapshotRequest { start: next_start, max_chunks: MAX_REQUEST_CHUNKS });
            let bytes = req.to_vec().map_err(|_| ClientError::Internal("encode snapshot request"))?;
            let cells = fragment(&bytes).ok_or(ClientError::Internal("fragment snapshot request"))?;
            let mut out = Vec::new();
            tx.seal_cells(&cells, &mut out)?;
            socket.write_all(&out).await?;
            next_start = next_start.saturating_add(u16::from(MAX_REQUEST_CHUNKS));
        }
        let mut cells: Vec<Cell> = Vec::new();
        while let Some(used) = rx.open_frame(&buf, &mut cells)? {
            buf.drain(..used);
        }
        for cell in cells.iter().filter(|c| c.command == CellCommand::Directory) {
            let Some(message) = reassembler.push(cell).map_err(|e| ClientError::Directory(e.to_string()))? else {
                continue;
            };
            let Ok(Message::SnapshotChunk(chunk)) = Message::decode(&message) else {
                return Err(ClientError::Directory("unexpected directory message".into()));
            };
            received = received.saturating_add(1);
            if let Some(snapshot) = assembler.add(&chunk).map_err(|e| ClientError::Directory(e.to_string()))? {
                let verified = snapshot
                    .verify_all(unix_now(), params.pow_bits)
                    .map_err(|e| ClientError::Directory(format!("snapshot does not verify: {e}")))?;
                return Ok((seed_id, verified));
            }
        }
        if buf.capacity() - buf.len() < MAX_BATCH_CELLS * CELL_LEN {
            buf.reserve(64 * 1024);
        }
        if socket.read_buf(&mut buf).await? == 0 {
            return Err(ClientError::LinkClosed);
        }
    }
}

/// Bootstrap from `seeds`: fetch every seed's snapshot concurrently and
/// accept the root that a strict majority of the seeds that answered agree
/// on. Disagreements are logged with the seed that disagreed.
pub async fn bootstrap(seeds: &[SocketAddr], params: DirParams) -> Result<Directory, ClientError> {
    if seeds.is_empty() {
        return Err(ClientError::Directory("no seeds".into()));
    }
    let fetches: Vec<_> = seeds.iter().map(|seed| tokio::spawn(fetch_snapshot(*seed, params))).collect();
    let mut results = Vec::with_capacity(seeds.len());
    for (seed, task) in seeds.iter().zip(fetches) {
        let outcome = match task.await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        results.push(SeedAnswer { seed: *seed, outcome });
    }
    decide(results)
}

/// One seed's answer: its relay id and snapshot, or what went wrong.
struct SeedAnswer {
    /// The seed asked.
    seed: SocketAddr,
    /// What it served.
    outcome: Result<(RelayId, VerifiedSnapshot), String>,
}

/// The majority rule over the seeds' answers.
fn decide(results: Vec<SeedAnswer>) -> Result<Directory, ClientError> {
    let mut votes: HashMap<[u8; 32], Vec<SocketAddr>> = HashMap::new();
    let mut snapshots: HashMap<[u8; 32], VerifiedSnapshot> = HashMap::new();
    let mut failed = Vec::new();
    for SeedAnswer { seed, outcome } in &results {
        match outcome {
            Ok((_, snap)) => {
                votes.entry(snap.root).or_default().push(*seed);
                snapshots.entry(snap.root).or_insert_with(|| snap.clone());
            }
            Err(e) => failed.push((*seed, e.clone())),
        }
    }
    let total = results.len();
    let Some((root, agreeing)) = votes.iter().max_by_key(|(_, v)| v.len()).map(|(r, v)| (*r, v.clone())) else {
        return Err(ClientError::Directory(format!("no seed served a valid directory ({failed:?})")));
    };
    // A strict majority of all seeds asked must agree: one liar among three
    // cannot win, and an answer from a lone seed is not enough.
    if agreeing.len() * 2 <= total {
        return Err(ClientError::Directory(format!(
            "no majority among {total} seeds (best root served by {})",
            agreeing.len()
        )));
    }
    let mut disagreeing = failed;
    for (other, seeds) in &votes {
        if *other != root {
            for seed in seeds {
                warn!(%seed, root = %hex(other), accepted = %hex(&root), "seed served a different directory");
                disagreeing.push((*seed, format!("root {}", hex(other))));
            }
        }
    }
    for (seed, e) in disagreeing.iter().filter(|(_, e)| !e.starts_with("root ")) {
        warn!(%seed, error = %e, "seed failed to serve a valid directory");
    }
    let snapshot = snapshots.remove(&root).ok_or(ClientError::Internal("accepted root without snapshot"))?;
    info!(relays = snapshot.descriptors.len(), root = %hex(&root), seeds = agreeing.len(), "directory accepted");
    Ok(Directory { snapshot, agreeing, disagreeing })
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
