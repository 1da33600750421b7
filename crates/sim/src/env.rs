//! The simulated side of the Env seam (the network is in [`crate::net`]): a clock made of the
//! simulation's elapsed time plus a per-node skew, a per-node disk that survives crashes but loses
//! what was not synced, and events recorded into the trace. A dead incarnation's disk and events
//! are cut off, so a task that outlives its node's crash can change nothing.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use drover_core::env::{BoxFuture, Clock, Disk, EventSink};
use drover_core::Event;

use crate::net::Owner;
use crate::scenario::{DiskFault, SLOW_SYNC_MS};
use crate::trace::Trace;

/// The wall-clock instant a simulation starts at: 2024-01-01T00:00:00Z.
pub const EPOCH_UNIX_MS: u64 = 1_704_067_200_000;

thread_local! {
    /// The instant the run on this thread started (tokio's paused clock).
    static START: std::cell::Cell<Option<tokio::time::Instant>> = const { std::cell::Cell::new(None) };
}

/// Marks now as the run's time 0 for [`sim_ms`] on this thread.
pub fn start_clock() {
    START.with(|s| s.set(Some(tokio::time::Instant::now())));
}

/// Milliseconds of simulated time since the run started (0 outside a run).
pub fn sim_ms() -> u64 {
    START
        .with(|s| s.get())
        .map_or(0, |start| start.elapsed().as_millis() as u64)
}

/// Simulated wall time: the epoch, plus simulated elapsed time, plus this node's skew.
pub struct SimClock {
    pub skew_ms: Arc<AtomicI64>,
}

impl Clock for SimClock {
    fn unix_ms(&self) -> u64 {
        let now = EPOCH_UNIX_MS + sim_ms();
        now.saturating_add_signed(self.skew_ms.load(Ordering::Relaxed))
    }
}

/// A node's files: what was synced survives a crash, the rest is lost.
///
/// An append costs what it appends and a sync what it makes durable, never the whole file: the
/// 10,000-agent simulation appends to every agent's journal thousands of times.
#[derive(Default)]
pub struct DiskState {
    durable: BTreeMap<String, Vec<u8>>,
    /// Mutations since the last sync of each path.
    pending: BTreeMap<String, Pending>,
    /// The latest append: its path, the file's length before it, and its length.
    last_append: Option<(String, usize, usize)>,
    /// The latest sync that changed something: its path and how to undo it.
    last_sync: Option<(String, Undo)>,
    /// Faults armed for the next crash, and whether every operation fails now.
    torn: bool,
    lose_synced: bool,
    failing: bool,
    slow: bool,
}

/// What happened to a file since its last sync.
enum Pending {
    /// Bytes appended to what is durable.
    Appended(Vec<u8>),
    /// A new whole content (a write, or appends after a removal).
    Replaced(Vec<u8>),
    Removed,
}

/// How to take back a sync (a lying fsync).
enum Undo {
    /// It appended to a file that was this long (or did not exist).
    Truncate(Option<usize>),
    /// It replaced or removed this content.
    Restore(Option<Vec<u8>>),
}

impl DiskState {
    fn current(&self, path: &str) -> Option<Bytes> {
        let durable = self.durable.get(path);
        match self.pending.get(path) {
            Some(Pending::Appended(tail)) => {
                let mut whole = durable.cloned().unwrap_or_default();
                whole.extend_from_slice(tail);
                Some(Bytes::from(whole))
            }
            Some(Pending::Replaced(content)) => Some(Bytes::copy_from_slice(content)),
            Some(Pending::Removed) => None,
            None => durable.map(|d| Bytes::copy_from_slice(d)),
        }
    }

    fn exists(&self, path: &str) -> bool {
        match self.pending.get(path) {
            Some(Pending::Removed) => false,
            Some(_) => true,
            None => self.durable.contains_key(path),
        }
    }

    fn len(&self, path: &str) -> usize {
        let durable = self.durable.get(path).map_or(0, Vec::len);
        match self.pending.get(path) {
            Some(Pending::Appended(tail)) => durable + tail.len(),
            Some(Pending::Replaced(content)) => content.len(),
            Some(Pending::Removed) => 0,
            None => durable,
        }
    }
}

/// The per-node disk, shared by every incarnation of the node.
#[derive(Clone, Default)]
pub struct SimDisk(Arc<Mutex<DiskState>>);

impl SimDisk {
    fn state(&self) -> MutexGuard<'_, DiskState> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What a crash does: every unsynced mutation is gone; with a torn write armed, the last
    /// unsynced append survives half written; with a lying fsync armed, the last synced write is
    /// gone too.
    pub fn lose_unsynced(&self) {
        let mut state = self.state();
        if std::mem::take(&mut state.torn) {
            if let Some((path, before, appended)) = state.last_append.clone() {
                if let Some(content) = state
                    .pending
                    .contains_key(&path)
                    .then(|| state.current(&path))
                    .flatten()
                {
                    let keep = (before + appended / 2).min(content.len());
                    if keep > state.durable.get(&path).map_or(0, Vec::len) {
                        state.durable.insert(path, content[..keep].to_vec());
                    }
                }
            }
        }
        if std::mem::take(&mut state.lose_synced) {
            if let Some((path, undo)) = state.last_sync.take() {
                match undo {
                    Undo::Truncate(Some(length)) => {
                        if let Some(file) = state.durable.get_mut(&path) {
                            file.truncate(length);
                        }
                    }
                    Undo::Truncate(None) | Undo::Restore(None) => {
                        state.durable.remove(&path);
                    }
                    Undo::Restore(Some(content)) => {
                        state.durable.insert(path, content);
                    }
                }
            }
        }
        state.pending.clear();
        state.last_append = None;
    }

    /// Arms or applies a fault (see [`DiskFault`]).
    pub fn fault(&self, fault: DiskFault) {
        let mut state = self.state();
        match fault {
            DiskFault::Torn => state.torn = true,
            DiskFault::LoseSynced => state.lose_synced = true,
            DiskFault::Fail => state.failing = true,
            DiskFault::Slow => state.slow = true,
            DiskFault::Ok => {
                state.failing = false;
                state.slow = false;
                state.torn = false;
                state.lose_synced = false;
            }
        }
    }

    /// Makes what is pending for `path` durable.
    fn sync_now(&self, path: &str) {
        let mut state = self.state();
        let undo = match state.pending.remove(path) {
            Some(Pending::Appended(tail)) => {
                let file = state.durable.get(path).map(Vec::len);
                state
                    .durable
                    .entry(path.to_string())
                    .or_default()
                    .extend_from_slice(&tail);
                Undo::Truncate(file)
            }
            Some(Pending::Replaced(content)) => {
                Undo::Restore(state.durable.insert(path.to_string(), content))
            }
            Some(Pending::Removed) => Undo::Restore(state.durable.remove(path)),
            None => return,
        };
        state.last_sync = Some((path.to_string(), undo));
    }

    pub fn is_failing(&self) -> bool {
        self.state().failing
    }

    fn failed<'a, T: Send + 'static>(&self) -> Option<BoxFuture<'a, io::Result<T>>> {
        self.is_failing().then(|| {
            ready(Err(io::Error::other(
                "input/output error (simulated disk failure)",
            )))
        })
    }
}

fn ready<T: Send + 'static>(value: T) -> BoxFuture<'static, T> {
    Box::pin(std::future::ready(value))
}

impl Disk for SimDisk {
    fn read<'a>(&'a self, path: &'a str) -> BoxFuture<'a, io::Result<Option<Bytes>>> {
        if let Some(failed) = self.failed() {
            return failed;
        }
        ready(Ok(self.state().current(path)))
    }

    fn write<'a>(&'a self, path: &'a str, data: Bytes) -> BoxFuture<'a, io::Result<()>> {
        if let Some(failed) = self.failed() {
            return failed;
        }
        self.state()
            .pending
            .insert(path.to_string(), Pending::Replaced(data.to_vec()));
        ready(Ok(()))
    }

    fn append<'a>(&'a self, path: &'a str, data: Bytes) -> BoxFuture<'a, io::Result<()>> {
        if let Some(failed) = self.failed() {
            return failed;
        }
        let mut state = self.state();
        let before = state.len(path);
        state.last_append = Some((path.to_string(), before, data.len()));
        match state.pending.get_mut(path) {
            Some(Pending::Appended(tail)) | Some(Pending::Replaced(tail)) => {
                tail.extend_from_slice(&data)
            }
            Some(removed @ Pending::Removed) => *removed = Pending::Replaced(data.to_vec()),
            None => {
                state
                    .pending
                    .insert(path.to_string(), Pending::Appended(data.to_vec()));
            }
        }
        ready(Ok(()))
    }

    fn remove<'a>(&'a self, path: &'a str) -> BoxFuture<'a, io::Result<()>> {
        if let Some(failed) = self.failed() {
            return failed;
        }
        self.state()
            .pending
            .insert(path.to_string(), Pending::Removed);
        ready(Ok(()))
    }

    fn sync<'a>(&'a self, path: &'a str) -> BoxFuture<'a, io::Result<()>> {
        if let Some(failed) = self.failed() {
            return failed;
        }
        if self.state().slow {
            let (disk, path) = (self.clone(), path.to_string());
            return Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(SLOW_SYNC_MS)).await;
                disk.sync_now(&path);
                Ok(())
            });
        }
        self.sync_now(path);
        ready(Ok(()))
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, io::Result<Vec<String>>> {
        if let Some(failed) = self.failed() {
            return failed;
        }
        let state = self.state();
        let mut names: Vec<String> = state
            .durable
            .keys()
            .chain(state.pending.keys())
            .filter(|name| name.starts_with(prefix) && state.exists(name))
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        ready(Ok(names))
    }
}

/// Events of simulated nodes go to the trace, stamped with simulated time; a dead incarnation's
/// are dropped.
pub struct TraceEvents(pub Trace, pub Owner);

impl EventSink for TraceEvents {
    fn emit(&self, node: &str, event: &Event) {
        if self.1.is_alive() {
            self.0.record(sim_ms(), node, event.clone());
        }
    }
}

/// One incarnation's handle on its node's disk: it fails once the incarnation is dead.
pub struct IncarnationDisk {
    pub disk: SimDisk,
    pub owner: Owner,
}

impl IncarnationDisk {
    fn dead<'a, T: Send + 'static>(&self) -> Option<BoxFuture<'a, io::Result<T>>> {
        (!self.owner.is_alive())
            .then(|| ready(Err(io::Error::other("the node incarnation is dead"))))
    }
}

impl Disk for IncarnationDisk {
    fn read<'a>(&'a self, path: &'a str) -> BoxFuture<'a, io::Result<Option<Bytes>>> {
        self.dead().unwrap_or_else(|| self.disk.read(path))
    }
    fn write<'a>(&'a self, path: &'a str, data: Bytes) -> BoxFuture<'a, io::Result<()>> {
        self.dead().unwrap_or_else(|| self.disk.write(path, data))
    }
    fn append<'a>(&'a self, path: &'a str, data: Bytes) -> BoxFuture<'a, io::Result<()>> {
        self.dead().unwrap_or_else(|| self.disk.append(path, data))
    }
    fn remove<'a>(&'a self, path: &'a str) -> BoxFuture<'a, io::Result<()>> {
        self.dead().unwrap_or_else(|| self.disk.remove(path))
    }
    fn sync<'a>(&'a self, path: &'a str) -> BoxFuture<'a, io::Result<()>> {
        self.dead().unwrap_or_else(|| self.disk.sync(path))
    }
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, io::Result<Vec<String>>> {
        self.dead().unwrap_or_else(|| self.disk.list(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_crash_loses_only_what_was_not_synced() {
        let disk = SimDisk::default();
        disk.append("log", Bytes::from_static(b"a")).await.unwrap();
        disk.sync("log").await.unwrap();
        disk.append("log", Bytes::from_static(b"b")).await.unwrap();
        disk.write("meta", Bytes::from_static(b"m")).await.unwrap();
        assert_eq!(disk.read("log").await.unwrap().unwrap(), &b"ab"[..]);
        assert_eq!(disk.list("").await.unwrap(), vec!["log", "meta"]);
        disk.lose_unsynced();
        assert_eq!(disk.read("log").await.unwrap().unwrap(), &b"a"[..]);
        assert_eq!(disk.read("meta").await.unwrap(), None);
        disk.remove("log").await.unwrap();
        disk.sync("log").await.unwrap();
        assert_eq!(disk.list("").await.unwrap(), Vec::<String>::new());
    }
}
