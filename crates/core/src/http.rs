//! HTTP over the Env seam, in both worlds: an axum server on an Env [`Listener`], and a small
//! HTTP/1 client (hyper's `client::conn::http1`) over an Env stream.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;

use crate::env::{Env, Listener, Stream};

/// The most a client reads of a response body.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

impl axum::serve::Listener for Listener {
    type Io = Stream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Stream, SocketAddr) {
        loop {
            match Listener::accept(self).await {
                Ok(accepted) => return accepted,
                // Errors like EMFILE are transient: back off and keep serving.
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Listener::local_addr(self)
    }
}

/// Connections handed over through a channel (the master's accept loop tells HTTP from agents'
/// frames and passes HTTP on), as an axum `Listener` for [`serve_from`].
pub struct ChannelListener(
    pub tokio::sync::mpsc::Receiver<(Stream, SocketAddr)>,
    pub SocketAddr,
);

impl axum::serve::Listener for ChannelListener {
    type Io = Stream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Stream, SocketAddr) {
        match self.0.recv().await {
            Some(accepted) => accepted,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.1)
    }
}

/// A client has this long to send a request's head (line and headers) once the server waits
/// for one, also between requests on a kept-alive connection: slowloris, or an idle connection
/// held open, costs a connection for at most this long (hyper's default).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// At most this many connections are served at once on one port; one more is closed at once
/// (with a warning in the log), so that many idle connections cannot use up the process's files.
pub const MAX_CONNECTIONS: usize = 4096;
/// A request head (line and headers) larger than this is refused (431).
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Serves `router` on `listener` until `shutdown` resolves.
///
/// Each connection is a task spawned through the seam (not axum's own `tokio::spawn`), so in the
/// simulator it belongs to the node and goes with it when the node crashes. At shutdown the
/// listener closes; connections already accepted finish their exchanges. Limits:
/// [`HEADER_READ_TIMEOUT`], [`MAX_CONNECTIONS`], [`MAX_HEADER_BYTES`].
pub async fn serve(
    listener: Listener,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    serve_from(listener, router, shutdown).await
}

/// [`serve`] for connections that come from anywhere (a channel, say) as an axum `Listener`.
pub async fn serve_from<L>(
    mut listener: L,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    L: axum::serve::Listener<Io = Stream>,
{
    let mut shutdown = std::pin::pin!(shutdown);
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut refused: u64 = 0;
    loop {
        let (stream, _peer) = tokio::select! {
            biased;
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            refused += 1;
            // The 1st, 2nd, 4th... refusal: seen without flooding the log.
            if refused.is_power_of_two() {
                tracing::warn!(
                    refused,
                    limit = MAX_CONNECTIONS,
                    "too many HTTP connections: closed a new one"
                );
            }
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        crate::env::spawn(async move {
            // A connection's error (a reset, a malformed request, a head too slow or too large)
            // ends that connection only.
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_header_size(MAX_HEADER_BYTES)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connect to {target}: {source}")]
    Connect { target: String, source: io::Error },
    #[error("request to {target} failed: {reason}")]
    Request { target: String, reason: String },
    #[error("request to {target} timed out after {timeout_ms} ms")]
    TimedOut { target: String, timeout_ms: u128 },
}

/// Sends one request on a fresh connection to `host:port` and reads the whole response (the
/// connection closes with it).
pub async fn request(
    env: &Env,
    host: &str,
    port: u16,
    request: Request<Bytes>,
    timeout: Duration,
) -> Result<Response<Bytes>, HttpError> {
    Pool::new().request(env, host, port, request, timeout).await
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Connections kept open between requests to the same `host:port` (HTTP/1 keep-alive, as
/// pymesos' `requests.Session` keeps them): one request at a time on each, so as many
/// connections as requests in flight, reused once they are answered. Cheap to clone.
#[derive(Clone, Default)]
pub struct Pool {
    idle: std::sync::Arc<std::sync::Mutex<Vec<Idle>>>,
}

struct Idle {
    target: String,
    sender: Sender,
    since: tokio::time::Instant,
}

/// A connection idle this long is not reused (a server may be closing it).
const POOL_IDLE: Duration = Duration::from_secs(5);
/// The most connections a pool keeps idle.
const POOL_MAX_IDLE: usize = 64;

impl Pool {
    pub fn new() -> Pool {
        Pool::default()
    }

    /// [`request`] on a kept connection when one is open (a fresh one otherwise), which is kept
    /// for the next request once its response is read. A request that a closing connection did
    /// not send goes again on a fresh one; one that was sent is never sent twice.
    pub async fn request(
        &self,
        env: &Env,
        host: &str,
        port: u16,
        request: Request<Bytes>,
        timeout: Duration,
    ) -> Result<Response<Bytes>, HttpError> {
        let target = format!("{host}:{port}");
        let exchange = async {
            let mut request = request;
            loop {
                let (mut sender, kept) = match self.take(&target) {
                    Some(sender) => (sender, true),
                    None => (open(env, host, port, &target, timeout).await?, false),
                };
                match send(&mut sender, &target, request).await {
                    Ok((response, reusable)) => {
                        if reusable {
                            self.put(target.clone(), sender);
                        }
                        return Ok(response);
                    }
                    Err(Unsent::Back(back)) if kept => request = back,
                    Err(Unsent::Back(_)) => return Err(not_sent(&target)),
                    Err(Unsent::Failed(e)) => return Err(e),
                }
            }
        };
        within(timeout, target.clone(), exchange).await
    }

    fn take(&self, target: &str) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let now = tokio::time::Instant::now();
        idle.retain(|i| !i.sender.is_closed() && now.duration_since(i.since) < POOL_IDLE);
        let at = idle.iter().rposition(|i| i.target == target)?;
        Some(idle.remove(at).sender)
    }

    fn put(&self, target: String, sender: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() >= POOL_MAX_IDLE {
            idle.remove(0);
        }
        idle.push(Idle {
            target,
            sender,
            since: tokio::time::Instant::now(),
        });
    }
}

/// A connection to `host:port`, its driving task spawned through the seam.
async fn open(
    env: &Env,
    host: &str,
    port: u16,
    target: &str,
    timeout: Duration,
) -> Result<Sender, HttpError> {
    let stream = env
        .connect(host, port, timeout)
        .await
        .map_err(|source| HttpError::Connect {
            target: target.to_string(),
            source,
        })?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| HttpError::Request {
            target: target.to_string(),
            reason: e.to_string(),
        })?;
    crate::env::spawn(async move {
        // The connection ends when its sender is dropped; its error, if any, surfaces there.
        let _ = connection.await;
    });
    Ok(sender)
}

/// Why an exchange on a connection did not give a response.
enum Unsent {
    /// The request was not sent (the connection was closing): here it is back.
    Back(Request<Bytes>),
    Failed(HttpError),
}

fn not_sent(target: &str) -> HttpError {
    HttpError::Request {
        target: target.to_string(),
        reason: "the connection closed before the request went".into(),
    }
}

/// One request on `sender` and its whole response; with it, whether the connection may carry
/// another request.
async fn send(
    sender: &mut Sender,
    target: &str,
    request: Request<Bytes>,
) -> Result<(Response<Bytes>, bool), Unsent> {
    let failed = |reason: String| {
        Unsent::Failed(HttpError::Request {
            target: target.to_string(),
            reason,
        })
    };
    if sender.ready().await.is_err() {
        return Err(Unsent::Back(request));
    }
    let (mut parts, body) = request.into_parts();
    if !parts.headers.contains_key(http::header::HOST) {
        if let Ok(value) = http::HeaderValue::from_str(target) {
            parts.headers.insert(http::header::HOST, value);
        }
    }
    // What it takes to send the request again if this connection does not send it.
    let again = (
        parts.method.clone(),
        parts.uri.clone(),
        parts.headers.clone(),
        body.clone(),
    );
    let response = match sender
        .try_send_request(Request::from_parts(parts, Full::new(body)))
        .await
    {
        Ok(response) => response,
        Err(mut e) => {
            if e.take_message().is_none() {
                return Err(failed(e.into_error().to_string()));
            }
            let (method, uri, headers, body) = again;
            let mut back = Request::new(body);
            *back.method_mut() = method;
            *back.uri_mut() = uri;
            *back.headers_mut() = headers;
            return Err(Unsent::Back(back));
        }
    };
    let closes = response
        .headers()
        .get(http::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    let (parts, body) = response.into_parts();
    let body = Limited::new(body, MAX_RESPONSE_BYTES)
        .collect()
        .await
        .map_err(|e| failed(format!("reading the body: {e}")))?
        .to_bytes();
    Ok((Response::from_parts(parts, body), !closes))
}

async fn within(
    timeout: Duration,
    target: String,
    exchange: impl Future<Output = Result<Response<Bytes>, HttpError>>,
) -> Result<Response<Bytes>, HttpError> {
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::TimedOut {
            target,
            timeout_ms: timeout.as_millis(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server on in-memory connections: what the test writes into `connect()`'s stream.
    fn memory_server() -> impl FnMut() -> tokio::io::DuplexStream {
        let (tx, rx) = tokio::sync::mpsc::channel(2 * MAX_CONNECTIONS);
        let address: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let router = axum::Router::new().route("/", get(|| async { "ok" }));
        crate::env::spawn(serve_from(
            ChannelListener(rx, address),
            router,
            std::future::pending(),
        ));
        move || {
            let (client, server) = tokio::io::duplex(1 << 16);
            tx.try_send((Box::new(server) as Stream, address)).unwrap();
            client
        }
    }

    /// Reads until the server closes the connection: what it sent.
    async fn until_closed(stream: &mut tokio::io::DuplexStream) -> String {
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_sent_too_slowly_loses_its_connection_and_others_are_served() {
        let mut connect = memory_server();
        let mut slow = connect();
        slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let started = tokio::time::Instant::now();
        // The rest of the head never comes: the server closes after HEADER_READ_TIMEOUT (the
        // clock is tokio's, paused: it runs ahead as soon as everything waits).
        let answer = until_closed(&mut slow).await;
        assert!(!answer.contains("200"), "{answer}");
        assert_eq!(started.elapsed().as_secs(), HEADER_READ_TIMEOUT.as_secs());
        let mut quick = connect();
        quick
            .write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert!(until_closed(&mut quick).await.starts_with("HTTP/1.0 200"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_too_large_gets_431_and_connections_beyond_the_cap_are_closed() {
        let mut connect = memory_server();
        let mut large = connect();
        let head = format!(
            "GET / HTTP/1.0\r\nX-Big: {}\r\n\r\n",
            "a".repeat(MAX_HEADER_BYTES)
        );
        let _ = large.write_all(head.as_bytes()).await;
        assert!(until_closed(&mut large).await.starts_with("HTTP/1.1 431"));
        // MAX_CONNECTIONS idle connections are held; one more is closed at once, with nothing.
        let mut idle: Vec<_> = (0..MAX_CONNECTIONS).map(|_| connect()).collect();
        let mut beyond = connect();
        let answer = tokio::time::timeout(Duration::from_secs(1), until_closed(&mut beyond)).await;
        assert_eq!(answer.as_deref(), Ok(""));
        // When one goes, a new connection is served.
        drop(idle.pop());
        tokio::task::yield_now().await;
        let mut fresh = connect();
        fresh
            .write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(1), until_closed(&mut fresh)).await;
        assert!(answer.is_ok_and(|a| a.starts_with("HTTP/1.0 200")));
    }

    #[tokio::test]
    async fn a_pool_reuses_its_connection_and_goes_on_a_fresh_one_when_the_server_closed_it() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let dir = std::env::temp_dir().join(format!("drover-pool-{}", std::process::id()));
        let env = crate::env::live::env("test", &dir, Some(1));
        let mut listener = env.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (connections_tx, mut connections) = tokio::sync::mpsc::unbounded_channel();
        let counter = accepted.clone();
        let server = crate::env::spawn(async move {
            loop {
                let Ok((stream, _)) = Listener::accept(&mut listener).await else {
                    return;
                };
                counter.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from("ok"))))
                });
                let connection = crate::env::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
                let _ = connections_tx.send(connection);
            }
        });
        let pool = Pool::new();
        let get = || Request::post("/call").body(Bytes::from("body")).unwrap();
        for _ in 0..3 {
            let response = pool
                .request(&env, "127.0.0.1", port, get(), Duration::from_secs(5))
                .await
                .unwrap();
            assert_eq!(response.body(), "ok");
        }
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            1,
            "one connection for three calls"
        );
        // The server drops the connection while the pool keeps it.
        connections.recv().await.unwrap().abort();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let response = pool
            .request(&env, "127.0.0.1", port, get(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(response.body(), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        server.abort();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn live_server_and_client_talk_over_the_seam() {
        let dir = std::env::temp_dir().join(format!("drover-http-{}", std::process::id()));
        let env = crate::env::live::env("test", &dir, Some(1));
        let listener = env.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let router = axum::Router::new().route("/health", get(|| async { "ok" }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = crate::env::spawn(serve(listener, router, async {
            let _ = stopped.await;
        }));
        let request = Request::get("/health").body(Bytes::new()).unwrap();
        let response = super::request(&env, "127.0.0.1", port, request, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.body(), "ok");
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
