//! drover's DNS: the names of running tasks, as WeaveDNS and Mesos-DNS give them, so that
//! containers find each other. [`zone`] builds the names from what runs; [`answer`] answers one
//! query from them, over hickory-proto's wire format; [`serve`] is the UDP loop, written against
//! the Env so that it runs live and simulated alike.

pub mod answer;
pub mod follow;
pub mod http;
pub mod zone;

use std::sync::Arc;

use drover_core::env::Datagrams;
use drover_core::Env;
use tokio::sync::watch;

pub use zone::{Task, Zone};

/// DNS' port.
pub const PORT: u16 = 53;

/// Answers the queries that reach `socket` from the latest zone `zone` holds, until the socket
/// fails (a crashed simulated host). A query that gets no answer (not DNS at all) is dropped.
pub async fn serve(
    env: Env,
    socket: Datagrams,
    zone: watch::Receiver<Arc<Zone>>,
) -> std::io::Result<()> {
    tracing::info!(addr = %socket.local_addr()?, "dns serving");
    loop {
        let (query, from) = socket.recv_from().await?;
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
