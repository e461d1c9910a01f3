//! Request bodies: reading them under a size limit and checking they are a JSON object.
//!
//! A body whose declared `Content-Length` is over the limit is refused before a byte of it is
//! read; a chunked body is cut off as soon as it passes the limit.
//!
//! The JSON check builds no tree: the body must be UTF-8, one JSON document
//! (`serde::de::IgnoredAny`, which walks it without recursion or allocation) that is an object,
//! and nested no deeper than `server.max_json_depth` ([`json_depth_exceeds`], one pass over the
//! bytes).

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Body;

use crate::error::GatewayError;

/// The body sent upstream when the caller sent none.
pub const EMPTY_OBJECT: &[u8] = b"{}";

/// Reads the whole body, refusing it past `limit` bytes.
pub async fn collect_limited<B>(
    headers: &HeaderMap,
    body: B,
    limit: u64,
) -> Result<Bytes, GatewayError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) || body.size_hint().lower() > limit {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let limit_usize = usize::try_from(limit).unwrap_or(usize::MAX);
    match Limited::new(body, limit_usize).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(GatewayError::BodyTooLarge { limit }),
        Err(_) => Err(GatewayError::BodyRead),
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
        let err = collect_limited(&headers, Full::new(Bytes::from_static(b"{}")), 10)
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
        let err = collect_limited(&HeaderMap::new(), body, 10)
            .await
            .unwrap_err();
        assert!(matches!(err, GatewayError::BodyTooLarge { limit: 10 }));
    }

    #[tokio::test]
    async fn within_limit_is_read_whole() {
        let got = collect_limited(
            &HeaderMap::new(),
            Full::new(Bytes::from_static(b"{\"a\":1}")),
            7,
        )
        .await
        .expect("within limit");
        assert_eq!(got, "{\"a\":1}");
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
}
