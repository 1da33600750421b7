//! drover-nodes: the `drover` command line. Each subcommand starts one role as a live daemon, or
//! drives the simulator (`drover sim`).

mod sim;

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
}

#[derive(Subcommand)]
enum Command {
    /// Run scenarios in the deterministic simulator and check their invariants.
    Sim(sim::SimArgs),
}

/// The roles this build can start in a simulation.
pub fn roles() -> drover_sim::Roles {
    drover_sim::Roles::new().with(drover_sim::probe::role())
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Sim(args) => sim::main(args),
    }
}
