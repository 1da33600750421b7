//! The Env seam: everything a role needs from the outside world.
//!
//! Roles hold an [`Env`] and never reach for `tokio::net`, `std::fs`, the system clock or a thread
//! RNG themselves. The live implementation (`live`) talks to the operating system; the simulated one
//! lives in `drover-sim`. Monotonic time is `tokio::time` in both worlds (the simulator
//! pauses its clock); wall time comes from [`Env::unix_ms`].

pub mod live;
mod spawn;

pub use spawn::{compute, simulating, spawn, spawn_into, Simulating};

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncRead, AsyncWrite};

/// A boxed future, as returned by the seam's object-safe traits.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A byte stream (a TCP connection, live or simulated).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// A connected byte stream.
pub type Stream = Box<dyn Io>;

/// The network half of the seam.
pub trait Net: Send + Sync + 'static {
    /// Listens on `addr` (port 0 picks a free port).
    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Listener>>;
    /// Connects to `host:port`; the host is a name or an address.
    fn connect<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<Stream>>;
    /// A UDP socket on `addr` (port 0 picks a free port).
    fn bind_udp(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Datagrams>>;
    /// The addresses of `host` (a name or an address), as `connect` would find them.
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>>;
}

/// What a bound UDP socket must do; [`Datagrams`] is one.
pub trait DatagramSocket: Send + Sync + 'static {
    /// Sends one datagram to `host:port` (a name or an address). As with UDP, nothing says
    /// whether it arrives: a cut, a loss or a closed port drops it silently.
    fn send_to<'a>(
        &'a self,
        data: &'a [u8],
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<()>>;
    /// The next datagram that arrives, and where it came from.
    fn recv_from(&self) -> BoxFuture<'_, io::Result<(Bytes, SocketAddr)>>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A bound UDP socket, live or simulated.
pub type Datagrams = Box<dyn DatagramSocket>;

/// What a bound listener must do; [`Listener`] wraps it.
pub trait Accept: Send + 'static {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Stream, SocketAddr)>>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A bound listener, live or simulated.
pub struct Listener(Box<dyn Accept>);

impl Listener {
    pub fn new(inner: impl Accept) -> Self {
        Listener(Box::new(inner))
    }

    pub async fn accept(&mut self) -> io::Result<(Stream, SocketAddr)> {
        self.0.accept().await
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl fmt::Debug for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Listener({:?})", self.0.local_addr().ok())
    }
}

/// Wall-clock time. Monotonic time is `tokio::time`, which the simulator virtualises.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch, as this node sees them (simulation: with its skew).
    fn unix_ms(&self) -> u64;
}

/// Storage for what must survive a crash (raft log and snapshots, agent checkpoints).
///
/// Files are named by relative, `/`-separated paths. A mutation is durable only once [`Disk::sync`]
/// returned for that path: a crash may lose anything written since.
pub trait Disk: Send + Sync + 'static {
    fn read<'a>(&'a self, path: &'a str) -> BoxFuture<'a, io::Result<Option<Bytes>>>;
    /// Replaces the whole content of `path`.
    fn write<'a>(&'a self, path: &'a str, data: Bytes) -> BoxFuture<'a, io::Result<()>>;
    fn append<'a>(&'a self, path: &'a str, data: Bytes) -> BoxFuture<'a, io::Result<()>>;
    fn remove<'a>(&'a self, path: &'a str) -> BoxFuture<'a, io::Result<()>>;
    /// Makes every earlier mutation of `path` durable.
    fn sync<'a>(&'a self, path: &'a str) -> BoxFuture<'a, io::Result<()>>;
    /// `append`, then `sync`: a disk may do both in one operation.
    fn append_and_sync<'a>(&'a self, path: &'a str, data: Bytes) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            self.append(path, data).await?;
            self.sync(path).await
        })
    }
    /// The paths that start with `prefix`, sorted.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, io::Result<Vec<String>>>;
}

/// Where a node's observable events go: the log when live, the trace in simulation.
pub trait EventSink: Send + Sync + 'static {
    fn emit(&self, node: &str, event: &Event);
}

/// Something a node did that an operator, a trace or an invariant checker cares about:
/// a name and ordered `key=value` fields, printed as `name k=v k=v`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub name: String,
    pub fields: Vec<(String, String)>,
}

impl Event {
    pub fn new(name: impl Into<String>) -> Self {
        Event {
            name: name.into(),
            fields: Vec::new(),
        }
    }

    pub fn with(mut self, key: impl Into<String>, value: impl fmt::Display) -> Self {
        self.fields.push((key.into(), value.to_string()));
        self
    }

    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Parses the printed form `name k=v k=v` (values contain no spaces).
    pub fn parse(text: &str) -> Option<Event> {
        let mut words = text.split_whitespace();
        let name = words.next()?;
        let mut event = Event::new(name);
        for word in words {
            let (key, value) = word.split_once('=')?;
            event.fields.push((key.to_string(), value.to_string()));
        }
        Some(event)
    }

    /// True when this event has `pattern`'s name and every one of its fields.
    pub fn matches(&self, pattern: &Event) -> bool {
        self.name == pattern.name
            && pattern
                .fields
                .iter()
                .all(|(k, v)| self.field(k) == Some(v.as_str()))
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (key, value) in &self.fields {
            write!(f, " {key}={value}")?;
        }
        Ok(())
    }
}

/// The per-node random number generator: ChaCha8, portable across platforms and releases.
pub type NodeRng = ChaCha8Rng;

/// Derives a node incarnation's RNG from (seed, node name, incarnation) with a stable hash, so a
/// simulated run draws the same numbers on every machine.
pub fn node_rng(seed: u64, node: &str, incarnation: u64) -> NodeRng {
    let mut hash = Fnv64::default();
    hash.write(&seed.to_le_bytes());
    hash.write(node.as_bytes());
    hash.write(&[0xff]);
    hash.write(&incarnation.to_le_bytes());
    let mut state = hash.finish();
    let mut key = [0u8; 32];
    for chunk in key.chunks_mut(8) {
        chunk.copy_from_slice(&splitmix64(&mut state).to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// FNV-1a, 64 bit: a hash whose output never changes between builds.
#[derive(Clone, Copy)]
pub struct Fnv64(u64);

impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv64 {
    pub fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The parts an [`Env`] is made of; each world builds its own.
pub struct EnvParts {
    pub node: String,
    pub net: Arc<dyn Net>,
    pub clock: Arc<dyn Clock>,
    pub disk: Arc<dyn Disk>,
    pub events: Arc<dyn EventSink>,
    pub rng: NodeRng,
}

/// A node's view of the world. Cheap to clone; clones share the RNG.
#[derive(Clone)]
pub struct Env {
    node: Arc<str>,
    net: Arc<dyn Net>,
    clock: Arc<dyn Clock>,
    disk: Arc<dyn Disk>,
    events: Arc<dyn EventSink>,
    rng: Arc<Mutex<NodeRng>>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Env({})", self.node)
    }
}

impl Env {
    pub fn new(parts: EnvParts) -> Self {
        Env {
            node: parts.node.into(),
            net: parts.net,
            clock: parts.clock,
            disk: parts.disk,
            events: parts.events,
            rng: Arc::new(Mutex::new(parts.rng)),
        }
    }

    /// This node's name (its host name in simulation).
    pub fn node(&self) -> &str {
        &self.node
    }

    pub async fn bind(&self, addr: SocketAddr) -> io::Result<Listener> {
        self.net.bind(addr).await
    }

    /// A UDP socket on `addr`.
    pub async fn bind_udp(&self, addr: SocketAddr) -> io::Result<Datagrams> {
        self.net.bind_udp(addr).await
    }

    /// The addresses of `host` (a name or an address): the resolver's (or the address book's)
    /// live, the simulated network's hosts simulated.
    pub async fn lookup(&self, host: &str) -> io::Result<Vec<IpAddr>> {
        self.net.lookup(host).await
    }

    /// Connects to `host:port`, giving up after `timeout` (a simulated partition drops the SYN,
    /// so without a bound a connect could wait forever).
    pub async fn connect(&self, host: &str, port: u16, timeout: Duration) -> io::Result<Stream> {
        match tokio::time::timeout(timeout, self.net.connect(host, port)).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "connect to {host}:{port} timed out after {} ms",
                    timeout.as_millis()
                ),
            )),
        }
    }

    /// Wall-clock milliseconds since the Unix epoch.
    pub fn unix_ms(&self) -> u64 {
        self.clock.unix_ms()
    }

    pub fn disk(&self) -> &dyn Disk {
        &*self.disk
    }

    /// The node's seeded RNG. Hold the guard briefly and never across an `.await`.
    pub fn rng(&self) -> MutexGuard<'_, NodeRng> {
        // A poisoned lock only means another task panicked mid-draw; the RNG state is still valid.
        self.rng
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records an event of this node.
    pub fn emit(&self, event: Event) {
        self.events.emit(&self.node, &event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::RngCore;

    #[test]
    fn node_rng_is_stable_and_distinct() {
        let a = node_rng(7, "coord-1", 0).next_u64();
        assert_eq!(a, node_rng(7, "coord-1", 0).next_u64());
        assert_ne!(a, node_rng(7, "coord-1", 1).next_u64());
        assert_ne!(a, node_rng(7, "coord-2", 0).next_u64());
        assert_ne!(a, node_rng(8, "coord-1", 0).next_u64());
    }

    #[test]
    fn events_print_and_parse() {
        let event = Event::new("leader").with("role", "coord").with("term", 3);
        assert_eq!(event.to_string(), "leader role=coord term=3");
        assert_eq!(
            Event::parse("leader role=coord term=3"),
            Some(event.clone())
        );
        assert!(event.matches(&Event::parse("leader term=3").unwrap()));
        assert!(!event.matches(&Event::parse("leader term=4").unwrap()));
        assert_eq!(Event::parse("leader role"), None);
    }
}
