//! The live side of the seam: tokio TCP, the system clock, files with fsync, events to the log.
//! Nothing here runs under simulation.

// The live side is where the real clock is read.
#![allow(clippy::disallowed_methods)]

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{
    node_rng, Accept, BoxFuture, Clock, DatagramSocket, Datagrams, Disk, Env, EnvParts, Event,
    EventSink, Listener, Net, NodeRng, Stream,
};

/// Builds a live Env for `node`, keeping durable state under `work_dir`.
///
/// The RNG is keyed from the operating system's randomness unless `seed` is given.
pub fn env(node: &str, work_dir: impl Into<PathBuf>, seed: Option<u64>) -> Env {
    build(node, work_dir.into(), seed, TokioNet::default())
}

/// A live Env whose network knows the cluster's names from `book` (nodes on one host, each at a
/// loopback address of its own: `drover sim --live` without Docker).
pub fn env_with_book(node: &str, work_dir: impl Into<PathBuf>, book: AddressBook) -> Env {
    let net = TokioNet {
        book: Some(Arc::new(book)),
    };
    build(node, work_dir.into(), None, net)
}

fn build(node: &str, work_dir: PathBuf, seed: Option<u64>, net: TokioNet) -> Env {
    Env::new(EnvParts {
        node: node.to_string(),
        net: Arc::new(net),
        clock: Arc::new(SystemClock),
        disk: Arc::new(FileDisk::new(work_dir)),
        events: Arc::new(LogEvents),
        rng: match seed {
            Some(seed) => node_rng(seed, node, 0),
            None => os_keyed_rng(),
        },
    })
}

/// A generator keyed from the operating system's randomness (getrandom): what a live node's
/// challenge nonces and session passwords come from, so nobody can predict them from the time a
/// process started.
fn os_keyed_rng() -> NodeRng {
    use rand::SeedableRng as _;
    NodeRng::try_from_os_rng().unwrap_or_else(|error| {
        // Linux has had getrandom(2) since 3.17; without it, the clock and pid are all there is.
        tracing::warn!(%error, "no randomness from the operating system; keying from the clock");
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        node_rng(
            (nanos as u64) ^ (u64::from(std::process::id()) << 32),
            "",
            0,
        )
    })
}

/// TCP through tokio; names are the resolver's unless an address book has them.
#[derive(Default)]
pub struct TokioNet {
    book: Option<Arc<AddressBook>>,
}

impl TokioNet {
    /// `addr`, at the node's own address when the book has one and `addr` is every address.
    fn own(&self, mut addr: SocketAddr) -> SocketAddr {
        if let Some(own) = self.book.as_ref().and_then(|b| b.own) {
            if addr.ip().is_unspecified() {
                addr.set_ip(own);
            }
        }
        addr
    }
}

/// Where `host:port` is: the book's address for a name it has, else the resolver's.
async fn locate(book: Option<&AddressBook>, host: &str, port: u16) -> io::Result<SocketAddr> {
    if let Some(ip) = book.and_then(|b| b.names.get(host)) {
        return Ok(SocketAddr::new(*ip, port));
    }
    tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| io::Error::other(format!("{host}: no address")))
}

/// A tokio UDP socket.
struct TokioDatagrams {
    socket: tokio::net::UdpSocket,
    book: Option<Arc<AddressBook>>,
}

impl DatagramSocket for TokioDatagrams {
    fn send_to<'a>(
        &'a self,
        data: &'a [u8],
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let to = locate(self.book.as_deref(), host, port).await?;
            self.socket.send_to(data, to).await.map(|_| ())
        })
    }

    fn recv_from(&self) -> BoxFuture<'_, io::Result<(Bytes, SocketAddr)>> {
        Box::pin(async move {
            let mut buf = vec![0u8; 65_536];
            let (n, from) = self.socket.recv_from(&mut buf).await?;
            buf.truncate(n);
            Ok((Bytes::from(buf), from))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}

/// The addresses of a cluster's nodes by name, and this node's own: a listener asked for every
/// address (`0.0.0.0`) listens on the node's own only, so that nodes sharing one host each have
/// their ports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AddressBook {
    pub own: Option<IpAddr>,
    pub names: BTreeMap<String, IpAddr>,
}

impl AddressBook {
    /// Reads `name address` lines (blank lines and `#` comments skipped); `own` is this node's
    /// name, which must be among them.
    pub fn parse(text: &str, own: &str) -> Result<AddressBook, String> {
        let mut book = AddressBook::default();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(name), Some(address), None) = (words.next(), words.next(), words.next())
            else {
                return Err(format!(
                    "line {}: expected `name address`, found {line:?}",
                    number + 1
                ));
            };
            let address: IpAddr = address
                .parse()
                .map_err(|e| format!("line {}: {address:?}: {e}", number + 1))?;
            book.names.insert(name.to_string(), address);
        }
        book.own = Some(
            *book
                .names
                .get(own)
                .ok_or_else(|| format!("no line names this node, {own:?}"))?,
        );
        Ok(book)
    }
}

struct TokioListener(tokio::net::TcpListener);

impl Accept for TokioListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Stream, SocketAddr)>> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            stream.set_nodelay(true)?;
            Ok((Box::new(stream) as Stream, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Net for TokioNet {
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Listener>> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(self.own(addr)).await?;
            Ok(Listener::new(TokioListener(listener)))
        })
    }

    fn bind_udp(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Datagrams>> {
        Box::pin(async move {
            let addr = self.own(addr);
            let socket = tokio::net::UdpSocket::bind(addr).await?;
            Ok(Box::new(TokioDatagrams {
                socket,
                book: self.book.clone(),
            }) as Datagrams)
        })
    }

    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            if let Ok(ip) = host.parse::<IpAddr>() {
                return Ok(vec![ip]);
            }
            if let Some(ip) = self.book.as_ref().and_then(|b| b.names.get(host)) {
                return Ok(vec![*ip]);
            }
            let mut ips: Vec<IpAddr> = Vec::new();
            for addr in tokio::net::lookup_host((host, 0)).await? {
                if !ips.contains(&addr.ip()) {
                    ips.push(addr.ip());
                }
            }
            Ok(ips)
        })
    }

    fn connect<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<Stream>> {
        Box::pin(async move {
            let stream = match &self.book {
                // From the node's own address, as a node on a host of its own would be seen.
                Some(book) => {
                    let to = locate(Some(book), host, port).await?;
                    let socket = match to {
                        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
                    };
                    if let Some(own) = book.own.filter(|own| own.is_ipv4() == to.is_ipv4()) {
                        socket.bind(SocketAddr::new(own, 0))?;
                    }
                    socket.connect(to).await?
                }
                None => tokio::net::TcpStream::connect((host, port)).await?,
            };
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as Stream)
        })
    }
}

/// The operating system's wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn unix_ms(&self) -> u64 {
        real_unix_ms()
            .saturating_add_signed(CLOCK_OFFSET_MS.load(std::sync::atomic::Ordering::Relaxed))
    }
}

fn real_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Added to this process's wall clock: the live counterpart of the simulator's `skew`.
static CLOCK_OFFSET_MS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// From now on, this process's wall clock is offset by the number of milliseconds in `path`
/// (`-3000`, `2500`; absent or unreadable: 0), read again every 100 ms: the live runner skews a
/// node by writing it.
pub fn follow_clock_offset(path: PathBuf) {
    std::thread::spawn(move || loop {
        let offset = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| text.trim().parse::<i64>().ok())
            .unwrap_or(0);
        CLOCK_OFFSET_MS.store(offset, std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(std::time::Duration::from_millis(100));
    });
}

/// Events go to the log, and to the events file when one was asked for.
pub struct LogEvents;

impl EventSink for LogEvents {
    fn emit(&self, node: &str, event: &Event) {
        tracing::info!(target: "drover::event", "{node} {event}");
        if let Some(file) = EVENTS_FILE.get() {
            // Real time, not the node's (maybe skewed) clock: the trace is the harness's time.
            // Microseconds too: the runner orders the events of different processes by them.
            let unix_us = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_micros() as u64)
                .unwrap_or(0);
            let line = serde_json::json!({
                "unix_ms": unix_us / 1000,
                "unix_us": unix_us,
                "node": node,
                "event": event.to_string()
            });
            let mut file = file.lock().unwrap_or_else(|p| p.into_inner());
            // One write per line, straight to the kernel: a SIGKILL loses none of it.
            let _ = std::io::Write::write_all(&mut *file, format!("{line}\n").as_bytes());
        }
    }
}

static EVENTS_FILE: std::sync::OnceLock<std::sync::Mutex<std::fs::File>> =
    std::sync::OnceLock::new();

/// From now on, this process's events are also appended to `path` as JSON lines
/// (`{"unix_ms": .., "unix_us": .., "node": .., "event": "name key=value .."}`): the live
/// runner's trace.
pub fn write_events_to(path: &Path) -> io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    EVENTS_FILE
        .set(std::sync::Mutex::new(file))
        .map_err(|_| io::Error::other("the events file is already set"))
}

/// `write` flushes a larger file every this many bytes.
const WRITE_FLUSH_BYTES: usize = 4 << 20;

/// Files under a work directory. `write` replaces a file atomically (temporary file, synced, then
/// renamed); `sync` fsyncs the file (unless `write` just did) and the directories on its way
/// whose entries were created, renamed or removed since their last fsync; `append_and_sync` does
/// both. Files appended to stay open. Each operation is one trip to the blocking pool (a sync with
/// nothing to do, none): a coord ready's entries and hard state go in one.
pub struct FileDisk {
    root: PathBuf,
    /// Files appended to, kept open. The lock is held across an append, so appends (and the
    /// syncs of appended files) happen one at a time, in the order they were asked for.
    open: tokio::sync::Mutex<BTreeMap<PathBuf, Arc<std::fs::File>>>,
    /// Directories whose entries changed since their last fsync, and files `write` replaced
    /// since (their data is synced; their new name is not until their directory is).
    changed_dirs: std::sync::Mutex<BTreeSet<PathBuf>>,
}

impl FileDisk {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FileDisk {
            root: root.into(),
            open: Default::default(),
            changed_dirs: Default::default(),
        }
    }

    fn resolve(&self, path: &str) -> io::Result<PathBuf> {
        let relative = Path::new(path);
        let plain = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if path.is_empty() || !plain {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("disk path {path:?}: expected a relative path without `..`"),
            ));
        }
        Ok(self.root.join(relative))
    }

    fn lock_changed(&self) -> std::sync::MutexGuard<'_, BTreeSet<PathBuf>> {
        self.changed_dirs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `file` was replaced by `write` since its directory was last synced (forgotten).
    fn take_changed(&self, file: &Path) -> bool {
        self.lock_changed().remove(file)
    }

    /// The directories on the way to `file` whose entries changed since their last fsync (the
    /// file's own, and those a write created directories in), nearest first; forgotten, as they
    /// are about to be synced.
    fn changed_dirs_of(&self, file: &Path) -> Vec<PathBuf> {
        let mut changed = self.lock_changed();
        file.ancestors()
            .skip(1)
            .take_while(|dir| dir.starts_with(&self.root))
            .filter(|dir| changed.remove(*dir))
            .map(Path::to_path_buf)
            .collect()
    }

    /// Appends `data` to `path` (opening it, and creating it and its directories, the first
    /// time), then with `sync` makes it durable: one trip to the blocking pool.
    async fn append_then(&self, path: &str, data: Bytes, sync: bool) -> io::Result<()> {
        use std::io::Write;
        let file = self.resolve(path)?;
        let mut open = self.open.lock().await;
        let handle = match open.get(&file) {
            Some(handle) => handle.clone(),
            None => {
                let target = file.clone();
                let (handle, created) =
                    tokio::task::spawn_blocking(move || open_appending(&target))
                        .await
                        .map_err(io::Error::other)??;
                self.lock_changed().extend(created);
                let handle = Arc::new(handle);
                open.insert(file.clone(), handle.clone());
                handle
            }
        };
        let dirs = if sync {
            self.take_changed(&file);
            self.changed_dirs_of(&file)
        } else {
            Vec::new()
        };
        tokio::task::spawn_blocking(move || {
            (&*handle).write_all(&data)?;
            if sync {
                sync_file_and_dirs(Some(Target::Open(handle)), &dirs)?;
            }
            Ok(())
        })
        .await
        .map_err(io::Error::other)?
    }

    fn dir_changed(&self, file: &Path) {
        if let Some(parent) = file.parent() {
            self.changed_dirs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(parent.to_path_buf());
        }
    }
}

/// Creates `file`'s missing directories; returns the directories whose entries that changed.
fn create_parents(file: &Path) -> io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d.is_dir() {
            break;
        }
        missing.push(d.to_path_buf());
        dir = d.parent();
    }
    for d in missing.iter().rev() {
        match std::fs::create_dir(d) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    Ok(missing
        .iter()
        .filter_map(|d| d.parent().map(Path::to_path_buf))
        .collect())
}

/// Writes `data` to a temporary file beside `file`, syncs it and renames it over `file`, creating
/// missing directories first. Returns the directories whose entries the created ones changed.
fn write_replacing(file: &Path, data: &[u8]) -> io::Result<Vec<PathBuf>> {
    use std::io::Write;
    let created = create_parents(file)?;
    // Beside the file, named after all of its name (`with_extension` would give `app.1` and
    // `app.2` one temporary file, and two concurrent writes would trip over each other).
    let mut name = file.as_os_str().to_owned();
    name.push(".drover-tmp");
    let temporary = PathBuf::from(name);
    let mut out = std::fs::File::create(&temporary)?;
    // A large file is flushed as it is written: on ext4 (data=ordered) an fsync of any other
    // file waits for every dirty block of the journal's transaction, so 100 MB of snapshot left
    // dirty would stall a raft log's next fsync for as long as the disk takes to write them all.
    for chunk in data.chunks(WRITE_FLUSH_BYTES) {
        out.write_all(chunk)?;
        if data.len() > WRITE_FLUSH_BYTES {
            out.sync_data()?;
        }
    }
    out.sync_all()?;
    std::fs::rename(&temporary, file)?;
    Ok(created)
}

/// A file to sync: one held open for appending, or one to open by name.
enum Target {
    Open(Arc<std::fs::File>),
    Path(PathBuf),
}

/// Opens `file` for appending, creating it and its missing directories: the handle, and the
/// directories whose entries changed.
fn open_appending(file: &Path) -> io::Result<(std::fs::File, Vec<PathBuf>)> {
    let mut changed = create_parents(file)?;
    let existed = file.exists();
    let handle = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)?;
    if !existed {
        if let Some(parent) = file.parent() {
            changed.push(parent.to_path_buf());
        }
    }
    Ok((handle, changed))
}

/// Syncs `file` (when given; by name only if it exists), then `dirs` in order.
fn sync_file_and_dirs(file: Option<Target>, dirs: &[PathBuf]) -> io::Result<()> {
    match file {
        Some(Target::Open(handle)) => handle.sync_data()?,
        Some(Target::Path(path)) => match std::fs::File::open(&path) {
            Ok(handle) => handle.sync_all()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        },
        None => {}
    }
    for dir in dirs {
        if let Ok(handle) = std::fs::File::open(dir) {
            handle.sync_all()?;
        }
    }
    Ok(())
}

impl Disk for FileDisk {
    fn read<'a>(&'a self, path: &'a str) -> BoxFuture<'a, io::Result<Option<Bytes>>> {
        Box::pin(async move {
            match tokio::fs::read(self.resolve(path)?).await {
                Ok(data) => Ok(Some(Bytes::from(data))),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(e),
            }
        })
    }

    fn write<'a>(&'a self, path: &'a str, data: Bytes) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let file = self.resolve(path)?;
            // An open append handle would go on writing to the replaced file.
            self.open.lock().await.remove(&file);
            // One trip to the blocking pool for the whole write (each tokio::fs call is one).
            let target = file.clone();
            let created = tokio::task::spawn_blocking(move || write_replacing(&target, &data))
                .await
                .map_err(io::Error::other)??;
            let mut changed = self.changed_dirs.lock().unwrap_or_else(|p| p.into_inner());
            changed.extend(created);
            if let Some(parent) = file.parent() {
                changed.insert(parent.to_path_buf());
            }
            // Its data is synced already: `sync` has only its directory left to do.
            changed.insert(file);
            Ok(())
        })
    }

    fn append<'a>(&'a self, path: &'a str, data: Bytes) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(self.append_then(path, data, false))
    }

    fn append_and_sync<'a>(&'a self, path: &'a str, data: Bytes) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(self.append_then(path, data, true))
    }

    fn remove<'a>(&'a self, path: &'a str) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let file = self.resolve(path)?;
            self.open.lock().await.remove(&file);
            self.changed_dirs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&file);
            self.dir_changed(&file);
            match tokio::fs::remove_file(&file).await {
                Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        })
    }

    fn sync<'a>(&'a self, path: &'a str) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let file = self.resolve(path)?;
            let open = self.open.lock().await;
            let handle = open.get(&file).cloned();
            // A file `write` replaced (and synced) since has only its directory left to do.
            let replaced = self.take_changed(&file);
            let dirs = self.changed_dirs_of(&file);
            let target = match handle {
                Some(handle) => Some(Target::Open(handle)),
                None if replaced => None,
                None => Some(Target::Path(file)),
            };
            if target.is_none() && dirs.is_empty() {
                return Ok(());
            }
            tokio::task::spawn_blocking(move || sync_file_and_dirs(target, &dirs))
                .await
                .map_err(io::Error::other)?
        })
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, io::Result<Vec<String>>> {
        Box::pin(async move {
            let mut found = Vec::new();
            let mut pending = vec![self.root.clone()];
            while let Some(dir) = pending.pop() {
                let mut entries = match tokio::fs::read_dir(&dir).await {
                    Ok(entries) => entries,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                while let Some(entry) = entries.next_entry().await? {
                    let path = entry.path();
                    if entry.file_type().await?.is_dir() {
                        pending.push(path);
                        continue;
                    }
                    let Ok(relative) = path.strip_prefix(&self.root) else {
                        continue;
                    };
                    let name = relative.to_string_lossy().replace('\\', "/");
                    if name.starts_with(prefix) && !name.ends_with(".drover-tmp") {
                        found.push(name);
                    }
                }
            }
            found.sort();
            Ok(found)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_book_is_read_with_clear_errors() {
        let book = AddressBook::parse(
            "# the cluster\ncoord-1 127.0.9.1\n\nmaster-1 127.0.9.2\n",
            "master-1",
        )
        .unwrap();
        assert_eq!(book.own, Some("127.0.9.2".parse().unwrap()));
        assert_eq!(book.names.len(), 2);
        let missing = AddressBook::parse("coord-1 127.0.9.1", "agent-1").unwrap_err();
        assert!(missing.contains("agent-1"), "{missing}");
        let bad = AddressBook::parse("coord-1 127.0.9.1\nmaster-1 nowhere", "coord-1").unwrap_err();
        assert!(bad.starts_with("line 2: \"nowhere\""), "{bad}");
        let short = AddressBook::parse("coord-1", "coord-1").unwrap_err();
        assert!(short.contains("expected `name address`"), "{short}");
    }

    /// Two nodes of one host listen on the same port, each at its own loopback address, and
    /// reach each other by name from their own address.
    #[tokio::test]
    async fn nodes_of_one_host_listen_and_connect_by_name() {
        let text = "a 127.0.9.1\nb 127.0.9.2\n";
        let net = |own| TokioNet {
            book: Some(Arc::new(AddressBook::parse(text, own).unwrap())),
        };
        let (a, b) = (net("a"), net("b"));
        let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let mut on_a = a.bind(any).await.unwrap();
        let port = on_a.local_addr().unwrap().port();
        assert_eq!(on_a.local_addr().unwrap().ip().to_string(), "127.0.9.1");
        // The same port at b's address is free.
        let on_b = b.bind(SocketAddr::new(any.ip(), port)).await.unwrap();
        assert_eq!(
            on_b.local_addr().unwrap().to_string(),
            format!("127.0.9.2:{port}")
        );
        let _stream = b.connect("a", port).await.unwrap();
        let (_, peer) = on_a.accept().await.unwrap();
        assert_eq!(peer.ip().to_string(), "127.0.9.2");
        // Datagrams too: a's socket at its own address, b's reply by name.
        let udp_a = a.bind_udp(any).await.unwrap();
        let udp_port = udp_a.local_addr().unwrap().port();
        let udp_b = b
            .bind_udp(SocketAddr::new(any.ip(), udp_port))
            .await
            .unwrap();
        udp_b.send_to(b"ping", "a", udp_port).await.unwrap();
        let (data, from) = udp_a.recv_from().await.unwrap();
        assert_eq!(
            (&data[..], from.to_string()),
            (&b"ping"[..], format!("127.0.9.2:{udp_port}"))
        );
        udp_a.send_to(b"pong", "b", udp_port).await.unwrap();
        assert_eq!(&udp_b.recv_from().await.unwrap().0[..], b"pong");
    }

    #[tokio::test]
    async fn file_disk_round_trip() {
        let dir = std::env::temp_dir().join(format!("drover-disk-{}", std::process::id()));
        let disk = FileDisk::new(&dir);
        disk.write("raft/hard_state", Bytes::from_static(b"one"))
            .await
            .unwrap();
        disk.append("raft/log", Bytes::from_static(b"a"))
            .await
            .unwrap();
        disk.append("raft/log", Bytes::from_static(b"b"))
            .await
            .unwrap();
        disk.sync("raft/log").await.unwrap();
        assert_eq!(disk.read("raft/log").await.unwrap().unwrap(), &b"ab"[..]);
        assert_eq!(
            disk.list("raft/").await.unwrap(),
            vec!["raft/hard_state", "raft/log"]
        );
        disk.remove("raft/log").await.unwrap();
        assert_eq!(disk.read("raft/log").await.unwrap(), None);
        assert!(disk.read("../escape").await.is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_of_names_that_differ_after_a_dot_all_land() {
        let dir = std::env::temp_dir().join(format!("drover-disk-dots-{}", std::process::id()));
        let disk = Arc::new(FileDisk::new(&dir));
        let mut writes = tokio::task::JoinSet::new();
        for i in 0..64 {
            let disk = disk.clone();
            writes.spawn(async move {
                let path = format!("agent/tasks/app.{i}");
                disk.write(&path, Bytes::from(format!("task {i}"))).await?;
                disk.sync(&path).await
            });
        }
        while let Some(done) = writes.join_next().await {
            done.unwrap().unwrap();
        }
        let listed = disk.list("agent/tasks/").await.unwrap();
        assert_eq!(listed.len(), 64, "{listed:?}");
        assert_eq!(
            disk.read("agent/tasks/app.7").await.unwrap().unwrap(),
            &b"task 7"[..]
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
