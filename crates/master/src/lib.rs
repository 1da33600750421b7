//! drover-master: the Mesos-like master.
//!
//! - [`allocator`]: DRF over roles and frameworks, filters, suppress/revive; pure code that takes
//!   `now` and an RNG and returns what to offer.

pub mod allocator;
