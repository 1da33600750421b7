//! `drover master`: the Mesos-like master, live or simulated.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use drover_coord::url::ZkUrl;
use drover_core::auth::Credentials;
use drover_master::core::Tuning;
use drover_master::daemon::{self, Config};
use drover_sim::Role;

pub use drover_master::daemon::DEFAULT_PORT as PORT;

#[derive(Args)]
pub struct MasterArgs {
    /// The address to listen on (and to publish, unless --hostname is given).
    #[arg(long, default_value = "127.0.0.1")]
    ip: String,
    #[arg(long, default_value_t = PORT)]
    port: u16,
    /// The name frameworks and agents reach this master by (default: --ip).
    #[arg(long)]
    hostname: Option<String>,
    /// `zk://HOST:PORT[,HOST:PORT...]/PATH`: elect the leading master through coord or
    /// ZooKeeper. Without it the master runs alone and always leads.
    #[arg(long)]
    zk: Option<String>,
    /// Where a master without --zk keeps its registry of agents.
    #[arg(long, default_value = "drover-master")]
    work_dir: PathBuf,
    /// The number of masters of the ensemble (informational: coord decides who leads).
    #[arg(long)]
    quorum: Option<u32>,
    /// How often the allocator runs (besides after events), e.g. `1s`, `500ms`.
    #[arg(long, default_value = "1s")]
    allocation_interval: String,
    /// How often agents are pinged; after 5 missed pings an agent is unreachable.
    #[arg(long, default_value = "15s")]
    agent_ping_timeout: String,
    /// After a failover, offers wait for 80% of the known agents or this long.
    #[arg(long, default_value = "10mins")]
    agent_reregister_timeout: String,
    /// Rescind offers not answered within this long (default: never).
    #[arg(long)]
    offer_timeout: Option<String>,
    /// Principals and secrets, as Mesos reads them: JSON
    /// `{"credentials": [{"principal": .., "secret": ..}]}` or lines of `principal secret`.
    #[arg(long, alias = "credentials")]
    credentials: Option<PathBuf>,
    /// v1 scheduler API calls must carry HTTP Basic credentials (Mesos'
    /// `--authenticate_http_frameworks`; `--authenticate-frameworks` is taken as the same, as
    /// drover's frameworks all speak HTTP).
    #[arg(
        long,
        alias = "authenticate_http_frameworks",
        alias = "authenticate-frameworks",
        alias = "authenticate_frameworks"
    )]
    authenticate_http_frameworks: bool,
    /// `/master/state`, `/metrics/snapshot`, the web UI and `/files` need credentials.
    #[arg(long, alias = "authenticate_http_readonly")]
    authenticate_http_readonly: bool,
    /// The v1 operator API (`/api/v1`) needs credentials.
    #[arg(long, alias = "authenticate_http_readwrite")]
    authenticate_http_readwrite: bool,
    /// Agents must prove a principal's secret (from --credentials) before they register; their
    /// `--credential` answers a fresh challenge on each connection.
    #[arg(
        long,
        alias = "authenticate_agents",
        alias = "authenticate-slaves",
        alias = "authenticate_slaves"
    )]
    authenticate_agents: bool,
}

/// The `--credentials` and `--authenticate-*` flags; a switch without credentials is refused.
fn auth(args: &MasterArgs) -> anyhow::Result<daemon::Auth> {
    let credentials = match &args.credentials {
        Some(path) => Some(Credentials::load(path).map_err(anyhow::Error::msg)?),
        None => None,
    };
    let auth = daemon::Auth {
        credentials,
        frameworks: args.authenticate_http_frameworks,
        readonly: args.authenticate_http_readonly,
        readwrite: args.authenticate_http_readwrite,
        agents: args.authenticate_agents,
    };
    let switched = auth.frameworks || auth.readonly || auth.readwrite || auth.agents;
    if switched && auth.credentials.is_none() {
        anyhow::bail!("--authenticate-* needs --credentials FILE (nobody could authenticate)");
    }
    Ok(auth)
}

fn duration_ms(flag: &str, text: &str) -> anyhow::Result<u64> {
    // Mesos writes `1secs`, `10mins`: accept those next to `1s`, `500ms`, `10m`.
    let normal = text
        .replace("secs", "s")
        .replace("mins", "m")
        .replace("hrs", "h");
    let ms = drover_sim::scenario::parse_duration_ms(&normal, false)
        .map_err(|e| anyhow::anyhow!("--{flag} {text:?}: {e}"))?;
    Ok(ms as u64)
}

pub async fn main(
    args: MasterArgs,
    shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> anyhow::Result<()> {
    let zk = match &args.zk {
        Some(url) => Some(url.parse::<ZkUrl>().map_err(anyhow::Error::msg)?),
        None => None,
    };
    let tuning = Tuning {
        allocation_interval_ms: duration_ms("allocation-interval", &args.allocation_interval)?,
        agent_ping_timeout_ms: duration_ms("agent-ping-timeout", &args.agent_ping_timeout)?,
        agent_reregister_timeout_ms: duration_ms(
            "agent-reregister-timeout",
            &args.agent_reregister_timeout,
        )?,
        offer_timeout_ms: match &args.offer_timeout {
            Some(t) => Some(duration_ms("offer-timeout", t)?),
            None => None,
        },
        ..Tuning::default()
    };
    let bind = format!("{}:{}", args.ip, args.port)
        .parse()
        .with_context(|| format!("--ip {:?}: expected an IP address", args.ip))?;
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("create the work dir {}", args.work_dir.display()))?;
    let hostname = args.hostname.clone().unwrap_or_else(|| args.ip.clone());
    let env = drover_core::env::live::env(
        &format!("master@{hostname}:{}", args.port),
        &args.work_dir,
        None,
    );
    tracing::info!(%bind, zk = ?zk, quorum = ?args.quorum, "master starting");
    let config = Config {
        bind,
        hostname,
        port: args.port,
        zk,
        tuning,
        auth: auth(&args)?,
    };
    daemon::serve(env, config, shutdown).await.context("master")
}

/// `zk://coord-1:2181,.../mesos` for a simulated cluster with coord nodes.
pub fn sim_zk(cluster: &drover_sim::cluster::ClusterMap) -> Option<ZkUrl> {
    let coords = cluster.of_role("coord");
    if coords.is_empty() {
        return None;
    }
    let hosts: Vec<String> = coords
        .iter()
        .map(|c| format!("{c}:{}", crate::coord::CLIENT_PORT))
        .collect();
    Some(ZkUrl {
        hosts: hosts.join(","),
        path: "/mesos".into(),
        credentials: None,
    })
}

/// The master role in simulation: elected through the scenario's coord nodes (when it has some).
pub fn role() -> Role {
    Role::new("master", Some(PORT), |mut context| {
        Box::pin(async move {
            // A secured cluster: agents and frameworks authenticate, the master's znodes are
            // Mesos' EVERYONE_READ_CREATOR_ALL under the `mesos` digest. (The operator endpoints
            // stay open: the DNS role follows the operator stream.)
            let secured = context.cluster.auth.as_ref();
            let mut zk = sim_zk(&context.cluster);
            if let (Some(zk), Some(auth)) = (zk.as_mut(), secured) {
                zk.credentials = Some(format!("mesos:{}", auth.secret));
            }
            let auth = match secured {
                Some(auth) => daemon::Auth {
                    credentials: Some(auth.credentials()),
                    frameworks: true,
                    agents: true,
                    ..daemon::Auth::default()
                },
                None => daemon::Auth::default(),
            };
            let config = Config {
                bind: std::net::SocketAddr::from(([0, 0, 0, 0], PORT)),
                hostname: context.name.clone(),
                port: PORT,
                zk,
                tuning: Tuning::default(),
                auth,
            };
            let env = context.env.clone();
            daemon::serve(
                env,
                config,
                async move { context.shutdown.requested().await },
            )
            .await?;
            Ok(())
        })
    })
}
