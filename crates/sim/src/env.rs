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
#[derive(Default)]
pub struct DiskState {
    durable: BTreeMap<String, Bytes>,
    /// Mutations since the last sync of each path; `None` is a removal.
    pending: BTreeMap<String, Option<Bytes>>,
    /// The latest append: its path, the length before it, and its length.
    last_append: Option<(String, usize, usize)>,
    /// The latest sync that changed something: its path and what was durable before.
    last_sync: Option<(String, Option<Bytes>)>,
    /// Faults armed for the next crash, and whether every operation fails now.
    torn: bool,
    lose_synced: bool,
    failing: bool,
    slow: bool,
}

impl DiskState {
    fn current(&self, path: &str) -> Option<Bytes> {
        match self.pending.get(path) {
            Some(pending) => pending.clone(),
            None => self.durable.get(path).cloned(),
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
                if let Some(Some(content)) = state.pending.get(&path).cloned() {
                    let keep = (before + appended / 2).min(content.len());
                    if keep > state.durable.get(&path).map_or(0, Bytes::len) {
                        state.durable.insert(path, content.slice(..keep));
                    }
                }
            }
        }
        if std::mem::take(&mut state.lose_synced) {
            if let Some((path, previous)) = state.last_sync.take() {
                match previous {
                    Some(data) => state.durable.insert(path, data),
                    None => state.durable.remove(&path),
                };
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
        let before = state.durable.get(path).cloned();
        match state.pending.remove(path) {
            Some(Some(data)) => {
                state.durable.insert(path.to_string(), data);
                state.last_sync = Some((path.to_string(), before));
            }
            Some(None) => {
                state.durable.remove(path);
                state.last_sync = Some((path.to_string(), before));
            }
            None => {}
        }
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
        self.state().pending.insert(path.to_string(), Some(data));
        ready(Ok(()))
    }

    fn append<'a>(&'a self, path: &'a str, data: Bytes) -> BoxFuture<'a, io::Result<()>> {
        if let Some(failed) = self.failed() {
            return failed;
        }
        let mut state = self.state();
        let mut content = state.current(path).map(|b| b.to_vec()).unwrap_or_default();
        state.last_append = Some((path.to_string(), content.len(), data.len()));
        content.extend_from_slice(&data);
        state
            .pending
            .insert(path.to_string(), Some(Bytes::from(content)));
        ready(Ok(()))
    }

    fn remove<'a>(&'a self, path: &'a str) -> BoxFuture<'a, io::Result<()>> {
        if let Some(failed) = self.failed() {
            return failed;
        }
        self.state().pending.insert(path.to_string(), None);
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
            .filter(|name| name.starts_with(prefix) && state.current(name).is_some())
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
