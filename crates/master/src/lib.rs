//! drover-master: the Mesos-like master.
//!
//! - [`allocator`]: DRF over roles and frameworks, filters, suppress/revive; pure code that takes
//!   `now` and an RNG and returns what to offer;
//! - [`v1`]: the Mesos v1 scheduler API's messages (protobuf JSON) and resource conversions.

pub mod allocator;
pub mod v1;
