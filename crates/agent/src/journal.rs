//! The agent's checkpoints in one append-only file, `agent/journal`: each flush of the agent's
//! core appends the paths it changed (their new content, or their removal) as checksummed
//! records and syncs the file once (group commit without a file, an inode and a directory entry
//! per task and per update, which is what the kernel spent its time on). Replay keeps every
//! record up to the first torn or damaged one (a crash can only cut the last append). The file
//! is rewritten with only what is live, atomically, when it has grown to several times that, and
//! at every recovery (so nothing is ever appended after a torn tail).

use std::collections::BTreeMap;
use std::io;

use bytes::Bytes;
use drover_core::{record, Env};

use crate::checkpoint::{AGENT_ID_PATH, STATUS_PATH, STREAMS_PREFIX, TASKS_PREFIX};

pub const JOURNAL_PATH: &str = "agent/journal";

/// The agent's checkpoints as they are on the Env's disk: the journal, with the files that
/// agents before it wrote (`agent/id`, `agent/status`, `agent/streams/*`, `agent/tasks/*`)
/// adopted where the journal has nothing newer; and those files' paths. An error names its path.
pub async fn load(env: &Env) -> Result<(Journal, Vec<String>), (String, io::Error)> {
    let disk = env.disk();
    let read = |path: String| async move {
        match disk.read(&path).await {
            Ok(bytes) => Ok((path, bytes)),
            Err(e) => Err((path, e)),
        }
    };
    let (_, bytes) = read(JOURNAL_PATH.to_string()).await?;
    let (mut journal, _) = Journal::replay(bytes.as_deref().unwrap_or_default());
    let mut files = vec![AGENT_ID_PATH.to_string(), STATUS_PATH.to_string()];
    for prefix in [STREAMS_PREFIX, TASKS_PREFIX] {
        files.extend(
            disk.list(prefix)
                .await
                .map_err(|e| (prefix.to_string(), e))?,
        );
    }
    let mut legacy = Vec::new();
    for path in files {
        if let (path, Some(bytes)) = read(path).await? {
            journal.adopt(&path, bytes);
            legacy.push(path);
        }
    }
    Ok((journal, legacy))
}

const PUT: u8 = 1;
const REMOVE: u8 = 2;
/// The journal is rewritten once it holds this many times the bytes of what is live...
const COMPACT_FACTOR: u64 = 4;
/// ...and at least this many bytes.
const COMPACT_MIN_BYTES: u64 = 64 << 10;

/// What the journal says each path holds.
#[derive(Debug, Default)]
pub struct Journal {
    live: BTreeMap<String, Bytes>,
    live_bytes: u64,
    /// The bytes in the file.
    file_bytes: u64,
}

impl Journal {
    /// The journal a file's bytes hold: every intact record up to the first torn or damaged one
    /// (and how many bytes that was: less than the file when its tail was torn).
    pub fn replay(bytes: &[u8]) -> (Journal, usize) {
        let mut journal = Journal::default();
        let mut at = 0;
        while let Some((kind, body, length)) = record::next(&bytes[at..]) {
            let Some((path, data)) = split(body) else {
                break;
            };
            match kind {
                PUT => journal.put(path.to_string(), Bytes::copy_from_slice(data)),
                REMOVE => journal.remove(path),
                _ => break,
            }
            at += length;
        }
        journal.file_bytes = at as u64;
        (journal, at)
    }

    pub fn get(&self, path: &str) -> Option<&Bytes> {
        self.live.get(path)
    }

    /// The live paths under `prefix`, in order, with their contents.
    pub fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a Bytes)> {
        self.live
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(path, _)| path.starts_with(prefix))
            .map(|(path, data)| (path.as_str(), data))
    }

    /// Takes `data` as the content of `path` unless the journal already has it (how files an
    /// older agent wrote come in: the journal is newer).
    pub fn adopt(&mut self, path: &str, data: Bytes) {
        if !self.live.contains_key(path) {
            self.put(path.to_string(), data);
        }
    }

    /// Records `changes` (None: removed); returns the bytes to append to the file.
    pub fn apply(&mut self, changes: &BTreeMap<String, Option<Bytes>>) -> Vec<u8> {
        let mut out = Vec::new();
        for (path, data) in changes {
            match data {
                Some(data) => {
                    record::put(&mut out, PUT, &body(path, data));
                    self.put(path.clone(), data.clone());
                }
                None => {
                    record::put(&mut out, REMOVE, &body(path, &[]));
                    self.remove(path);
                }
            }
        }
        self.file_bytes += out.len() as u64;
        out
    }

    /// Whether the file has grown enough to be rewritten with only what is live.
    pub fn wants_compaction(&self) -> bool {
        self.file_bytes >= COMPACT_MIN_BYTES && self.file_bytes >= COMPACT_FACTOR * self.live_bytes
    }

    /// The whole file holding only what is live (the file's new size is counted from it).
    pub fn compacted(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.live_bytes as usize);
        for (path, data) in &self.live {
            record::put(&mut out, PUT, &body(path, data));
        }
        self.file_bytes = out.len() as u64;
        out
    }

    fn put(&mut self, path: String, data: Bytes) {
        self.live_bytes += cost(&path, &data);
        if let Some(old) = self.live.insert(path.clone(), data) {
            self.live_bytes -= cost(&path, &old);
        }
    }

    fn remove(&mut self, path: &str) {
        if let Some(old) = self.live.remove(path) {
            self.live_bytes -= cost(path, &old);
        }
    }
}

/// A record's bytes on disk for `path` holding `data`.
fn cost(path: &str, data: &[u8]) -> u64 {
    (record::HEADER + 4 + path.len() + data.len()) as u64
}

/// A record's body: `u32 path length, path, data`.
fn body(path: &str, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + path.len() + data.len());
    out.extend_from_slice(&(path.len() as u32).to_be_bytes());
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(data);
    out
}

fn split(body: &[u8]) -> Option<(&str, &[u8])> {
    let length = u32::from_be_bytes(body.get(..4)?.try_into().ok()?) as usize;
    let path = std::str::from_utf8(body.get(4..4usize.checked_add(length)?)?).ok()?;
    Some((path, &body[4 + length..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(list: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<Bytes>> {
        list.iter()
            .map(|(p, d)| {
                (
                    p.to_string(),
                    d.map(|d| Bytes::copy_from_slice(d.as_bytes())),
                )
            })
            .collect()
    }

    fn paths(journal: &Journal, prefix: &str) -> Vec<(String, String)> {
        journal
            .under(prefix)
            .map(|(p, d)| (p.to_string(), String::from_utf8_lossy(d).into_owned()))
            .collect()
    }

    #[test]
    fn appends_replay_to_the_same_paths_and_a_torn_tail_is_dropped() {
        let mut journal = Journal::default();
        let mut file = journal.apply(&changes(&[
            ("agent/id", Some("{\"agent_id\":\"S1\"}")),
            ("agent/tasks/a", Some("a1")),
            ("agent/tasks/b", Some("b1")),
        ]));
        file.extend(journal.apply(&changes(&[
            ("agent/tasks/a", None),
            ("agent/tasks/b", Some("b2")),
            ("agent/tasksx", Some("not under agent/tasks/")),
        ])));
        let whole = file.len();
        file.extend(journal.apply(&changes(&[("agent/tasks/c", Some("c1"))])));
        let (replayed, used) = Journal::replay(&file);
        assert_eq!(used, file.len());
        assert_eq!(
            paths(&replayed, "agent/tasks/"),
            vec![
                ("agent/tasks/b".into(), "b2".into()),
                ("agent/tasks/c".into(), "c1".into())
            ]
        );
        // A crash cut the last append: everything before it is there, nothing of it.
        let (torn, used) = Journal::replay(&file[..file.len() - 2]);
        assert_eq!(used, whole);
        assert_eq!(
            paths(&torn, "agent/tasks/"),
            vec![("agent/tasks/b".into(), "b2".into())]
        );
        assert_eq!(torn.get("agent/id").unwrap(), "{\"agent_id\":\"S1\"}");
    }

    #[test]
    fn compaction_keeps_what_is_live_and_adopted_files_never_override_it() {
        let mut journal = Journal::default();
        for round in 0..3000 {
            journal.apply(&changes(&[
                (
                    "agent/streams/t",
                    Some(&format!("update {round:04} {}", "x".repeat(2000))),
                ),
                (
                    "agent/tasks/gone",
                    if round % 2 == 0 { Some("here") } else { None },
                ),
            ]));
        }
        assert!(journal.wants_compaction());
        let file = journal.compacted();
        assert!(!journal.wants_compaction());
        let (mut replayed, _) = Journal::replay(&file);
        assert!(replayed.get("agent/tasks/gone").is_none());
        assert!(replayed
            .get("agent/streams/t")
            .unwrap()
            .starts_with(b"update 2999"));
        replayed.adopt("agent/streams/t", Bytes::from_static(b"older"));
        replayed.adopt("agent/tasks/old", Bytes::from_static(b"from a file"));
        assert!(replayed
            .get("agent/streams/t")
            .unwrap()
            .starts_with(b"update 2999"));
        assert_eq!(replayed.get("agent/tasks/old").unwrap(), "from a file");
        let stream = replayed.get("agent/streams/t").unwrap().clone();
        assert_eq!(
            replayed.live_bytes,
            cost("agent/streams/t", &stream) + cost("agent/tasks/old", b"from a file")
        );
    }

    #[test]
    fn garbage_replays_to_nothing_without_a_panic() {
        for bytes in [
            &b""[..],
            b"\x00\x00\x00\x05\x01",
            &[0xff; 64],
            b"\x00\x00\x00\x02\x01\0\0\0\0\0\0\0\0ab",
        ] {
            let (journal, used) = Journal::replay(bytes);
            assert_eq!(used, 0);
            assert!(journal.live.is_empty());
        }
    }
}
