//! One-shot watches of the clients connected to this server (watches are never replicated: each
//! server fires the watches of its own connections as it applies the log).

use std::collections::{BTreeMap, BTreeSet};

use crate::proto::event;
use crate::tree::Change;

pub type ConnectionId = u64;

#[derive(Default)]
pub struct Watches {
    /// getData and exists on an existing node.
    data: BTreeMap<String, BTreeSet<ConnectionId>>,
    /// exists on a missing node.
    exist: BTreeMap<String, BTreeSet<ConnectionId>>,
    child: BTreeMap<String, BTreeSet<ConnectionId>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Data,
    Exist,
    Child,
}

impl Watches {
    fn table(&mut self, kind: Kind) -> &mut BTreeMap<String, BTreeSet<ConnectionId>> {
        match kind {
            Kind::Data => &mut self.data,
            Kind::Exist => &mut self.exist,
            Kind::Child => &mut self.child,
        }
    }

    pub fn add(&mut self, kind: Kind, path: &str, connection: ConnectionId) {
        self.table(kind)
            .entry(path.to_string())
            .or_default()
            .insert(connection);
    }

    pub fn remove_connection(&mut self, connection: ConnectionId) {
        for table in [&mut self.data, &mut self.exist, &mut self.child] {
            table.retain(|_, set| {
                set.remove(&connection);
                !set.is_empty()
            });
        }
    }

    /// Every registration, removed: `(kind, path, connection)`.
    pub fn take_all(&mut self) -> Vec<(Kind, String, ConnectionId)> {
        let mut out = Vec::new();
        for kind in [Kind::Data, Kind::Exist, Kind::Child] {
            for (path, connections) in std::mem::take(self.table(kind)) {
                out.extend(connections.into_iter().map(|c| (kind, path.clone(), c)));
            }
        }
        out
    }

    fn take(&mut self, kind: Kind, path: &str) -> BTreeSet<ConnectionId> {
        self.table(kind).remove(path).unwrap_or_default()
    }

    /// The notifications a change fires, `(connection, event type, path)`, each watch once.
    pub fn fire(&mut self, change: &Change) -> Vec<(ConnectionId, i32, String)> {
        let (path, kinds, event): (&str, &[Kind], i32) = match change {
            Change::Created(p) => (p, &[Kind::Data, Kind::Exist], event::NODE_CREATED),
            Change::Deleted(p) => (
                p,
                &[Kind::Data, Kind::Exist, Kind::Child],
                event::NODE_DELETED,
            ),
            Change::DataChanged(p) => (p, &[Kind::Data, Kind::Exist], event::NODE_DATA_CHANGED),
            Change::ChildrenChanged(p) => (p, &[Kind::Child], event::NODE_CHILDREN_CHANGED),
        };
        let mut connections = BTreeSet::new();
        for kind in kinds {
            connections.extend(self.take(*kind, path));
        }
        connections
            .into_iter()
            .map(|c| (c, event, path.to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_fire_once_per_connection() {
        let mut watches = Watches::default();
        watches.add(Kind::Data, "/a", 1);
        watches.add(Kind::Exist, "/a", 1);
        watches.add(Kind::Child, "/a", 2);
        let fired = watches.fire(&Change::Deleted("/a".into()));
        assert_eq!(
            fired,
            vec![
                (1, event::NODE_DELETED, "/a".into()),
                (2, event::NODE_DELETED, "/a".into())
            ]
        );
        assert!(watches.fire(&Change::Deleted("/a".into())).is_empty());
        watches.add(Kind::Child, "/", 3);
        watches.remove_connection(3);
        assert!(watches
            .fire(&Change::ChildrenChanged("/".into()))
            .is_empty());
    }
}
