//! Containerizers that run real processes and containers; never used under simulation.

pub mod docker;
pub mod mesos;
pub mod process;
