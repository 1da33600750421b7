//! drover-coord: a ZooKeeper-compatible coordination service.
//!
//! - [`proto`]: the ZooKeeper client wire protocol (jute), pure encode/decode;
//! - [`tree`]: the znode tree and sessions, the replicated state machine;

pub mod proto;
pub mod tree;
