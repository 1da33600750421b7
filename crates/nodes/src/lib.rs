//! drover-nodes: the `drover` command line. Each subcommand starts one role as a live daemon, or
//! drives the simulator (`drover sim`). The roles' simulated registrations live here too, so the
//! simulator starts the same code the daemons run.

mod agent;
mod bench;
mod coord;
mod dns;
mod framework;
mod fuzz;
mod intruder;
mod live;
mod master;
mod node;
mod scheduler;
mod sim;
mod up;
mod workload;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "drover",
    version,
    about = "A cluster manager in the family of Mesos + Marathon + ZooKeeper, with a deterministic simulator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Append every event the daemon records (`leader term=3`, `task_state ...`: what the
    /// simulator traces) to this file as JSON lines, `{"unix_ms", "node", "event"}`.
    #[arg(long, global = true)]
    events: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run scenarios in the deterministic simulator and check their invariants.
    Sim(sim::SimArgs),
    /// Run a ZooKeeper-compatible coordination server.
    Coord(coord::CoordArgs),
    /// Run a Mesos-like master (the v1 scheduler API on its port, agents on the same port).
    Master(master::MasterArgs),
    /// Run an agent: registers with the leading master and runs its tasks.
    Agent(agent::AgentArgs),
    /// Run a Marathon-compatible scheduler (the `/v2` REST API), a framework on the master.
    Scheduler(scheduler::SchedulerArgs),
    /// Answer DNS for the tasks (WeaveDNS' and Mesos-DNS' names), following the leading master.
    Dns(dns::DnsArgs),
    /// Run one node of a scenario's cluster live, with the role code the simulator runs (what
    /// `drover sim --live` starts in each container).
    Node(node::NodeArgs),
    /// Run a whole local cluster in this process: coord, master, two agents and the scheduler.
    Up(up::UpArgs),
    /// Measure drover against a reference in the same run.
    #[command(subcommand)]
    Bench(bench::Bench),
}

/// The roles this build can start in a simulation.
pub fn roles() -> drover_sim::Roles {
    drover_sim::Roles::new()
        .with(drover_sim::probe::role())
        .with(coord::role())
        .with(master::role())
        .with(framework::role())
        .with(agent::role())
        .with(scheduler::role())
        .with(dns::role())
        .with(dns::resolver())
        .with(workload::writer())
        .with(workload::owner())
        .with(workload::watcher())
        .with(intruder::role())
}

/// Logs to stderr, `RUST_LOG`-style filter, `info` by default.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// The multi-threaded runtime live daemons run on; None (and a message) if it cannot start.
fn live_runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            None
        }
    }
}

/// Runs a live daemon's future on a multi-threaded runtime until it ends or Ctrl-C.
fn run_daemon<F>(
    daemon: impl FnOnce(std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>) -> F,
) -> ExitCode
where
    F: std::future::Future<Output = anyhow::Result<()>>,
{
    init_logging();
    let Some(runtime) = live_runtime() else {
        return ExitCode::FAILURE;
    };
    // Ctrl-C, or SIGTERM (`docker stop`, systemd, `kill`): stop gracefully.
    let shutdown = Box::pin(async {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("stopping");
    });
    match runtime.block_on(daemon(shutdown)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(path) = &cli.events {
        if let Err(e) = drover_core::env::live::write_events_to(path) {
            eprintln!("error: --events {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    match cli.command {
        Command::Sim(args) => sim::main(args),
        Command::Coord(args) => run_daemon(|shutdown| coord::main(args, shutdown)),
        Command::Master(args) => run_daemon(|shutdown| master::main(args, shutdown)),
        Command::Agent(args) => run_daemon(|shutdown| agent::main(args, shutdown)),
        Command::Scheduler(args) => run_daemon(|shutdown| scheduler::main(args, shutdown)),
        Command::Dns(args) => run_daemon(|shutdown| dns::main(args, shutdown)),
        Command::Up(args) => run_daemon(|shutdown| up::main(args, shutdown)),
        Command::Node(args) => run_daemon(|shutdown| node::main(args, shutdown)),
        Command::Bench(args) => run_daemon(|_| bench::main(args)),
    }
}
