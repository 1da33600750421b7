//! The znode tree and the sessions that own ephemeral nodes: the replicated state machine.
//!
//! Every replica applies the same log entries in the same order, so [`DataTree::apply`] is plain,
//! deterministic code: it takes the entry's zxid and time and returns the client's result and the
//! changes that fire watches. Reads are served from the tree of whichever server the client is
//! connected to.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use imbl::{OrdMap, OrdSet};
use serde::{Deserialize, Serialize};

use crate::acl::{self, perm, Id};
use crate::proto::{
    mode, op, Acl, DecodeError, ErrorCode, MultiResult, Op, Reader, Response, Stat, Writer,
};

/// `ephemeralOwner` of a container node, as in ZooKeeper.
pub const CONTAINER_OWNER: i64 = i64::MIN;

/// The largest znode payload, like ZooKeeper's `jute.maxbuffer` default.
pub const MAX_DATA_BYTES: usize = 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub data: Vec<u8>,
    pub stat: Stat,
    pub children: OrdSet<String>,
    /// How many children were ever created here: the next sequential suffix. (ZooKeeper numbers
    /// sequential children by creates only; `cversion` counts deletes too.)
    #[serde(default)]
    pub creates: i32,
    /// The node's ACL; None is `world:anyone` with every permission, which nearly every node has
    /// (nothing is stored for it).
    #[serde(default)]
    pub acl: Option<Arc<Vec<Acl>>>,
}

impl Node {
    pub fn acl(&self) -> &[Acl] {
        match &self.acl {
            Some(acl) => acl,
            None => &acl::OPEN,
        }
    }
}

/// How a node keeps `acl` (already fixed up).
fn stored_acl(acl: Vec<Acl>) -> Option<Arc<Vec<Acl>>> {
    (acl != *acl::OPEN).then(|| Arc::new(acl))
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub timeout_ms: i32,
    pub password: Vec<u8>,
}

/// What a log entry asks of the state machine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Txn {
    CreateSession {
        id: i64,
        password: Vec<u8>,
        timeout_ms: i32,
    },
    /// A client's close, or the leader's expiry of a silent session.
    CloseSession { id: i64 },
    /// A write operation of a session (create, delete, setData, setACL, check, multi), with the
    /// ids its connection had proven (the ACLs are checked where the entry is applied).
    Write { session: i64, op: Op, ids: Vec<Id> },
    /// Changes nothing: a barrier for `sync`, and the leader's first entry of a term.
    Noop,
}

/// A change that fires watches.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Change {
    Created(String),
    Deleted(String),
    DataChanged(String),
    ChildrenChanged(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataTree {
    /// Persistent maps: a clone shares everything with the original and costs O(1), so a
    /// snapshot is taken of a clone while the tree goes on changing.
    nodes: OrdMap<String, Node>,
    sessions: OrdMap<i64, Session>,
    /// Ephemeral paths by owner session.
    ephemerals: BTreeMap<i64, BTreeSet<String>>,
    /// The zxid of the last applied entry.
    pub last_zxid: i64,
}

impl Default for DataTree {
    fn default() -> Self {
        let mut tree = DataTree {
            nodes: OrdMap::new(),
            sessions: OrdMap::new(),
            ephemerals: BTreeMap::new(),
            last_zxid: 0,
        };
        let empty = |children: &[&str]| Node {
            data: Vec::new(),
            stat: Stat {
                num_children: children.len() as i32,
                ..Stat::default()
            },
            children: children.iter().map(|c| c.to_string()).collect(),
            creates: children.len() as i32,
            acl: None,
        };
        tree.nodes.insert("/".into(), empty(&["zookeeper"]));
        tree.nodes
            .insert("/zookeeper".into(), empty(&["config", "quota"]));
        tree.nodes.insert("/zookeeper/config".into(), empty(&[]));
        tree.nodes.insert("/zookeeper/quota".into(), empty(&[]));
        tree
    }
}

/// Checks a path the way ZooKeeper does: absolute, no empty, `.` or `..` segments, no trailing
/// `/`, no control or private-use characters.
pub fn validate_path(path: &str) -> Result<(), ErrorCode> {
    if !path.starts_with('/') {
        return Err(ErrorCode::BadArguments);
    }
    if path == "/" {
        return Ok(());
    }
    if path.ends_with('/') {
        return Err(ErrorCode::BadArguments);
    }
    for segment in path[1..].split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(ErrorCode::BadArguments);
        }
    }
    let bad = |c: char| matches!(c, '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' | '\u{e000}'..='\u{f8ff}' | '\u{fff0}'..='\u{ffff}');
    if path.chars().any(bad) {
        return Err(ErrorCode::BadArguments);
    }
    Ok(())
}

pub fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(i) => &path[..i],
    }
}

fn name_of(path: &str) -> &str {
    &path[path.rfind('/').map_or(0, |i| i + 1)..]
}

/// The prior state of what an operation touched, so a failed multi can be undone. Only a multi
/// keeps it (`keep`): a single operation that fails changes nothing, and copying a parent node
/// with all its children for every create would make creates cost as much as the parent is big.
#[derive(Default)]
struct Undo {
    keep: bool,
    nodes: Vec<(String, Option<Node>)>,
    ephemerals: Vec<(i64, String, bool)>,
}

/// 2: each node's ACL after its counters (version 1, without them, is still read: every node
/// then had the open ACL).
const SNAPSHOT_VERSION: i32 = 2;

/// The tree and sessions at one zxid, sharing their storage with the tree they came from.
pub struct SnapshotView {
    nodes: OrdMap<String, Node>,
    sessions: OrdMap<i64, Session>,
    last_zxid: i64,
}

impl SnapshotView {
    /// The compact binary form a raft snapshot carries (see [`DataTree::encode_snapshot`]).
    pub fn encode(&self) -> Vec<u8> {
        // Path, data, stat and counters of every node, in one allocation.
        let size: usize = self
            .nodes
            .iter()
            .map(|(p, n)| p.len() + n.data.len() + 80)
            .sum();
        let mut w = Writer::default();
        w.bytes.reserve(size);
        w.int(SNAPSHOT_VERSION);
        w.long(self.last_zxid);
        w.int(self.nodes.len() as i32);
        for (path, node) in &self.nodes {
            w.string(path);
            w.buffer(&node.data);
            w.stat(&node.stat);
            w.int(node.creates);
            w.acls(node.acl());
        }
        w.int(self.sessions.len() as i32);
        for (id, session) in &self.sessions {
            w.long(*id);
            w.int(session.timeout_ms);
            w.buffer(&session.password);
        }
        w.bytes
    }
}

impl DataTree {
    /// The tree and sessions in a compact binary form (jute primitives): what a raft snapshot
    /// carries. Children lists and the ephemeral index are derived again on decoding.
    pub fn encode_snapshot(&self) -> Vec<u8> {
        self.snapshot_view().encode()
    }

    /// The tree as it is now, for encoding elsewhere while this one goes on changing: O(1).
    pub fn snapshot_view(&self) -> SnapshotView {
        SnapshotView {
            nodes: self.nodes.clone(),
            sessions: self.sessions.clone(),
            last_zxid: self.last_zxid,
        }
    }

    pub fn decode_snapshot(bytes: &[u8]) -> Result<DataTree, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.int("snapshot version")?;
        if !(1..=SNAPSHOT_VERSION).contains(&version) {
            return Err(DecodeError {
                offset: 0,
                expected: format!("snapshot version 1 to {SNAPSHOT_VERSION}, found {version}"),
            });
        }
        let last_zxid = r.long("last zxid")?;
        let mut tree = DataTree {
            nodes: OrdMap::new(),
            sessions: OrdMap::new(),
            ephemerals: BTreeMap::new(),
            last_zxid,
        };
        let count = r.int("node count")?;
        for _ in 0..count.max(0) {
            let path = r.string("node path")?;
            let data = r.buffer("node data")?;
            let stat = r.stat()?;
            let creates = r.int("node creates")?;
            let acl = if version >= 2 {
                stored_acl(r.acls()?)
            } else {
                None
            };
            tree.nodes.insert(
                path,
                Node {
                    data,
                    stat,
                    children: OrdSet::new(),
                    creates,
                    acl,
                },
            );
        }
        let paths: Vec<String> = tree.nodes.keys().filter(|p| *p != "/").cloned().collect();
        for path in paths {
            let parent = parent_of(&path).to_string();
            let owner = tree.nodes.get(&path).map_or(0, |n| n.stat.ephemeral_owner);
            let Some(parent_node) = tree.nodes.get_mut(&parent) else {
                return Err(DecodeError {
                    offset: r.remaining(),
                    expected: format!("the parent of {path:?} in the snapshot"),
                });
            };
            parent_node.children.insert(name_of(&path).to_string());
            if owner != 0 && owner != CONTAINER_OWNER {
                tree.ephemerals.entry(owner).or_default().insert(path);
            }
        }
        let sessions = r.int("session count")?;
        for _ in 0..sessions.max(0) {
            let id = r.long("session id")?;
            let timeout_ms = r.int("session timeout")?;
            let password = r.buffer("session password")?;
            tree.sessions.insert(
                id,
                Session {
                    timeout_ms,
                    password,
                },
            );
        }
        Ok(tree)
    }

    pub fn node(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn session(&self, id: i64) -> Option<&Session> {
        self.sessions.get(&id)
    }

    pub fn sessions(&self) -> impl Iterator<Item = (i64, &Session)> {
        self.sessions.iter().map(|(id, s)| (*id, s))
    }

    pub fn ephemerals_of(&self, session: i64) -> Vec<String> {
        self.ephemerals
            .get(&session)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Container nodes that had children and have none left (to be deleted by the leader).
    pub fn empty_containers(&self) -> Vec<String> {
        let empty = |n: &&Node| {
            n.stat.ephemeral_owner == CONTAINER_OWNER
                && n.stat.cversion > 0
                && n.children.is_empty()
        };
        self.nodes
            .iter()
            .filter(|(_, n)| empty(n))
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Serves a read operation of a connection that proved `ids`.
    pub fn read(&self, op: &Op, ids: &[Id]) -> Result<Response, ErrorCode> {
        let found = |path: &str| -> Result<&Node, ErrorCode> {
            validate_path(path)?;
            self.nodes.get(path).ok_or(ErrorCode::NoNode)
        };
        match op {
            Op::Exists { path, .. } => Ok(Response::Stat(found(path)?.stat)),
            Op::GetData { path, .. } => {
                let node = found(path)?;
                acl::allows(node.acl(), ids, perm::READ)?;
                Ok(Response::Data(node.data.clone(), node.stat))
            }
            Op::GetChildren {
                path, with_stat, ..
            } => {
                let node = found(path)?;
                acl::allows(node.acl(), ids, perm::READ)?;
                let children = node.children.iter().cloned().collect();
                Ok(if *with_stat {
                    Response::Children2(children, node.stat)
                } else {
                    Response::Children(children)
                })
            }
            Op::GetAcl { path } => {
                let node = found(path)?;
                acl::allows(node.acl(), ids, perm::READ | perm::ADMIN)?;
                let mut list = node.acl().to_vec();
                // As ZooKeeper 3.6+: without ADMIN, a digest's hash is hidden (`user:x`), or
                // anyone who may read a node could crack its owner's password offline.
                if acl::allows(node.acl(), ids, perm::ADMIN).is_err() {
                    for entry in list.iter_mut().filter(|a| a.scheme == "digest") {
                        let user = entry.id.split(':').next().unwrap_or_default().to_string();
                        entry.id = format!("{user}:x");
                    }
                }
                Ok(Response::Acl(list, node.stat))
            }
            _ => Err(ErrorCode::Unimplemented),
        }
    }

    /// Applies one log entry at `zxid`, stamped `time_ms` by its proposer.
    pub fn apply(
        &mut self,
        zxid: i64,
        time_ms: i64,
        txn: &Txn,
    ) -> (Result<Response, ErrorCode>, Vec<Change>) {
        self.last_zxid = self.last_zxid.max(zxid);
        let mut changes = Vec::new();
        let result = match txn {
            Txn::Noop => Ok(Response::Empty),
            Txn::CreateSession {
                id,
                password,
                timeout_ms,
            } => {
                if self.sessions.contains_key(id) {
                    Err(ErrorCode::SystemError)
                } else {
                    self.sessions.insert(
                        *id,
                        Session {
                            timeout_ms: *timeout_ms,
                            password: password.clone(),
                        },
                    );
                    Ok(Response::Empty)
                }
            }
            Txn::CloseSession { id } => {
                if self.sessions.remove(id).is_none() {
                    Err(ErrorCode::SessionExpired)
                } else {
                    for path in self.ephemerals_of(*id) {
                        let mut undo = Undo::default();
                        // An ephemeral has no children, so its deletion cannot fail.
                        let _ = self.delete(&path, -1, None, zxid, &mut undo, &mut changes);
                    }
                    self.ephemerals.remove(id);
                    Ok(Response::Empty)
                }
            }
            Txn::Write { session, op, ids } => {
                // The servers' own writes (session 0: deleting empty containers) pass every ACL.
                let system = [(acl::SUPER.to_string(), String::new())];
                let ids = if *session == 0 { &system[..] } else { &ids[..] };
                if *session != 0 && !self.sessions.contains_key(session) {
                    Err(ErrorCode::SessionExpired)
                } else if let Op::Multi { ops } = op {
                    Ok(self.multi(ops, *session, ids, zxid, time_ms, &mut changes))
                } else {
                    let mut undo = Undo::default();
                    self.write(op, *session, ids, zxid, time_ms, &mut undo, &mut changes)
                }
            }
        };
        (result, changes)
    }

    fn multi(
        &mut self,
        ops: &[Op],
        session: i64,
        ids: &[Id],
        zxid: i64,
        time_ms: i64,
        changes: &mut Vec<Change>,
    ) -> Response {
        let mut undo = Undo {
            keep: true,
            ..Undo::default()
        };
        let mut staged = Vec::new();
        let mut results = Vec::with_capacity(ops.len());
        for (i, op) in ops.iter().enumerate() {
            let outcome = match op {
                Op::Create { .. } | Op::Delete { .. } | Op::SetData { .. } | Op::Check { .. } => {
                    self.write(op, session, ids, zxid, time_ms, &mut undo, &mut staged)
                }
                _ => Err(ErrorCode::Unimplemented),
            };
            match outcome {
                Ok(response) => results.push(MultiResult::Ok {
                    opcode: multi_opcode(op),
                    response,
                }),
                Err(code) => {
                    self.rollback(undo);
                    // As ZooKeeper reports it: those before rolled back (0), this one's error,
                    // those after not attempted.
                    let mut failed: Vec<MultiResult> =
                        (0..i).map(|_| MultiResult::Error(ErrorCode::Ok)).collect();
                    failed.push(MultiResult::Error(code));
                    failed.extend(
                        (i + 1..ops.len())
                            .map(|_| MultiResult::Error(ErrorCode::RuntimeInconsistency)),
                    );
                    return Response::Multi(failed);
                }
            }
        }
        changes.extend(staged);
        Response::Multi(results)
    }

    fn rollback(&mut self, undo: Undo) {
        for (path, prior) in undo.nodes.into_iter().rev() {
            match prior {
                Some(node) => self.nodes.insert(path, node),
                None => self.nodes.remove(&path),
            };
        }
        for (session, path, added) in undo.ephemerals.into_iter().rev() {
            let set = self.ephemerals.entry(session).or_default();
            if added {
                set.remove(&path);
            } else {
                set.insert(path);
            }
        }
    }

    fn remember(&self, undo: &mut Undo, path: &str) {
        if !undo.keep {
            return;
        }
        undo.nodes
            .push((path.to_string(), self.nodes.get(path).cloned()));
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        op: &Op,
        session: i64,
        ids: &[Id],
        zxid: i64,
        time_ms: i64,
        undo: &mut Undo,
        changes: &mut Vec<Change>,
    ) -> Result<Response, ErrorCode> {
        match op {
            Op::Create {
                path,
                data,
                acl,
                flags,
                opcode,
            } => self.create(
                path,
                data,
                acl,
                *flags,
                *opcode,
                (session, ids),
                zxid,
                time_ms,
                undo,
                changes,
            ),
            Op::Delete { path, version } => self
                .delete(path, *version, Some(ids), zxid, undo, changes)
                .map(|_| Response::Empty),
            Op::SetData {
                path,
                data,
                version,
            } => {
                validate_path(path)?;
                if data.len() > MAX_DATA_BYTES {
                    return Err(ErrorCode::BadArguments);
                }
                let node = self.nodes.get(path).ok_or(ErrorCode::NoNode)?;
                acl::allows(node.acl(), ids, perm::WRITE)?;
                if *version != -1 && *version != node.stat.version {
                    return Err(ErrorCode::BadVersion);
                }
                self.remember(undo, path);
                let node = self.nodes.get_mut(path).ok_or(ErrorCode::NoNode)?;
                node.data = data.clone();
                node.stat.version = node.stat.version.wrapping_add(1);
                node.stat.mzxid = zxid;
                node.stat.mtime = time_ms;
                node.stat.data_length = data.len() as i32;
                changes.push(Change::DataChanged(path.clone()));
                Ok(Response::Stat(node.stat))
            }
            Op::SetAcl { path, acl, version } => {
                validate_path(path)?;
                let acl = acl::fixup(acl, ids)?;
                let node = self.nodes.get(path).ok_or(ErrorCode::NoNode)?;
                acl::allows(node.acl(), ids, perm::ADMIN)?;
                if *version != -1 && *version != node.stat.aversion {
                    return Err(ErrorCode::BadVersion);
                }
                self.remember(undo, path);
                let node = self.nodes.get_mut(path).ok_or(ErrorCode::NoNode)?;
                node.acl = stored_acl(acl);
                node.stat.aversion = node.stat.aversion.wrapping_add(1);
                Ok(Response::Stat(node.stat))
            }
            Op::Check { path, version } => {
                validate_path(path)?;
                let node = self.nodes.get(path).ok_or(ErrorCode::NoNode)?;
                acl::allows(node.acl(), ids, perm::READ)?;
                if *version != -1 && *version != node.stat.version {
                    return Err(ErrorCode::BadVersion);
                }
                Ok(Response::Empty)
            }
            _ => Err(ErrorCode::Unimplemented),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create(
        &mut self,
        path: &str,
        data: &[u8],
        acl: &[Acl],
        flags: i32,
        opcode: i32,
        (session, ids): (i64, &[Id]),
        zxid: i64,
        time_ms: i64,
        undo: &mut Undo,
        changes: &mut Vec<Change>,
    ) -> Result<Response, ErrorCode> {
        let container = opcode == op::CREATE_CONTAINER || flags == mode::CONTAINER;
        if matches!(
            flags,
            mode::PERSISTENT_WITH_TTL | mode::PERSISTENT_SEQUENTIAL_WITH_TTL
        ) || opcode == op::CREATE_TTL
        {
            return Err(ErrorCode::Unimplemented);
        }
        if !(0..=mode::CONTAINER).contains(&flags) {
            return Err(ErrorCode::BadArguments);
        }
        let ephemeral = !container && flags & mode::EPHEMERAL != 0;
        let sequential = !container && flags & mode::SEQUENTIAL != 0;
        if data.len() > MAX_DATA_BYTES {
            return Err(ErrorCode::BadArguments);
        }
        let parent_path = parent_of(path).to_string();
        // A sequential create may end with `/`: the suffix completes the name.
        validate_path(if sequential { &parent_path } else { path })?;
        let acl = acl::fixup(acl, ids)?;
        if path == "/" {
            return Err(ErrorCode::NodeExists);
        }
        let parent = self.nodes.get(&parent_path).ok_or(ErrorCode::NoNode)?;
        acl::allows(parent.acl(), ids, perm::CREATE)?;
        if parent.stat.ephemeral_owner != 0 && parent.stat.ephemeral_owner != CONTAINER_OWNER {
            return Err(ErrorCode::NoChildrenForEphemerals);
        }
        let path = if sequential {
            format!("{path}{:010}", parent.creates)
        } else {
            path.to_string()
        };
        validate_path(&path)?;
        if self.nodes.contains_key(&path) {
            return Err(ErrorCode::NodeExists);
        }
        if ephemeral && session == 0 {
            return Err(ErrorCode::BadArguments);
        }
        let owner = if container {
            CONTAINER_OWNER
        } else if ephemeral {
            session
        } else {
            0
        };
        let stat = Stat {
            czxid: zxid,
            mzxid: zxid,
            ctime: time_ms,
            mtime: time_ms,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: owner,
            data_length: data.len() as i32,
            num_children: 0,
            pzxid: zxid,
        };
        self.remember(undo, &parent_path);
        self.remember(undo, &path);
        let parent = self.nodes.get_mut(&parent_path).ok_or(ErrorCode::NoNode)?;
        parent.children.insert(name_of(&path).to_string());
        parent.stat.cversion = parent.stat.cversion.wrapping_add(1);
        parent.creates = parent.creates.wrapping_add(1);
        parent.stat.num_children += 1;
        parent.stat.pzxid = zxid;
        self.nodes.insert(
            path.clone(),
            Node {
                data: data.to_vec(),
                stat,
                children: OrdSet::new(),
                creates: 0,
                acl: stored_acl(acl),
            },
        );
        if ephemeral {
            self.ephemerals
                .entry(session)
                .or_default()
                .insert(path.clone());
            undo.ephemerals.push((session, path.clone(), true));
        }
        changes.push(Change::Created(path.clone()));
        changes.push(Change::ChildrenChanged(parent_path));
        Ok(match opcode {
            op::CREATE => Response::Path(path),
            _ => Response::PathStat(path, stat),
        })
    }

    /// Deletes `path`; as a client with `ids` (checked against the parent's ACL), or as the
    /// server itself (None: a session's ephemerals at its end).
    fn delete(
        &mut self,
        path: &str,
        version: i32,
        ids: Option<&[Id]>,
        zxid: i64,
        undo: &mut Undo,
        changes: &mut Vec<Change>,
    ) -> Result<(), ErrorCode> {
        validate_path(path)?;
        if path == "/" || path == "/zookeeper" || path.starts_with("/zookeeper/") {
            return Err(ErrorCode::BadArguments);
        }
        // As ZooKeeper: the parent's ACL first, so that a caller who may not delete there does
        // not learn whether the child exists.
        let parent = self.nodes.get(parent_of(path)).ok_or(ErrorCode::NoNode)?;
        if let Some(ids) = ids {
            acl::allows(parent.acl(), ids, perm::DELETE)?;
        }
        let node = self.nodes.get(path).ok_or(ErrorCode::NoNode)?;
        if version != -1 && version != node.stat.version {
            return Err(ErrorCode::BadVersion);
        }
        if !node.children.is_empty() {
            return Err(ErrorCode::NotEmpty);
        }
        let owner = node.stat.ephemeral_owner;
        let parent_path = parent_of(path).to_string();
        self.remember(undo, &parent_path);
        self.remember(undo, path);
        self.nodes.remove(path);
        if let Some(parent) = self.nodes.get_mut(&parent_path) {
            parent.children.remove(name_of(path));
            parent.stat.cversion = parent.stat.cversion.wrapping_add(1);
            parent.stat.num_children -= 1;
            parent.stat.pzxid = zxid;
        }
        if owner != 0 && owner != CONTAINER_OWNER {
            if let Some(set) = self.ephemerals.get_mut(&owner) {
                set.remove(path);
                undo.ephemerals.push((owner, path.to_string(), false));
            }
        }
        changes.push(Change::Deleted(path.to_string()));
        changes.push(Change::ChildrenChanged(parent_path));
        Ok(())
    }
}

fn multi_opcode(op: &Op) -> i32 {
    match op {
        Op::Create { opcode, .. } => *opcode,
        Op::Delete { .. } => op::DELETE,
        Op::SetData { .. } => op::SET_DATA,
        _ => op::CHECK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(path: &str, flags: i32) -> Op {
        Op::Create {
            path: path.into(),
            data: b"d".to_vec(),
            acl: vec![Acl::open()],
            flags,
            opcode: op::CREATE,
        }
    }

    fn write(tree: &mut DataTree, zxid: i64, session: i64, op: Op) -> Result<Response, ErrorCode> {
        tree.apply(
            zxid,
            1000 + zxid,
            &Txn::Write {
                session,
                op,
                ids: Vec::new(),
            },
        )
        .0
    }

    #[test]
    fn create_sets_stats_on_node_and_parent() {
        let mut tree = DataTree::default();
        assert_eq!(
            write(&mut tree, 5, 0, create("/a", 0)),
            Ok(Response::Path("/a".into()))
        );
        let node = tree.node("/a").unwrap();
        assert_eq!(
            (
                node.stat.czxid,
                node.stat.mzxid,
                node.stat.pzxid,
                node.stat.ctime
            ),
            (5, 5, 5, 1005)
        );
        let root = tree.node("/").unwrap();
        assert_eq!(
            (root.stat.num_children, root.stat.cversion, root.stat.pzxid),
            (2, 1, 5)
        );
        assert_eq!(
            write(&mut tree, 6, 0, create("/a", 0)),
            Err(ErrorCode::NodeExists)
        );
        assert_eq!(
            write(&mut tree, 6, 0, create("/b/c", 0)),
            Err(ErrorCode::NoNode)
        );
        assert_eq!(
            write(&mut tree, 6, 0, create("/a/", 0)),
            Err(ErrorCode::BadArguments)
        );
    }

    #[test]
    fn sequential_names_count_creates_not_deletes() {
        let mut tree = DataTree::default();
        write(&mut tree, 1, 0, create("/q", 0)).unwrap();
        write(&mut tree, 2, 0, create("/q/x", 0)).unwrap();
        let job = write(&mut tree, 3, 0, create("/q/job-", mode::SEQUENTIAL));
        assert_eq!(job, Ok(Response::Path("/q/job-0000000001".into())));
        write(
            &mut tree,
            4,
            0,
            Op::Delete {
                path: "/q/x".into(),
                version: -1,
            },
        )
        .unwrap();
        assert_eq!(tree.node("/q").unwrap().stat.cversion, 3);
        let bare = write(&mut tree, 5, 0, create("/q/", mode::SEQUENTIAL));
        assert_eq!(bare, Ok(Response::Path("/q/0000000002".into())));
    }

    #[test]
    fn ephemerals_go_with_their_session_and_have_no_children() {
        let mut tree = DataTree::default();
        let _ = tree.apply(
            1,
            0,
            &Txn::CreateSession {
                id: 7,
                password: vec![1],
                timeout_ms: 4000,
            },
        );
        write(&mut tree, 2, 7, create("/e", mode::EPHEMERAL)).unwrap();
        assert_eq!(tree.node("/e").unwrap().stat.ephemeral_owner, 7);
        assert_eq!(
            write(&mut tree, 3, 7, create("/e/c", 0)),
            Err(ErrorCode::NoChildrenForEphemerals)
        );
        let (_, changes) = tree.apply(4, 0, &Txn::CloseSession { id: 7 });
        assert_eq!(
            changes,
            vec![
                Change::Deleted("/e".into()),
                Change::ChildrenChanged("/".into())
            ]
        );
        assert!(tree.node("/e").is_none());
        assert_eq!(
            write(&mut tree, 5, 7, create("/f", 0)),
            Err(ErrorCode::SessionExpired)
        );
    }

    #[test]
    fn a_failed_multi_changes_nothing() {
        let mut tree = DataTree::default();
        write(&mut tree, 1, 0, create("/a", 0)).unwrap();
        let before = tree.clone();
        let ops = vec![
            create("/b", 0),
            Op::SetData {
                path: "/a".into(),
                data: vec![],
                version: 0,
            },
            Op::Check {
                path: "/a".into(),
                version: 7,
            },
            create("/c", 0),
        ];
        let (result, changes) = tree.apply(
            2,
            0,
            &Txn::Write {
                session: 0,
                op: Op::Multi { ops },
                ids: Vec::new(),
            },
        );
        assert_eq!(
            result,
            Ok(Response::Multi(vec![
                MultiResult::Error(ErrorCode::Ok),
                MultiResult::Error(ErrorCode::Ok),
                MultiResult::Error(ErrorCode::BadVersion),
                MultiResult::Error(ErrorCode::RuntimeInconsistency),
            ]))
        );
        assert!(changes.is_empty());
        tree.last_zxid = before.last_zxid;
        assert_eq!(tree, before);
    }

    #[test]
    fn versions_guard_set_and_delete() {
        let mut tree = DataTree::default();
        write(&mut tree, 1, 0, create("/a", 0)).unwrap();
        assert_eq!(
            write(
                &mut tree,
                2,
                0,
                Op::SetData {
                    path: "/a".into(),
                    data: b"xy".to_vec(),
                    version: 1
                }
            ),
            Err(ErrorCode::BadVersion)
        );
        let Ok(Response::Stat(stat)) = write(
            &mut tree,
            2,
            0,
            Op::SetData {
                path: "/a".into(),
                data: b"xy".to_vec(),
                version: 0,
            },
        ) else {
            panic!()
        };
        assert_eq!(
            (stat.version, stat.mzxid, stat.czxid, stat.data_length),
            (1, 2, 1, 2)
        );
        write(&mut tree, 3, 0, create("/a/b", 0)).unwrap();
        assert_eq!(
            write(
                &mut tree,
                4,
                0,
                Op::Delete {
                    path: "/a".into(),
                    version: -1
                }
            ),
            Err(ErrorCode::NotEmpty)
        );
        assert_eq!(
            write(
                &mut tree,
                4,
                0,
                Op::Delete {
                    path: "/a/b".into(),
                    version: 3
                }
            ),
            Err(ErrorCode::BadVersion)
        );
        assert_eq!(
            write(
                &mut tree,
                4,
                0,
                Op::Delete {
                    path: "/a/b".into(),
                    version: 0
                }
            ),
            Ok(Response::Empty)
        );
    }

    #[test]
    fn snapshots_round_trip() {
        let mut tree = DataTree::default();
        let _ = tree.apply(
            1,
            5,
            &Txn::CreateSession {
                id: 9,
                password: vec![7; 16],
                timeout_ms: 6000,
            },
        );
        write(&mut tree, 2, 0, create("/a", 0)).unwrap();
        write(
            &mut tree,
            3,
            9,
            create("/a/e-", mode::EPHEMERAL | mode::SEQUENTIAL),
        )
        .unwrap();
        write(&mut tree, 4, 0, create("/a-b", 0)).unwrap();
        let decoded = DataTree::decode_snapshot(&tree.encode_snapshot()).unwrap();
        assert_eq!(decoded, tree);
        assert!(DataTree::decode_snapshot(&[0, 0, 0, 2]).is_err());
        assert!(DataTree::decode_snapshot(&tree.encode_snapshot()[..40]).is_err());
    }

    #[test]
    fn acls_are_enforced_on_every_operation_with_the_ids_of_the_entry() {
        let mut tree = DataTree::default();
        let alice: Id = ("digest".into(), acl::digest("alice:pw").unwrap());
        let bob: Id = ("digest".into(), acl::digest("bob:pw").unwrap());
        let session = 1i64 << 40;
        let _ = tree.apply(
            1,
            0,
            &Txn::CreateSession {
                id: session,
                password: vec![0; 16],
                timeout_ms: 10_000,
            },
        );
        let as_ = |tree: &mut DataTree, zxid: i64, ids: &[Id], op: Op| {
            let txn = Txn::Write {
                session,
                op,
                ids: ids.to_vec(),
            };
            tree.apply(zxid, 1000 + zxid, &txn).0
        };
        let mine = vec![
            Acl {
                perms: perm::READ,
                scheme: "world".into(),
                id: "anyone".into(),
            },
            Acl {
                perms: perm::ALL,
                scheme: "auth".into(),
                id: String::new(),
            },
        ];
        let create = |path: &str, acl: Vec<Acl>| Op::Create {
            path: path.into(),
            data: vec![],
            acl,
            flags: 0,
            opcode: op::CREATE,
        };
        // `auth` needs a digest id.
        assert_eq!(
            as_(&mut tree, 2, &[], create("/a", mine.clone())),
            Err(ErrorCode::InvalidAcl)
        );
        assert!(as_(
            &mut tree,
            3,
            std::slice::from_ref(&alice),
            create("/a", mine.clone())
        )
        .is_ok());
        let stored = tree.node("/a").unwrap().acl().to_vec();
        assert_eq!(stored[1].id, alice.1);
        // Anyone reads; only alice writes, creates below, deletes below, sets the ACL.
        let get = Op::GetData {
            path: "/a".into(),
            watch: false,
        };
        assert!(tree.read(&get, &[]).is_ok());
        let set = |v: i32| Op::SetData {
            path: "/a".into(),
            data: vec![1],
            version: v,
        };
        assert_eq!(
            as_(&mut tree, 4, std::slice::from_ref(&bob), set(-1)),
            Err(ErrorCode::NoAuth)
        );
        // NoAuth comes before a version mismatch, NoNode before NoAuth (as in ZooKeeper).
        assert_eq!(
            as_(&mut tree, 5, std::slice::from_ref(&bob), set(9)),
            Err(ErrorCode::NoAuth)
        );
        let missing = Op::SetData {
            path: "/nope".into(),
            data: vec![],
            version: -1,
        };
        assert_eq!(
            as_(&mut tree, 6, std::slice::from_ref(&bob), missing),
            Err(ErrorCode::NoNode)
        );
        assert!(as_(&mut tree, 7, std::slice::from_ref(&alice), set(-1)).is_ok());
        let child = create("/a/b", vec![Acl::open()]);
        assert_eq!(
            as_(&mut tree, 8, std::slice::from_ref(&bob), child.clone()),
            Err(ErrorCode::NoAuth)
        );
        assert!(as_(&mut tree, 9, std::slice::from_ref(&alice), child).is_ok());
        let delete = Op::Delete {
            path: "/a/b".into(),
            version: -1,
        };
        assert_eq!(
            as_(&mut tree, 10, std::slice::from_ref(&bob), delete.clone()),
            Err(ErrorCode::NoAuth)
        );
        // Nor does a missing child tell bob anything: the parent's ACL is checked first.
        let missing_child = Op::Delete {
            path: "/a/nope".into(),
            version: -1,
        };
        assert_eq!(
            as_(&mut tree, 10, std::slice::from_ref(&bob), missing_child),
            Err(ErrorCode::NoAuth)
        );
        // A multi whose one operation is not allowed changes nothing.
        let multi = Op::Multi {
            ops: vec![create("/open", vec![Acl::open()]), set(-1)],
        };
        let Ok(Response::Multi(results)) = as_(&mut tree, 11, std::slice::from_ref(&bob), multi)
        else {
            panic!("a multi answers with a multi");
        };
        assert_eq!(results[1], MultiResult::Error(ErrorCode::NoAuth));
        assert!(tree.node("/open").is_none());
        // Without ADMIN a digest's hash is hidden (as ZooKeeper 3.6+ does); with it, shown.
        {
            let get_acl = Op::GetAcl { path: "/a".into() };
            let digests = |ids: &[Id]| match tree.read(&get_acl, ids) {
                Ok(Response::Acl(acl, _)) => acl
                    .into_iter()
                    .filter(|a| a.scheme == "digest")
                    .map(|a| a.id)
                    .collect::<Vec<_>>(),
                other => panic!("{other:?}"),
            };
            assert_eq!(digests(std::slice::from_ref(&bob)), ["alice:x"]);
            assert_eq!(digests(std::slice::from_ref(&alice)), vec![alice.1.clone()]);
        }
        // setACL: ADMIN, the aversion checked; getACL: READ or ADMIN.
        let lock = |v: i32| Op::SetAcl {
            path: "/a".into(),
            acl: vec![Acl {
                perms: perm::ALL,
                scheme: "digest".into(),
                id: alice.1.clone(),
            }],
            version: v,
        };
        assert_eq!(
            as_(&mut tree, 12, std::slice::from_ref(&bob), lock(0)),
            Err(ErrorCode::NoAuth)
        );
        assert_eq!(
            as_(&mut tree, 13, std::slice::from_ref(&alice), lock(5)),
            Err(ErrorCode::BadVersion)
        );
        assert!(as_(&mut tree, 14, std::slice::from_ref(&alice), lock(0)).is_ok());
        assert_eq!(tree.read(&get, &[]), Err(ErrorCode::NoAuth));
        let get_acl = Op::GetAcl { path: "/a".into() };
        assert_eq!(
            tree.read(&get_acl, std::slice::from_ref(&bob)),
            Err(ErrorCode::NoAuth)
        );
        let Ok(Response::Acl(acl, stat)) = tree.read(&get_acl, std::slice::from_ref(&alice)) else {
            panic!("alice reads the ACL");
        };
        assert_eq!((acl.len(), stat.aversion), (1, 1));
        // exists needs nothing; the snapshot keeps the ACLs.
        assert!(tree
            .read(
                &Op::Exists {
                    path: "/a".into(),
                    watch: false
                },
                &[]
            )
            .is_ok());
        let back = DataTree::decode_snapshot(&tree.encode_snapshot()).unwrap();
        assert_eq!(
            back.node("/a").unwrap().acl(),
            tree.node("/a").unwrap().acl()
        );
        assert_eq!(back.node("/a/b").unwrap().acl, None);
        // The servers' own writes (session 0) pass: an ACL never blocks deleting a container.
        assert!(tree
            .apply(
                15,
                0,
                &Txn::Write {
                    session: 0,
                    op: delete,
                    ids: Vec::new()
                }
            )
            .0
            .is_ok());
    }

    #[test]
    fn paths_are_validated() {
        for bad in ["", "a", "/a/", "//a", "/a/./b", "/a/../b", "/a\u{0}"] {
            assert_eq!(validate_path(bad), Err(ErrorCode::BadArguments), "{bad:?}");
        }
        for good in ["/", "/a", "/a/b-c_d.e", "/zookeeper"] {
            assert_eq!(validate_path(good), Ok(()), "{good:?}");
        }
    }
}
