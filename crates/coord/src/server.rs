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
use drover_core::env::{BoxFuture, Listener, Stream};
use drover_core::frame::{decode_binary, encode_binary, FrameCodec};
use drover_core::{Env, Event};
use futures_util::{SinkExt, StreamExt};
use protobuf::Message as _;
use raft::prelude::{Entry, EntryType, Message};
use raft::{RawNode, StateRole};
use rand::Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::FramedWrite;

use crate::acl::{self, Id};
use crate::entry::LogEntry;
use crate::log::{RaftLog, WrittenSnapshot};
use crate::proto::{
    self, encode_connect_response, encode_event, encode_reply, split_packet, ConnectRequest,
    ConnectResponse, ErrorCode, Op, Request, Response, WatcherEvent,
};
use crate::tree::{validate_path, Change, DataTree, Txn};
use crate::watches::{ConnectionId, Kind, Watches};

mod clients;
mod driving;
mod net;
mod peers;

use net::accept_clients;
use peers::{accept_peers, send_to_peer, PEER_QUEUE_FRAMES, PEER_RAFT, PEER_TOUCH};
pub use peers::{decode_peer_frame, forged_heartbeat_frame, proof_frame, PeerFrame};

/// How a coord server is set up.
#[derive(Clone, Debug)]
pub struct Config {
    pub id: u64,
    /// Every server of the ensemble, this one included: id → (host, peer port).
    pub peers: BTreeMap<u64, (String, u16)>,
    pub client_port: u16,
    /// ZooKeeper's tickTime: sessions time out between 2 and 20 ticks.
    pub tick_time_ms: u64,
    /// One raft tick: the leader sends heartbeats every 2 ticks, and a follower that heard none
    /// for 8 to 16 ticks (drawn anew each term) starts an election.
    pub raft_tick_ms: u64,
    /// A snapshot is taken (and the log compacted) after at most this many applied entries, at
    /// least half as many (drawn anew each time, as ZooKeeper's `snapCount`).
    pub snapshot_every: u64,
    pub max_packet_bytes: usize,
    /// ZooKeeper's `maxClientCnxns`: at most this many connections from one address at once
    /// (one more is closed at once); 0: no limit.
    pub max_client_cnxns: usize,
    /// With a secret (`--peer-secret-file`), a peer connection carries nothing until both ends
    /// have proved they hold it (each answers the other's nonce), and every frame after that is
    /// sealed with a key of that connection.
    pub peer_secret: Option<drover_core::auth::Secret>,
    /// ZooKeeper's `zookeeper.DigestAuthenticationProvider.superDigest`: the digest id
    /// `super:base64(sha1(super:password))` whose holder passes every ACL.
    pub super_digest: Option<String>,
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
            raft_tick_ms: 25,
            // ZooKeeper's `snapCount` default: a snapshot is written beside the core loop, but it is
            // still a whole tree encoded and fsynced (100 MB for 100k 1 KB nodes).
            snapshot_every: 100_000,
            max_packet_bytes: proto::MAX_PACKET_BYTES,
            max_client_cnxns: DEFAULT_MAX_CLIENT_CNXNS,
            peer_secret: None,
            super_digest: None,
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

/// ZooKeeper's default `maxClientCnxns`.
pub const DEFAULT_MAX_CLIENT_CNXNS: usize = 60;

/// A write whose entry was not applied in this long (lost with a leader) closes its connection.
const PROPOSAL_TIMEOUT_MS: u64 = 10_000;
/// How often a server reports its sessions' activity to the leader and expires sessions.
const TOUCH_EVERY_MS: u64 = 500;
/// Client inputs taken into one raft ready at most (one disk sync for all of them).
const CLIENT_BATCH: usize = 512;
/// Requests a connection may have waiting behind one in flight before it is closed.
const MAX_QUEUED_REQUESTS: usize = 10_000;
/// A client that does not take what it is sent within this long is disconnected.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// An election times out after 8 to 16 raft ticks (200 to 400 ms at 25 ms), with heartbeats every
/// 2 (50 ms): a killed leader is replaced in about 300 ms, and a healthy one may stall for 150 ms
/// (a snapshot of a large tree is still taken in the core loop) before anyone campaigns. Measured
/// live: 6 to 12 ticks replaced a leader in 280 ms but let 128 writing clients trigger elections;
/// 8 to 16 showed none. Pre-vote with check-quorum keeps a server that was only cut off from
/// forcing a new term when it comes back. The range is wide enough that two candidates rarely draw
/// the same timeout and split the vote again.
const ELECTION_TICKS: usize = 8;
const MAX_ELECTION_TICKS: usize = 16;
const HEARTBEAT_TICKS: usize = 2;
/// How often the leader deletes empty container nodes.
const CONTAINER_CHECK_EVERY_MS: u64 = 60_000;

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
        /// The client's address: its `ip` id.
        peer: std::net::IpAddr,
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
    /// A snapshot begun by the core loop was written (and synced) beside it: file and snapshot.
    Snapshotted(std::io::Result<WrittenSnapshot>),
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
    /// Who the client has proven to be: `ip:<its address>`, and each digest it authenticated.
    ids: Vec<Id>,
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

/// Entries from one snapshot to the next: between half of `snapshot_every` and all of it, drawn
/// anew each time. As in ZooKeeper (its `snapCount`), servers that apply the same entries do not
/// all snapshot at once: each snapshot costs CPU and disk, and all servers paying at the same
/// moment is what a client would see as a stall.
fn snapshot_interval(env: &Env, config: &Config) -> u64 {
    let every = config.snapshot_every.max(1);
    every - env.rng().random_range(0..=every / 2)
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
    // Peers' messages have their own queue, served first: heartbeats and votes never wait behind
    // a flood of client requests (that wait would look like a dead leader and start elections).
    let (peer_inputs, mut peer_receiver) = mpsc::unbounded_channel();
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
        drover_core::env::spawn(accept_peers(
            env.clone(),
            peers,
            peer_inputs.clone(),
            config.peer_secret.clone(),
        ));
    }
    let peer_inputs_for_core = peer_inputs;
    drover_core::env::spawn(accept_clients(
        clients,
        inputs.clone(),
        config.max_packet_bytes,
        config.max_client_cnxns,
    ));
    let mut core = Core::start(env, config, peer_inputs_for_core).await?;
    tokio::pin!(shutdown);
    let mut ticker = tokio::time::interval(Duration::from_millis(core.config.raft_tick_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            Some(input) = peer_receiver.recv() => {
                core.on_input(input);
                while let Ok(input) = peer_receiver.try_recv() {
                    core.on_input(input);
                }
            }
            synced = async {
                match core.syncing.as_mut() {
                    Some((_, sync)) => sync.as_mut().await,
                    None => std::future::pending().await,
                }
            }, if core.syncing.is_some() => {
                synced?;
                if let Some((number, _)) = core.syncing.take() {
                    core.persisted(number);
                }
            }
            _ = ticker.tick() => core.on_tick(),
            input = receiver.recv() => {
                let Some(input) = input else { break };
                core.on_input(input);
                // Batch what else is waiting into the same raft ready (one disk sync for all).
                for _ in 0..CLIENT_BATCH {
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
    /// Where tasks of this server send their results (the peer queue, served first).
    inputs: mpsc::UnboundedSender<Input>,
    /// Whether a snapshot is being written beside the core loop.
    snapshotting: bool,
    /// The applied index at which the next snapshot begins.
    next_snapshot_at: u64,
    /// A snapshot written beside the core loop, to be taken by the next `drive`.
    snapshot_written: Option<std::io::Result<WrittenSnapshot>>,
    /// New sessions not yet proposed (no leader): connection, id, password, timeout, since.
    unproposed: VecDeque<(ConnectionId, i64, Vec<u8>, u64, u64)>,
    /// Readies advanced but not yet durable: each one's number and the messages that may only
    /// leave once it is (raft's "persisted messages").
    unpersisted: VecDeque<(u64, Vec<Message>)>,
    /// Whether the log holds something appended since the last sync began that must be synced.
    unsynced: bool,
    /// The sync in flight, polled by the serve loop: the newest ready it makes durable.
    syncing: Option<(u64, BoxFuture<'static, std::io::Result<()>>)>,
}

impl Core {
    async fn start(
        env: Env,
        config: Config,
        inputs: mpsc::UnboundedSender<Input>,
    ) -> Result<Core, CoordError> {
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
            heartbeat_tick: HEARTBEAT_TICKS,
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
                drover_core::env::spawn(send_to_peer(
                    env.clone(),
                    (host.clone(), *port),
                    receiver,
                    config.peer_secret.clone(),
                ));
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
            inputs,
            snapshotting: false,
            next_snapshot_at: 0,
            snapshot_written: None,
            unpersisted: VecDeque::new(),
            unsynced: false,
            syncing: None,
        };
        core.next_snapshot_at = applied + snapshot_interval(&core.env, &core.config);
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
        let tick_ms = self.config.raft_tick_ms.max(1);
        let every = |ms: u64| (ms / tick_ms).max(1);
        if self.ticks.is_multiple_of(every(TOUCH_EVERY_MS)) {
            self.report_activity();
            self.expire_sessions(now);
        }
        if self.is_leader() && self.ticks.is_multiple_of(every(CONTAINER_CHECK_EVERY_MS)) {
            for path in self.tree.empty_containers() {
                self.propose(
                    Txn::Write {
                        session: 0,
                        op: Op::Delete { path, version: -1 },
                        ids: Vec::new(),
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
                peer,
                out,
            } => self.connect(connection, request, peer, out, now),
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
            Input::Snapshotted(result) => self.snapshot_written = Some(result),
            Input::Touch(sessions) => {
                if self.is_leader() {
                    for session in sessions {
                        self.touch_deadline(session, now);
                    }
                }
            }
        }
    }
}
