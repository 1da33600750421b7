//! The `mesos` containerizer: a task is `sh -c <command>` in its own process group, with its
//! environment, in its sandbox directory (stdout and stderr go to files there). A kill sends
//! SIGTERM to the whole group and SIGKILL after the grace period.

// Live only: it starts processes and signals them.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use drover_core::task::TaskState;
use tokio::process::{Child, Command};

use crate::containerizer::Exit;

/// A running task process.
pub struct Process {
    child: Child,
    /// The process group (the child leads it).
    pgid: i32,
    killing: bool,
}

/// What to run.
pub struct Launch<'a> {
    pub command: &'a str,
    pub environment: &'a [(String, String)],
    pub sandbox: &'a Path,
}

impl Process {
    pub fn spawn(launch: Launch<'_>) -> std::io::Result<Process> {
        std::fs::create_dir_all(launch.sandbox)?;
        let stdout = std::fs::File::create(launch.sandbox.join("stdout"))?;
        let stderr = std::fs::File::create(launch.sandbox.join("stderr"))?;
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(launch.command)
            .current_dir(launch.sandbox)
            .env("MESOS_SANDBOX", launch.sandbox)
            .envs(launch.environment.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(false);
        let child = command.spawn()?;
        let pgid = child
            .id()
            .map(|id| id as i32)
            .ok_or_else(|| std::io::Error::other("the task exited before it had a pid"))?;
        Ok(Process {
            child,
            pgid,
            killing: false,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pgid
    }

    /// Waits for the process to end and says how, as a task state.
    pub async fn wait(&mut self) -> Exit {
        match self.child.wait().await {
            Ok(status) => exit_of(status, self.killing),
            Err(e) => Exit {
                state: TaskState::TaskFailed,
                message: format!("waiting for the task failed: {e}"),
            },
        }
    }

    /// SIGTERM to the group, SIGKILL after `grace`; returns how it ended.
    pub async fn kill(&mut self, grace: Duration) -> Exit {
        self.killing = true;
        signal_group(self.pgid, libc::SIGTERM);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => exit_of(status, true),
            _ => {
                signal_group(self.pgid, libc::SIGKILL);
                self.wait().await
            }
        }
    }
}

/// Runs a health check command: `sh -c command` in `sandbox` with `environment`, in its own
/// process group, output discarded. `Ok` when it exits 0 within `timeout`; when the time is up the
/// whole group is killed.
pub async fn run_check(
    command: &str,
    environment: &[(String, String)],
    sandbox: &Path,
    timeout: Duration,
) -> Result<(), String> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .current_dir(sandbox)
        .env("MESOS_SANDBOX", sandbox)
        .envs(environment.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start the health check command: {e}"))?;
    let pgid = child.id().map(|id| id as i32);
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(match status.code() {
            Some(code) => format!("Command exited with status {code}"),
            None => format!("Command ended with {status}"),
        }),
        Ok(Err(e)) => Err(format!("waiting for the health check command failed: {e}")),
        Err(_) => {
            if let Some(pgid) = pgid {
                signal_group(pgid, libc::SIGKILL);
            }
            let _ = child.wait().await;
            Err(format!(
                "Command timed out after {} ms",
                timeout.as_millis()
            ))
        }
    }
}

fn signal_group(pgid: i32, signal: i32) {
    // SAFETY: kill(2) with a negative pid signals a process group; it has no memory effects.
    unsafe {
        libc::kill(-pgid, signal);
    }
}

fn exit_of(status: std::process::ExitStatus, killed: bool) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    if killed {
        return Exit {
            state: TaskState::TaskKilled,
            message: format!("killed ({status})"),
        };
    }
    match (status.code(), status.signal()) {
        (Some(0), _) => Exit {
            state: TaskState::TaskFinished,
            message: "Command exited with status 0".into(),
        },
        (Some(code), _) => Exit {
            state: TaskState::TaskFailed,
            message: format!("Command exited with status {code}"),
        },
        (None, Some(signal)) => Exit {
            state: TaskState::TaskFailed,
            message: format!("Command terminated with signal {signal}"),
        },
        (None, None) => Exit {
            state: TaskState::TaskFailed,
            message: "Command ended without a status".into(),
        },
    }
}

/// A task's sandbox under the agent's work dir.
pub fn sandbox(work_dir: &Path, task_id: &str) -> PathBuf {
    let safe: String = task_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    work_dir.join("sandboxes").join(safe)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("drover-process-{}-{name}", std::process::id()))
    }

    #[tokio::test]
    async fn exit_codes_become_task_states() {
        let env = [("GREETING".to_string(), "hello".to_string())];
        let ok = dir("ok");
        let mut finished = Process::spawn(Launch {
            command: "echo $GREETING from $MESOS_SANDBOX",
            environment: &env,
            sandbox: &ok,
        })
        .unwrap();
        assert_eq!(finished.wait().await.state, TaskState::TaskFinished);
        let out = std::fs::read_to_string(ok.join("stdout")).unwrap();
        assert!(
            out.starts_with("hello from ") && out.trim_end().ends_with("ok"),
            "{out}"
        );
        let mut failed = Process::spawn(Launch {
            command: "exit 3",
            environment: &[],
            sandbox: &dir("fail"),
        })
        .unwrap();
        assert_eq!(
            failed.wait().await,
            Exit {
                state: TaskState::TaskFailed,
                message: "Command exited with status 3".into()
            }
        );
    }

    #[tokio::test]
    async fn health_check_commands() {
        let sandbox = dir("check");
        std::fs::create_dir_all(&sandbox).unwrap();
        let env = [("WANT".to_string(), "yes".to_string())];
        let second = Duration::from_secs(5);
        assert_eq!(
            run_check("test \"$WANT\" = yes", &env, &sandbox, second).await,
            Ok(())
        );
        assert_eq!(
            run_check("exit 2", &env, &sandbox, second).await,
            Err("Command exited with status 2".into())
        );
        let err = run_check("sleep 30", &env, &sandbox, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(err.contains("timed out"), "{err}");
    }

    #[tokio::test]
    async fn a_kill_reaches_the_whole_group_even_when_term_is_ignored() {
        // The shell ignores SIGTERM and starts a child: only the SIGKILL after the grace period
        // ends them, and it must reach the child too.
        let sandbox = dir("stubborn");
        let mut process = Process::spawn(Launch {
            command: "trap '' TERM; sleep 30 & echo $! > child; wait",
            environment: &[],
            sandbox: &sandbox,
        })
        .unwrap();
        let child_file = sandbox.join("child");
        for _ in 0..100 {
            if std::fs::read_to_string(&child_file).is_ok_and(|s| !s.trim().is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let child: i32 = std::fs::read_to_string(&child_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let exit = process.kill(Duration::from_millis(300)).await;
        assert_eq!(exit.state, TaskState::TaskKilled);
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Dead means gone, or a zombie waiting for whoever adopted it to reap it.
        let state = std::fs::read_to_string(format!("/proc/{child}/stat")).ok();
        let alive = state.is_some_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        });
        assert!(!alive, "the task's child survived the kill");
    }
}
