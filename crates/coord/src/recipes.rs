//! Coordination recipes on the client: leader election and group membership, in Mesos' layout
//! (members are ephemeral-sequential children named `json.info_NNNNNNNNNN` holding JSON), so
//! tools that read Mesos' ZooKeeper layout find drover's leaders too.

use crate::client::{Client, CreateMode, WatchFuture};
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
