//! drover-agent: runs tasks and reports their status.
//!
//! - [`status`]: the status update manager (per-task streams, retries, acknowledgements);
//! - [`containerizer`]: how tasks run (`live::process`: `sh -c` in its own process group).

pub mod containerizer;
pub mod status;
