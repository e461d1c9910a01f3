//! Request bodies: reading them under a size limit and within time limits, and checking they are
//! a JSON object.
//!
//! A body whose declared `Content-Length` is over the limit is refused before a byte of it is
//! read; a chunked body is cut off as soon as it passes the limit. A body that stops arriving is
//! given up on (408) after [`BodyLimits::between_reads`] without a byte (NGINX
//! `client_body_timeout`), or once [`BodyLimits::total`] has passed since its headers, however
//! slowly it trickles in.
//!
//! The JSON check builds no tree: the body must be UTF-8, one JSON document
//! (`serde::de::IgnoredAny`, which walks it without recursion or allocation) that is an object,
//! and nested no deeper than `server.max_json_depth` ([`json_depth_exceeds`], one pass over the
//! bytes).

use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body, Frame};
use tokio::time::Instant;

use crate::error::GatewayError;

/// The body sent upstream when the caller sent none.
pub const EMPTY_OBJECT: &[u8] = b"{}";

/// How much of a body is read, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    pub max_bytes: u64,
    /// The longest wait for the next piece of the body (`server.client_body_timeout_ms`).
    pub between_reads: Duration,
    /// The whole body must have arrived this long after its headers (`server.request_timeout_ms`).
    pub total: Duration,
}

/// Reads the whole body under `limits`: past `max_bytes` it is refused (413), and a body that
/// stalls or trickles past its time is refused with [`GatewayError::BodyTimeout`] (408).
pub async fn collect_limited<B>(
    headers: &HeaderMap,
    body: B,
    limits: &BodyLimits,
) -> Result<Bytes, GatewayError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let limit = limits.max_bytes;
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) || body.size_hint().lower() > limit {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    let body = std::pin::pin!(Limited::new(body, limit_usize));
    let mut body = body;
    let mut pieces = Pieces::default();
    // Most bodies are in the read buffer already, with the head: what is ready now is taken
    // without a timer. Arming one is a timer-wheel insert and removal, under the time driver's
    // lock, per request. No time passes in this loop (it never waits), so the limits below
    // still bound every wait.
    loop {
        let ready = std::future::poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await;
        let Poll::Ready(frame) = ready else { break };
        match piece(frame, limit)? {
            Piece::Data(data) => pieces.push(data),
            Piece::Skip => {}
            Piece::End => return Ok(pieces.finish()),
        }
    }
    let deadline = Instant::now() + limits.total;
    // One timer for the rest of the read, moved forward after every piece.
    let timer = tokio::time::sleep(limits.between_reads.min(limits.total));
    let mut timer = std::pin::pin!(timer);
    loop {
        let frame = tokio::select! {
            biased;
            frame = body.frame() => frame,
            () = &mut timer => return Err(GatewayError::BodyTimeout),
        };
        match piece(frame, limit)? {
            Piece::Data(data) => pieces.push(data),
            Piece::Skip => continue,
            Piece::End => return Ok(pieces.finish()),
        }
        timer
            .as_mut()
            .reset((Instant::now() + limits.between_reads).min(deadline));
    }
}

/// What one frame of a body under [`Limited`] is.
enum Piece {
    Data(Bytes),
    /// Trailers: nothing to forward.
    Skip,
    End,
}

fn piece<E>(frame: Option<Result<Frame<Bytes>, E>>, limit: u64) -> Result<Piece, GatewayError>
where
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match frame {
        None => Ok(Piece::End),
        Some(Ok(frame)) => Ok(frame.into_data().map_or(Piece::Skip, Piece::Data)),
        Some(Err(e)) => {
            let e: Box<dyn std::error::Error + Send + Sync> = e.into();
            if e.is::<LengthLimitError>() {
                Err(GatewayError::BodyTooLarge { limit })
            } else {
                Err(GatewayError::BodyRead)
            }
        }
    }
}

/// The pieces of a body read so far: the first is kept as it is (most bodies come in one);
/// more are joined.
#[derive(Default)]
struct Pieces {
    first: Option<Bytes>,
    joined: Option<BytesMut>,
}

impl Pieces {
    fn push(&mut self, data: Bytes) {
        match (&mut self.first, &mut self.joined) {
            (_, Some(all)) => all.extend_from_slice(&data),
            (Some(one), None) => {
                let mut all = BytesMut::with_capacity(one.len() + data.len());
                all.extend_from_slice(one);
                all.extend_from_slice(&data);
                self.joined = Some(all);
            }
            (None, None) => self.first = Some(data),
        }
    }

    fn finish(self) -> Bytes {
        match (self.first, self.joined) {
            (_, Some(all)) => all.freeze(),
            (Some(one), None) => one,
            (None, None) => Bytes::new(),
        }
    }
}

/// Checks that `body` is one JSON object (an empty or all-whitespace body counts as `{}`),
/// valid UTF-8, nested at most `max_depth` deep, and returns what to send upstream.
/// Validation does not build a tree: it only walks the bytes.
pub fn json_object(body: Bytes, max_depth: usize) -> Result<Bytes, GatewayError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        None => Ok(Bytes::from_static(EMPTY_OBJECT)),
        Some(b'{') => {
            // serde_json skips over strings it ignores without checking their UTF-8.
            std::str::from_utf8(&body).map_err(|_| GatewayError::BodyNotUtf8)?;
            serde_json::from_slice::<serde::de::IgnoredAny>(&body)
                .map_err(|_| GatewayError::BodyNotJsonObject)?;
            if json_depth_exceeds(&body, max_depth) {
                return Err(GatewayError::BodyTooDeep);
            }
            Ok(body)
        }
        Some(_) if std::str::from_utf8(&body).is_err() => Err(GatewayError::BodyNotUtf8),
        Some(_) => Err(GatewayError::BodyNotJsonObject),
    }
}

/// Whether the arrays and objects of a valid JSON document nest deeper than `max` (a top-level
/// object is depth 1). Brackets inside strings, escaped quotes included, do not count.
pub fn json_depth_exceeds(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    #[test]
    fn json_object_accepts_objects_and_empty() {
        assert_eq!(json_object(Bytes::new(), 64).expect("empty"), "{}");
        assert_eq!(
            json_object(Bytes::from_static(b" \n"), 64).expect("ws"),
            "{}"
        );
        let obj = Bytes::from_static(b" {\"a\": [1, {\"b\": null}]} ");
        assert_eq!(json_object(obj.clone(), 64).expect("object"), obj);
        assert_eq!(json_object(obj.clone(), 3).expect("depth 3"), obj);
        for bad in [
            &b"[]"[..],
            b"\"x\"",
            b"1",
            b"null",
            b"{",
            b"{\"a\":1} {}",
            b"{\"a\":1}x",
        ] {
            assert!(
                matches!(
                    json_object(Bytes::from_static(bad), 64),
                    Err(GatewayError::BodyNotJsonObject)
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn invalid_utf8_and_deep_nesting_are_refused() {
        for bad in [
            &b"\xff"[..],
            b"{\"a\":\"\xff\"}",
            b"{\"a\":\"\xed\xa0\x80\"}",
        ] {
            assert!(
                matches!(
                    json_object(Bytes::copy_from_slice(bad), 64),
                    Err(GatewayError::BodyNotUtf8)
                ),
                "{bad:?}"
            );
        }
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            json_object(Bytes::from(deep), 64),
            Err(GatewayError::BodyTooDeep)
        ));
        let at = |n: usize| format!("{}{}", "{\"a\":".repeat(n - 1) + "{", "}".repeat(n));
        assert!(json_object(Bytes::from(at(64)), 64).is_ok());
        assert!(matches!(
            json_object(Bytes::from(at(65)), 64),
            Err(GatewayError::BodyTooDeep)
        ));
    }

    #[test]
    fn brackets_and_escaped_quotes_inside_strings_do_not_count() {
        let body = br#"{"a":"[[[{{{\"]]]}}}\\","b":"\"{["}"#;
        assert!(!json_depth_exceeds(body, 1));
        assert!(json_depth_exceeds(br#"{"a":[]}"#, 1));
        assert!(!json_depth_exceeds(br#"{"a":[]}"#, 2));
    }

    #[tokio::test]
    async fn declared_oversize_is_refused_unread() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_LENGTH, "11".parse().expect("hv"));
        let err = collect_limited(&headers, Full::new(Bytes::from_static(b"{}")), &limits(10))
            .await
            .unwrap_err();
        assert!(matches!(err, GatewayError::BodyTooLarge { limit: 10 }));
    }

    #[tokio::test]
    async fn streamed_oversize_is_cut_off() {
        let chunks = (0..4).map(|_| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(b"aaaa")))
        });
        let body = StreamBody::new(iter_stream(chunks));
        let err = collect_limited(&HeaderMap::new(), body, &limits(10))
            .await
            .unwrap_err();
        assert!(matches!(err, GatewayError::BodyTooLarge { limit: 10 }));
    }

    #[tokio::test]
    async fn within_limit_is_read_whole() {
        let got = collect_limited(
            &HeaderMap::new(),
            Full::new(Bytes::from_static(b"{\"a\":1}")),
            &limits(7),
        )
        .await
        .expect("within limit");
        assert_eq!(got, "{\"a\":1}");
    }

    fn limits(max_bytes: u64) -> BodyLimits {
        BodyLimits {
            max_bytes,
            between_reads: Duration::from_secs(5),
            total: Duration::from_secs(10),
        }
    }

    /// A body in several pieces is read whole; one that stops arriving, or trickles in past its
    /// total time, is a timeout. (Tokio's paused clock: no real waiting.)
    #[tokio::test(start_paused = true)]
    async fn stalled_and_trickling_bodies_time_out() {
        let three = iter_stream((0..3).map(|i| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from(format!("{i}"))))
        }));
        let got = collect_limited(&HeaderMap::new(), StreamBody::new(three), &limits(100))
            .await
            .expect("whole");
        assert_eq!(got, "012");

        // Two bytes, then nothing.
        let (tx, rx) = tokio::sync::mpsc::channel::<
            Result<hyper::body::Frame<Bytes>, std::convert::Infallible>,
        >(4);
        tx.send(Ok(hyper::body::Frame::data(Bytes::from_static(b"{\""))))
            .await
            .expect("send");
        let stalled = StreamBody::new(Receiver(rx));
        let started = Instant::now();
        let err = collect_limited(&HeaderMap::new(), stalled, &limits(100))
            .await
            .unwrap_err();
        assert!(matches!(err, GatewayError::BodyTimeout), "{err:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(5), "between_reads");
        drop(tx);

        // A byte every 4 s never trips the 5 s gap, but the 10 s total ends it.
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            for _ in 0..10 {
                if tx
                    .send(Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                        Bytes::from_static(b" "),
                    )))
                    .await
                    .is_err()
                {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(4)).await;
            }
        });
        let started = Instant::now();
        let err = collect_limited(
            &HeaderMap::new(),
            StreamBody::new(Receiver(rx)),
            &limits(100),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, GatewayError::BodyTimeout), "{err:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(10), "total");
    }

    /// What is ready at once is taken without a timer; what comes later is waited for under
    /// the limits; the pieces of both are joined in order (trailers dropped).
    #[tokio::test(start_paused = true)]
    async fn a_body_partly_ready_and_partly_late_is_read_whole() {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let frame = |b: &'static [u8]| {
            Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b)))
        };
        tx.send(frame(b"{\"a\"")).await.expect("send");
        tx.send(frame(b":")).await.expect("send");
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let _ = tx.send(Ok(Frame::trailers(HeaderMap::new()))).await;
            let _ = tx.send(frame(b"1}")).await;
        });
        let started = Instant::now();
        let got = collect_limited(
            &HeaderMap::new(),
            StreamBody::new(Receiver(rx)),
            &limits(100),
        )
        .await
        .expect("whole");
        assert_eq!(got, "{\"a\":1}");
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    /// A `Stream` over a channel.
    struct Receiver<T>(tokio::sync::mpsc::Receiver<T>);

    impl<T> futures_core::Stream for Receiver<T> {
        type Item = T;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }

    /// A minimal `Stream` over an iterator, to send a body in several frames.
    fn iter_stream<I: Iterator + Unpin>(it: I) -> IterStream<I> {
        IterStream(it)
    }

    struct IterStream<I>(I);

    impl<I: Iterator + Unpin> futures_core::Stream for IterStream<I> {
        type Item = I::Item;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<I::Item>> {
            std::task::Poll::Ready(self.0.next())
        }
    }

    mod props {
        use super::super::*;
        use crate::prop_strategies::{depth, value, write_differently};
        use proptest::prelude::*;
        use serde_json::Value;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            /// Any JSON document, however spelled: accepted exactly when it is an object nested
            /// within the limit, and then forwarded byte for byte.
            #[test]
            fn objects_pass_exactly_when_within_the_depth_limit(
                v in value(6),
                max in 1usize..9,
                ws in prop_oneof![Just(""), Just(" "), Just("\n\t ")],
                seed in any::<u8>(),
            ) {
                let text = write_differently(&v, ws, &|i| (i + usize::from(seed)) % 3 == 0);
                let got = json_object(Bytes::from(text.clone()), max);
                let d = depth(&v);
                prop_assert_eq!(json_depth_exceeds(text.as_bytes(), max), d > max);
                match (v.is_object(), d <= max) {
                    (true, true) => prop_assert_eq!(got.ok(), Some(Bytes::from(text))),
                    (true, false) => prop_assert!(matches!(got, Err(GatewayError::BodyTooDeep))),
                    (false, _) => prop_assert!(matches!(got, Err(GatewayError::BodyNotJsonObject))),
                }
            }

            /// Arbitrary bytes never panic, and nothing but a UTF-8 JSON object (or an empty
            /// body, sent as `{}`) is ever accepted.
            #[test]
            fn arbitrary_bytes_never_pass_unless_an_object(
                bytes in proptest::collection::vec(any::<u8>(), 0..48),
                brace in any::<bool>(),
            ) {
                let mut b = if brace { b"{".to_vec() } else { Vec::new() };
                b.extend(bytes);
                if let Ok(out) = json_object(Bytes::from(b.clone()), 64) {
                    if b.iter().all(u8::is_ascii_whitespace) {
                        prop_assert_eq!(out, Bytes::from_static(EMPTY_OBJECT));
                    } else {
                        prop_assert!(std::str::from_utf8(&out).is_ok());
                        let v: Result<Value, _> = serde_json::from_slice(&out);
                        prop_assert!(v.is_ok_and(|v| v.is_object()));
                    }
                }
            }
        }
    }
}
