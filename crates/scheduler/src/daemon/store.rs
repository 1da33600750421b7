//! The scheduler's state in coord (Marathon's layout under `--zk`): apps and their versions,
//! groups, deployments and instances, written in batches of `multi`s and read back by a new
//! leader.

use super::*;

/// The scheduler's znodes under its `--zk` path, and which exist.
#[derive(Clone)]
pub struct Store {
    client: Client,
    base: String,
    known: BTreeSet<String>,
    pub(super) framework_id: Option<String>,
}

impl Store {
    fn path(&self, key: &str) -> String {
        format!("{}/{key}", self.base)
    }

    /// Reads everything the scheduler keeps.
    pub(super) async fn load(client: Client, base: &str) -> Result<(Store, Loaded), String> {
        let mut store = Store {
            client,
            base: base.to_string(),
            known: BTreeSet::new(),
            framework_id: None,
        };
        let err = |p: &str, e: ErrorCode| format!("{p}: {e:?}");
        for dir in keys::ALL {
            let p = store.path(dir);
            store.client.ensure_path(&p).await.map_err(|e| err(&p, e))?;
        }
        if let Ok((data, _)) = store.client.get_data(&store.path("framework-id")).await {
            store.known.insert("framework-id".into());
            store.framework_id = Some(String::from_utf8_lossy(&data).into_owned());
        }
        let mut entries: BTreeMap<&str, Vec<(String, Value)>> = BTreeMap::new();
        for dir in [keys::APPS, keys::GROUPS, keys::DEPLOYMENTS, keys::INSTANCES] {
            let p = store.path(dir);
            let mut names = store
                .client
                .get_children(&p)
                .await
                .map_err(|e| err(&p, e))?;
            names.sort();
            for name in names {
                let key = format!("{dir}/{name}");
                match store.client.get_data(&store.path(&key)).await {
                    Ok((data, _)) => {
                        let value: Value = serde_json::from_slice(&data)
                            .map_err(|e| format!("{}: {e}", store.path(&key)))?;
                        store.known.insert(key);
                        entries.entry(dir).or_default().push((name, value));
                    }
                    Err(ErrorCode::NoNode) => {}
                    Err(e) => return Err(err(&key, e)),
                }
            }
        }
        let mut versions: BTreeMap<PathId, Vec<String>> = BTreeMap::new();
        let p = store.path(keys::APP_VERSIONS);
        let mut apps = store
            .client
            .get_children(&p)
            .await
            .map_err(|e| err(&p, e))?;
        apps.sort();
        for app in apps {
            let key = format!("{}/{app}", keys::APP_VERSIONS);
            store.known.insert(key.clone());
            let mut list = store
                .client
                .get_children(&store.path(&key))
                .await
                .unwrap_or_default();
            list.sort();
            for v in &list {
                store.known.insert(format!("{key}/{v}"));
            }
            if let Some(id) = keys::decode(&app) {
                versions.insert(id, list);
            }
        }
        let with_ids = |list: Option<&Vec<(String, Value)>>| -> Vec<(PathId, Value)> {
            list.into_iter()
                .flatten()
                .filter_map(|(n, v)| Some((keys::decode(n)?, v.clone())))
                .collect()
        };
        let (root, app_meta) = crate::core::rebuild_root(
            &with_ids(entries.get(keys::GROUPS)),
            &with_ids(entries.get(keys::APPS)),
        )?;
        let mut deployments = Vec::new();
        for (_, v) in entries.get(keys::DEPLOYMENTS).into_iter().flatten() {
            deployments.push(crate::core::Deployment::from_storage_json(v)?);
        }
        let mut instances = Vec::new();
        for (name, v) in entries.get(keys::INSTANCES).into_iter().flatten() {
            let i: Instance =
                serde_json::from_value(v.clone()).map_err(|e| format!("instance {name}: {e}"))?;
            instances.push(i);
        }
        Ok((
            store,
            Loaded {
                root,
                app_meta,
                versions,
                deployments,
                instances,
            },
        ))
    }

    /// Applies operations in as few atomic `multi`s as fit.
    pub(super) async fn apply(&mut self, ops: &[StoreOp]) -> Result<(), String> {
        let mut batch: Vec<Op> = Vec::new();
        let mut batch_keys: Vec<(String, bool)> = Vec::new();
        let mut bytes = 0usize;
        // The keys as they will be once the batch is written: changes over `known` (a copy of
        // `known`, with a key per instance, was most of a large simulation's time).
        let mut planned = Planned::default();
        for op in ops {
            // Parents first (app versions live one level down).
            if let StoreOp::Put { key, .. } = op {
                if let Some((parent, _)) = key.rsplit_once('/') {
                    if parent.contains('/') && !planned.contains(&self.known, parent) {
                        planned.insert(parent.to_string());
                        batch.push(create_op(self.path(parent), Vec::new(), self.client.acl()));
                        batch_keys.push((parent.to_string(), true));
                    }
                }
            }
            match op {
                StoreOp::Put { key, data } => {
                    bytes += data.len() + key.len();
                    if planned.contains(&self.known, key) {
                        batch.push(Op::SetData {
                            path: self.path(key),
                            data: data.clone(),
                            version: -1,
                        });
                    } else {
                        batch.push(create_op(self.path(key), data.clone(), self.client.acl()));
                        planned.insert(key.clone());
                    }
                    batch_keys.push((key.clone(), true));
                }
                StoreOp::Delete { key } => {
                    if !planned.remove(&self.known, key) {
                        continue;
                    }
                    // Children first (an app's versions).
                    for child in planned.children(&self.known, key) {
                        planned.remove(&self.known, &child);
                        batch.push(Op::Delete {
                            path: self.path(&child),
                            version: -1,
                        });
                        batch_keys.push((child, false));
                    }
                    batch.push(Op::Delete {
                        path: self.path(key),
                        version: -1,
                    });
                    batch_keys.push((key.clone(), false));
                }
            }
            if bytes >= MULTI_BYTES {
                self.commit(std::mem::take(&mut batch), std::mem::take(&mut batch_keys))
                    .await?;
                bytes = 0;
            }
        }
        if !batch.is_empty() {
            self.commit(batch, batch_keys).await?;
        }
        Ok(())
    }

    async fn commit(&mut self, ops: Vec<Op>, keys: Vec<(String, bool)>) -> Result<(), String> {
        let results = tokio::time::timeout(STORE_TIMEOUT, self.client.multi(ops))
            .await
            .map_err(|_| "store write timed out".to_string())?
            .map_err(|e| format!("store write: {e:?}"))?;
        if let Some(MultiResult::Error(e)) =
            results.iter().find(|r| matches!(r, MultiResult::Error(_)))
        {
            return Err(format!("store write refused: {e:?}"));
        }
        for (key, present) in keys {
            if present {
                self.known.insert(key);
            } else {
                self.known.remove(&key);
            }
        }
        Ok(())
    }
}

/// Store keys added (true) or removed (false) over the known ones, by a batch being planned.
#[derive(Default)]
struct Planned(BTreeMap<String, bool>);

impl Planned {
    fn contains(&self, known: &BTreeSet<String>, key: &str) -> bool {
        self.0
            .get(key)
            .copied()
            .unwrap_or_else(|| known.contains(key))
    }

    fn insert(&mut self, key: String) {
        self.0.insert(key, true);
    }

    /// Whether the key was there.
    fn remove(&mut self, known: &BTreeSet<String>, key: &str) -> bool {
        let was = self.contains(known, key);
        self.0.insert(key.to_string(), false);
        was
    }

    /// The keys one level or more below `key`, sorted.
    fn children(&self, known: &BTreeSet<String>, key: &str) -> Vec<String> {
        let prefix = format!("{key}/");
        let below = |k: &&String| k.starts_with(&prefix);
        let mut found: BTreeSet<String> = known
            .range(prefix.clone()..)
            .take_while(below)
            .cloned()
            .collect();
        found.extend(
            self.0
                .range(prefix.clone()..)
                .map(|(k, _)| k)
                .take_while(below)
                .cloned(),
        );
        found.retain(|k| self.contains(known, k));
        found.into_iter().collect()
    }
}

fn create_op(path: String, data: Vec<u8>, acl: Vec<Acl>) -> Op {
    Op::Create {
        path,
        data,
        acl,
        flags: 0, // persistent
        opcode: drover_coord::proto::op::CREATE,
    }
}

/// An app version as stored (`GET /v2/apps/{id}/versions/{version}`).
pub async fn read_app_version(
    shared: &Shared,
    id: &PathId,
    version: &str,
) -> Result<Option<Value>, String> {
    let client = shared.config.zk.client_config(ZkAcl::CreatorAll)?;
    let client = Client::start(shared.env.clone(), client);
    let path = format!(
        "{}/{}/{}/{version}",
        shared.config.zk.path,
        keys::APP_VERSIONS,
        keys::encode(id)
    );
    let out = match tokio::time::timeout(STORE_TIMEOUT, client.get_data(&path)).await {
        Ok(Ok((data, _))) => serde_json::from_slice(&data).ok(),
        Ok(Err(ErrorCode::NoNode)) => None,
        Ok(Err(e)) => {
            client.close().await;
            return Err(format!("{e:?}"));
        }
        Err(_) => {
            client.close().await;
            return Err("timed out".into());
        }
    };
    client.close().await;
    Ok(out)
}
