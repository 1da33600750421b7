//! The `sim` containerizer: a simulated process, Env only, so it runs inside the simulator.
//!
//! The task's shell command is read as a [`SimProgram`]: `sleep N` runs N seconds, then the task
//! ends with its `exit N` code (FINISHED for 0, FAILED otherwise); anything else runs until
//! killed. A task with ports binds the first one on the node and answers every HTTP request with
//! 200 "ok", so HTTP and TCP health checks pass. A simulated process "survives" an agent crash the
//! way a real one would: the agent re-adopts it from the checkpointed start time and it ends at
//! `start + N s`, or at once if that time has passed while the agent was down.
//!
//! A Docker task on a BRIDGE network is a simulated container with an address of its own, as a
//! container on the agent's Docker network has: `10.C.D.K` for the agent at `192.168.C.D`, `K`
//! the lowest free, kept through a re-adoption.
//!
//! A COMMAND health check is read the same way: it takes its `sleep`s (failing with a timeout if
//! they exceed the check's timeout), then passes with `exit 0`/`true` and fails with `exit N`/
//! `false`. A command the simulation cannot read (`curl -f http://$HOST:$PORT0/`) passes: a
//! simulated process is healthy by construction (it answers HTTP on its first port).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_core::env::{BoxFuture, Listener};
use drover_core::task::TaskState;
use drover_core::Env;

use super::{kill_requested, Containerizer, Exit, Handle, KillSignal, Kind, Launched, Running};
use crate::task::{Container, DockerNetwork, LaunchSpec, SimProgram};

pub struct SimContainerizer {
    env: Env,
    /// The container addresses in use (their last byte).
    addresses: Arc<Mutex<BTreeSet<u8>>>,
}

impl SimContainerizer {
    pub fn new(env: Env) -> SimContainerizer {
        SimContainerizer {
            env,
            addresses: Arc::default(),
        }
    }

    /// `recovered`: the addresses a re-adopted task had.
    fn start(
        &self,
        spec: &LaunchSpec,
        start_ms: u64,
        recovered: Vec<String>,
    ) -> BoxFuture<'static, Result<Launched, String>> {
        let env = self.env.clone();
        let program = SimProgram::parse(spec.command.as_deref());
        let port = spec.ports.first().copied();
        let bridged =
            matches!(&spec.container, Container::Docker(d) if d.network == DockerNetwork::Bridge);
        let addresses = self.addresses.clone();
        Box::pin(async move {
            let address = match (bridged, recovered.first()) {
                (false, _) => None,
                (true, Some(ip)) => {
                    let ip: Ipv4Addr = ip
                        .parse()
                        .map_err(|_| format!("a bad container address {ip:?}"))?;
                    lock(&addresses).insert(ip.octets()[3]);
                    Some(ip)
                }
                (true, None) => Some(container_address(&env, &addresses).await?),
            };
            let lease = address.map(|ip| Lease { addresses, ip });
            let listener = match port {
                Some(port) => Some(
                    env.bind(SocketAddr::from(([0, 0, 0, 0], port)))
                        .await
                        .map_err(|e| format!("cannot listen on port {port}: {e}"))?,
                ),
                None => None,
            };
            let ip_addresses = address.iter().map(ToString::to_string).collect();
            Ok(Launched {
                handle: Handle::Sim {
                    start_ms,
                    ip_addresses,
                },
                running: Box::new(SimProcess {
                    env,
                    program,
                    start_ms,
                    listener,
                    _lease: lease,
                }),
            })
        })
    }
}

fn lock(addresses: &Mutex<BTreeSet<u8>>) -> std::sync::MutexGuard<'_, BTreeSet<u8>> {
    addresses.lock().unwrap_or_else(|e| e.into_inner())
}

/// A free address on the agent's simulated container network.
async fn container_address(env: &Env, addresses: &Mutex<BTreeSet<u8>>) -> Result<Ipv4Addr, String> {
    let own = env
        .lookup(env.node())
        .await
        .map_err(|e| format!("the agent's own address: {e}"))?;
    let Some(IpAddr::V4(own)) = own.first().copied() else {
        return Err("the agent has no IPv4 address".into());
    };
    let [_, _, c, d] = own.octets();
    let mut used = lock(addresses);
    let k = (2..=254u8)
        .find(|k| !used.contains(k))
        .ok_or("the agent's container network is full")?;
    used.insert(k);
    Ok(Ipv4Addr::new(10, c, d, k))
}

/// A container's address, free again when its process ends.
struct Lease {
    addresses: Arc<Mutex<BTreeSet<u8>>>,
    ip: Ipv4Addr,
}

impl Drop for Lease {
    fn drop(&mut self) {
        lock(&self.addresses).remove(&self.ip.octets()[3]);
    }
}

impl Containerizer for SimContainerizer {
    fn kind(&self) -> Kind {
        Kind::Sim
    }

    fn launch(&self, spec: &LaunchSpec) -> BoxFuture<'static, Result<Launched, String>> {
        let now = self.env.unix_ms();
        self.start(spec, now, Vec::new())
    }

    fn recover(
        &self,
        spec: &LaunchSpec,
        handle: Option<Handle>,
        launched_ms: u64,
    ) -> BoxFuture<'static, Result<Launched, String>> {
        // Without a handle the agent stopped right after the checkpoint before the launch: the
        // process started then.
        let (start_ms, recovered) = match handle {
            Some(Handle::Sim {
                start_ms,
                ip_addresses,
            }) => (start_ms, ip_addresses),
            None => (launched_ms, Vec::new()),
            Some(other) => {
                return Box::pin(async move {
                    Err(format!("the sim containerizer cannot recover {other:?}"))
                })
            }
        };
        self.start(spec, start_ms, recovered)
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
    /// Held while the process runs.
    _lease: Option<Lease>,
}

impl Running for SimProcess {
    fn wait(self: Box<Self>, kill: KillSignal) -> BoxFuture<'static, Exit> {
        let SimProcess {
            env,
            program,
            start_ms,
            listener,
            _lease: lease,
        } = *self;
        Box::pin(async move {
            let _held = lease;
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
