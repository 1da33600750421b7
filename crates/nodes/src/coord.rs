//! `drover coord`: a ZooKeeper-compatible coordination server, live or simulated.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use drover_coord::server::{self, Config};
use drover_sim::Role;

/// The client port and the peer port, as in ZooKeeper.
pub const CLIENT_PORT: u16 = 2181;
pub const PEER_PORT: u16 = 2888;
/// Entries between snapshots in simulation (live: the server's default).
const SIM_SNAPSHOT_EVERY: u64 = 300;

#[derive(Args)]
pub struct CoordArgs {
    /// This server's id among the peers.
    #[arg(long, default_value_t = 1)]
    id: u64,
    /// Every server of the ensemble: `1=HOST:PORT,2=HOST:PORT,3=HOST:PORT` (peer ports). Without
    /// it, a single server.
    #[arg(long)]
    peers: Option<String>,
    #[arg(long, default_value_t = CLIENT_PORT)]
    client_port: u16,
    /// Where the raft log and snapshots live.
    #[arg(long, default_value = "drover-coord")]
    work_dir: PathBuf,
    /// A file holding the ensemble's shared secret: both ends of a peer connection prove they
    /// hold it (HMAC-SHA256 of both ends' fresh nonces) before any raft message crosses, and each
    /// frame after that carries a MAC under a key of that connection. All servers of an ensemble
    /// need the same file; a trailing newline is not part of the secret. Without it, whoever
    /// reaches the peer port can write to the tree past every ACL.
    #[arg(long)]
    peer_secret_file: Option<PathBuf>,
    /// ZooKeeper's `superDigest`: the digest id `super:BASE64(SHA1(super:PASSWORD))` (as
    /// `drover_coord::acl::digest` or ZooKeeper's `DigestAuthenticationProvider` print it); a
    /// client that authenticates as that user passes every ACL.
    #[arg(long, alias = "superDigest", value_parser = parse_super_digest)]
    super_digest: Option<String>,
    /// ZooKeeper's `maxClientCnxns`: client connections from one address at once (0: no limit).
    #[arg(long, alias = "maxClientCnxns", default_value_t = server::DEFAULT_MAX_CLIENT_CNXNS)]
    max_client_cnxns: usize,
    /// ZooKeeper's tickTime in ms: session timeouts are kept within 2 to 20 ticks.
    #[arg(long, default_value_t = 2000)]
    tick_time: u64,
}

/// `user:base64(sha1)`: 28 characters of base64 after the user's name.
pub fn parse_super_digest(text: &str) -> Result<String, String> {
    use base64::Engine as _;
    let (user, hash) = text
        .split_once(':')
        .ok_or("expected USER:BASE64_SHA1 (a digest id, not a password)")?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(hash);
    if user.is_empty() || !matches!(decoded, Ok(bytes) if bytes.len() == 20) {
        return Err("expected USER:BASE64_SHA1, the hash 28 characters of base64 (a digest id, not a password)".into());
    }
    Ok(text.to_string())
}

/// Parses `1=host:2888,2=host:2888`.
pub fn parse_peers(text: &str) -> anyhow::Result<BTreeMap<u64, (String, u16)>> {
    let mut peers = BTreeMap::new();
    for item in text.split(',').filter(|s| !s.trim().is_empty()) {
        let (id, address) = item
            .trim()
            .split_once('=')
            .with_context(|| format!("peer {item:?}: expected ID=HOST:PORT"))?;
        let id: u64 = id
            .parse()
            .with_context(|| format!("peer {item:?}: the id must be a number"))?;
        let (host, port) = address
            .rsplit_once(':')
            .with_context(|| format!("peer {item:?}: expected HOST:PORT after `=`"))?;
        let port: u16 = port
            .parse()
            .with_context(|| format!("peer {item:?}: the port must be a number"))?;
        if peers.insert(id, (host.to_string(), port)).is_some() {
            anyhow::bail!("peer id {id} is listed twice");
        }
    }
    Ok(peers)
}

pub async fn main(
    args: CoordArgs,
    shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> anyhow::Result<()> {
    let mut config = match &args.peers {
        Some(peers) => Config {
            id: args.id,
            peers: parse_peers(peers)?,
            client_port: args.client_port,
            ..Config::default()
        },
        None => Config::single(args.client_port),
    };
    config.tick_time_ms = args.tick_time;
    if let Some(file) = &args.peer_secret_file {
        let text = std::fs::read(file)
            .with_context(|| format!("--peer-secret-file {}", file.display()))?;
        let secret = text.strip_suffix(b"\n").unwrap_or(&text).to_vec();
        if secret.is_empty() {
            anyhow::bail!("--peer-secret-file {}: the secret is empty", file.display());
        }
        config.peer_secret = Some(drover_core::auth::Secret::new(&secret));
    } else if config.peers.len() > 1 {
        tracing::warn!(
            "peers are not authenticated (no --peer-secret-file): whoever reaches the peer port \
             can join the ensemble and write past every ACL"
        );
    }
    config.super_digest = args.super_digest.clone();
    config.max_client_cnxns = args.max_client_cnxns;
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("create the work dir {}", args.work_dir.display()))?;
    let env = drover_core::env::live::env(&format!("coord-{}", args.id), &args.work_dir, None);
    tracing::info!(id = config.id, client_port = config.client_port, peers = ?config.peers, "coord starting");
    server::serve(env, config, shutdown)
        .await
        .context("coord server")
}

/// The coord role in simulation: `coord-N` is server N; peers are the other `coord-*` nodes.
pub fn role() -> Role {
    Role::new("coord", None, |mut context| {
        Box::pin(async move {
            let peers = context
                .cluster
                .of_role("coord")
                .iter()
                .enumerate()
                .map(|(i, name)| (i as u64 + 1, (name.to_string(), PEER_PORT)))
                .collect();
            // Snapshots often, so scenarios exercise compaction, recovery from a snapshot and sending
            // one to a follower that fell behind.
            let config = Config {
                id: u64::from(context.index),
                peers,
                client_port: CLIENT_PORT,
                snapshot_every: SIM_SNAPSHOT_EVERY,
                peer_secret: context
                    .cluster
                    .auth
                    .as_ref()
                    .map(|auth| drover_core::auth::Secret::new(auth.secret.as_bytes())),
                ..Config::default()
            };
            let env = context.env.clone();
            server::serve(
                env,
                config,
                async move { context.shutdown.requested().await },
            )
            .await?;
            Ok(())
        })
    })
}
