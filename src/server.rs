//! The public listener: accept loop, per-connection limits and graceful stop. It knows nothing of
//! tenants, routes or caching; it hands every request to the [`Gateway`].
//!
//! Protection: a cap on open connections (accepting waits for a free slot, so excess callers
//! queue in the kernel backlog instead of being served badly), a header read timeout against
//! slow-loris callers, a bound on header size, and accept errors (such as running out of file
//! descriptors) that pause the loop instead of ending it.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::ServerConfig;
use crate::proxy::Gateway;

/// The listener's limits, from `[server]`.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    pub grace: Duration,
}

impl From<&ServerConfig> for Limits {
    fn from(s: &ServerConfig) -> Self {
        Self {
            max_connections: s.max_connections,
            header_read_timeout: s.header_read_timeout,
            max_header_bytes: s.max_header_bytes,
            grace: s.grace,
        }
    }
}

/// Serves `listener` until `shutdown` resolves; then stops accepting, lets open requests finish
/// within `limits.grace` (HTTP/1.1 connections are closed after their current response, HTTP/2
/// ones get GOAWAY) and returns.
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
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
        let gateway = gateway.clone();
        let service = service_fn(move |req| {
            let gateway = gateway.clone();
            async move { Ok::<_, Infallible>(gateway.handle(req, peer).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    tracing::info!(
        grace_ms = limits.grace.as_millis() as u64,
        "stopped accepting; draining"
    );
    if tokio::time::timeout(limits.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
}
