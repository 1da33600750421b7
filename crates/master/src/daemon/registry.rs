//! The registry of agents: in coord beside the election group, or on the master's disk.

use super::*;

/// Where the registry of agents lives: coord (beside the election group, at `<path>-registry`:
/// pymesos takes the lowest child of the group as the leader whatever its name, so nothing but
/// `json.info_` members may live inside it) or the master's disk.
#[derive(Clone)]
pub(super) enum RegistryStore {
    Coord {
        client: Client,
        path: String,
        /// The agents whose node exists (loaded or written since).
        stored: BTreeSet<String>,
    },
    Disk(Env),
}

const REGISTRY_FILE: &str = "registry.json";
/// Registry reads (a new leader's) and writes kept in flight at once.
const REGISTRY_READS_IN_FLIGHT: usize = 256;
/// Bytes of registry writes per coord `multi` (coord's packets stop at 1 MiB).
const REGISTRY_MULTI_BYTES: usize = 256 * 1024;
/// One `multi` of registry writes; when coord refuses it (a node that exists, or not, against
/// what `stored` said), each node is written alone.
async fn registry_multi(
    client: &Client,
    batch: Vec<(String, Op)>,
    stored: &mut BTreeSet<String>,
) -> Result<(), String> {
    let ops: Vec<Op> = batch.iter().map(|(_, op)| op.clone()).collect();
    let refused = match client.multi(ops).await {
        Ok(results) => results.iter().any(|r| matches!(r, MultiResult::Error(_))),
        Err(ErrorCode::ConnectionLoss | ErrorCode::SessionExpired) => {
            return Err("registry multi: the coord session was lost".into())
        }
        Err(_) => true,
    };
    for (agent, op) in batch {
        if refused {
            let (Op::SetData { path, data, .. } | Op::Create { path, data, .. }) = op else {
                continue;
            };
            match client.set_data(&path, &data, -1).await {
                Ok(_) => {}
                Err(ErrorCode::NoNode) => client
                    .create(&path, &data, CreateMode::Persistent)
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("{path}: {e:?}"))?,
                Err(e) => return Err(format!("{path}: {e:?}")),
            }
        }
        stored.insert(agent);
    }
    Ok(())
}

impl RegistryStore {
    pub(super) async fn load(&mut self) -> Result<BTreeMap<String, RegistryEntry>, String> {
        match self {
            RegistryStore::Coord {
                client,
                path,
                stored,
            } => {
                let dir = format!("{path}-registry");
                client
                    .ensure_path(&dir)
                    .await
                    .map_err(|e| format!("{dir}: {e:?}"))?;
                let mut out = BTreeMap::new();
                let mut names = client
                    .get_children(&dir)
                    .await
                    .map_err(|e| format!("{dir}: {e:?}"))?;
                names.sort();
                stored.clear();
                stored.extend(names.iter().cloned());
                let client = &*client;
                // Many reads in flight on the one session (answered in order): a registry of
                // thousands of agents loads in a few round trips, not one per agent.
                let mut reads = futures_util::stream::iter(names)
                    .map(|name| {
                        let path = format!("{dir}/{name}");
                        async move { (name, client.get_data(&path).await) }
                    })
                    .buffered(REGISTRY_READS_IN_FLIGHT);
                while let Some((name, read)) = reads.next().await {
                    match read {
                        Ok((data, _)) => {
                            if let Ok(entry) = serde_json::from_slice(&data) {
                                out.insert(name, entry);
                            }
                        }
                        Err(ErrorCode::NoNode) => {}
                        Err(e) => return Err(format!("{dir}/{name}: {e:?}")),
                    }
                }
                Ok(out)
            }
            RegistryStore::Disk(env) => match env.disk().read(REGISTRY_FILE).await {
                Ok(Some(bytes)) => {
                    serde_json::from_slice(&bytes).map_err(|e| format!("{REGISTRY_FILE}: {e}"))
                }
                Ok(None) => Ok(BTreeMap::new()),
                Err(e) => Err(format!("{REGISTRY_FILE}: {e}")),
            },
        }
    }

    /// Records `writes`: on coord one node per agent, in `multi`s of up to
    /// `REGISTRY_MULTI_BYTES` (one raft entry for many agents), each node written alone
    /// instead when a `multi` is refused; on disk the whole registry as `all` gives it, once.
    pub(super) async fn write(
        &mut self,
        writes: &[RegistryWrite],
        all: impl FnOnce() -> BTreeMap<String, RegistryEntry>,
    ) -> Result<(), String> {
        match self {
            RegistryStore::Coord {
                client,
                path,
                stored,
            } => {
                // The last write of each agent.
                let mut last: BTreeMap<&str, &RegistryEntry> = BTreeMap::new();
                for write in writes {
                    last.insert(&write.agent_id, &write.entry);
                }
                let mut batch: Vec<(String, Op)> = Vec::new();
                let mut bytes = 0;
                let total = last.len();
                for (n, (agent, entry)) in last.into_iter().enumerate() {
                    let node = format!("{path}-registry/{agent}");
                    let data = serde_json::to_vec(entry).unwrap_or_default();
                    bytes += node.len() + data.len();
                    let op = if stored.contains(agent) {
                        Op::SetData {
                            path: node,
                            data,
                            version: -1,
                        }
                    } else {
                        Op::Create {
                            path: node,
                            data,
                            acl: client.acl(),
                            flags: 0,
                            opcode: drover_coord::proto::op::CREATE,
                        }
                    };
                    batch.push((agent.to_string(), op));
                    if bytes >= REGISTRY_MULTI_BYTES || n + 1 == total {
                        registry_multi(client, std::mem::take(&mut batch), stored).await?;
                        bytes = 0;
                    }
                }
                Ok(())
            }
            RegistryStore::Disk(env) => {
                let data = serde_json::to_vec(&all()).unwrap_or_default();
                env.disk()
                    .write(REGISTRY_FILE, Bytes::from(data))
                    .await
                    .map_err(|e| e.to_string())?;
                env.disk()
                    .sync(REGISTRY_FILE)
                    .await
                    .map_err(|e| e.to_string())
            }
        }
    }
}
