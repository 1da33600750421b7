//! drover-core: what every role shares.
//!
//! - [`env`]: the seam (network, clocks, randomness, disk, events) that lets the same role code run
//!   as a live daemon and inside the deterministic simulation;
//! - [`http`]: HTTP servers and clients over that seam;
//! - [`frame`]: the node-to-node frame codec (length-delimited, versioned envelope);
//! - [`recordio`]: the framing of Mesos' HTTP event streams;
//! - [`resources`]: Mesos resources, their text form and their arithmetic.

pub mod env;
pub mod frame;
pub mod http;
pub mod recordio;
pub mod resources;
pub mod task;

pub use env::{Env, Event};
pub use resources::Resources;
