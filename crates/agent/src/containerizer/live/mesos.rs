//! The `mesos` containerizer over [`super::process`]: a task is `sh -c` in its own process group,
//! in its sandbox under the agent's work dir.
//!
//! The task's command runs inside a small wrapper shell that writes the command's exit status to
//! `drover_exit_status` in the sandbox before it exits with that status, so an agent that was
//! restarted while the task ran (and so is not its parent any more) still learns how it ended.
//! A re-adopted process is watched by polling its pid (a zombie counts as ended; the kernel's start
//! time of the process tells a re-used pid from the task's).

// Live only: it starts, polls and signals processes, and reads their sandboxes.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use drover_core::env::BoxFuture;
use drover_core::task::TaskState;

use super::process::{run_check, sandbox, Launch, Process};
use crate::containerizer::{
    kill_requested, Containerizer, Exit, Handle, KillSignal, Kind, Launched, Running,
};
use crate::shell::quote as shell_quote;
use crate::task::LaunchSpec;

/// The file in the sandbox that receives the command's exit status.
pub const EXIT_STATUS_FILE: &str = "drover_exit_status";

/// How often a re-adopted process is checked.
const POLL: Duration = Duration::from_millis(250);

pub struct MesosContainerizer {
    work_dir: PathBuf,
}

impl MesosContainerizer {
    /// Sandboxes go under `work_dir/sandboxes/`. A relative `work_dir` is taken from the current
    /// directory now, so that sandboxes (`MESOS_SANDBOX`, the `directory` in `/state`) are
    /// absolute paths, as Mesos gives them.
    pub fn new(work_dir: impl Into<PathBuf>) -> MesosContainerizer {
        let work_dir = work_dir.into();
        MesosContainerizer {
            work_dir: std::path::absolute(&work_dir).unwrap_or(work_dir),
        }
    }
}

/// The wrapper: runs `command`, records its status, exits with it.
pub fn wrapped(command: &str) -> String {
    format!(
        "sh -c {}; status=$?; echo $status > {EXIT_STATUS_FILE}.tmp && mv {EXIT_STATUS_FILE}.tmp {EXIT_STATUS_FILE}; exit $status",
        shell_quote(command)
    )
}

impl Containerizer for MesosContainerizer {
    fn kind(&self) -> Kind {
        Kind::Mesos
    }

    fn sandbox(&self, task_id: &str) -> Option<PathBuf> {
        Some(sandbox(&self.work_dir, task_id))
    }

    fn launch(&self, spec: &LaunchSpec) -> BoxFuture<'static, Result<Launched, String>> {
        let sandbox = sandbox(&self.work_dir, &spec.task_id);
        let result = match spec.command.as_deref() {
            None => Err("the task has no command to run".to_string()),
            Some(command) => {
                let _ = std::fs::remove_file(sandbox.join(EXIT_STATUS_FILE));
                Process::spawn(Launch {
                    command: &wrapped(command),
                    environment: &spec.environment,
                    sandbox: &sandbox,
                })
                .map_err(|e| format!("cannot start the task's process: {e}"))
            }
        };
        Box::pin(async move {
            let process = result?;
            let pid = process.pid();
            Ok(Launched {
                handle: Handle::Process {
                    pid,
                    start_ticks: start_ticks(pid),
                },
                running: Box::new(Child(process)),
            })
        })
    }

    fn recover(
        &self,
        spec: &LaunchSpec,
        handle: Option<Handle>,
        _launched_ms: u64,
    ) -> BoxFuture<'static, Result<Launched, String>> {
        let sandbox = sandbox(&self.work_dir, &spec.task_id);
        Box::pin(async move {
            match handle {
                Some(Handle::Process { pid, start_ticks }) => Ok(Launched {
                    handle: Handle::Process { pid, start_ticks },
                    running: Box::new(Adopted {
                        pid,
                        start_ticks,
                        sandbox,
                    }),
                }),
                Some(other) => Err(format!("the mesos containerizer cannot recover {other:?}")),
                None => Err(
                    "the agent stopped while it launched the task; its process is unknown".into(),
                ),
            }
        })
    }

    fn check_command(
        &self,
        spec: &LaunchSpec,
        _handle: &Handle,
        command: &str,
        environment: &[(String, String)],
        timeout: Duration,
    ) -> BoxFuture<'static, Result<(), String>> {
        let sandbox = sandbox(&self.work_dir, &spec.task_id);
        let command = command.to_string();
        let mut env = spec.environment.clone();
        env.extend(environment.iter().cloned());
        Box::pin(async move { run_check(&command, &env, &sandbox, timeout).await })
    }
}

/// A process this agent started (its child).
struct Child(Process);

impl Running for Child {
    fn wait(self: Box<Self>, kill: KillSignal) -> BoxFuture<'static, Exit> {
        let mut process = self.0;
        Box::pin(async move {
            tokio::select! {
                biased;
                grace = kill_requested(kill) => process.kill(grace).await,
                exit = process.wait() => exit,
            }
        })
    }
}

/// A process an earlier incarnation of the agent started.
struct Adopted {
    pid: i32,
    start_ticks: Option<u64>,
    sandbox: PathBuf,
}

impl Adopted {
    fn alive(&self) -> bool {
        alive(self.pid, self.start_ticks)
    }

    async fn gone(&self) {
        while self.alive() {
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Running for Adopted {
    fn wait(self: Box<Self>, kill: KillSignal) -> BoxFuture<'static, Exit> {
        Box::pin(async move {
            tokio::select! {
                biased;
                grace = kill_requested(kill) => {
                    signal_group(self.pid, libc::SIGTERM);
                    if tokio::time::timeout(grace, self.gone()).await.is_err() {
                        signal_group(self.pid, libc::SIGKILL);
                        self.gone().await;
                    }
                    Exit { state: TaskState::TaskKilled, message: "Command killed".into() }
                }
                () = self.gone() => exit_from_file(&self.sandbox),
            }
        })
    }
}

fn signal_group(pgid: i32, signal: i32) {
    if pgid > 0 {
        // SAFETY: kill(2) with a negative pid signals a process group; it has no memory effects.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// How a task ended, from the status its wrapper wrote.
pub fn exit_from_file(sandbox: &Path) -> Exit {
    match std::fs::read_to_string(sandbox.join(EXIT_STATUS_FILE))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        Some(0) => Exit {
            state: TaskState::TaskFinished,
            message: "Command exited with status 0".into(),
        },
        Some(code) => Exit {
            state: TaskState::TaskFailed,
            message: format!("Command exited with status {code}"),
        },
        None => Exit {
            state: TaskState::TaskFailed,
            message: "Command ended while the agent was down, without an exit status".into(),
        },
    }
}

/// The fields of `/proc/<pid>/stat` after the command name: state first.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The kernel's start time of a process (field 22 of its stat), to tell a re-used pid.
pub fn start_ticks(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// A process is alive when it exists, is not a zombie, and started when the task's did.
pub fn alive(pid: i32, ticks: Option<u64>) -> bool {
    if pid <= 0 {
        return false;
    }
    match stat_fields(pid) {
        Some(fields) => {
            let zombie = fields.first().is_some_and(|s| s == "Z" || s == "X");
            let same = match (ticks, fields.get(19).and_then(|t| t.parse::<u64>().ok())) {
                (Some(expected), Some(found)) => expected == found,
                _ => true,
            };
            !zombie && same
        }
        // No /proc: ask the kernel whether the pid exists.
        // SAFETY: kill(2) with signal 0 only checks for existence.
        None if !Path::new("/proc/self/stat").exists() => unsafe { libc::kill(pid, 0) == 0 },
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Container;
    use drover_core::Resources;

    fn spec(task_id: &str, command: &str) -> LaunchSpec {
        LaunchSpec {
            task_id: task_id.into(),
            name: task_id.into(),
            framework_id: "f".into(),
            command: Some(command.into()),
            environment: vec![("GREETING".into(), "it's me".into())],
            ports: vec![],
            resources: Resources::new(),
            cpus: 0.1,
            mem_mb: 32.0,
            container: Container::Command,
            kill_grace: Duration::from_millis(200),
            health_check: None,
            sandbox: None,
        }
    }

    fn work_dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("drover-mesos-{}-{name}", std::process::id()))
    }

    #[tokio::test]
    async fn the_exit_status_survives_in_the_sandbox_and_adoption_reads_it() {
        let dir = work_dir("adopt");
        let containerizer = MesosContainerizer::new(&dir);
        let launched = containerizer
            .launch(&spec(
                "t",
                "test \"$GREETING\" = \"it's me\" && sleep 0.3 && exit 4",
            ))
            .await
            .unwrap();
        let Handle::Process { pid, start_ticks } = launched.handle.clone() else {
            panic!("{:?}", launched.handle)
        };
        assert!(start_ticks.is_some() && alive(pid, start_ticks));
        assert!(!alive(pid, start_ticks.map(|t| t + 1)), "a re-used pid");
        // Adopt it as a restarted agent would, while the original handle still reaps it.
        let adopted = containerizer
            .recover(&spec("t", "unused"), Some(launched.handle), 0)
            .await
            .unwrap();
        let (_keep, kill) = tokio::sync::oneshot::channel();
        let own = tokio::spawn(launched.running.wait(kill));
        let (_keep2, kill2) = tokio::sync::oneshot::channel();
        let exit = adopted.running.wait(kill2).await;
        assert_eq!(exit.message, "Command exited with status 4");
        assert_eq!(own.await.unwrap().state, TaskState::TaskFailed);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn an_adopted_process_can_be_killed() {
        let dir = work_dir("kill");
        let containerizer = MesosContainerizer::new(&dir);
        let launched = containerizer.launch(&spec("k", "sleep 30")).await.unwrap();
        let own = tokio::spawn(launched.running.wait(tokio::sync::oneshot::channel().1));
        let adopted = containerizer
            .recover(&spec("k", "sleep 30"), Some(launched.handle), 0)
            .await
            .unwrap();
        let (kill, killed) = tokio::sync::oneshot::channel();
        kill.send(Duration::from_millis(200)).unwrap();
        let exit = adopted.running.wait(killed).await;
        assert_eq!(exit.state, TaskState::TaskKilled);
        assert_eq!(own.await.unwrap().state, TaskState::TaskFailed);
        let err = containerizer
            .recover(&spec("k", "x"), None, 0)
            .await
            .err()
            .unwrap();
        assert!(err.contains("process is unknown"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
