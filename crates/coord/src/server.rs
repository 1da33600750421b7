//! A coord server: ZooKeeper clients on one port, raft peers on another, one core task that owns
//! the raft node, the tree and the connections' queues.
//!
//! Writes (and session creation and close) go through raft: the server that received the request
//! proposes a log entry tagged with its own id and a request number; raft forwards a follower's
//! proposal to the leader; when the entry is applied on every server, the one that proposed it
//! answers its client. Reads are served from the local tree, after any earlier write of the same
//! connection (each connection's requests are handled in order). The leader expires sessions whose
//! clients stopped pinging; followers report their clients' activity to it.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use drover_core::env::{Listener, Stream};
use drover_core::frame::{decode_binary, encode_binary, FrameCodec};
use drover_core::{Env, Event};
use futures_util::{SinkExt, StreamExt};
use protobuf::Message as _;
use raft::prelude::{Entry, EntryType, Message};
use raft::{RawNode, StateRole};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::entry::LogEntry;
use crate::log::RaftLog;
use crate::proto::{
    self, encode_connect_response, encode_event, encode_reply, split_packet, ConnectRequest,
    ConnectResponse, ErrorCode, Op, Request, Response, WatcherEvent,
};
use crate::tree::{validate_path, Change, DataTree, Txn};
use crate::watches::{ConnectionId, Kind, Watches};

/// How a coord server is set up.
#[derive(Clone, Debug)]
pub struct Config {
    pub id: u64,
    /// Every server of the ensemble, this one included: id → (host, peer port).
    pub peers: BTreeMap<u64, (String, u16)>,
    pub client_port: u16,
    /// ZooKeeper's tickTime: sessions time out between 2 and 20 ticks.
    pub tick_time_ms: u64,
    /// One raft tick; an election times out after 10 to 30 of them.
    pub raft_tick_ms: u64,
    /// A snapshot is taken (and the log compacted) after this many applied entries.
    pub snapshot_every: u64,
    pub max_packet_bytes: usize,
}

impl Config {
    /// A one-server ensemble.
    pub fn single(client_port: u16) -> Config {
        let mut peers = BTreeMap::new();
        peers.insert(1, ("127.0.0.1".to_string(), 2888));
        Config {
            id: 1,
            peers,
            client_port,
            ..Config::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id: 1,
            peers: BTreeMap::new(),
            client_port: 2181,
            tick_time_ms: 2000,
            raft_tick_ms: 50,
            snapshot_every: 10_000,
            max_packet_bytes: proto::MAX_PACKET_BYTES,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CoordError {
    #[error("listen on {what} port {port}: {source}")]
    Bind {
        what: &'static str,
        port: u16,
        source: std::io::Error,
    },
    #[error("raft log: {0}")]
    Disk(#[from] std::io::Error),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error("configuration: {0}")]
    Config(String),
}

const PEER_RAFT: u8 = 1;
const PEER_TOUCH: u8 = 2;
const PEER_KEEPALIVE_KIND: u8 = 3;
const PEER_QUEUE_FRAMES: usize = 1024;
/// Peer frames carry whole snapshots, so they may be far larger than client packets.
const PEER_MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;
const PEER_KEEPALIVE: Duration = Duration::from_secs(1);
/// A peer connection that carried nothing for this long is presumed broken and closed.
const PEER_IDLE: Duration = Duration::from_secs(3);
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A write whose entry was not applied in this long (lost with a leader) closes its connection.
const PROPOSAL_TIMEOUT_MS: u64 = 10_000;
const TOUCH_EVERY_TICKS: u64 = 10;
/// Requests a connection may have waiting behind one in flight before it is closed.
const MAX_QUEUED_REQUESTS: usize = 10_000;
/// A client that does not take what it is sent within this long is disconnected.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// An election times out after 10 to 30 raft ticks (0.5 to 1.5 s at 50 ms): a wide range, so two
/// candidates rarely draw the same timeout and split the vote again.
const ELECTION_TICKS: usize = 10;
const MAX_ELECTION_TICKS: usize = 30;
const CONTAINER_CHECK_EVERY_TICKS: u64 = 1200;

/// The four-letter admin commands answered on the client port.
const FOUR_LETTER_WORDS: &[&str] = &["ruok", "srvr", "stat", "mntr", "isro"];

enum Input {
    FourLetter {
        word: &'static str,
        out: mpsc::UnboundedSender<Outgoing>,
    },
    Connect {
        connection: ConnectionId,
        request: ConnectRequest,
        out: mpsc::UnboundedSender<Outgoing>,
    },
    Request {
        connection: ConnectionId,
        request: Request,
    },
    Closed {
        connection: ConnectionId,
    },
    Raft(Box<Message>),
    Touch(Vec<i64>),
}

enum Outgoing {
    Packet(Vec<u8>),
    Close,
}

struct Connection {
    out: mpsc::UnboundedSender<Outgoing>,
    session: Option<i64>,
    timeout_ms: u64,
    read_only: Option<bool>,
    queue: VecDeque<Request>,
    busy: bool,
    last_heard_ms: u64,
}

enum Waiting {
    Session {
        connection: ConnectionId,
        id: i64,
        password: Vec<u8>,
        timeout_ms: u64,
    },
    /// A re-attach to a session this server did not know: asked again after a barrier, since the
    /// session may be committed but not yet applied here.
    Reattach {
        connection: ConnectionId,
        request: ConnectRequest,
        timeout_ms: u64,
    },
    Reply {
        connection: ConnectionId,
        xid: i32,
        replace: Option<Response>,
        close_after: bool,
    },
}

struct Proposal {
    waiting: Waiting,
    proposed_ms: u64,
}

/// Runs a coord server until `shutdown` resolves.
pub async fn serve(
    env: Env,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), CoordError> {
    let own = config.peers.get(&config.id).cloned().ok_or_else(|| {
        CoordError::Config(format!("server id {} is not among the peers", config.id))
    })?;
    let (inputs, mut receiver) = mpsc::unbounded_channel();
    let any = |port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
    let clients = env
        .bind(any(config.client_port))
        .await
        .map_err(|source| CoordError::Bind {
            what: "client",
            port: config.client_port,
            source,
        })?;
    if config.peers.len() > 1 {
        let peers = env
            .bind(any(own.1))
            .await
            .map_err(|source| CoordError::Bind {
                what: "peer",
                port: own.1,
                source,
            })?;
        drover_core::env::spawn(accept_peers(peers, inputs.clone()));
    }
    drover_core::env::spawn(accept_clients(
        clients,
        inputs.clone(),
        config.max_packet_bytes,
    ));
    let mut core = Core::start(env, config).await?;
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(Duration::from_millis(core.config.raft_tick_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            _ = ticker.tick() => core.on_tick(),
            input = receiver.recv() => {
                let Some(input) = input else { break };
                core.on_input(input);
                // Batch what else is waiting into the same raft ready (one disk sync for all).
                for _ in 0..1024 {
                    match receiver.try_recv() {
                        Ok(input) => core.on_input(input),
                        Err(_) => break,
                    }
                }
            }
        }
        core.drive().await?;
    }
    for connection in core.connections.values() {
        let _ = connection.out.send(Outgoing::Close);
    }
    Ok(())
}

async fn accept_clients(
    mut listener: Listener,
    inputs: mpsc::UnboundedSender<Input>,
    max_packet_bytes: usize,
) {
    let mut next: ConnectionId = 1;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        drover_core::env::spawn(client_connection(
            next,
            stream,
            inputs.clone(),
            max_packet_bytes,
        ));
        next += 1;
    }
}

/// Reads a client's packets into the core and writes what the core answers, in order.
async fn client_connection(
    connection: ConnectionId,
    stream: Stream,
    inputs: mpsc::UnboundedSender<Input>,
    max_packet_bytes: usize,
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (out, mut outgoing) = mpsc::unbounded_channel();
    let mut buffer = BytesMut::with_capacity(8192);
    let mut connected = false;
    'serve: loop {
        tokio::select! {
            biased;
            message = outgoing.recv() => match message {
                                Some(Outgoing::Packet(packet)) => {
                    let written = tokio::time::timeout(CLIENT_WRITE_TIMEOUT, writer.write_all(&packet)).await;
                    if !matches!(written, Ok(Ok(()))) {
                        break 'serve;
                    }
                }
                Some(Outgoing::Close) | None => break 'serve,
            },
            read = reader.read_buf(&mut buffer) => {
                if !matches!(read, Ok(n) if n > 0) {
                    break 'serve;
                }
                // ZooKeeper's four-letter words (`ruok`, `srvr`, ...) come instead of a handshake.
                if !connected && buffer.len() >= 4 {
                    if let Some(word) = FOUR_LETTER_WORDS.iter().find(|w| buffer.starts_with(w.as_bytes())) {
                        connected = true;
                        let _ = inputs.send(Input::FourLetter { word, out: out.clone() });
                        buffer.clear();
                        continue 'serve;
                    }
                }
                loop {
                    let packet = match split_packet(&mut buffer, max_packet_bytes) {
                        Ok(Some(packet)) => packet,
                        Ok(None) => break,
                        Err(error) => {
                            tracing::debug!(connection, %error, "closing a client connection");
                            break 'serve;
                        }
                    };
                    let input = if connected {
                        match proto::decode_request(&packet) {
                            Ok(request) => Input::Request { connection, request },
                            Err(error) => {
                                tracing::debug!(connection, %error, "closing a client connection");
                                break 'serve;
                            }
                        }
                    } else {
                        match proto::decode_connect(&packet) {
                            Ok(request) => {
                                connected = true;
                                Input::Connect { connection, request, out: out.clone() }
                            }
                            Err(error) => {
                                tracing::debug!(connection, %error, "closing a client connection");
                                break 'serve;
                            }
                        }
                    };
                    if inputs.send(input).is_err() {
                        break 'serve;
                    }
                }
            }
        }
    }
    let _ = writer.shutdown().await;
    let _ = inputs.send(Input::Closed { connection });
}

async fn accept_peers(mut listener: Listener, inputs: mpsc::UnboundedSender<Input>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let inputs = inputs.clone();
        drover_core::env::spawn(async move {
            let mut frames = FramedRead::new(stream, FrameCodec::with_max(PEER_MAX_FRAME_BYTES));
            while let Ok(Some(Ok(frame))) = tokio::time::timeout(PEER_IDLE, frames.next()).await {
                let input = match decode_binary(&frame) {
                    Ok((PEER_RAFT, body)) => match Message::parse_from_bytes(body) {
                        Ok(message) => Input::Raft(Box::new(message)),
                        Err(_) => break,
                    },
                    Ok((PEER_KEEPALIVE_KIND, _)) => continue,
                    Ok((PEER_TOUCH, body)) => {
                        let sessions = body
                            .chunks_exact(8)
                            .map(|c| {
                                i64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])
                            })
                            .collect();
                        Input::Touch(sessions)
                    }
                    _ => break,
                };
                if inputs.send(input).is_err() {
                    break;
                }
            }
        });
    }
}

/// Sends frames to one peer over one connection. The connection is re-opened when a write fails
/// or the peer closes it; a keepalive goes out when it has been quiet, because the receiving side
/// closes a connection that carried nothing for [`PEER_IDLE`] (after a partition a TCP connection
/// may never carry anything again).
async fn send_to_peer(env: Env, host: String, port: u16, mut frames: mpsc::Receiver<Bytes>) {
    type Writer = FramedWrite<tokio::io::WriteHalf<Stream>, FrameCodec>;
    let mut open: Option<(Writer, tokio::io::ReadHalf<Stream>)> = None;
    let mut last_sent = tokio::time::Instant::now();
    let mut scratch = [0u8; 64];
    loop {
        let keepalive_at = last_sent + PEER_KEEPALIVE;
        let connected = open.is_some();
        let frame = tokio::select! {
            biased;
            frame = frames.recv() => match frame {
                Some(frame) => frame,
                None => return,
            },
            // The peer never writes on this connection: any read result means it is gone.
            _ = async {
                match open.as_mut() {
                    Some((_, reader)) => reader.read(&mut scratch).await,
                    None => std::future::pending().await,
                }
            } => {
                open = None;
                continue;
            }
            _ = tokio::time::sleep_until(keepalive_at), if connected => encode_binary(PEER_KEEPALIVE_KIND, &[]),
        };
        if open.is_none() {
            if let Ok(stream) = env.connect(&host, port, PEER_CONNECT_TIMEOUT).await {
                let (reader, writer) = tokio::io::split(stream);
                open = Some((
                    FramedWrite::new(writer, FrameCodec::with_max(PEER_MAX_FRAME_BYTES)),
                    reader,
                ));
            }
        }
        if let Some((writer, _)) = &mut open {
            if !matches!(
                tokio::time::timeout(PEER_CONNECT_TIMEOUT, writer.send(frame)).await,
                Ok(Ok(()))
            ) {
                open = None;
            }
            last_sent = tokio::time::Instant::now();
        }
    }
}

struct Core {
    env: Env,
    config: Config,
    raft: RawNode<RaftLog>,
    log: RaftLog,
    tree: DataTree,
    applied: u64,
    connections: BTreeMap<ConnectionId, Connection>,
    watches: Watches,
    proposals: BTreeMap<u64, Proposal>,
    next_request: u64,
    /// Bounded: while a peer is unreachable, what does not fit is dropped (raft sends again).
    peers: BTreeMap<u64, mpsc::Sender<Bytes>>,
    started: tokio::time::Instant,
    ticks: u64,
    role: (u64, StateRole),
    /// Leader only: when each session expires unless heard from (ms since start).
    deadlines: BTreeMap<i64, u64>,
    expiring: BTreeSet<i64>,
    /// Sessions whose clients were heard since the last report to the leader.
    heard: BTreeSet<i64>,
    session_base: i64,
    sessions_made: i64,
    /// Snapshot sends to report to raft once the current Ready is advanced.
    snapshot_reports: Vec<(u64, raft::SnapshotStatus)>,
    /// Connections whose next request waits for the current raft Ready to be advanced.
    to_pump: Vec<ConnectionId>,
    /// Whether this server knows a leader (clients are served only then).
    serving: bool,
    /// New sessions not yet proposed (no leader): connection, id, password, timeout, since.
    unproposed: VecDeque<(ConnectionId, i64, Vec<u8>, u64, u64)>,
}

impl Core {
    async fn start(env: Env, config: Config) -> Result<Core, CoordError> {
        let voters: Vec<u64> = config.peers.keys().copied().collect();
        let log = RaftLog::open(&env, &voters).await?;
        let data = log.snapshot_data();
        let tree: DataTree = if data.is_empty() {
            DataTree::default()
        } else {
            DataTree::decode_snapshot(&data)
                .map_err(|e| CoordError::Config(format!("snapshot does not decode: {e}")))?
        };
        let applied = log.snapshot_index();
        let raft_config = raft::Config {
            id: config.id,
            election_tick: ELECTION_TICKS,
            min_election_tick: ELECTION_TICKS,
            max_election_tick: MAX_ELECTION_TICKS,
            heartbeat_tick: 2,
            applied,
            pre_vote: true,
            check_quorum: true,
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        raft_config.validate()?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raft = RawNode::new(&raft_config, log.clone(), &logger)?;
        let mut peers = BTreeMap::new();
        for (id, (host, port)) in &config.peers {
            if *id != config.id {
                let (sender, receiver) = mpsc::channel(PEER_QUEUE_FRAMES);
                drover_core::env::spawn(send_to_peer(env.clone(), host.clone(), *port, receiver));
                peers.insert(*id, sender);
            }
        }
        // ZooKeeper's layout: the server id in the top byte, then time-derived bits.
        let session_base = ((config.id as i64) << 56)
            | ((((env.unix_ms() as i64) << 24) >> 8) & 0x00ff_ffff_ffff_ffff);
        let first_request = env.rng().random::<u64>() >> 1;
        let mut core = Core {
            env,
            config,
            raft,
            log,
            tree,
            applied,
            connections: BTreeMap::new(),
            watches: Watches::default(),
            proposals: BTreeMap::new(),
            // Unique per incarnation: an entry proposed before a restart and applied after it
            // must not be taken for a new request.
            next_request: first_request,
            peers,
            started: tokio::time::Instant::now(),
            ticks: 0,
            role: (0, StateRole::Follower),
            deadlines: BTreeMap::new(),
            expiring: BTreeSet::new(),
            heard: BTreeSet::new(),
            session_base,
            sessions_made: 0,
            unproposed: VecDeque::new(),
            to_pump: Vec::new(),
            snapshot_reports: Vec::new(),
            serving: false,
        };
        core.after_raft();
        core.env.emit(
            Event::new("start")
                .with("applied", applied)
                .with("term", core.raft.raft.term),
        );
        if core.config.peers.len() == 1 {
            let _ = core.raft.campaign();
            core.after_raft();
        }
        Ok(core)
    }

    /// A new term (or a leader stepping down) may have lost what was proposed before it. Like a
    /// ZooKeeper server that loses its leader, close the connections that wait for such writes:
    /// their clients learn the outcome is unknown (connection loss) and reconnect at once,
    /// instead of waiting for an answer that may never come.
    fn drop_in_flight(&mut self) {
        let waiting: Vec<ConnectionId> = std::mem::take(&mut self.proposals)
            .into_values()
            .map(|p| match p.waiting {
                Waiting::Session { connection, .. }
                | Waiting::Reattach { connection, .. }
                | Waiting::Reply { connection, .. } => connection,
            })
            .collect();
        for connection in waiting {
            self.close(connection);
        }
    }

    fn four_letter(&self, word: &str) -> String {
        let mode = match (self.config.peers.len(), self.raft.raft.state) {
            (1, _) => "standalone",
            (_, StateRole::Leader) => "leader",
            (_, StateRole::Follower) if self.raft.raft.leader_id != raft::INVALID_ID => "follower",
            _ => "looking",
        };
        match word {
            "ruok" => "imok".to_string(),
            "isro" => "rw".to_string(),
            "mntr" => format!(
                "zk_version\tdrover-coord {}\nzk_server_state\t{mode}\nzk_znode_count\t{}\nzk_num_alive_connections\t{}\nzk_outstanding_requests\t{}\nzk_raft_term\t{}\nzk_raft_applied\t{}\n",
                env!("CARGO_PKG_VERSION"),
                self.tree.node_count(),
                self.connections.len(),
                self.proposals.len(),
                self.raft.raft.term,
                self.applied
            ),
            _ => format!(
                "Zookeeper version: drover-coord {}\nConnections: {}\nOutstanding: {}\nZxid: {:#x}\nMode: {mode}\nNode count: {}\n",
                env!("CARGO_PKG_VERSION"),
                self.connections.len(),
                self.proposals.len(),
                self.tree.last_zxid,
                self.tree.node_count()
            ),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn is_leader(&self) -> bool {
        self.raft.raft.state == StateRole::Leader
    }

    /// After every call into raft: raft redraws its election timeout from a thread RNG whenever
    /// the term or the role changes; draw it again from the node's seeded RNG (DESIGN §5 rule 6).
    fn after_raft(&mut self) {
        let serving = match self.raft.raft.state {
            StateRole::Leader => true,
            StateRole::Follower => self.raft.raft.leader_id != raft::INVALID_ID,
            _ => false,
        };
        if self.serving && !serving {
            // Like a ZooKeeper server that lost its leader: drop every client, so none goes on
            // reading state the majority may have moved past (or its session expired there).
            self.env
                .emit(Event::new("lost_leader").with("term", self.raft.raft.term));
            self.drop_in_flight();
            let all: Vec<ConnectionId> = self.connections.keys().copied().collect();
            for connection in all {
                self.close(connection);
            }
        }
        self.serving = serving;
        let now = (self.raft.raft.term, self.raft.raft.state);
        if now == self.role && self.ticks > 0 {
            return;
        }
        let was_leader = self.role.1 == StateRole::Leader;
        let term_changed = now.0 != self.role.0;
        self.role = now;
        if term_changed || was_leader {
            self.drop_in_flight();
        }
        let range = ELECTION_TICKS..MAX_ELECTION_TICKS;
        let timeout = self.env.rng().random_range(range);
        self.raft.raft.set_randomized_election_timeout(timeout);
        let reported_below =
            now.1 == StateRole::Leader || (now.1 == StateRole::Follower && was_leader);
        if !reported_below {
            self.env.emit(
                Event::new("raft")
                    .with("role", format!("{:?}", now.1))
                    .with("term", now.0),
            );
        }
        if self.is_leader() && !was_leader {
            self.env.emit(Event::new("leader").with("term", now.0));
            let now_ms = self.now_ms();
            self.deadlines = self
                .tree
                .sessions()
                .map(|(id, s)| (id, now_ms + s.timeout_ms as u64))
                .collect();
            self.expiring.clear();
        } else if !self.is_leader() && was_leader {
            self.env.emit(Event::new("follower").with("term", now.0));
            self.deadlines.clear();
            self.expiring.clear();
        }
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        self.raft.tick();
        self.after_raft();
        let now = self.now_ms();
        if !self.unproposed.is_empty() {
            self.propose_sessions(now);
        }
        if self.ticks.is_multiple_of(TOUCH_EVERY_TICKS) {
            self.report_activity();
            self.expire_sessions(now);
        }
        if self.is_leader() && self.ticks.is_multiple_of(CONTAINER_CHECK_EVERY_TICKS) {
            for path in self.tree.empty_containers() {
                self.propose(
                    Txn::Write {
                        session: 0,
                        op: Op::Delete { path, version: -1 },
                    },
                    None,
                );
            }
        }
        // Connections whose client went silent, and writes lost with a leader.
        let silent: Vec<ConnectionId> = self
            .connections
            .iter()
            .filter(|(_, c)| now.saturating_sub(c.last_heard_ms) > c.timeout_ms)
            .map(|(id, _)| *id)
            .collect();
        let stale: Vec<ConnectionId> = self
            .proposals
            .values()
            .filter(|p| now.saturating_sub(p.proposed_ms) > PROPOSAL_TIMEOUT_MS)
            .map(|p| match p.waiting {
                Waiting::Session { connection, .. }
                | Waiting::Reattach { connection, .. }
                | Waiting::Reply { connection, .. } => connection,
            })
            .collect();
        self.proposals
            .retain(|_, p| now.saturating_sub(p.proposed_ms) <= PROPOSAL_TIMEOUT_MS);
        for connection in silent.into_iter().chain(stale) {
            self.close(connection);
        }
    }

    /// Followers tell the leader which sessions were heard from; the leader notes its own.
    fn report_activity(&mut self) {
        if self.heard.is_empty() {
            return;
        }
        let heard = std::mem::take(&mut self.heard);
        if self.is_leader() {
            let now = self.now_ms();
            for session in heard {
                self.touch_deadline(session, now);
            }
            return;
        }
        let leader = self.raft.raft.leader_id;
        if let Some(peer) = self.peers.get(&leader) {
            let body: Vec<u8> = heard.iter().flat_map(|s| s.to_be_bytes()).collect();
            let _ = peer.try_send(encode_binary(PEER_TOUCH, &body));
        }
    }

    fn touch_deadline(&mut self, session: i64, now: u64) {
        if let Some(info) = self.tree.session(session) {
            let deadline = now + info.timeout_ms as u64;
            self.deadlines.insert(session, deadline);
        }
    }

    fn expire_sessions(&mut self, now: u64) {
        if !self.is_leader() {
            return;
        }
        let expired: Vec<i64> = self
            .deadlines
            .iter()
            .filter(|(s, d)| **d < now && !self.expiring.contains(s))
            .map(|(s, _)| *s)
            .collect();
        for session in expired {
            self.env
                .emit(Event::new("expire").with("session", format!("{session:#x}")));
            self.expiring.insert(session);
            self.propose(Txn::CloseSession { id: session }, None);
        }
    }

    fn on_input(&mut self, input: Input) {
        let now = self.now_ms();
        match input {
            Input::FourLetter { word, out } => {
                let _ = out.send(Outgoing::Packet(self.four_letter(word).into_bytes()));
                let _ = out.send(Outgoing::Close);
            }
            Input::Connect {
                connection,
                request,
                out,
            } => self.connect(connection, request, out, now),
            Input::Request {
                connection,
                request,
            } => {
                let Some(conn) = self.connections.get_mut(&connection) else {
                    return;
                };
                conn.last_heard_ms = now;
                if let Some(session) = conn.session {
                    self.heard.insert(session);
                }
                if request.op == Op::Ping {
                    let packet =
                        encode_reply(proto::XID_PING, self.tree.last_zxid, &Ok(Response::Empty));
                    let _ = conn.out.send(Outgoing::Packet(packet));
                    return;
                }
                if conn.queue.len() >= MAX_QUEUED_REQUESTS {
                    // A client that pipelines without bound would grow this queue forever.
                    self.close(connection);
                    return;
                }
                conn.queue.push_back(request);
                self.pump(connection);
            }
            Input::Closed { connection } => {
                self.watches.remove_connection(connection);
                let Some(conn) = self.connections.remove(&connection) else {
                    return;
                };
                // Clients (kazoo among them) send closeSession and hang up without waiting for
                // the answer: the close must still happen, or ephemerals live until expiry.
                if let Some(session) = conn
                    .session
                    .filter(|_| conn.queue.iter().any(|r| r.op == Op::CloseSession))
                {
                    self.propose(Txn::CloseSession { id: session }, None);
                }
            }
            Input::Raft(message) => {
                let _ = self.raft.step(*message);
                self.after_raft();
            }
            Input::Touch(sessions) => {
                if self.is_leader() {
                    for session in sessions {
                        self.touch_deadline(session, now);
                    }
                }
            }
        }
    }

    fn connect(
        &mut self,
        connection: ConnectionId,
        request: ConnectRequest,
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
    fn session_lives(&self, request: &ConnectRequest) -> bool {
        let session = self.tree.session(request.session_id);
        session.is_some_and(|s| s.password == request.password)
            && !self.expiring.contains(&request.session_id)
    }

    /// Tells a client its session is gone (ZooKeeper's way: a zero timeout) and hangs up.
    fn reject_session(&mut self, connection: ConnectionId, read_only: Option<bool>) {
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
    fn attach(
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

    fn send(&self, connection: ConnectionId, packet: Vec<u8>) {
        if let Some(conn) = self.connections.get(&connection) {
            let _ = conn.out.send(Outgoing::Packet(packet));
        }
    }

    fn close(&mut self, connection: ConnectionId) {
        if let Some(conn) = self.connections.remove(&connection) {
            let _ = conn.out.send(Outgoing::Close);
        }
        self.watches.remove_connection(connection);
    }

    /// Proposes the sessions of new connections. While there is no leader to take them they wait
    /// (a client connecting during an election is answered once one is elected), up to the
    /// proposal timeout.
    fn propose_sessions(&mut self, now: u64) {
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

    fn propose(&mut self, txn: Txn, waiting: Option<Waiting>) -> bool {
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
    fn pump(&mut self, connection: ConnectionId) {
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
                }
            }
        }
    }

    fn read(
        &mut self,
        connection: ConnectionId,
        request: &Request,
    ) -> (i32, Result<Response, ErrorCode>) {
        match &request.op {
            Op::Exists { path, watch }
            | Op::GetData { path, watch }
            | Op::GetChildren { path, watch, .. } => {
                let result = self.tree.read(&request.op);
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
            Op::GetAcl { .. } => (request.xid, self.tree.read(&request.op)),
            Op::SetWatches {
                relative_zxid,
                data,
                exist,
                child,
            } => {
                self.set_watches(connection, *relative_zxid, data, exist, child);
                (proto::XID_SET_WATCHES, Ok(Response::Empty))
            }
            Op::Auth { .. } => (proto::XID_AUTH, Ok(Response::Empty)),
            _ => (request.xid, Err(ErrorCode::Unimplemented)),
        }
    }

    /// Re-registers a reconnecting client's watches, firing at once those whose node changed
    /// since the zxid the client had seen.
    fn set_watches(
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

    /// Persists, sends and applies whatever raft has ready, in the order raft-rs documents.
    async fn drive(&mut self) -> Result<(), CoordError> {
        while self.raft.has_ready() {
            let mut ready = self.raft.ready();
            self.send_messages(ready.take_messages());
            if !ready.snapshot().is_empty() {
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
            let mut persisted = false;
            if !ready.entries().is_empty() {
                self.log.append(&self.env, ready.entries()).await?;
                persisted = true;
            }
            if let Some(state) = ready.hs() {
                self.log.set_hard_state(&self.env, state.clone()).await?;
                persisted = true;
            }
            if persisted {
                self.log.sync(&self.env).await?;
            }
            self.send_messages(ready.take_persisted_messages());
            let mut light = self.raft.advance(ready);
            if let Some(commit) = light.commit_index() {
                let mut state = self.log.hard_state();
                state.commit = commit;
                self.log.set_hard_state(&self.env, state).await?;
            }
            self.send_messages(light.take_messages());
            let committed = light.take_committed_entries();
            self.apply(committed);
            self.raft.advance_apply();
            self.after_raft();
            for (peer, status) in std::mem::take(&mut self.snapshot_reports) {
                self.raft.report_snapshot(peer, status);
            }
            for connection in std::mem::take(&mut self.to_pump) {
                self.pump(connection);
            }
        }
        if self.applied >= self.log.snapshot_index() + self.config.snapshot_every {
            let data = self.tree.encode_snapshot();
            self.log
                .compact(&self.env, self.applied, Bytes::from(data))
                .await?;
            self.env
                .emit(Event::new("snapshot").with("index", self.applied));
        }
        Ok(())
    }

    fn send_messages(&mut self, messages: Vec<Message>) {
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

    fn apply(&mut self, entries: Vec<Entry>) {
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
    fn after_snapshot(&mut self, old: &DataTree) {
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

    fn fire(&mut self, zxid: i64, changes: &[Change]) {
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

    fn answer(&mut self, zxid: i64, waiting: Waiting, result: Result<Response, ErrorCode>) {
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
