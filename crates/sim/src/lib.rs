//! drover-sim: the deterministic simulation harness.
//!
//! A [`scenario`] (JSON) describes a cluster, a timeline of faults and requests, and what must
//! hold; [`run::run`] plays it with the real role code behind the simulated side of the Env seam
//! ([`env`], [`net`]), records the [`trace`] and checks the [`invariants`].

pub mod cluster;
pub mod env;
pub mod explore;
pub mod invariants;
pub mod judge;
pub mod linearizability;
pub mod net;
pub mod probe;
pub mod report;
pub mod run;
pub mod scenario;
pub mod trace;

pub use cluster::{NodeContext, Role, Roles};
pub use run::{run, Outcome};
pub use scenario::{load, Scenario, ScenarioError};
