//! Directory bootstrap (spec §13.4, §13.5): fetch
//! the snapshot from several seeds, verify every descriptor, recompute each
//! root over the set as served, and accept the root a majority of the seeds
//! agree on, logging any seed that disagrees. The link uses Noise `XX` and
//! the seed proves its identity with its link certificate; a seed given as
//! `RELAYID@IP:PORT` must prove that id or is refused. Votes count once per
//! relay id and once per /16, so one operator behind several addresses, or
//! one network block, is one vote. Seeds that answered different epochs are
//! asked again for the oldest of them, so roots are compared like with
//! like across a boundary.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lamina_crypto::keys::RelayId;
use lamina_directory::gossip::MAX_SERVED_PROOFS;
use lamina_directory::statement::{ChainHead, Continuity, EpochStatement, StatementConflict};
use lamina_directory::wire::{SnapshotRequest, MAX_REQUEST_CHUNKS};
use lamina_directory::{Epoch, ExitSummary, Message, NetBlock, Seed, SnapshotAssembler, VerifiedSnapshot};
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
use lamina_directory::weights::{path_weights, PathWeightParams};

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
    /// The signed statements of the agreeing seeds (spec §13.7).
    pub statements: Vec<EpochStatement>,
    /// Proofs that a seed signed two different statements for one epoch.
    pub conflicts: Vec<StatementConflict>,
}

/// What one seed served: its proven id, the verified snapshot and its
/// signed statement about it (older relays send none).
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The relay id the seed proved.
    pub id: RelayId,
    /// The snapshot.
    pub snapshot: VerifiedSnapshot,
    /// The seed's statement, checked: signed by `id`, same epoch, root and
    /// count as `snapshot`.
    pub statement: Option<EpochStatement>,
    /// Checked proofs the seed relayed that some relay signed two different
    /// statements for one epoch (spec §13.8; at most
    /// [`lamina_directory::gossip::MAX_SERVED_PROOFS`]).
    pub proofs: Vec<StatementConflict>,
}

/// Relate a freshly accepted directory to the chain head held, logging a
/// gap or a conflict, and return the new head (spec §13.7).
pub fn advance_chain(head: Option<ChainHead>, directory: &Directory) -> Option<ChainHead> {
    let Some(next) = directory.statements.first() else { return head };
    if let Some(held) = head {
        match held.check(next) {
            Continuity::Extends | Continuity::Same => {}
            Continuity::Gap => warn!(
                held = held.epoch.0,
                got = next.epoch.0,
                "directory chain gap: the new epoch does not continue the held root"
            ),
            Continuity::Conflict => {
                warn!(epoch = held.epoch.0, "directory chain conflict: another root for the held epoch")
            }
            Continuity::Older => {
                warn!(held = held.epoch.0, got = next.epoch.0, "seeds served an epoch older than the one held")
            }
        }
    }
    Some(ChainHead { epoch: next.epoch, root: next.root })
}

impl Directory {
    /// A directory taken on one source's word (a cache, one seed asked by
    /// `lamina-client dir`): no vote, no statements.
    pub fn unvoted(snapshot: VerifiedSnapshot, agreeing: Vec<SocketAddr>) -> Self {
        Self { snapshot, agreeing, disagreeing: Vec::new(), statements: Vec::new(), conflicts: Vec::new() }
    }

    /// The relays in the form path selection uses, with the earned path
    /// weights of spec §14.7. The production and test-network parameters
    /// give the same weights while nothing is measured and no age is agreed
    /// (the unmeasured cap and the advertised clip are the same in both).
    pub fn relays(&self) -> Vec<RelayInfo> {
        let weights = path_weights(&self.snapshot.descriptors, &PathWeightParams::production());
        self.snapshot
            .descriptors
            .iter()
            .zip(weights)
            .filter_map(|(d, weight)| {
                let addr = *d.addresses().first()?;
                let exit_ports = match d.exit() {
                    ExitSummary::NotExit => Vec::new(),
                    ExitSummary::Exit { ports } => ports.iter().map(|p| (p.lo, p.hi)).collect(),
                };
                Some(RelayInfo {
                    hop: HopSpec { relay_id: d.id(), onion_key: d.onion_key(), link_key: d.link_key(), addr },
                    bandwidth: d.bandwidth_kbps(),
                    weight,
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

/// How many epochs after its own a directory is still fresh enough to use
/// without a warning.
pub const FRESH_EPOCHS: u64 = 2;

/// When a directory of `epoch` becomes stale (unix seconds): the end of the
/// epoch [`FRESH_EPOCHS`] after its own. Past it the client still runs on
/// it (its descriptors verify until they expire) but says so.
pub fn stale_after(epoch: Epoch, epoch_secs: u64) -> u64 {
    epoch.0.saturating_add(1 + FRESH_EPOCHS).saturating_mul(epoch_secs.max(1))
}

/// Log, at warning level, that the directory of `epoch` is stale at
/// `now_unix`, if it is; returns whether it is.
pub fn warn_if_stale(epoch: Epoch, epoch_secs: u64, now_unix: u64) -> bool {
    let limit = stale_after(epoch, epoch_secs);
    if now_unix <= limit {
        return false;
    }
    warn!(epoch = epoch.0, stale_for_s = now_unix - limit, "running on a stale directory");
    true
}

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

/// Fetch and verify the newest snapshot of one unpinned seed. Returns the
/// seed's relay id (from its link certificate) and the verified snapshot.
pub async fn fetch_snapshot(seed: SocketAddr, params: DirParams) -> Result<(RelayId, VerifiedSnapshot), ClientError> {
    fetch_from(Seed::unpinned(seed), Epoch(0), params).await
}

/// Fetch and verify the snapshot of `epoch` (`Epoch(0)`: the newest the
/// seed serves) from `seed`, refusing a seed that proves another identity
/// than its pin.
pub async fn fetch_from(
    seed: Seed,
    epoch: Epoch,
    params: DirParams,
) -> Result<(RelayId, VerifiedSnapshot), ClientError> {
    fetch_signed(seed, epoch, params).await.map(|f| (f.id, f.snapshot))
}

/// As [`fetch_from`], with the seed's checked statement.
pub async fn fetch_signed(seed: Seed, epoch: Epoch, params: DirParams) -> Result<Fetched, ClientError> {
    fetch_skewed(seed, epoch, params, 0).await
}

/// As [`fetch_signed`], judging validity windows by the wall clock moved
/// by `skew_s` seconds (tests of a client whose clock is off).
async fn fetch_skewed(seed: Seed, epoch: Epoch, params: DirParams, skew_s: i64) -> Result<Fetched, ClientError> {
    tokio::time::timeout(params.timeout, fetch_inner(seed, epoch, params, skew_s))
        .await
        .map_err(|_| ClientError::Timeout("directory fetch"))?
}

/// The wall clock moved by `skew_s` seconds.
fn skewed_now(skew_s: i64) -> u64 {
    let now = unix_now();
    if skew_s >= 0 {
        now.saturating_add(skew_s.unsigned_abs())
    } else {
        now.saturating_sub(skew_s.unsigned_abs())
    }
}

/// The fetch without its time-out.
async fn fetch_inner(seed: Seed, epoch: Epoch, params: DirParams, skew_s: i64) -> Result<Fetched, ClientError> {
    let mut rng = ChaCha20Rng::from_rng(rand_core::OsRng).map_err(|_| ClientError::Internal("rng"))?;
    let mut socket = TcpStream::connect(seed.addr).await?;
    socket.set_nodelay(true)?;
    let hs = LinkHandshake::initiator(&mut rng, &LocalAuth::Anonymous, PeerExpectation::Unknown)?;
    let (mut tx, mut rx, peer, mut buf) = drive(&mut socket, hs, &mut rng).await?;
    let PeerIdentity::Relay(seed_id) = peer else {
        return Err(ClientError::Directory("the seed did not prove a relay identity".into()));
    };
    seed.check(&seed_id).map_err(ClientError::Directory)?;
    let mut assembler = SnapshotAssembler::new();
    let mut reassembler = Reassembler::new();
    let mut next_start: u16 = 0;
    let mut received: u16 = 0;
    let mut side = SideMessages::default();
    loop {
        if received == next_start {
            let req =
                Message::SnapshotRequest(SnapshotRequest { start: next_start, max_chunks: MAX_REQUEST_CHUNKS, epoch });
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
            let Some(chunk) = side.take(Message::decode(&message), seed_id, epoch)? else { continue };
            received = received.saturating_add(1);
            if let Some(snapshot) = assembler.add(&chunk).map_err(|e| ClientError::Directory(e.to_string()))? {
                let (verified, dropped) = snapshot
                    .verify_served(skewed_now(skew_s), params.pow_bits)
                    .map_err(|e| ClientError::Directory(format!("snapshot does not verify: {e}")))?;
                let served = verified.descriptors.len() + dropped.len();
                for (index, error) in dropped {
                    warn!(index, %error, "descriptor in the snapshot does not verify here; not used");
                }
                if side.statement.is_some_and(|s| {
                    (s.epoch, s.root, usize::try_from(s.count).ok()) != (verified.epoch, verified.root, Some(served))
                }) {
                    return Err(ClientError::Directory(
                        "the seed's signed statement does not match its snapshot".into(),
                    ));
                }
                return Ok(Fetched { id: seed_id, snapshot: verified, statement: side.statement, proofs: side.proofs });
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

/// What a seed sends besides the chunks: its statement and proofs.
#[derive(Debug, Default)]
struct SideMessages {
    /// The seed's statement (checked: signed by the seed).
    statement: Option<EpochStatement>,
    /// Checked proofs against lying relays (spec §13.8), bounded.
    proofs: Vec<StatementConflict>,
}

impl SideMessages {
    /// Keep a statement or proof; return a chunk; refuse anything else.
    fn take(
        &mut self,
        decoded: Result<Message, lamina_directory::WireError>,
        seed_id: RelayId,
        epoch: Epoch,
    ) -> Result<Option<lamina_directory::wire::SnapshotChunk>, ClientError> {
        match decoded {
            Ok(Message::SnapshotChunk(chunk)) => Ok(Some(chunk)),
            Ok(Message::Statement(s)) => {
                if s.relay != seed_id || !s.verify() {
                    return Err(ClientError::Directory("the statement is not signed by the seed".into()));
                }
                self.statement = Some(s);
                Ok(None)
            }
            Ok(Message::StatementConflict(proof)) => {
                // Checked here: a seed cannot void an honest relay's vote
                // with a forged proof.
                if proof.is_valid() && self.proofs.len() < MAX_SERVED_PROOFS && !self.proofs.contains(&*proof) {
                    self.proofs.push(*proof);
                }
                Ok(None)
            }
            Ok(Message::Unavailable { newest }) => Err(ClientError::Directory(format!(
                "the seed serves no snapshot of epoch {} (newest served: {newest})",
                epoch.0
            ))),
            _ => Err(ClientError::Directory("unexpected directory message".into())),
        }
    }
}

/// Bootstrap from unpinned `seeds` (see [`bootstrap_seeds`]).
pub async fn bootstrap(seeds: &[SocketAddr], params: DirParams) -> Result<Directory, ClientError> {
    let seeds: Vec<Seed> = seeds.iter().copied().map(Seed::unpinned).collect();
    bootstrap_seeds(&seeds, params).await
}

/// Bootstrap from `seeds`: fetch every seed's newest snapshot concurrently;
/// if they answered different epochs, ask the newer ones again for the
/// oldest epoch; accept the root a strict majority of the distinct seeds
/// serve (spec §13.4). Unpinned seeds are logged as unauthenticated;
/// disagreements are logged with the seed that disagreed.
pub async fn bootstrap_seeds(seeds: &[Seed], params: DirParams) -> Result<Directory, ClientError> {
    bootstrap_seeds_skewed(seeds, params, 0).await
}

/// As [`bootstrap_seeds`], for a client whose wall clock is `skew_s`
/// seconds off (descriptor validity is judged by that clock; spec §13.5).
pub async fn bootstrap_seeds_skewed(seeds: &[Seed], params: DirParams, skew_s: i64) -> Result<Directory, ClientError> {
    if seeds.is_empty() {
        return Err(ClientError::Directory("no seeds".into()));
    }
    for seed in seeds.iter().filter(|s| s.id.is_none()) {
        tracing::debug!(seed = %seed.addr, "seed is not pinned: its identity is not authenticated");
    }
    let mut results = fetch_all(seeds, Epoch(0), params, skew_s).await;
    let epochs: Vec<Epoch> = results.iter().filter_map(|r| r.outcome.as_ref().ok().map(|f| f.snapshot.epoch)).collect();
    if let (Some(lo), Some(hi)) = (epochs.iter().min().copied(), epochs.iter().max().copied()) {
        if lo != hi {
            let newer: Vec<Seed> = results
                .iter()
                .filter(|r| r.outcome.as_ref().is_ok_and(|f| f.snapshot.epoch != lo))
                .map(|r| r.seed)
                .collect();
            let again = fetch_all(&newer, lo, params, skew_s).await;
            for answer in again {
                if let Some(slot) = results.iter_mut().find(|r| r.seed == answer.seed) {
                    *slot = answer;
                }
            }
        }
    }
    decide(results)
}

/// Fetch `epoch` from every seed concurrently.
async fn fetch_all(seeds: &[Seed], epoch: Epoch, params: DirParams, skew_s: i64) -> Vec<SeedAnswer> {
    let fetches: Vec<_> = seeds.iter().map(|seed| tokio::spawn(fetch_skewed(*seed, epoch, params, skew_s))).collect();
    let mut results = Vec::with_capacity(seeds.len());
    for (seed, task) in seeds.iter().zip(fetches) {
        let outcome = match task.await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        results.push(SeedAnswer { seed: *seed, outcome });
    }
    results
}

/// One seed's answer: its relay id and snapshot, or what went wrong.
struct SeedAnswer {
    /// The seed asked.
    seed: Seed,
    /// What it served.
    outcome: Result<Fetched, String>,
}

/// Who casts a seed's vote: the relay it proved (or is pinned to), else
/// its address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Voter {
    /// A relay identity.
    Relay(RelayId),
    /// An unpinned seed that did not answer.
    Addr(SocketAddr),
}

/// Proofs that a relay signed two different statements for one epoch:
/// found among the answers (the same relay reached at several addresses)
/// or relayed by any seed from the relays' gossip (spec §13.8), one per
/// relay.
fn statement_conflicts(results: &[SeedAnswer]) -> Vec<StatementConflict> {
    let statements: Vec<EpochStatement> =
        results.iter().filter_map(|r| r.outcome.as_ref().ok().and_then(|f| f.statement)).collect();
    let mut out: Vec<StatementConflict> = Vec::new();
    for (i, a) in statements.iter().enumerate() {
        for b in statements.iter().skip(i + 1) {
            if let Some(proof) = StatementConflict::of(a, b) {
                if out.iter().all(|p| p.first.relay != a.relay) {
                    warn!(relay = %a.relay.to_hex(), epoch = a.epoch.0, "a seed signed two different statements for one epoch: proof kept, its votes ignored");
                    out.push(proof);
                }
            }
        }
    }
    for (seed, fetched) in results.iter().filter_map(|r| r.outcome.as_ref().ok().map(|f| (r.seed.addr, f))) {
        for proof in &fetched.proofs {
            if out.iter().all(|p| p.first.relay != proof.first.relay) {
                warn!(%seed, relay = %proof.first.relay.to_hex(), epoch = proof.first.epoch.0, "seed relayed a proof that a relay signed two statements for one epoch: its votes ignored");
                out.push(*proof);
            }
        }
    }
    out
}

/// One counted vote: the relay, the address it answered at, its statement.
type Vote = (RelayId, SocketAddr, Option<EpochStatement>);

/// The majority rule over the seeds' answers: one vote per relay id and
/// per /16 for a root, a strict majority of the distinct seeds asked; a
/// relay proven to have signed two statements for one epoch has no vote.
fn decide(results: Vec<SeedAnswer>) -> Result<Directory, ClientError> {
    let conflicts = statement_conflicts(&results);
    let liars: Vec<RelayId> = conflicts.iter().map(|c| c.first.relay).collect();
    let mut voters: Vec<Voter> = Vec::new();
    let mut votes: HashMap<[u8; 32], Vec<Vote>> = HashMap::new();
    let mut snapshots: HashMap<[u8; 32], VerifiedSnapshot> = HashMap::new();
    let mut failed = Vec::new();
    for SeedAnswer { seed, outcome } in &results {
        let voter = match outcome {
            Ok(f) => Voter::Relay(f.id),
            Err(_) => seed.id.map_or(Voter::Addr(seed.addr), Voter::Relay),
        };
        if !voters.contains(&voter) {
            voters.push(voter);
        }
        match outcome {
            Ok(f) if liars.contains(&f.id) => failed.push((seed.addr, "signed two statements for one epoch".into())),
            Ok(f) => {
                let list = votes.entry(f.snapshot.root).or_default();
                let block = NetBlock::of(&seed.addr);
                if list.iter().all(|(other, addr, _)| *other != f.id && NetBlock::of(addr) != block) {
                    list.push((f.id, seed.addr, f.statement));
                }
                snapshots.entry(f.snapshot.root).or_insert_with(|| f.snapshot.clone());
            }
            Err(e) => failed.push((seed.addr, e.clone())),
        }
    }
    let total = voters.len();
    let Some((root, agreeing)) = votes.iter().max_by_key(|(_, v)| v.len()).map(|(r, v)| (*r, v.clone())) else {
        return Err(ClientError::Directory(format!("no seed served a valid directory ({failed:?})")));
    };
    // A strict majority of all distinct seeds asked must agree: one liar
    // among three cannot win, and an answer from a lone seed is not enough.
    if agreeing.len() * 2 <= total {
        return Err(ClientError::Directory(format!(
            "no majority among {total} distinct seeds (best root served by {})",
            agreeing.len()
        )));
    }
    let mut disagreeing = failed;
    for SeedAnswer { seed, outcome } in &results {
        if let Ok(f) = outcome {
            if f.snapshot.root != root && !liars.contains(&f.id) {
                let other = hex(&f.snapshot.root);
                warn!(seed = %seed.addr, root = %other, accepted = %hex(&root), "seed served a different directory");
                disagreeing.push((seed.addr, format!("root {other}")));
            }
        }
    }
    for (seed, e) in disagreeing.iter().filter(|(_, e)| !e.starts_with("root ")) {
        warn!(%seed, error = %e, "seed failed to serve a valid directory");
    }
    let snapshot = snapshots.remove(&root).ok_or(ClientError::Internal("accepted root without snapshot"))?;
    info!(relays = snapshot.descriptors.len(), root = %hex(&root), seeds = agreeing.len(), "directory accepted");
    Ok(Directory {
        snapshot,
        agreeing: agreeing.iter().map(|(_, a, _)| *a).collect(),
        disagreeing,
        statements: agreeing.iter().filter_map(|(_, _, s)| *s).collect(),
        conflicts,
    })
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer from `addr` proving relay `id`, serving `root`.
    fn answer(id: u8, addr: &str, root: u8) -> SeedAnswer {
        let snapshot = VerifiedSnapshot { epoch: Epoch(1), root: [root; 32], descriptors: Vec::new() };
        let fetched = Fetched { id: RelayId([id; 32]), snapshot, statement: None, proofs: Vec::new() };
        SeedAnswer { seed: Seed::unpinned(addr.parse().unwrap()), outcome: Ok(fetched) }
    }

    /// An answer signed by the relay of secret `seed`.
    fn signed_answer(seed: u8, addr: &str, root: u8) -> SeedAnswer {
        let identity = lamina_crypto::keys::IdentityKeypair::from_secret_bytes(&[seed; 32]);
        let snapshot = VerifiedSnapshot { epoch: Epoch(1), root: [root; 32], descriptors: Vec::new() };
        let statement = EpochStatement::sign(&identity, Epoch(1), [root; 32], 0, [0; 32]);
        let fetched = Fetched { id: identity.relay_id(), snapshot, statement: Some(statement), proofs: Vec::new() };
        SeedAnswer { seed: Seed::unpinned(addr.parse().unwrap()), outcome: Ok(fetched) }
    }

    /// A relay reached at two addresses that signs two statements for one
    /// epoch is caught: the proof is kept, its votes ignored, and the
    /// honest seeds' root wins.
    #[test]
    fn a_seed_signing_two_statements_is_proven_and_ignored() {
        let answers = vec![
            signed_answer(9, "127.9.0.1:1", 5),
            signed_answer(9, "127.10.0.1:1", 6),
            signed_answer(1, "127.1.0.1:1", 6),
            signed_answer(2, "127.2.0.1:1", 6),
        ];
        let d = decide(answers).unwrap();
        assert_eq!(d.snapshot.root, [6; 32]);
        assert_eq!(d.agreeing.len(), 2, "the liar's matching answer is not a vote");
        assert_eq!(d.conflicts.len(), 1);
        assert!(d.conflicts[0].is_valid());
        assert_eq!(d.statements.len(), 2);
        let head = advance_chain(None, &d).unwrap();
        assert_eq!((head.epoch, head.root), (Epoch(1), [6; 32]));
    }

    /// Two seeds with one relay id are one vote: with a third seed that
    /// disagrees there is no majority; with one that agrees there is.
    #[test]
    fn one_relay_id_is_one_vote() {
        let twins = || vec![answer(1, "127.1.0.1:1", 7), answer(1, "127.2.0.1:1", 7)];
        let mut split = twins();
        split.push(answer(2, "127.3.0.1:1", 8));
        assert!(decide(split).is_err(), "the twins must not outvote the third seed");
        let mut agree = twins();
        agree.push(answer(2, "127.3.0.1:1", 7));
        let d = decide(agree).unwrap();
        assert_eq!(d.agreeing.len(), 2);
    }

    /// A directory is fresh for its epoch and two more, then stale.
    #[test]
    fn staleness() {
        assert_eq!(stale_after(Epoch(10), 60), 13 * 60);
        assert!(!warn_if_stale(Epoch(10), 60, 13 * 60));
        assert!(warn_if_stale(Epoch(10), 60, 13 * 60 + 1));
    }

    /// Two relays in one /16 are one vote too.
    #[test]
    fn one_block_is_one_vote() {
        let split = vec![answer(1, "127.1.0.1:1", 7), answer(2, "127.1.0.2:1", 7), answer(3, "127.3.0.1:1", 8)];
        assert!(decide(split).is_err());
    }
}
