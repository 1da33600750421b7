//! The raft log and snapshots of one coord server, kept in memory for raft and made durable
//! through the Env's Disk.
//!
//! On disk the log is a sequence of segments, `raft/log-NNNNNNNNNN`, each a sequence of records
//! `u32 length, u8 kind, u64 checksum, protobuf bytes` (kind 1 for an entry, 2 for a hard state),
//! and each snapshot is one record (kind 3) in `raft/snapshot-<index>`. A server appends only to
//! its newest segment; it starts a new one (beginning with the hard state, so the vote survives
//! the old ones' removal) when it starts and when it begins a snapshot. Snapshots are written
//! beside the server's work, off its core loop: once one is durable, older snapshots and every
//! segment whose entries it covers are removed. Recovery takes the newest intact snapshot and
//! replays the segments in order, each up to its first torn or damaged record (only the segment
//! being written at a crash can have one; nothing is ever appended after it).
//!
//! `raft/log` and `raft/snapshot`, the layout of earlier versions, are read as the oldest segment
//! and the oldest snapshot.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use drover_core::record::{encode as record, next as next_record};
use drover_core::Env;
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

const DIRECTORY: &str = "raft/";
const SEGMENT_PREFIX: &str = "raft/log-";
const SNAPSHOT_PREFIX: &str = "raft/snapshot-";
const LEGACY_LOG: &str = "raft/log";
const LEGACY_SNAPSHOT: &str = "raft/snapshot";
const ENTRY: u8 = 1;
const HARD_STATE: u8 = 2;
const SNAPSHOT: u8 = 3;

/// raft's view of the log: the in-memory log plus the latest snapshot with its data, and the
/// files that hold them.
#[derive(Clone)]
pub struct RaftLog {
    memory: MemStorage,
    snapshot: Arc<Mutex<Snapshot>>,
    files: Arc<Mutex<Files>>,
    /// Records for the current segment not yet handed to the disk: [`RaftLog::sync`] appends
    /// and syncs them in one operation.
    unwritten: Arc<Mutex<Vec<u8>>>,
}

/// What is on disk besides the snapshot in use.
#[derive(Default)]
struct Files {
    /// The segment appended to, and the highest entry index it holds.
    current: (u64, u64),
    /// Earlier segments (oldest first) with the highest entry index each holds.
    closed: Vec<(String, u64)>,
    /// Snapshot files, oldest first, with their indexes.
    snapshots: Vec<(String, u64)>,
}

fn storage_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

fn segment_name(number: u64) -> String {
    format!("{SEGMENT_PREFIX}{number:010}")
}

fn snapshot_name(index: u64) -> String {
    format!("{SNAPSHOT_PREFIX}{index:020}")
}

/// A snapshot file's content: one record, so a torn or damaged file is told from a whole one.
fn parse_snapshot(name: &str, bytes: &[u8]) -> Option<Snapshot> {
    let body = if name == LEGACY_SNAPSHOT {
        bytes
    } else {
        match next_record(bytes) {
            Some((SNAPSHOT, body, length)) if length == bytes.len() => body,
            _ => return None,
        }
    };
    Snapshot::parse_from_bytes(body).ok()
}

/// Makes a snapshot durable in a file of its own (named by its index); returns the name.
async fn write_snapshot(env: &Env, snapshot: &Snapshot) -> std::io::Result<String> {
    let name = snapshot_name(snapshot.get_metadata().index);
    let body = snapshot.write_to_bytes().map_err(storage_error)?;
    env.disk()
        .write(&name, Bytes::from(record(SNAPSHOT, &body)))
        .await?;
    env.disk().sync(&name).await?;
    Ok(name)
}

/// A snapshot begun by [`RaftLog::begin_snapshot`]: its metadata, waiting for its data.
pub struct PendingSnapshot {
    snapshot: Snapshot,
    /// The segment started with it: durable before anything older is removed.
    segment: String,
}

/// A snapshot made durable by [`PendingSnapshot::write`], for [`RaftLog::snapshot_written`].
pub struct WrittenSnapshot {
    snapshot: Snapshot,
    file: String,
}

impl PendingSnapshot {
    pub fn index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    /// Writes and syncs the snapshot with `data`, and the segment begun with it. Needs nothing of
    /// the log's: run it beside the core loop.
    pub async fn write(mut self, env: &Env, data: Bytes) -> std::io::Result<WrittenSnapshot> {
        self.snapshot.data = data;
        let file = write_snapshot(env, &self.snapshot).await?;
        env.disk().sync(&self.segment).await?;
        Ok(WrittenSnapshot {
            snapshot: self.snapshot,
            file,
        })
    }
}

impl WrittenSnapshot {
    pub fn index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }
}

impl RaftLog {
    /// Recovers the log from disk, or starts a new one with `voters`.
    pub async fn open(env: &Env, voters: &[u64]) -> std::io::Result<RaftLog> {
        let memory = MemStorage::new();
        let names = env.disk().list(DIRECTORY).await?;
        let mut snapshot_files: Vec<(String, u64)> = Vec::new();
        let mut snapshot = None;
        // Newest first: the legacy file has no index in its name and is the oldest.
        let candidates = names
            .iter()
            .filter(|n| n.starts_with(SNAPSHOT_PREFIX))
            .rev()
            .chain(names.iter().filter(|n| *n == LEGACY_SNAPSHOT));
        for name in candidates {
            let Some(bytes) = env.disk().read(name).await? else {
                continue;
            };
            match parse_snapshot(name, &bytes) {
                Some(found) => {
                    snapshot_files.push((name.clone(), found.get_metadata().index));
                    if snapshot.is_none() {
                        snapshot = Some(found);
                    }
                }
                None => tracing::warn!(file = %name, "raft: skipping a torn or damaged snapshot"),
            }
        }
        snapshot_files.reverse();
        let snapshot = match snapshot {
            Some(snapshot) => {
                memory
                    .wl()
                    .apply_snapshot(snapshot.clone())
                    .map_err(storage_error)?;
                snapshot
            }
            None => {
                let mut snapshot = Snapshot::default();
                let mut conf = ConfState::default();
                conf.set_voters(voters.to_vec());
                memory.wl().set_conf_state(conf.clone());
                snapshot.mut_metadata().set_conf_state(conf);
                snapshot
            }
        };
        let mut segments: Vec<&String> = names
            .iter()
            .filter(|n| {
                n.starts_with(SEGMENT_PREFIX) && n[SEGMENT_PREFIX.len()..].parse::<u64>().is_ok()
            })
            .collect();
        segments.sort_by_key(|n| n[SEGMENT_PREFIX.len()..].parse::<u64>().unwrap_or(0));
        let last_number = segments
            .last()
            .and_then(|n| n[SEGMENT_PREFIX.len()..].parse::<u64>().ok())
            .unwrap_or(0);
        let legacy = names.iter().filter(|n| *n == LEGACY_LOG);
        let mut closed = Vec::new();
        for name in legacy.chain(segments) {
            let Some(log) = env.disk().read(name).await? else {
                continue;
            };
            let (mut valid, mut highest) = (0, 0);
            while let Some((kind, body, length)) = next_record(&log[valid..]) {
                let applied = match kind {
                    ENTRY => match Entry::parse_from_bytes(body) {
                        Ok(entry) => {
                            let first = memory.first_index().map_err(storage_error)?;
                            let last = memory.last_index().map_err(storage_error)?;
                            highest = highest.max(entry.index);
                            if entry.index > last + 1 {
                                // Entries missing before this one (a lost snapshot): what
                                // follows cannot be used.
                                tracing::warn!(segment = %name, last, next = entry.index, "raft log: a gap");
                                false
                            } else {
                                if entry.index >= first {
                                    memory.wl().append(&[entry]).map_err(storage_error)?;
                                }
                                true
                            }
                        }
                        Err(_) => false,
                    },
                    HARD_STATE => match HardState::parse_from_bytes(body) {
                        Ok(state) => {
                            memory.wl().set_hardstate(state);
                            true
                        }
                        Err(_) => false,
                    },
                    _ => false,
                };
                if !applied {
                    break;
                }
                valid += length;
            }
            if valid < log.len() {
                // A record torn by a crash (or damaged): this segment ends before it. Nothing is
                // appended to it again (a new segment starts below).
                tracing::warn!(
                    segment = %name,
                    kept = valid,
                    dropped = log.len() - valid,
                    "raft log: ignoring a torn or damaged tail"
                );
            }
            closed.push((name.clone(), highest));
        }
        // A crash between writing a snapshot and removing what it covers leaves older hard state
        // behind the snapshot: nothing before the snapshot can be uncommitted.
        let metadata = snapshot.get_metadata().clone();
        let mut state = memory.rl().hard_state().clone();
        if state.commit < metadata.index || state.term < metadata.term {
            state.commit = state.commit.max(metadata.index);
            state.term = state.term.max(metadata.term);
            memory.wl().set_hardstate(state.clone());
        }
        // A disk that lost what it had synced can leave the commit index past the log: only
        // what is here is known committed here (raft would refuse to start otherwise).
        let last = memory.last_index().map_err(storage_error)?;
        if state.commit > last {
            tracing::warn!(
                commit = state.commit,
                last,
                "raft log: commit index past the log"
            );
            state.commit = last;
            memory.wl().set_hardstate(state);
        }
        // The newest segment is the current one until the roll below closes it.
        let current = match closed.last() {
            Some((name, highest)) if last_number > 0 && *name == segment_name(last_number) => {
                let highest = *highest;
                closed.pop();
                (last_number, highest)
            }
            _ => (0, 0),
        };
        let log = RaftLog {
            memory,
            snapshot: Arc::new(Mutex::new(snapshot)),
            files: Arc::new(Mutex::new(Files {
                current,
                closed,
                snapshots: snapshot_files,
            })),
            unwritten: Arc::default(),
        };
        log.roll(env).await?;
        Ok(log)
    }

    pub fn snapshot_index(&self) -> u64 {
        self.lock_snapshot().get_metadata().index
    }

    fn lock_snapshot(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_files(&self) -> std::sync::MutexGuard<'_, Files> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn current_segment(&self) -> String {
        segment_name(self.lock_files().current.0)
    }

    /// The data of the latest snapshot (the state machine at its index).
    pub fn snapshot_data(&self) -> Bytes {
        self.lock_snapshot().data.clone()
    }

    pub fn hard_state(&self) -> HardState {
        self.memory.rl().hard_state().clone()
    }

    fn lock_unwritten(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.unwritten.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends entries (replacing any conflicting suffix): raft reads them at once; they reach
    /// the disk with the next [`RaftLog::sync`].
    pub fn append(&self, entries: &[Entry]) -> std::io::Result<()> {
        self.memory.wl().append(entries).map_err(storage_error)?;
        let mut unwritten = self.lock_unwritten();
        for entry in entries {
            let body = entry.write_to_bytes().map_err(storage_error)?;
            drover_core::record::put(&mut unwritten, ENTRY, &body);
        }
        if let Some(last) = entries.last() {
            let mut files = self.lock_files();
            files.current.1 = files.current.1.max(last.index);
        }
        Ok(())
    }

    /// Sets the hard state; it reaches the disk with the next [`RaftLog::sync`].
    pub fn set_hard_state(&self, state: HardState) -> std::io::Result<()> {
        let body = state.write_to_bytes().map_err(storage_error)?;
        drover_core::record::put(&mut self.lock_unwritten(), HARD_STATE, &body);
        self.memory.wl().set_hardstate(state);
        Ok(())
    }

    /// Makes everything appended and set so far durable: one append and sync of the current
    /// segment (one trip to the disk, however many entries a raft ready held).
    pub async fn sync(&self, env: &Env) -> std::io::Result<()> {
        let unwritten = std::mem::take(&mut *self.lock_unwritten());
        let segment = self.current_segment();
        if unwritten.is_empty() {
            env.disk().sync(&segment).await
        } else {
            env.disk()
                .append_and_sync(&segment, Bytes::from(unwritten))
                .await
        }
    }

    /// Hands the records not yet written to the disk, unsynced (before the segment changes).
    async fn write_unwritten(&self, env: &Env) -> std::io::Result<()> {
        let unwritten = std::mem::take(&mut *self.lock_unwritten());
        if unwritten.is_empty() {
            return Ok(());
        }
        env.disk()
            .append(&self.current_segment(), Bytes::from(unwritten))
            .await
    }

    /// Closes the current segment and starts the next with the hard state; returns its name.
    /// Nothing is synced: every entry of the closed segment already is, and the new segment is
    /// synced before anything it supersedes is removed.
    async fn roll(&self, env: &Env) -> std::io::Result<String> {
        self.write_unwritten(env).await?;
        let next = {
            let mut files = self.lock_files();
            let (number, highest) = files.current;
            if number > 0 {
                files.closed.push((segment_name(number), highest));
            }
            files.current = (number + 1, 0);
            segment_name(number + 1)
        };
        let state = self.hard_state();
        let bytes = record(HARD_STATE, &state.write_to_bytes().map_err(storage_error)?);
        env.disk().append(&next, Bytes::from(bytes)).await?;
        Ok(next)
    }

    /// Begins a snapshot of the state machine at `index` (applied): starts a new segment, so the
    /// ones before can go once the snapshot is durable, and returns the snapshot to write (with
    /// [`PendingSnapshot::write`], off the core loop).
    pub async fn begin_snapshot(&self, env: &Env, index: u64) -> std::io::Result<PendingSnapshot> {
        let term = self.memory.term(index).map_err(storage_error)?;
        let mut snapshot = Snapshot::default();
        let metadata = snapshot.mut_metadata();
        metadata.index = index;
        metadata.term = term;
        metadata.set_conf_state(
            self.memory
                .initial_state()
                .map_err(storage_error)?
                .conf_state,
        );
        let segment = self.roll(env).await?;
        Ok(PendingSnapshot { snapshot, segment })
    }

    /// A snapshot is durable: the in-memory log is compacted up to it, and older snapshots and
    /// the segments it covers are removed. A snapshot older than the one in use (one from the
    /// leader was installed meanwhile) is removed instead. Returns whether it was taken.
    pub async fn snapshot_written(
        &self,
        env: &Env,
        written: WrittenSnapshot,
    ) -> std::io::Result<bool> {
        let WrittenSnapshot { snapshot, file } = written;
        let index = snapshot.get_metadata().index;
        if index <= self.snapshot_index() {
            // Unless it is the very file of the snapshot in use (same index, same name).
            if !self
                .lock_files()
                .snapshots
                .iter()
                .any(|(name, _)| *name == file)
            {
                env.disk().remove(&file).await?;
            }
            return Ok(false);
        }
        self.memory.wl().compact(index).map_err(storage_error)?;
        *self.lock_snapshot() = snapshot;
        self.lock_files().snapshots.push((file, index));
        self.remove_covered(env, index).await?;
        Ok(true)
    }

    /// Installs a snapshot received from the leader.
    pub async fn install_snapshot(&self, env: &Env, snapshot: Snapshot) -> std::io::Result<()> {
        self.memory
            .wl()
            .apply_snapshot(snapshot.clone())
            .map_err(storage_error)?;
        let index = snapshot.get_metadata().index;
        let name = write_snapshot(env, &snapshot).await?;
        *self.lock_snapshot() = snapshot;
        self.lock_files().snapshots.push((name, index));
        // The segments' entries are all replaced by the snapshot: none of them is kept, and the
        // hard state is in the new segment first.
        let current = self.roll(env).await?;
        env.disk().sync(&current).await?;
        let segments = std::mem::take(&mut self.lock_files().closed);
        for (segment, _) in segments {
            env.disk().remove(&segment).await?;
            env.disk().sync(&segment).await?;
        }
        self.remove_covered(env, index).await
    }

    /// Removes snapshots older than the one at `index` and closed segments it covers.
    async fn remove_covered(&self, env: &Env, index: u64) -> std::io::Result<()> {
        let doomed: Vec<String> = {
            let mut files = self.lock_files();
            let mut doomed = Vec::new();
            files.snapshots.retain(|(name, at)| {
                let keep = *at >= index;
                if !keep {
                    doomed.push(name.clone());
                }
                keep
            });
            files.closed.retain(|(name, highest)| {
                let keep = *highest > index;
                if !keep {
                    doomed.push(name.clone());
                }
                keep
            });
            doomed
        };
        for name in &doomed {
            env.disk().remove(name).await?;
        }
        // Leftovers of a crash before these removals are durable are harmless: recovery takes
        // the newest snapshot and skips entries it covers.
        Ok(())
    }
}

impl Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.memory.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.memory.entries(low, high, max_size, context)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        self.memory.term(index)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.memory.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.memory.last_index()
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let snapshot = self.lock_snapshot().clone();
        if snapshot.get_metadata().index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index,
            term,
            data: vec![index as u8].into(),
            ..Default::default()
        }
    }

    fn state(term: u64, commit: u64) -> HardState {
        HardState {
            term,
            vote: 1,
            commit,
            ..Default::default()
        }
    }

    fn last(log: &RaftLog) -> u64 {
        log.last_index().unwrap()
    }

    struct Dir(std::path::PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir =
                std::env::temp_dir().join(format!("drover-raftlog-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Dir(dir)
        }

        fn env(&self) -> Env {
            drover_core::env::live::env("coord-1", &self.0, Some(1))
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn snapshot_at(log: &RaftLog, env: &Env, index: u64, data: &'static [u8]) -> bool {
        let pending = log.begin_snapshot(env, index).await.unwrap();
        let written = pending.write(env, Bytes::from_static(data)).await.unwrap();
        log.snapshot_written(env, written).await.unwrap()
    }

    /// Installs a snapshot the leader sent, at `index` of `term`.
    async fn install_leaders(log: &RaftLog, env: &Env, index: u64, term: u64, data: &'static [u8]) {
        let mut leaders = Snapshot {
            data: Bytes::from_static(data),
            ..Default::default()
        };
        leaders.mut_metadata().index = index;
        leaders.mut_metadata().term = term;
        leaders
            .mut_metadata()
            .set_conf_state(log.initial_state().unwrap().conf_state);
        log.install_snapshot(env, leaders).await.unwrap();
    }

    #[tokio::test]
    async fn a_torn_tail_is_ignored_and_later_appends_survive_the_next_restart() {
        let dir = Dir::new("torn");
        let env = dir.env();
        let log = RaftLog::open(&env, &[1]).await.unwrap();
        log.append(&[entry(1, 1), entry(2, 1), entry(3, 1)])
            .unwrap();
        log.set_hard_state(state(1, 3)).unwrap();
        log.sync(&env).await.unwrap();
        // A crash in the middle of the next append.
        let torn = record(ENTRY, &entry(4, 1).write_to_bytes().unwrap());
        let segment = log.current_segment();
        env.disk()
            .append(&segment, Bytes::copy_from_slice(&torn[..torn.len() - 3]))
            .await
            .unwrap();
        env.disk().sync(&segment).await.unwrap();
        let env = dir.env();
        let log = RaftLog::open(&env, &[1]).await.unwrap();
        assert_eq!((last(&log), log.hard_state().commit), (3, 3));
        log.append(&[entry(4, 2)]).unwrap();
        log.sync(&env).await.unwrap();
        let env = dir.env();
        let log = RaftLog::open(&env, &[1]).await.unwrap();
        assert_eq!(last(&log), 4);
        assert_eq!(log.term(4).unwrap(), 2);
        assert_eq!(log.hard_state().vote, 1, "the vote is kept across segments");
    }

    #[tokio::test]
    async fn a_snapshot_keeps_what_follows_it_and_removes_only_what_it_covers() {
        let dir = Dir::new("compact");
        let env = dir.env();
        let log = RaftLog::open(&env, &[1, 2, 3]).await.unwrap();
        log.append(&(1..=10).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        log.set_hard_state(state(1, 10)).unwrap();
        log.sync(&env).await.unwrap();
        assert!(snapshot_at(&log, &env, 6, b"tree at 6").await);
        log.append(&(11..=12).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        log.sync(&env).await.unwrap();
        let env = dir.env();
        let log = RaftLog::open(&env, &[1, 2, 3]).await.unwrap();
        assert_eq!(
            (log.snapshot_index(), log.first_index().unwrap(), last(&log)),
            (6, 7, 12)
        );
        assert_eq!(log.snapshot_data(), Bytes::from_static(b"tree at 6"));
        assert_eq!(
            log.initial_state().unwrap().conf_state.voters,
            vec![1, 2, 3]
        );
        // The segment with entries 1..=10 outlives the snapshot at 6; one at 12 removes it and
        // the older snapshot.
        assert!(snapshot_at(&log, &env, 12, b"tree at 12").await);
        let files = env.disk().list(DIRECTORY).await.unwrap();
        assert_eq!(
            files
                .iter()
                .filter(|f| f.starts_with(SNAPSHOT_PREFIX))
                .collect::<Vec<_>>(),
            vec![&snapshot_name(12)]
        );
        let env = dir.env();
        let log = RaftLog::open(&env, &[1, 2, 3]).await.unwrap();
        assert_eq!((log.snapshot_index(), last(&log)), (12, 12));
        assert_eq!(log.hard_state().commit, 12);
    }

    #[tokio::test]
    async fn a_torn_newest_snapshot_falls_back_to_the_one_before_and_its_segments() {
        let dir = Dir::new("torn-snapshot");
        let env = dir.env();
        let log = RaftLog::open(&env, &[1]).await.unwrap();
        log.append(&(1..=8).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        log.set_hard_state(state(1, 8)).unwrap();
        log.sync(&env).await.unwrap();
        assert!(snapshot_at(&log, &env, 4, b"tree at 4").await);
        // The next snapshot is begun but its file is torn by a crash.
        let mut snapshot = log.begin_snapshot(&env, 8).await.unwrap().snapshot;
        snapshot.data = Bytes::from_static(b"tree at 8");
        let whole = record(SNAPSHOT, &snapshot.write_to_bytes().unwrap());
        env.disk()
            .write(
                &snapshot_name(8),
                Bytes::copy_from_slice(&whole[..whole.len() / 2]),
            )
            .await
            .unwrap();
        let env = dir.env();
        let log = RaftLog::open(&env, &[1]).await.unwrap();
        assert_eq!((log.snapshot_index(), last(&log)), (4, 8));
        assert_eq!(log.snapshot_data(), Bytes::from_static(b"tree at 4"));
    }

    #[tokio::test]
    async fn a_snapshot_older_than_an_installed_one_is_dropped() {
        let dir = Dir::new("install");
        let env = dir.env();
        let log = RaftLog::open(&env, &[1, 2]).await.unwrap();
        log.append(&(1..=5).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .unwrap();
        log.set_hard_state(state(1, 5)).unwrap();
        let pending = log.begin_snapshot(&env, 5).await.unwrap();
        let local = pending
            .write(&env, Bytes::from_static(b"tree at 5"))
            .await
            .unwrap();
        install_leaders(&log, &env, 20, 2, b"tree at 20").await;
        assert!(!log.snapshot_written(&env, local).await.unwrap());
        let env = dir.env();
        let log = RaftLog::open(&env, &[1, 2]).await.unwrap();
        assert_eq!((log.snapshot_index(), last(&log)), (20, 20));
        let files = env.disk().list(DIRECTORY).await.unwrap();
        assert_eq!(
            files
                .iter()
                .filter(|f| f.starts_with(SNAPSHOT_PREFIX))
                .collect::<Vec<_>>(),
            vec![&snapshot_name(20)]
        );
    }

    #[tokio::test]
    async fn a_local_snapshot_at_the_index_of_an_installed_one_keeps_its_file() {
        let dir = Dir::new("same-index");
        let env = dir.env();
        let log = RaftLog::open(&env, &[1, 2]).await.unwrap();
        install_leaders(&log, &env, 9, 1, b"tree at 9").await;
        // The same tree, snapshotted here: the file has the same name as the installed one's.
        assert!(!snapshot_at(&log, &env, 9, b"tree at 9").await);
        let env = dir.env();
        let log = RaftLog::open(&env, &[1, 2]).await.unwrap();
        assert_eq!(log.snapshot_index(), 9);
        assert_eq!(log.snapshot_data(), Bytes::from_static(b"tree at 9"));
    }

    #[tokio::test]
    async fn the_layout_of_earlier_versions_is_read() {
        let dir = Dir::new("legacy");
        let env = dir.env();
        let mut snapshot = Snapshot {
            data: Bytes::from_static(b"old tree"),
            ..Default::default()
        };
        snapshot.mut_metadata().index = 3;
        snapshot.mut_metadata().term = 1;
        env.disk()
            .write(
                LEGACY_SNAPSHOT,
                Bytes::from(snapshot.write_to_bytes().unwrap()),
            )
            .await
            .unwrap();
        let mut old_log = Vec::new();
        for i in 2..=5 {
            old_log.extend(record(ENTRY, &entry(i, 1).write_to_bytes().unwrap()));
        }
        old_log.extend(record(HARD_STATE, &state(1, 5).write_to_bytes().unwrap()));
        env.disk()
            .write(LEGACY_LOG, Bytes::from(old_log))
            .await
            .unwrap();
        let log = RaftLog::open(&env, &[1]).await.unwrap();
        assert_eq!(
            (log.snapshot_index(), log.first_index().unwrap(), last(&log)),
            (3, 4, 5)
        );
        assert_eq!(log.hard_state().commit, 5);
        assert_eq!(log.snapshot_data(), Bytes::from_static(b"old tree"));
    }
}
