//! The master's HTTP side: authentication by realm, the v1 scheduler and operator APIs, the
//! reports (`/master/state`, `/metrics/snapshot`), `/redirect` and `/version`.

use super::*;

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
pub(super) async fn authenticate(
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

/// The largest v1 call body the master reads (axum's default is 2 MiB; an ACCEPT launching a few
/// thousand tasks on one agent is larger). Bigger bodies get 413.
pub const MAX_CALL_BYTES: usize = 64 << 20;

pub(super) fn router(shared: Shared) -> axum::Router {
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
