//! What the core does with clients: connecting (new sessions, moved sessions, refusals),
//! answering requests in order per connection, reads, and watches set again after a move.

use super::*;

impl Core {
    pub(super) fn connect(
        &mut self,
        connection: ConnectionId,
        request: ConnectRequest,
        peer: std::net::IpAddr,
        out: mpsc::UnboundedSender<Outgoing>,
        now: u64,
    ) {
        if request.last_zxid_seen > self.tree.last_zxid {
            // The client has seen newer state than this server has: it must try another.
            let _ = out.send(Outgoing::Close);
            return;
        }
        let tick = self.config.tick_time_ms as i64;
        let timeout_ms = i64::from(request.timeout_ms).clamp(2 * tick, 20 * tick) as u64;
        self.connections.insert(
            connection,
            Connection {
                out,
                session: None,
                timeout_ms,
                read_only: request.read_only,
                queue: VecDeque::new(),
                busy: false,
                last_heard_ms: now,
                ids: vec![("ip".to_string(), peer.to_string())],
            },
        );
        if request.session_id == 0 {
            self.sessions_made += 1;
            let id = self.session_base + self.sessions_made;
            let mut password = vec![0u8; 16];
            self.env.rng().fill(&mut password[..]);
            self.unproposed
                .push_back((connection, id, password, timeout_ms, now));
            self.propose_sessions(now);
            return;
        }
        if !self.serving {
            // Without a leader this server cannot tell whether the session still lives.
            self.close(connection);
            return;
        }
        if self.session_lives(&request) {
            self.attach(connection, request.session_id, request.password, timeout_ms);
            return;
        }
        let read_only = request.read_only;
        if !self.propose(
            Txn::Noop,
            Some(Waiting::Reattach {
                connection,
                request,
                timeout_ms,
            }),
        ) {
            self.reject_session(connection, read_only);
        }
    }

    /// Whether a re-attaching client's session exists here, with that password, and is not being
    /// expired.
    pub(super) fn session_lives(&self, request: &ConnectRequest) -> bool {
        let session = self.tree.session(request.session_id);
        session.is_some_and(|s| s.password == request.password)
            && !self.expiring.contains(&request.session_id)
    }

    /// Tells a client its session is gone (ZooKeeper's way: a zero timeout) and hangs up.
    pub(super) fn reject_session(&mut self, connection: ConnectionId, read_only: Option<bool>) {
        let response = ConnectResponse {
            protocol_version: 0,
            timeout_ms: 0,
            session_id: 0,
            password: vec![0; 16],
            read_only,
        };
        self.send(connection, encode_connect_response(&response));
        self.close(connection);
    }

    /// Gives a connection its session and answers the handshake.
    pub(super) fn attach(
        &mut self,
        connection: ConnectionId,
        session: i64,
        password: Vec<u8>,
        timeout_ms: u64,
    ) {
        let others: Vec<ConnectionId> = self
            .connections
            .iter()
            .filter(|(id, c)| **id != connection && c.session == Some(session))
            .map(|(id, _)| *id)
            .collect();
        for other in others {
            self.close(other);
        }
        let Some(conn) = self.connections.get_mut(&connection) else {
            return;
        };
        conn.session = Some(session);
        let response = ConnectResponse {
            protocol_version: 0,
            timeout_ms: timeout_ms as i32,
            session_id: session,
            password,
            read_only: conn.read_only,
        };
        let _ = conn
            .out
            .send(Outgoing::Packet(encode_connect_response(&response)));
        self.heard.insert(session);
        if self.is_leader() {
            let now = self.now_ms();
            self.touch_deadline(session, now);
        }
    }

    pub(super) fn send(&self, connection: ConnectionId, packet: Vec<u8>) {
        if let Some(conn) = self.connections.get(&connection) {
            let _ = conn.out.send(Outgoing::Packet(packet));
        }
    }

    pub(super) fn close(&mut self, connection: ConnectionId) {
        if let Some(conn) = self.connections.remove(&connection) {
            let _ = conn.out.send(Outgoing::Close);
        }
        self.watches.remove_connection(connection);
    }

    /// Proposes the sessions of new connections. While there is no leader to take them they wait
    /// (a client connecting during an election is answered once one is elected), up to the
    /// proposal timeout.
    pub(super) fn propose_sessions(&mut self, now: u64) {
        let mut waiting = std::mem::take(&mut self.unproposed);
        while let Some((connection, id, password, timeout_ms, since)) = waiting.pop_front() {
            if !self.connections.contains_key(&connection) {
                continue;
            }
            let txn = Txn::CreateSession {
                id,
                password: password.clone(),
                timeout_ms: timeout_ms as i32,
            };
            let session = Waiting::Session {
                connection,
                id,
                password: password.clone(),
                timeout_ms,
            };
            if self.raft.raft.leader_id != raft::INVALID_ID && self.propose(txn, Some(session)) {
                continue;
            }
            if now.saturating_sub(since) > PROPOSAL_TIMEOUT_MS {
                self.close(connection);
            } else {
                self.unproposed
                    .push_back((connection, id, password, timeout_ms, since));
            }
        }
    }

    pub(super) fn propose(&mut self, txn: Txn, waiting: Option<Waiting>) -> bool {
        let request = self.next_request;
        self.next_request += 1;
        let origin = if waiting.is_some() {
            (self.config.id, request)
        } else {
            (0, 0)
        };
        let entry = LogEntry {
            origin,
            time_ms: self.env.unix_ms() as i64,
            txn,
        };
        let proposed = self.raft.propose(Vec::new(), entry.encode()).is_ok();
        self.after_raft();
        if let (true, Some(waiting)) = (proposed, waiting) {
            let proposed_ms = self.now_ms();
            self.proposals.insert(
                request,
                Proposal {
                    waiting,
                    proposed_ms,
                },
            );
        }
        proposed
    }

    /// Handles a connection's queued requests in order, up to the first write in flight.
    pub(super) fn pump(&mut self, connection: ConnectionId) {
        loop {
            let Some(conn) = self.connections.get_mut(&connection) else {
                return;
            };
            if conn.busy {
                return;
            }
            let Some(request) = conn.queue.pop_front() else {
                return;
            };
            let Some(session) = conn.session else {
                self.close(connection);
                return;
            };
            if self.tree.session(session).is_none() {
                // The session expired (or was closed) while this connection stayed open.
                let packet = encode_reply(
                    request.xid,
                    self.tree.last_zxid,
                    &Err(ErrorCode::SessionExpired),
                );
                self.send(connection, packet);
                self.close(connection);
                return;
            }
            let reply = |result: Result<Response, ErrorCode>| Waiting::Reply {
                connection,
                xid: request.xid,
                replace: result.ok(),
                close_after: false,
            };
            let write = match &request.op {
                Op::Sync { path } => Some((Txn::Noop, reply(Ok(Response::Path(path.clone()))))),
                Op::CloseSession => Some((
                    Txn::CloseSession { id: session },
                    Waiting::Reply {
                        connection,
                        xid: request.xid,
                        replace: None,
                        close_after: true,
                    },
                )),
                op if op.is_write() || matches!(op, Op::Check { .. }) => Some((
                    Txn::Write {
                        session,
                        op: request.op.clone(),
                        ids: conn.ids.clone(),
                    },
                    reply(Err(ErrorCode::Ok)),
                )),
                _ => None,
            };
            match write {
                Some((txn, waiting)) => {
                    if self.propose(txn, Some(waiting)) {
                        if let Some(conn) = self.connections.get_mut(&connection) {
                            conn.busy = true;
                        }
                    } else {
                        // No leader to take the write: the client reconnects and retries.
                        self.close(connection);
                    }
                    return;
                }
                None => {
                    let (xid, result) = self.read(connection, &request);
                    let packet = encode_reply(xid, self.tree.last_zxid, &result);
                    self.send(connection, packet);
                    if result == Err(ErrorCode::AuthFailed) {
                        // As ZooKeeper: the failed auth is answered, then the connection closed.
                        self.close(connection);
                        return;
                    }
                }
            }
        }
    }

    pub(super) fn read(
        &mut self,
        connection: ConnectionId,
        request: &Request,
    ) -> (i32, Result<Response, ErrorCode>) {
        match &request.op {
            Op::Exists { path, watch }
            | Op::GetData { path, watch }
            | Op::GetChildren { path, watch, .. } => {
                let ids = self
                    .connections
                    .get(&connection)
                    .map_or(&[][..], |c| &c.ids);
                let result = self.tree.read(&request.op, ids);
                if *watch && validate_path(path).is_ok() {
                    let kind = match (&request.op, &result) {
                        (Op::GetChildren { .. }, Ok(_)) => Some(Kind::Child),
                        (Op::Exists { .. }, Err(ErrorCode::NoNode)) => Some(Kind::Exist),
                        (_, Ok(_)) if !matches!(request.op, Op::GetChildren { .. }) => {
                            Some(Kind::Data)
                        }
                        _ => None,
                    };
                    if let Some(kind) = kind {
                        self.watches.add(kind, path, connection);
                    }
                }
                (request.xid, result)
            }
            Op::GetAcl { .. } => {
                let ids = self
                    .connections
                    .get(&connection)
                    .map_or(&[][..], |c| &c.ids);
                (request.xid, self.tree.read(&request.op, ids))
            }
            Op::SetWatches {
                relative_zxid,
                data,
                exist,
                child,
            } => {
                self.set_watches(connection, *relative_zxid, data, exist, child);
                (proto::XID_SET_WATCHES, Ok(Response::Empty))
            }
            Op::Auth { scheme, data } => {
                let result = acl::authenticate(scheme, data).map(|id| {
                    if let (Some(id), Some(conn)) = (id, self.connections.get_mut(&connection)) {
                        // As ZooKeeper: the super digest's holder gets the `super` id too,
                        // which every ACL lets through (the id travels in the log entry, so
                        // each server judges the same).
                        let is_super = id.0 == "digest"
                            && self.config.super_digest.as_deref() == Some(id.1.as_str());
                        let ids = [
                            Some(id),
                            is_super.then(|| (acl::SUPER.to_string(), String::new())),
                        ];
                        for id in ids.into_iter().flatten() {
                            if !conn.ids.contains(&id) {
                                conn.ids.push(id);
                            }
                        }
                    }
                    Response::Empty
                });
                (proto::XID_AUTH, result)
            }
            _ => (request.xid, Err(ErrorCode::Unimplemented)),
        }
    }

    /// Re-registers a reconnecting client's watches, firing at once those whose node changed
    /// since the zxid the client had seen.
    pub(super) fn set_watches(
        &mut self,
        connection: ConnectionId,
        seen: i64,
        data: &[String],
        exist: &[String],
        child: &[String],
    ) {
        use proto::event::*;
        let mut fired = Vec::new();
        for path in data {
            match self.tree.node(path) {
                None => fired.push((NODE_DELETED, path.clone())),
                Some(node) if node.stat.mzxid > seen => {
                    fired.push((NODE_DATA_CHANGED, path.clone()))
                }
                Some(_) => self.watches.add(Kind::Data, path, connection),
            }
        }
        for path in exist {
            match self.tree.node(path) {
                Some(_) => fired.push((NODE_CREATED, path.clone())),
                None => self.watches.add(Kind::Exist, path, connection),
            }
        }
        for path in child {
            match self.tree.node(path) {
                None => fired.push((NODE_DELETED, path.clone())),
                Some(node) if node.stat.pzxid > seen => {
                    fired.push((NODE_CHILDREN_CHANGED, path.clone()))
                }
                Some(_) => self.watches.add(Kind::Child, path, connection),
            }
        }
        for (kind, path) in fired {
            let event = WatcherEvent {
                kind,
                state: STATE_SYNC_CONNECTED,
                path,
            };
            self.send(connection, encode_event(self.tree.last_zxid, &event));
        }
    }
}
