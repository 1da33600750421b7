//! Coordination recipes on the client: leader election and group membership, in Mesos' layout
//! (members are ephemeral-sequential children named `json.info_NNNNNNNNNN` holding JSON), so
//! tools that read Mesos' ZooKeeper layout find drover's leaders too.

use std::time::Duration;

use crate::client::{Client, CreateMode, State, WatchFuture};
use crate::proto::ErrorCode;

/// The prefix of member nodes, as Mesos writes them.
pub const MEMBER_PREFIX: &str = "json.info_";

/// The sequence number of a member node name (`json.info_0000000012` → 12).
pub fn sequence_of(name: &str) -> Option<u64> {
    let digits = name.get(name.len().checked_sub(10)?..)?;
    digits.parse().ok()
}

/// The member node names of a group, ordered by sequence.
async fn member_names(client: &Client, group: &str) -> Result<Vec<String>, ErrorCode> {
    let mut names: Vec<String> = client
        .get_children(group)
        .await?
        .into_iter()
        .filter(|n| n.starts_with(MEMBER_PREFIX) && sequence_of(n).is_some())
        .collect();
    names.sort_by_key(|n| sequence_of(n));
    Ok(names)
}

/// Members of a group, ordered by sequence: `(node name, data)`.
pub async fn members(client: &Client, group: &str) -> Result<Vec<(String, Vec<u8>)>, ErrorCode> {
    let names = member_names(client, group).await?;
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        // A member may leave between the listing and the read.
        match client.get_data(&format!("{group}/{name}")).await {
            Ok((data, _)) => out.push((name, data)),
            Err(ErrorCode::NoNode) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Joins `group` with `data`; the membership lasts as long as the session. Returns the node path.
pub async fn join(client: &Client, group: &str, data: &[u8]) -> Result<String, ErrorCode> {
    client.ensure_path(group).await?;
    client
        .create(
            &format!("{group}/{MEMBER_PREFIX}"),
            data,
            CreateMode::EphemeralSequential,
        )
        .await
}

/// The current leader of an election: the member with the lowest sequence.
pub async fn leader(client: &Client, group: &str) -> Result<Option<(String, Vec<u8>)>, ErrorCode> {
    Ok(members(client, group).await?.into_iter().next())
}

/// A candidacy in an election.
pub struct Candidacy {
    pub path: String,
}

/// What a candidate should do next.
pub enum Standing {
    /// This candidate leads.
    Leader,
    /// Another leads; the future resolves when the candidate just ahead of this one goes.
    Waiting {
        leader: String,
        predecessor_gone: WatchFuture,
    },
}

impl Candidacy {
    /// Enters the election held under `group` (ephemeral-sequential, lowest wins).
    pub async fn enter(client: &Client, group: &str, data: &[u8]) -> Result<Candidacy, ErrorCode> {
        Ok(Candidacy {
            path: join(client, group, data).await?,
        })
    }

    /// Checks the standing; when not leading, watches the predecessor only (no herd effect).
    pub async fn standing(&self, client: &Client) -> Result<Standing, ErrorCode> {
        let (group, own) = self.path.rsplit_once('/').ok_or(ErrorCode::BadArguments)?;
        let group = if group.is_empty() { "/" } else { group };
        loop {
            let names = member_names(client, group).await?;
            let Some(position) = names.iter().position(|n| n == own) else {
                // Our node is gone: the session expired.
                return Err(ErrorCode::SessionExpired);
            };
            if position == 0 {
                return Ok(Standing::Leader);
            }
            let predecessor = format!("{group}/{}", names[position - 1]);
            let (stat, predecessor_gone) = client.exists_watch(&predecessor).await?;
            if stat.is_some() {
                return Ok(Standing::Waiting {
                    leader: format!("{group}/{}", names[0]),
                    predecessor_gone,
                });
            }
            // The predecessor left between the listing and the watch: look again.
        }
    }
}

/// What a [`campaign`] asks of the role that campaigns (the master, the scheduler).
#[allow(
    async_fn_in_trait,
    reason = "used with concrete types only, never as dyn"
)]
pub trait Contender {
    /// A session was opened for a new candidacy (a role may keep it for lookups).
    fn session(&mut self, _client: &Client) {}
    /// This candidate leads, as `term` (its node's sequence number): take over. False gives the
    /// candidacy up (the state could not be loaded, or the role is gone).
    async fn lead(&mut self, client: &Client, term: u64) -> bool;
    /// Another candidate leads; `leader` is its node's path.
    async fn follow(&mut self, _client: &Client, _leader: &str) {}
    /// The candidacy ends (the session left `Connected`, or the role abdicated). Returns only
    /// once the role has stopped acting as leader: the candidacy is withdrawn after it, so a
    /// successor can never overlap the old leader's last acts.
    async fn step_down(&mut self);
    /// Resolves when the role gives its leadership up by itself (its store failed, an operator
    /// asked it to).
    async fn abdicated(&mut self);
    /// The role is gone: the campaign ends.
    fn finished(&self) -> bool;
}

/// How a role's core is told to stop leading and says it has: `deposed(done)` builds the core's
/// input; returns once the core answered (or is gone).
pub async fn confirm_step_down<T>(
    inputs: &tokio::sync::mpsc::Sender<T>,
    deposed: impl FnOnce(tokio::sync::oneshot::Sender<()>) -> T,
) {
    let (done, stopped) = tokio::sync::oneshot::channel();
    if inputs.send(deposed(done)).await.is_ok() {
        let _ = stopped.await;
    }
}

/// Resolves when the role's core asks to abdicate (never, once the core is gone).
pub async fn abdication(abdicate: &mut tokio::sync::mpsc::Receiver<()>) {
    if abdicate.recv().await.is_none() {
        std::future::pending::<()>().await;
    }
}

/// Campaigns under `group` for as long as the role runs: connects, enters a candidacy with
/// `data`, and leads while the session stays connected. When the connection breaks, the role
/// steps down at once (the majority may expire the session before this client can tell), and
/// the candidacy waits for the same session to reconnect: it may lead again if its node still
/// stands first. When the session expires, or the role abdicates, the candidacy is withdrawn and
/// a new session tries again after a back-off (500 ms doubling to 10 s, plus up to 500 ms of
/// jitter from the node's RNG).
pub async fn campaign(
    env: drover_core::Env,
    config: crate::client::ClientConfig,
    group: &str,
    data: &[u8],
    contender: &mut impl Contender,
) {
    use rand::RngCore;
    let mut backoff = Duration::from_millis(500);
    loop {
        let client = Client::start(env.clone(), config.clone());
        contender.session(&client);
        if client.wait_connected().await.is_ok() {
            backoff = Duration::from_millis(500);
            if let Ok(candidacy) = Candidacy::enter(&client, group, data).await {
                loop {
                    let ended = stand(&client, &candidacy, contender).await;
                    contender.step_down().await;
                    if ended != Ended::Disconnected || client.wait_connected().await.is_err() {
                        break;
                    }
                }
                let _ = client.delete(&candidacy.path, -1).await;
            }
        }
        client.close().await;
        if contender.finished() {
            return;
        }
        let jitter = env.rng().next_u64() % 500;
        tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

/// Why a candidacy stopped standing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// The session's connection broke; the session may come back.
    Disconnected,
    /// The role gave its leadership up, or could not take it.
    Abdicated,
    /// The candidacy's node or session is gone.
    Gone,
}

/// Until the candidacy ends: waits its turn, then leads while the session is connected.
async fn stand(client: &Client, candidacy: &Candidacy, contender: &mut impl Contender) -> Ended {
    let mut state = client.watch_state();
    let disconnected = |s: &State| *s != State::Connected;
    let term = candidacy
        .path
        .rsplit('/')
        .next()
        .and_then(sequence_of)
        .unwrap_or(0);
    loop {
        let standing = match candidacy.standing(client).await {
            Ok(standing) => standing,
            Err(ErrorCode::ConnectionLoss) => return Ended::Disconnected,
            Err(_) => return Ended::Gone,
        };
        match standing {
            Standing::Leader => {
                if !contender.lead(client, term).await {
                    return Ended::Abdicated;
                }
                return tokio::select! {
                    biased;
                    _ = state.wait_for(disconnected) => Ended::Disconnected,
                    _ = contender.abdicated() => Ended::Abdicated,
                };
            }
            Standing::Waiting {
                leader,
                predecessor_gone,
            } => {
                contender.follow(client, &leader).await;
                tokio::select! {
                    biased;
                    _ = state.wait_for(disconnected) => return Ended::Disconnected,
                    _ = contender.abdicated() => return Ended::Abdicated,
                    _ = predecessor_gone => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_numbers_come_from_the_last_ten_digits() {
        assert_eq!(sequence_of("json.info_0000000012"), Some(12));
        assert_eq!(sequence_of("json.info_"), None);
        assert_eq!(sequence_of("x"), None);
    }
}
