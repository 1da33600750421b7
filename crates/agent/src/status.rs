//! The status update manager: every task's status updates reach the master exactly in order,
//! and each is sent again until acknowledged.
//!
//! One stream per task. Only the stream's head is in flight; it is sent again after 10 s, then
//! 20 s, 40 s, ... up to 10 minutes, until the master acknowledges it by its uuid, and only then
//! does the next update of that task go out. After the acknowledgement of a terminal update the
//! stream ends. Plain code: `now_ms` in, updates to send out; the agent persists the streams
//! (see [`StatusUpdateManager::snapshot`]) and does the sending.

use std::collections::{BTreeMap, VecDeque};

use drover_core::task::TaskState;
use serde::{Deserialize, Serialize};

pub const FIRST_RETRY_MS: u64 = 10_000;
pub const MAX_RETRY_MS: u64 = 600_000;

/// The update the streams carry is the protocol's own (task, framework, uuid, state, message,
/// reason, timestamp), so what is checkpointed is exactly what is sent.
pub use drover_core::agent_proto::StatusUpdate;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Stream {
    pending: VecDeque<StatusUpdate>,
    /// When the head is sent again; `None` when nothing is in flight.
    retry_at_ms: Option<u64>,
    backoff_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("no status update stream for task {0}")]
    UnknownTask(String),
    #[error("task {task}: acknowledged {acked}, but the update in flight is {in_flight}")]
    NotInFlight {
        task: String,
        acked: String,
        in_flight: String,
    },
}

/// All tasks' streams.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusUpdateManager {
    streams: BTreeMap<String, Stream>,
}

impl StatusUpdateManager {
    /// Queues an update; returns it when it goes out at once (its stream had nothing in flight).
    pub fn update(&mut self, update: StatusUpdate, now_ms: u64) -> Option<StatusUpdate> {
        let stream = self.streams.entry(update.task_id.clone()).or_default();
        stream.pending.push_back(update);
        if stream.retry_at_ms.is_some() {
            return None;
        }
        stream.backoff_ms = FIRST_RETRY_MS;
        stream.retry_at_ms = Some(now_ms + FIRST_RETRY_MS);
        stream.pending.front().cloned()
    }

    /// The master acknowledged `uuid` of `task`: the next update of the task goes out, if any.
    /// An acknowledgement of an update no longer in flight (a duplicate) is an error the caller
    /// may ignore.
    pub fn acknowledge(
        &mut self,
        task: &str,
        uuid: &str,
        now_ms: u64,
    ) -> Result<Option<StatusUpdate>, AckError> {
        let stream = self
            .streams
            .get_mut(task)
            .ok_or_else(|| AckError::UnknownTask(task.to_string()))?;
        let head = stream
            .pending
            .front()
            .ok_or_else(|| AckError::UnknownTask(task.to_string()))?;
        if head.uuid != uuid {
            return Err(AckError::NotInFlight {
                task: task.to_string(),
                acked: uuid.to_string(),
                in_flight: head.uuid.clone(),
            });
        }
        let done = stream
            .pending
            .pop_front()
            .is_some_and(|u| u.state.is_terminal());
        if stream.pending.is_empty() {
            if done {
                self.streams.remove(task);
            } else {
                stream.retry_at_ms = None;
            }
            return Ok(None);
        }
        stream.backoff_ms = FIRST_RETRY_MS;
        stream.retry_at_ms = Some(now_ms + FIRST_RETRY_MS);
        Ok(stream.pending.front().cloned())
    }

    /// Heads whose retry time has come, sent again with the backoff doubled (up to 10 minutes).
    pub fn due(&mut self, now_ms: u64) -> Vec<StatusUpdate> {
        let mut out = Vec::new();
        for stream in self.streams.values_mut() {
            if stream.retry_at_ms.is_some_and(|at| at <= now_ms) {
                stream.backoff_ms = (stream.backoff_ms * 2).clamp(FIRST_RETRY_MS, MAX_RETRY_MS);
                stream.retry_at_ms = Some(now_ms + stream.backoff_ms);
                out.extend(stream.pending.front().cloned());
            }
        }
        out
    }

    /// Every head in flight, at once (after (re-)registering with a master).
    pub fn resend_all(&mut self, now_ms: u64) -> Vec<StatusUpdate> {
        let mut out = Vec::new();
        for stream in self.streams.values_mut() {
            if let Some(head) = stream.pending.front() {
                stream.backoff_ms = FIRST_RETRY_MS;
                stream.retry_at_ms = Some(now_ms + FIRST_RETRY_MS);
                out.push(head.clone());
            }
        }
        out
    }

    /// When the next retry is due, for the caller's timer.
    pub fn next_retry_ms(&self) -> Option<u64> {
        self.streams.values().filter_map(|s| s.retry_at_ms).min()
    }

    /// The latest state of a task as the agent reported it (acknowledged or not).
    pub fn latest(&self, task: &str) -> Option<TaskState> {
        self.streams
            .get(task)
            .and_then(|s| s.pending.back())
            .map(|u| u.state)
    }

    /// True while the task's stream holds an update (its end is not acknowledged yet).
    pub fn has_stream(&self, task: &str) -> bool {
        self.streams.contains_key(task)
    }

    /// Every stream at once (JSON); [`StatusUpdateManager::restore`] reads it back. Agents
    /// before per-stream checkpoints wrote this.
    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn restore(bytes: &[u8]) -> Result<StatusUpdateManager, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("status update checkpoint: {e}"))
    }

    /// What to checkpoint of one task's stream (JSON), or `None` once the stream has ended (its
    /// checkpoint goes): a change to one task writes that task's stream only, as Mesos' agent
    /// keeps one update stream file per task.
    pub fn stream_snapshot(&self, task: &str) -> Option<Vec<u8>> {
        let stream = self.streams.get(task)?;
        Some(serde_json::to_vec(&(task, stream)).unwrap_or_default())
    }

    /// Adds a stream checkpointed by [`StatusUpdateManager::stream_snapshot`] (it replaces
    /// the task's stream, if there was one).
    pub fn restore_stream(&mut self, bytes: &[u8]) -> Result<(), String> {
        let (task, stream): (String, Stream) =
            serde_json::from_slice(bytes).map_err(|e| format!("status update stream: {e}"))?;
        self.streams.insert(task, stream);
        Ok(())
    }

    /// The tasks that have a stream.
    pub fn tasks(&self) -> impl Iterator<Item = &str> {
        self.streams.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn update(task: &str, n: u32, state: TaskState) -> StatusUpdate {
        StatusUpdate {
            task_id: task.into(),
            framework_id: "f".into(),
            uuid: format!("{task}-{n}"),
            state,
            message: None,
            reason: None,
            timestamp_ms: u64::from(n),
            healthy: None,
            ip_addresses: Vec::new(),
        }
    }

    #[test]
    fn one_update_in_flight_per_task_until_acknowledged() {
        let mut manager = StatusUpdateManager::default();
        let first = manager.update(update("t", 1, TaskState::TaskStarting), 0);
        assert_eq!(first.map(|u| u.uuid), Some("t-1".into()));
        assert_eq!(
            manager.update(update("t", 2, TaskState::TaskRunning), 5),
            None
        );
        assert_eq!(
            manager
                .update(update("u", 1, TaskState::TaskRunning), 5)
                .map(|u| u.uuid),
            Some("u-1".into())
        );
        let next = manager.acknowledge("t", "t-1", 100).unwrap();
        assert_eq!(next.map(|u| u.uuid), Some("t-2".into()));
        assert!(matches!(
            manager.acknowledge("t", "t-1", 100),
            Err(AckError::NotInFlight { .. })
        ));
    }

    #[test]
    fn retries_double_up_to_ten_minutes() {
        let mut manager = StatusUpdateManager::default();
        manager.update(update("t", 1, TaskState::TaskRunning), 0);
        let mut now = 0;
        let mut gaps = Vec::new();
        for _ in 0..8 {
            let at = manager.next_retry_ms().unwrap();
            gaps.push((at - now) / 1000);
            now = at;
            assert_eq!(manager.due(now).len(), 1);
        }
        assert_eq!(gaps, vec![10, 20, 40, 80, 160, 320, 600, 600]);
    }

    #[test]
    fn a_terminal_acknowledgement_ends_the_stream_and_checkpoints_restore() {
        let mut manager = StatusUpdateManager::default();
        manager.update(update("t", 1, TaskState::TaskFinished), 0);
        let restored = StatusUpdateManager::restore(&manager.snapshot()).unwrap();
        assert_eq!(restored, manager);
        // One stream's checkpoint restores that stream alone.
        manager.update(update("u", 1, TaskState::TaskRunning), 0);
        let mut one = StatusUpdateManager::default();
        one.restore_stream(&manager.stream_snapshot("u").unwrap())
            .unwrap();
        assert_eq!(one.tasks().collect::<Vec<_>>(), vec!["u"]);
        assert_eq!(one.latest("u"), Some(TaskState::TaskRunning));
        assert!(one.restore_stream(b"{").is_err());
        assert_eq!(manager.acknowledge("u", "u-1", 1), Ok(None));
        assert!(
            manager.stream_snapshot("u").is_some(),
            "RUNNING is not the end"
        );
        assert_eq!(manager.acknowledge("t", "t-1", 1), Ok(None));
        assert!(manager.stream_snapshot("t").is_none(), "its stream ended");
        assert_eq!(manager.next_retry_ms(), None);
        assert!(matches!(
            manager.acknowledge("t", "t-1", 1),
            Err(AckError::UnknownTask(_))
        ));
    }

    proptest! {
                /// Whatever is lost, duplicated or delayed, the first delivery of each update comes in
        /// order (the receiver drops what it has seen by uuid, as the master does).
        #[test]
        fn the_master_sees_every_update_in_order(
            counts in prop::collection::vec(1u32..6, 1..4),
            events in prop::collection::vec((any::<bool>(), 0u64..30_000), 0..200),
        ) {
            let mut manager = StatusUpdateManager::default();
            let mut in_flight: Vec<StatusUpdate> = Vec::new();
            let mut now = 0;
            for (t, count) in counts.iter().enumerate() {
                for n in 1..=*count {
                    let state = if n == *count { TaskState::TaskFinished } else { TaskState::TaskRunning };
                    in_flight.extend(manager.update(update(&format!("t{t}"), n, state), now));
                }
            }
            let mut seen: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (delivered, wait) in events {
                now += wait;
                in_flight.extend(manager.due(now));
                let Some(sent) = in_flight.pop() else { continue };
                if delivered {
                                        let log = seen.entry(sent.task_id.clone()).or_default();
                    if !log.contains(&sent.uuid) {
                        log.push(sent.uuid.clone());
                    }
                    if let Ok(next) = manager.acknowledge(&sent.task_id, &sent.uuid, now) {
                        in_flight.extend(next);
                    }
                }
            }
            for (task, uuids) in seen {
                let expected: Vec<String> = (1..=uuids.len()).map(|n| format!("{task}-{n}")).collect();
                prop_assert_eq!(uuids, expected);
            }
        }
    }
}
