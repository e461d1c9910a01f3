//! One connection as the accept loop sees it: whether a request is in progress, since when it
//! has been idle, and the deadline that closes it when it stays quiet.
//!
//! [`Activity`] is updated from three places, each with one or two atomic operations:
//! - [`TrackedIo`] (every read): the first byte of an HTTP/1 request head marks the connection
//!   busy-but-incomplete (a head that never completes is cut off by the header timeout);
//! - [`InFlight`] (a service call): from the moment a request head is complete until its response
//!   body has been written (or dropped), the connection is busy;
//! - the connection task, which sleeps until [`Activity::next_check`] and then asks
//!   [`Activity::expired`] whether the connection really stayed quiet. Requests never wake it:
//!   the check is lazy (at most one wake-up per header timeout while a request runs), so a
//!   request costs no timer or notification of its own.
//!
//! "Idle" (NGINX calls such connections reusable) means: no request in progress and no byte of
//! the next request head read. Only idle connections are closed to make room at the cap
//! ([`Registry::longest_idle`]), and closing one loses no answer.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::target::{Fragment, Framing};

/// The timeouts a connection lives by.
#[derive(Debug, Clone, Copy)]
pub(super) struct Quiet {
    /// From accept to the first request's complete head; from a later head's first byte to its
    /// end.
    pub header: Duration,
    /// A connection with no request in progress, after its first request.
    pub keepalive: Duration,
}

/// Why a connection was closed by the gateway (for the debug log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closed {
    /// No complete request head within the header timeout.
    HeaderTimeout,
    /// No new request within the keep-alive timeout.
    KeepaliveTimeout,
    /// Closed to make room for a new caller at the connection cap.
    Evicted,
}

impl Closed {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::HeaderTimeout => "no complete request head within server.header_read_timeout_ms",
            Self::KeepaliveTimeout => "idle past server.keepalive_timeout_ms",
            Self::Evicted => "idle, closed to make room at server.max_connections",
        }
    }
}

const UNKNOWN: u8 = 0;
const HTTP1: u8 = 1;
const HTTP2: u8 = 2;
/// The first bytes of every HTTP/2 connection.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";
/// No partial request head (in `partial_since`).
const NONE: u64 = u64::MAX;
/// A connection idle for less than this is not closed to make room: its first bytes may be on
/// their way (an eviction would then cost a caller its request).
pub(super) const MIN_IDLE_TO_EVICT: Duration = Duration::from_millis(300);

/// What one connection is doing; shared by its I/O, its requests and its task.
#[derive(Debug)]
pub(super) struct Activity {
    epoch: Instant,
    /// Requests in progress.
    active: AtomicU32,
    /// Milliseconds since `epoch` when the connection last became idle (accept, then the end of
    /// each response).
    idle_since: AtomicU64,
    /// Milliseconds since `epoch` of the first byte of an HTTP/1 request head not yet complete;
    /// [`NONE`] when there is none.
    partial_since: AtomicU64,
    /// Whether a request has been served: the first one gets the header timeout from accept,
    /// the wait for the next ones is the keep-alive timeout.
    served: AtomicBool,
    protocol: AtomicU8,
    /// Set once the accept loop chose this connection to close.
    evicted: AtomicBool,
    /// Wakes the connection's task when it is chosen.
    pub(super) evict: Notify,
    /// Requests handed to the service so far (the next one's index).
    started: AtomicU64,
    /// HTTP/1 request heads read with a `#fragment` in their target, not yet handed over;
    /// `fragments_pending` says whether there are any without taking the lock.
    fragments: Mutex<VecDeque<Fragment>>,
    fragments_pending: AtomicBool,
}

impl Activity {
    fn new(epoch: Instant) -> Self {
        let now = Instant::now().saturating_duration_since(epoch).as_millis() as u64;
        Self {
            epoch,
            active: AtomicU32::new(0),
            idle_since: AtomicU64::new(now),
            partial_since: AtomicU64::new(NONE),
            served: AtomicBool::new(false),
            protocol: AtomicU8::new(UNKNOWN),
            evicted: AtomicBool::new(false),
            evict: Notify::new(),
            started: AtomicU64::new(0),
            fragments: Mutex::default(),
            fragments_pending: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// Idle: no request in progress and no byte of a next request head read.
    fn is_idle(&self) -> bool {
        self.active.load(Ordering::Acquire) == 0
            && self.partial_since.load(Ordering::Acquire) == NONE
    }

    /// When the connection is to be closed if nothing happens meanwhile; `None` while a
    /// request is in progress (then the body and upstream timeouts apply).
    pub(super) fn deadline(&self, quiet: &Quiet) -> Option<Instant> {
        self.due(quiet).map(|(at, _)| at)
    }

    /// When the connection's task should look again: its deadline, and no later than the
    /// shorter of the two timeouts from now. The deadline moves without the task being told
    /// (a request starts or ends, a head begins), but never to less than one of those timeouts
    /// after the move: so no deadline is missed, and each is met exactly.
    pub(super) fn next_check(&self, quiet: &Quiet) -> Instant {
        let soon = Instant::now() + quiet.header.min(quiet.keepalive);
        self.deadline(quiet).map_or(soon, |at| at.min(soon))
    }

    /// Whether the connection has stayed quiet past its deadline (and why).
    pub(super) fn expired(&self, quiet: &Quiet) -> Option<Closed> {
        self.due(quiet)
            .filter(|(at, _)| *at <= Instant::now())
            .map(|(_, why)| why)
    }

    fn due(&self, quiet: &Quiet) -> Option<(Instant, Closed)> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let idle_since = self.idle_since.load(Ordering::Acquire);
        let partial = self.partial_since.load(Ordering::Acquire);
        let ms = |d: Duration| d.as_millis() as u64;
        Some(if !self.served.load(Ordering::Acquire) {
            // The first request: its head must be complete `header` after accept.
            (
                self.at(idle_since + ms(quiet.header)),
                Closed::HeaderTimeout,
            )
        } else if partial != NONE {
            (self.at(partial + ms(quiet.header)), Closed::HeaderTimeout)
        } else {
            (
                self.at(idle_since + ms(quiet.keepalive)),
                Closed::KeepaliveTimeout,
            )
        })
    }

    /// Bytes were read into `filled`.
    fn on_read(&self, filled: &[u8]) {
        if filled.is_empty() {
            return;
        }
        let mut protocol = self.protocol.load(Ordering::Relaxed);
        if protocol == UNKNOWN {
            let n = filled.len().min(H2_PREFACE.len());
            protocol = if filled[..n] == H2_PREFACE[..n] {
                HTTP2
            } else {
                HTTP1
            };
            self.protocol.store(protocol, Ordering::Relaxed);
        }
        // HTTP/2 frames between streams (PING, SETTINGS, WINDOW_UPDATE) are not requests.
        if protocol == HTTP1
            && self.active.load(Ordering::Acquire) == 0
            && self.partial_since.load(Ordering::Acquire) == NONE
        {
            self.partial_since.store(self.now_ms(), Ordering::Release);
        }
    }

    /// A request head is complete: the connection is busy until the returned guard drops.
    /// Also the request's index on the connection.
    pub(super) fn start(self: &Arc<Self>) -> (InFlight, u64) {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.partial_since.store(NONE, Ordering::Release);
        let index = self.started.fetch_add(1, Ordering::Relaxed);
        (InFlight(self.clone()), index)
    }

    fn is_http2(&self) -> bool {
        self.protocol.load(Ordering::Relaxed) == HTTP2
    }

    fn fragment_seen(&self, fragment: Fragment) {
        lock(&self.fragments).push_back(fragment);
        self.fragments_pending.store(true, Ordering::Release);
    }

    /// Whether the request with this index and (parsed) target had a `#fragment` in its raw
    /// target. One atomic load unless a fragment was seen on the connection.
    pub(super) fn had_fragment(&self, index: u64, uri: &http::Uri) -> bool {
        if !self.fragments_pending.load(Ordering::Acquire) {
            return false;
        }
        let mut seen = lock(&self.fragments);
        while seen.front().is_some_and(|f| f.index < index) {
            seen.pop_front();
        }
        let hit = seen
            .front()
            .is_some_and(|f| f.index == index && f.matches(uri));
        if seen.front().is_some_and(|f| f.index == index) {
            seen.pop_front();
        }
        if seen.is_empty() {
            self.fragments_pending.store(false, Ordering::Release);
        }
        hit
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A request in progress; dropped when its response body is done (or abandoned).
#[derive(Debug)]
pub(super) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.served.store(true, Ordering::Release);
        a.idle_since.store(a.now_ms(), Ordering::Release);
        a.active.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that holds its request's [`InFlight`] until hyper has written it all.
#[derive(Debug)]
pub(super) struct TrackedBody {
    body: Full<Bytes>,
    _in_flight: InFlight,
}

impl TrackedBody {
    pub(super) fn new(body: Full<Bytes>, in_flight: InFlight) -> Self {
        Self {
            body,
            _in_flight: in_flight,
        }
    }
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The connection's socket, reporting reads to its [`Activity`] and HTTP/1 request targets
/// with a fragment (found by [`Framing`]).
pub(super) struct TrackedIo<T> {
    io: T,
    activity: Arc<Activity>,
    framing: Framing,
}

impl<T> TrackedIo<T> {
    pub(super) fn new(io: T, activity: Arc<Activity>) -> Self {
        Self {
            io,
            activity,
            framing: Framing::default(),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TrackedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if polled.is_ready() {
            let read = &buf.filled()[before..];
            let activity = &this.activity;
            activity.on_read(read);
            if activity.is_http2() {
                this.framing.off();
            } else {
                this.framing.feed(read, &mut |f| activity.fragment_seen(f));
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TrackedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Every open connection of one listener, to find the one to close at the cap.
#[derive(Debug)]
pub(super) struct Registry {
    epoch: Instant,
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<Activity>>>,
}

impl Registry {
    pub(super) fn new() -> Self {
        Self {
            epoch: Instant::now(),
            next: AtomicU64::new(0),
            open: Mutex::default(),
        }
    }

    /// Registers a new connection; [`Registry::remove`] it when it ends.
    pub(super) fn add(&self) -> (u64, Arc<Activity>) {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let activity = Arc::new(Activity::new(self.epoch));
        self.lock().insert(id, activity.clone());
        (id, activity)
    }

    pub(super) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Chooses the connection that has been idle longest (at least [`MIN_IDLE_TO_EVICT`]),
    /// marks it and wakes its task, which closes it. `true` when one was chosen, or one chosen
    /// before is still closing (one at a time: each frees one slot); `false` when none
    /// qualifies.
    pub(super) fn evict_longest_idle(&self) -> bool {
        let open = self.lock();
        if open.values().any(|a| a.evicted.load(Ordering::Acquire)) {
            return true;
        }
        let now = Instant::now()
            .saturating_duration_since(self.epoch)
            .as_millis() as u64;
        let min = MIN_IDLE_TO_EVICT.as_millis() as u64;
        let victim = open
            .values()
            .filter(|a| {
                a.is_idle() && now.saturating_sub(a.idle_since.load(Ordering::Acquire)) >= min
            })
            .min_by_key(|a| a.idle_since.load(Ordering::Acquire));
        match victim {
            Some(a) => {
                a.evicted.store(true, Ordering::Release);
                a.evict.notify_one();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
        lock(&self.open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: Quiet = Quiet {
        header: Duration::from_secs(10),
        keepalive: Duration::from_secs(60),
    };

    #[tokio::test(start_paused = true)]
    async fn deadlines_follow_the_connection_state() {
        let registry = Registry::new();
        let (_, a) = registry.add();
        let accepted = Instant::now();
        // Silent since accept: the header timeout counts from accept.
        assert_eq!(a.deadline(&QUIET), Some(accepted + QUIET.header));
        assert!(a.is_idle());
        tokio::time::advance(Duration::from_secs(3)).await;
        a.on_read(b"POST / HT");
        assert!(!a.is_idle(), "a partial head is not idle");
        assert_eq!(a.deadline(&QUIET), Some(accepted + QUIET.header));
        let (req, _) = a.start();
        assert_eq!(a.deadline(&QUIET), None, "busy");
        assert_eq!(
            a.next_check(&QUIET),
            Instant::now() + QUIET.header,
            "a busy connection is looked at again within the shorter timeout"
        );
        a.on_read(b"body bytes");
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(
            a.expired(&QUIET),
            None,
            "a request in progress never expires"
        );
        drop(req);
        let done = Instant::now();
        assert!(a.is_idle());
        assert_eq!(a.deadline(&QUIET), Some(done + QUIET.keepalive));
        assert_eq!(a.next_check(&QUIET), done + QUIET.header);
        tokio::time::advance(Duration::from_secs(5)).await;
        a.on_read(b"P");
        assert_eq!(
            a.deadline(&QUIET),
            Some(done + Duration::from_secs(5) + QUIET.header)
        );
        tokio::time::advance(QUIET.header).await;
        assert_eq!(a.expired(&QUIET), Some(Closed::HeaderTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn http2_frames_between_streams_keep_it_idle() {
        let registry = Registry::new();
        let (_, a) = registry.add();
        a.on_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        a.on_read(b"\x00\x00\x08\x06\x00\x00\x00\x00\x00ping-data");
        assert!(a.is_idle());
        tokio::time::advance(QUIET.header).await;
        assert_eq!(a.expired(&QUIET), Some(Closed::HeaderTimeout));
    }

    #[tokio::test(start_paused = true)]
    async fn the_longest_idle_connection_is_chosen_once() {
        let registry = Registry::new();
        let (_, old) = registry.add();
        tokio::time::advance(Duration::from_secs(1)).await;
        let (_, newer) = registry.add();
        let (_, busy) = registry.add();
        let (_req, _) = busy.start();
        tokio::time::advance(MIN_IDLE_TO_EVICT).await;
        assert!(registry.evict_longest_idle());
        assert!(old.evicted.load(Ordering::Acquire));
        assert!(!newer.evicted.load(Ordering::Acquire));
        // While the first is closing, no second one is chosen.
        assert!(registry.evict_longest_idle());
        assert!(!newer.evicted.load(Ordering::Acquire));
        let only_busy = Registry::new();
        let (_, b) = only_busy.add();
        let (_r, _) = b.start();
        let (_, fresh) = only_busy.add();
        assert!(
            !only_busy.evict_longest_idle(),
            "nothing idle long enough to close"
        );
        tokio::time::advance(MIN_IDLE_TO_EVICT).await;
        assert!(only_busy.evict_longest_idle());
        assert!(fresh.evicted.load(Ordering::Acquire));
    }
}
