//! drover-coord: a ZooKeeper-compatible coordination service.
//!
//! - [`proto`]: the ZooKeeper client wire protocol (jute), pure encode/decode;
//! - [`tree`]: the znode tree and sessions, the replicated state machine;
//! - [`acl`]: ZooKeeper's access control (ids, ACL checks, `fixupACL`);
//! - [`entry`]: what a raft log entry carries;
//! - [`log`]: the raft log and snapshots, durable through the Env's Disk;
//! - [`watches`]: the one-shot watches of a server's own connections;
//! - [`server`]: the server itself (clients, peers, the raft-driving core);
//! - [`client`]: a client over the Env, and [`recipes`] on it (leader election, group membership);
//! - [`url`]: `zk://[user:password@]hosts/path`, as Mesos and Marathon take an ensemble.

pub mod acl;
pub mod client;
pub mod entry;
pub mod log;
pub mod proto;
pub mod recipes;
pub mod server;
pub mod tree;
pub mod url;
pub mod watches;
