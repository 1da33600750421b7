//! A ZooKeeper client over the Env seam, used by drover's other roles and by simulated workloads.
//!
//! One task owns the connection. It connects to the servers in turn (starting at a random one),
//! keeps the session across a switch of server within the session timeout (the handshake carries
//! the session id, its password and the last zxid seen), pings when idle, re-registers watches
//! after a reconnect (`setWatches`), and fails requests that were in flight when a connection
//! broke with `ConnectionLoss`. A session the servers no longer know is `SessionExpired`, for good.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::BytesMut;
use drover_core::env::Stream;
use drover_core::Env;
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use crate::proto::{
    self, decode_connect_response, decode_event, decode_reply_header, encode_connect,
    encode_request, event, op, Acl, ConnectRequest, ErrorCode, MultiResult, Op, Reader, Request,
    Stat, WatcherEvent,
};

/// How to create a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CreateMode {
    Persistent,
    Ephemeral,
    PersistentSequential,
    EphemeralSequential,
    Container,
}

impl CreateMode {
    fn flags(self) -> i32 {
        match self {
            CreateMode::Persistent => proto::mode::PERSISTENT,
            CreateMode::Ephemeral => proto::mode::EPHEMERAL,
            CreateMode::PersistentSequential => proto::mode::SEQUENTIAL,
            CreateMode::EphemeralSequential => proto::mode::EPHEMERAL | proto::mode::SEQUENTIAL,
            CreateMode::Container => proto::mode::CONTAINER,
        }
    }
}

/// The client's connection state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Connecting,
    Connected,
    Expired,
    Closed,
    /// A server refused the client's auth data (ZooKeeper's AUTH_FAILED: an unknown scheme).
    /// For good, as in ZooKeeper's clients: another connection would be refused the same way.
    AuthFailed,
}

impl State {
    /// Whether the client is done: a new client is needed to go on.
    pub fn is_final(self) -> bool {
        matches!(self, State::Expired | State::Closed | State::AuthFailed)
    }
}

/// A watch notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchedEvent {
    pub kind: i32,
    pub path: String,
}

/// Resolves when the watch fires (or fails with the session).
pub type WatchFuture = oneshot::Receiver<WatchedEvent>;

#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub servers: Vec<(String, u16)>,
    pub session_timeout: Duration,
    pub connect_timeout: Duration,
    /// Auth packets (scheme, data) sent on every connection before anything else, as
    /// `addauth digest user:password` does.
    pub auth: Vec<(String, Vec<u8>)>,
    /// The ACL [`Client::create`] gives nodes (default: `world:anyone`, every permission).
    pub acl: Vec<Acl>,
}

impl ClientConfig {
    /// Parses ZooKeeper's connect string `h1:2181,h2:2181` (a `/chroot` suffix is not supported).
    pub fn from_hosts(hosts: &str) -> Result<ClientConfig, String> {
        let mut servers = Vec::new();
        for item in hosts.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (host, port) = item
                .rsplit_once(':')
                .ok_or_else(|| format!("{item:?}: expected HOST:PORT"))?;
            let port = port
                .parse()
                .map_err(|_| format!("{item:?}: the port must be a number"))?;
            servers.push((host.to_string(), port));
        }
        if servers.is_empty() {
            return Err(format!("{hosts:?}: expected at least one HOST:PORT"));
        }
        Ok(ClientConfig {
            servers,
            session_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            auth: Vec::new(),
            acl: vec![Acl::open()],
        })
    }
}

type Reply = Result<(i64, Vec<u8>), ErrorCode>;

/// A server that does not take a request within this long is given up on.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum WatchKind {
    Data,
    Exist,
    Child,
}

enum Command {
    Call {
        op: Op,
        watch: Option<(WatchKind, oneshot::Sender<WatchedEvent>)>,
        reply: oneshot::Sender<Reply>,
    },
    Close {
        done: oneshot::Sender<()>,
    },
}

/// A ZooKeeper session. Cheap to clone; clones share the session.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<Command>,
    state: watch::Receiver<State>,
    session: watch::Receiver<i64>,
    acl: std::sync::Arc<Vec<Acl>>,
}

impl Client {
    /// Starts the session task; use [`Client::wait_connected`] to wait for the first handshake.
    pub fn start(env: Env, config: ClientConfig) -> Client {
        let (commands, receiver) = mpsc::unbounded_channel();
        let (state_sender, state) = watch::channel(State::Connecting);
        let (session_sender, session) = watch::channel(0);
        let acl = std::sync::Arc::new(config.acl.clone());
        drover_core::env::spawn(run(env, config, receiver, state_sender, session_sender));
        Client {
            commands,
            state,
            session,
            acl,
        }
    }

    /// The ACL this client's creates give nodes (its configuration's).
    pub fn acl(&self) -> Vec<Acl> {
        self.acl.as_ref().clone()
    }

    pub fn state(&self) -> State {
        *self.state.borrow()
    }

    /// Follows the connection state (`changed()` resolves on every transition).
    pub fn watch_state(&self) -> watch::Receiver<State> {
        self.state.clone()
    }

    pub fn session_id(&self) -> i64 {
        *self.session.borrow()
    }

    /// Waits until connected (or the session ended).
    pub async fn wait_connected(&self) -> Result<(), ErrorCode> {
        let mut state = self.state.clone();
        let reached = state
            .wait_for(|s| *s != State::Connecting)
            .await
            .map(|s| *s);
        match reached {
            Ok(State::Connected) => Ok(()),
            Ok(State::Expired) => Err(ErrorCode::SessionExpired),
            Ok(State::AuthFailed) => Err(ErrorCode::AuthFailed),
            _ => Err(ErrorCode::ConnectionLoss),
        }
    }

    async fn call(
        &self,
        op: Op,
        watch: Option<(WatchKind, oneshot::Sender<WatchedEvent>)>,
    ) -> Reply {
        let (reply, answer) = oneshot::channel();
        // A client that gave up on its auth data says so to every call after.
        let gone = || match *self.state.borrow() {
            State::AuthFailed => ErrorCode::AuthFailed,
            _ => ErrorCode::ConnectionLoss,
        };
        self.commands
            .send(Command::Call { op, watch, reply })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    pub async fn create(
        &self,
        path: &str,
        data: &[u8],
        mode: CreateMode,
    ) -> Result<String, ErrorCode> {
        let op = Op::Create {
            path: path.into(),
            data: data.to_vec(),
            acl: self.acl(),
            flags: mode.flags(),
            opcode: op::CREATE,
        };
        let (_, body) = self.call(op, None).await?;
        Reader::new(&body)
            .string("path")
            .map_err(|_| ErrorCode::MarshallingError)
    }

    pub async fn delete(&self, path: &str, version: i32) -> Result<(), ErrorCode> {
        self.call(
            Op::Delete {
                path: path.into(),
                version,
            },
            None,
        )
        .await
        .map(|_| ())
    }

    pub async fn set_data(&self, path: &str, data: &[u8], version: i32) -> Result<Stat, ErrorCode> {
        let (_, body) = self
            .call(
                Op::SetData {
                    path: path.into(),
                    data: data.to_vec(),
                    version,
                },
                None,
            )
            .await?;
        Reader::new(&body)
            .stat()
            .map_err(|_| ErrorCode::MarshallingError)
    }

    pub async fn get_data(&self, path: &str) -> Result<(Vec<u8>, Stat), ErrorCode> {
        let (_, body) = self
            .call(
                Op::GetData {
                    path: path.into(),
                    watch: false,
                },
                None,
            )
            .await?;
        decode_data(&body)
    }

    /// Gets a node's data and leaves a watch for its next change or deletion.
    pub async fn get_data_watch(
        &self,
        path: &str,
    ) -> Result<(Vec<u8>, Stat, WatchFuture), ErrorCode> {
        let (sender, fired) = oneshot::channel();
        let (_, body) = self
            .call(
                Op::GetData {
                    path: path.into(),
                    watch: true,
                },
                Some((WatchKind::Data, sender)),
            )
            .await?;
        let (data, stat) = decode_data(&body)?;
        Ok((data, stat, fired))
    }

    pub async fn exists(&self, path: &str) -> Result<Option<Stat>, ErrorCode> {
        match self
            .call(
                Op::Exists {
                    path: path.into(),
                    watch: false,
                },
                None,
            )
            .await
        {
            Ok((_, body)) => Reader::new(&body)
                .stat()
                .map(Some)
                .map_err(|_| ErrorCode::MarshallingError),
            Err(ErrorCode::NoNode) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `exists` with a watch: fires on creation, change or deletion.
    pub async fn exists_watch(&self, path: &str) -> Result<(Option<Stat>, WatchFuture), ErrorCode> {
        let (sender, fired) = oneshot::channel();
        match self
            .call(
                Op::Exists {
                    path: path.into(),
                    watch: true,
                },
                Some((WatchKind::Exist, sender)),
            )
            .await
        {
            Ok((_, body)) => Ok((
                Some(
                    Reader::new(&body)
                        .stat()
                        .map_err(|_| ErrorCode::MarshallingError)?,
                ),
                fired,
            )),
            Err(ErrorCode::NoNode) => Ok((None, fired)),
            Err(e) => Err(e),
        }
    }

    pub async fn get_children(&self, path: &str) -> Result<Vec<String>, ErrorCode> {
        let (_, body) = self
            .call(
                Op::GetChildren {
                    path: path.into(),
                    watch: false,
                    with_stat: false,
                },
                None,
            )
            .await?;
        decode_children(&body)
    }

    pub async fn get_children_watch(
        &self,
        path: &str,
    ) -> Result<(Vec<String>, WatchFuture), ErrorCode> {
        let (sender, fired) = oneshot::channel();
        let op = Op::GetChildren {
            path: path.into(),
            watch: true,
            with_stat: false,
        };
        let (_, body) = self.call(op, Some((WatchKind::Child, sender))).await?;
        Ok((decode_children(&body)?, fired))
    }

    /// Runs operations atomically; every result is `Ok` or none was applied.
    pub async fn multi(&self, ops: Vec<Op>) -> Result<Vec<MultiResult>, ErrorCode> {
        let count = ops.len();
        let (_, body) = self.call(Op::Multi { ops }, None).await?;
        decode_multi(&body, count)
    }

    /// Waits until the connected server has caught up with the leader.
    pub async fn sync(&self, path: &str) -> Result<(), ErrorCode> {
        self.call(Op::Sync { path: path.into() }, None)
            .await
            .map(|_| ())
    }

    /// Creates `path` and any missing parents as persistent nodes.
    pub async fn ensure_path(&self, path: &str) -> Result<(), ErrorCode> {
        let mut prefix = String::new();
        for segment in path.split('/').filter(|s| !s.is_empty()) {
            prefix.push('/');
            prefix.push_str(segment);
            match self.create(&prefix, &[], CreateMode::Persistent).await {
                Ok(_) | Err(ErrorCode::NodeExists) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Closes the session (its ephemeral nodes go at once).
    pub async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.commands.send(Command::Close { done }).is_ok() {
            let _ = closed.await;
        }
    }
}

fn decode_data(body: &[u8]) -> Result<(Vec<u8>, Stat), ErrorCode> {
    let mut r = Reader::new(body);
    let data = r.buffer("data").map_err(|_| ErrorCode::MarshallingError)?;
    Ok((data, r.stat().map_err(|_| ErrorCode::MarshallingError)?))
}

fn decode_children(body: &[u8]) -> Result<Vec<String>, ErrorCode> {
    let mut r = Reader::new(body);
    let count = r.int("children").map_err(|_| ErrorCode::MarshallingError)?;
    (0..count.max(0))
        .map(|_| r.string("child").map_err(|_| ErrorCode::MarshallingError))
        .collect()
}

fn decode_multi(body: &[u8], count: usize) -> Result<Vec<MultiResult>, ErrorCode> {
    let bad = |_| ErrorCode::MarshallingError;
    let mut r = Reader::new(body);
    let mut results = Vec::with_capacity(count);
    loop {
        let kind = r.int("multi type").map_err(bad)?;
        let done = r.boolean("multi done").map_err(bad)?;
        let err = r.int("multi err").map_err(bad)?;
        if done {
            return Ok(results);
        }
        let response = match kind {
            op::ERROR => {
                r.int("error").map_err(bad)?;
                results.push(MultiResult::Error(
                    ErrorCode::from_code(err).unwrap_or(ErrorCode::SystemError),
                ));
                continue;
            }
            op::CREATE => proto::Response::Path(r.string("path").map_err(bad)?),
            op::CREATE2 | op::CREATE_CONTAINER => {
                proto::Response::PathStat(r.string("path").map_err(bad)?, r.stat().map_err(bad)?)
            }
            op::SET_DATA => proto::Response::Stat(r.stat().map_err(bad)?),
            _ => proto::Response::Empty,
        };
        results.push(MultiResult::Ok {
            opcode: kind,
            response,
        });
    }
}

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

async fn run(
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
