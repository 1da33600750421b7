//! drover-core: what every role shares.
//!
//! - [`env`]: the seam (network, clocks, randomness, disk, events) that lets the same role code run
//!   as a live daemon and inside the deterministic simulation;
//! - [`http`]: HTTP servers and clients over that seam; [`auth`]: HTTP Basic authentication;
//! - [`frame`]: the node-to-node frame codec (length-delimited, versioned envelope);
//! - [`agent_proto`]: the agent ↔ master messages carried in those frames;
//! - [`recordio`]: the framing of Mesos' HTTP event streams;
//! - [`v1`]: the Mesos v1 scheduler API's messages (protobuf JSON);
//! - [`resources`]: Mesos resources, their text form and their arithmetic;
//! - [`task`]: Mesos task states.

pub mod agent_proto;
pub mod auth;
pub mod env;
pub mod frame;
pub mod http;
pub mod record;
pub mod recordio;
pub mod resources;
pub mod task;
pub mod ui;
pub mod v1;

pub use env::{Env, Event};
pub use resources::Resources;
