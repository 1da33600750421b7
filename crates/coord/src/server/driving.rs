//! Driving raft: each ready's entries made durable and its messages sent, committed entries
//! applied to the tree, snapshots taken and installed, and the waiting requests answered.

use super::*;

impl Core {
    /// Sends, applies and persists whatever raft has ready, in the order raft-rs documents for
    /// asynchronous persistence: a ready's entries and hard state go to the log at once (raft
    /// reads them from there), and the sync that makes them durable runs beside the core loop
    /// ([`Core::syncing`]), one at a time; what waits for durability (a follower's acknowledgement,
    /// a vote, the leader's own count towards a commit) waits for [`Core::persisted`]. Meanwhile
    /// the core goes on answering reads and taking writes, which the next sync makes durable
    /// together: the core task never waits on the disk but for snapshots.
    pub(super) async fn drive(&mut self) -> Result<(), CoordError> {
        loop {
            while self.raft.has_ready() {
                let mut ready = self.raft.ready();
                self.send_messages(ready.take_messages());
                let installs = !ready.snapshot().is_empty();
                if installs {
                    // The log's files change: everything before must be durable first.
                    self.settle().await?;
                    let snapshot = ready.snapshot().clone();
                    let index = snapshot.get_metadata().index;
                    let tree = DataTree::decode_snapshot(&snapshot.data).map_err(|e| {
                        CoordError::Config(format!("snapshot from the leader does not decode: {e}"))
                    })?;
                    let old = std::mem::replace(&mut self.tree, tree);
                    self.after_snapshot(&old);
                    self.log.install_snapshot(&self.env, snapshot).await?;
                    self.applied = index;
                }
                let committed = ready.take_committed_entries();
                self.apply(committed);
                if !ready.entries().is_empty() {
                    self.log.append(ready.entries())?;
                }
                if let Some(state) = ready.hs() {
                    // A changed commit index alone need not be synced: it rides with the next.
                    self.log.set_hard_state(state.clone())?;
                }
                self.unsynced |= ready.must_sync();
                let number = ready.number();
                self.unpersisted
                    .push_back((number, ready.take_persisted_messages()));
                self.raft.advance_append_async(ready);
                if installs {
                    // Applied up to the snapshot, which raft must count as durable first.
                    if std::mem::take(&mut self.unsynced) {
                        self.log.sync(&self.env).await?;
                    }
                    self.persisted(number);
                }
                self.raft.advance_apply();
                self.after_raft();
                for (peer, status) in std::mem::take(&mut self.snapshot_reports) {
                    self.raft.report_snapshot(peer, status);
                }
                for connection in std::mem::take(&mut self.to_pump) {
                    self.pump(connection);
                }
            }
            if self.syncing.is_some() {
                break;
            }
            let Some(&(newest, _)) = self.unpersisted.back() else {
                break;
            };
            if self.unsynced {
                self.unsynced = false;
                let (log, env) = (self.log.clone(), self.env.clone());
                self.syncing = Some((newest, Box::pin(async move { log.sync(&env).await })));
                break;
            }
            // Nothing new to make durable (messages or a commit index only).
            self.persisted(newest);
        }
        if let Some(written) = self.snapshot_written.take() {
            self.snapshotting = false;
            let written = written?;
            let index = written.index();
            self.settle().await?;
            if self.log.snapshot_written(&self.env, written).await? {
                self.env.emit(Event::new("snapshot").with("index", index));
            }
        }
        if !self.snapshotting
            && self.applied >= self.next_snapshot_at
            && self.applied > self.log.snapshot_index()
        {
            self.settle().await?;
            self.begin_snapshot().await?;
        }
        Ok(())
    }

    /// The readies up to `number` are durable: raft counts them, and the messages that waited
    /// for them go out.
    pub(super) fn persisted(&mut self, number: u64) {
        self.raft.on_persist_ready(number);
        while self.unpersisted.front().is_some_and(|(n, _)| *n <= number) {
            if let Some((_, messages)) = self.unpersisted.pop_front() {
                self.send_messages(messages);
            }
        }
        self.after_raft();
    }

    /// Makes every ready advanced so far durable, waiting for the sync in flight: before the
    /// log's files change (a snapshot begun, taken or installed).
    pub(super) async fn settle(&mut self) -> Result<(), CoordError> {
        if let Some((number, sync)) = self.syncing.take() {
            sync.await?;
            self.persisted(number);
        }
        if let Some(&(newest, _)) = self.unpersisted.back() {
            if std::mem::take(&mut self.unsynced) {
                self.log.sync(&self.env).await?;
            }
            self.persisted(newest);
        }
        Ok(())
    }

    /// Snapshots the tree at `applied` without stopping the core loop: the tree is cloned (O(1),
    /// it is persistent) and a task encodes, writes and syncs it, then reports back through the
    /// peer queue; the log is compacted when it does. Meanwhile the log keeps every entry.
    pub(super) async fn begin_snapshot(&mut self) -> Result<(), CoordError> {
        let pending = self.log.begin_snapshot(&self.env, self.applied).await?;
        self.next_snapshot_at = self.applied + snapshot_interval(&self.env, &self.config);
        let view = self.tree.snapshot_view();
        let (env, inputs) = (self.env.clone(), self.inputs.clone());
        self.snapshotting = true;
        drover_core::env::spawn(async move {
            let data = drover_core::env::compute(move || view.encode()).await;
            let written = pending.write(&env, Bytes::from(data)).await;
            let _ = inputs.send(Input::Snapshotted(written));
        });
        Ok(())
    }

    pub(super) fn send_messages(&mut self, messages: Vec<Message>) {
        for message in messages {
            let Some(peer) = self.peers.get(&message.to) else {
                continue;
            };
            let sent = match message.write_to_bytes() {
                Ok(bytes) => peer.try_send(encode_binary(PEER_RAFT, &bytes)).is_ok(),
                Err(_) => false,
            };
            // The transport does not confirm delivery: report a snapshot as done once handed
            // over (a follower that did not get it rejects the next append, and raft sends
            // another), so the follower's progress never stays paused waiting for a report.
            if message.get_msg_type() == raft::prelude::MessageType::MsgSnapshot {
                let status = if sent {
                    raft::SnapshotStatus::Finish
                } else {
                    raft::SnapshotStatus::Failure
                };
                self.snapshot_reports.push((message.to, status));
            }
        }
    }

    pub(super) fn apply(&mut self, entries: Vec<Entry>) {
        for entry in entries {
            self.applied = entry.index;
            if entry.data.is_empty() || entry.get_entry_type() != EntryType::EntryNormal {
                self.tree.last_zxid = self.tree.last_zxid.max(entry.index as i64);
                continue;
            }
            let decoded = match LogEntry::decode(&entry.data) {
                Ok(decoded) => decoded,
                Err(error) => {
                    tracing::error!(index = entry.index, %error, "skipping a log entry that does not decode");
                    continue;
                }
            };
            let zxid = entry.index as i64;
            let (result, changes) = self.tree.apply(zxid, decoded.time_ms, &decoded.txn);
            match (&decoded.txn, &result) {
                (Txn::CreateSession { id, timeout_ms, .. }, Ok(_)) if self.is_leader() => {
                    let now = self.now_ms();
                    self.deadlines.insert(*id, now + *timeout_ms as u64);
                }
                (Txn::CloseSession { id }, _) => {
                    self.deadlines.remove(id);
                    self.expiring.remove(id);
                }
                _ => {}
            }
            self.fire(zxid, &changes);
            let waiting = (decoded.origin.0 == self.config.id)
                .then(|| self.proposals.remove(&decoded.origin.1))
                .flatten();
            if let Some(proposal) = waiting {
                self.answer(zxid, proposal.waiting, result);
            }
            if let Txn::CloseSession { id } = decoded.txn {
                let holders: Vec<ConnectionId> = self
                    .connections
                    .iter()
                    .filter(|(_, c)| c.session == Some(id))
                    .map(|(k, _)| *k)
                    .collect();
                for connection in holders {
                    self.close(connection);
                }
            }
        }
    }

    /// A follower that installed a snapshot skipped the entries it covers: fire the watches
    /// those entries would have fired, close the connections of sessions that ended, and give up
    /// on proposals the snapshot may have swallowed.
    pub(super) fn after_snapshot(&mut self, old: &DataTree) {
        use proto::event::*;
        self.drop_in_flight();
        for (kind, path, connection) in self.watches.take_all() {
            let (before, now) = (old.node(&path), self.tree.node(&path));
            let fired = match (kind, now) {
                (Kind::Data, None) | (Kind::Child, None) => Some(NODE_DELETED),
                (Kind::Data, Some(n)) if before.is_none_or(|b| b.stat.mzxid != n.stat.mzxid) => {
                    Some(NODE_DATA_CHANGED)
                }
                (Kind::Child, Some(n)) if before.is_none_or(|b| b.stat.pzxid != n.stat.pzxid) => {
                    Some(NODE_CHILDREN_CHANGED)
                }
                (Kind::Exist, Some(_)) => Some(NODE_CREATED),
                _ => None,
            };
            match fired {
                Some(kind) => {
                    let event = WatcherEvent {
                        kind,
                        state: STATE_SYNC_CONNECTED,
                        path,
                    };
                    self.send(connection, encode_event(self.tree.last_zxid, &event));
                }
                None => self.watches.add(kind, &path, connection),
            }
        }
        let ended: Vec<ConnectionId> = self
            .connections
            .iter()
            .filter(|(_, c)| c.session.is_some_and(|s| self.tree.session(s).is_none()))
            .map(|(id, _)| *id)
            .collect();
        for connection in ended {
            self.close(connection);
        }
    }

    pub(super) fn fire(&mut self, zxid: i64, changes: &[Change]) {
        for change in changes {
            for (connection, kind, path) in self.watches.fire(change) {
                let event = WatcherEvent {
                    kind,
                    state: proto::event::STATE_SYNC_CONNECTED,
                    path,
                };
                self.send(connection, encode_event(zxid, &event));
            }
        }
    }

    pub(super) fn answer(
        &mut self,
        zxid: i64,
        waiting: Waiting,
        result: Result<Response, ErrorCode>,
    ) {
        match waiting {
            Waiting::Session {
                connection,
                id,
                password,
                timeout_ms,
            } => match result {
                Ok(_) => self.attach(connection, id, password, timeout_ms),
                Err(_) => self.close(connection),
            },
            Waiting::Reattach {
                connection,
                request,
                timeout_ms,
            } => {
                if self.session_lives(&request) {
                    self.attach(connection, request.session_id, request.password, timeout_ms);
                } else {
                    self.reject_session(connection, request.read_only);
                }
            }
            Waiting::Reply {
                connection,
                xid,
                replace,
                close_after,
            } => {
                let result = match (replace, result) {
                    (Some(replacement), Ok(_)) => Ok(replacement),
                    (_, result) => result,
                };
                self.send(connection, encode_reply(xid, zxid, &result));
                if close_after {
                    self.close(connection);
                    return;
                }
                if let Some(conn) = self.connections.get_mut(&connection) {
                    conn.busy = false;
                }
                // Not now: this runs inside a raft Ready, where no proposal may be made.
                self.to_pump.push(connection);
            }
        }
    }
}
