//! Simulated clients of coord, for scenarios. Each records what it asks and what it is told as
//! trace events, so invariants can judge the service from the outside:
//!
//! - `coord-writer`: reads, writes and compare-and-sets a few registers (`/registers/kN`),
//!   recording `call` and `ret` events for the linearizability check;
//! - `coord-owner`: holds an ephemeral node `/owners/<name>` for as long as its session lives;
//! - `coord-watcher`: watches every owner's node and reports each event it gets (`watched`).

use std::time::Duration;

use drover_coord::client::{Client, ClientConfig, CreateMode};
use drover_coord::proto::ErrorCode;
use drover_core::{Env, Event};
use drover_sim::{NodeContext, Role};
use rand::Rng;

use crate::coord::CLIENT_PORT;

const KEYS: u32 = 3;

fn connect(context: &NodeContext) -> Client {
    let servers = context
        .cluster
        .of_role("coord")
        .into_iter()
        .map(|n| (n.to_string(), CLIENT_PORT))
        .collect();
    let config = ClientConfig {
        servers,
        session_timeout: Duration::from_secs(6),
        connect_timeout: Duration::from_secs(1),
        auth: Vec::new(),
        acl: vec![drover_coord::proto::Acl::open()],
    };
    Client::start(context.env.clone(), config)
}

/// A client whose session works, made anew after an expiry.
async fn session(context: &NodeContext, client: &mut Client) {
    loop {
        if client.state().is_final() {
            context.env.emit(Event::new("session_lost"));
            *client = connect(context);
        }
        if client.wait_connected().await.is_ok() {
            return;
        }
    }
}

/// Calls `call` with a working session until it succeeds.
async fn retried<T, F: std::future::Future<Output = Result<T, ErrorCode>>>(
    context: &NodeContext,
    client: &mut Client,
    mut call: impl FnMut(Client) -> F,
) -> T {
    loop {
        session(context, client).await;
        match call(client.clone()).await {
            Ok(done) => return done,
            Err(_) => pause(&context.env, 100, 300).await,
        }
    }
}

fn pause(env: &Env, low_ms: u64, high_ms: u64) -> tokio::time::Sleep {
    let ms = env.rng().random_range(low_ms..high_ms);
    tokio::time::sleep(Duration::from_millis(ms))
}

pub fn writer() -> Role {
    Role::new("coord-writer", None, |mut context| {
        Box::pin(async move {
            let env = context.env.clone();
            let mut client = connect(&context);
            session(&context, &mut client).await;
            // Setup, not recorded: the registers exist (empty, version 0) before anyone uses them.
            for k in 0..KEYS {
                let path = format!("/registers/k{k}");
                retried(&context, &mut client, |c| {
                    let path = path.clone();
                    async move { c.ensure_path(&path).await }
                })
                .await;
            }
            let mut n = 0u64;
            loop {
                tokio::select! {
                    biased;
                    _ = context.shutdown.requested() => return Ok(()),
                    _ = pause(&env, 20, 200) => {}
                }
                session(&context, &mut client).await;
                n += 1;
                let key = env.rng().random_range(0..KEYS);
                let path = format!("/registers/k{key}");
                let roll = env.rng().random_range(0..10u32);
                let call = Event::new("call")
                    .with("n", n)
                    .with("key", format!("k{key}"));
                if roll < 4 {
                    // sync, then read: a read that reflects every write committed before it began
                    // (a plain read may come from a lagging server, which ZooKeeper allows).
                    env.emit(call.with("op", "read"));
                    let synced = client.sync(&path).await;
                    let read = match synced {
                        Ok(()) => client.get_data(&path).await,
                        Err(e) => Err(e),
                    };
                    let ret = match read {
                        Ok((data, stat)) => Event::new("ret")
                            .with("result", "read")
                            .with("value", shown(&data))
                            .with("version", stat.version),
                        Err(_) => Event::new("ret").with("result", "error"),
                    };
                    env.emit(ret.with("n", n));
                } else if roll < 7 {
                    let value = format!("{}-{n}", context.name);
                    env.emit(call.with("op", "write").with("value", &value));
                    let ret = match client.set_data(&path, value.as_bytes(), -1).await {
                        Ok(stat) => Event::new("ret")
                            .with("result", "written")
                            .with("version", stat.version),
                        Err(_) => Event::new("ret").with("result", "unknown"),
                    };
                    env.emit(ret.with("n", n));
                } else {
                    // Compare-and-set from a version read just before (a plain read, not recorded:
                    // only the compare-and-set itself must be linearizable).
                    let Ok((_, stat)) = client.get_data(&path).await else {
                        continue;
                    };
                    let version = stat.version;
                    let value = format!("{}-{n}", context.name);
                    let call = Event::new("call")
                        .with("n", n)
                        .with("key", format!("k{key}"));
                    env.emit(
                        call.with("op", "cas")
                            .with("expect", version)
                            .with("value", &value),
                    );
                    let ret = match client.set_data(&path, value.as_bytes(), version).await {
                        Ok(stat) => Event::new("ret")
                            .with("result", "written")
                            .with("version", stat.version),
                        Err(ErrorCode::BadVersion) => {
                            Event::new("ret").with("result", "cas-failed")
                        }
                        Err(_) => Event::new("ret").with("result", "unknown"),
                    };
                    env.emit(ret.with("n", n));
                }
            }
        })
    })
}

/// Empty data is the register's initial state.
fn shown(data: &[u8]) -> String {
    if data.is_empty() {
        "-".to_string()
    } else {
        String::from_utf8_lossy(data).into_owned()
    }
}

pub fn owner() -> Role {
    Role::new("coord-owner", None, |mut context| {
        Box::pin(async move {
            let env = context.env.clone();
            let mut client = connect(&context);
            let path = format!("/owners/{}", context.name);
            // Own the node; when the session is lost, own it again with a new one (as a service
            // registers itself again).
            loop {
                let owned = retried(&context, &mut client, |c| {
                    let path = path.clone();
                    async move {
                        c.ensure_path("/owners").await?;
                        match c.create(&path, b"", CreateMode::Ephemeral).await {
                            Ok(_) | Err(ErrorCode::NodeExists) => Ok(c.session_id()),
                            Err(e) => Err(e),
                        }
                    }
                })
                .await;
                env.emit(
                    Event::new("owns")
                        .with("path", &path)
                        .with("session", format!("{owned:#x}")),
                );
                let mut states = client.watch_state();
                loop {
                    tokio::select! {
                        biased;
                        _ = context.shutdown.requested() => return Ok(()),
                        changed = states.changed() => {
                            if changed.is_err() {
                                break;
                            }
                            let state = *states.borrow_and_update();
                            env.emit(Event::new("client").with("state", format!("{state:?}")));
                            if state.is_final() {
                                break;
                            }
                        }
                    }
                }
            }
        })
    })
}

pub fn watcher() -> Role {
    Role::new("coord-watcher", None, |mut context| {
        Box::pin(async move {
            let env = context.env.clone();
            let mut client = connect(&context);
            session(&context, &mut client).await;
            let session_id = client.session_id();
            env.emit(Event::new("session").with("id", format!("{session_id:#x}")));
            let owners: Vec<String> = context
                .cluster
                .of_role("coord-owner")
                .iter()
                .map(|o| format!("/owners/{o}"))
                .collect();
            let mut pending = Vec::new();
            for path in &owners {
                let (stat, fired) = retried(&context, &mut client, |c| {
                    let path = path.clone();
                    async move { c.exists_watch(&path).await }
                })
                .await;
                env.emit(
                    Event::new("watching")
                        .with("path", path)
                        .with("exists", stat.is_some()),
                );
                pending.push((path.clone(), fired));
            }
            let mut states = client.watch_state();
            loop {
                tokio::select! {
                    biased;
                    _ = context.shutdown.requested() => return Ok(()),
                    changed = states.changed() => {
                        if changed.is_ok() {
                            let state = *states.borrow_and_update();
                            env.emit(Event::new("client").with("state", format!("{state:?}")).with("session", format!("{:#x}", client.session_id())));
                        } else {
                            // The client is gone (its session ended): a new one, watched anew.
                            // (Polling the closed channel again would spin without time passing.)
                            session(&context, &mut client).await;
                            states = client.watch_state();
                        }
                    }
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                let mut still = Vec::new();
                let mut rearm = Vec::new();
                for (path, mut fired) in pending.drain(..) {
                    match fired.try_recv() {
                        Ok(event) => {
                            rearm.push(path);
                            let kind = match event.kind {
                                1 => "created",
                                2 => "deleted",
                                3 => "changed",
                                _ => "children",
                            };
                            env.emit(
                                Event::new("watched")
                                    .with("kind", kind)
                                    .with("path", &event.path)
                                    .with("session", format!("{:#x}", client.session_id())),
                            );
                        }
                        Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                            still.push((path, fired))
                        }
                        // The session ended and took the watch with it: set it again.
                        Err(_) => rearm.push(path),
                    }
                }
                pending = still;
                // Watches are one-shot: set each fired one again, as ZooKeeper users do.
                for path in rearm {
                    session(&context, &mut client).await;
                    if let Ok((_, fired)) = client.exists_watch(&path).await {
                        pending.push((path, fired));
                    }
                }
            }
        })
    })
}
