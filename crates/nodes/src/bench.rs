//! `drover bench`: load generators that measure drover against a reference in the same run.
//!
//! - `drover bench coord --target drover=HOSTS --target zookeeper=HOSTS`: N concurrent ZooKeeper
//!   clients doing 1 KB setData and create for a fixed time against each target in turn; prints
//!   writes/s and p50/p99 latency per target, and the ratios of the first target to the second.
//! - `drover bench failover --hosts HOSTS --pids PIDS`: finds the leader (four-letter `srvr`),
//!   kills it with SIGKILL, and measures the time until a client's write succeeds again.
//!
//! - `drover bench launch --scheduler HOST:PORT --master HOST:PORT`: POSTs one app of N instances
//!   to a live scheduler and times it until all are RUNNING (then DELETEs it and times until none
//!   is); prints tasks/s and the ratio to Marathon 0.15's published figure. `bench/launch-1000.sh`
//!   starts the cluster it measures.
//! - `drover bench sim-launch`: the same app POSTed in the simulator; placed tasks per simulated
//!   second, and simulated seconds per wall second.
//! - `drover bench sim-failover`: thousands of simulated agents running an app's instances, then
//!   the leading master crashes; simulated time until every agent is back with the new leader
//!   and offers flow again.
//!
//! - `drover bench master-memory`: a live master (this binary) and N synthetic agents that
//!   register over the agent protocol with their tasks; the master's resident memory before and
//!   after, per agent and per task.
//!
//! `coord` and `failover` speak only the ZooKeeper protocol, so they measure drover coord and real
//! ZooKeeper alike.

// This is a live-only command: it reads the real clock and starts a `kill` process.
#![allow(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use drover_coord::client::{Client, ClientConfig, CreateMode};
use drover_coord::proto::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod coord;
mod launch;
mod memory;
mod sim;

use coord::{coord, failover};
use launch::launch;
use memory::master_memory;
use sim::{sim_failover, sim_launch};

#[derive(Subcommand)]
pub enum Bench {
    /// Write throughput and latency of ZooKeeper-protocol servers.
    Coord(CoordBench),
    /// Time from killing the leader to the first successful write.
    Failover(FailoverBench),
    /// Time from POSTing an app of N instances to a live scheduler until all are RUNNING.
    Launch(LaunchBench),
    /// Placed tasks per simulated second for an app of N instances in the simulator.
    SimLaunch(SimLaunchBench),
    /// Simulated time from a leading master's crash, at cluster scale, until every agent is
    /// back with the new leader and offers flow again.
    SimFailover(SimFailoverBench),
    /// Resident memory of a live master holding N agents and their tasks (synthetic agents).
    MasterMemory(MasterMemoryBench),
    /// Every decoder that reads the network, fed a million mutated inputs each: 0 panics.
    Fuzz(crate::fuzz::FuzzBench),
}

#[derive(Args)]
pub struct LaunchBench {
    /// The scheduler's `/v2` API, `HOST:PORT`.
    #[arg(long)]
    scheduler: String,
    /// The leading master's HTTP API, `HOST:PORT` (to wait for the agents and count tasks).
    #[arg(long)]
    master: String,
    #[arg(long, default_value_t = 1000)]
    instances: u32,
    /// Wait until this many agents are registered and active before POSTing.
    #[arg(long, default_value_t = 3)]
    agents: usize,
    #[arg(long, default_value = "/bench")]
    app_id: String,
    #[arg(long, default_value = "sleep 1000")]
    cmd: String,
    /// Give up (and fail) after this many seconds in any one phase.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Wait this long (ms) after first seeing the scheduler subscribed before POSTing: a scheduler
    /// launches nothing for 3 s after it subscribes (reconciliation first, checked each second), and
    /// the POST should find it ready.
    #[arg(long, default_value_t = 4000)]
    settle_ms: u64,
}

#[derive(Args)]
pub struct SimLaunchBench {
    #[arg(long, default_value_t = 1000)]
    instances: u32,
    #[arg(long, default_value_t = 3)]
    agents: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Coordination servers in the simulated cluster (1 or 3).
    #[arg(long, default_value_t = 1)]
    coord: u32,
    /// Simulated seconds the run lasts; the app is POSTed at 15 s.
    #[arg(long, default_value_t = 120)]
    duration: u64,
    /// Write the run's trace to this file.
    #[arg(long)]
    trace: Option<std::path::PathBuf>,
}

#[derive(Args)]
pub struct SimFailoverBench {
    #[arg(long, default_value_t = 10_000)]
    agents: u32,
    /// Instances of the one app (cpus 0.01, mem 1), spread over the agents before the crash.
    #[arg(long, default_value_t = 100_000)]
    tasks: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the run's trace to this file.
    #[arg(long)]
    trace: Option<std::path::PathBuf>,
}

#[derive(Args)]
pub struct MasterMemoryBench {
    #[arg(long, default_value_t = 10_000)]
    agents: u32,
    /// Tasks in all, spread evenly over the agents (RUNNING, reported at registration).
    #[arg(long, default_value_t = 100_000)]
    tasks: u32,
    #[arg(long, default_value_t = 300)]
    timeout: u64,
}

/// Mesos' published master failover figure at this scale: about 4.5 s with 10,000 agents (the
/// figure issue #15 gives; the reference is not run here).
const MESOS_FAILOVER_10K_AGENTS_S: f64 = 4.5;

/// Marathon 0.15's published launch figure: 500 instances on 189 agents in 14.18 s.
const MARATHON_015_TASKS_PER_S: f64 = 500.0 / 14.18;

#[derive(Args)]
pub struct CoordBench {
    /// `NAME=HOST:PORT,HOST:PORT,...`, measured in the order given; ratios compare the first
    /// target with the second.
    #[arg(long = "target", required = true)]
    targets: Vec<String>,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 1024)]
    data_bytes: usize,
    /// Percent of operations that are getData of the client's node (the rest: setData and
    /// create, alternately), spread evenly: ZooKeeper's own benchmark measures by read share.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u8).range(0..=100))]
    reads: u8,
}

#[derive(Args)]
pub struct FailoverBench {
    #[arg(long, default_value = "target")]
    name: String,
    /// The servers' client addresses, `HOST:PORT,...`.
    #[arg(long)]
    hosts: String,
    /// The servers' process ids, in the order of `--hosts`.
    #[arg(long)]
    pids: String,
}

pub async fn main(bench: Bench) -> anyhow::Result<()> {
    match bench {
        Bench::Coord(args) => coord(args).await,
        Bench::Failover(args) => failover(args).await,
        Bench::Launch(args) => launch(args).await,
        Bench::SimLaunch(args) => sim_launch(args).await,
        Bench::SimFailover(args) => sim_failover(args).await,
        Bench::MasterMemory(args) => master_memory(args).await,
        Bench::Fuzz(args) => crate::fuzz::run(args),
    }
}

/// One HTTP exchange; the body is JSON in and out (`null` when the answer is not JSON).
async fn call(
    env: &drover_core::Env,
    (host, port): &(String, u16),
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let mut builder = http::Request::builder().method(method).uri(path);
    if body.is_some() {
        builder = builder.header(http::header::CONTENT_TYPE, "application/json");
    }
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let request = builder.body(bytes::Bytes::from(bytes))?;
    let response =
        drover_core::http::request(env, host, *port, request, Duration::from_secs(10)).await?;
    let status = response.status().as_u16();
    let value = serde_json::from_slice(response.body()).unwrap_or(serde_json::Value::Null);
    Ok((status, value))
}

/// The deadline of one phase: `check` fails once it has passed.
struct Phase {
    what: String,
    started: Instant,
    timeout: Duration,
}

impl Phase {
    fn new(what: impl Into<String>, timeout: Duration) -> Phase {
        Phase {
            what: what.into(),
            started: Instant::now(),
            timeout,
        }
    }

    /// Sleeps the 200 ms between two polls, or fails when the phase took too long.
    async fn next(&self) -> anyhow::Result<()> {
        if self.started.elapsed() > self.timeout {
            bail!("{}: not within {} s", self.what, self.timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        Ok(())
    }
}
