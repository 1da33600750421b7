//! The scheduler daemon: the `/v2` HTTP API, leader election through coord, the store (one
//! znode per app, group, deployment, instance and app version under the `--zk` path), and the
//! core task that owns the leading scheduler's state ([`crate::core::Scheduler`]) and is a
//! framework on the master's v1 API through drover's client.
//!
//! Everything goes through the Env, so the same code runs live and in simulation.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_coord::client::Client;
use drover_coord::proto::{Acl, ErrorCode, MultiResult, Op};
use drover_coord::recipes;
use drover_coord::url::{ZkAcl, ZkUrl};
use drover_core::v1::{self, CallType, EventType, FrameworkInfo, Id};
use drover_core::{Env, Event};
use drover_master::client::{Driver, DriverEvent, Locator};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::core::{keys, Effects, Instance, Loaded, Scheduler, StoreOp, Tuning};
use crate::path::PathId;

/// Marathon's HTTP port.
pub const DEFAULT_PORT: u16 = 8080;
/// After (re-)subscribing, nothing launches until reconciliation has had time to answer.
const RECONCILE_WAIT_MS: u64 = 3_000;
/// Bytes of store operations per coord `multi` (coord's packets stop at 1 MiB).
const MULTI_BYTES: usize = 256 * 1024;
/// Status updates handled (and stored) together at most.
const UPDATE_BATCH: usize = 256;
const STORE_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Clone, Debug)]
pub struct Config {
    pub bind: SocketAddr,
    /// The host name others reach this scheduler by.
    pub hostname: String,
    pub port: u16,
    /// Where the master is: `zk://...` or `host:port`.
    pub master: Locator,
    /// `zk://HOSTS/PATH` of the scheduler's own state and election.
    pub zk: ZkUrl,
    pub framework_name: String,
    pub tuning: Tuning,
    /// Marathon's `--http_credentials` and `--http_realm`: when set, every request but
    /// `GET /ping` must carry them (HTTP Basic).
    pub http_auth: Option<HttpAuth>,
    /// Marathon's `--mesos_authentication_principal` and the secret of
    /// `--mesos_authentication_secret_file`: how the scheduler proves itself to the master.
    pub mesos_auth: Option<drover_core::auth::Credential>,
}

/// Who may call the REST API, and the realm named in the 401 challenge.
#[derive(Clone, Debug)]
pub struct HttpAuth {
    pub credentials: drover_core::auth::Credentials,
    pub realm: String,
}

/// A reply to an API request.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Value,
}

impl Reply {
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body,
        }
    }

    pub fn error(e: crate::validation::ApiError) -> Reply {
        Reply::json(e.status, e.body)
    }
}

/// What an API request does on the leader's state.
pub type ApiFn = Box<dyn FnOnce(&mut Scheduler, &mut Effects, u64) -> Reply + Send>;

#[allow(clippy::large_enum_variant, reason = "moved once, not stored")]
pub(crate) enum Input {
    Elected {
        term: u64,
        store: Store,
        loaded: Loaded,
    },
    /// Leadership ended: stop acting as leader, then say so through `done`.
    Deposed {
        done: oneshot::Sender<()>,
    },
    Api {
        f: ApiFn,
        reply: oneshot::Sender<Option<Reply>>,
    },
    Abdicate,
}

/// Shared with the HTTP handlers.
#[derive(Clone)]
pub struct Shared {
    pub(crate) inputs: mpsc::Sender<Input>,
    pub env: Env,
    pub config: Config,
    pub events: broadcast::Sender<(String, Value)>,
    /// Who leads (`host:port`), as last seen.
    pub leader: Arc<Mutex<Option<String>>>,
}

impl Shared {
    /// Runs `f` on the leader's state; None when this scheduler does not lead.
    pub async fn run(&self, f: ApiFn) -> Option<Reply> {
        let (reply, answer) = oneshot::channel();
        self.inputs.send(Input::Api { f, reply }).await.ok()?;
        answer.await.ok().flatten()
    }

    pub fn me(&self) -> String {
        format!("{}:{}", self.config.hostname, self.config.port)
    }

    pub fn leader(&self) -> Option<String> {
        self.leader.lock().ok().and_then(|l| l.clone())
    }

    pub async fn abdicate(&self) {
        let _ = self.inputs.send(Input::Abdicate).await;
    }
}

struct Leading {
    scheduler: Scheduler,
    store: Store,
    outbox: Outbox,
    driver_events: mpsc::Receiver<DriverEvent>,
    ready_at: Option<u64>,
    last_reconcile: u64,
    /// A driver event taken while batching updates, handled next.
    pending: Option<DriverEvent>,
}

/// The core task: the only owner of the scheduler's state.
pub(crate) async fn core(
    env: Env,
    config: Config,
    mut inputs: mpsc::Receiver<Input>,
    events: broadcast::Sender<(String, Value)>,
    abdicate: mpsc::Sender<()>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let start = tokio::time::Instant::now();
    let now = move || start.elapsed().as_millis() as u64;
    let mut leading: Option<Leading> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    // Health probe answers: (task, check index, result).
    let (probes_tx, mut probes) = mpsc::channel::<(String, usize, Result<(), String>)>(1024);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let mut fx = Effects::default();
        tokio::select! {
            biased;
            _ = &mut shutdown => break,
            input = inputs.recv() => {
                let Some(input) = input else { break };
                match input {
                    Input::Elected { term, store, loaded } => {
                        env.emit(Event::new("leader").with("term", term));
                        tracing::info!(apps = loaded.root.transitive_apps().len(), instances = loaded.instances.len(), "elected leading scheduler");
                        let scheduler = Scheduler::new(env.clone(), config.tuning.clone(), loaded, now());
                        let info = FrameworkInfo {
                            user: "root".into(),
                            name: config.framework_name.clone(),
                            id: store.framework_id.clone().map(Id::new),
                            failover_timeout: Some(604_800.0),
                            hostname: Some(config.hostname.clone()),
                            webui_url: Some(format!("http://{}:{}", config.hostname, config.port)),
                            capabilities: vec![v1::Capability { kind: "PARTITION_AWARE".into() }],
                            principal: config.mesos_auth.as_ref().map(|c| c.principal.clone()),
                            ..FrameworkInfo::default()
                        };
                        let secret = config.mesos_auth.as_ref().map(|c| c.secret.as_str());
                        let (driver, driver_events) = Driver::start_authenticated(env.clone(), config.master.clone(), info, secret);
                        let outbox = Outbox::start(driver);
                        leading = Some(Leading { scheduler, store, outbox, driver_events, ready_at: None, last_reconcile: now(), pending: None });
                    }
                    Input::Deposed { done } => {
                        if leading.take().is_some() {
                            env.emit(Event::new("deposed"));
                            tracing::warn!("no longer the leading scheduler");
                        }
                        let _ = done.send(());
                    }
                    Input::Abdicate => {
                        if leading.take().is_some() {
                            env.emit(Event::new("deposed"));
                            let _ = abdicate.try_send(());
                        }
                    }
                    Input::Api { f, reply } => {
                        let Some(l) = leading.as_mut() else {
                            let _ = reply.send(None);
                            continue;
                        };
                        let answer = f(&mut l.scheduler, &mut fx, now());
                        l.scheduler.converge(now(), &mut fx);
                        if !finish(&env, &mut leading, fx, &events).await {
                            let _ = reply.send(Some(Reply::json(503, json!({"message": "the scheduler lost its store; try again"}))));
                            let _ = abdicate.try_send(());
                            continue;
                        }
                        let _ = reply.send(Some(answer));
                        continue;
                    }
                }
            }
            event = async {
                match leading.as_mut() {
                    Some(l) => match l.pending.take() {
                        Some(event) => Some(event),
                        None => l.driver_events.recv().await,
                    },
                    None => std::future::pending().await,
                }
            } => {
                let Some(l) = leading.as_mut() else { continue };
                let Some(event) = event else { continue };
                match event {
                    DriverEvent::Subscribed { framework_id, master } => {
                        env.emit(Event::new("subscribed"));
                        l.scheduler.master = Some(master);
                        if l.store.framework_id.as_deref() != Some(framework_id.as_str()) {
                            fx.store.push(StoreOp::Put { key: "framework-id".into(), data: framework_id.clone().into_bytes() });
                            l.store.framework_id = Some(framework_id.clone());
                        }
                        l.scheduler.framework_id = Some(framework_id);
                        l.scheduler.launch_ready = false;
                        l.ready_at = Some(now() + RECONCILE_WAIT_MS);
                        fx.calls.extend(l.scheduler.reconcile_calls(now()));
                        l.last_reconcile = now();
                    }
                    DriverEvent::Disconnected => {
                        l.scheduler.launch_ready = false;
                    }
                    DriverEvent::Event(event) => match event.kind {
                        EventType::Update => {
                            if let Some(update) = event.update {
                                // The updates already waiting are taken together: one store
                                // write for all of them.
                                let mut statuses = vec![update.status];
                                while statuses.len() < UPDATE_BATCH {
                                    match l.driver_events.try_recv() {
                                        Ok(DriverEvent::Event(e)) if e.kind == EventType::Update && e.update.is_some() => {
                                            if let Some(u) = e.update {
                                                statuses.push(u.status);
                                            }
                                        }
                                        Ok(other) => {
                                            l.pending = Some(other);
                                            break;
                                        }
                                        Err(_) => break,
                                    }
                                }
                                for status in &statuses {
                                    l.scheduler.update(status, now(), &mut fx);
                                }
                                l.scheduler.converge(now(), &mut fx);
                                // Stored before acknowledged: an update is never lost.
                                if !finish(&env, &mut leading, fx, &events).await {
                                    let _ = abdicate.try_send(());
                                    continue;
                                }
                                if let Some(l) = leading.as_ref() {
                                    for status in &statuses {
                                        l.outbox.send(Outgoing::Acknowledge(status.clone()));
                                    }
                                }
                                continue;
                            }
                        }
                        EventType::Offers => {
                            let offers = event.offers.map(|o| o.offers).unwrap_or_default();
                            let decisions = l.scheduler.offers(&offers, now());
                            // Instances are stored before the ACCEPTs launch them: the whole
                            // event's in as few `multi`s as fit, not one round trip per offer.
                            let ops: Vec<StoreOp> = decisions
                                .iter()
                                .flat_map(|(ops, _)| ops.iter().cloned())
                                .collect();
                            if !ops.is_empty() && l.store.apply(&ops).await.is_err() {
                                env.emit(Event::new("store_failed"));
                                env.emit(Event::new("deposed"));
                                leading = None;
                                let _ = abdicate.try_send(());
                                continue;
                            }
                            for (_, call) in decisions {
                                l.outbox.send(Outgoing::Call(call));
                            }
                            continue;
                        }
                        _ => {}
                    },
                }
            }
            probe = probes.recv() => {
                let Some((task, index, result)) = probe else { continue };
                let Some(l) = leading.as_mut() else { continue };
                l.scheduler.health_result(&task, index, result, now(), &mut fx);
                l.scheduler.converge(now(), &mut fx);
            }
            _ = tick.tick() => {
                let Some(l) = leading.as_mut() else { continue };
                let t = now();
                for probe in l.scheduler.due_probes(t) {
                    let (env, tx) = (env.clone(), probes_tx.clone());
                    drover_core::env::spawn(async move {
                        let result = crate::health::probe(&env, &probe.check, &probe.host, &probe.ports).await;
                        let _ = tx.send((probe.task_id, probe.index, result)).await;
                    });
                }
                if l.ready_at.is_some_and(|at| t >= at) {
                    l.ready_at = None;
                    l.scheduler.launch_ready = true;
                    // Offers refused while waiting for reconciliation are wanted again.
                    fx.calls.push(crate::core::bare(CallType::Revive));
                }
                if t >= l.last_reconcile + l.scheduler.tuning.reconcile_interval_ms {
                    l.last_reconcile = t;
                    fx.calls.push(crate::core::bare(CallType::Reconcile));
                }
                l.scheduler.expire_launches(t, &mut fx);
                l.scheduler.retry_kills(t, &mut fx);
                l.scheduler.repeat_revive(t, &mut fx);
                l.scheduler.retry_reconciliation(t, &mut fx);
                l.scheduler.converge(t, &mut fx);
            }
        }
        if !finish(&env, &mut leading, fx, &events).await {
            let _ = abdicate.try_send(());
        }
    }
}

/// What the leader sends the master.
#[allow(
    clippy::large_enum_variant,
    reason = "moved once through a channel, not stored"
)]
enum Outgoing {
    Call(v1::Call),
    Acknowledge(v1::TaskStatus),
}

/// The leader's calls to the master, made in order by a task of their own, so the core never
/// waits on the master: a call across a partition would hold it for the HTTP timeout, deaf to
/// its own step-down while a successor takes over. Dropped with the leadership, and with it the
/// calls not yet made: a deposed scheduler sends nothing more.
impl Outgoing {
    /// Whether it may be sent alongside its neighbours in any order.
    fn commutes(&self) -> bool {
        match self {
            Outgoing::Acknowledge(_) => true,
            Outgoing::Call(call) => matches!(call.kind, CallType::Accept | CallType::Decline),
        }
    }

    /// Sends it; a DECLINE that may not have reached the master comes back, to be sent again
    /// without its filter (a REVIVE sent meanwhile must not be undone by an old filter: the
    /// offer comes back and is answered afresh). Declining twice is harmless (the master
    /// ignores an offer it no longer has), while an offer whose answer was lost stays with this
    /// framework until it subscribes again, whatever it REVIVEs. An ACCEPT is never sent twice
    /// (the agent's resources may be in use by then); an ACKNOWLEDGE lost is made good by the
    /// agent, which resends its update.
    async fn send(self, driver: &Driver) -> Option<Outgoing> {
        match self {
            Outgoing::Call(call) => {
                let again = (call.kind == CallType::Decline).then(|| {
                    let mut again = call.clone();
                    if let Some(decline) = again.decline.as_mut() {
                        decline.filters = Some(v1::Filters {
                            refuse_seconds: Some(0.0),
                        });
                    }
                    again
                });
                match driver.call(call).await {
                    Err(drover_master::client::CallError::Http(_)) => again.map(Outgoing::Call),
                    _ => None,
                }
            }
            Outgoing::Acknowledge(status) => {
                let _ = driver.acknowledge(&status).await;
                None
            }
        }
    }
}

/// The DECLINEs of a run as one call per filter (a DECLINE names any number of offers).
fn merge_declines(run: Vec<Outgoing>) -> Vec<Outgoing> {
    let mut out = Vec::new();
    let mut declines: BTreeMap<Option<u64>, v1::Call> = BTreeMap::new();
    for outgoing in run {
        match outgoing {
            Outgoing::Call(v1::Call {
                kind: CallType::Decline,
                decline: Some(decline),
                ..
            }) => {
                let filter = decline
                    .filters
                    .as_ref()
                    .and_then(|f| f.refuse_seconds)
                    .map(f64::to_bits);
                let merged = declines.entry(filter).or_insert_with(|| {
                    let mut call = crate::core::bare(CallType::Decline);
                    call.decline = Some(v1::Decline {
                        offer_ids: Vec::new(),
                        filters: decline.filters.clone(),
                    });
                    call
                });
                if let Some(d) = merged.decline.as_mut() {
                    d.offer_ids.extend(decline.offer_ids);
                }
            }
            other => out.push(other),
        }
    }
    out.extend(declines.into_values().map(Outgoing::Call));
    out
}

/// Queued calls the outbox looks at in one round, and calls it keeps in flight at once (each on
/// a kept-alive connection of the driver's pool: one at a time, a simulated launch over 1,000
/// agents could not keep up; 32 made a live 1,000-instance launch on 2 cores 1.5x slower than 4).
const OUTBOX_ROUND: usize = 4096;
const CALLS_IN_FLIGHT: usize = 4;
/// A DECLINE that may not have reached the master is sent again after this long.
const DECLINE_RETRY: Duration = Duration::from_secs(1);

struct Outbox {
    calls: mpsc::UnboundedSender<Outgoing>,
    task: tokio::task::JoinHandle<()>,
}

impl Outbox {
    fn start(driver: Driver) -> Outbox {
        let (calls, mut queue) = mpsc::unbounded_channel();
        let again = calls.clone();
        let task = drover_core::env::spawn(async move {
            while let Some(first) = queue.recv().await {
                let mut queued: Vec<Outgoing> = vec![first];
                while queued.len() < OUTBOX_ROUND {
                    let Ok(next) = queue.try_recv() else { break };
                    queued.push(next);
                }
                // Runs of calls whose order does not matter (ACCEPT, DECLINE, ACKNOWLEDGE) go
                // out together, many in flight, the DECLINEs of one filter as one call; any
                // other call (REVIVE, SUPPRESS, KILL, RECONCILE...) waits for what was queued
                // before it and goes alone.
                let mut queued = queued.into_iter().peekable();
                let mut unsent: Vec<Outgoing> = Vec::new();
                while let Some(next) = queued.next() {
                    if !next.commutes() {
                        unsent.extend(next.send(&driver).await);
                        continue;
                    }
                    let mut run = vec![next];
                    while let Some(more) = queued.next_if(Outgoing::commutes) {
                        run.push(more);
                    }
                    let failed: Vec<Outgoing> = futures_util::stream::iter(merge_declines(run))
                        .map(|outgoing| {
                            let driver = driver.clone();
                            async move { outgoing.send(&driver).await }
                        })
                        .buffer_unordered(CALLS_IN_FLIGHT)
                        .filter_map(|failed| async move { failed })
                        .collect()
                        .await;
                    unsent.extend(failed);
                }
                if !unsent.is_empty() {
                    let again = again.clone();
                    drover_core::env::spawn(async move {
                        tokio::time::sleep(DECLINE_RETRY).await;
                        for outgoing in unsent {
                            let _ = again.send(outgoing);
                        }
                    });
                }
            }
        });
        Outbox { calls, task }
    }

    fn send(&self, outgoing: Outgoing) {
        let _ = self.calls.send(outgoing);
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Stores, then sends and publishes. False when the store failed (the scheduler steps down).
async fn finish(
    env: &Env,
    leading: &mut Option<Leading>,
    fx: Effects,
    events: &broadcast::Sender<(String, Value)>,
) -> bool {
    let Some(l) = leading.as_mut() else {
        return true;
    };
    if let Err(e) = l.store.apply(&fx.store).await {
        tracing::error!(error = %e, "store write failed: stepping down");
        env.emit(Event::new("store_failed"));
        // It leads no more: say so, or the next leader would look like a second one.
        env.emit(Event::new("deposed"));
        *leading = None;
        return false;
    }
    for call in fx.calls {
        l.outbox.send(Outgoing::Call(call));
    }
    for event in fx.events {
        let _ = events.send(event);
    }
    true
}

// ---------------------------------------------------------------- leader election

/// The scheduler's side of the leader campaign (`drover_coord::recipes::campaign` under
/// `<path>/leader`); keeps `leader` (who leads, `host:port`) current.
struct Contender {
    me: String,
    zk_path: String,
    inputs: mpsc::Sender<Input>,
    leader: Arc<Mutex<Option<String>>>,
    abdicate: mpsc::Receiver<()>,
}

impl Contender {
    fn set_leader(&self, who: Option<String>) {
        if let Ok(mut l) = self.leader.lock() {
            *l = who;
        }
    }
}

impl recipes::Contender for Contender {
    async fn lead(&mut self, client: &Client, term: u64) -> bool {
        // A request to abdicate made under an earlier leadership is spent.
        while self.abdicate.try_recv().is_ok() {}
        self.set_leader(Some(self.me.clone()));
        let (store, loaded) = match Store::load(client.clone(), &self.zk_path).await {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!(error = %e, "cannot load the scheduler's state");
                return false;
            }
        };
        let elected = Input::Elected {
            term,
            store,
            loaded,
        };
        self.inputs.send(elected).await.is_ok()
    }

    async fn follow(&mut self, client: &Client, leader: &str) {
        let who = client
            .get_data(leader)
            .await
            .ok()
            .map(|(d, _)| String::from_utf8_lossy(&d).into_owned());
        self.set_leader(who);
    }

    async fn step_down(&mut self) {
        recipes::confirm_step_down(&self.inputs, |done| Input::Deposed { done }).await;
        self.set_leader(None);
    }

    async fn abdicated(&mut self) {
        recipes::abdication(&mut self.abdicate).await;
    }

    fn finished(&self) -> bool {
        self.inputs.is_closed()
    }
}

/// Campaigns for leadership for as long as the scheduler runs.
pub(crate) async fn campaign(
    env: Env,
    config: Config,
    inputs: mpsc::Sender<Input>,
    leader: Arc<Mutex<Option<String>>>,
    abdicate: mpsc::Receiver<()>,
) {
    let Ok(client_config) = config.zk.client_config(ZkAcl::CreatorAll) else {
        return;
    };
    let me = format!("{}:{}", config.hostname, config.port);
    let group = format!("{}/leader", config.zk.path);
    let mut contender = Contender {
        me: me.clone(),
        zk_path: config.zk.path.clone(),
        inputs,
        leader,
        abdicate,
    };
    recipes::campaign(env, client_config, &group, me.as_bytes(), &mut contender).await;
}

/// Who leads, by asking coord (for `/v2/leader` on a follower whose view may be stale).
pub async fn lookup_leader(env: &Env, zk: &ZkUrl) -> Option<String> {
    let client = Client::start(env.clone(), zk.client_config(ZkAcl::CreatorAll).ok()?);
    let out = tokio::time::timeout(STORE_TIMEOUT, async {
        client.wait_connected().await.ok()?;
        let (_, data) = recipes::leader(&client, &format!("{}/leader", zk.path))
            .await
            .ok()??;
        Some(String::from_utf8_lossy(&data).into_owned())
    })
    .await
    .ok()
    .flatten();
    client.close().await;
    out
}

mod store;

pub use store::{read_app_version, Store};

#[cfg(test)]
mod tests {
    use super::*;

    fn decline(offer: &str, refuse_seconds: f64) -> Outgoing {
        let mut call = crate::core::bare(CallType::Decline);
        call.decline = Some(v1::Decline {
            offer_ids: vec![Id::new(offer)],
            filters: Some(v1::Filters {
                refuse_seconds: Some(refuse_seconds),
            }),
        });
        Outgoing::Call(call)
    }

    #[test]
    fn the_declines_of_a_run_go_as_one_call_per_filter_and_the_rest_as_they_were() {
        let mut accept = crate::core::bare(CallType::Accept);
        accept.accept = Some(v1::Accept {
            offer_ids: vec![Id::new("o2")],
            operations: Vec::new(),
            filters: None,
        });
        let run = vec![
            decline("o1", 5.0),
            Outgoing::Call(accept),
            decline("o3", 120.0),
            decline("o4", 5.0),
        ];
        assert!(run.iter().all(Outgoing::commutes));
        let merged = merge_declines(run);
        let shape: Vec<(CallType, Vec<String>, Option<f64>)> = merged
            .iter()
            .map(|o| match o {
                Outgoing::Call(call) => {
                    let (ids, filters) = match (&call.accept, &call.decline) {
                        (Some(a), _) => (&a.offer_ids, &a.filters),
                        (_, Some(d)) => (&d.offer_ids, &d.filters),
                        _ => panic!("neither accept nor decline"),
                    };
                    (
                        call.kind,
                        ids.iter().map(|i| i.value.clone()).collect(),
                        filters.as_ref().and_then(|f| f.refuse_seconds),
                    )
                }
                Outgoing::Acknowledge(_) => panic!("no acknowledgement here"),
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                (CallType::Accept, vec!["o2".to_string()], None),
                (CallType::Decline, vec!["o1".into(), "o4".into()], Some(5.0)),
                (CallType::Decline, vec!["o3".into()], Some(120.0)),
            ]
        );
        // A revive is not sent alongside others: it waits for what was queued before it.
        assert!(!Outgoing::Call(crate::core::bare(CallType::Revive)).commutes());
    }
}
