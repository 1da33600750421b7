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

mod agents;
mod http_api;
mod registry;

use agents::{accept_loop, AgentAuth};
use http_api::{authenticate, router};
use registry::RegistryStore;

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

/// Inputs the core takes in one round before it writes the registry.
const INPUTS_PER_ROUND: usize = 1024;

/// Events queued for a framework's stream (an ACCEPT of thousands of tasks on one agent brings
/// as many status updates at once; what does not fit is dropped and comes again with the agent's
/// retry).
const FRAMEWORK_QUEUE: usize = 65_536;

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
    let agent_auth = AgentAuth::new(&env, &config.auth);
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
