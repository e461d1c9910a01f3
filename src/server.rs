//! Listeners: accept loop, per-connection limits and graceful stop, for any [`Handler`] (the
//! gateway on the public listener, the admin endpoints on the admin listener). It knows nothing
//! of tenants, routes or caching.
//!
//! Protection: a cap on open connections (accepting waits for a free slot, so excess callers
//! queue in the kernel backlog instead of being served badly), a header read timeout against
//! slow-loris callers, a bound on header size, and accept errors (such as running out of file
//! descriptors) that pause the loop instead of ending it.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::Config;

/// What a listener serves.
pub trait Handler: Clone + Send + Sync + 'static {
    /// Held for as long as a connection is open (a metrics gauge guard, or nothing).
    type Connection: Send + 'static;

    fn connection(&self) -> Self::Connection;

    fn call(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Full<Bytes>>> + Send;
}

/// A listener's limits.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub grace: Duration,
}

impl From<&Config> for Limits {
    fn from(c: &Config) -> Self {
        Self {
            max_connections: c.server.max_connections,
            header_read_timeout: c.server.header_read_timeout,
            max_header_bytes: c.server.max_header_bytes,
            grace: c.shutdown.grace,
        }
    }
}

/// Serves `listener` until `shutdown` resolves; then closes the listener (new connections are
/// refused), lets open requests finish within `limits.grace` (HTTP/1.1 connections are closed
/// after their current response, HTTP/2 ones get GOAWAY) and returns.
pub async fn serve<H: Handler>(
    listener: TcpListener,
    handler: H,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; pausing");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let open = handler.connection();
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler.call(req, peer).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop((slot, open));
        });
    }
    drop(listener);
    tracing::debug!(
        grace_ms = limits.grace.as_millis() as u64,
        "listener closed; draining connections"
    );
    if tokio::time::timeout(limits.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
}
