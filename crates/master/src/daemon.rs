//! The master daemon: one port for HTTP (the v1 scheduler API, `/master/state`, ...) and for
//! agents' frame connections, leader election through coord, and the core task that owns the
//! leading master's state ([`crate::core::Master`]).
//!
//! Everything goes through the Env, so the same code runs live and in simulation.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use drover_coord::client::{Client, CreateMode};
use drover_coord::proto::{ErrorCode, MultiResult, Op};
use drover_coord::recipes;
use drover_coord::url::{ZkAcl, ZkUrl};
use drover_core::agent_proto::{AgentMessage, MasterMessage, Registration};
use drover_core::env::{Listener, Stream};
use drover_core::frame::{
    decode_message, encode_message, next_within, send_within, ExchangeError, FrameCodec,
};
use drover_core::v1::{self, CallType, MasterInfo};
use drover_core::{Env, Event};
use futures_util::{SinkExt, StreamExt};
use rand::RngCore;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

use crate::core::{ApiError, Master, RegistryEntry, RegistryWrite, StreamSender, Tuning};

/// Mesos' master port.
pub const DEFAULT_PORT: u16 = 5050;

/// How long an agent connection may stay silent before its first frame, and a write may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct Config {
    /// The address to listen on.
    pub bind: SocketAddr,
    /// The host name others reach this master by (published in `MasterInfo`).
    pub hostname: String,
    pub port: u16,
    /// `zk://HOSTS/PATH`: elect the leader through coord (or ZooKeeper). None: a single master.
    pub zk: Option<ZkUrl>,
    pub tuning: Tuning,
    /// Who must authenticate (Mesos' `--credentials` and `--authenticate_*`).
    pub auth: Auth,
}

/// Mesos' HTTP authentication switches, with the credentials they check against.
#[derive(Clone, Debug, Default)]
pub struct Auth {
    pub credentials: Option<drover_core::auth::Credentials>,
    /// `--authenticate_http_frameworks`: the v1 scheduler API needs HTTP Basic.
    pub frameworks: bool,
    /// `--authenticate_http_readonly`: `/master/state`, `/metrics/snapshot`, the web UI, files.
    pub readonly: bool,
    /// `--authenticate_http_readwrite`: the v1 operator API (`/api/v1`).
    pub readwrite: bool,
    /// `--authenticate_agents`: an agent proves a principal's secret before it may register.
    pub agents: bool,
}

/// Which of Mesos' realms guards a path, if any (`/health`, `/version`, `/redirect` are open).
fn realm_of(auth: &Auth, path: &str) -> Option<&'static str> {
    match path {
        "/api/v1/scheduler" => auth.frameworks.then_some("mesos-master-scheduler"),
        "/api/v1" => auth.readwrite.then_some("mesos-master-readwrite"),
        "/health" | "/master/health" | "/version" | "/redirect" | "/master/redirect" => None,
        _ => auth.readonly.then_some("mesos-master-readonly"),
    }
}

/// The principal an authenticated request proved, kept for the handlers.
#[derive(Clone)]
struct Principal(String);

/// Rejects a request to a guarded path without valid credentials: 401 and nothing else.
async fn authenticate(
    State(auth): State<Arc<Auth>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(realm) = realm_of(&auth, request.uri().path()) {
        let proved = auth
            .credentials
            .as_ref()
            .and_then(|c| c.authenticate(request.headers()));
        match proved {
            Some(principal) => {
                request.extensions_mut().insert(Principal(principal));
            }
            None => return drover_core::auth::unauthorized(realm),
        }
    }
    next.run(request).await
}

/// At most this many registrations are held while a winning master loads its registry (more
/// agents are dropped and retry, as all would without the hold).
const EARLY_REGISTRATIONS: usize = 100_000;

/// What the core task is asked to do.
#[allow(
    clippy::large_enum_variant,
    reason = "inputs are moved once, not stored"
)]
enum Input {
    /// This master won the election and is loading the registry: agents that register now are
    /// held until it leads (Mesos' agents would be dropped and retry after a back-off).
    Winning,
    Elected {
        term: u64,
        registry: BTreeMap<String, RegistryEntry>,
        store: RegistryStore,
    },
    /// Leadership ended: stop acting as leader, then say so through `done`.
    Deposed {
        done: oneshot::Sender<()>,
    },
    AgentRegister {
        conn: u64,
        registration: Registration,
        tx: mpsc::UnboundedSender<MasterMessage>,
    },
    AgentMessage {
        conn: u64,
        message: AgentMessage,
    },
    AgentClosed {
        conn: u64,
    },
    Api {
        call: v1::Call,
        stream_id: Option<String>,
        /// Who sent it, when frameworks must authenticate.
        principal: Option<String>,
        reply: oneshot::Sender<ApiReply>,
    },
    Report {
        kind: ReportKind,
        reply: oneshot::Sender<Option<serde_json::Value>>,
    },
    /// An operator API SUBSCRIBE: the stream's records, or `None` when this master does not lead.
    OperatorSubscribe {
        reply: oneshot::Sender<Option<mpsc::Receiver<Bytes>>>,
    },
}

enum ReportKind {
    State,
    Metrics,
    OperatorState,
}

enum ApiReply {
    NotLeader,
    Failed(ApiError),
    Accepted,
    Subscribed {
        stream_id: String,
        events: mpsc::Receiver<Bytes>,
    },
}

/// Where the registry of agents lives: coord (beside the election group, at `<path>-registry`:
/// pymesos takes the lowest child of the group as the leader whatever its name, so nothing but
/// `json.info_` members may live inside it) or the master's disk.
#[derive(Clone)]
enum RegistryStore {
    Coord {
        client: Client,
        path: String,
        /// The agents whose node exists (loaded or written since).
        stored: BTreeSet<String>,
    },
    Disk(Env),
}

const REGISTRY_FILE: &str = "registry.json";
/// Registry reads (a new leader's) and writes kept in flight at once.
const REGISTRY_READS_IN_FLIGHT: usize = 256;
/// Bytes of registry writes per coord `multi` (coord's packets stop at 1 MiB).
const REGISTRY_MULTI_BYTES: usize = 256 * 1024;
/// Inputs the core takes in one round before it writes the registry.
const INPUTS_PER_ROUND: usize = 1024;

/// One `multi` of registry writes; when coord refuses it (a node that exists, or not, against
/// what `stored` said), each node is written alone.
async fn registry_multi(
    client: &Client,
    batch: Vec<(String, Op)>,
    stored: &mut BTreeSet<String>,
) -> Result<(), String> {
    let ops: Vec<Op> = batch.iter().map(|(_, op)| op.clone()).collect();
    let refused = match client.multi(ops).await {
        Ok(results) => results.iter().any(|r| matches!(r, MultiResult::Error(_))),
        Err(ErrorCode::ConnectionLoss | ErrorCode::SessionExpired) => {
            return Err("registry multi: the coord session was lost".into())
        }
        Err(_) => true,
    };
    for (agent, op) in batch {
        if refused {
            let (Op::SetData { path, data, .. } | Op::Create { path, data, .. }) = op else {
                continue;
            };
            match client.set_data(&path, &data, -1).await {
                Ok(_) => {}
                Err(ErrorCode::NoNode) => client
                    .create(&path, &data, CreateMode::Persistent)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{path}: {e:?}"))?,
                Err(e) => return Err(format!("{path}: {e:?}")),
            }
        }
        stored.insert(agent);
    }
    Ok(())
}

impl RegistryStore {
    async fn load(&mut self) -> Result<BTreeMap<String, RegistryEntry>, String> {
        match self {
            RegistryStore::Coord {
                client,
                path,
                stored,
            } => {
                let dir = format!("{path}-registry");
                client
                    .ensure_path(&dir)
                    .await
                    .map_err(|e| format!("{dir}: {e:?}"))?;
                let mut out = BTreeMap::new();
                let mut names = client
                    .get_children(&dir)
                    .await
                    .map_err(|e| format!("{dir}: {e:?}"))?;
                names.sort();
                stored.clear();
                stored.extend(names.iter().cloned());
                let client = &*client;
                // Many reads in flight on the one session (answered in order): a registry of
                // thousands of agents loads in a few round trips, not one per agent.
                let mut reads = futures_util::stream::iter(names)
                    .map(|name| {
                        let path = format!("{dir}/{name}");
                        async move { (name, client.get_data(&path).await) }
                    })
                    .buffered(REGISTRY_READS_IN_FLIGHT);
                while let Some((name, read)) = reads.next().await {
                    match read {
                        Ok((data, _)) => {
                            if let Ok(entry) = serde_json::from_slice(&data) {
                                out.insert(name, entry);
                            }
                        }
                        Err(ErrorCode::NoNode) => {}
                        Err(e) => return Err(format!("{dir}/{name}: {e:?}")),
                    }
                }
                Ok(out)
            }
            RegistryStore::Disk(env) => match env.disk().read(REGISTRY_FILE).await {
                Ok(Some(bytes)) => {
                    serde_json::from_slice(&bytes).map_err(|e| format!("{REGISTRY_FILE}: {e}"))
                }
                Ok(None) => Ok(BTreeMap::new()),
                Err(e) => Err(format!("{REGISTRY_FILE}: {e}")),
            },
        }
    }

    /// Records `writes`: on coord one node per agent, in `multi`s of up to
    /// `REGISTRY_MULTI_BYTES` (one raft entry for many agents), each node written alone
    /// instead when a `multi` is refused; on disk the whole registry as `all` gives it, once.
    async fn write(
        &mut self,
        writes: &[RegistryWrite],
        all: impl FnOnce() -> BTreeMap<String, RegistryEntry>,
    ) -> Result<(), String> {
        match self {
            RegistryStore::Coord {
                client,
                path,
                stored,
            } => {
                // The last write of each agent.
                let mut last: BTreeMap<&str, &RegistryEntry> = BTreeMap::new();
                for write in writes {
                    last.insert(&write.agent_id, &write.entry);
                }
                let mut batch: Vec<(String, Op)> = Vec::new();
                let mut bytes = 0;
                let total = last.len();
                for (n, (agent, entry)) in last.into_iter().enumerate() {
                    let node = format!("{path}-registry/{agent}");
                    let data = serde_json::to_vec(entry).unwrap_or_default();
                    bytes += node.len() + data.len();
                    let op = if stored.contains(agent) {
                        Op::SetData {
                            path: node,
                            data,
                            version: -1,
                        }
                    } else {
                        Op::Create {
                            path: node,
                            data,
                            acl: client.acl(),
                            flags: 0,
                            opcode: drover_coord::proto::op::CREATE,
                        }
                    };
                    batch.push((agent.to_string(), op));
                    if bytes >= REGISTRY_MULTI_BYTES || n + 1 == total {
                        registry_multi(client, std::mem::take(&mut batch), stored).await?;
                        bytes = 0;
                    }
                }
                Ok(())
            }
            RegistryStore::Disk(env) => {
                let data = serde_json::to_vec(&all()).unwrap_or_default();
                env.disk()
                    .write(REGISTRY_FILE, Bytes::from(data))
                    .await
                    .map_err(|e| e.to_string())?;
                env.disk()
                    .sync(REGISTRY_FILE)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// Shared with the HTTP handlers.
#[derive(Clone)]
struct Shared {
    inputs: mpsc::Sender<Input>,
    info: MasterInfo,
    /// The session used to look the leader up, when electing through coord.
    zk: Option<(Arc<Mutex<Option<Client>>>, String)>,
}

/// Runs a master until `shutdown` resolves.
pub async fn serve(
    env: Env,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listener = env.bind(config.bind).await?;
    let id = {
        let mut rng = env.rng();
        format!(
            "{:08x}-{:04x}-{:04x}",
            rng.next_u32(),
            rng.next_u32() & 0xffff,
            rng.next_u32() & 0xffff
        )
    };
    let info = MasterInfo::new(&id, &config.hostname, config.port);
    let (inputs, receiver) = mpsc::channel(1024);
    let zk_client = Arc::new(Mutex::new(None));
    let (abdicate, abdicate_rx) = mpsc::channel(4);
    let shared = Shared {
        inputs: inputs.clone(),
        info: info.clone(),
        zk: config
            .zk
            .as_ref()
            .map(|zk| (zk_client.clone(), zk.path.clone())),
    };
    let (http_tx, http_rx) = mpsc::channel(64);
    let agent_auth = AgentAuth {
        env: env.clone(),
        credentials: config.auth.credentials.clone(),
        required: config.auth.agents,
        refused: Arc::new(std::sync::atomic::AtomicU64::new(0)),
    };
    drover_core::env::spawn(accept_loop(listener, http_tx, inputs.clone(), agent_auth));
    let router = router(shared);
    let router = router
        .clone()
        .merge(crate::files::router(env.clone(), router))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(config.auth.clone()),
            authenticate,
        ));
    let http = drover_core::env::spawn(async move {
        let listener = drover_core::http::ChannelListener(http_rx, config.bind);
        let _ = drover_core::http::serve_from(listener, router, std::future::pending()).await;
    });
    match &config.zk {
        Some(zk) => {
            drover_core::env::spawn(campaign(
                env.clone(),
                zk.clone(),
                info.clone(),
                inputs.clone(),
                zk_client,
                abdicate_rx,
            ));
        }
        None => {
            let mut store = RegistryStore::Disk(env.clone());
            let registry = store.load().await.map_err(io::Error::other)?;
            let _ = inputs
                .send(Input::Elected {
                    term: 1,
                    registry,
                    store,
                })
                .await;
        }
    }
    drop(inputs);
    core(env, config.tuning, info, receiver, abdicate, shutdown).await;
    http.abort();
    Ok(())
}

/// The core task: the only owner of the master's state.
async fn core(
    env: Env,
    tuning: Tuning,
    info: MasterInfo,
    mut inputs: mpsc::Receiver<Input>,
    abdicate: mpsc::Sender<()>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let start = tokio::time::Instant::now();
    let now = move || start.elapsed().as_millis() as u64;
    let mut leader: Option<(Master, RegistryStore)> = None;
    // Registrations that came while this master, having won, loaded the registry.
    let mut early: Option<Vec<Input>> = None;
    // A step-down taken from the queue in a round, handled after the round's registry writes.
    let mut deposed: Option<Input> = None;
    let mut allocation =
        tokio::time::interval(Duration::from_millis(tuning.allocation_interval_ms.max(1)));
    let mut pings =
        tokio::time::interval(Duration::from_millis(tuning.agent_ping_timeout_ms.max(1)));
    let mut heartbeats =
        tokio::time::interval(Duration::from_millis(tuning.heartbeat_interval_ms.max(1)));
    for timer in [&mut allocation, &mut pings, &mut heartbeats] {
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    }
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            input = inputs.recv() => {
                let Some(input) = input else { break };
                take(&env, &tuning, &info, &mut leader, &mut early, input, now());
                // What else is queued is taken too before the registry is written: the
                // registrations of many agents share one round of writes. A step-down waits
                // for the round's writes (the agents were told they are registered).
                for _ in 0..INPUTS_PER_ROUND {
                    let Ok(input) = inputs.try_recv() else { break };
                    if matches!(input, Input::Deposed { .. }) {
                        deposed = Some(input);
                        break;
                    }
                    take(&env, &tuning, &info, &mut leader, &mut early, input, now());
                }
            }
            _ = allocation.tick() => {
                if let Some((master, _)) = leader.as_mut() {
                    master.tick(now());
                    allocate(master, now());
                }
            }
            _ = pings.tick() => {
                if let Some((master, _)) = leader.as_mut() {
                    master.ping_agents();
                }
            }
            _ = heartbeats.tick() => {
                if let Some((master, _)) = leader.as_mut() {
                    master.heartbeat();
                }
            }
        }
        if let Some((master, store)) = leader.as_mut() {
            if master.take_allocate_soon() {
                allocate(master, now());
            }
            let writes: Vec<RegistryWrite> = master.registry_writes.drain(..).collect();
            if !writes.is_empty() {
                if let Err(e) = store.write(&writes, || master.registry_snapshot()).await {
                    tracing::warn!(error = %e, "registry write failed");
                    env.emit(Event::new("registry_write_failed"));
                    if matches!(store, RegistryStore::Coord { .. }) {
                        // As Mesos' registrar aborts the master: a leader that cannot record
                        // its agents steps down, and the next one starts from the registry.
                        env.emit(Event::new("deposed"));
                        leader = None;
                        let _ = abdicate.try_send(());
                    }
                }
            }
        }
        if let Some(input) = deposed.take() {
            take(&env, &tuning, &info, &mut leader, &mut early, input, now());
        }
    }
}

/// One input for the core: registrations are held while this master, having won, loads the
/// registry, and handled once it leads.
fn take(
    env: &Env,
    tuning: &Tuning,
    info: &MasterInfo,
    leader: &mut Option<(Master, RegistryStore)>,
    early: &mut Option<Vec<Input>>,
    input: Input,
    now_ms: u64,
) {
    match (input, early.as_mut()) {
        (Input::Winning, _) => *early = Some(Vec::new()),
        (input @ Input::AgentRegister { .. }, Some(held))
            if leader.is_none() && held.len() < EARLY_REGISTRATIONS =>
        {
            held.push(input);
        }
        (Input::AgentClosed { conn }, Some(held)) if leader.is_none() => {
            held.retain(|i| !matches!(i, Input::AgentRegister { conn: c, .. } if *c == conn));
        }
        (input @ Input::Elected { .. }, _) => {
            handle(env, tuning, info, leader, input, now_ms);
            for held in early.take().unwrap_or_default() {
                handle(env, tuning, info, leader, held, now_ms);
            }
        }
        (input, _) => {
            if matches!(input, Input::Deposed { .. }) {
                *early = None;
            }
            handle(env, tuning, info, leader, input, now_ms);
        }
    }
}

fn allocate(master: &mut Master, now_ms: u64) {
    let started = tokio::time::Instant::now();
    master.allocate(now_ms);
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    master.counters.allocation_run_ms_last = ms;
    master.counters.allocation_run_ms_total += ms;
}

fn handle(
    env: &Env,
    tuning: &Tuning,
    info: &MasterInfo,
    leader: &mut Option<(Master, RegistryStore)>,
    input: Input,
    now_ms: u64,
) {
    match input {
        // The core loop holds registrations from here until `Elected`.
        Input::Winning => {}
        Input::Elected {
            term,
            registry,
            store,
        } => {
            env.emit(Event::new("leader").with("term", term));
            tracing::info!(term, agents = registry.len(), "elected leading master");
            *leader = Some((
                Master::new(env.clone(), tuning.clone(), info.clone(), registry, now_ms),
                store,
            ));
        }
        Input::Deposed { done } => {
            if leader.take().is_some() {
                env.emit(Event::new("deposed"));
                tracing::warn!("no longer the leading master");
            }
            let _ = done.send(());
        }
        Input::AgentRegister {
            conn,
            registration,
            tx,
        } => {
            // A master that does not lead drops the connection: the agent looks for the leader.
            let Some((master, _)) = leader.as_mut() else {
                return;
            };
            let id = master.admit_id(&registration);
            if let Err(e) = master.agent_registered(conn, &id, &registration, tx.clone(), now_ms) {
                let _ = tx.send(MasterMessage::Refused { reason: e });
            }
        }
        Input::AgentMessage { conn, message } => {
            let Some((master, _)) = leader.as_mut() else {
                return;
            };
            match message {
                AgentMessage::Update(update) => master.agent_update(conn, update),
                AgentMessage::Pong { seq } => master.agent_pong(conn, seq),
                // A second registration on one connection is ignored, and so is an
                // authentication after the registration (the connection's principal is settled).
                AgentMessage::Register(_)
                | AgentMessage::Authenticate { .. }
                | AgentMessage::Proof { .. } => {}
            }
        }
        Input::AgentClosed { conn } => {
            if let Some((master, _)) = leader.as_mut() {
                master.agent_closed(conn);
            }
        }
        Input::Api {
            call,
            stream_id,
            principal,
            reply,
        } => {
            let Some((master, _)) = leader.as_mut() else {
                let _ = reply.send(ApiReply::NotLeader);
                return;
            };
            let answer = if call.kind == CallType::Subscribe {
                let (tx, events): (StreamSender, _) = mpsc::channel(FRAMEWORK_QUEUE);
                match master.subscribe(&call, tx, now_ms) {
                    Ok((_, stream_id)) => ApiReply::Subscribed { stream_id, events },
                    Err(e) => ApiReply::Failed(e),
                }
            } else {
                match master
                    .check_stream(&call, stream_id.as_deref())
                    .and_then(|framework| master.check_principal(&framework, principal.as_deref()))
                    .and_then(|framework| master.call(&framework, call, now_ms))
                {
                    Ok(()) => ApiReply::Accepted,
                    Err(e) => {
                        master.counters.invalid_calls += 1;
                        ApiReply::Failed(e)
                    }
                }
            };
            let _ = reply.send(answer);
        }
        Input::Report { kind, reply } => {
            let report = leader.as_ref().map(|(master, _)| match kind {
                ReportKind::State => master.state_json(env.unix_ms()),
                ReportKind::Metrics => {
                    json!(master.metrics(now_ms.saturating_sub(0) as f64 / 1000.0))
                }
                ReportKind::OperatorState => {
                    json!({"type": "GET_STATE", "get_state": master.operator_state()})
                }
            });
            let _ = reply.send(report);
        }
        Input::OperatorSubscribe { reply } => {
            let stream = leader.as_mut().map(|(master, _)| {
                let (tx, records): (StreamSender, _) = mpsc::channel(4096);
                master.operator_subscribe(tx);
                records
            });
            let _ = reply.send(stream);
        }
    }
}

// ---------------------------------------------------------------- leader election

/// The master's side of the leader campaign (`drover_coord::recipes::campaign` under the
/// `--zk` path, in Mesos' layout).
struct Contender {
    zk: ZkUrl,
    inputs: mpsc::Sender<Input>,
    /// The campaign's session, for leader lookups by the HTTP handlers.
    shared_client: Arc<Mutex<Option<Client>>>,
    abdicate: mpsc::Receiver<()>,
}

impl recipes::Contender for Contender {
    fn session(&mut self, client: &Client) {
        if let Ok(mut slot) = self.shared_client.lock() {
            *slot = Some(client.clone());
        }
    }

    async fn lead(&mut self, client: &Client, term: u64) -> bool {
        // A request to abdicate made under an earlier leadership is spent.
        while self.abdicate.try_recv().is_ok() {}
        let mut store = RegistryStore::Coord {
            client: client.clone(),
            path: self.zk.path.clone(),
            stored: BTreeSet::new(),
        };
        if self.inputs.send(Input::Winning).await.is_err() {
            return false;
        }
        let Ok(registry) = store.load().await else {
            return false;
        };
        let elected = Input::Elected {
            term,
            registry,
            store,
        };
        self.inputs.send(elected).await.is_ok()
    }

    async fn step_down(&mut self) {
        recipes::confirm_step_down(&self.inputs, |done| Input::Deposed { done }).await;
    }

    async fn abdicated(&mut self) {
        recipes::abdication(&mut self.abdicate).await;
    }

    fn finished(&self) -> bool {
        self.inputs.is_closed()
    }
}

/// Campaigns for leadership for as long as the master runs.
async fn campaign(
    env: Env,
    zk: ZkUrl,
    info: MasterInfo,
    inputs: mpsc::Sender<Input>,
    shared_client: Arc<Mutex<Option<Client>>>,
    abdicate: mpsc::Receiver<()>,
) {
    let Ok(config) = zk.client_config(ZkAcl::EveryoneReadCreatorAll) else {
        return;
    };
    let data = serde_json::to_vec(&info).unwrap_or_default();
    let group = zk.path.clone();
    let mut contender = Contender {
        zk,
        inputs,
        shared_client,
        abdicate,
    };
    recipes::campaign(env, config, &group, &data, &mut contender).await;
}

/// The leader's `MasterInfo`, looked up in coord.
async fn lookup_leader(shared: &Shared) -> Option<MasterInfo> {
    let Some((slot, path)) = shared.zk.as_ref() else {
        return Some(shared.info.clone());
    };
    let client = slot.lock().ok()?.clone()?;
    let (_, data) = tokio::time::timeout(IO_TIMEOUT, recipes::leader(&client, path))
        .await
        .ok()?
        .ok()??;
    MasterInfo::decode(&data).ok()
}

// ---------------------------------------------------------------- connections

/// Accepts connections and tells HTTP from agent frames by the first byte.
async fn accept_loop(
    mut listener: Listener,
    http: mpsc::Sender<(Stream, SocketAddr)>,
    inputs: mpsc::Sender<Input>,
    agent_auth: AgentAuth,
) {
    let mut next_conn = 0u64;
    loop {
        let (mut stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        next_conn += 1;
        let conn = next_conn;
        let (http, inputs, agent_auth) = (http.clone(), inputs.clone(), agent_auth.clone());
        drover_core::env::spawn(async move {
            let mut first = [0u8; 1];
            let Ok(Ok(1)) = tokio::time::timeout(IO_TIMEOUT, stream.read(&mut first)).await else {
                return;
            };
            let stream: Stream = Box::new(Prefixed {
                first: Some(first[0]),
                inner: stream,
            });
            if first[0].is_ascii_uppercase() {
                let _ = http.send((stream, addr)).await;
            } else {
                agent_connection(conn, stream, inputs, agent_auth, addr).await;
            }
        });
    }
}

/// How agents authenticate on this master (Mesos' `--authenticate_agents` with `--credentials`).
#[derive(Clone)]
struct AgentAuth {
    env: Env,
    credentials: Option<drover_core::auth::Credentials>,
    /// Whether an agent must authenticate before it registers.
    required: bool,
    /// Failed attempts so far (logged at the 1st, 2nd, 4th...).
    refused: Arc<std::sync::atomic::AtomicU64>,
}

impl AgentAuth {
    /// Runs the challenge for an agent that asked to authenticate as `principal`: a fresh nonce
    /// out, its proof in. The nonce is sent whether the principal is known or not (a stranger
    /// learns nothing about which principals exist).
    async fn challenge(&self, framed: &mut AgentFrames, principal: &str) -> Result<(), String> {
        use base64::Engine as _;
        use drover_core::auth::challenge;
        let nonce = challenge::nonce(&mut *self.env.rng());
        let b64 = base64::engine::general_purpose::STANDARD;
        let challenge_message = MasterMessage::Challenge {
            nonce: b64.encode(&nonce),
        };
        send_within(framed, &challenge_message, IO_TIMEOUT)
            .await
            .map_err(|e| format!("the challenge could not be sent: {e}"))?;
        let answer = match next_within(framed, IO_TIMEOUT).await {
            Ok(AgentMessage::Proof { answer }) => b64.decode(answer).unwrap_or_default(),
            Ok(_) => return Err("expected a proof".into()),
            Err(e) => return Err(format!("no proof: {e}")),
        };
        let secret = self
            .credentials
            .as_ref()
            .and_then(|c| c.secret_of(principal));
        match secret {
            Some(secret)
                if challenge::verify(
                    secret.as_bytes(),
                    drover_core::agent_proto::AGENT_CONTEXT,
                    &nonce,
                    &answer,
                ) =>
            {
                Ok(())
            }
            _ => Err("unknown principal or wrong secret".into()),
        }
    }

    /// Says why an agent is turned away, logs it (sparingly) and records it.
    async fn refuse(&self, framed: &mut AgentFrames, from: SocketAddr, reason: &str) {
        let count = self
            .refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if count.is_power_of_two() {
            tracing::warn!(%from, refused = count, reason, "an agent did not authenticate");
        }
        self.env.emit(
            Event::new("agent_authentication_failed").with("reason", reason.replace(' ', "_")),
        );
        let failed = MasterMessage::AuthenticationFailed {
            reason: reason.to_string(),
        };
        let _ = send_within(framed, &failed, IO_TIMEOUT).await;
    }
}

type AgentFrames = Framed<Stream, FrameCodec>;

/// The agent's registration, after its authentication where it offers or the master requires
/// one; `None`: the connection is to be closed.
async fn admit(
    framed: &mut AgentFrames,
    auth: &AgentAuth,
    from: SocketAddr,
) -> Option<Registration> {
    let mut authenticated = false;
    loop {
        let message = match next_within::<AgentMessage, _>(framed, IO_TIMEOUT).await {
            Ok(message) => Ok(message),
            Err(ExchangeError::Frame(error)) => Err(error),
            Err(_) => return None,
        };
        match message {
            Ok(AgentMessage::Authenticate { principal }) if !authenticated => {
                if auth.credentials.is_none() {
                    auth.refuse(framed, from, "this master has no credentials")
                        .await;
                    return None;
                }
                if let Err(reason) = auth.challenge(framed, &principal).await {
                    auth.refuse(framed, from, &reason).await;
                    return None;
                }
                authenticated = true;
                auth.env
                    .emit(Event::new("agent_authenticated").with("principal", &principal));
                let authenticated_message = MasterMessage::Authenticated { principal };
                send_within(framed, &authenticated_message, IO_TIMEOUT)
                    .await
                    .ok()?;
            }
            Ok(AgentMessage::Register(registration)) => {
                if auth.required && !authenticated {
                    auth.refuse(framed, from, "this master requires agents to authenticate")
                        .await;
                    return None;
                }
                return Some(registration);
            }
            Ok(_) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "bad first frame from an agent");
                return None;
            }
        }
    }
}

/// One agent's connection: its authentication and registration, then messages both ways until
/// either side ends.
async fn agent_connection(
    conn: u64,
    stream: Stream,
    inputs: mpsc::Sender<Input>,
    auth: AgentAuth,
    from: SocketAddr,
) {
    let mut framed = Framed::new(stream, FrameCodec::default());
    let Some(registration) = admit(&mut framed, &auth, from).await else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<MasterMessage>();
    if inputs
        .send(Input::AgentRegister {
            conn,
            registration,
            tx,
        })
        .await
        .is_err()
    {
        return;
    }
    // Writing and reading go on at once: a side that stopped reading while it waited to write
    // could stall against an agent doing the same (a burst of launches one way, status updates
    // the other, both buffers full).
    let (mut sink, mut frames) = framed.split();
    let mut writer = drover_core::env::spawn(async move {
        while let Some(message) = rx.recv().await {
            let Ok(frame) = encode_message(&message) else {
                continue;
            };
            match tokio::time::timeout(IO_TIMEOUT, sink.send(frame)).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
    });
    loop {
        tokio::select! {
            biased;
            _ = &mut writer => break,
            frame = frames.next() => {
                let Some(Ok(frame)) = frame else { break };
                match decode_message::<AgentMessage>(&frame) {
                    Ok(message) => {
                        if inputs.send(Input::AgentMessage { conn, message }).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "bad frame from an agent");
                        break;
                    }
                }
            }
        }
    }
    writer.abort();
    let _ = inputs.send(Input::AgentClosed { conn }).await;
}

/// A stream whose first byte was already read.
struct Prefixed {
    first: Option<u8>,
    inner: Stream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(byte) = self.first {
            if buf.remaining() > 0 {
                buf.put_slice(&[byte]);
                self.first = None;
                return Poll::Ready(Ok(()));
            }
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

// ---------------------------------------------------------------- HTTP

/// Events queued for a framework's stream (an ACCEPT of thousands of tasks on one agent brings
/// as many status updates at once; what does not fit is dropped and comes again with the agent's
/// retry).
const FRAMEWORK_QUEUE: usize = 65_536;

/// The largest v1 call body the master reads (axum's default is 2 MiB; an ACCEPT launching a few
/// thousand tasks on one agent is larger). Bigger bodies get 413.
pub const MAX_CALL_BYTES: usize = 64 << 20;

fn router(shared: Shared) -> axum::Router {
    axum::Router::new()
        .route(
            "/api/v1/scheduler",
            post(scheduler_api).layer(axum::extract::DefaultBodyLimit::max(MAX_CALL_BYTES)),
        )
        .route("/api/v1", post(operator_api))
        .route("/master/state", get(state))
        .route("/master/state.json", get(state))
        .route("/state", get(state))
        .route("/master/redirect", get(redirect))
        .route("/redirect", get(redirect))
        .route("/metrics/snapshot", get(metrics))
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/master/health", get(|| async { StatusCode::OK }))
        .route("/version", get(version))
        .merge(crate::ui::router())
        .with_state(shared)
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

async fn scheduler_api(
    State(shared): State<Shared>,
    principal: Option<axum::Extension<Principal>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if !content_type.starts_with("application/json") {
        return text(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Unsupported Content-Type {content_type:?}; drover speaks application/json"),
        );
    }
    let mut call = match v1::decode_call(&body) {
        Ok(call) => call,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let principal = principal.map(|axum::Extension(Principal(p))| p);
    // An authenticated framework subscribes as its principal (Mesos refuses a FrameworkInfo
    // naming another one, and fills in one that names none).
    if let (Some(principal), Some(subscribe)) = (&principal, call.subscribe.as_mut()) {
        match &subscribe.framework_info.principal {
            Some(named) if named != principal => {
                return text(
                    StatusCode::FORBIDDEN,
                    format!(
                        "Authenticated principal '{principal}' does not match principal '{named}' set in `FrameworkInfo`"
                    ),
                )
            }
            Some(_) => {}
            None => subscribe.framework_info.principal = Some(principal.clone()),
        }
    }
    let stream_id = headers
        .get("mesos-stream-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let (reply, answer) = oneshot::channel();
    if shared
        .inputs
        .send(Input::Api {
            call,
            stream_id,
            principal,
            reply,
        })
        .await
        .is_err()
    {
        return text(StatusCode::SERVICE_UNAVAILABLE, "The master is stopping");
    }
    match answer.await {
        Ok(ApiReply::Accepted) => StatusCode::ACCEPTED.into_response(),
        Ok(ApiReply::Failed(e)) => text(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST),
            e.message,
        ),
        Ok(ApiReply::Subscribed { stream_id, events }) => {
            let body = Body::from_stream(futures_util::stream::unfold(
                events,
                |mut events| async move {
                    let record = events.recv().await?;
                    Some((Ok::<Bytes, io::Error>(record), events))
                },
            ));
            Response::builder()
                .status(StatusCode::OK)
                .header("content-type", "application/json")
                .header("mesos-stream-id", stream_id)
                .body(body)
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Ok(ApiReply::NotLeader) => match lookup_leader(&shared).await {
            Some(leader) if leader.id != shared.info.id => {
                let (host, port) = leader.endpoint();
                Response::builder()
                    .status(StatusCode::TEMPORARY_REDIRECT)
                    .header("location", format!("//{host}:{port}/api/v1/scheduler"))
                    .body(Body::empty())
                    .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
            }
            _ => text(StatusCode::SERVICE_UNAVAILABLE, "No leader elected"),
        },
        Err(_) => text(StatusCode::SERVICE_UNAVAILABLE, "The master is stopping"),
    }
}

/// Mesos' operator API, the calls drover serves: SUBSCRIBE (a RecordIO event stream) and
/// GET_STATE. A master that does not lead redirects to the one that does.
async fn operator_api(State(shared): State<Shared>, body: Bytes) -> Response {
    let call: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(call) => call,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("Failed to parse the call: {e}"),
            )
        }
    };
    let answer = match call["type"].as_str() {
        Some("SUBSCRIBE") => {
            let (reply, answer) = oneshot::channel();
            if shared
                .inputs
                .send(Input::OperatorSubscribe { reply })
                .await
                .is_err()
            {
                return text(StatusCode::SERVICE_UNAVAILABLE, "The master is stopping");
            }
            match answer.await {
                Ok(Some(records)) => {
                    let body = Body::from_stream(futures_util::stream::unfold(
                        records,
                        |mut records| async move {
                            let record = records.recv().await?;
                            Some((Ok::<Bytes, io::Error>(record), records))
                        },
                    ));
                    return Response::builder()
                        .status(StatusCode::OK)
                        .header("content-type", "application/json")
                        .body(body)
                        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
                }
                _ => None,
            }
        }
        Some("GET_STATE") => report(&shared, ReportKind::OperatorState)
            .await
            .map(|state| axum::Json(state).into_response()),
        other => {
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "Unsupported operator call {other:?}: drover serves SUBSCRIBE and GET_STATE"
                ),
            )
        }
    };
    if let Some(answer) = answer {
        return answer;
    }
    match lookup_leader(&shared).await {
        Some(leader) if leader.id != shared.info.id => {
            let (host, port) = leader.endpoint();
            Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header("location", format!("//{host}:{port}/api/v1"))
                .body(Body::empty())
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        _ => text(StatusCode::SERVICE_UNAVAILABLE, "No leader elected"),
    }
}

async fn report(shared: &Shared, kind: ReportKind) -> Option<serde_json::Value> {
    let (reply, answer) = oneshot::channel();
    shared
        .inputs
        .send(Input::Report { kind, reply })
        .await
        .ok()?;
    answer.await.ok()?
}

async fn state(State(shared): State<Shared>) -> Response {
    match report(&shared, ReportKind::State).await {
        Some(state) => axum::Json(state).into_response(),
        None => {
            let leader = lookup_leader(&shared).await;
            axum::Json(json!({
                "version": v1::MESOS_VERSION,
                "id": shared.info.id,
                "pid": shared.info.pid,
                "hostname": shared.info.hostname,
                "leader": leader.as_ref().map(|l| l.pid.clone()),
                "leader_info": leader,
                "activated_slaves": 0,
                "slaves": [],
                "frameworks": [],
                "completed_frameworks": [],
            }))
            .into_response()
        }
    }
}

async fn redirect(State(shared): State<Shared>) -> Response {
    match lookup_leader(&shared).await {
        Some(leader) => {
            let (host, port) = leader.endpoint();
            Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header("location", format!("//{host}:{port}"))
                .body(Body::empty())
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        None => text(StatusCode::SERVICE_UNAVAILABLE, "No leader elected"),
    }
}

async fn metrics(State(shared): State<Shared>) -> Response {
    match report(&shared, ReportKind::Metrics).await {
        Some(m) => axum::Json(m).into_response(),
        None => axum::Json(json!({"master/elected": 0.0})).into_response(),
    }
}

async fn version() -> Response {
    axum::Json(json!({
        "version": v1::MESOS_VERSION,
        "build_user": "drover",
        "git_sha": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}
