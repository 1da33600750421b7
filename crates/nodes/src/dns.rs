//! `drover dns`: task names over DNS (WeaveDNS' and Mesos-DNS'), following the leading master's
//! operator event stream; and the `dns` role of a scenario.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use drover_dns::Zone;
use drover_master::client::Locator;
use drover_sim::Role;
use tokio::sync::watch;

#[derive(clap::Args)]
pub struct DnsArgs {
    /// The master: `zk://HOSTS/PATH` (its election in coord) or `HOST:PORT`.
    #[arg(long)]
    pub master: String,
    /// The address to answer on (UDP); every address by default, so that containers reach it at
    /// their network's gateway.
    #[arg(long, default_value = "0.0.0.0")]
    pub ip: IpAddr,
    #[arg(long, default_value_t = drover_dns::PORT)]
    pub port: u16,
    /// Mesos-DNS' HTTP API (`/v1/hosts/{host}`, `/v1/services/{service}`, `/v1/config`,
    /// `/v1/version`) on this TCP port of `--ip`; 0: none.
    #[arg(long, default_value_t = drover_dns::http::PORT)]
    pub http_port: u16,
    /// A resolver names outside drover's domains are forwarded to (`IP` or `IP:PORT`; repeat for
    /// more, asked in turn). None by default: such names are REFUSED.
    #[arg(long = "upstream", value_parser = parse_upstream)]
    pub upstreams: Vec<SocketAddr>,
}

/// `IP` (port 53) or `IP:PORT`.
pub fn parse_upstream(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .or_else(|_| {
            text.parse::<IpAddr>()
                .map(|ip| SocketAddr::new(ip, drover_dns::PORT))
        })
        .map_err(|_| format!("expected IP or IP:PORT, got {text:?}"))
}

pub async fn main(
    args: DnsArgs,
    shutdown: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
) -> anyhow::Result<()> {
    let locator: Locator = args.master.parse().map_err(anyhow::Error::msg)?;
    let env = drover_core::env::live::env("dns", std::env::temp_dir(), None);
    let addr = SocketAddr::new(args.ip, args.port);
    let socket = env.bind_udp(addr).await.with_context(|| {
        format!("listen for DNS on {addr} (port 53 needs root or CAP_NET_BIND_SERVICE)")
    })?;
    let http = match args.http_port {
        0 => None,
        port => {
            let addr = SocketAddr::new(args.ip, port);
            Some(
                env.bind(addr)
                    .await
                    .with_context(|| format!("listen for the HTTP API on {addr}"))?,
            )
        }
    };
    tracing::info!(%addr, master = %locator, "dns starting");
    let config = serde_json::json!({
        "Masters": [locator.to_string()], "Port": args.port, "HTTPPort": args.http_port,
        "Domain": drover_dns::zone::MESOS_DOMAIN, "TTL": drover_dns::answer::TTL,
        "RefreshSeconds": 0, "Listener": args.ip.to_string(),
        "ExternalOn": !args.upstreams.is_empty(),
        "Resolvers": args.upstreams.iter().map(|u| u.ip().to_string()).collect::<Vec<_>>(),
    });
    let served = Served {
        socket,
        http: http.map(|l| (l, config)),
        upstreams: args.upstreams,
    };
    run(env, locator, served, shutdown).await
}

/// Where a DNS answers.
pub struct Served {
    pub socket: drover_core::env::Datagrams,
    /// The HTTP API's listener, and the config it shows.
    pub http: Option<(drover_core::env::Listener, serde_json::Value)>,
    pub upstreams: Vec<SocketAddr>,
}

/// Follows the master and answers (and serves the HTTP API, with its config) until `stop`.
pub async fn run(
    env: drover_core::Env,
    locator: Locator,
    served: Served,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let Served {
        socket,
        http,
        upstreams,
    } = served;
    let (zone, current) = watch::channel(Arc::new(Zone::default()));
    let records = drover_master::client::follow_operator(env.clone(), locator);
    let following = drover_core::env::spawn(drover_dns::follow::follow(records, zone, env.clone()));
    let api = http.map(|(listener, config)| {
        let router = drover_dns::http::router(current.clone(), config);
        drover_core::env::spawn(drover_core::http::serve(
            listener,
            router,
            std::future::pending(),
        ))
    });
    let result = tokio::select! {
        biased;
        _ = stop => Ok(()),
        served = drover_dns::serve(env, socket, current, upstreams) => served.context("dns"),
    };
    following.abort();
    if let Some(api) = api {
        api.abort();
    }
    result
}

/// The `dns` role in a scenario: follows the scenario's masters (through coord when it has
/// some) and answers on port 53.
pub fn role() -> Role {
    Role::new("dns", None, |mut context| {
        Box::pin(async move {
            let locator = match crate::master::sim_zk(&context.cluster) {
                Some(zk) => Locator::Zk(zk),
                None => {
                    let masters = context.cluster.of_role("master");
                    let first = masters
                        .first()
                        .ok_or("a dns node needs a master in the cluster")?;
                    Locator::Direct(first.to_string(), crate::master::PORT)
                }
            };
            let socket = context
                .env
                .bind_udp(SocketAddr::from(([0, 0, 0, 0], drover_dns::PORT)))
                .await?;
            let served = Served {
                socket,
                http: None,
                upstreams: Vec::new(),
            };
            run(context.env.clone(), locator, served, async move {
                context.shutdown.requested().await
            })
            .await?;
            Ok(())
        })
    })
}

/// How often a resolver asks its names.
const ASK_EVERY: Duration = Duration::from_millis(500);
/// How long it waits for an answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(1);

/// The `resolver` role: a client that asks every `dns` node of the scenario for each of its
/// `names` (A records) every [`ASK_EVERY`], and records what it heard: `dns_answer name=N
/// server=S rcode=R ips=A,B rtt_ms=T` (`ips=-` for none), or `dns_timeout name=N server=S`.
/// The `dns_*` invariants judge those answers against the tasks the trace says run.
pub fn resolver() -> Role {
    Role::new("resolver", None, |mut context| {
        Box::pin(async move {
            let servers: Vec<String> = context
                .cluster
                .of_role("dns")
                .into_iter()
                .map(str::to_string)
                .collect();
            if servers.is_empty() {
                return Err("a resolver needs a dns node in the cluster".into());
            }
            if context.names.is_empty() {
                return Err("a resolver needs `names` to ask for".into());
            }
            let env = context.env.clone();
            let socket = env.bind_udp(SocketAddr::from(([0, 0, 0, 0], 0))).await?;
            let mut id: u16 = 0;
            loop {
                tokio::select! {
                    biased;
                    _ = context.shutdown.requested() => return Ok(()),
                    _ = tokio::time::sleep(ASK_EVERY) => {}
                }
                for name in &context.names {
                    for server in &servers {
                        id = id.wrapping_add(1);
                        let event = ask(&socket, server, name, id).await?;
                        env.emit(event.with("name", name).with("server", server));
                    }
                }
            }
        })
    })
}

/// One query and its answer (or its absence) as an event.
async fn ask(
    socket: &drover_core::env::Datagrams,
    server: &str,
    name: &str,
    id: u16,
) -> Result<drover_core::Event, Box<dyn std::error::Error>> {
    let query = drover_dns::client::query(id, name)?;
    let sent = tokio::time::Instant::now();
    // A query that cannot leave is a query without an answer.
    let _ = socket.send_to(&query, server, drover_dns::PORT).await;
    let answer = tokio::time::timeout(ANSWER_WITHIN, async {
        loop {
            let (reply, _) = socket.recv_from().await?;
            // Late answers to earlier queries are not this one's.
            if let Ok(answer) = drover_dns::client::read(&reply) {
                if answer.id == id {
                    return Ok::<_, std::io::Error>(answer);
                }
            }
        }
    })
    .await;
    Ok(match answer {
        Ok(Ok(answer)) => {
            let ips: Vec<String> = answer.addresses.iter().map(ToString::to_string).collect();
            drover_core::Event::new("dns_answer")
                .with("rcode", answer.rcode)
                .with(
                    "ips",
                    if ips.is_empty() {
                        "-".into()
                    } else {
                        ips.join(",")
                    },
                )
                .with("rtt_ms", sent.elapsed().as_millis())
        }
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => drover_core::Event::new("dns_timeout"),
    })
}
