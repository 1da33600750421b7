//! The host's side of the simulated network, what the seam's `Net` hands a node: listeners,
//! datagram sockets and byte streams, each a view of the [`World`] owned by one incarnation.

use super::*;

/// The seam's `Net` for one host incarnation.
pub struct SimNet {
    pub(super) network: Network,
    pub(super) owner: Owner,
}

impl SimNet {
    fn local_ip(&self) -> Ipv4Addr {
        self.network
            .world()
            .hosts
            .get(&self.owner.host)
            .map_or(Ipv4Addr::LOCALHOST, |h| h.ip)
    }
}

struct SimListener {
    network: Network,
    id: u64,
    addr: SocketAddr,
}

impl Accept for SimListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Stream, SocketAddr)>> {
        Box::pin(std::future::poll_fn(move |cx| {
            let mut world = self.network.world();
            let Some(backlog) = world.backlogs.get_mut(&self.id) else {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::NotConnected,
                    "the listener's host is gone",
                )));
            };
            if !backlog.owner.is_alive() {
                return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
            }
            match backlog.queue.pop_front() {
                Some((stream, peer)) => Poll::Ready(Ok((Box::new(stream) as Stream, peer))),
                None => {
                    backlog.waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        }))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

impl Drop for SimListener {
    fn drop(&mut self) {
        let mut world = self.network.world();
        let backlog = world.backlogs.remove(&self.id);
        if let Some(backlog) = &backlog {
            if let Some(host) = world.hosts.get_mut(&backlog.owner.host) {
                if host.listeners.get(&backlog.port) == Some(&self.id) {
                    host.listeners.remove(&backlog.port);
                }
            }
        }
        // Connections never accepted are dropped without the lock (their ends take it).
        drop(world);
        drop(backlog);
    }
}

/// A simulated UDP socket.
struct SimDatagrams {
    network: Network,
    owner: Owner,
    id: u64,
    addr: SocketAddr,
}

impl DatagramSocket for SimDatagrams {
    fn send_to<'a>(
        &'a self,
        data: &'a [u8],
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<()>> {
        Box::pin(async move {
            let mut world = self.network.world();
            if !self.owner.is_alive() {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let me = self.owner.host.clone();
            let target = match host {
                "localhost" | "127.0.0.1" => Some(me.clone()),
                _ => world.resolve(host),
            }
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no host {host}")))?;
            let Some(&inbox_id) = world
                .hosts
                .get(&target)
                .filter(|h| h.up)
                .and_then(|h| h.udp.get(&port))
            else {
                return Ok(());
            };
            let now = Instant::now();
            let link = (me.clone(), target.clone());
            let at = if target == me {
                Some(now)
            } else if world.cut.contains(&link) {
                return Ok(());
            } else if world.held.contains(&link) {
                None
            } else {
                let loss = if world.lossless.contains(&link) {
                    0.0
                } else {
                    world.conditions.loss
                };
                if loss > 0.0 && world.rng.random_bool(loss.clamp(0.0, 1.0)) {
                    return Ok(());
                }
                Some(now + world.latency())
            };
            let seq = world.id();
            let inbox = world.inboxes.get_mut(&inbox_id).expect("a port's inbox");
            inbox.queue.push(Datagram {
                at,
                seq,
                sender: self.owner.clone(),
                from: self.addr,
                data: Bytes::copy_from_slice(data),
            });
            inbox.arrived.notify_one();
            Ok(())
        })
    }

    fn recv_from(&self) -> BoxFuture<'_, io::Result<(Bytes, SocketAddr)>> {
        Box::pin(async move {
            loop {
                let (arrived, next) = {
                    let mut world = self.network.world();
                    let Some(inbox) = world.inboxes.get_mut(&self.id) else {
                        return Err(io::Error::new(
                            io::ErrorKind::NotConnected,
                            "the socket's host is gone",
                        ));
                    };
                    if !inbox.owner.is_alive() {
                        return Err(io::ErrorKind::NotConnected.into());
                    }
                    let now = Instant::now();
                    let first = inbox
                        .queue
                        .iter()
                        .enumerate()
                        .filter_map(|(i, d)| d.at.map(|at| (at, d.seq, i)))
                        .min();
                    if let Some((_, _, i)) = first.filter(|(at, _, _)| *at <= now) {
                        let datagram = inbox.queue.swap_remove(i);
                        return Ok((datagram.data, datagram.from));
                    }
                    (inbox.arrived.clone(), first.map(|(at, _, _)| at))
                };
                match next {
                    Some(at) => tokio::select! {
                        biased;
                        _ = arrived.notified() => {}
                        _ = tokio::time::sleep_until(at) => {}
                    },
                    None => arrived.notified().await,
                }
            }
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

impl Drop for SimDatagrams {
    fn drop(&mut self) {
        let mut world = self.network.world();
        if world.inboxes.remove(&self.id).is_some() {
            if let Some(host) = world.hosts.get_mut(&self.owner.host) {
                if host.udp.get(&self.addr.port()) == Some(&self.id) {
                    host.udp.remove(&self.addr.port());
                }
            }
        }
    }
}

/// Takes `wanted` in `ports` for `id`, or the next free ephemeral port when `wanted` is 0.
fn claim(
    next_port: &mut u16,
    ports: &mut BTreeMap<u16, u64>,
    wanted: u16,
    id: u64,
    what: &str,
) -> io::Result<u16> {
    let port = if wanted == 0 {
        let mut port = *next_port;
        while ports.contains_key(&port) {
            port = port.checked_add(1).unwrap_or(FIRST_EPHEMERAL_PORT);
        }
        *next_port = port.checked_add(1).unwrap_or(FIRST_EPHEMERAL_PORT);
        port
    } else {
        wanted
    };
    if ports.contains_key(&port) {
        return Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("{what} {port} is in use"),
        ));
    }
    ports.insert(port, id);
    Ok(port)
}

impl Net for SimNet {
    fn lookup<'a>(&'a self, host: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let world = self.network.world();
            match world.resolve(host).and_then(|name| world.hosts.get(&name)) {
                Some(found) => Ok(vec![IpAddr::V4(found.ip)]),
                None => Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{host}: no such simulated host"),
                )),
            }
        })
    }

    fn bind_udp(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Datagrams>> {
        Box::pin(async move {
            if !self.owner.is_alive() {
                return Err(io::ErrorKind::AddrNotAvailable.into());
            }
            let ip = self.local_ip();
            let mut world = self.network.world();
            let id = world.id();
            let host = world
                .hosts
                .get_mut(&self.owner.host)
                .ok_or(io::ErrorKind::AddrNotAvailable)?;
            let port = claim(
                &mut host.next_port,
                &mut host.udp,
                addr.port(),
                id,
                "UDP port",
            )?;
            world.inboxes.insert(
                id,
                Inbox {
                    owner: self.owner.clone(),
                    queue: Vec::new(),
                    arrived: Arc::new(Notify::new()),
                },
            );
            Ok(Box::new(SimDatagrams {
                network: self.network.clone(),
                owner: self.owner.clone(),
                id,
                addr: SocketAddr::new(IpAddr::V4(ip), port),
            }) as Datagrams)
        })
    }

    fn bind(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<Listener>> {
        Box::pin(async move {
            if !self.owner.is_alive() {
                return Err(io::ErrorKind::AddrNotAvailable.into());
            }
            let ip = self.local_ip();
            let mut world = self.network.world();
            let id = world.id();
            let host = world
                .hosts
                .get_mut(&self.owner.host)
                .ok_or(io::ErrorKind::AddrNotAvailable)?;
            let port = claim(
                &mut host.next_port,
                &mut host.listeners,
                addr.port(),
                id,
                "port",
            )?;
            world.backlogs.insert(
                id,
                Backlog {
                    owner: self.owner.clone(),
                    port,
                    queue: VecDeque::new(),
                    waker: None,
                },
            );
            let local = SocketAddr::new(IpAddr::V4(ip), port);
            Ok(Listener::new(SimListener {
                network: self.network.clone(),
                id,
                addr: local,
            }))
        })
    }

    fn connect<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<Stream>> {
        Box::pin(async move {
            let refused =
                || io::Error::new(io::ErrorKind::ConnectionRefused, format!("{host}:{port}"));
            let me = self.owner.host.clone();
            // The SYN: it waits while the link is held, is refused across a cut or where nothing
            // listens, and otherwise reaches the listener after one latency.
            let (target, syn_at) = loop {
                let released = {
                    let mut world = self.network.world();
                    if !self.owner.is_alive() {
                        return Err(io::ErrorKind::BrokenPipe.into());
                    }
                    let target = match host {
                        "localhost" | "127.0.0.1" => Some(me.clone()),
                        _ => world.resolve(host),
                    }
                    .ok_or_else(|| {
                        io::Error::new(io::ErrorKind::NotFound, format!("no host {host}"))
                    })?;
                    let there = (me.clone(), target.clone());
                    let back = (target.clone(), me.clone());
                    if target != me && (world.cut.contains(&there) || world.cut.contains(&back)) {
                        return Err(refused());
                    }
                    if target != me && (world.held.contains(&there) || world.held.contains(&back)) {
                        world.released.clone()
                    } else {
                        let now = Instant::now();
                        let at = if target == me {
                            now
                        } else {
                            world.arrival(&me, &target, now)
                        };
                        break (target, at);
                    }
                };
                released.notified().await;
            };
            tokio::time::sleep_until(syn_at).await;
            let (stream, back_at) = {
                let mut world = self.network.world();
                if !self.owner.is_alive() {
                    return Err(io::ErrorKind::BrokenPipe.into());
                }
                let Some(target_host) = world.hosts.get(&target) else {
                    return Err(refused());
                };
                let Some(&listener) = target_host.listeners.get(&port).filter(|_| target_host.up)
                else {
                    return Err(refused());
                };
                let server_ip = target_host.ip;
                let Some(backlog) = world.backlogs.get(&listener) else {
                    return Err(refused());
                };
                let server = backlog.owner.clone();
                if !server.is_alive()
                    || world.cut.contains(&(target.clone(), me.clone()))
                    || world.cut.contains(&(me.clone(), target.clone()))
                {
                    return Err(refused());
                }
                let my_ip = world.hosts.get(&me).map_or(Ipv4Addr::LOCALHOST, |h| h.ip);
                let client_port = {
                    let h = world.hosts.get_mut(&me).expect("a host connects");
                    let p = h.next_port;
                    h.next_port = p.checked_add(1).unwrap_or(FIRST_EPHEMERAL_PORT);
                    p
                };
                let client_addr = SocketAddr::new(IpAddr::V4(my_ip), client_port);
                let server_addr = SocketAddr::new(IpAddr::V4(server_ip), port);
                let up = world.pipe(&self.owner, &server);
                let down = world.pipe(&server, &self.owner);
                let accepted =
                    SimStream::new(self.network.clone(), down, up, server_addr, client_addr);
                let backlog = world.backlogs.get_mut(&listener).expect("looked up above");
                backlog.queue.push_back((accepted, client_addr));
                if let Some(w) = backlog.waker.take() {
                    w.wake();
                }
                let now = Instant::now();
                let back_at = if target == me {
                    now
                } else {
                    world.arrival(&target, &me, now)
                };
                (
                    SimStream::new(self.network.clone(), up, down, client_addr, server_addr),
                    back_at,
                )
            };
            tokio::time::sleep_until(back_at).await;
            Ok(Box::new(stream) as Stream)
        })
    }
}

/// One end of a simulated connection.
pub struct SimStream {
    network: Network,
    tx: u64,
    rx: u64,
    local: SocketAddr,
    peer: SocketAddr,
    /// Wakes the reader when the next segment is due.
    due: Option<Pin<Box<Sleep>>>,
    fin_sent: bool,
}

impl SimStream {
    fn new(network: Network, tx: u64, rx: u64, local: SocketAddr, peer: SocketAddr) -> Self {
        SimStream {
            network,
            tx,
            rx,
            local,
            peer,
            due: None,
            fin_sent: false,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
}

impl AsyncRead for SimStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let now = Instant::now();
        let next_due = {
            let mut world = this.network.world();
            let Some(pipe) = world.pipes.get_mut(&this.rx) else {
                return Poll::Ready(Err(io::ErrorKind::NotConnected.into()));
            };
            if !pipe.to.is_alive() {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            if pipe.reset {
                return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
            }
            let mut read = 0;
            while buf.remaining() > 0 {
                let Some(head) = pipe.segments.front_mut() else {
                    break;
                };
                if head.at.is_none_or(|at| at > now) {
                    break;
                }
                if head.fin {
                    break;
                }
                let n = head.data.len().min(buf.remaining());
                buf.put_slice(&head.data.split_to(n));
                read += n;
                if head.data.is_empty() {
                    pipe.segments.pop_front();
                }
            }
            if read > 0 {
                return Poll::Ready(Ok(()));
            }
            match pipe.segments.front() {
                Some(head) if head.fin && head.at.is_some_and(|at| at <= now) => {
                    return Poll::Ready(Ok(()));
                }
                Some(head) => {
                    pipe.waker = Some(cx.waker().clone());
                    head.at
                }
                None => {
                    pipe.waker = Some(cx.waker().clone());
                    None
                }
            }
        };
        if let Some(at) = next_due {
            let due = this
                .due
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
            due.as_mut().reset(at);
            if due.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.fin_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let mut world = self.network.world();
        world.send(self.tx, Bytes::copy_from_slice(buf), false)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.fin_sent {
            this.fin_sent = true;
            let mut world = this.network.world();
            // A FIN that cannot be sent is no error to the closer.
            let _ = world.send(this.tx, Bytes::new(), true);
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for SimStream {
    fn drop(&mut self) {
        let mut world = self.network.world();
        if !self.fin_sent {
            let _ = world.send(self.tx, Bytes::new(), true);
        }
        if let Some(pipe) = world.pipes.get_mut(&self.tx) {
            pipe.writer_gone = true;
        }
        if let Some(pipe) = world.pipes.get_mut(&self.rx) {
            pipe.reader_gone = true;
        }
        world.forget_pipe_if_unused(self.tx);
        world.forget_pipe_if_unused(self.rx);
    }
}
