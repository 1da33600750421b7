//! `drover scheduler`: the Marathon-compatible scheduler, live or simulated.

use anyhow::Context;
use clap::Args;
use drover_coord::url::ZkUrl;
use drover_core::auth::Credential;
use drover_core::auth::Credentials;
use drover_master::client::Locator;
use drover_scheduler::core::Tuning;
use drover_scheduler::daemon::{Config, HttpAuth};
use drover_sim::Role;

pub use drover_scheduler::daemon::DEFAULT_PORT as PORT;

#[derive(Args, Clone)]
pub struct SchedulerArgs {
    /// The master: `zk://HOST:PORT[,...]/PATH` (follows the elected leader) or `HOST:PORT`.
    #[arg(long)]
    pub master: String,
    /// `zk://HOST:PORT[,...]/PATH` where the scheduler keeps its state and elects its leader.
    #[arg(long, default_value = "zk://127.0.0.1:2181/marathon")]
    pub zk: String,
    /// The address to listen on (and to publish, unless --hostname is given).
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: String,
    #[arg(long, default_value_t = PORT)]
    pub http_port: u16,
    /// The name other schedulers and clients reach this one by (default: --ip).
    #[arg(long)]
    pub hostname: Option<String>,
    /// The framework name registered with the master.
    #[arg(long, default_value = "marathon")]
    pub framework_name: String,
    /// A task not RUNNING this long (ms) after its launch is killed and replaced.
    #[arg(long, default_value_t = 300_000)]
    pub task_launch_timeout: u64,
    /// Implicit reconciliation with the master every this many ms.
    #[arg(long, default_value_t = 600_000)]
    pub reconciliation_interval: u64,
    /// A kill no terminal state answered within this many ms is sent again.
    #[arg(long, default_value_t = 10_000)]
    pub kill_retry_timeout: u64,
    /// At most this many launches per --launch-token-refresh-interval (Marathon's
    /// `launch_tokens`, a throttle: Marathon's own default is 100 per 30 s).
    #[arg(long, default_value_t = Tuning::default().launch_tokens)]
    pub launch_tokens: u32,
    /// How often (ms) the launch tokens are refilled.
    #[arg(long, default_value_t = Tuning::default().launch_token_interval_ms)]
    pub launch_token_refresh_interval: u64,
    /// Marathon's `--http_credentials USER:PASSWORD`: every request but `GET /ping` must carry
    /// them (HTTP Basic), or gets 401.
    #[arg(long, alias = "http_credentials")]
    pub http_credentials: Option<String>,
    /// The realm named in the 401 challenge (Marathon's `--http_realm`).
    #[arg(long, alias = "http_realm", default_value = "Mesosphere")]
    pub http_realm: String,
    /// The principal the scheduler subscribes to the master as (Marathon's
    /// `--mesos_authentication_principal`).
    #[arg(long, alias = "mesos_authentication_principal")]
    pub mesos_authentication_principal: Option<String>,
    /// A file holding the principal's secret (Marathon's `--mesos_authentication_secret_file`;
    /// a trailing newline is not part of it).
    #[arg(long, alias = "mesos_authentication_secret_file")]
    pub mesos_authentication_secret_file: Option<std::path::PathBuf>,
}

/// The principal and secret of `--mesos-authentication-*`, both or neither.
fn mesos_auth(args: &SchedulerArgs) -> anyhow::Result<Option<Credential>> {
    match (
        &args.mesos_authentication_principal,
        &args.mesos_authentication_secret_file,
    ) {
        (None, None) => Ok(None),
        (Some(principal), Some(file)) => {
            let secret = std::fs::read_to_string(file).with_context(|| {
                format!("--mesos-authentication-secret-file {}", file.display())
            })?;
            let secret = secret.strip_suffix('\n').unwrap_or(&secret);
            if secret.is_empty() {
                anyhow::bail!(
                    "--mesos-authentication-secret-file {}: the secret is empty",
                    file.display()
                );
            }
            Ok(Some(Credential {
                principal: principal.clone(),
                secret: secret.to_string(),
            }))
        }
        _ => anyhow::bail!(
            "--mesos-authentication-principal and --mesos-authentication-secret-file go together"
        ),
    }
}

/// Reads `--master`: a `zk://` URL or `HOST:PORT`.
pub fn locator(master: &str) -> anyhow::Result<Locator> {
    master
        .parse::<Locator>()
        .map_err(|e| anyhow::anyhow!("--master: {e}"))
}

pub async fn main(
    args: SchedulerArgs,
    shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> anyhow::Result<()> {
    let zk = args.zk.parse::<ZkUrl>().map_err(anyhow::Error::msg)?;
    let bind = format!("{}:{}", args.ip, args.http_port)
        .parse()
        .with_context(|| format!("--ip {:?}: expected an IP address", args.ip))?;
    let hostname = args.hostname.clone().unwrap_or_else(|| args.ip.clone());
    let work_dir = std::env::temp_dir().join(format!("drover-scheduler-{}", args.http_port));
    std::fs::create_dir_all(&work_dir).with_context(|| format!("create {}", work_dir.display()))?;
    let env = drover_core::env::live::env(
        &format!("scheduler@{hostname}:{}", args.http_port),
        &work_dir,
        None,
    );
    let master = locator(&args.master)?;
    // The parsed forms: their Debug leaves out a zk:// URL's password.
    tracing::info!(%bind, ?master, ?zk, "scheduler starting");
    let config = Config {
        bind,
        hostname,
        port: args.http_port,
        master,
        zk,
        framework_name: args.framework_name.clone(),
        tuning: Tuning {
            launch_timeout_ms: args.task_launch_timeout,
            reconcile_interval_ms: args.reconciliation_interval,
            kill_retry_ms: args.kill_retry_timeout,
            launch_tokens: args.launch_tokens,
            launch_token_interval_ms: args.launch_token_refresh_interval.max(1),
            ..Tuning::default()
        },
        http_auth: match &args.http_credentials {
            Some(pair) => Some(HttpAuth {
                credentials: Credentials::pair(pair)
                    .map_err(|e| anyhow::anyhow!("--http-credentials: {e}"))?,
                realm: args.http_realm.clone(),
            }),
            None => None,
        },
        mesos_auth: mesos_auth(&args)?,
    };
    drover_scheduler::process::serve(env, config, shutdown)
        .await
        .context("scheduler")
}

/// The scheduler role in simulation: state and election in the scenario's coord nodes, the
/// master found through them.
pub fn role() -> Role {
    Role::new("scheduler", Some(PORT), |mut context| {
        Box::pin(async move {
            let master_zk =
                crate::master::sim_zk(&context.cluster).ok_or("a scheduler needs coord nodes")?;
            // A secured cluster: the API needs the operator's credentials, the scheduler proves
            // `marathon` to the master, and its znodes are CREATOR_ALL under that digest.
            let secured = context.cluster.auth.clone();
            let zk = ZkUrl {
                hosts: master_zk.hosts.clone(),
                path: "/marathon".into(),
                credentials: secured.as_ref().map(|a| format!("marathon:{}", a.secret)),
            };
            let config = Config {
                bind: std::net::SocketAddr::from(([0, 0, 0, 0], PORT)),
                hostname: context.name.clone(),
                port: PORT,
                master: Locator::Zk(master_zk),
                zk,
                framework_name: "marathon".into(),
                tuning: Tuning::default(),
                http_auth: secured.as_ref().map(|auth| HttpAuth {
                    credentials: auth.operator_credentials(),
                    realm: "Mesosphere".into(),
                }),
                mesos_auth: secured.map(|auth| Credential {
                    principal: "marathon".into(),
                    secret: auth.secret,
                }),
            };
            let env = context.env.clone();
            drover_scheduler::process::serve(env, config, async move {
                context.shutdown.requested().await
            })
            .await?;
            Ok(())
        })
    })
}
