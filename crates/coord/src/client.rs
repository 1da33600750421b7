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

mod session;

use session::run;

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
