//! The Marathon `/v2` REST API over the leader's state. One handler reads the method and path
//! and runs a closure on the core task ([`Shared::run`]); a scheduler that does not lead
//! forwards the request to the one that does (`X-Marathon-Via` stops loops), and every answer
//! names the leader in `X-Marathon-Leader`.

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;
use bytes::Bytes;
use drover_core::task::TaskState;
use serde_json::{json, Value};

use crate::app::{format_version, AppDefinition};
use crate::core::{Effects, Scheduler};
use crate::daemon::{Reply, Shared};
use crate::group::{GroupUpdate, UpdateKind, UpdateMode};
use crate::path::PathId;
use crate::validation::{self, ApiError, MAX_BODY_BYTES};

const VIA: &str = "X-Marathon-Via";
const LEADER: &str = "X-Marathon-Leader";
/// Marks a reply whose body (an older app version) `handle` reads from the store.
const STORED_VERSION: &str = "x-drover-stored-version";
const PROXY_TIMEOUT: Duration = Duration::from_secs(30);
/// The Marathon release whose API drover follows.
pub const MARATHON_VERSION: &str = "1.5.0";

pub fn router(shared: Shared) -> axum::Router {
    axum::Router::new()
        .merge(crate::ui::router())
        .fallback(handle)
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            authenticate,
        ))
        .with_state(shared)
}

/// With `--http_credentials`, a request without them gets 401 (the UI and the API alike);
/// `GET /ping` stays open, as in Marathon. A follower forwards the caller's own header.
async fn authenticate(
    State(shared): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(auth) = &shared.config.http_auth {
        let open = request.method() == Method::GET && request.uri().path() == "/ping";
        if !open && auth.credentials.authenticate(request.headers()).is_none() {
            return drover_core::auth::unauthorized(&auth.realm);
        }
    }
    next.run(request).await
}

type Params = Vec<(String, String)>;

fn param<'a>(q: &'a Params, key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn flag(q: &Params, key: &str) -> bool {
    // Clients send `true`, `True` (Python's marathon), or the bare key.
    param(q, key).is_some_and(|v| v.eq_ignore_ascii_case("true") || v.is_empty())
}

async fn handle(
    State(shared): State<Shared>,
    method: Method,
    uri: Uri,
    Query(query): Query<Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().trim_end_matches('/').to_string();
    let path = if path.is_empty() { "/".into() } else { path };
    // Answered by any scheduler.
    match (method.clone(), path.as_str()) {
        (Method::GET, "/ping") => return text(200, "pong\n", &shared),
        (Method::GET, "/v2/info") => return to_response(info(&shared).await, &shared),
        (Method::GET, "/v2/leader") => {
            return to_response(
                match shared.leader() {
                    Some(l) => Reply::json(200, json!({"leader": l})),
                    None => Reply::json(404, json!({"message": "There is no leader"})),
                },
                &shared,
            )
        }
        _ => {}
    }
    if body.len() > MAX_BODY_BYTES {
        return to_response(
            Reply::json(413, json!({"message": "Request body too large"})),
            &shared,
        );
    }
    if method == Method::GET && path == "/v2/events" {
        return events(&shared, &query).await;
    }
    let f = match route(&method, &path, &query, &body) {
        Ok(f) => f,
        Err(reply) => return to_response(reply, &shared),
    };
    if method == Method::DELETE && path == "/v2/leader" {
        if shared.leader().as_deref() == Some(shared.me().as_str()) {
            shared.abdicate().await;
            return to_response(
                Reply::json(200, json!({"message": "Leadership abdicated"})),
                &shared,
            );
        }
    } else if let Some(reply) = shared.run(f).await {
        // An older app version is read from the store (the core keeps only their names).
        if let Some((_, version)) = reply.headers.iter().find(|(k, _)| *k == STORED_VERSION) {
            let id = PathId::parse(
                path.trim_start_matches("/v2/apps")
                    .rsplit_once("/versions/")
                    .map_or("", |(a, _)| a),
            );
            return to_response(
                match crate::daemon::read_app_version(&shared, &id, version).await {
                    Ok(Some(app)) => match AppDefinition::from_storage_json(&app) {
                        Ok(def) => Reply::json(200, def.to_marathon_json(version)),
                        Err(e) => Reply::json(
                            500,
                            json!({"message": format!("stored version unreadable: {}", e.message())}),
                        ),
                    },
                    Ok(None) => Reply::json(
                        404,
                        json!({"message": format!("App '{id}' does not exist in version {version}")}),
                    ),
                    Err(e) => Reply::json(
                        503,
                        json!({"message": format!("the store did not answer: {e}")}),
                    ),
                },
                &shared,
            );
        }
        return to_response(reply, &shared);
    }
    proxy(&shared, &method, &uri, &headers, body).await
}

/// Forwards a request to the leader.
async fn proxy(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let me = shared.me();
    let via = headers
        .get(VIA)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let Some(leader) = shared.leader().filter(|l| *l != me) else {
        return to_response(
            Reply::json(
                503,
                json!({"message": "Could not determine the current leader"}),
            ),
            shared,
        );
    };
    if via.split(',').any(|v| v.trim() == me) {
        return to_response(
            Reply::json(
                502,
                json!({"message": format!("Detected a proxy loop through {via}")}),
            ),
            shared,
        );
    }
    if method == Method::GET && uri.path().starts_with("/v2/events") {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::TEMPORARY_REDIRECT;
        if let Ok(v) = HeaderValue::from_str(&format!(
            "http://{leader}{}",
            uri.path_and_query().map_or("/v2/events", |p| p.as_str())
        )) {
            r.headers_mut().insert(http::header::LOCATION, v);
        }
        return r;
    }
    let Some((host, port)) = leader
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
    else {
        return to_response(
            Reply::json(503, json!({"message": "bad leader address"})),
            shared,
        );
    };
    let mut builder = http::Request::builder()
        .method(method.clone())
        .uri(uri.path_and_query().map_or("/", |p| p.as_str()));
    for (k, v) in headers {
        if k != http::header::HOST
            && k != http::header::CONNECTION
            && k.as_str() != "x-marathon-via"
        {
            builder = builder.header(k, v);
        }
    }
    let via = if via.is_empty() {
        me.clone()
    } else {
        format!("{via},{me}")
    };
    builder = builder.header(VIA, via);
    let Ok(request) = builder.body(body) else {
        return to_response(Reply::json(400, json!({"message": "bad request"})), shared);
    };
    match drover_core::http::request(&shared.env, &host, port, request, PROXY_TIMEOUT).await {
        Ok(answer) => {
            let (parts, body) = answer.into_parts();
            let mut r = Response::new(Body::from(body));
            *r.status_mut() = parts.status;
            for (k, v) in &parts.headers {
                if k != http::header::TRANSFER_ENCODING && k != http::header::CONNECTION {
                    r.headers_mut().insert(k.clone(), v.clone());
                }
            }
            r
        }
        Err(e) => to_response(
            Reply::json(
                503,
                json!({"message": format!("the leader did not answer: {e}")}),
            ),
            shared,
        ),
    }
}

fn with_leader(mut r: Response, shared: &Shared) -> Response {
    if let Some(l) = shared.leader() {
        if let Ok(v) = HeaderValue::from_str(&format!("http://{l}")) {
            r.headers_mut().insert(LEADER, v);
        }
    }
    r
}

fn text(status: u16, body: &'static str, shared: &Shared) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    with_leader(r, shared)
}

fn to_response(reply: Reply, shared: &Shared) -> Response {
    let (body, content_type) = match &reply.body {
        Value::String(s) if reply.headers.iter().any(|(k, _)| *k == "content-type") => {
            (s.clone().into_bytes(), None)
        }
        Value::Null if reply.status == 202 || reply.status == 204 => (Vec::new(), None),
        v => (v.to_string().into_bytes(), Some("application/json")),
    };
    let mut r = Response::new(Body::from(body));
    *r.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(ct) = content_type {
        r.headers_mut()
            .insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    for (k, v) in reply.headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            r.headers_mut().insert(k, v);
        }
    }
    with_leader(r, shared)
}

async fn info(shared: &Shared) -> Reply {
    let framework = shared
        .run(Box::new(|s: &mut Scheduler, _: &mut Effects, _| {
            Reply::json(200, json!([s.framework_id, s.master]))
        }))
        .await
        .map(|r| r.body);
    let (framework, master) = match framework {
        Some(Value::Array(pair)) if pair.len() == 2 => (pair[0].clone(), pair[1].clone()),
        _ => (Value::Null, Value::Null),
    };
    Reply::json(
        200,
        info_json(
            &shared.config,
            shared.leader(),
            &shared.me(),
            framework,
            master.as_str(),
        ),
    )
}

/// The body of `GET /v2/info`.
fn info_json(
    c: &crate::daemon::Config,
    leader: Option<String>,
    me: &str,
    framework: Value,
    master: Option<&str>,
) -> Value {
    json!({
        "name": "marathon",
        "version": MARATHON_VERSION,
        "buildref": format!("drover-{}", env!("CARGO_PKG_VERSION")),
        "elected": leader.as_deref() == Some(me),
        "leader": leader,
        "frameworkId": framework,
        "marathon_config": {
            "master": c.master.to_string(),
            "framework_name": c.framework_name,
            "failover_timeout": 604800,
            "hostname": c.hostname,
            "ha": true,
            "task_launch_timeout": c.tuning.launch_timeout_ms,
            "reconciliation_interval": c.tuning.reconcile_interval_ms,
            "decline_offer_duration": c.tuning.decline_idle_ms,
            "checkpoint": true,
            "mesos_role": null,
            "mesos_user": "root",
            // The leading master's web UI, as Marathon links tasks' sandboxes to it.
            "mesos_leader_ui_url": master.map(|m| format!("http://{m}/")),
        },
        "zookeeper_config": {
            "zk": format!("zk://{}{}", c.zk.hosts, c.zk.path),
            "zk_timeout": 10000,
            "zk_session_timeout": 10000,
            "zk_max_versions": crate::core::MAX_VERSIONS,
        },
        // No HTTP callback subscribers (drover serves no `/v2/eventSubscriptions`).
        "event_subscriber": null,
        "http_config": {"http_port": c.port, "https_port": 8443},
    })
}

/// `GET /v2/events`: server-sent events, optionally only some `event_type`s.
async fn events(shared: &Shared, query: &Params) -> Response {
    let wanted: BTreeSet<String> = query
        .iter()
        .filter(|(k, _)| k == "event_type")
        .map(|(_, v)| v.clone())
        .collect();
    let leads = shared.leader().as_deref() == Some(shared.me().as_str());
    if !leads {
        let uri: Uri = "/v2/events".parse().unwrap_or_default();
        return proxy(shared, &Method::GET, &uri, &HeaderMap::new(), Bytes::new()).await;
    }
    let receiver = shared.events.subscribe();
    let attached = format!(
        "event: event_stream_attached\ndata: {}\n\n",
        json!({"remoteAddress": "client", "eventType": "event_stream_attached", "timestamp": format_version(shared.env.unix_ms())})
    );
    let first =
        futures_util::stream::once(async move { Ok::<Bytes, Infallible>(Bytes::from(attached)) });
    let rest = futures_util::stream::unfold((receiver, wanted), |(mut rx, wanted)| async move {
        loop {
            match rx.recv().await {
                Ok((kind, data)) => {
                    if !wanted.is_empty() && !wanted.contains(&kind) {
                        continue;
                    }
                    let chunk = Bytes::from(format!("event: {kind}\ndata: {data}\n\n"));
                    return Some((Ok::<Bytes, Infallible>(chunk), (rx, wanted)));
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    });
    use futures_util::StreamExt;
    let mut r = Response::new(Body::from_stream(first.chain(rest)));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    with_leader(r, shared)
}

mod routes;

use routes::route;

#[cfg(test)]
mod tests;
