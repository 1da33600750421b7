//! Finding the leading master: a fixed `HOST:PORT`, or the lowest `json.info_` member under a
//! ZooKeeper path (Mesos' layout), followed through child watches so that a new leader is seen.

use std::time::Duration;

use drover_coord::client::{Client, ClientConfig, State};
use drover_coord::recipes::{sequence_of, MEMBER_PREFIX};
use drover_coord::url::ZkAcl;
use drover_core::v1::MasterInfo;
use drover_core::{Env, Event};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::MasterLocator;

/// The leading master (`None`: no leader known).
pub type Leader = Option<Found>;

/// A leading master: where it is, and which master it is. A master restarted at the same address
/// is another leader (another id): the link to its predecessor is dead even if the address is not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub endpoint: (String, u16),
    /// The master's id from its `MasterInfo` (empty for a fixed `--master HOST:PORT`).
    pub id: String,
}

/// Re-read the leader this often even without a watch firing (a watch lost with a session is
/// then noticed).
const REFRESH: Duration = Duration::from_secs(30);
/// Pause after an error talking to ZooKeeper.
const RETRY: Duration = Duration::from_secs(1);

/// Follows the leader; dropping it stops following.
pub struct Detector {
    leader: watch::Receiver<Leader>,
    _fixed: Option<watch::Sender<Leader>>,
    task: Option<JoinHandle<()>>,
}

impl Drop for Detector {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Detector {
    pub fn start(env: &Env, locator: &MasterLocator, session_timeout: Duration) -> Detector {
        match locator {
            MasterLocator::Direct { host, port } => {
                let (sender, leader) = watch::channel(Some(Found {
                    endpoint: (host.clone(), *port),
                    id: String::new(),
                }));
                Detector {
                    leader,
                    _fixed: Some(sender),
                    task: None,
                }
            }
            MasterLocator::Zk(url) => {
                let (sender, leader) = watch::channel(None);
                let Ok(mut config) = url.client_config(ZkAcl::Open) else {
                    // Only a URL built by hand gets here (a parsed one has its hosts checked).
                    tracing::error!(%url, "the master's zk:// URL has no valid hosts");
                    return Detector {
                        leader,
                        _fixed: Some(sender),
                        task: None,
                    };
                };
                config.session_timeout = session_timeout;
                config.connect_timeout = Duration::from_secs(2);
                let path = url.path.clone();
                let task = drover_core::env::spawn(follow(env.clone(), config, path, sender));
                Detector {
                    leader,
                    _fixed: None,
                    task: Some(task),
                }
            }
        }
    }

    pub fn leader(&self) -> watch::Receiver<Leader> {
        self.leader.clone()
    }
}

async fn follow(env: Env, config: ClientConfig, path: String, sender: watch::Sender<Leader>) {
    let publish = |leader: Leader| {
        let changed = sender.send_if_modified(|current| {
            if *current == leader {
                return false;
            }
            *current = leader.clone();
            true
        });
        if changed {
            let shown = leader.as_ref().map_or("none".to_string(), |found| {
                format!("{}:{}", found.endpoint.0, found.endpoint.1)
            });
            env.emit(Event::new("master_detected").with("master", shown));
        }
    };
    let mut client = Client::start(env.clone(), config.clone());
    loop {
        if client.state().is_final() {
            // The session is gone (cut off longer than its timeout): forget the leader, so that
            // finding it again through the new session counts as a change and the agent
            // registers at once instead of waiting out its backoff.
            publish(None);
            client = Client::start(env.clone(), config.clone());
        }
        if client.wait_connected().await.is_err() {
            tokio::time::sleep(RETRY).await;
            continue;
        }
        let (names, fired) = match client.get_children_watch(&path).await {
            Ok(found) => found,
            Err(_) => {
                // No such path yet, or the connection broke: look again shortly.
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        let mut members: Vec<&String> = names
            .iter()
            .filter(|n| n.starts_with(MEMBER_PREFIX) && sequence_of(n).is_some())
            .collect();
        members.sort_by_key(|n| sequence_of(n));
        let mut found = None;
        let mut failed = false;
        for name in members {
            match client.get_data(&format!("{path}/{name}")).await {
                Ok((data, _)) => match MasterInfo::decode(&data) {
                    Ok(info) => {
                        found = Some(Found {
                            endpoint: info.endpoint(),
                            id: info.id.clone(),
                        });
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(%name, error = %e, "a master's info is not MasterInfo JSON");
                        break;
                    }
                },
                // It left between the listing and the read: the next one may lead.
                Err(drover_coord::proto::ErrorCode::NoNode) => continue,
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            tokio::time::sleep(RETRY).await;
            continue;
        }
        publish(found);
        let mut state = client.watch_state();
        tokio::select! {
            biased;
            _ = fired => {}
            _ = state.wait_for(|s| *s != State::Connected) => {}
            () = tokio::time::sleep(REFRESH) => {}
        }
    }
}
