//! The scheduler as a process: its HTTP API ([`crate::api`]) and its core ([`crate::daemon`]:
//! the leader campaign, the store, the state machine's task) started together. The API reaches
//! the core through [`daemon::Shared`]; the core knows nothing of HTTP.

use std::io;
use std::sync::{Arc, Mutex};

use drover_core::Env;
use tokio::sync::{broadcast, mpsc};

use crate::daemon::{self, Config};

/// Runs a scheduler until `shutdown` resolves.
pub async fn serve(
    env: Env,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let listener = env.bind(config.bind).await?;
    let (inputs, receiver) = mpsc::channel(1024);
    let (events, _) = broadcast::channel(1024);
    let shared = daemon::Shared {
        inputs: inputs.clone(),
        env: env.clone(),
        config: config.clone(),
        events: events.clone(),
        leader: Arc::new(Mutex::new(None)),
    };
    let router = crate::api::router(shared.clone());
    let http = drover_core::env::spawn(async move {
        let _ = drover_core::http::serve(listener, router, std::future::pending()).await;
    });
    let (abdicate_tx, abdicate_rx) = mpsc::channel(4);
    drover_core::env::spawn(daemon::campaign(
        env.clone(),
        config.clone(),
        inputs.clone(),
        shared.leader.clone(),
        abdicate_rx,
    ));
    drop(inputs);
    daemon::core(env, config, receiver, events, abdicate_tx, shutdown).await;
    http.abort();
    Ok(())
}
