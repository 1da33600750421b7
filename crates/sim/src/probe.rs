//! The probe: a small node that checks the simulator itself.
//!
//! Probes send each other heartbeat frames over the node-to-node codec, keep a boot counter on
//! their disk, and serve `/health` and `/peers` over HTTP, all through the Env seam. Scenarios made
//! of probes show that partitions cut traffic and heals restore it, that synced state survives a
//! crash, that skew moves a node's wall clock, and that a seed replays bit for bit. The real roles
//! live in their own crates; this one exists so the harness can be trusted before them.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::Json;
use bytes::Bytes;
use drover_core::frame::{decode_message, encode_message, FrameCodec};
use drover_core::{Env, Event};
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio_util::codec::{FramedRead, FramedWrite};

use crate::cluster::{NodeContext, NodeResult, Role};

pub const FRAME_PORT: u16 = 7000;
pub const HTTP_PORT: u16 = 7001;
const HEARTBEAT_EVERY: Duration = Duration::from_millis(250);
const PEER_TIMEOUT: Duration = Duration::from_millis(1000);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

#[derive(Debug, Serialize, Deserialize)]
struct Heartbeat {
    from: String,
    seq: u64,
}

#[derive(Debug, Clone, Serialize)]
struct PeerState {
    up: bool,
    last_seq: u64,
    #[serde(skip)]
    last_heard: Option<tokio::time::Instant>,
}

type Peers = Arc<Mutex<BTreeMap<String, PeerState>>>;

pub fn role() -> Role {
    Role::new("probe", Some(HTTP_PORT), |context| Box::pin(run(context)))
}

async fn run(mut context: NodeContext) -> NodeResult {
    let env = context.env.clone();
    let boots = match env.disk().read("probe/boots").await? {
        Some(bytes) => String::from_utf8_lossy(&bytes)
            .trim()
            .parse::<u64>()
            .unwrap_or(0),
        None => 0,
    } + 1;
    env.disk()
        .write("probe/boots", Bytes::from(boots.to_string()))
        .await?;
    env.disk().sync("probe/boots").await?;
    env.emit(
        Event::new("boot")
            .with("count", boots)
            .with("wall_ms", env.unix_ms()),
    );

    let peers: Peers = Arc::new(Mutex::new(
        context
            .cluster
            .of_role("probe")
            .into_iter()
            .filter(|name| *name != context.name)
            .map(|name| {
                (
                    name.to_string(),
                    PeerState {
                        up: false,
                        last_seq: 0,
                        last_heard: None,
                    },
                )
            })
            .collect(),
    ));

    let frames = env
        .bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, FRAME_PORT)))
        .await?;
    drover_core::env::spawn(receive(env.clone(), frames, peers.clone()));
    let http = env
        .bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, HTTP_PORT)))
        .await?;
    let router = axum::Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/peers", get(list_peers))
        .with_state(peers.clone());
    let mut stop_http = context.shutdown.clone();
    drover_core::env::spawn(drover_core::http::serve(http, router, async move {
        stop_http.requested().await
    }));

    let mut seq = 0u64;
    loop {
        let jitter = Duration::from_millis(env.rng().random_range(0..50));
        tokio::select! {
            biased;
            _ = context.shutdown.requested() => break,
            _ = tokio::time::sleep(HEARTBEAT_EVERY + jitter) => {}
        }
        seq += 1;
        let names: Vec<String> = lock(&peers).keys().cloned().collect();
        for peer in names {
            drover_core::env::spawn(send(
                env.clone(),
                peer,
                Heartbeat {
                    from: context.name.clone(),
                    seq,
                },
            ));
        }
        let now = tokio::time::Instant::now();
        for (name, state) in lock(&peers).iter_mut() {
            let silent = state
                .last_heard
                .is_none_or(|t| now.duration_since(t) > PEER_TIMEOUT);
            if state.up && silent {
                state.up = false;
                env.emit(Event::new("peer_down").with("peer", name));
            }
        }
    }
    env.emit(Event::new("exit").with("reason", "shutdown"));
    Ok(())
}

fn lock(peers: &Peers) -> std::sync::MutexGuard<'_, BTreeMap<String, PeerState>> {
    peers
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn list_peers(State(peers): State<Peers>) -> Json<BTreeMap<String, PeerState>> {
    Json(lock(&peers).clone())
}

async fn send(env: Env, peer: String, heartbeat: Heartbeat) {
    let Ok(stream) = env.connect(&peer, FRAME_PORT, CONNECT_TIMEOUT).await else {
        return;
    };
    let Ok(frame) = encode_message(&heartbeat) else {
        return;
    };
    let mut out = FramedWrite::new(stream, FrameCodec::default());
    let _ = tokio::time::timeout(CONNECT_TIMEOUT, out.send(frame)).await;
}

async fn receive(env: Env, mut listener: drover_core::env::Listener, peers: Peers) {
    while let Ok((stream, _)) = listener.accept().await {
        let (env, peers) = (env.clone(), peers.clone());
        drover_core::env::spawn(async move {
            let mut frames = FramedRead::new(stream, FrameCodec::default());
            while let Some(Ok(frame)) = frames.next().await {
                let Ok(heartbeat) = decode_message::<Heartbeat>(&frame) else {
                    env.emit(Event::new("error").with("what", "bad-frame"));
                    return;
                };
                env.emit(
                    Event::new("hb")
                        .with("from", &heartbeat.from)
                        .with("seq", heartbeat.seq),
                );
                let mut peers = lock(&peers);
                if let Some(state) = peers.get_mut(&heartbeat.from) {
                    state.last_heard = Some(tokio::time::Instant::now());
                    state.last_seq = heartbeat.seq;
                    if !state.up {
                        state.up = true;
                        env.emit(Event::new("peer_up").with("peer", &heartbeat.from));
                    }
                }
            }
        });
    }
}
