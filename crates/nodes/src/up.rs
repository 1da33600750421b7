//! `drover up`: a whole local cluster in one process, for trying drover out and for live tests.
//!
//! One coord, one master, two agents (`od1000-0`, `od1000-1`) and one scheduler run on one
//! multi-threaded runtime, each through the same `main` its own subcommand calls (its arguments
//! are parsed from an argv built here, so `up` starts exactly what `drover agent ...` would).
//! One shutdown stops them all. The tasks the agents started are killed when the cluster stops:
//! nothing outlives `up` (an agent on its own leaves them running for its next incarnation).

use std::future::Future;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser};
use drover_agent::checkpoint::{TaskCheckpoint, TASKS_PREFIX};
use drover_agent::containerizer::live::docker::{DockerContainerizer, DockerTasks};
use drover_agent::containerizer::live::mesos::MesosContainerizer;
use drover_agent::containerizer::{Containerizer, Kind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::{agent, coord, master, scheduler};

/// The agents' names, in the order of `--agent-ports`.
const AGENT_NAME_PREFIX: &str = "od1000-";
/// The agents share the host, so each offers its own host ports: agent `i` offers
/// `[31000 + 1000 i, 31999 + 1000 i]`.
const FIRST_HOST_PORT: u32 = 31_000;
const HOST_PORTS_PER_AGENT: u32 = 1_000;
const MAX_AGENTS: usize = 16;
/// What each agent offers unless `--resources` says, before its ports.
const DEFAULT_RESOURCES: &str = "cpus:4;mem:8192;disk:100000";
/// How long the cluster may take to be ready (elected master, agents registered, scheduler
/// registered as a framework) before `up` gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the daemons may take to stop, and then the tasks to die, after a shutdown.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const TASK_KILL_GRACE: Duration = Duration::from_secs(3);
/// The seed's app definition, relative to a checkout of the repository.
const SEED_APPS: &str = "apps/basic.json";

#[derive(Args)]
pub struct UpArgs {
    /// The address every daemon listens on and is reached by.
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: IpAddr,
    /// coord's client port (ZooKeeper's).
    #[arg(long, default_value_t = coord::CLIENT_PORT)]
    pub coord_port: u16,
    #[arg(long, default_value_t = master::PORT)]
    pub master_port: u16,
    /// One agent per port: `od1000-0` on the first, `od1000-1` on the second, ...
    #[arg(long, value_delimiter = ',', default_value = "5051,5052")]
    pub agent_ports: Vec<u16>,
    /// The scheduler's (Marathon's) HTTP port.
    #[arg(long, default_value_t = scheduler::PORT)]
    pub http_port: u16,
    /// The DNS server's UDP port, on every address (containers ask it at their network's
    /// gateway); 0: no DNS. Where it cannot listen (port 53 needs root), `up` goes on without.
    #[arg(long, default_value_t = drover_dns::PORT)]
    pub dns_port: u16,
    /// Mesos-DNS' HTTP API port (on `--ip`); 0: none.
    #[arg(long, default_value_t = drover_dns::http::PORT)]
    pub dns_http_port: u16,
    /// Where the DNS forwards names outside its domains (`IP` or `IP:PORT`, repeatable; the
    /// host's own resolver, say, so that containers resolve the world too). None by default.
    #[arg(long = "dns-upstream", value_parser = crate::dns::parse_upstream)]
    pub dns_upstreams: Vec<std::net::SocketAddr>,
    /// Every daemon's state lives under it (`coord/`, `master/`, `od1000-N/`); kept after the
    /// cluster stops. Default: a fresh directory under the system's temp dir, removed at the end.
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Run tasks as processes only, even when a Docker engine answers.
    #[arg(long)]
    pub no_docker: bool,
    /// The Docker network the tasks' containers join (made when missing, and then removed at the
    /// end): they reach each other by address across the agents.
    #[arg(long, default_value = drover_agent::containerizer::live::docker::DEFAULT_NETWORK)]
    pub docker_network: String,
    /// What every agent offers, Mesos' text form (default:
    /// `cpus:4;mem:8192;disk:100000;ports:[31000-31999]` for the first agent, the next thousand
    /// ports for the next, so the agents of this one host never hand out the same port).
    #[arg(long)]
    pub resources: Option<String>,
    /// Every daemon authenticates, with one fresh secret written under the work dir's `auth/`
    /// (mode 0600): agents to the master (`--authenticate-agents`), the scheduler to the master
    /// as principal `marathon`, frameworks on the v1 API, callers of the Marathon API as
    /// `operator` (HTTP Basic), and the master's and scheduler's nodes in coord under digest ACLs.
    /// The master's read-only endpoints stay open (`drover dns` follows them).
    #[arg(long)]
    pub secure: bool,
}

/// Parses one daemon's arguments the way its own subcommand does.
#[derive(Parser)]
#[command(no_binary_name = true)]
struct Argv<T: Args> {
    #[command(flatten)]
    args: T,
}

fn parse<T: Args>(role: &str, argv: &[String]) -> anyhow::Result<T> {
    Argv::<T>::try_parse_from(argv)
        .map(|a| a.args)
        .with_context(|| format!("the {role}'s arguments {argv:?}"))
}

/// One agent of the cluster.
#[derive(Clone)]
struct AgentPlan {
    name: String,
    port: u16,
    work_dir: PathBuf,
    resources: String,
}

/// Everything `up` starts, decided before anything starts.
struct Plan {
    ip: String,
    coord_port: u16,
    master_port: u16,
    http_port: u16,
    work_dir: PathBuf,
    /// The work dir was made for this run (and goes with it).
    temporary: bool,
    agents: Vec<AgentPlan>,
    docker_network: String,
    /// With `--secure`: the cluster's one secret, for every principal.
    secret: Option<String>,
}

/// Principals of a `--secure` cluster; each has the cluster's secret.
const PRINCIPALS: [&str; 4] = ["agent", "framework", "marathon", "operator"];

impl Plan {
    fn of(args: &UpArgs) -> anyhow::Result<Plan> {
        if args.agent_ports.is_empty() || args.agent_ports.len() > MAX_AGENTS {
            bail!("--agent-ports: expected 1 to {MAX_AGENTS} ports");
        }
        let mut ports = vec![args.coord_port, args.master_port, args.http_port];
        ports.extend(&args.agent_ports);
        let mut seen = std::collections::BTreeSet::new();
        for port in &ports {
            if !seen.insert(*port) {
                bail!("port {port} is given to two daemons");
            }
        }
        let (work_dir, temporary) = match &args.work_dir {
            Some(dir) => (dir.clone(), false),
            None => (fresh_temp_dir()?, true),
        };
        let work_dir = std::path::absolute(&work_dir)
            .with_context(|| format!("--work-dir {}", work_dir.display()))?;
        let agents = args
            .agent_ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let name = format!("{AGENT_NAME_PREFIX}{i}");
                let resources = match &args.resources {
                    Some(text) => text.clone(),
                    None => {
                        let first = FIRST_HOST_PORT + HOST_PORTS_PER_AGENT * i as u32;
                        let last = first + HOST_PORTS_PER_AGENT - 1;
                        format!("{DEFAULT_RESOURCES};ports:[{first}-{last}]")
                    }
                };
                AgentPlan {
                    work_dir: work_dir.join(&name),
                    name,
                    port: *port,
                    resources,
                }
            })
            .collect();
        Ok(Plan {
            ip: args.ip.to_string(),
            coord_port: args.coord_port,
            master_port: args.master_port,
            http_port: args.http_port,
            work_dir,
            temporary,
            agents,
            docker_network: args.docker_network.clone(),
            secret: args.secure.then(fresh_secret).transpose()?,
        })
    }

    fn zk(&self, path: &str) -> String {
        format!("zk://{}:{}{path}", self.ip, self.coord_port)
    }

    /// `zk://USER:SECRET@...` in a secured cluster (the user's digest protects what it creates).
    fn zk_as(&self, user: &str, path: &str) -> String {
        match &self.secret {
            Some(secret) => format!("zk://{user}:{secret}@{}:{}{path}", self.ip, self.coord_port),
            None => self.zk(path),
        }
    }

    /// Where a secured cluster's credentials files are.
    fn auth_file(&self, name: &str) -> PathBuf {
        self.work_dir.join("auth").join(name)
    }

    /// Writes the secured cluster's files (0600): every principal's `credentials` (Mesos' text
    /// form, the master's), the agent's `agent.credential` and the scheduler's `marathon.secret`.
    fn write_auth_files(&self) -> anyhow::Result<()> {
        let Some(secret) = &self.secret else {
            return Ok(());
        };
        let lines: Vec<String> = PRINCIPALS
            .iter()
            .map(|p| format!("{p} {secret}\n"))
            .collect();
        let dir = self.work_dir.join("auth");
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        for (name, text) in [
            ("credentials", lines.concat()),
            ("agent.credential", format!("agent {secret}\n")),
            ("marathon.secret", secret.clone()),
        ] {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            let path = self.auth_file(name);
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .and_then(|mut file| file.write_all(text.as_bytes()))
                .with_context(|| format!("write {}", path.display()))?;
        }
        Ok(())
    }

    /// The operator's `Authorization` header value in a secured cluster.
    fn operator_authorization(&self) -> Option<String> {
        let secret = self.secret.as_ref()?;
        drover_core::auth::authorization("operator", secret)
            .to_str()
            .ok()
            .map(str::to_string)
    }

    fn coord_argv(&self) -> Vec<String> {
        argv(&[
            "--client-port",
            &self.coord_port.to_string(),
            "--work-dir",
            &path_text(&self.work_dir.join("coord")),
        ])
    }

    fn master_argv(&self) -> Vec<String> {
        let mut args = argv(&[
            "--ip",
            &self.ip,
            "--port",
            &self.master_port.to_string(),
            "--zk",
            &self.zk_as("mesos", agent::MASTER_ZK_PATH),
            "--quorum",
            "1",
            "--work-dir",
            &path_text(&self.work_dir.join("master")),
        ]);
        if self.secret.is_some() {
            args.extend(argv(&[
                "--credentials",
                &path_text(&self.auth_file("credentials")),
                "--authenticate-agents",
                "--authenticate-http-frameworks",
            ]));
        }
        args
    }

    fn agent_argv(&self, agent: &AgentPlan, docker: bool, dns: bool) -> Vec<String> {
        let mut args = argv(&[
            "--ip",
            &self.ip,
            "--port",
            &agent.port.to_string(),
            // The seed's host names (od1000-0, od1000-1): what /master/state, offers, /v2/tasks
            // and hostname constraints show; the agent is reached at --ip.
            "--hostname",
            &agent.name,
            "--master",
            &self.zk(agent::MASTER_ZK_PATH),
            "--resources",
            &agent.resources,
            "--containerizers",
            if docker { "mesos,docker" } else { "mesos" },
            "--docker-network",
            &self.docker_network,
            "--work-dir",
            &path_text(&agent.work_dir),
        ]);
        if docker && dns {
            // Containers ask drover's DNS, which listens at their network's gateway too.
            args.extend(argv(&["--docker-dns", "gateway"]));
        }
        if self.secret.is_some() {
            let credential = path_text(&self.auth_file("agent.credential"));
            args.extend(argv(&["--credential", &credential]));
        }
        args
    }

    fn scheduler_argv(&self) -> Vec<String> {
        let mut args = argv(&[
            "--master",
            &self.zk(agent::MASTER_ZK_PATH),
            "--zk",
            &self.zk_as("marathon", "/marathon"),
            "--ip",
            &self.ip,
            "--http-port",
            &self.http_port.to_string(),
        ]);
        if let Some(secret) = &self.secret {
            let file = path_text(&self.auth_file("marathon.secret"));
            args.extend(argv(&[
                "--http-credentials",
                &format!("operator:{secret}"),
                "--mesos-authentication-principal",
                "marathon",
                "--mesos-authentication-secret-file",
                &file,
            ]));
        }
        args
    }
}

/// 24 bytes from the operating system's randomness, in hex: a `--secure` cluster's secret.
/// 24 bytes from the operating system's random source, in hex.
fn fresh_secret() -> anyhow::Result<String> {
    use rand::TryRngCore as _;
    let mut bytes = [0u8; 24];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .context("the operating system gave no randomness for the cluster's secret")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn argv(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// `<temp>/drover-up-<pid>-<n>`, created empty.
fn fresh_temp_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::temp_dir();
    for n in 0..1000 {
        let dir = base.join(format!("drover-up-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e).with_context(|| format!("create {}", dir.display())),
        }
    }
    bail!("no fresh work dir under {}", base.display())
}

type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A shutdown future per daemon, all resolved by one `stop`.
fn shutdown_of(stop: &watch::Receiver<bool>) -> Shutdown {
    let mut stop = stop.clone();
    Box::pin(async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    })
}

pub async fn main(args: UpArgs, shutdown: Shutdown) -> anyhow::Result<()> {
    let plan = Plan::of(&args)?;
    std::fs::create_dir_all(&plan.work_dir)
        .with_context(|| format!("create the work dir {}", plan.work_dir.display()))?;
    plan.write_auth_files()?;
    // With Docker: whether the tasks' network was there before (else `up` removes it at the end).
    let (docker, had_network) = if args.no_docker {
        (false, true)
    } else {
        match DockerContainerizer::connect("drover-up").await {
            Ok(engine) => {
                let engine = engine.on_network(&plan.docker_network);
                (true, engine.network_exists().await)
            }
            Err(e) => {
                tracing::info!("tasks run as processes only: {e}");
                (false, true)
            }
        }
    };

    let (stop, stopped) = watch::channel(false);
    let mut daemons: JoinSet<(String, anyhow::Result<()>)> = JoinSet::new();
    let coord_args: coord::CoordArgs = parse("coord", &plan.coord_argv())?;
    let master_args: master::MasterArgs = parse("master", &plan.master_argv())?;
    // DNS for the tasks, on every address, if it can listen.
    let dns_env = drover_core::env::live::env("dns", &plan.work_dir, None);
    let dns_socket = match args.dns_port {
        0 => Err("--dns-port 0".to_string()),
        port => dns_env
            .bind_udp(std::net::SocketAddr::from(([0, 0, 0, 0], port)))
            .await
            .map_err(|e| format!("cannot listen on UDP port {port}: {e}")),
    };
    if let Err(why) = &dns_socket {
        tracing::warn!("no DNS for the tasks: {why}");
    }
    // Mesos-DNS' HTTP API beside it, where its port is free.
    let dns_api = match (&dns_socket, args.dns_http_port) {
        (Ok(_), port) if port != 0 => {
            let addr = std::net::SocketAddr::new(args.ip, port);
            match dns_env.bind(addr).await {
                Ok(listener) => Some((
                    listener,
                    serde_json::json!({"Masters": [plan.zk(agent::MASTER_ZK_PATH)],
                        "Port": args.dns_port, "HTTPPort": port, "Domain": "mesos",
                        "Resolvers": args.dns_upstreams.iter().map(|u| u.ip().to_string())
                            .collect::<Vec<_>>()}),
                )),
                Err(e) => {
                    tracing::warn!("no DNS HTTP API on {addr}: {e}");
                    None
                }
            }
        }
        _ => None,
    };
    let agent_args: Vec<(String, agent::AgentArgs)> = plan
        .agents
        .iter()
        .map(|a| {
            let argv = plan.agent_argv(a, docker, dns_socket.is_ok());
            Ok((a.name.clone(), parse("agent", &argv)?))
        })
        .collect::<anyhow::Result<_>>()?;
    let scheduler_args: scheduler::SchedulerArgs = parse("scheduler", &plan.scheduler_argv())?;

    let down = shutdown_of(&stopped);
    drover_core::env::spawn_into(&mut daemons, async move {
        ("coord".into(), coord::main(coord_args, down).await)
    });
    let down = shutdown_of(&stopped);
    drover_core::env::spawn_into(&mut daemons, async move {
        ("master".into(), master::main(master_args, down).await)
    });
    for (name, agent_args) in agent_args {
        let down = shutdown_of(&stopped);
        drover_core::env::spawn_into(&mut daemons, async move {
            (name, agent::main(agent_args, down).await)
        });
    }
    let down = shutdown_of(&stopped);
    drover_core::env::spawn_into(&mut daemons, async move {
        let result = scheduler::main(scheduler_args, down).await;
        ("scheduler".into(), result)
    });
    let dns_note = match dns_socket {
        Ok(socket) => {
            let down = shutdown_of(&stopped);
            let locator = drover_master::client::Locator::Zk(
                plan.zk(agent::MASTER_ZK_PATH)
                    .parse()
                    .map_err(anyhow::Error::msg)?,
            );
            let served = crate::dns::Served {
                socket,
                http: dns_api,
                upstreams: args.dns_upstreams.clone(),
            };
            drover_core::env::spawn_into(&mut daemons, async move {
                (
                    "dns".into(),
                    crate::dns::run(dns_env, locator, served, down).await,
                )
            });
            format!(
                "udp 0.0.0.0:{} (NAME.weave.local, APP-GROUPS.marathon.mesos)",
                args.dns_port
            )
        }
        Err(why) => format!("none: {why}"),
    };

    let mut shutdown = shutdown;
    let outcome: anyhow::Result<()> = tokio::select! {
        biased;
        () = &mut shutdown => Ok(()),
        Some(ended) = daemons.join_next() => Err(early_end(ended)),
        ready = ready(&plan) => match ready {
            Ok(()) => {
                print_banner(&plan, docker, &dns_note);
                tokio::select! {
                    biased;
                    () = &mut shutdown => Ok(()),
                    Some(ended) = daemons.join_next() => Err(early_end(ended)),
                }
            }
            Err(e) => Err(e),
        },
    };

    eprintln!("drover up: stopping");
    let _ = stop.send(true);
    let stopping = async {
        while let Some(ended) = daemons.join_next().await {
            if let Ok((name, Err(e))) = ended {
                tracing::warn!("{name} stopped with an error: {e:#}");
            }
        }
    };
    if tokio::time::timeout(STOP_TIMEOUT, stopping).await.is_err() {
        tracing::warn!("some daemons did not stop within {STOP_TIMEOUT:?}");
        daemons.abort_all();
    }
    let mut cleanups = JoinSet::new();
    for agent in &plan.agents {
        drover_core::env::spawn_into(
            &mut cleanups,
            kill_tasks(plan.ip.clone(), agent.clone(), docker),
        );
    }
    while cleanups.join_next().await.is_some() {}
    if !had_network {
        if let Ok(engine) = DockerContainerizer::connect("drover-up").await {
            engine
                .on_network(&plan.docker_network)
                .remove_network()
                .await;
        }
    }
    if plan.temporary {
        let _ = std::fs::remove_dir_all(&plan.work_dir);
    }
    outcome
}

fn early_end(ended: Result<(String, anyhow::Result<()>), tokio::task::JoinError>) -> anyhow::Error {
    match ended {
        Ok((name, Ok(()))) => anyhow::anyhow!("{name} stopped on its own"),
        Ok((name, Err(e))) => e.context(format!("{name} failed")),
        Err(e) => anyhow::anyhow!("a daemon panicked: {e}"),
    }
}

/// Waits until the master leads with every agent registered and the scheduler leads with its
/// framework registered.
async fn ready(plan: &Plan) -> anyhow::Result<()> {
    let agents = format!("\"activated_slaves\":{}", plan.agents.len());
    let check = async {
        loop {
            let master = get(&plan.ip, plan.master_port, "/master/state", None).await;
            let authorization = plan.operator_authorization();
            let info = get(
                &plan.ip,
                plan.http_port,
                "/v2/info",
                authorization.as_deref(),
            )
            .await;
            let master_ready =
                master.is_some_and(|(status, body)| status == 200 && body.contains(&agents));
            let scheduler_ready = info.is_some_and(|(status, body)| {
                status == 200
                    && body.contains("\"elected\":true")
                    && !body.contains("\"frameworkId\":null")
            });
            if master_ready && scheduler_ready {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    tokio::time::timeout(READY_TIMEOUT, check)
        .await
        .map_err(|_| anyhow::anyhow!("the cluster was not ready within {READY_TIMEOUT:?}"))
}

/// A bare HTTP/1.0 GET (with an `Authorization` header when given): the status and the body.
async fn get(
    host: &str,
    port: u16,
    path: &str,
    authorization: Option<&str>,
) -> Option<(u16, String)> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await.ok()?;
        let credentials = authorization
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let request = format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n{credentials}\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        Some((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

fn print_banner(plan: &Plan, docker: bool, dns: &str) {
    let ip = &plan.ip;
    let agents: Vec<String> = plan
        .agents
        .iter()
        .map(|a| format!("{} http://{ip}:{} ({})", a.name, a.port, a.resources))
        .collect();
    let containerizers = if docker {
        "processes and Docker containers"
    } else {
        "processes only (no Docker engine answers, or --no-docker)"
    };
    let seed = if Path::new(SEED_APPS).is_file() {
        SEED_APPS.to_string()
    } else {
        format!("<checkout>/{SEED_APPS}")
    };
    let work = if plan.temporary {
        format!("{} (removed at the end)", plan.work_dir.display())
    } else {
        format!("{} (kept)", plan.work_dir.display())
    };
    let (auth, curl_user) = match &plan.secret {
        Some(secret) => (
            format!(
                "every daemon authenticates; principals agent, framework, marathon and operator \
                 share the secret in {} (the operator calls Marathon with it)",
                plan.auth_file("credentials").display()
            ),
            format!(" -u operator:{secret}"),
        ),
        None => (
            "none (--secure: every daemon authenticates)".to_string(),
            String::new(),
        ),
    };
    // The one thing `up` writes to stdout: what to use, once it can be used.
    println!(
        "drover up: the cluster is ready\n\
         \x20 Marathon  http://{ip}:{http}\n\
         \x20 master    http://{ip}:{master}\n\
         \x20 coord     {ip}:{coord}\n\
         \x20 agents    {agents}\n\
         \x20 tasks     {containerizers}\n\
         \x20 dns       {dns}\n\
         \x20 work dir  {work}\n\
         \x20 auth      {auth}\n\
         Try the seed's apps (their Docker image ubuntu:16.04 must be local; see the README):\n\
         \x20 curl{curl_user} -X POST http://{ip}:{http}/v2/groups -H 'Content-Type: application/json' -d @{seed}\n\
         Ctrl-C stops the cluster and its tasks.",
        http = plan.http_port,
        master = plan.master_port,
        coord = plan.coord_port,
        agents = agents.join("\n            "),
    );
}

/// Kills what an agent of this cluster still runs, from its checkpoints (the agent has stopped;
/// its tasks have not), with the agent's own containerizers; then removes any container left
/// with the agent's label.
async fn kill_tasks(ip: String, agent: AgentPlan, docker: bool) {
    let meta = agent.work_dir.join("meta");
    let env = drover_core::env::live::env(&format!("up-cleanup-{}", agent.name), &meta, None);
    let mesos: Arc<dyn Containerizer> = Arc::new(MesosContainerizer::new(&agent.work_dir));
    let docker: Option<Arc<dyn Containerizer>> = if docker {
        // The label the agent's Docker containerizer puts on its containers.
        DockerContainerizer::connect(&format!("{}:{}", agent.name, agent.port))
            .await
            .ok()
            .map(|d| Arc::new(DockerTasks::new(d)) as Arc<dyn Containerizer>)
    } else {
        None
    };
    let journal = match drover_agent::journal::load(&env).await {
        Ok((journal, _)) => journal,
        Err((path, e)) => {
            tracing::warn!(%path, error = %e, agent = %agent.name, "cannot read the agent's checkpoints");
            return;
        }
    };
    let mut kills = JoinSet::new();
    for (_, bytes) in journal.under(TASKS_PREFIX) {
        let Ok(checkpoint) = TaskCheckpoint::decode(bytes) else {
            continue;
        };
        if checkpoint.state.is_terminal() {
            continue;
        }
        let containerizer = match checkpoint.containerizer {
            Kind::Mesos => mesos.clone(),
            Kind::Docker => match &docker {
                Some(d) => d.clone(),
                None => continue,
            },
            Kind::Sim => continue,
        };
        let Ok(spec) =
            drover_agent::task::parse_task(&checkpoint.task, &checkpoint.framework_id, &ip)
        else {
            continue;
        };
        let task = checkpoint.task_id.clone();
        drover_core::env::spawn_into(&mut kills, async move {
            let Ok(launched) = containerizer
                .recover(&spec, checkpoint.handle, checkpoint.launched_ms)
                .await
            else {
                return;
            };
            let (kill, killed) = tokio::sync::oneshot::channel();
            let _ = kill.send(TASK_KILL_GRACE);
            let exit = launched.running.wait(killed).await;
            containerizer.cleanup(&launched.handle).await;
            tracing::info!(%task, state = ?exit.state, "task stopped with the cluster");
        });
    }
    let all = async { while kills.join_next().await.is_some() {} };
    if tokio::time::timeout(STOP_TIMEOUT, all).await.is_err() {
        tracing::warn!(agent = %agent.name, "some tasks did not stop in time");
    }
    if let Some(docker) = docker {
        docker.cleanup_orphans(&[]).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(argv: &[&str]) -> UpArgs {
        Argv::<UpArgs>::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn the_default_cluster_has_two_agents_with_disjoint_host_ports() {
        let plan = Plan::of(&up(&["--work-dir", "/tmp/x"])).unwrap();
        let agents: Vec<(&str, u16, &str)> = plan
            .agents
            .iter()
            .map(|a| (a.name.as_str(), a.port, a.resources.as_str()))
            .collect();
        assert_eq!(
            agents,
            vec![
                (
                    "od1000-0",
                    5051,
                    "cpus:4;mem:8192;disk:100000;ports:[31000-31999]"
                ),
                (
                    "od1000-1",
                    5052,
                    "cpus:4;mem:8192;disk:100000;ports:[32000-32999]"
                ),
            ]
        );
        assert_eq!(plan.zk("/mesos"), "zk://127.0.0.1:2181/mesos");
        assert!(!plan.temporary);
    }

    #[test]
    fn every_daemon_accepts_the_arguments_up_gives_it() {
        let plan = Plan::of(&up(&[
            "--work-dir",
            "/tmp/x",
            "--agent-ports",
            "6001,6002,6003",
            "--http-port",
            "6000",
        ]))
        .unwrap();
        parse::<coord::CoordArgs>("coord", &plan.coord_argv()).unwrap();
        parse::<master::MasterArgs>("master", &plan.master_argv()).unwrap();
        for agent in &plan.agents {
            for dns in [true, false] {
                parse::<agent::AgentArgs>("agent", &plan.agent_argv(agent, true, dns)).unwrap();
            }
        }
        let scheduler: scheduler::SchedulerArgs =
            parse("scheduler", &plan.scheduler_argv()).unwrap();
        assert_eq!(scheduler.http_port, 6000);
        assert_eq!(scheduler.zk, "zk://127.0.0.1:2181/marathon");
        assert_eq!(plan.agents[2].name, "od1000-2");
    }

    #[test]
    fn a_secure_cluster_gives_every_daemon_its_credentials() {
        let dir = std::env::temp_dir().join(format!("drover-up-secure-{}", std::process::id()));
        let plan = Plan::of(&up(&["--work-dir", dir.to_str().unwrap(), "--secure"])).unwrap();
        let secret = plan.secret.clone().expect("a secret");
        assert_eq!(secret.len(), 48);
        assert_ne!(
            Plan::of(&up(&["--secure"])).unwrap().secret,
            Some(secret.clone())
        );
        plan.write_auth_files().unwrap();
        let credentials = drover_core::auth::Credentials::load(&plan.auth_file("credentials"));
        assert!(PRINCIPALS
            .iter()
            .all(|p| credentials.as_ref().unwrap().accepts(p, &secret)));
        let agent = drover_core::auth::Credential::load(&plan.auth_file("agent.credential"));
        assert_eq!(agent.unwrap().principal, "agent");
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(plan.auth_file("credentials"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let master = plan.master_argv();
        parse::<master::MasterArgs>("master", &master).unwrap();
        for flag in [
            "--authenticate-agents",
            "--authenticate-http-frameworks",
            "--credentials",
        ] {
            assert!(master.iter().any(|a| a == flag), "master lacks {flag}");
        }
        assert!(master.contains(&format!("zk://mesos:{secret}@127.0.0.1:2181/mesos")));
        let agent_argv = plan.agent_argv(&plan.agents[0], false, false);
        parse::<agent::AgentArgs>("agent", &agent_argv).unwrap();
        assert!(agent_argv.iter().any(|a| a == "--credential"));
        let scheduler: scheduler::SchedulerArgs =
            parse("scheduler", &plan.scheduler_argv()).unwrap();
        assert_eq!(
            scheduler.zk,
            format!("zk://marathon:{secret}@127.0.0.1:2181/marathon")
        );
        assert_eq!(
            scheduler.http_credentials,
            Some(format!("operator:{secret}"))
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn two_daemons_cannot_share_a_port() {
        let error = Plan::of(&up(&["--work-dir", "/tmp/x", "--http-port", "5051"]))
            .err()
            .unwrap();
        assert!(error.to_string().contains("port 5051"), "{error}");
    }
}
