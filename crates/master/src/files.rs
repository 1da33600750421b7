//! The master's way through to its agents' HTTP APIs: `/agent/<id>/files/browse|read|download`
//! and `/agent/<id>/state` (the paths DC/OS' admin router gives them, which Mesos UIs behind it
//! use) are forwarded to the agent registered under that id, so that a browser that reaches
//! only the master reads a task's sandbox. The agent's answer (status, body, content type) comes
//! back as it is, streamed.
//!
//! Where an agent is comes from the master's own `/master/state` (asked in-process of the
//! master's router: the leader lists its agents with their `pid`, a master that does not lead
//! names the leader). A master that does not lead redirects to the one that does, as its
//! scheduler API does; an agent the leader does not know is 404; one that does not answer, 502.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use drover_core::v1::MasterInfo;
use drover_core::Env;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value as Json;

/// How long an agent may take to accept the connection and send its answer's head.
const AGENT_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of `/master/state` read to find an agent.
const MAX_STATE_BYTES: usize = 64 * 1024 * 1024;

/// What the master forwards, under `/agent/<id>/`, as the agent's own paths.
const FORWARDED: &[&str] = &[
    "files/browse",
    "files/browse.json",
    "files/read",
    "files/read.json",
    "files/download",
    "files/download.json",
    "state",
    "state.json",
    "slave(1)/state",
];

#[derive(Clone)]
struct Proxy {
    env: Env,
    /// The master's router, asked for `/master/state`.
    master: axum::Router,
}

/// The `/agent/<id>/...` routes; `master` is the rest of the master's router (it answers
/// `/master/state`).
pub fn router(env: Env, master: axum::Router) -> axum::Router {
    let mut router = axum::Router::new();
    for path in FORWARDED {
        router = router.route(
            &format!("/agent/{{agent_id}}/{path}"),
            axum::routing::get(forward),
        );
    }
    router.with_state(Proxy { env, master })
}

/// Where the master says an agent is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Whereabouts {
    Agent {
        host: String,
        port: u16,
    },
    /// This master does not lead; the leader is there.
    Leader {
        host: String,
        port: u16,
    },
    NoLeader,
    Unknown,
}

/// Reads `/master/state` for the agent `agent_id`: its `pid` (`slave(1)@HOST:PORT`, the
/// address it registered with) or else its host name and port.
pub fn whereabouts(state: &Json, agent_id: &str) -> Whereabouts {
    let agents = state["slaves"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if let Some(agent) = agents.iter().find(|a| a["id"] == agent_id) {
        let from_pid = agent["pid"]
            .as_str()
            .and_then(|pid| pid.split_once('@'))
            .and_then(|(_, endpoint)| endpoint.rsplit_once(':'))
            .and_then(|(host, port)| Some((host.to_string(), port.parse().ok()?)));
        let from_fields = || {
            let host = agent["hostname"].as_str()?.to_string();
            let port = u16::try_from(agent["port"].as_u64()?).ok()?;
            Some((host, port))
        };
        if let Some((host, port)) = from_pid.or_else(from_fields) {
            return Whereabouts::Agent { host, port };
        }
    }
    let leader: Option<MasterInfo> = serde_json::from_value(state["leader_info"].clone()).ok();
    match leader {
        Some(leader) if state["id"] != leader.id.as_str() => {
            let (host, port) = leader.endpoint();
            Whereabouts::Leader { host, port }
        }
        // Only the leading master's own state has its election time (and its agents).
        Some(_) if state.get("elected_time").is_some() => Whereabouts::Unknown,
        _ => Whereabouts::NoLeader,
    }
}

fn text(status: StatusCode, message: String) -> Response {
    (status, format!("{message}\n")).into_response()
}

async fn master_state(master: axum::Router) -> Result<Json, String> {
    use hyper::service::Service as _;
    let request = http::Request::get("/master/state")
        .body(Body::empty())
        .map_err(|e| e.to_string())?;
    // The router in-process, as a hyper service (hyper-util's `service` feature, which
    // drover-core's server needs too).
    let response = hyper_util::service::TowerToHyperService::new(master)
        .call(request)
        .await
        .map_err(|e| e.to_string())?;
    let body = axum::body::to_bytes(response.into_body(), MAX_STATE_BYTES)
        .await
        .map_err(|e| e.to_string())?;
    serde_json::from_slice(&body).map_err(|e| e.to_string())
}

async fn forward(State(proxy): State<Proxy>, Path(agent_id): Path<String>, uri: Uri) -> Response {
    // The path below `/agent/<id>` (as sent: the id may be percent-encoded), with the query.
    let below = uri
        .path()
        .splitn(4, '/')
        .nth(3)
        .map(|rest| match uri.query() {
            Some(query) => format!("/{rest}?{query}"),
            None => format!("/{rest}"),
        })
        .unwrap_or_else(|| "/".into());
    let state = match master_state(proxy.master.clone()).await {
        Ok(state) => state,
        Err(e) => {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("The master's state is not available: {e}"),
            )
        }
    };
    match whereabouts(&state, &agent_id) {
        Whereabouts::Agent { host, port } => {
            match agent_get(&proxy.env, &host, port, &below).await {
                Ok(answer) => answer,
                Err(reason) => text(
                    StatusCode::BAD_GATEWAY,
                    format!("Agent {agent_id} at {host}:{port} is unreachable: {reason}"),
                ),
            }
        }
        Whereabouts::Leader { host, port } => {
            let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
            Response::builder()
                .status(StatusCode::TEMPORARY_REDIRECT)
                .header(http::header::LOCATION, format!("//{host}:{port}{path}"))
                .body(Body::empty())
                .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
        }
        Whereabouts::NoLeader => text(StatusCode::SERVICE_UNAVAILABLE, "No leader elected".into()),
        Whereabouts::Unknown => text(
            StatusCode::NOT_FOUND,
            format!("No agent {agent_id} is registered with this master"),
        ),
    }
}

/// GETs `path` from the agent over the Env; the answer's body streams through (a download may be
/// larger than any buffer).
async fn agent_get(env: &Env, host: &str, port: u16, path: &str) -> Result<Response, String> {
    let head = async {
        let stream = env
            .connect(host, port, AGENT_TIMEOUT)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        drover_core::env::spawn(async move {
            // The connection ends with the exchange; its error, if any, surfaces there.
            let _ = connection.await;
        });
        let request = http::Request::get(path)
            .header(http::header::HOST, format!("{host}:{port}"))
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())
    };
    let answer = match tokio::time::timeout(AGENT_TIMEOUT, head).await {
        Ok(answer) => answer?,
        Err(_) => return Err(format!("no answer within {} s", AGENT_TIMEOUT.as_secs())),
    };
    let (parts, body) = answer.into_parts();
    let mut response = Response::builder().status(parts.status);
    for name in [
        http::header::CONTENT_TYPE,
        http::header::CONTENT_LENGTH,
        http::header::CONTENT_DISPOSITION,
    ] {
        if let Some(value) = parts.headers.get(&name) {
            response = response.header(name, value);
        }
    }
    response
        .body(Body::new(body.map_err(axum::Error::new)))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn leader_info(id: &str, host: &str, port: u16) -> Json {
        serde_json::to_value(MasterInfo::new(id, host, port)).unwrap()
    }

    #[test]
    fn agents_are_found_by_id_in_the_leaders_state() {
        let state = json!({
            "id": "m1",
            "leader_info": leader_info("m1", "10.0.0.1", 5050),
            "elected_time": 1.0,
            "slaves": [
                {"id": "a1", "hostname": "node-1", "port": 5051, "pid": "slave(1)@10.0.0.5:5051"},
                {"id": "a2", "hostname": "node-2", "port": 5052},
            ],
        });
        assert_eq!(
            whereabouts(&state, "a1"),
            Whereabouts::Agent {
                host: "10.0.0.5".into(),
                port: 5051
            }
        );
        assert_eq!(
            whereabouts(&state, "a2"),
            Whereabouts::Agent {
                host: "node-2".into(),
                port: 5052
            }
        );
        assert_eq!(whereabouts(&state, "a3"), Whereabouts::Unknown);
    }

    #[test]
    fn a_master_that_does_not_lead_points_at_the_leader() {
        let follower = json!({
            "id": "m2",
            "leader_info": leader_info("m1", "10.0.0.1", 5050),
            "slaves": [],
        });
        assert_eq!(
            whereabouts(&follower, "a1"),
            Whereabouts::Leader {
                host: "10.0.0.1".into(),
                port: 5050
            }
        );
        let alone = json!({"id": "m2", "leader_info": null, "slaves": []});
        assert_eq!(whereabouts(&alone, "a1"), Whereabouts::NoLeader);
        // Elected in coord, but its core is not leading yet.
        let starting = json!({"id": "m1", "leader_info": leader_info("m1", "10.0.0.1", 5050)});
        assert_eq!(whereabouts(&starting, "a1"), Whereabouts::NoLeader);
    }
}
