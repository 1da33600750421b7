//! The raft log and snapshots of one coord server, kept in memory for raft and made durable
//! through the Env's Disk.
//!
//! On disk, `raft/snapshot` holds the latest snapshot (protobuf) and `raft/log` a sequence of
//! records since it: `u32 length, u8 kind, protobuf bytes`, kind 1 for an entry, 2 for a hard state.
//! A record torn by a crash at the end of the log is dropped on recovery; nothing before it is.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
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

fn record(kind: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 5);
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.push(kind);
    out.extend_from_slice(bytes);
    out
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
            let mut rest = &log[..];
            while rest.len() >= 5 {
                let length = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let Some(body) = rest.get(5..5 + length) else {
                    break;
                };
                match rest[4] {
                    ENTRY => {
                        let entry = Entry::parse_from_bytes(body).map_err(storage_error)?;
                        let first = memory.first_index().map_err(storage_error)?;
                        if entry.index >= first {
                            memory.wl().append(&[entry]).map_err(storage_error)?;
                        }
                    }
                    HARD_STATE => {
                        let state = HardState::parse_from_bytes(body).map_err(storage_error)?;
                        memory.wl().set_hardstate(state);
                    }
                    other => {
                        return Err(storage_error(format!(
                            "raft log record of unknown kind {other}"
                        )))
                    }
                }
                rest = &rest[5 + length..];
            }
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
