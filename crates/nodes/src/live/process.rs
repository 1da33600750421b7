//! Live nodes without Docker: each node a `drover node` process of this binary, at a loopback
//! address of its own (`127.a.b.n`, unique to the run) that an address book names. A crash is
//! SIGKILL, a stop SIGTERM (SIGKILL after 10 s), a pause SIGSTOP then SIGCONT, a restart the
//! same command again. Links cannot be cut between processes of one host without touching the
//! host's own firewall, so a scenario that partitions or loses messages is refused.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::{Child, Command};

use super::{node_command, Backend, NodeDirs};

/// The environment variable every node (and so every task it starts) carries: how the run finds
/// what is left of it at the end.
const RUN_MARK: &str = "DROVER_LIVE_RUN";

pub struct Processes {
    run_id: String,
    book: PathBuf,
    nodes: BTreeMap<String, Node>,
}

struct Node {
    dirs: NodeDirs,
    address: Ipv4Addr,
    child: Option<Child>,
}

impl Processes {
    /// Gives every node its address and writes the address book; nothing starts yet.
    pub fn create(run_id: &str, dir: &Path, nodes: &[NodeDirs]) -> Result<Processes, String> {
        let pid = std::process::id();
        let base = [127, 1 + ((pid >> 8) % 254) as u8, (pid & 0xff) as u8];
        if nodes.len() > 250 {
            return Err(format!(
                "{} nodes: at most 250 run as processes",
                nodes.len()
            ));
        }
        let mut book = String::new();
        let mut table = BTreeMap::new();
        for (i, node) in nodes.iter().enumerate() {
            let address = Ipv4Addr::new(base[0], base[1], base[2], 1 + i as u8);
            book.push_str(&format!("{} {address}\n", node.name));
            table.insert(
                node.name.clone(),
                Node {
                    dirs: node.clone(),
                    address,
                    child: None,
                },
            );
        }
        let path = dir.join("address-book");
        std::fs::write(&path, book).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Processes {
            run_id: run_id.to_string(),
            book: path,
            nodes: table,
        })
    }

    fn node(&mut self, name: &str) -> Result<&mut Node, String> {
        self.nodes
            .get_mut(name)
            .ok_or_else(|| format!("no node {name:?}"))
    }

    async fn start_one(&mut self, name: &str) -> Result<(), String> {
        let exe = std::env::current_exe().map_err(|e| format!("this binary: {e}"))?;
        let (run_id, book) = (self.run_id.clone(), self.book.clone());
        let node = self.node(name)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dirs.data.join("log"))
            .map_err(|e| format!("{}: {e}", node.dirs.data.display()))?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new(exe)
            .args(node_command(&node.dirs, None, Some(&book)))
            .env(RUN_MARK, &run_id)
            .env("RUST_LOG", "info")
            .current_dir(&node.dirs.data)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| format!("start {name}: {e}"))?;
        node.child = Some(child);
        Ok(())
    }

    /// Sends `signal` to the node's process group.
    fn signal(&mut self, name: &str, signal: i32) -> Result<(), String> {
        let node = self.node(name)?;
        let pid = node
            .child
            .as_ref()
            .and_then(Child::id)
            .ok_or_else(|| format!("{name} is not running"))?;
        // SAFETY: kill(2) with a process group of our own child and a valid signal.
        if unsafe { libc::kill(-(pid as i32), signal) } != 0 {
            return Err(format!(
                "signal {signal} to {name}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }

    async fn reap(&mut self, name: &str, within: Duration) -> Result<(), String> {
        let node = self.node(name)?;
        let Some(mut child) = node.child.take() else {
            return Ok(());
        };
        if tokio::time::timeout(within, child.wait()).await.is_err() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        Ok(())
    }
}

impl Backend for Processes {
    async fn start(&mut self) -> Result<(), String> {
        let names: Vec<String> = self.nodes.keys().cloned().collect();
        for name in names {
            self.start_one(&name).await?;
        }
        Ok(())
    }

    async fn crash(&mut self, name: &str) -> Result<(), String> {
        self.signal(name, libc::SIGKILL)?;
        self.reap(name, Duration::from_secs(10)).await
    }

    async fn stop(&mut self, name: &str) -> Result<(), String> {
        // A paused node must run to stop (docker stop does the same).
        let _ = self.signal(name, libc::SIGCONT);
        self.signal(name, libc::SIGTERM)?;
        self.reap(name, Duration::from_secs(10)).await
    }

    async fn restart(&mut self, name: &str) -> Result<(), String> {
        self.start_one(name).await
    }

    async fn pause(&mut self, name: &str) -> Result<(), String> {
        self.signal(name, libc::SIGSTOP)
    }

    async fn unpause(&mut self, name: &str) -> Result<(), String> {
        self.signal(name, libc::SIGCONT)
    }

    async fn cut(&mut self, _from: &str, _to: &str) -> Result<(), String> {
        Err(REFUSED.into())
    }

    async fn heal(&mut self) -> Result<(), String> {
        Ok(())
    }

    async fn set_loss(&mut self, _rate: f64) -> Result<(), String> {
        Err(REFUSED.into())
    }

    fn address(&self, name: &str) -> String {
        self.nodes
            .get(name)
            .map(|n| n.address.to_string())
            .unwrap_or_default()
    }

    async fn clean(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut child) = node.child.take() {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
        kill_marked(&self.run_id);
    }
}

impl Drop for Processes {
    /// On an early return or a panic: every process of the run is killed.
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(child) = node.child.as_mut() {
                let _ = child.start_kill();
            }
        }
        kill_marked(&self.run_id);
    }
}

pub const REFUSED: &str = "without Docker the nodes are processes of one host, whose links cannot \
                           be cut without the host's own firewall: partitions and message loss \
                           need Docker";

/// Kills every process that carries the run's mark: the nodes, and the tasks they started, which
/// outlive a crashed agent as a Mesos agent's do.
fn kill_marked(run_id: &str) {
    let mark = format!("{RUN_MARK}={run_id}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ.split(|b| *b == 0).any(|v| v == mark.as_bytes()) {
            // SAFETY: kill(2) of a process this run started (it carries the run's mark).
            unsafe {
                libc::kill(pid, libc::SIGCONT);
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }
}
