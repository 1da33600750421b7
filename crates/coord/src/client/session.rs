//! The client's connection driver: one task that finds a server, keeps the session (pings,
//! reconnects with its id and password, watches set again), sends the calls in order and hands
//! each reply and notification to whoever waits for it.

use super::*;

struct InFlight {
    xid: i32,
    reply: oneshot::Sender<Reply>,
    watch: Option<(WatchKind, String, oneshot::Sender<WatchedEvent>)>,
}

struct Session {
    id: i64,
    password: Vec<u8>,
    timeout: Duration,
    last_zxid: i64,
    /// Registered watches by (kind, path).
    watches: BTreeMap<(WatchKind, String), Vec<oneshot::Sender<WatchedEvent>>>,
}

pub(super) async fn run(
    env: Env,
    config: ClientConfig,
    mut commands: mpsc::UnboundedReceiver<Command>,
    state: watch::Sender<State>,
    session_id: watch::Sender<i64>,
) {
    let mut session = Session {
        id: 0,
        password: vec![0; 16],
        timeout: config.session_timeout,
        last_zxid: 0,
        watches: BTreeMap::new(),
    };
    let count = config.servers.len().max(1);
    let mut next = env.rng().random_range(0..count);
    let mut disconnected_since = tokio::time::Instant::now();
    let mut backlog: VecDeque<Command> = VecDeque::new();
    loop {
        if session.id != 0 && disconnected_since.elapsed() > session.timeout {
            // Out of touch for longer than the session lives: the servers have expired it.
            finish(
                &state,
                State::Expired,
                &mut commands,
                &mut backlog,
                &mut session,
            );
            return;
        }
        let (host, port) = config.servers[next % count].clone();
        next += 1;
        let stream = match env.connect(&host, port, config.connect_timeout).await {
            Ok(stream) => stream,
            Err(_) => {
                if drain_closed(&mut commands, &mut backlog) {
                    let _ = state.send(State::Closed);
                    return;
                }
                if session.id != 0 {
                    fail_calls(&mut backlog);
                }
                tokio::time::sleep(Duration::from_millis(if next % count == 0 {
                    500
                } else {
                    50
                }))
                .await;
                continue;
            }
        };
        match connected(
            stream,
            &mut session,
            &mut commands,
            &mut backlog,
            &state,
            &session_id,
            (config.connect_timeout, &config.auth),
        )
        .await
        {
            End::Lost => {
                if *state.borrow() == State::Connected {
                    disconnected_since = tokio::time::Instant::now();
                }
                let _ = state.send(State::Connecting);
                drain_closed(&mut commands, &mut backlog);
                if session.id != 0 {
                    fail_calls(&mut backlog);
                }
            }
            End::Expired => {
                finish(
                    &state,
                    State::Expired,
                    &mut commands,
                    &mut backlog,
                    &mut session,
                );
                return;
            }
            End::AuthFailed => {
                tracing::warn!(%host, port, "the server refused this client's auth data: giving up");
                finish(
                    &state,
                    State::AuthFailed,
                    &mut commands,
                    &mut backlog,
                    &mut session,
                );
                return;
            }
            End::Closed => {
                finish(
                    &state,
                    State::Closed,
                    &mut commands,
                    &mut backlog,
                    &mut session,
                );
                return;
            }
        }
    }
}

/// Fails what waits, for good.
fn finish(
    state: &watch::Sender<State>,
    end: State,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    backlog: &mut VecDeque<Command>,
    session: &mut Session,
) {
    let _ = state.send(end);
    let code = match end {
        State::Expired => ErrorCode::SessionExpired,
        State::AuthFailed => ErrorCode::AuthFailed,
        _ => ErrorCode::ConnectionLoss,
    };
    session.watches.clear();
    commands.close();
    while let Ok(command) = commands.try_recv() {
        backlog.push_back(command);
    }
    for command in backlog.drain(..) {
        match command {
            Command::Call { reply, .. } => {
                let _ = reply.send(Err(code));
            }
            Command::Close { done } => {
                let _ = done.send(());
            }
        }
    }
}

/// Fails the calls waiting for a connection with `ConnectionLoss`, as ZooKeeper's clients do
/// when a session's connection breaks or an attempt to reconnect fails: a request never waits
/// across a disconnection for a session the servers may already have expired (a leader that
/// lost touch learns it at once instead of acting later on a dead session). Requests made
/// before the session's first handshake wait for it.
fn fail_calls(backlog: &mut VecDeque<Command>) {
    for command in std::mem::take(backlog) {
        match command {
            Command::Call { reply, .. } => {
                let _ = reply.send(Err(ErrorCode::ConnectionLoss));
            }
            close @ Command::Close { .. } => backlog.push_back(close),
        }
    }
}

/// Moves pending commands to the backlog; true if one of them asks to close.
fn drain_closed(
    commands: &mut mpsc::UnboundedReceiver<Command>,
    backlog: &mut VecDeque<Command>,
) -> bool {
    while let Ok(command) = commands.try_recv() {
        backlog.push_back(command);
    }
    backlog.iter().any(|c| matches!(c, Command::Close { .. }))
}

enum End {
    Lost,
    Expired,
    Closed,
    AuthFailed,
}

#[allow(clippy::too_many_arguments)]
async fn connected(
    stream: Stream,
    session: &mut Session,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    backlog: &mut VecDeque<Command>,
    state: &watch::Sender<State>,
    session_id: &watch::Sender<i64>,
    (connect_timeout, auth): (Duration, &[(String, Vec<u8>)]),
) -> End {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let handshake = ConnectRequest {
        protocol_version: 0,
        last_zxid_seen: session.last_zxid,
        timeout_ms: session.timeout.as_millis() as i32,
        session_id: session.id,
        password: session.password.clone(),
        read_only: Some(false),
    };
    if writer.write_all(&encode_connect(&handshake)).await.is_err() {
        return End::Lost;
    }
    let mut buffer = BytesMut::with_capacity(4096);
    let first = tokio::time::timeout(connect_timeout, read_packet(&mut reader, &mut buffer)).await;
    let Ok(Some(body)) = first else {
        return End::Lost;
    };
    let Ok(response) = decode_connect_response(&body) else {
        return End::Lost;
    };
    if response.timeout_ms <= 0 {
        return End::Expired;
    }
    session.id = response.session_id;
    session.password = response.password;
    session.timeout = Duration::from_millis(response.timeout_ms as u64);
    let _ = session_id.send(session.id);
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut next_xid: i32 = 1;
    // Who the client is, first on every connection: the server takes requests in order.
    for (scheme, data) in auth {
        let packet = encode_request(&Request {
            xid: proto::XID_AUTH,
            op: Op::Auth {
                scheme: scheme.clone(),
                data: data.clone(),
            },
        });
        if writer.write_all(&packet).await.is_err() {
            return End::Lost;
        }
    }
    // Watches survive the move to another server: register them again.
    if !session.watches.is_empty() {
        let paths = |kind: WatchKind| -> Vec<String> {
            session
                .watches
                .keys()
                .filter(|(k, _)| *k == kind)
                .map(|(_, p)| p.clone())
                .collect()
        };
        let op = Op::SetWatches {
            relative_zxid: session.last_zxid,
            data: paths(WatchKind::Data),
            exist: paths(WatchKind::Exist),
            child: paths(WatchKind::Child),
        };
        let packet = encode_request(&Request {
            xid: proto::XID_SET_WATCHES,
            op,
        });
        if writer.write_all(&packet).await.is_err() {
            return End::Lost;
        }
    }
    let _ = state.send(State::Connected);
    let ping_every = session.timeout / 3;
    let read_timeout = session.timeout * 2 / 3;
    let mut last_sent = tokio::time::Instant::now();
    let mut last_heard = tokio::time::Instant::now();
    let end = loop {
        let command = backlog.pop_front();
        let command = match command {
            Some(command) => Some(command),
            None => tokio::select! {
                biased;
                body = read_packet(&mut reader, &mut buffer) => {
                    let Some(body) = body else { break End::Lost };
                    last_heard = tokio::time::Instant::now();
                    if let Err(end) = on_packet(&body, session, &mut in_flight) {
                        break end;
                    }
                    continue;
                }
                command = commands.recv() => match command {
                    Some(command) => Some(command),
                    None => break End::Closed,
                },
                _ = tokio::time::sleep_until(last_sent + ping_every) => None,
                _ = tokio::time::sleep_until(last_heard + read_timeout) => break End::Lost,
            },
        };
        let (_, packet) = match command {
            None => (
                proto::XID_PING,
                encode_request(&Request {
                    xid: proto::XID_PING,
                    op: Op::Ping,
                }),
            ),
            Some(Command::Close { done }) => {
                let packet = encode_request(&Request {
                    xid: next_xid,
                    op: Op::CloseSession,
                });
                let _ = writer.write_all(&packet).await;
                let _ =
                    tokio::time::timeout(connect_timeout, read_packet(&mut reader, &mut buffer))
                        .await;
                let _ = done.send(());
                break End::Closed;
            }
            Some(Command::Call { op, watch, reply }) => {
                let xid = next_xid;
                next_xid = next_xid.wrapping_add(1).max(1);
                let path = match &op {
                    Op::GetData { path, .. }
                    | Op::Exists { path, .. }
                    | Op::GetChildren { path, .. } => path.clone(),
                    _ => String::new(),
                };
                let packet = encode_request(&Request { xid, op });
                in_flight.push_back(InFlight {
                    xid,
                    reply,
                    watch: watch.map(|(kind, sender)| (kind, path, sender)),
                });
                (xid, packet)
            }
        };
        let written = tokio::time::timeout(WRITE_TIMEOUT, writer.write_all(&packet)).await;
        if !matches!(written, Ok(Ok(()))) {
            break End::Lost;
        }
        last_sent = tokio::time::Instant::now();
    };
    for request in in_flight {
        let _ = request.reply.send(Err(ErrorCode::ConnectionLoss));
    }
    end
}

/// Handles one packet from the server; false if the stream makes no sense.
/// Takes one packet from the server; `Err` says how the connection ends.
fn on_packet(
    body: &[u8],
    session: &mut Session,
    in_flight: &mut VecDeque<InFlight>,
) -> Result<(), End> {
    let mut r = Reader::new(body);
    let Ok(header) = decode_reply_header(&mut r) else {
        return Err(End::Lost);
    };
    if header.zxid > 0 {
        session.last_zxid = session.last_zxid.max(header.zxid);
    }
    match header.xid {
        proto::XID_NOTIFICATION => {
            let Ok(WatcherEvent { kind, path, .. }) = decode_event(&mut r) else {
                return Err(End::Lost);
            };
            let kinds: &[WatchKind] = match kind {
                event::NODE_CREATED | event::NODE_DATA_CHANGED => {
                    &[WatchKind::Data, WatchKind::Exist]
                }
                event::NODE_DELETED => &[WatchKind::Data, WatchKind::Exist, WatchKind::Child],
                event::NODE_CHILDREN_CHANGED => &[WatchKind::Child],
                _ => &[],
            };
            for watch_kind in kinds {
                for sender in session
                    .watches
                    .remove(&(*watch_kind, path.clone()))
                    .unwrap_or_default()
                {
                    let _ = sender.send(WatchedEvent {
                        kind,
                        path: path.clone(),
                    });
                }
            }
            Ok(())
        }
        proto::XID_AUTH if header.err == ErrorCode::AuthFailed.code() => Err(End::AuthFailed),
        proto::XID_PING | proto::XID_SET_WATCHES | proto::XID_AUTH => Ok(()),
        xid => {
            let Some(front) = in_flight.pop_front() else {
                return Err(End::Lost);
            };
            if front.xid != xid {
                return Err(End::Lost);
            }
            let rest = body[16..].to_vec();
            let reply = if header.err == 0 {
                Ok((header.zxid, rest))
            } else {
                Err(ErrorCode::from_code(header.err).unwrap_or(ErrorCode::SystemError))
            };
            if let Some((kind, path, sender)) = front.watch {
                // A watch is left by a successful read, and by `exists` on a missing node.
                let left = reply.is_ok()
                    || (kind == WatchKind::Exist && header.err == ErrorCode::NoNode.code());
                // As servers keep them: `exists` on a present node is a data watch.
                let kind = if kind == WatchKind::Exist && reply.is_ok() {
                    WatchKind::Data
                } else {
                    kind
                };
                if left {
                    let registered = session.watches.entry((kind, path)).or_default();
                    // Callers may have dropped earlier watch futures: forget those.
                    registered.retain(|s| !s.is_closed());
                    registered.push(sender);
                }
            }
            let _ = front.reply.send(reply);
            Ok(())
        }
    }
}

/// Reads the next packet body, or `None` when the stream ends or sends garbage.
async fn read_packet(
    reader: &mut tokio::io::ReadHalf<Stream>,
    buffer: &mut BytesMut,
) -> Option<Vec<u8>> {
    loop {
        // Replies carry a node's data (up to the server's packet limit) plus headers and a stat.
        match proto::split_packet(buffer, 4 * proto::MAX_PACKET_BYTES) {
            Ok(Some(packet)) => return Some(packet.to_vec()),
            Ok(None) => {}
            Err(_) => return None,
        }
        match reader.read_buf(buffer).await {
            Ok(n) if n > 0 => {}
            _ => return None,
        }
    }
}
