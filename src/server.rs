//! Listeners: accept loop, per-connection limits and graceful stop, for any [`Handler`] (the
//! gateway on the public listener, the admin endpoints on the admin listener). It knows nothing
//! of tenants, routes or caching.
//!
//! Protection against callers that hold connections without using them:
//! - a header timeout that starts at accept (a silent connection is closed), and for each later
//!   request at its first byte;
//! - a keep-alive timeout for a connection with no request in progress (HTTP/1.1 between
//!   requests, HTTP/2 with no open stream), and HTTP/2 PINGs that close a dead peer;
//! - a cap on open connections that idle ones cannot monopolise: at the cap, the next caller is
//!   accepted and the connection idle the longest (for at least 300 ms) is closed to make room
//!   (NGINX does the same with its "reusable" connections). When none is idle the caller waits
//!   for a free slot;
//! - a bound on header size, and accept errors (such as running out of file descriptors) that
//!   pause the loop instead of ending it.
//!
//! Body read timeouts belong to the step that reads the body ([`crate::body`]).

mod conn;
mod target;

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
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::config::Config;
use conn::{Closed, Quiet, Registry, TrackedBody, TrackedIo};

/// How long a connection the gateway closes (timed out or evicted; it has no request in
/// progress) may take to say goodbye (an HTTP/2 GOAWAY) before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Set in a request's extensions when its HTTP/1 request target had a `#fragment`, which
/// [`http::Uri`] drops (see the `target` module); the handler decides what to answer.
#[derive(Debug, Clone, Copy)]
pub struct FragmentInTarget;

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
    /// From accept (or a later request's first byte) to the complete request head.
    pub header_read_timeout: Duration,
    /// A connection with no request in progress, after its first request.
    pub keepalive_timeout: Duration,
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
    pub max_header_bytes: usize,
    pub grace: Duration,
}

impl From<&Config> for Limits {
    fn from(c: &Config) -> Self {
        let t = &c.server.timeouts;
        Self {
            max_connections: c.server.max_connections,
            header_read_timeout: c.server.header_read_timeout,
            keepalive_timeout: t.keepalive,
            http2_keepalive_interval: t.http2_keepalive_interval,
            http2_keepalive_timeout: t.http2_keepalive_timeout,
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
        // The connection task enforces the header timeout (from accept, and from a later
        // head's first byte) with one timer per connection; hyper's own would arm a timer for
        // every request.
        .header_read_timeout(None)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.http2_keepalive_interval))
        .keep_alive_timeout(limits.http2_keepalive_timeout)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    let quiet = Quiet {
        header: limits.header_read_timeout,
        keepalive: limits.keepalive_timeout,
    };
    let registry = Arc::new(Registry::new());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (drain, draining) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => match make_room(&slots, &registry, &mut shutdown).await {
                Some(slot) => slot,
                None => break,
            },
        };
        let _ = stream.set_nodelay(true);
        let (id, activity) = registry.add();
        let open = handler.connection();
        let handler = handler.clone();
        let requests = activity.clone();
        let service = service_fn(move |mut req: Request<Incoming>| {
            let (in_flight, index) = requests.start();
            if requests.had_fragment(index, req.uri()) {
                req.extensions_mut().insert(FragmentInTarget);
            }
            let handler = handler.clone();
            async move {
                let resp = handler.call(req, peer).await;
                Ok::<_, Infallible>(resp.map(|body| TrackedBody::new(body, in_flight)))
            }
        });
        let conn = builder
            .serve_connection(
                TokioIo::new(TrackedIo::new(stream, activity.clone())),
                service,
            )
            .into_owned();
        let registry = registry.clone();
        let mut draining = draining.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            // Set once the gateway closes the connection: by then it must be gone.
            let mut closing: Option<tokio::time::Instant> = None;
            let mut drained = false;
            // One timer for the connection's life, moved only when it fires (see
            // `Activity::next_check`): requests never touch it.
            let check = tokio::time::sleep_until(activity.next_check(&quiet));
            let mut check = std::pin::pin!(check);
            loop {
                tokio::select! {
                    ended = conn.as_mut() => {
                        if let Err(e) = ended {
                            tracing::debug!(error = %e, %peer, "connection ended with an error");
                        }
                        break;
                    }
                    () = check.as_mut(), if closing.is_none() => {
                        if let Some(why) = activity.expired(&quiet) {
                            tracing::debug!(%peer, reason = why.as_str(), "closing connection");
                            conn.as_mut().graceful_shutdown();
                            closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                        } else {
                            check.as_mut().reset(activity.next_check(&quiet));
                        }
                    }
                    () = activity.evict.notified(), if closing.is_none() => {
                        let why = Closed::Evicted.as_str();
                        tracing::debug!(%peer, reason = why, "closing connection");
                        conn.as_mut().graceful_shutdown();
                        closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                    }
                    () = sleep_until(closing) => break,
                    _ = draining.changed(), if !drained => {
                        drained = true;
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            registry.remove(id);
            drop((slot, open));
        });
    }
    drop(listener);
    let _ = drain.send(true);
    tracing::debug!(
        grace_ms = limits.grace.as_millis() as u64,
        "listener closed; draining connections"
    );
    // Every connection holds a slot until it ends: all slots back means all connections closed.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing remaining connections");
    }
}

/// The next accepted connection; accept errors (e.g. out of file descriptors) pause briefly.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed; pausing");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// At the cap, with a caller waiting: closes the connection idle the longest and waits for its
/// slot; when none is idle, waits for a slot to free up or a connection to turn idle (checked
/// every 100 ms). `None`: shutdown began.
async fn make_room(
    slots: &Arc<Semaphore>,
    registry: &Registry,
    shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<OwnedSemaphorePermit> {
    loop {
        registry.evict_longest_idle();
        tokio::select! {
            slot = slots.clone().acquire_owned() => return slot.ok(),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
            () = shutdown.as_mut() => return None,
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
