//! The simulated network: hosts with addresses, listeners, and TCP-like byte streams whose
//! segments arrive after a latency drawn from the run's seeded RNG, in order.
//!
//! Everything lives in one [`World`] behind a mutex (the simulation is single-threaded; the mutex
//! only satisfies the seam's `Send` bounds). Time is tokio's paused clock, so a segment's arrival
//! is a timer like any other and the runtime jumps straight from one event to the next.
//!
//! Faults, per directed link: *cut* (a segment sent across it, or on its way when the cut came, is
//! lost; TCP retransmits it after 1, 2, 4, ... RTOs of 200 ms, so it arrives at its first
//! retransmission after the heal, and everything behind it waits; a connect across a cut is
//! refused), *held* (segments wait, and arrive after the release in their order), and *loss* (a
//! lost segment is retransmitted after an RTO, doubling per retry, so it arrives late but in
//! order). Connections outlive any cut (Linux gives up only after ~15 minutes of retransmissions,
//! longer than any scenario). A crashed host's unsent and
//! in-flight segments are lost (power loss: no FIN, no RST); writing to a connection whose far end
//! died while its host is back up fails with a reset, as the new incarnation answers with RST.
//!
//! Datagrams (UDP) take one latency each and may overtake one another; nothing retransmits them:
//! loss and cuts drop them (one on its way when a cut comes too), a held link keeps them until
//! the release, and a closed port or a host that is down swallows them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future as _;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use drover_core::env::{Accept, BoxFuture, DatagramSocket, Datagrams, Listener, Net, Stream};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

mod sockets;

pub use sockets::{SimNet, SimStream};

/// The first retransmission timeout of a lost segment (Linux' minimum RTO).
const RTO: Duration = Duration::from_millis(200);
/// Retransmissions of one segment before the connection gives up and stalls.
const MAX_RETRANSMITS: u32 = 6;
const FIRST_EPHEMERAL_PORT: u16 = 49152;

/// The network's knobs, as a scenario sets them.
#[derive(Clone, Copy, Debug)]
pub struct Conditions {
    pub latency_ms: [u64; 2],
    pub loss: f64,
}

/// One incarnation of a host: what its sockets belong to. A crash marks it dead; its sockets then
/// send nothing and fail when used.
#[derive(Clone, Debug)]
pub struct Owner {
    pub host: String,
    pub alive: Arc<AtomicBool>,
}

impl Owner {
    pub fn new(host: &str) -> Self {
        Owner {
            host: host.to_string(),
            alive: Arc::new(AtomicBool::new(true)),
        }
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }
}

struct Host {
    ip: Ipv4Addr,
    up: bool,
    listeners: BTreeMap<u16, u64>,
    /// UDP sockets by port.
    udp: BTreeMap<u16, u64>,
    next_port: u16,
}

/// A UDP socket's arrivals.
struct Inbox {
    owner: Owner,
    queue: Vec<Datagram>,
    /// Told of every datagram put in the queue.
    arrived: Arc<Notify>,
}

struct Datagram {
    /// When it arrives; `None` while its link is held.
    at: Option<Instant>,
    /// Sending order, to break ties between equal arrival times.
    seq: u64,
    sender: Owner,
    from: SocketAddr,
    data: Bytes,
}

struct Backlog {
    owner: Owner,
    port: u16,
    queue: VecDeque<(SimStream, SocketAddr)>,
    waker: Option<Waker>,
}

struct Segment {
    /// When it arrives; `None` while its link is held or cut.
    at: Option<Instant>,
    /// When it was lost to a cut: TCP retransmits it from then on, and the first retransmission
    /// after the heal gets through.
    lost_at: Option<Instant>,
    data: Bytes,
    fin: bool,
}

/// The first retransmission at or after `now` of a segment lost at `lost_at`: retransmissions
/// come after 1, 2, 4, ... RTOs (Linux' backoff, each wait capped at 120 s).
fn next_retransmission(lost_at: Instant, now: Instant) -> Instant {
    let mut at = lost_at;
    let mut wait = RTO;
    while at < now {
        at += wait;
        wait = (wait * 2).min(Duration::from_secs(120));
    }
    at
}

/// One direction of a connection.
/// Arrival times never decrease along a pipe, so the segments that wait (held, or lost to a cut)
/// are always a suffix: whether any waits is whether the last one does.
struct Pipe {
    from: Owner,
    to: Owner,
    segments: VecDeque<Segment>,
    /// The arrival time of the last segment sent: later ones never overtake it.
    last_at: Option<Instant>,
    /// A segment was lost for good: nothing after it is delivered.
    stalled: bool,
    reset: bool,
    waker: Option<Waker>,
    writer_gone: bool,
    reader_gone: bool,
}

/// The whole network of a run.
pub struct World {
    rng: ChaCha8Rng,
    conditions: Conditions,
    /// Links with no loss whatever the conditions (directed).
    lossless: BTreeSet<(String, String)>,
    cut: BTreeSet<(String, String)>,
    held: BTreeSet<(String, String)>,
    hosts: BTreeMap<String, Host>,
    by_ip: BTreeMap<Ipv4Addr, String>,
    backlogs: BTreeMap<u64, Backlog>,
    pipes: BTreeMap<u64, Pipe>,
    inboxes: BTreeMap<u64, Inbox>,
    next_id: u64,
    /// Woken when held links are released, for connects waiting on one.
    released: Arc<Notify>,
}

/// A handle on the network of a run; cheap to clone.
#[derive(Clone)]
pub struct Network(Arc<Mutex<World>>);

impl Network {
    pub fn new(seed: u64, conditions: Conditions) -> Self {
        Network(Arc::new(Mutex::new(World {
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6e65_7477_6f72_6b00),
            conditions,
            lossless: BTreeSet::new(),
            cut: BTreeSet::new(),
            held: BTreeSet::new(),
            hosts: BTreeMap::new(),
            by_ip: BTreeMap::new(),
            backlogs: BTreeMap::new(),
            pipes: BTreeMap::new(),
            inboxes: BTreeMap::new(),
            next_id: 1,
            released: Arc::new(Notify::new()),
        })))
    }

    fn world(&self) -> MutexGuard<'_, World> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a host; hosts get 192.168.0.1, .2, ... in the order they are added.
    pub fn add_host(&self, name: &str) -> Ipv4Addr {
        let mut world = self.world();
        let n = world.hosts.len() as u32 + 1;
        let ip = Ipv4Addr::new(192, 168, (n >> 8) as u8, (n & 0xff) as u8);
        world.hosts.insert(
            name.to_string(),
            Host {
                ip,
                up: true,
                listeners: BTreeMap::new(),
                udp: BTreeMap::new(),
                next_port: FIRST_EPHEMERAL_PORT,
            },
        );
        world.by_ip.insert(ip, name.to_string());
        ip
    }

    /// The host is down (crashed or stopped): its listeners close and whatever its dead
    /// incarnation had not delivered yet is lost. The caller marks the incarnation dead first.
    pub fn host_down(&self, name: &str) {
        // Connections still in a backlog are dropped after the lock is released (their ends
        // lock the world when dropped).
        let mut closed = Vec::new();
        let mut world = self.world();
        let now = Instant::now();
        if let Some(host) = world.hosts.get_mut(name) {
            host.up = false;
            let ids: Vec<u64> = std::mem::take(&mut host.listeners).into_values().collect();
            for id in ids {
                if let Some(mut backlog) = world.backlogs.remove(&id) {
                    if let Some(w) = backlog.waker.take() {
                        w.wake();
                    }
                    closed.push(backlog);
                }
            }
        }
        if let Some(host) = world.hosts.get_mut(name) {
            let ids: Vec<u64> = std::mem::take(&mut host.udp).into_values().collect();
            for id in ids {
                if let Some(inbox) = world.inboxes.remove(&id) {
                    inbox.arrived.notify_one();
                }
            }
        }
        for inbox in world.inboxes.values_mut() {
            inbox
                .queue
                .retain(|d| d.sender.is_alive() || d.at.is_some_and(|at| at <= now));
        }
        for pipe in world.pipes.values_mut() {
            if pipe.from.host == name && !pipe.from.is_alive() {
                let before = pipe.segments.len();
                pipe.segments.retain(|s| s.at.is_some_and(|at| at <= now));
                if pipe.segments.len() != before {
                    pipe.stalled = true;
                }
            }
        }
        drop(world);
        drop(closed);
    }

    pub fn host_up(&self, name: &str) {
        if let Some(host) = self.world().hosts.get_mut(name) {
            host.up = true;
        }
    }

    /// Cuts `from → to`: segments on their way are lost, later ones too; TCP retransmits them, so
    /// they arrive after the heal.
    pub fn cut(&self, from: &str, to: &str) {
        let mut world = self.world();
        world.cut.insert((from.to_string(), to.to_string()));
        let now = Instant::now();
        for inbox in world.inboxes.values_mut() {
            if inbox.owner.host == to {
                inbox
                    .queue
                    .retain(|d| d.sender.host != from || d.at.is_some_and(|at| at <= now));
            }
        }
        for pipe in world.pipes.values_mut() {
            if pipe.from.host == from && pipe.to.host == to {
                for segment in pipe.segments.iter_mut() {
                    if segment.at.is_none_or(|at| at > now) {
                        segment.at = None;
                        segment.lost_at.get_or_insert(now);
                    }
                }
            }
        }
    }

    pub fn hold(&self, from: &str, to: &str) {
        self.world().held.insert((from.to_string(), to.to_string()));
    }

    /// Ends every cut and hold; held segments leave now, lost ones at their next retransmission.
    pub fn heal(&self) {
        let mut world = self.world();
        world.cut.clear();
        world.release_all();
    }

    /// Ends every hold (cuts stay).
    pub fn release(&self) {
        self.world().release_all();
    }

    pub fn set_max_latency(&self, max_ms: u64) {
        let mut world = self.world();
        world.conditions.latency_ms[1] = max_ms.max(world.conditions.latency_ms[0]);
    }

    pub fn set_loss(&self, rate: f64) {
        self.world().conditions.loss = rate;
    }

    /// Both directions between `a` and `b` lose nothing, whatever the loss rate.
    pub fn set_lossless(&self, a: &str, b: &str) {
        let mut world = self.world();
        world.lossless.insert((a.to_string(), b.to_string()));
        world.lossless.insert((b.to_string(), a.to_string()));
    }

    pub fn clear_lossless(&self) {
        self.world().lossless.clear();
    }

    /// The seam's network for one host incarnation.
    pub fn net(&self, owner: Owner) -> SimNet {
        SimNet {
            network: self.clone(),
            owner,
        }
    }
}

impl Pipe {
    fn waiting(&self) -> bool {
        self.segments.back().is_some_and(|s| s.at.is_none())
    }
}

impl World {
    /// Ends every hold, and lets through what waits on a link that is no longer cut.
    fn release_all(&mut self) {
        self.held.clear();
        let now = Instant::now();
        let ids: Vec<u64> = self.inboxes.keys().copied().collect();
        for id in ids {
            let waiting = self.inboxes[&id]
                .queue
                .iter()
                .filter(|d| d.at.is_none())
                .count();
            let times: Vec<Instant> = (0..waiting).map(|_| now + self.latency()).collect();
            let inbox = self.inboxes.get_mut(&id).expect("listed above");
            let mut times = times.into_iter();
            for datagram in inbox.queue.iter_mut().filter(|d| d.at.is_none()) {
                datagram.at = times.next();
            }
            if waiting > 0 {
                inbox.arrived.notify_one();
            }
        }
        let ids: Vec<u64> = self.pipes.keys().copied().collect();
        for id in ids {
            let pipe = &self.pipes[&id];
            let link = (pipe.from.host.clone(), pipe.to.host.clone());
            if self.cut.contains(&link) || !pipe.waiting() {
                continue;
            }
            let waiting: Vec<Option<Instant>> = pipe
                .segments
                .iter()
                .filter(|s| s.at.is_none())
                .map(|s| s.lost_at)
                .collect();
            let mut times = Vec::new();
            for lost_at in waiting {
                let leaves = lost_at.map_or(now, |lost_at| next_retransmission(lost_at, now));
                times.push(leaves + self.latency());
            }
            let pipe = self.pipes.get_mut(&id).expect("listed above");
            let mut times = times.into_iter();
            let mut last: Option<Instant> = None;
            // In order: nothing overtakes a segment that was waiting.
            for segment in pipe.segments.iter_mut() {
                let mut at = match segment.at {
                    Some(at) => at,
                    None => times.next().unwrap_or(now),
                };
                if let Some(last) = last {
                    at = at.max(last);
                }
                segment.at = Some(at);
                segment.lost_at = None;
                last = Some(at);
            }
            if last.is_some() {
                pipe.last_at = last;
            }
            if let Some(w) = pipe.waker.take() {
                w.wake();
            }
        }
        self.released.notify_waiters();
    }

    fn latency(&mut self) -> Duration {
        let [min, max] = self.conditions.latency_ms;
        Duration::from_millis(if max > min {
            self.rng.random_range(min..=max)
        } else {
            min
        })
    }

    /// When a segment sent now from `from` to `to` arrives, retransmissions included; `None` when
    /// it is lost for good.
    fn arrival(&mut self, from: &str, to: &str, now: Instant) -> Instant {
        let mut at = now + self.latency();
        let loss = if self.lossless.contains(&(from.to_string(), to.to_string())) {
            0.0
        } else {
            self.conditions.loss
        };
        if loss > 0.0 {
            let mut rto = RTO;
            for _ in 0..MAX_RETRANSMITS {
                if !self.rng.random_bool(loss.clamp(0.0, 1.0)) {
                    break;
                }
                at += rto;
                rto *= 2;
            }
        }
        at
    }

    fn resolve(&self, host: &str) -> Option<String> {
        if self.hosts.contains_key(host) {
            return Some(host.to_string());
        }
        let ip: Ipv4Addr = host.parse().ok()?;
        self.by_ip.get(&ip).cloned()
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn pipe(&mut self, from: &Owner, to: &Owner) -> u64 {
        let id = self.id();
        self.pipes.insert(
            id,
            Pipe {
                from: from.clone(),
                to: to.clone(),
                segments: VecDeque::new(),
                last_at: None,
                stalled: false,
                reset: false,
                waker: None,
                writer_gone: false,
                reader_gone: false,
            },
        );
        id
    }

    /// Sends on pipe `id` (data, or the FIN when `fin`).
    fn send(&mut self, id: u64, data: Bytes, fin: bool) -> io::Result<()> {
        let now = Instant::now();
        let Some(pipe) = self.pipes.get(&id) else {
            return Err(io::ErrorKind::BrokenPipe.into());
        };
        if !pipe.from.is_alive() {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if pipe.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        let (from, to) = (pipe.from.host.clone(), pipe.to.host.clone());
        if !pipe.to.is_alive() {
            // The far end's incarnation is gone: a host that is back answers with RST, a host
            // that is down answers nothing.
            if self.hosts.get(&to).is_some_and(|h| h.up) {
                self.reset(id);
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            return Ok(());
        }
        if pipe.stalled || pipe.reader_gone {
            return Ok(());
        }
        let link = (from.clone(), to.clone());
        let cut = from != to && self.cut.contains(&link);
        let at = if from == to {
            Some(now)
        } else if cut || self.held.contains(&link) {
            None
        } else {
            Some(self.arrival(&from, &to, now))
        };
        let pipe = self.pipes.get_mut(&id).expect("checked");
        // Behind a segment that waits, everything waits (TCP delivers in order).
        let at = at.filter(|_| !pipe.waiting());
        let at = at.map(|at| {
            let at = pipe.last_at.map_or(at, |last| at.max(last));
            pipe.last_at = Some(at);
            at
        });
        let lost_at = (cut && at.is_none()).then_some(now);
        pipe.segments.push_back(Segment {
            at,
            lost_at,
            data,
            fin,
        });
        if let Some(w) = pipe.waker.take() {
            w.wake();
        }
        Ok(())
    }

    fn reset(&mut self, id: u64) {
        let Some(pipe) = self.pipes.get(&id) else {
            return;
        };
        let (from, to) = (pipe.from.clone(), pipe.to.clone());
        for pipe in self.pipes.values_mut() {
            let same = Arc::ptr_eq(&pipe.from.alive, &from.alive)
                && Arc::ptr_eq(&pipe.to.alive, &to.alive);
            let reverse = Arc::ptr_eq(&pipe.from.alive, &to.alive)
                && Arc::ptr_eq(&pipe.to.alive, &from.alive);
            if same || reverse {
                pipe.reset = true;
                if let Some(w) = pipe.waker.take() {
                    w.wake();
                }
            }
        }
    }

    fn forget_pipe_if_unused(&mut self, id: u64) {
        if self
            .pipes
            .get(&id)
            .is_some_and(|p| p.reader_gone && (p.writer_gone || p.segments.is_empty()))
        {
            self.pipes.remove(&id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_hosts() -> (Network, Owner, Owner) {
        let network = Network::new(
            7,
            Conditions {
                latency_ms: [1, 10],
                loss: 0.0,
            },
        );
        network.add_host("a");
        network.add_host("b");
        (network, Owner::new("a"), Owner::new("b"))
    }

    async fn within(socket: &Datagrams, ms: u64) -> Option<io::Result<(Bytes, SocketAddr)>> {
        tokio::time::timeout(Duration::from_millis(ms), socket.recv_from())
            .await
            .ok()
    }

    #[tokio::test(start_paused = true)]
    async fn datagrams_take_a_latency_and_obey_cuts_holds_and_crashes() {
        let (network, a, b) = two_hosts();
        let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let from_a = network.net(a.clone()).bind_udp(any).await.unwrap();
        let at_b = network
            .net(b.clone())
            .bind_udp("0.0.0.0:53".parse().unwrap())
            .await
            .unwrap();
        assert!(network
            .net(b.clone())
            .bind_udp("0.0.0.0:53".parse().unwrap())
            .await
            .is_err());

        // Delivered after one latency, from a's address.
        let sent = Instant::now();
        from_a.send_to(b"one", "b", 53).await.unwrap();
        let (data, from) = at_b.recv_from().await.unwrap();
        let took = sent.elapsed();
        assert_eq!(
            (&data[..], from),
            (&b"one"[..], from_a.local_addr().unwrap())
        );
        assert!(
            took >= Duration::from_millis(1) && took <= Duration::from_millis(10),
            "{took:?}"
        );
        // A reply by address.
        at_b.send_to(b"back", &from.ip().to_string(), from.port())
            .await
            .unwrap();
        assert_eq!(&from_a.recv_from().await.unwrap().0[..], b"back");

        // A cut drops it for good: nothing arrives after the heal either.
        network.cut("a", "b");
        from_a.send_to(b"lost", "b", 53).await.unwrap();
        assert!(within(&at_b, 1000).await.is_none());
        network.heal();
        assert!(within(&at_b, 1000).await.is_none());

        // A hold keeps it until the release.
        network.hold("a", "b");
        from_a.send_to(b"held", "b", 53).await.unwrap();
        assert!(within(&at_b, 1000).await.is_none());
        network.release();
        assert_eq!(&within(&at_b, 100).await.unwrap().unwrap().0[..], b"held");

        // Nothing listens on that port: swallowed, no error.
        from_a.send_to(b"nobody", "b", 54).await.unwrap();
        // A crashed host's socket fails; datagrams to it vanish.
        b.alive.store(false, Ordering::Relaxed);
        network.host_down("b");
        assert!(at_b.recv_from().await.is_err());
        from_a.send_to(b"gone", "b", 53).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn lost_datagrams_are_not_sent_again() {
        let (network, a, b) = two_hosts();
        network.set_loss(1.0);
        let any: SocketAddr = "0.0.0.0:0".parse().unwrap();
        let from_a = network.net(a).bind_udp(any).await.unwrap();
        let at_b = network.net(b).bind_udp(any).await.unwrap();
        let port = at_b.local_addr().unwrap().port();
        for _ in 0..10 {
            from_a.send_to(b"x", "b", port).await.unwrap();
        }
        assert!(within(&at_b, 60_000).await.is_none());
    }
}
