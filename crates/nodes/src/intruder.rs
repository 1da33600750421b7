//! The `intruder` role: a node without the cluster's secret that keeps trying to change it, for
//! scenarios of a cluster that authenticates (`cluster.auth`). In turn, against every node it
//! can reach, it:
//!
//! - registers as an agent without a credential, then with a guessed secret (master);
//! - subscribes as a framework without credentials, then with a guessed secret (master);
//! - answers a coord peer port's challenge with a guess, then sends a forged raft heartbeat of
//!   term [`FORGED_TERM`] (a server that read it would follow that term);
//! - rewrites the master's znodes (`/mesos/...`, EVERYONE_READ_CREATOR_ALL) and lists and
//!   creates under the scheduler's (`/marathon`, CREATOR_ALL) as an unauthenticated coord client;
//! - creates an app through the scheduler's `/v2/apps` without credentials.
//!
//! Each attempt is an `intrusion via=<what> target=<node> outcome=<refused|succeeded|...>` event;
//! the `no_unauthenticated_change` invariant fails on any `succeeded`, and independently on what
//! the cluster's own nodes report (an agent or framework of the intruder's admitted, a coord
//! server at the forged term).

use std::time::Duration;

use base64::Engine as _;
use drover_coord::client::{Client, ClientConfig, CreateMode};
use drover_coord::proto::ErrorCode;
use drover_core::agent_proto::{AgentMessage, MasterMessage, Registration};
use drover_core::env::Stream;
use drover_core::frame::{next_within, send_within, ExchangeError, FrameCodec};
use drover_core::{Env, Event};
use drover_sim::invariants::FORGED_TERM;
use drover_sim::Role;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::Framed;

/// Between two attempts.
const PERIOD: Duration = Duration::from_millis(700);
/// How long an attempt waits for each answer.
const ANSWER: Duration = Duration::from_secs(2);
/// The secret it guesses.
const GUESS: &str = "guessed-secret";

/// What one attempt found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// The node said no (an authentication failure, 401, NoAuth) or closed the connection.
    Refused,
    /// The node did what was asked.
    Succeeded,
    /// The node was not reached (down, cut off, not leading).
    Unreachable,
    /// An answer that is neither (a follower's redirect, a node not found).
    Inconclusive,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Refused => "refused",
            Outcome::Succeeded => "succeeded",
            Outcome::Unreachable => "unreachable",
            Outcome::Inconclusive => "inconclusive",
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Attempt {
    AgentWithoutCredential,
    AgentWithGuessedSecret,
    FrameworkWithoutCredentials,
    FrameworkWithGuessedSecret,
    CoordPeer,
    CoordClient,
    SchedulerApi,
}

const ATTEMPTS: [Attempt; 7] = [
    Attempt::AgentWithoutCredential,
    Attempt::AgentWithGuessedSecret,
    Attempt::FrameworkWithoutCredentials,
    Attempt::FrameworkWithGuessedSecret,
    Attempt::CoordPeer,
    Attempt::CoordClient,
    Attempt::SchedulerApi,
];

impl Attempt {
    fn name(self) -> &'static str {
        match self {
            Attempt::AgentWithoutCredential => "agent_without_credential",
            Attempt::AgentWithGuessedSecret => "agent_with_guessed_secret",
            Attempt::FrameworkWithoutCredentials => "framework_without_credentials",
            Attempt::FrameworkWithGuessedSecret => "framework_with_guessed_secret",
            Attempt::CoordPeer => "coord_peer",
            Attempt::CoordClient => "coord_client",
            Attempt::SchedulerApi => "scheduler_api",
        }
    }

    /// The role whose nodes it targets.
    fn role(self) -> &'static str {
        match self {
            Attempt::AgentWithoutCredential
            | Attempt::AgentWithGuessedSecret
            | Attempt::FrameworkWithoutCredentials
            | Attempt::FrameworkWithGuessedSecret => "master",
            Attempt::CoordPeer | Attempt::CoordClient => "coord",
            Attempt::SchedulerApi => "scheduler",
        }
    }
}

pub fn role() -> Role {
    Role::new("intruder", None, |mut context| {
        Box::pin(async move {
            let env = context.env.clone();
            let name = context.name.clone();
            let cluster = context.cluster.clone();
            let coords = cluster.of_role("coord");
            let hosts: Vec<String> = coords
                .iter()
                .map(|c| format!("{c}:{}", crate::coord::CLIENT_PORT))
                .collect();
            let client = (!hosts.is_empty())
                .then(|| ClientConfig::from_hosts(&hosts.join(",")).ok())
                .flatten()
                .map(|config| Client::start(env.clone(), config));
            let intrude = async {
                let mut round = 0usize;
                loop {
                    tokio::time::sleep(PERIOD).await;
                    let attempt = ATTEMPTS[round % ATTEMPTS.len()];
                    let targets = cluster.of_role(attempt.role());
                    if !targets.is_empty() {
                        let index = (round / ATTEMPTS.len()) % targets.len();
                        let target = targets[index];
                        let outcome = match attempt {
                            Attempt::AgentWithoutCredential => {
                                agent(&env, &name, target, None).await
                            }
                            Attempt::AgentWithGuessedSecret => {
                                agent(&env, &name, target, Some("agent")).await
                            }
                            Attempt::FrameworkWithoutCredentials => {
                                framework(&env, &name, target, None).await
                            }
                            Attempt::FrameworkWithGuessedSecret => {
                                framework(&env, &name, target, Some("framework")).await
                            }
                            Attempt::CoordPeer => {
                                coord_peer(&env, target, index, targets.len()).await
                            }
                            Attempt::CoordClient => match &client {
                                Some(client) => coord_client(client, &name).await,
                                None => Outcome::Unreachable,
                            },
                            Attempt::SchedulerApi => scheduler_api(&env, &name, target).await,
                        };
                        env.emit(
                            Event::new("intrusion")
                                .with("via", attempt.name())
                                .with("target", target)
                                .with("outcome", outcome.name()),
                        );
                    }
                    round += 1;
                }
            };
            tokio::select! {
                biased;
                _ = context.shutdown.requested() => {}
                _ = intrude => {}
            }
            if let Some(client) = client {
                client.close().await;
            }
            Ok(())
        })
    })
}

/// Registers with `master` as an agent named after the intruder: without a credential, or
/// authenticating as `principal` with a guessed secret.
async fn agent(env: &Env, name: &str, master: &str, principal: Option<&str>) -> Outcome {
    let Ok(stream) = env.connect(master, crate::master::PORT, ANSWER).await else {
        return Outcome::Unreachable;
    };
    let mut conn = Framed::new(stream, FrameCodec::default());
    if let Some(principal) = principal {
        let principal = principal.to_string();
        if !send(&mut conn, &AgentMessage::Authenticate { principal }).await {
            return Outcome::Refused;
        }
        let nonce = match receive(&mut conn).await {
            Some(MasterMessage::Challenge { nonce }) => nonce,
            Some(MasterMessage::AuthenticationFailed { .. }) | None => return Outcome::Refused,
            Some(_) => return Outcome::Inconclusive,
        };
        let nonce = base64::engine::general_purpose::STANDARD
            .decode(nonce)
            .unwrap_or_default();
        let context = drover_core::agent_proto::AGENT_CONTEXT;
        let guess = drover_core::auth::challenge::answer(GUESS.as_bytes(), context, &nonce);
        let answer = base64::engine::general_purpose::STANDARD.encode(guess);
        if !send(&mut conn, &AgentMessage::Proof { answer }).await {
            return Outcome::Refused;
        }
        match receive(&mut conn).await {
            Some(MasterMessage::Authenticated { .. }) => {}
            Some(MasterMessage::AuthenticationFailed { .. }) | None => return Outcome::Refused,
            Some(_) => return Outcome::Inconclusive,
        }
    }
    let registration = Registration {
        agent_id: None,
        hostname: name.to_string(),
        port: 5051,
        address: None,
        resources: "cpus:64;mem:262144".into(),
        attributes: String::new(),
        tasks: Vec::new(),
    };
    if !send(&mut conn, &AgentMessage::Register(registration)).await {
        return Outcome::Refused;
    }
    match receive(&mut conn).await {
        Some(MasterMessage::Registered { .. }) => Outcome::Succeeded,
        Some(MasterMessage::AuthenticationFailed { .. }) | None => Outcome::Refused,
        // A master that does not lead keeps the registration waiting.
        Some(_) => Outcome::Inconclusive,
    }
}

async fn send(conn: &mut Framed<Stream, FrameCodec>, message: &AgentMessage) -> bool {
    send_within(conn, message, ANSWER).await.is_ok()
}

/// The next master message; `None` when the connection closed or broke. No answer in time (a
/// master that does not lead holds registrations) comes back as a `Ping`: neither yes nor no.
async fn receive(conn: &mut Framed<Stream, FrameCodec>) -> Option<MasterMessage> {
    match next_within(conn, ANSWER).await {
        Ok(message) => Some(message),
        Err(ExchangeError::TimedOut(_)) => Some(MasterMessage::Ping { seq: 0 }),
        Err(_) => None,
    }
}

/// SUBSCRIBEs to `master` as a framework named after the intruder.
async fn framework(env: &Env, name: &str, master: &str, principal: Option<&str>) -> Outcome {
    let subscribe = serde_json::json!({
        "type": "SUBSCRIBE",
        "subscribe": {"framework_info": {"user": "root", "name": format!("{name}-framework")}},
    });
    let authorization =
        principal.map(|principal| drover_core::auth::authorization(principal, GUESS));
    match status_of(
        env,
        master,
        crate::master::PORT,
        "/api/v1/scheduler",
        &subscribe,
        authorization,
    )
    .await
    {
        Some(200) => Outcome::Succeeded,
        Some(401 | 403) => Outcome::Refused,
        Some(_) => Outcome::Inconclusive,
        None => Outcome::Unreachable,
    }
}

/// POSTs an app to the scheduler without credentials.
async fn scheduler_api(env: &Env, name: &str, scheduler: &str) -> Outcome {
    let app = serde_json::json!({
        "id": format!("/{name}"),
        "cmd": "sleep 100000",
        "cpus": 0.01,
        "mem": 1,
        "instances": 1,
    });
    match status_of(
        env,
        scheduler,
        crate::scheduler::PORT,
        "/v2/apps",
        &app,
        None,
    )
    .await
    {
        Some(200..=299) => Outcome::Succeeded,
        Some(401 | 403) => Outcome::Refused,
        Some(_) => Outcome::Inconclusive,
        None => Outcome::Unreachable,
    }
}

/// POSTs `body` and reads the answer's status line only (a SUBSCRIBE's answer never ends).
async fn status_of(
    env: &Env,
    host: &str,
    port: u16,
    path: &str,
    body: &serde_json::Value,
    authorization: Option<http::HeaderValue>,
) -> Option<u16> {
    let mut stream = env.connect(host, port, ANSWER).await.ok()?;
    let body = body.to_string();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nAccept: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(value) = authorization.as_ref().and_then(|v| v.to_str().ok()) {
        request.push_str(&format!("Authorization: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    tokio::time::timeout(ANSWER, stream.write_all(request.as_bytes()))
        .await
        .ok()?
        .ok()?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n") && head.len() < 256 {
        match tokio::time::timeout(ANSWER, stream.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => return None,
        }
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Connects to a coord server's peer port (server `index` of `count`, 0-based): answers its
/// challenge, if it sends one, with a guess, then sends a raft heartbeat of [`FORGED_TERM`].
async fn coord_peer(env: &Env, coord: &str, index: usize, count: usize) -> Outcome {
    let Ok(stream) = env.connect(coord, crate::coord::PEER_PORT, ANSWER).await else {
        return Outcome::Unreachable;
    };
    let mut frames = Framed::new(stream, FrameCodec::with_max(1 << 20));
    // A server that authenticates its peers speaks first; one that does not says nothing.
    match tokio::time::timeout(Duration::from_millis(300), frames.next()).await {
        Ok(Some(Ok(_challenge))) => {
            let guess = [0u8; 32];
            let proof = drover_coord::server::proof_frame(&guess, &guess);
            let _ = tokio::time::timeout(ANSWER, frames.send(proof)).await;
        }
        Ok(_) => return Outcome::Refused,
        Err(_) => {}
    }
    let to = index as u64 + 1;
    let from = (index as u64 + 1) % count.max(1) as u64 + 1;
    let heartbeat = drover_coord::server::forged_heartbeat_frame(from, to, FORGED_TERM);
    if !matches!(
        tokio::time::timeout(ANSWER, frames.send(heartbeat)).await,
        Ok(Ok(()))
    ) {
        return Outcome::Refused;
    }
    // A server that refused the guess has closed the connection. One that asked for no proof
    // (or was too slow to: paused) may have read the heartbeat: whether it followed the forged
    // term shows in its own events, which the invariant reads.
    match tokio::time::timeout(Duration::from_millis(300), frames.next()).await {
        Ok(None) | Ok(Some(Err(_))) => Outcome::Refused,
        _ => Outcome::Inconclusive,
    }
}

/// As a coord client that proved nothing: rewrites each of the master's znodes with its own
/// bytes, lists the scheduler's and creates a node under it.
async fn coord_client(client: &Client, name: &str) -> Outcome {
    let mut outcome = Outcome::Inconclusive;
    let mut note = |result: Result<(), ErrorCode>| {
        let this = match result {
            Ok(()) => Outcome::Succeeded,
            Err(ErrorCode::NoAuth) => Outcome::Refused,
            Err(ErrorCode::NoNode | ErrorCode::NodeExists) => Outcome::Inconclusive,
            Err(_) => Outcome::Unreachable,
        };
        outcome = match (outcome, this) {
            (Outcome::Succeeded, _) | (_, Outcome::Succeeded) => Outcome::Succeeded,
            (Outcome::Refused, _) | (_, Outcome::Refused) => Outcome::Refused,
            (Outcome::Unreachable, _) | (_, Outcome::Unreachable) => Outcome::Unreachable,
            _ => Outcome::Inconclusive,
        };
    };
    match client.get_children("/mesos").await {
        Ok(children) => {
            for child in children.iter().filter(|c| c.starts_with("json.info_")) {
                let path = format!("/mesos/{child}");
                let Ok((data, stat)) = client.get_data(&path).await else {
                    continue;
                };
                note(
                    client
                        .set_data(&path, &data, stat.version)
                        .await
                        .map(|_| ()),
                );
            }
        }
        Err(e) => note(Err(e)),
    }
    note(client.get_children("/marathon").await.map(|_| ()));
    let path = format!("/marathon/{name}");
    note(
        client
            .create(&path, b"", CreateMode::Persistent)
            .await
            .map(|_| ()),
    );
    outcome
}
