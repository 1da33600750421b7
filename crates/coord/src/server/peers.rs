//! The raft peers' links: one connection per direction, frames of raft messages, session
//! touches and keepalives; with a peer secret, a mutual challenge-response on connect and a MAC
//! on every frame after it.

use drover_core::auth::{challenge, Secret};
use tokio_util::codec::Framed;

use super::*;

pub(super) const PEER_RAFT: u8 = 1;
pub(super) const PEER_TOUCH: u8 = 2;
const PEER_KEEPALIVE_KIND: u8 = 3;
/// The receiver's nonce, first on a peer connection when peers authenticate.
const PEER_CHALLENGE: u8 = 4;
/// The sender's nonce and its answer to both nonces, before anything else it sends.
const PEER_PROOF: u8 = 5;
/// The receiver's answer to both nonces: only then does the sender send anything of raft's.
const PEER_ACCEPT: u8 = 6;
/// What the sender's answer is bound to.
const PEER_SENDER_CONTEXT: &str = "drover-coord-peer/sender";
/// What the receiver's answer is bound to (another context: the sender's own answer, reflected,
/// does not pass).
const PEER_RECEIVER_CONTEXT: &str = "drover-coord-peer/receiver";
/// What the connection's key for sealing frames is derived under.
const PEER_KEY_CONTEXT: &str = "drover-coord-peer/key";
/// The largest frame read before a peer has proved the secret (a proof is 2 + 32 + 32 bytes).
const PEER_PROOF_MAX_FRAME_BYTES: usize = 96;
pub(super) const PEER_QUEUE_FRAMES: usize = 1024;
/// The most queued frames a peer link writes at once.
const PEER_BATCH_FRAMES: usize = 256;
/// How many bytes a peer link gathers before it writes them.
const PEER_BATCH_BYTES: usize = 256 * 1024;

/// A frame a peer port reads: a raft heartbeat from `from` (as the leader of `term`) to `to`.
/// For tools that probe the peer port as a stranger would (the simulator's `intruder` role):
/// a server that accepted it from a connection that proved nothing would follow that term.
pub fn forged_heartbeat_frame(from: u64, to: u64, term: u64) -> Bytes {
    let mut message = Message::default();
    message.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
    message.from = from;
    message.to = to;
    message.term = term;
    let body = message.write_to_bytes().unwrap_or_default();
    encode_binary(PEER_RAFT, &body)
}

/// A frame answering a peer port's challenge: the sender's `nonce` and its `answer` (what a
/// stranger without the secret can only guess).
pub fn proof_frame(nonce: &[u8], answer: &[u8]) -> Bytes {
    encode_binary(PEER_PROOF, &[nonce, answer].concat())
}
/// Peer frames carry whole snapshots, so they may be far larger than client packets.
const PEER_MAX_FRAME_BYTES: usize = 256 * 1024 * 1024;
const PEER_KEEPALIVE: Duration = Duration::from_secs(1);
/// A peer connection that carried nothing for this long is presumed broken and closed.
const PEER_IDLE: Duration = Duration::from_secs(3);
const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) async fn accept_peers(
    env: Env,
    mut listener: Listener,
    inputs: mpsc::UnboundedSender<Input>,
    secret: Option<Secret>,
) {
    let refused = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    loop {
        let Ok((stream, from)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let inputs = inputs.clone();
        // Drawn only when peers authenticate: the simulation's randomness stays as it was.
        let challenge = secret.clone().map(|secret| {
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
            let mut seal = None;
            if let Some((secret, nonce)) = challenge {
                let Some(key) = peer_proved(&mut frames, &secret, &nonce).await else {
                    let count = refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                    // The 1st, 2nd, 4th, 8th... refusal: a misconfigured peer retrying every few
                    // hundred ms is seen without flooding the log.
                    if count.is_power_of_two() {
                        tracing::warn!(%from, refused = count, "a peer connection did not prove the peer secret: closed");
                    }
                    env.emit(Event::new("peer_refused"));
                    return;
                };
                seal = Some(challenge::Seal::new(&key));
                *frames.codec_mut() =
                    FrameCodec::with_max(PEER_MAX_FRAME_BYTES + challenge::Seal::TAG_BYTES);
            }
            while let Ok(Some(Ok(sealed))) = tokio::time::timeout(PEER_IDLE, frames.next()).await {
                let frame = match seal.as_mut() {
                    Some(seal) => match seal.open(&sealed) {
                        Some(frame) => frame,
                        None => {
                            tracing::warn!(%from, "a peer frame's seal is wrong: connection closed");
                            break;
                        }
                    },
                    None => &sealed[..],
                };
                let input = match decode_peer_frame(frame) {
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

/// `io`'s result, unless it takes longer than a peer connection may to set up.
async fn within<F: std::future::Future>(io: F) -> Option<F::Output> {
    tokio::time::timeout(PEER_CONNECT_TIMEOUT, io).await.ok()
}

/// Both ends' nonces, the receiver's first: what each answer and the connection's key cover.
fn both(receiver_nonce: &[u8], sender_nonce: &[u8]) -> Vec<u8> {
    [receiver_nonce, sender_nonce].concat()
}

/// The key a connection's frames are sealed with: neither end's answer (those crossed the wire).
fn connection_key(secret: &Secret, nonces: &[u8]) -> Vec<u8> {
    challenge::answer(secret.bytes(), PEER_KEY_CONTEXT, nonces)
}

/// The receiving side: sends its `nonce`; the first frame must be the sender's nonce and its
/// answer to both; then the receiver proves the secret back. Returns the connection's key.
async fn peer_proved(frames: &mut PeerFrames, secret: &Secret, nonce: &[u8]) -> Option<Vec<u8>> {
    within(frames.send(encode_binary(PEER_CHALLENGE, nonce)))
        .await?
        .ok()?;
    let frame = within(frames.next()).await??.ok()?;
    let (PEER_PROOF, proof) = decode_binary(&frame).ok()? else {
        return None;
    };
    let (sender_nonce, answer) = proof.split_at_checked(challenge::NONCE_BYTES)?;
    let nonces = both(nonce, sender_nonce);
    if !challenge::verify(secret.bytes(), PEER_SENDER_CONTEXT, &nonces, answer) {
        return None;
    }
    let ours = challenge::answer(secret.bytes(), PEER_RECEIVER_CONTEXT, &nonces);
    within(frames.send(encode_binary(PEER_ACCEPT, &ours)))
        .await?
        .ok()?;
    Some(connection_key(secret, &nonces))
}

/// The sending side: answers the receiver's challenge with the secret and its own `nonce`, and
/// sends nothing of raft's unless the receiver proves the secret back (a stranger listening at
/// a peer's address learns no data). Returns the stream and the seal its frames go out under.
async fn answer_challenge(
    stream: Stream,
    secret: &Secret,
    nonce: &[u8],
) -> Option<(Stream, challenge::Seal)> {
    let mut frames = Framed::new(stream, FrameCodec::with_max(PEER_PROOF_MAX_FRAME_BYTES));
    let frame = within(frames.next()).await??.ok()?;
    let (PEER_CHALLENGE, receiver_nonce) = decode_binary(&frame).ok()? else {
        return None;
    };
    if receiver_nonce.len() != challenge::NONCE_BYTES {
        return None;
    }
    let nonces = both(receiver_nonce, nonce);
    let answer = challenge::answer(secret.bytes(), PEER_SENDER_CONTEXT, &nonces);
    within(frames.send(proof_frame(nonce, &answer)))
        .await?
        .ok()?;
    let frame = within(frames.next()).await??.ok()?;
    let (PEER_ACCEPT, theirs) = decode_binary(&frame).ok()? else {
        return None;
    };
    if !challenge::verify(secret.bytes(), PEER_RECEIVER_CONTEXT, &nonces, theirs) {
        tracing::warn!("a peer did not prove the peer secret back: nothing sent to it");
        return None;
    }
    let seal = challenge::Seal::new(&connection_key(secret, &nonces));
    Some((frames.into_inner(), seal))
}

/// Sends frames to one peer over one connection. The connection is re-opened when a write fails
/// or the peer closes it; a keepalive goes out when it has been quiet, because the receiving side
/// closes a connection that carried nothing for [`PEER_IDLE`] (after a partition a TCP connection
/// may never carry anything again).
pub(super) async fn send_to_peer(
    env: Env,
    (host, port): (String, u16),
    mut frames: mpsc::Receiver<Bytes>,
    secret: Option<Secret>,
) {
    type Writer = FramedWrite<tokio::io::WriteHalf<Stream>, FrameCodec>;
    let mut open: Option<(Writer, tokio::io::ReadHalf<Stream>, Option<challenge::Seal>)> = None;
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
                    Some((_, reader, _)) => reader.read(&mut scratch).await,
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
                    Some(secret) => {
                        // Drawn only when peers authenticate, as the receiver's.
                        let nonce = challenge::nonce(&mut *env.rng());
                        answer_challenge(stream, secret, &nonce)
                            .await
                            .map(|(stream, seal)| (stream, Some(seal)))
                    }
                    None => Some((stream, None)),
                },
                Err(_) => None,
            };
            if let Some((stream, seal)) = stream {
                let (reader, writer) = tokio::io::split(stream);
                let max = PEER_MAX_FRAME_BYTES + challenge::Seal::TAG_BYTES;
                let mut writer = FramedWrite::new(writer, FrameCodec::with_max(max));
                // Batches are written whole (tokio-util flushes every 8 KiB by default).
                writer.set_backpressure_boundary(PEER_BATCH_BYTES);
                open = Some((writer, reader, seal));
            }
        }
        if let Some((writer, _, seal)) = &mut open {
            // What else is queued goes out with it, in one write: under load a follower forwards
            // a proposal per client write, and a syscall (and a wake-up of the reader) per frame
            // was the largest cost of a server.
            let mut batch = vec![frame];
            while batch.len() < PEER_BATCH_FRAMES {
                match frames.try_recv() {
                    Ok(frame) => batch.push(frame),
                    Err(_) => break,
                }
            }
            let sealed = batch.into_iter().map(|frame| match seal {
                Some(seal) => Bytes::from(seal.seal(&frame)),
                None => frame,
            });
            let mut frames_out = futures_util::stream::iter(sealed.map(Ok));
            if !matches!(
                tokio::time::timeout(PEER_CONNECT_TIMEOUT, writer.send_all(&mut frames_out)).await,
                Ok(Ok(()))
            ) {
                open = None;
            }
            last_sent = tokio::time::Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Stream, Stream) {
        let (a, b) = tokio::io::duplex(4096);
        (Box::new(a), Box::new(b))
    }

    #[tokio::test]
    async fn peers_with_the_secret_prove_it_both_ways_and_share_a_seal() {
        let secret = Secret::new(b"peer secret");
        let (sending, receiving) = pair();
        let receiver = {
            let secret = secret.clone();
            async move {
                let mut frames =
                    Framed::new(receiving, FrameCodec::with_max(PEER_PROOF_MAX_FRAME_BYTES));
                peer_proved(&mut frames, &secret, &[1; 32]).await
            }
        };
        let (key, sender) = tokio::join!(receiver, answer_challenge(sending, &secret, &[2; 32]));
        let (_, mut seal) = sender.expect("the receiver proved the secret back");
        let mut open = challenge::Seal::new(&key.expect("the sender proved the secret"));
        assert_eq!(open.open(&seal.seal(b"raft")), Some(&b"raft"[..]));
    }

    #[tokio::test]
    async fn a_sender_sends_nothing_to_a_receiver_that_cannot_prove_the_secret() {
        // A stranger at a peer's address: challenges, takes any proof, answers with a guess.
        let (sending, receiving) = pair();
        let stranger = async move {
            let mut frames = Framed::new(receiving, FrameCodec::with_max(1 << 20));
            frames
                .send(encode_binary(PEER_CHALLENGE, &[1; 32]))
                .await
                .unwrap();
            let proof = frames.next().await.unwrap().unwrap();
            assert_eq!(decode_binary(&proof).unwrap().0, PEER_PROOF);
            frames
                .send(encode_binary(PEER_ACCEPT, &[0; 32]))
                .await
                .unwrap();
            frames
        };
        let secret = Secret::new(b"peer secret");
        let (mut frames, sender) =
            tokio::join!(stranger, answer_challenge(sending, &secret, &[2; 32]));
        assert!(sender.is_none(), "the sender went on with a stranger");
        // The sender's side is gone; nothing more arrives.
        assert!(frames.next().await.is_none());
    }

    #[tokio::test]
    async fn a_receiver_refuses_a_proof_made_without_the_secret() {
        let (sending, receiving) = pair();
        let mut frames = Framed::new(receiving, FrameCodec::with_max(PEER_PROOF_MAX_FRAME_BYTES));
        let secret = Secret::new(b"peer secret");
        let guess = Secret::new(b"a guess");
        let guesser = answer_challenge(sending, &guess, &[2; 32]);
        let (key, sender) = tokio::join!(peer_proved(&mut frames, &secret, &[1; 32]), guesser);
        assert!(key.is_none() && sender.is_none());
    }
}
