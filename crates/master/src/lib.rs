//! drover-master: the Mesos-like master.
//!
//! - [`allocator`]: DRF over roles and frameworks, filters, suppress/revive; pure code that takes
//!   `now` and an RNG and returns what to offer;
//! - [`core`]: the leading master's state (agents, frameworks, offers, tasks, status updates) and
//!   what each input does to it;
//! - [`daemon`]: the daemon around it: one port for HTTP and agents, leader election through
//!   coord, the registry, the v1 scheduler API, `/master/state`, `/metrics/snapshot`;
//! - [`client`]: a client of the v1 scheduler API (used by drover's scheduler and by tests);
//! - [`files`]: `/agent/<id>/files/...` and `/agent/<id>/state` forwarded to that agent.

pub mod allocator;
pub mod client;
pub mod core;
pub mod daemon;
pub mod files;
pub mod ui;
