//! The server's client sockets: ZooKeeper's wire framing in and out, a task per connection
//! feeding the core's inputs, and ZooKeeper's `maxClientCnxns` per address.

use super::*;

pub(super) async fn accept_clients(
    mut listener: Listener,
    inputs: mpsc::UnboundedSender<Input>,
    max_packet_bytes: usize,
    max_per_address: usize,
) {
    let mut next: ConnectionId = 1;
    let open = PerAddress::default();
    let mut refused: u64 = 0;
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(slot) = open.take(peer.ip(), max_per_address) else {
            refused += 1;
            if refused.is_power_of_two() {
                // ZooKeeper's words, at the 1st, 2nd, 4th... refusal.
                tracing::warn!(address = %peer.ip(), max = max_per_address, refused, "Too many connections from this address: closed");
            }
            drop(stream);
            continue;
        };
        let inputs = inputs.clone();
        drover_core::env::spawn(async move {
            client_connection(next, stream, peer.ip(), inputs, max_packet_bytes).await;
            drop(slot);
        });
        next += 1;
    }
}

/// How many client connections each address holds open.
#[derive(Clone, Default)]
struct PerAddress(std::sync::Arc<std::sync::Mutex<BTreeMap<std::net::IpAddr, usize>>>);

/// One open connection of an address; given back when dropped.
struct Slot(PerAddress, std::net::IpAddr);

impl PerAddress {
    /// A slot for one more connection from `address`, unless it holds `max` (0: no limit).
    fn take(&self, address: std::net::IpAddr, max: usize) -> Option<Slot> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(address).or_default();
        if max != 0 && *count >= max {
            return None;
        }
        *count += 1;
        Some(Slot(self.clone(), address))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = (self.0).0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.1) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// How many bytes of queued packets a client connection gathers into one write.
const CLIENT_BATCH_BYTES: usize = 64 * 1024;

/// Reads a client's packets into the core and writes what the core answers, in order.
pub(super) async fn client_connection(
    connection: ConnectionId,
    stream: Stream,
    peer: std::net::IpAddr,
    inputs: mpsc::UnboundedSender<Input>,
    max_packet_bytes: usize,
) {
    let (mut reader, mut writer) = tokio::io::split(stream);
    let (out, mut outgoing) = mpsc::unbounded_channel();
    let mut buffer = BytesMut::with_capacity(8192);
    let mut connected = false;
    'serve: loop {
        tokio::select! {
            biased;
            message = outgoing.recv() => {
                // Everything queued (replies, events) goes out in one write; a Close (or the core
                // gone) ends the connection once what came before it is written.
                let mut packets = Vec::new();
                let mut next = message;
                let close = loop {
                    match next {
                        Some(Outgoing::Packet(packet)) if packets.is_empty() => packets = packet,
                        Some(Outgoing::Packet(packet)) => packets.extend_from_slice(&packet),
                        Some(Outgoing::Close) | None => break true,
                    }
                    if packets.len() >= CLIENT_BATCH_BYTES {
                        break false;
                    }
                    match outgoing.try_recv() {
                        Ok(message) => next = Some(message),
                        Err(_) => break false,
                    }
                };
                if !packets.is_empty() {
                    let written = tokio::time::timeout(CLIENT_WRITE_TIMEOUT, writer.write_all(&packets)).await;
                    if !matches!(written, Ok(Ok(()))) {
                        break 'serve;
                    }
                }
                if close {
                    break 'serve;
                }
            }
            read = reader.read_buf(&mut buffer) => {
                if !matches!(read, Ok(n) if n > 0) {
                    break 'serve;
                }
                // ZooKeeper's four-letter words (`ruok`, `srvr`, ...) come instead of a handshake.
                if !connected && buffer.len() >= 4 {
                    if let Some(word) = FOUR_LETTER_WORDS.iter().find(|w| buffer.starts_with(w.as_bytes())) {
                        connected = true;
                        let _ = inputs.send(Input::FourLetter { word, out: out.clone() });
                        buffer.clear();
                        continue 'serve;
                    }
                }
                loop {
                    let packet = match split_packet(&mut buffer, max_packet_bytes) {
                        Ok(Some(packet)) => packet,
                        Ok(None) => break,
                        Err(error) => {
                            tracing::debug!(connection, %error, "closing a client connection");
                            break 'serve;
                        }
                    };
                    let input = if connected {
                        match proto::decode_request(&packet) {
                            Ok(request) => Input::Request { connection, request },
                            Err(error) => {
                                tracing::debug!(connection, %error, "closing a client connection");
                                break 'serve;
                            }
                        }
                    } else {
                        match proto::decode_connect(&packet) {
                            Ok(request) => {
                                connected = true;
                                Input::Connect { connection, request, peer, out: out.clone() }
                            }
                            Err(error) => {
                                tracing::debug!(connection, %error, "closing a client connection");
                                break 'serve;
                            }
                        }
                    };
                    if inputs.send(input).is_err() {
                        break 'serve;
                    }
                }
            }
        }
    }
    let _ = writer.shutdown().await;
    let _ = inputs.send(Input::Closed { connection });
}
