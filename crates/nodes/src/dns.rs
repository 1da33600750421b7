//! `drover dns`: task names over DNS (WeaveDNS' and Mesos-DNS'), following the leading master's
//! operator event stream; and the `dns` role of a scenario.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

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
    tracing::info!(%addr, master = %args.master, "dns starting");
    let config = serde_json::json!({
        "Masters": [args.master], "Port": args.port, "HTTPPort": args.http_port,
        "Domain": drover_dns::zone::MESOS_DOMAIN, "TTL": drover_dns::answer::TTL,
        "RefreshSeconds": 0, "Listener": args.ip.to_string(), "ExternalOn": false,
    });
    run(env, locator, socket, http.map(|l| (l, config)), shutdown).await
}

/// Follows the master and answers (and serves the HTTP API on `http`, with its config) until
/// `stop`.
pub async fn run(
    env: drover_core::Env,
    locator: Locator,
    socket: drover_core::env::Datagrams,
    http: Option<(drover_core::env::Listener, serde_json::Value)>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
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
        served = drover_dns::serve(env, socket, current) => served.context("dns"),
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
            run(context.env.clone(), locator, socket, None, async move {
                context.shutdown.requested().await
            })
            .await?;
            Ok(())
        })
    })
}
