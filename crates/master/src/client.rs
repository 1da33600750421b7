//! A client of the Mesos v1 scheduler HTTP API over the Env: the framework side.
//!
//! [`Driver::start`] finds the leading master (`HOST:PORT`, or `zk://HOSTS/PATH` through coord),
//! subscribes, follows 307 redirects, reads the RecordIO event stream and subscribes again (with
//! its framework id) when the stream ends or stays silent for three heartbeat intervals. Events go
//! to the application in order; a status update the application already received (the same uuid,
//! sent again after a master failover or a new stream) is acknowledged again but not delivered
//! twice. Calls go to the master the stream is on, with its `Mesos-Stream-Id`.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use drover_coord::client::{Client, WatchFuture};
use drover_coord::recipes;
use drover_core::recordio;
use drover_core::v1::{self, Call, CallType, Event, EventType, FrameworkInfo, Id, MasterInfo};
use drover_core::{Env, Event as NodeEvent};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rand::RngCore;
use tokio::sync::mpsc;

use drover_coord::url::ZkUrl;

/// Where the master is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Locator {
    Direct(String, u16),
    Zk(ZkUrl),
}

impl std::fmt::Display for Locator {
    /// As given, but a zk:// URL's password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Locator::Direct(host, port) => write!(f, "{host}:{port}"),
            Locator::Zk(url) => write!(f, "{url}"),
        }
    }
}

impl FromStr for Locator {
    type Err = String;

    fn from_str(text: &str) -> Result<Locator, String> {
        if text.starts_with("zk://") {
            return text.parse().map(Locator::Zk);
        }
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?}: expected HOST:PORT or zk://HOSTS/PATH"))?;
        let port = port
            .parse()
            .map_err(|_| format!("{text:?}: the port must be a number"))?;
        Ok(Locator::Direct(host.to_string(), port))
    }
}

/// What the application receives.
#[derive(Clone, Debug, PartialEq)]
pub enum DriverEvent {
    /// A stream is open (the first time, or again after a failover).
    Subscribed {
        framework_id: String,
        /// The master the stream is on (`host:port`).
        master: String,
    },
    Event(Box<Event>),
    /// The stream ended; the driver is subscribing again.
    Disconnected,
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("not subscribed")]
    NotSubscribed,
    #[error("{0}")]
    Http(#[from] drover_core::http::HttpError),
    #[error("the master answered {status}: {message}")]
    Refused { status: u16, message: String },
}

#[derive(Default)]
struct Session {
    framework_id: Option<String>,
    /// The master the stream is on, and the stream's id.
    stream: Option<((String, u16), String)>,
    /// The latest uuid the application acknowledged per task.
    acked: BTreeMap<String, String>,
}

/// A framework's connection to the master. Cheap to clone.
#[derive(Clone)]
pub struct Driver {
    env: Env,
    session: Arc<Mutex<Session>>,
    /// Calls reuse their connections to the master (keep-alive).
    pool: drover_core::http::Pool,
    /// HTTP Basic for a master that authenticates frameworks (the principal and its secret).
    authorization: Option<http::HeaderValue>,
}

const TIMEOUT: Duration = Duration::from_secs(10);

impl Driver {
    /// Starts subscribing as `info` (with `info.id` set, as that framework again).
    pub fn start(
        env: Env,
        locator: Locator,
        info: FrameworkInfo,
    ) -> (Driver, mpsc::Receiver<DriverEvent>) {
        Driver::start_authenticated(env, locator, info, None)
    }

    /// [`Driver::start`], proving `info.principal` with `secret` on every request (a master
    /// started with `--authenticate-http-frameworks` requires it).
    pub fn start_authenticated(
        env: Env,
        locator: Locator,
        info: FrameworkInfo,
        secret: Option<&str>,
    ) -> (Driver, mpsc::Receiver<DriverEvent>) {
        let authorization = match (&info.principal, secret) {
            (Some(principal), Some(secret)) => {
                Some(drover_core::auth::authorization(principal, secret))
            }
            _ => None,
        };
        let session = Arc::new(Mutex::new(Session {
            framework_id: info.id.as_ref().map(|i| i.value.clone()),
            stream: None,
            acked: BTreeMap::new(),
        }));
        let driver = Driver {
            env: env.clone(),
            session,
            pool: drover_core::http::Pool::new(),
            authorization,
        };
        let (events, receiver) = mpsc::channel(1024);
        drover_core::env::spawn(run(driver.clone(), locator, info, events));
        (driver, receiver)
    }

    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn framework_id(&self) -> Option<String> {
        self.session().framework_id.clone()
    }

    /// Sends a call on the current stream (its `framework_id` is filled in).
    pub async fn call(&self, mut call: Call) -> Result<(), CallError> {
        let (endpoint, stream_id, framework_id) = {
            let session = self.session();
            let Some((endpoint, stream_id)) = session.stream.clone() else {
                return Err(CallError::NotSubscribed);
            };
            (endpoint, stream_id, session.framework_id.clone())
        };
        call.framework_id = framework_id.map(Id::new);
        let body = serde_json::to_vec(&call).unwrap_or_default();
        let mut request = Request::post("/api/v1/scheduler")
            .header("content-type", "application/json")
            .header("mesos-stream-id", stream_id);
        if let Some(authorization) = &self.authorization {
            request = request.header(http::header::AUTHORIZATION, authorization);
        }
        let request = request
            .body(Bytes::from(body))
            .map_err(|e| CallError::Refused {
                status: 0,
                message: e.to_string(),
            })?;
        let response = self
            .pool
            .request(&self.env, &endpoint.0, endpoint.1, request, TIMEOUT)
            .await?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(CallError::Refused {
                status: response.status().as_u16(),
                message: String::from_utf8_lossy(response.body()).into_owned(),
            })
        }
    }

    /// A call of `kind` with nothing else in it.
    pub fn bare(kind: CallType) -> Call {
        Call {
            framework_id: None,
            kind,
            subscribe: None,
            accept: None,
            decline: None,
            revive: None,
            suppress: None,
            kill: None,
            acknowledge: None,
            reconcile: None,
        }
    }

    /// Acknowledges a status update (those without a uuid need none).
    pub async fn acknowledge(&self, status: &v1::TaskStatus) -> Result<(), CallError> {
        let (Some(uuid), Some(agent)) = (status.uuid.clone(), status.agent_id.clone()) else {
            return Ok(());
        };
        self.session()
            .acked
            .insert(status.task_id.value.clone(), uuid.clone());
        let mut call = Driver::bare(CallType::Acknowledge);
        call.acknowledge = Some(v1::Acknowledge {
            agent_id: agent,
            task_id: status.task_id.clone(),
            uuid,
        });
        self.call(call).await
    }
}

/// Finds the leading master's HTTP endpoint; through coord, also a watch that fires when that
/// master's election node goes (a new master leads).
async fn find_master(
    locator: &Locator,
    zk: &mut Option<Client>,
    env: &Env,
) -> Option<((String, u16), Option<WatchFuture>)> {
    match locator {
        Locator::Direct(host, port) => Some(((host.clone(), *port), None)),
        Locator::Zk(url) => {
            if zk.as_ref().is_none_or(|c| c.state().is_final()) {
                let config = url.client_config(drover_coord::url::ZkAcl::Open).ok()?;
                *zk = Some(Client::start(env.clone(), config));
            }
            let client = zk.as_ref()?;
            tokio::time::timeout(TIMEOUT, client.wait_connected())
                .await
                .ok()?
                .ok()?;
            let (name, data) = tokio::time::timeout(TIMEOUT, recipes::leader(client, &url.path))
                .await
                .ok()?
                .ok()??;
            let info = MasterInfo::decode(&data).ok()?;
            let node = format!("{}/{name}", url.path);
            let watch = match client.exists_watch(&node).await {
                Ok((Some(_), watch)) => Some(watch),
                _ => return None,
            };
            Some((info.endpoint(), watch))
        }
    }
}

async fn run(
    driver: Driver,
    locator: Locator,
    mut info: FrameworkInfo,
    events: mpsc::Sender<DriverEvent>,
) {
    let mut zk = None;
    let mut backoff = Duration::from_millis(500);
    // The latest uuid delivered per task: a repeat is acknowledged but not delivered again.
    let mut delivered: BTreeMap<String, String> = BTreeMap::new();
    let mut redirect: Option<(String, u16)> = None;
    loop {
        if events.is_closed() {
            return;
        }
        let found = match redirect.take() {
            Some(endpoint) => Some((endpoint, None)),
            None => find_master(&locator, &mut zk, &driver.env).await,
        };
        if let Some((endpoint, leader_gone)) = found {
            info.id = driver.framework_id().map(Id::new);
            match subscribe(
                &driver,
                &endpoint,
                &info,
                &events,
                &mut delivered,
                leader_gone,
            )
            .await
            {
                Outcome::Redirect(to) => {
                    redirect = Some(to);
                    continue;
                }
                Outcome::Streamed => {
                    backoff = Duration::from_millis(500);
                    driver.session().stream = None;
                    if events.send(DriverEvent::Disconnected).await.is_err() {
                        return;
                    }
                }
                Outcome::Failed(why) => {
                    tracing::debug!(%why, "subscribe failed");
                }
            }
        }
        let jitter = driver.env.rng().next_u64() % (backoff.as_millis() as u64 + 1);
        tokio::time::sleep(backoff / 2 + Duration::from_millis(jitter / 2)).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

enum Outcome {
    Redirect((String, u16)),
    /// A stream was open and has ended.
    Streamed,
    Failed(String),
}

/// `//host:port/path`, `http://host:port/path` or `host:port` → `(host, port)`.
fn parse_location(location: &str) -> Option<(String, u16)> {
    let rest = location
        .strip_prefix("http://")
        .or_else(|| location.strip_prefix("//"))
        .unwrap_or(location);
    let authority = rest.split('/').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    Some((host.to_string(), port.parse().ok()?))
}

/// Connects to `endpoint` and POSTs `body` to `path`: the response (a 307 already turned into
/// `Outcome::Redirect`) and the connection's task, which the caller aborts when done.
async fn post(
    env: &Env,
    endpoint: &(String, u16),
    path: &str,
    body: Vec<u8>,
    authorization: Option<&http::HeaderValue>,
) -> Result<
    (
        http::Response<hyper::body::Incoming>,
        tokio::task::JoinHandle<()>,
    ),
    Outcome,
> {
    let stream = env
        .connect(&endpoint.0, endpoint.1, TIMEOUT)
        .await
        .map_err(|e| Outcome::Failed(e.to_string()))?;
    let handshake = tokio::time::timeout(
        TIMEOUT,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await;
    let Ok(Ok((mut sender, connection))) = handshake else {
        return Err(Outcome::Failed("HTTP handshake failed".into()));
    };
    let connection = drover_core::env::spawn(async move {
        let _ = connection.await;
    });
    let mut request = Request::post(path)
        .header("host", format!("{}:{}", endpoint.0, endpoint.1))
        .header("content-type", "application/json")
        .header("accept", "application/json");
    if let Some(authorization) = authorization {
        request = request.header(http::header::AUTHORIZATION, authorization);
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| Outcome::Failed("cannot build the request".into()))?;
    let response = match tokio::time::timeout(TIMEOUT, sender.send_request(request)).await {
        Ok(Ok(response)) => response,
        Ok(Err(e)) => return Err(Outcome::Failed(e.to_string())),
        Err(_) => return Err(Outcome::Failed(format!("POST {path} timed out"))),
    };
    if response.status().as_u16() == 307 {
        let to = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_location);
        connection.abort();
        return Err(match to {
            Some(to) => Outcome::Redirect(to),
            None => Outcome::Failed("307 without a usable Location".into()),
        });
    }
    Ok((response, connection))
}

async fn subscribe(
    driver: &Driver,
    endpoint: &(String, u16),
    info: &FrameworkInfo,
    events: &mpsc::Sender<DriverEvent>,
    delivered: &mut BTreeMap<String, String>,
    leader_gone: Option<WatchFuture>,
) -> Outcome {
    // Without coord, no watch: only the stream's end or silence says the master is gone.
    let mut leader_gone = std::pin::pin!(leader_change(leader_gone));
    let env = &driver.env;
    let mut call = Driver::bare(CallType::Subscribe);
    call.framework_id = info.id.clone();
    call.subscribe = Some(v1::Subscribe {
        framework_info: info.clone(),
    });
    let body = serde_json::to_vec(&call).unwrap_or_default();
    let (response, connection) = match post(
        env,
        endpoint,
        "/api/v1/scheduler",
        body,
        driver.authorization.as_ref(),
    )
    .await
    {
        Ok(answer) => answer,
        Err(outcome) => return outcome,
    };
    let status = response.status().as_u16();
    if status == 403 && info.id.is_some() {
        // The master removed this framework (torn down, or its failover timeout passed): its id
        // is never accepted again. Register anew; the application learns the new id from
        // `Subscribed`, and its old tasks are gone with the old framework.
        connection.abort();
        tracing::warn!(framework = ?info.id, "the master removed this framework: registering anew");
        driver.session().framework_id = None;
        return Outcome::Failed("SUBSCRIBE answered 403: the framework was removed".into());
    }
    if status != 200 {
        connection.abort();
        return Outcome::Failed(format!("SUBSCRIBE answered {status}"));
    }
    let Some(stream_id) = response
        .headers()
        .get("mesos-stream-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
    else {
        connection.abort();
        return Outcome::Failed("SUBSCRIBE answered without Mesos-Stream-Id".into());
    };
    let mut stream = Records::new(response.into_body());
    let mut silence = TIMEOUT * 3;
    let outcome = loop {
        let record = match stream.next(silence, &mut leader_gone).await {
            Next::Record(record) => record,
            Next::LeaderGone => {
                env.emit(NodeEvent::new("framework_leader_changed"));
                break Outcome::Streamed;
            }
            Next::Silent => {
                env.emit(NodeEvent::new("framework_stream_silent"));
                break Outcome::Streamed;
            }
            Next::Ended => break Outcome::Streamed,
            Next::Bad(error) => break Outcome::Failed(error),
        };
        let event: Event = match serde_json::from_slice(&record) {
            Ok(event) => event,
            Err(e) => break Outcome::Failed(format!("bad event: {e}")),
        };
        match event.kind {
            EventType::Subscribed => {
                let Some(subscribed) = event.subscribed.as_ref() else {
                    continue;
                };
                if let Some(s) = subscribed.heartbeat_interval_seconds {
                    if s.is_finite() && s > 0.0 {
                        silence = Duration::from_secs_f64((s * 3.0).min(3600.0));
                    }
                }
                let framework_id = subscribed.framework_id.value.clone();
                {
                    let mut session = driver.session();
                    session.framework_id = Some(framework_id.clone());
                    session.stream = Some((endpoint.clone(), stream_id.clone()));
                }
                let master = format!("{}:{}", endpoint.0, endpoint.1);
                if events
                    .send(DriverEvent::Subscribed {
                        framework_id,
                        master,
                    })
                    .await
                    .is_err()
                {
                    break Outcome::Streamed;
                }
                continue;
            }
            EventType::Update => {
                if let Some(status) = event.update.as_ref().map(|u| &u.status) {
                    if let Some(uuid) = &status.uuid {
                        if delivered.get(&status.task_id.value) == Some(uuid) {
                            // A copy of an update already delivered: acknowledged again only
                            // if the application acknowledged it (its ack may have been
                            // lost). Otherwise the application still holds the first copy,
                            // and acknowledging for it would let the agent forget an update
                            // the application may never process.
                            let acked =
                                driver.session().acked.get(&status.task_id.value) == Some(uuid);
                            if acked {
                                let _ = driver.acknowledge(status).await;
                            }
                            continue;
                        }
                        delivered.insert(status.task_id.value.clone(), uuid.clone());
                    }
                }
            }
            EventType::Heartbeat => continue,
            _ => {}
        }
        if events
            .send(DriverEvent::Event(Box::new(event)))
            .await
            .is_err()
        {
            break Outcome::Streamed;
        }
    };
    connection.abort();
    outcome
}

/// What [`follow_operator`] gives.
#[derive(Clone, Debug, PartialEq)]
pub enum OperatorRecord {
    /// A stream is open on the leading master, reached at this host and port; `masters` are
    /// the hosts of every master contending then (the leader alone without coord).
    Opened {
        host: String,
        port: u16,
        masters: Vec<String>,
    },
    /// One record of the stream.
    Record(serde_json::Value),
}

/// Follows the leading master's operator API event stream (`/api/v1` SUBSCRIBE): every record
/// as JSON, in order, across failovers (the leader is found again, redirects are followed, and a
/// stream that ends or stays silent for three heartbeats is opened anew). Each new stream starts
/// with a `SUBSCRIBED` record carrying the whole state, so a follower rebuilds from it. Ends when
/// the receiver is dropped.
pub fn follow_operator(env: Env, locator: Locator) -> mpsc::Receiver<OperatorRecord> {
    let (tx, rx) = mpsc::channel(1024);
    drover_core::env::spawn(async move {
        let mut zk = None;
        let mut redirect: Option<(String, u16)> = None;
        let mut backoff = Duration::from_millis(250);
        while !tx.is_closed() {
            let found = match redirect.take() {
                Some(endpoint) => Some((endpoint, None)),
                None => find_master(&locator, &mut zk, &env).await,
            };
            if let Some((endpoint, leader_gone)) = found {
                let masters = contenders(&locator, &zk, &endpoint).await;
                match operator_stream(&env, &endpoint, &tx, leader_gone, masters).await {
                    Outcome::Redirect(to) => {
                        redirect = Some(to);
                        continue;
                    }
                    Outcome::Streamed => backoff = Duration::from_millis(250),
                    Outcome::Failed(why) => tracing::debug!(%why, "operator SUBSCRIBE failed"),
                }
            }
            let jitter = env.rng().next_u64() % (backoff.as_millis() as u64 + 1);
            tokio::time::sleep(backoff / 2 + Duration::from_millis(jitter / 2)).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    });
    rx
}

/// The hosts of every master in the election (the leader's `endpoint` alone without coord, or
/// when the listing fails).
async fn contenders(
    locator: &Locator,
    zk: &Option<Client>,
    endpoint: &(String, u16),
) -> Vec<String> {
    let mut hosts = vec![endpoint.0.clone()];
    if let (Locator::Zk(url), Some(client)) = (locator, zk) {
        if let Ok(Ok(members)) =
            tokio::time::timeout(TIMEOUT, recipes::members(client, &url.path)).await
        {
            for (_, data) in members {
                if let Ok(info) = MasterInfo::decode(&data) {
                    let host = info.endpoint().0;
                    if !hosts.contains(&host) {
                        hosts.push(host);
                    }
                }
            }
        }
    }
    hosts
}

async fn operator_stream(
    env: &Env,
    endpoint: &(String, u16),
    records: &mpsc::Sender<OperatorRecord>,
    leader_gone: Option<WatchFuture>,
    masters: Vec<String>,
) -> Outcome {
    let mut leader_gone = std::pin::pin!(leader_change(leader_gone));
    let body = br#"{"type":"SUBSCRIBE"}"#.to_vec();
    let (response, connection) = match post(env, endpoint, "/api/v1", body, None).await {
        Ok(answer) => answer,
        Err(outcome) => return outcome,
    };
    let status = response.status().as_u16();
    if status != 200 {
        connection.abort();
        return Outcome::Failed(format!("SUBSCRIBE answered {status}"));
    }
    let opened = OperatorRecord::Opened {
        host: endpoint.0.clone(),
        port: endpoint.1,
        masters,
    };
    if records.send(opened).await.is_err() {
        connection.abort();
        return Outcome::Streamed;
    }
    let mut stream = Records::new(response.into_body());
    let mut silence = TIMEOUT * 3;
    let outcome = loop {
        let record = match stream.next(silence, &mut leader_gone).await {
            Next::Record(record) => record,
            Next::LeaderGone | Next::Silent | Next::Ended => break Outcome::Streamed,
            Next::Bad(error) => break Outcome::Failed(error),
        };
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(&record) else {
            break Outcome::Failed("a record that is not JSON".into());
        };
        if let Some(seconds) = value["subscribed"]["heartbeat_interval_seconds"].as_f64() {
            silence = Duration::from_secs_f64(seconds.clamp(1.0, 600.0) * 3.0);
        }
        if records.send(OperatorRecord::Record(value)).await.is_err() {
            break Outcome::Streamed;
        }
    };
    connection.abort();
    outcome
}

/// Resolves when the watched leader changes; never without a watch.
async fn leader_change(watch: Option<WatchFuture>) {
    match watch {
        Some(watch) => {
            let _ = watch.await;
        }
        None => std::future::pending().await,
    }
}

/// A master's RecordIO event stream, a record at a time.
struct Records {
    body: hyper::body::Incoming,
    decoder: recordio::Decoder,
}

/// What a [`Records`] stream gives next.
enum Next {
    Record(Bytes),
    /// The leader this stream was opened to is no longer the leader.
    LeaderGone,
    /// Nothing arrived within the silence allowed (three heartbeats).
    Silent,
    /// The master closed the stream.
    Ended,
    /// What arrived is not RecordIO.
    Bad(String),
}

impl Records {
    fn new(body: hyper::body::Incoming) -> Records {
        Records {
            body,
            decoder: recordio::Decoder::default(),
        }
    }

    /// The next record: one already received, or the next that arrives within `silence`,
    /// unless `leader_gone` resolves first.
    async fn next<F: std::future::Future<Output = ()> + Unpin>(
        &mut self,
        silence: Duration,
        leader_gone: &mut F,
    ) -> Next {
        loop {
            match self.decoder.next_record() {
                Ok(Some(record)) => return Next::Record(record),
                Ok(None) => {}
                Err(e) => return Next::Bad(format!("bad RecordIO: {e}")),
            }
            let next = tokio::select! {
                biased;
                _ = &mut *leader_gone => return Next::LeaderGone,
                next = tokio::time::timeout(silence, self.body.frame()) => next,
            };
            let frame = match next {
                Ok(Some(Ok(frame))) => frame,
                Ok(_) => return Next::Ended,
                Err(_) => return Next::Silent,
            };
            if let Ok(data) = frame.into_data() {
                self.decoder.feed(&data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locators_and_locations_parse() {
        assert_eq!(
            "127.0.0.1:5050".parse::<Locator>().unwrap(),
            Locator::Direct("127.0.0.1".into(), 5050)
        );
        assert!(matches!(
            "zk://c1:2181/mesos".parse::<Locator>().unwrap(),
            Locator::Zk(_)
        ));
        assert!("nowhere".parse::<Locator>().is_err());
        assert_eq!(
            parse_location("//m2:5050/api/v1/scheduler"),
            Some(("m2".into(), 5050))
        );
        assert_eq!(
            parse_location("http://10.0.0.1:5051"),
            Some(("10.0.0.1".into(), 5051))
        );
        assert_eq!(parse_location("//m2/api"), None);
    }
}
