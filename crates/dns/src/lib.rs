//! drover's DNS: the names of running tasks, as WeaveDNS and Mesos-DNS give them, so that
//! containers find each other. [`zone`] builds the names from what runs; [`answer`] answers one
//! query from them, over hickory-proto's wire format; [`serve`] is the UDP loop, written against
//! the Env so that it runs live and simulated alike.

pub mod answer;
pub mod client;
pub mod follow;
pub mod http;
pub mod zone;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use drover_core::env::Datagrams;
use drover_core::Env;
use tokio::sync::watch;

pub use zone::{Task, Zone};

/// DNS' port.
pub const PORT: u16 = 53;

/// How long an upstream resolver has to answer a forwarded query before the next is asked.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Answers the queries that reach `socket` from the latest zone `zone` holds, until the socket
/// fails (a crashed simulated host). A query that gets no answer (not DNS at all) is dropped. A
/// query for a name outside drover's domains goes to the `upstreams` in turn (each given
/// [`UPSTREAM_TIMEOUT`]) and their answer goes back as it came; without upstreams it is REFUSED.
pub async fn serve(
    env: Env,
    socket: Datagrams,
    zone: watch::Receiver<Arc<Zone>>,
    upstreams: Vec<SocketAddr>,
) -> std::io::Result<()> {
    tracing::info!(addr = %socket.local_addr()?, ?upstreams, "dns serving");
    let socket = Arc::new(socket);
    let upstreams = Arc::new(upstreams);
    loop {
        let (query, from) = socket.recv_from().await?;
        if !upstreams.is_empty() && answer::is_foreign(&query) {
            drover_core::env::spawn(forward(
                env.clone(),
                socket.clone(),
                query,
                from,
                upstreams.clone(),
            ));
            continue;
        }
        let current = zone.borrow().clone();
        let reply = answer::answer(&current, &query, &mut *env.rng());
        if let Some(reply) = reply {
            // A reply that cannot be sent is lost, as UDP loses it.
            let _ = socket
                .send_to(&reply, &from.ip().to_string(), from.port())
                .await;
        }
    }
}

/// Asks the upstream resolvers `query` in turn and relays the first answer (same id) to `client`.
/// No answer from any: nothing, as a resolver that gets no answer sees it.
async fn forward(
    env: Env,
    socket: Arc<Datagrams>,
    query: bytes::Bytes,
    client: SocketAddr,
    upstreams: Arc<Vec<SocketAddr>>,
) {
    let Ok(out) = env.bind_udp(SocketAddr::from(([0, 0, 0, 0], 0))).await else {
        return;
    };
    for upstream in upstreams.iter() {
        let sent = out
            .send_to(&query, &upstream.ip().to_string(), upstream.port())
            .await;
        if sent.is_err() {
            continue;
        }
        let answered = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            loop {
                let (reply, from) = out.recv_from().await?;
                // Only the upstream's answer to this query (its id): anything else is noise.
                if from == *upstream && reply.len() >= 12 && reply[..2] == query[..2] {
                    return Ok::<_, std::io::Error>(reply);
                }
            }
        })
        .await;
        if let Ok(Ok(reply)) = answered {
            let _ = socket
                .send_to(&reply, &client.ip().to_string(), client.port())
                .await;
            return;
        }
    }
}
