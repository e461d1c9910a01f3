//! The upstream connections, owned by the gateway: a small LIFO pool of idle HTTP/1.1
//! connections driven from the caller's task, or one shared HTTP/2 connection when TLS
//! negotiated `h2` by ALPN.
//!
//! HTTP/1.1 connections have no task of their own: the request's task writes the request and
//! reads the response with the gateway's own codec ([`super::h1`]), so a forwarded call costs no
//! hand-off to another task and no extra wake-up (NGINX's model). Between calls an idle
//! connection sits in the pool unread; checking it out polls a read once with a no-op waker,
//! which notices a peer that closed it (tokio keeps the socket's readiness, so this costs no
//! system call when nothing arrived). A request that could not be written whole on a reused
//! connection is sent again, once per idle connection, then on a new one: the peer cannot have
//! acted on half a request. Connections idle longer than `pool_idle_timeout` are closed at
//! checkout, check-in and [`Pool::close_expired`]; at most `pool_max_idle_per_host` stay idle.
//!
//! An HTTP/2 connection multiplexes every call, so it keeps hyper's own connection task.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Uri, response};
use http_body_util::{BodyExt, Full, Limited};
use hyper::client::conn::http2;
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;
use tower_service::Service;

use super::h1;

/// The stream under an HTTP/1.1 connection, with tokio's I/O traits.
type Io = TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>;
type ReqBody = Full<Bytes>;
pub(super) type BoxError = Box<dyn StdError + Send + Sync>;

/// What went wrong, before [`super::classify`] turns it into an `UpstreamError`.
#[derive(Debug)]
pub(super) enum Failure {
    /// Opening the connection (DNS, TCP, TLS).
    Connect(BoxError),
    /// The HTTP/2 exchange (handshake, request, response head).
    Exchange(hyper::Error),
    /// The HTTP/1.1 exchange, body included.
    H1(h1::Error),
    /// Reading the response body, including going over the size limit.
    Body(BoxError),
    /// The request path does not make a valid absolute URI with the origin (HTTP/2).
    Uri(http::Error),
}

/// One idle or busy HTTP/1.1 connection (boxed wherever it goes: with a TLS stream inside it
/// is kilobytes, which futures would copy).
struct H1 {
    conn: h1::Conn<Io>,
    idle_since: Instant,
}

impl H1 {
    /// Whether an idle connection can take a request: not expired, and not closed by the peer
    /// nor sent anything unasked (one read polled with a no-op waker: nothing is registered on
    /// anyone's behalf, and a pending read is the healthy answer).
    fn usable(&mut self, now: Instant, idle_timeout: Duration) -> bool {
        if now.saturating_duration_since(self.idle_since) >= idle_timeout || self.conn.has_unread()
        {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        matches!(
            Pin::new(self.conn.io_mut()).poll_read(&mut cx, &mut buf),
            Poll::Pending
        )
    }
}

enum Fresh {
    H1(Box<H1>),
    H2(http2::SendRequest<ReqBody>),
}

/// Why an exchange on an HTTP/1.1 connection failed.
enum H1Failure {
    /// The request did not get through whole on a reused connection: it can go on another.
    Unsent(h1::Error),
    Failed(Failure),
}

/// The connections to one upstream origin.
pub(super) struct Pool {
    connector: HttpsConnector<HttpConnector>,
    scheme: Scheme,
    authority: Authority,
    /// `scheme://authority/`: what the connector dials.
    origin: Uri,
    // Boxed: checking a connection out and in moves a pointer, not the kilobytes of an `H1`.
    #[allow(clippy::vec_box)]
    idle: Mutex<Vec<Box<H1>>>,
    h2: Mutex<Option<http2::SendRequest<ReqBody>>>,
    max_idle: usize,
    idle_timeout: Duration,
}

impl Pool {
    pub(super) fn new(
        connector: HttpsConnector<HttpConnector>,
        scheme: Scheme,
        authority: Authority,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Result<Self, String> {
        let origin = Uri::builder()
            .scheme(scheme.clone())
            .authority(authority.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| format!("upstream origin: {e}"))?;
        Ok(Self {
            connector,
            scheme,
            authority,
            origin,
            idle: Mutex::new(Vec::with_capacity(max_idle.min(64))),
            h2: Mutex::new(None),
            max_idle,
            idle_timeout,
        })
    }

    /// One `POST` of `body` to `path` with `headers` (already those for upstream), and its
    /// whole response body (at most `limit` bytes).
    pub(super) async fn exchange(
        &self,
        headers: HeaderMap,
        body: Bytes,
        path: &str,
        limit: usize,
    ) -> Result<(response::Parts, Bytes), Failure> {
        if let Some(h2) = self.shared_h2() {
            return self.h2_exchange(h2, headers, body, path, limit).await;
        }
        loop {
            let (conn, reused) = match self.checkout() {
                Some(c) => (c, true),
                None => match Box::pin(self.connect()).await? {
                    Fresh::H1(c) => (c, false),
                    Fresh::H2(h2) => return self.h2_exchange(h2, headers, body, path, limit).await,
                },
            };
            match self
                .h1_exchange(conn, reused, path, &headers, &body, limit)
                .await
            {
                Ok(done) => return Ok(done),
                Err(H1Failure::Unsent(e)) => {
                    tracing::debug!(error = %e, "pooled upstream connection was closed; retrying");
                }
                Err(H1Failure::Failed(f)) => return Err(f),
            }
        }
    }

    /// Closes idle connections that expired or that the peer closed (housekeeping: the few
    /// `close(2)` calls run under the pool's lock, which no request waits on for long).
    pub(super) fn close_expired(&self) {
        let now = Instant::now();
        lock(&self.idle).retain_mut(|c| c.usable(now, self.idle_timeout));
    }

    fn shared_h2(&self) -> Option<http2::SendRequest<ReqBody>> {
        let mut h2 = lock(&self.h2);
        match &*h2 {
            Some(s) if !s.is_closed() => Some(s.clone()),
            Some(_) => {
                *h2 = None;
                None
            }
            None => None,
        }
    }

    /// The most recently used idle connection that is still usable.
    fn checkout(&self) -> Option<Box<H1>> {
        let now = Instant::now();
        let mut stale = Vec::new();
        let found = {
            let mut idle = lock(&self.idle);
            loop {
                let Some(mut c) = idle.pop() else { break None };
                if c.usable(now, self.idle_timeout) {
                    break Some(c);
                }
                stale.push(c);
            }
        };
        drop(stale);
        found
    }

    fn checkin(&self, mut c: Box<H1>) {
        if self.max_idle == 0 {
            return;
        }
        let now = Instant::now();
        c.idle_since = now;
        let mut idle = lock(&self.idle);
        // The oldest are at the front: drop the expired ones, and one if the pool is full.
        let expired = idle
            .iter()
            .take_while(|o| now.saturating_duration_since(o.idle_since) >= self.idle_timeout)
            .count();
        let full = usize::from(idle.len() - expired >= self.max_idle);
        let dropped: Vec<Box<H1>> = idle.drain(..expired + full).collect();
        idle.push(c);
        drop(idle);
        drop(dropped);
    }

    async fn connect(&self) -> Result<Fresh, Failure> {
        let io = self
            .connector
            .clone()
            .call(self.origin.clone())
            .await
            .map_err(Failure::Connect)?;
        if io.connected().is_negotiated_h2() {
            let (send, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(Failure::Exchange)?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
                }
            });
            *lock(&self.h2) = Some(send.clone());
            Ok(Fresh::H2(send))
        } else {
            Ok(Fresh::H1(Box::new(H1 {
                conn: h1::Conn::new(TokioIo::new(io)),
                idle_since: Instant::now(),
            })))
        }
    }

    /// Sends on an HTTP/1.1 connection and reads the whole response; then returns the
    /// connection to the pool if it can carry another request.
    async fn h1_exchange(
        &self,
        mut c: Box<H1>,
        reused: bool,
        path: &str,
        headers: &HeaderMap,
        body: &Bytes,
        limit: usize,
    ) -> Result<(response::Parts, Bytes), H1Failure> {
        match c.conn.send(path, headers, body).await {
            Ok(()) => {}
            Err(e) if reused => return Err(H1Failure::Unsent(e)),
            Err(e) => return Err(H1Failure::Failed(Failure::H1(e))),
        }
        let resp = c
            .conn
            .receive(limit)
            .await
            .map_err(|e| H1Failure::Failed(Failure::H1(e)))?;
        if resp.reusable {
            self.checkin(c);
        }
        Ok((resp.head, resp.body))
    }

    async fn h2_exchange(
        &self,
        mut send: http2::SendRequest<ReqBody>,
        headers: HeaderMap,
        body: Bytes,
        path: &str,
        limit: usize,
    ) -> Result<(response::Parts, Bytes), Failure> {
        let path = PathAndQuery::try_from(path).map_err(|e| Failure::Uri(e.into()))?;
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(self.scheme.clone());
        uri.authority = Some(self.authority.clone());
        uri.path_and_query = Some(path);
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = Uri::from_parts(uri).map_err(|e| Failure::Uri(e.into()))?;
        *req.headers_mut() = headers;
        let resp = send.send_request(req).await.map_err(Failure::Exchange)?;
        let (head, body) = resp.into_parts();
        let body = Limited::new(body, limit)
            .collect()
            .await
            .map_err(Failure::Body)?
            .to_bytes();
        Ok((head, body))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests;

#[cfg(test)]
impl Pool {
    fn idle_len(&self) -> usize {
        lock(&self.idle).len()
    }
}
