//! Task states as Mesos names them, shared by master, agent and scheduler.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    TaskStaging,
    TaskStarting,
    TaskRunning,
    TaskKilling,
    TaskFinished,
    TaskFailed,
    TaskKilled,
    TaskError,
    TaskLost,
    TaskDropped,
    TaskUnreachable,
    TaskGone,
    TaskGoneByOperator,
    TaskUnknown,
}

impl TaskState {
    /// A terminal state: the task will never run again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::TaskFinished
                | TaskState::TaskFailed
                | TaskState::TaskKilled
                | TaskState::TaskError
                | TaskState::TaskLost
                | TaskState::TaskDropped
                | TaskState::TaskGone
                | TaskState::TaskGoneByOperator
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_use_mesos_names() {
        assert_eq!(
            serde_json::to_string(&TaskState::TaskGoneByOperator).unwrap(),
            "\"TASK_GONE_BY_OPERATOR\""
        );
        assert_eq!(
            serde_json::from_str::<TaskState>("\"TASK_RUNNING\"").unwrap(),
            TaskState::TaskRunning
        );
        assert!(TaskState::TaskKilled.is_terminal() && !TaskState::TaskUnreachable.is_terminal());
    }
}
