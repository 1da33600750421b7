//! The `sim` containerizer: a simulated process, Env only, so it runs inside the simulator.
//!
//! The task's shell command is read as a [`SimProgram`]: `sleep N` runs N seconds, then the task
//! ends with its `exit N` code (FINISHED for 0, FAILED otherwise); anything else runs until
//! killed. A task with ports binds the first one on the node and answers every HTTP request with
//! 200 "ok", so HTTP and TCP health checks pass. A simulated process "survives" an agent crash the
//! way a real one would: the agent re-adopts it from the checkpointed start time and it ends at
//! `start + N s`, or at once if that time has passed while the agent was down.
//!
//! A COMMAND health check is read the same way: it takes its `sleep`s (failing with a timeout if
//! they exceed the check's timeout), then passes with `exit 0`/`true` and fails with `exit N`/
//! `false`. A command the simulation cannot read (`curl -f http://$HOST:$PORT0/`) passes: a
//! simulated process is healthy by construction (it answers HTTP on its first port).

use std::net::SocketAddr;
use std::time::Duration;

use drover_core::env::{BoxFuture, Listener};
use drover_core::task::TaskState;
use drover_core::Env;

use super::{kill_requested, Containerizer, Exit, Handle, KillSignal, Kind, Launched, Running};
use crate::task::{LaunchSpec, SimProgram};

pub struct SimContainerizer {
    env: Env,
}

impl SimContainerizer {
    pub fn new(env: Env) -> SimContainerizer {
        SimContainerizer { env }
    }

    fn start(
        &self,
        spec: &LaunchSpec,
        start_ms: u64,
    ) -> BoxFuture<'static, Result<Launched, String>> {
        let env = self.env.clone();
        let program = SimProgram::parse(spec.command.as_deref());
        let port = spec.ports.first().copied();
        Box::pin(async move {
            let listener = match port {
                Some(port) => Some(
                    env.bind(SocketAddr::from(([0, 0, 0, 0], port)))
                        .await
                        .map_err(|e| format!("cannot listen on port {port}: {e}"))?,
                ),
                None => None,
            };
            Ok(Launched {
                handle: Handle::Sim { start_ms },
                running: Box::new(SimProcess {
                    env,
                    program,
                    start_ms,
                    listener,
                }),
            })
        })
    }
}

impl Containerizer for SimContainerizer {
    fn kind(&self) -> Kind {
        Kind::Sim
    }

    fn launch(&self, spec: &LaunchSpec) -> BoxFuture<'static, Result<Launched, String>> {
        let now = self.env.unix_ms();
        self.start(spec, now)
    }

    fn recover(
        &self,
        spec: &LaunchSpec,
        handle: Option<Handle>,
        launched_ms: u64,
    ) -> BoxFuture<'static, Result<Launched, String>> {
        // Without a handle the agent stopped right after the checkpoint before the launch: the
        // process started then.
        let start_ms = match handle {
            Some(Handle::Sim { start_ms }) => start_ms,
            None => launched_ms,
            Some(other) => {
                return Box::pin(async move {
                    Err(format!("the sim containerizer cannot recover {other:?}"))
                })
            }
        };
        self.start(spec, start_ms)
    }

    fn check_command(
        &self,
        _spec: &LaunchSpec,
        _handle: &Handle,
        command: &str,
        _environment: &[(String, String)],
        timeout: Duration,
    ) -> BoxFuture<'static, Result<(), String>> {
        let program = SimProgram::parse(Some(command));
        Box::pin(async move {
            let Some(code) = program.exit_code else {
                return Ok(());
            };
            let run = Duration::from_millis(program.run_ms);
            if run > timeout {
                tokio::time::sleep(timeout).await;
                return Err(format!(
                    "Command timed out after {} ms",
                    timeout.as_millis()
                ));
            }
            tokio::time::sleep(run).await;
            match code {
                0 => Ok(()),
                code => Err(format!("Command exited with status {code}")),
            }
        })
    }
}

struct SimProcess {
    env: Env,
    program: SimProgram,
    start_ms: u64,
    listener: Option<Listener>,
}

impl Running for SimProcess {
    fn wait(self: Box<Self>, kill: KillSignal) -> BoxFuture<'static, Exit> {
        let SimProcess {
            env,
            program,
            start_ms,
            listener,
        } = *self;
        Box::pin(async move {
            let serve = async move {
                match listener {
                    Some(listener) => {
                        let router = axum::Router::new().fallback(|| async { "ok" });
                        let _ = drover_core::http::serve(listener, router, std::future::pending())
                            .await;
                    }
                    None => std::future::pending::<()>().await,
                }
                std::future::pending::<()>().await
            };
            let end = async move {
                let Some(code) = program.exit_code else {
                    return std::future::pending::<i32>().await;
                };
                let remaining = (start_ms + program.run_ms).saturating_sub(env.unix_ms());
                tokio::time::sleep(Duration::from_millis(remaining)).await;
                code
            };
            tokio::select! {
                biased;
                _ = kill_requested(kill) => Exit {
                    state: TaskState::TaskKilled,
                    message: "Command killed".into(),
                },
                code = end => match code {
                    0 => Exit {
                        state: TaskState::TaskFinished,
                        message: "Command exited with status 0".into(),
                    },
                    code => Exit {
                        state: TaskState::TaskFailed,
                        message: format!("Command exited with status {code}"),
                    },
                },
                () = serve => unreachable_exit(),
            }
        })
    }
}

fn unreachable_exit() -> Exit {
    Exit {
        state: TaskState::TaskFailed,
        message: "the simulated process' server stopped".into(),
    }
}
