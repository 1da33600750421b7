//! The server's sockets: clients' connections (ZooKeeper's wire framing in and out) and the
//! raft peers' links, each a task of its own feeding the core's inputs.

use drover_core::auth::challenge;
use tokio_util::codec::Framed;

use super::*;

pub(super) async fn accept_clients(
    mut listener: Listener,
    inputs: mpsc::UnboundedSender<Input>,
    max_packet_bytes: usize,
) {
    let mut next: ConnectionId = 1;
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        drover_core::env::spawn(client_connection(
            next,
            stream,
            peer.ip(),
            inputs.clone(),
            max_packet_bytes,
        ));
        next += 1;
    }
}

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
            message = outgoing.recv() => match message {
                                Some(Outgoing::Packet(packet)) => {
                    let written = tokio::time::timeout(CLIENT_WRITE_TIMEOUT, writer.write_all(&packet)).await;
                    if !matches!(written, Ok(Ok(()))) {
                        break 'serve;
                    }
                }
                Some(Outgoing::Close) | None => break 'serve,
            },
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

pub(super) async fn accept_peers(
    env: Env,
    mut listener: Listener,
    inputs: mpsc::UnboundedSender<Input>,
    secret: Option<std::sync::Arc<Vec<u8>>>,
) {
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let inputs = inputs.clone();
        let secret = secret.clone();
        // Drawn only when peers authenticate: the simulation's randomness stays as it was.
        let challenge = secret.map(|secret| {
            let nonce = challenge::nonce(&mut *env.rng());
            (secret, nonce)
        });
        let refused = refused.clone();
        let env = env.clone();
        drover_core::env::spawn(async move {
            // Until the proof, a frame of a few bytes at most: a stranger's length prefix
            // reserves no memory.
            let first_max = match challenge {
                Some(_) => PEER_PROOF_MAX_FRAME_BYTES,
                None => PEER_MAX_FRAME_BYTES,
            };
            let mut frames = Framed::new(stream, FrameCodec::with_max(first_max));
            if let Some((secret, nonce)) = challenge {
                if !peer_proved(&mut frames, &secret, &nonce).await {
                    let count = refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    // The 1st, 2nd, 4th, 8th... refusal: a misconfigured peer retrying every few
                    // hundred ms is seen without flooding the log.
                    if count.is_power_of_two() {
                        tracing::warn!(%from, refused = count, "a peer connection did not prove the peer secret: closed");
                    }
                    env.emit(Event::new("peer_refused"));
                    return;
                }
                *frames.codec_mut() = FrameCodec::with_max(PEER_MAX_FRAME_BYTES);
            }
            while let Ok(Some(Ok(frame))) = tokio::time::timeout(PEER_IDLE, frames.next()).await {
                let input = match decode_peer_frame(&frame) {
                    Some(PeerFrame::Raft(message)) => Input::Raft(message),
                    Some(PeerFrame::Keepalive) => continue,
                    Some(PeerFrame::Touch(sessions)) => Input::Touch(sessions),
                    None => break,
                };
                if inputs.send(input).is_err() {
                    break;
                }
            }
        });
    }
}

/// What a peer frame carries once the connection is accepted.
pub enum PeerFrame {
    Raft(Box<Message>),
    /// Sessions a follower's clients kept alive.
    Touch(Vec<i64>),
    Keepalive,
}

/// Decodes a peer frame (after the challenge, if any); `None` for anything else, which closes
/// the connection.
pub fn decode_peer_frame(frame: &[u8]) -> Option<PeerFrame> {
    match decode_binary(frame).ok()? {
        (PEER_RAFT, body) => Message::parse_from_bytes(body)
            .ok()
            .map(|m| PeerFrame::Raft(Box::new(m))),
        (PEER_KEEPALIVE_KIND, _) => Some(PeerFrame::Keepalive),
        (PEER_TOUCH, body) => Some(PeerFrame::Touch(
            body.chunks_exact(8)
                .map(|c| i64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                .collect(),
        )),
        _ => None,
    }
}

type PeerFrames = Framed<Stream, FrameCodec>;

/// The receiving side's challenge: sends `nonce`, then the first frame must be its answer.
async fn peer_proved(frames: &mut PeerFrames, secret: &[u8], nonce: &[u8]) -> bool {
    let sent = tokio::time::timeout(
        PEER_CONNECT_TIMEOUT,
        frames.send(encode_binary(PEER_CHALLENGE, nonce)),
    )
    .await;
    if !matches!(sent, Ok(Ok(()))) {
        return false;
    }
    match tokio::time::timeout(PEER_CONNECT_TIMEOUT, frames.next()).await {
        Ok(Some(Ok(frame))) => matches!(
            decode_binary(&frame),
            Ok((PEER_PROOF, answer)) if challenge::verify(secret, PEER_CONTEXT, nonce, answer)
        ),
        _ => false,
    }
}

/// The sending side: answers the receiver's challenge with the secret. The stream comes back
/// for the frames that follow (the receiver sends nothing after its challenge).
async fn answer_challenge(stream: Stream, secret: &[u8]) -> Option<Stream> {
    let mut frames = Framed::new(stream, FrameCodec::with_max(PEER_MAX_FRAME_BYTES));
    let frame = match tokio::time::timeout(PEER_CONNECT_TIMEOUT, frames.next()).await {
        Ok(Some(Ok(frame))) => frame,
        _ => return None,
    };
    let Ok((PEER_CHALLENGE, nonce)) = decode_binary(&frame) else {
        return None;
    };
    let answer = challenge::answer(secret, PEER_CONTEXT, nonce);
    let sent = tokio::time::timeout(
        PEER_CONNECT_TIMEOUT,
        frames.send(encode_binary(PEER_PROOF, &answer)),
    )
    .await;
    matches!(sent, Ok(Ok(()))).then(|| frames.into_inner())
}

/// Sends frames to one peer over one connection. The connection is re-opened when a write fails
/// or the peer closes it; a keepalive goes out when it has been quiet, because the receiving side
/// closes a connection that carried nothing for [`PEER_IDLE`] (after a partition a TCP connection
/// may never carry anything again).
pub(super) async fn send_to_peer(
    env: Env,
    (host, port): (String, u16),
    mut frames: mpsc::Receiver<Bytes>,
    secret: Option<std::sync::Arc<Vec<u8>>>,
) {
    type Writer = FramedWrite<tokio::io::WriteHalf<Stream>, FrameCodec>;
    let mut open: Option<(Writer, tokio::io::ReadHalf<Stream>)> = None;
    let mut last_sent = tokio::time::Instant::now();
    let mut scratch = [0u8; 64];
    loop {
        let keepalive_at = last_sent + PEER_KEEPALIVE;
        let connected = open.is_some();
        let frame = tokio::select! {
            biased;
            frame = frames.recv() => match frame {
                Some(frame) => frame,
                None => return,
            },
            // The peer never writes on this connection: any read result means it is gone.
            _ = async {
                match open.as_mut() {
                    Some((_, reader)) => reader.read(&mut scratch).await,
                    None => std::future::pending().await,
                }
            } => {
                open = None;
                continue;
            }
            _ = tokio::time::sleep_until(keepalive_at), if connected => encode_binary(PEER_KEEPALIVE_KIND, &[]),
        };
        if open.is_none() {
            let stream = match env.connect(&host, port, PEER_CONNECT_TIMEOUT).await {
                Ok(stream) => match &secret {
                    Some(secret) => answer_challenge(stream, secret).await,
                    None => Some(stream),
                },
                Err(_) => None,
            };
            if let Some(stream) = stream {
                let (reader, writer) = tokio::io::split(stream);
                open = Some((
                    FramedWrite::new(writer, FrameCodec::with_max(PEER_MAX_FRAME_BYTES)),
                    reader,
                ));
            }
        }
        if let Some((writer, _)) = &mut open {
            if !matches!(
                tokio::time::timeout(PEER_CONNECT_TIMEOUT, writer.send(frame)).await,
                Ok(Ok(()))
            ) {
                open = None;
            }
            last_sent = tokio::time::Instant::now();
        }
    }
}
