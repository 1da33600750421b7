//! Agents' connections: told from HTTP by their first byte, authenticated, registered, then
//! messages both ways.

use super::*;

/// Accepts connections and tells HTTP from agent frames by the first byte.
pub(super) async fn accept_loop(
    mut listener: Listener,
    http: mpsc::Sender<(Stream, SocketAddr)>,
    inputs: mpsc::Sender<Input>,
    agent_auth: AgentAuth,
) {
    let mut next_conn = 0u64;
    loop {
        let (mut stream, addr) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        next_conn += 1;
        let conn = next_conn;
        let (http, inputs, agent_auth) = (http.clone(), inputs.clone(), agent_auth.clone());
        drover_core::env::spawn(async move {
            let mut first = [0u8; 1];
            let Ok(Ok(1)) = tokio::time::timeout(IO_TIMEOUT, stream.read(&mut first)).await else {
                return;
            };
            let stream: Stream = Box::new(Prefixed {
                first: Some(first[0]),
                inner: stream,
            });
            if first[0].is_ascii_uppercase() {
                let _ = http.send((stream, addr)).await;
            } else {
                agent_connection(conn, stream, inputs, agent_auth, addr).await;
            }
        });
    }
}

/// How agents authenticate on this master (Mesos' `--authenticate_agents` with `--credentials`).
#[derive(Clone)]
pub(super) struct AgentAuth {
    env: Env,
    credentials: Option<drover_core::auth::Credentials>,
    /// Whether an agent must authenticate before it registers.
    required: bool,
    /// Failed attempts so far (logged at the 1st, 2nd, 4th...).
    refused: Arc<std::sync::atomic::AtomicU64>,
}

impl AgentAuth {
    pub(super) fn new(env: &Env, auth: &Auth) -> AgentAuth {
        AgentAuth {
            env: env.clone(),
            credentials: auth.credentials.clone(),
            required: auth.agents,
            refused: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        }
    }

    /// Runs the challenge for an agent that asked to authenticate as `principal`: a fresh nonce
    /// out, its proof in. The nonce is sent whether the principal is known or not (a stranger
    /// learns nothing about which principals exist).
    async fn challenge(&self, framed: &mut AgentFrames, principal: &str) -> Result<(), String> {
        use base64::Engine as _;
        use drover_core::auth::challenge;
        let nonce = challenge::nonce(&mut *self.env.rng());
        let b64 = base64::engine::general_purpose::STANDARD;
        let challenge_message = MasterMessage::Challenge {
            nonce: b64.encode(&nonce),
        };
        send_within(framed, &challenge_message, IO_TIMEOUT)
            .await
            .map_err(|e| format!("the challenge could not be sent: {e}"))?;
        let answer = match next_within(framed, IO_TIMEOUT).await {
            Ok(AgentMessage::Proof { answer }) => b64.decode(answer).unwrap_or_default(),
            Ok(_) => return Err("expected a proof".into()),
            Err(e) => return Err(format!("no proof: {e}")),
        };
        let secret = self
            .credentials
            .as_ref()
            .and_then(|c| c.secret_of(principal));
        match secret {
            Some(secret)
                if challenge::verify(
                    secret.as_bytes(),
                    drover_core::agent_proto::AGENT_CONTEXT,
                    &nonce,
                    &answer,
                ) =>
            {
                Ok(())
            }
            _ => Err("unknown principal or wrong secret".into()),
        }
    }

    /// Says why an agent is turned away, logs it (sparingly) and records it.
    async fn refuse(&self, framed: &mut AgentFrames, from: SocketAddr, reason: &str) {
        let count = self
            .refused
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if count.is_power_of_two() {
            tracing::warn!(%from, refused = count, reason, "an agent did not authenticate");
        }
        self.env.emit(
            Event::new("agent_authentication_failed").with("reason", reason.replace(' ', "_")),
        );
        let failed = MasterMessage::AuthenticationFailed {
            reason: reason.to_string(),
        };
        let _ = send_within(framed, &failed, IO_TIMEOUT).await;
    }
}

type AgentFrames = Framed<Stream, FrameCodec>;

/// The agent's registration, after its authentication where it offers or the master requires
/// one; `None`: the connection is to be closed.
async fn admit(
    framed: &mut AgentFrames,
    auth: &AgentAuth,
    from: SocketAddr,
) -> Option<Registration> {
    let mut authenticated = false;
    loop {
        let message = match next_within::<AgentMessage, _>(framed, IO_TIMEOUT).await {
            Ok(message) => Ok(message),
            Err(ExchangeError::Frame(error)) => Err(error),
            Err(_) => return None,
        };
        match message {
            Ok(AgentMessage::Authenticate { principal }) if !authenticated => {
                if auth.credentials.is_none() {
                    auth.refuse(framed, from, "this master has no credentials")
                        .await;
                    return None;
                }
                if let Err(reason) = auth.challenge(framed, &principal).await {
                    auth.refuse(framed, from, &reason).await;
                    return None;
                }
                authenticated = true;
                auth.env
                    .emit(Event::new("agent_authenticated").with("principal", &principal));
                let authenticated_message = MasterMessage::Authenticated { principal };
                send_within(framed, &authenticated_message, IO_TIMEOUT)
                    .await
                    .ok()?;
            }
            Ok(AgentMessage::Register(registration)) => {
                if auth.required && !authenticated {
                    auth.refuse(framed, from, "this master requires agents to authenticate")
                        .await;
                    return None;
                }
                return Some(registration);
            }
            Ok(_) => return None,
            Err(e) => {
                tracing::debug!(error = %e, "bad first frame from an agent");
                return None;
            }
        }
    }
}

/// One agent's connection: its authentication and registration, then messages both ways until
/// either side ends.
async fn agent_connection(
    conn: u64,
    stream: Stream,
    inputs: mpsc::Sender<Input>,
    auth: AgentAuth,
    from: SocketAddr,
) {
    let mut framed = Framed::new(stream, FrameCodec::default());
    let Some(registration) = admit(&mut framed, &auth, from).await else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<MasterMessage>();
    if inputs
        .send(Input::AgentRegister {
            conn,
            registration,
            tx,
        })
        .await
        .is_err()
    {
        return;
    }
    // Writing and reading go on at once: a side that stopped reading while it waited to write
    // could stall against an agent doing the same (a burst of launches one way, status updates
    // the other, both buffers full).
    let (mut sink, mut frames) = framed.split();
    let mut writer = drover_core::env::spawn(async move {
        while let Some(message) = rx.recv().await {
            let Ok(frame) = encode_message(&message) else {
                continue;
            };
            match tokio::time::timeout(IO_TIMEOUT, sink.send(frame)).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
    });
    loop {
        tokio::select! {
            biased;
            _ = &mut writer => break,
            frame = frames.next() => {
                let Some(Ok(frame)) = frame else { break };
                match decode_message::<AgentMessage>(&frame) {
                    Ok(message) => {
                        if inputs.send(Input::AgentMessage { conn, message }).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "bad frame from an agent");
                        break;
                    }
                }
            }
        }
    }
    writer.abort();
    let _ = inputs.send(Input::AgentClosed { conn }).await;
}

/// A stream whose first byte was already read.
struct Prefixed {
    first: Option<u8>,
    inner: Stream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(byte) = self.first {
            if buf.remaining() > 0 {
                buf.put_slice(&[byte]);
                self.first = None;
                return Poll::Ready(Ok(()));
            }
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
