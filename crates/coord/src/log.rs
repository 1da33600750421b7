//! The raft log and snapshots of one coord server, kept in memory for raft and made durable
//! through the Env's Disk.
//!
//! On disk, `raft/snapshot` holds the latest snapshot (protobuf) and `raft/log` a sequence of
//! records since it: `u32 length, u8 kind, u64 checksum, protobuf bytes`, kind 1 for an entry, 2
//! for a hard state. Recovery keeps the log up to the first torn or damaged record and cuts the rest.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use drover_core::env::Fnv64;
use drover_core::Env;
use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, Storage, StorageError};

const LOG_FILE: &str = "raft/log";
const SNAPSHOT_FILE: &str = "raft/snapshot";
const ENTRY: u8 = 1;
const HARD_STATE: u8 = 2;

/// raft's view of the log: the in-memory log plus the latest snapshot with its data.
#[derive(Clone)]
pub struct RaftLog {
    memory: MemStorage,
    snapshot: Arc<Mutex<Snapshot>>,
}

/// `u32 length, u8 kind, u64 checksum (FNV-1a of kind and body), body`.
const RECORD_HEADER: usize = 13;

fn checksum(kind: u8, body: &[u8]) -> u64 {
    let mut hash = Fnv64::default();
    hash.write(&[kind]);
    hash.write(body);
    hash.finish()
}

fn record(kind: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + RECORD_HEADER);
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.push(kind);
    out.extend_from_slice(&checksum(kind, bytes).to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

/// The first whole, intact record of `bytes`: (kind, body, its length on disk).
fn next_record(bytes: &[u8]) -> Option<(u8, &[u8], usize)> {
    let header = bytes.get(..RECORD_HEADER)?;
    let length = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let kind = header[4];
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&header[5..13]);
    let body = bytes.get(RECORD_HEADER..RECORD_HEADER + length)?;
    (checksum(kind, body) == u64::from_be_bytes(sum)).then_some((
        kind,
        body,
        RECORD_HEADER + length,
    ))
}

fn storage_error(e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl RaftLog {
    /// Recovers the log from disk, or starts a new one with `voters`.
    pub async fn open(env: &Env, voters: &[u64]) -> std::io::Result<RaftLog> {
        let memory = MemStorage::new();
        let mut snapshot = Snapshot::default();
        if let Some(bytes) = env.disk().read(SNAPSHOT_FILE).await? {
            snapshot = Snapshot::parse_from_bytes(&bytes).map_err(storage_error)?;
            memory
                .wl()
                .apply_snapshot(snapshot.clone())
                .map_err(storage_error)?;
        } else {
            let mut conf = ConfState::default();
            conf.set_voters(voters.to_vec());
            memory.wl().set_conf_state(conf.clone());
            snapshot.mut_metadata().set_conf_state(conf);
        }
        if let Some(log) = env.disk().read(LOG_FILE).await? {
            let mut valid = 0;
            while let Some((kind, body, length)) = next_record(&log[valid..]) {
                let applied = match kind {
                    ENTRY => match Entry::parse_from_bytes(body) {
                        Ok(entry) => {
                            let first = memory.first_index().map_err(storage_error)?;
                            if entry.index >= first {
                                memory.wl().append(&[entry]).map_err(storage_error)?;
                            }
                            true
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
                // A record torn by a crash (or damaged): the log ends before it. Cut it off, or
                // what is appended next would follow garbage.
                tracing::warn!(
                    kept = valid,
                    dropped = log.len() - valid,
                    "raft log: dropping a torn or damaged tail"
                );
                env.disk().write(LOG_FILE, log.slice(..valid)).await?;
                env.disk().sync(LOG_FILE).await?;
            }
        }
        // A crash between writing a snapshot and rewriting the log leaves the older log's hard
        // state behind the snapshot: nothing before the snapshot can be uncommitted.
        let metadata = snapshot.get_metadata().clone();
        let mut state = memory.rl().hard_state().clone();
        if state.commit < metadata.index || state.term < metadata.term {
            state.commit = state.commit.max(metadata.index);
            state.term = state.term.max(metadata.term);
            memory.wl().set_hardstate(state);
        }
        Ok(RaftLog {
            memory,
            snapshot: Arc::new(Mutex::new(snapshot)),
        })
    }

    pub fn snapshot_index(&self) -> u64 {
        self.lock_snapshot().get_metadata().index
    }

    fn lock_snapshot(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.snapshot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The data of the latest snapshot (the state machine at its index).
    pub fn snapshot_data(&self) -> Bytes {
        self.lock_snapshot().data.clone()
    }

    pub fn hard_state(&self) -> HardState {
        self.memory.rl().hard_state().clone()
    }

    /// Appends entries (replacing any conflicting suffix) and persists them, unsynced.
    pub async fn append(&self, env: &Env, entries: &[Entry]) -> std::io::Result<()> {
        self.memory.wl().append(entries).map_err(storage_error)?;
        let mut bytes = Vec::new();
        for entry in entries {
            bytes.extend(record(
                ENTRY,
                &entry.write_to_bytes().map_err(storage_error)?,
            ));
        }
        env.disk().append(LOG_FILE, Bytes::from(bytes)).await
    }

    pub async fn set_hard_state(&self, env: &Env, state: HardState) -> std::io::Result<()> {
        let bytes = record(HARD_STATE, &state.write_to_bytes().map_err(storage_error)?);
        self.memory.wl().set_hardstate(state);
        env.disk().append(LOG_FILE, Bytes::from(bytes)).await
    }

    pub async fn sync(&self, env: &Env) -> std::io::Result<()> {
        env.disk().sync(LOG_FILE).await
    }

    /// Installs a snapshot received from the leader.
    pub async fn install_snapshot(&self, env: &Env, snapshot: Snapshot) -> std::io::Result<()> {
        self.memory
            .wl()
            .apply_snapshot(snapshot.clone())
            .map_err(storage_error)?;
        *self.lock_snapshot() = snapshot;
        self.rewrite(env).await
    }

    /// Takes a snapshot of the state machine at `index` and compacts the log up to it.
    pub async fn compact(&self, env: &Env, index: u64, data: Bytes) -> std::io::Result<()> {
        let term = self.memory.term(index).map_err(storage_error)?;
        let mut snapshot = Snapshot {
            data,
            ..Default::default()
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = index;
        metadata.term = term;
        metadata.set_conf_state(
            self.memory
                .initial_state()
                .map_err(storage_error)?
                .conf_state,
        );
        self.memory.wl().compact(index).map_err(storage_error)?;
        *self.lock_snapshot() = snapshot;
        self.rewrite(env).await
    }

    /// Writes the snapshot, then a log holding only what follows it.
    async fn rewrite(&self, env: &Env) -> std::io::Result<()> {
        let snapshot = self
            .lock_snapshot()
            .write_to_bytes()
            .map_err(storage_error)?;
        env.disk()
            .write(SNAPSHOT_FILE, Bytes::from(snapshot))
            .await?;
        env.disk().sync(SNAPSHOT_FILE).await?;
        let first = self.memory.first_index().map_err(storage_error)?;
        let last = self.memory.last_index().map_err(storage_error)?;
        let mut bytes = Vec::new();
        if first <= last {
            let entries = self
                .memory
                .entries(first, last + 1, None, GetEntriesContext::empty(false))
                .map_err(storage_error)?;
            for entry in entries {
                bytes.extend(record(
                    ENTRY,
                    &entry.write_to_bytes().map_err(storage_error)?,
                ));
            }
        }
        bytes.extend(record(
            HARD_STATE,
            &self.hard_state().write_to_bytes().map_err(storage_error)?,
        ));
        env.disk().write(LOG_FILE, Bytes::from(bytes)).await?;
        env.disk().sync(LOG_FILE).await
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

    async fn last(log: &RaftLog) -> u64 {
        log.last_index().unwrap()
    }

    #[tokio::test]
    async fn a_torn_tail_is_cut_and_later_appends_survive_the_next_restart() {
        let dir = std::env::temp_dir().join(format!("drover-raftlog-{}-torn", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let env = drover_core::env::live::env("coord-1", &dir, Some(1));
        let log = RaftLog::open(&env, &[1]).await.unwrap();
        log.append(&env, &[entry(1, 1), entry(2, 1), entry(3, 1)])
            .await
            .unwrap();
        log.set_hard_state(&env, state(1, 3)).await.unwrap();
        log.sync(&env).await.unwrap();
        // A crash in the middle of the next append.
        let torn = record(ENTRY, &entry(4, 1).write_to_bytes().unwrap());
        env.disk()
            .append(LOG_FILE, Bytes::copy_from_slice(&torn[..torn.len() - 3]))
            .await
            .unwrap();
        env.disk().sync(LOG_FILE).await.unwrap();
        let env = drover_core::env::live::env("coord-1", &dir, Some(1));
        let log = RaftLog::open(&env, &[1]).await.unwrap();
        assert_eq!((last(&log).await, log.hard_state().commit), (3, 3));
        log.append(&env, &[entry(4, 2)]).await.unwrap();
        log.sync(&env).await.unwrap();
        let env = drover_core::env::live::env("coord-1", &dir, Some(1));
        let log = RaftLog::open(&env, &[1]).await.unwrap();
        assert_eq!(last(&log).await, 4);
        assert_eq!(log.term(4).unwrap(), 2);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn compaction_keeps_what_follows_the_snapshot() {
        let dir =
            std::env::temp_dir().join(format!("drover-raftlog-{}-compact", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let env = drover_core::env::live::env("coord-1", &dir, Some(1));
        let log = RaftLog::open(&env, &[1, 2, 3]).await.unwrap();
        log.append(&env, &(1..=10).map(|i| entry(i, 1)).collect::<Vec<_>>())
            .await
            .unwrap();
        log.set_hard_state(&env, state(1, 10)).await.unwrap();
        log.sync(&env).await.unwrap();
        log.compact(&env, 6, Bytes::from_static(b"tree at 6"))
            .await
            .unwrap();
        let env = drover_core::env::live::env("coord-1", &dir, Some(1));
        let log = RaftLog::open(&env, &[1, 2, 3]).await.unwrap();
        assert_eq!(
            (
                log.snapshot_index(),
                log.first_index().unwrap(),
                last(&log).await
            ),
            (6, 7, 10)
        );
        assert_eq!(log.snapshot_data(), Bytes::from_static(b"tree at 6"));
        assert_eq!(
            log.initial_state().unwrap().conf_state.voters,
            vec![1, 2, 3]
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
