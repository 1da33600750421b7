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

/// Serves `router` on `listener` until `shutdown` resolves.
///
/// Each connection is a task spawned through the seam (not axum's own `tokio::spawn`), so in the
/// simulator it belongs to the node and goes with it when the node crashes. At shutdown the
/// listener closes; connections already accepted finish their exchanges.
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
    loop {
        let (stream, _peer) = tokio::select! {
            biased;
            _ = &mut shutdown => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        crate::env::spawn(async move {
            // A connection's error (a reset, a malformed request) ends that connection only.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
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

/// Sends one request on a fresh connection to `host:port` and reads the whole response.
pub async fn request(
    env: &Env,
    host: &str,
    port: u16,
    request: Request<Bytes>,
    timeout: Duration,
) -> Result<Response<Bytes>, HttpError> {
    let target = format!("{host}:{port}");
    let exchange = async {
        let stream =
            env.connect(host, port, timeout)
                .await
                .map_err(|source| HttpError::Connect {
                    target: target.clone(),
                    source,
                })?;
        let failed = |reason: String| HttpError::Request {
            target: target.clone(),
            reason,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(e.to_string()))?;
        crate::env::spawn(async move {
            // The connection ends with the exchange; its error, if any, surfaces there.
            let _ = connection.await;
        });
        let (parts, body) = request.into_parts();
        let mut request = Request::from_parts(parts, Full::new(body));
        if !request.headers().contains_key(http::header::HOST) {
            if let Ok(value) = http::HeaderValue::from_str(&target) {
                request.headers_mut().insert(http::header::HOST, value);
            }
        }
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| failed(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| failed(format!("reading the body: {e}")))?
            .to_bytes();
        Ok(Response::from_parts(parts, body))
    };
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
