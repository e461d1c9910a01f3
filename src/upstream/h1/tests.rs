//! The codec against a scripted peer on an in-memory pipe: the bytes of the request it writes,
//! and every framing of a response (length, chunked, until close, none, 1xx first), what makes
//! a connection unfit for reuse, and every malformed or oversized answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

use super::*;

/// A connection whose peer answers `response` (written at once, then the peer's side closes if
/// `close`), and the bytes the peer received.
async fn exchange(
    response: &[u8],
    close: bool,
    limit: usize,
) -> (Result<Response, Error>, Vec<u8>) {
    let (ours, mut theirs) = duplex(1 << 20);
    let mut conn = Conn::new(ours);
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static("api.example"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    conn.send("/v1/x?y=1", &headers, &Bytes::from_static(b"{\"a\":1}"))
        .await
        .expect("send");
    theirs.write_all(response).await.unwrap();
    if close {
        theirs.shutdown().await.unwrap();
    }
    let got = conn.receive(limit).await;
    drop(conn);
    let mut sent = Vec::new();
    theirs.read_to_end(&mut sent).await.unwrap();
    (got, sent)
}

async fn ok(response: &[u8], close: bool) -> Response {
    exchange(response, close, 1 << 16)
        .await
        .0
        .expect("response")
}

async fn err(response: &[u8], close: bool, limit: usize) -> Error {
    match exchange(response, close, limit).await.0 {
        Ok(r) => panic!("accepted: {} {:?}", r.head.status, r.body),
        Err(e) => e,
    }
}

#[tokio::test]
async fn the_request_is_a_post_with_its_headers_and_length() {
    let (_, sent) = exchange(b"HTTP/1.1 204 No Content\r\n\r\n", false, 10).await;
    assert_eq!(
        String::from_utf8(sent).unwrap(),
        "POST /v1/x?y=1 HTTP/1.1\r\nhost: api.example\r\ncontent-type: application/json\r\n\
         content-length: 7\r\n\r\n{\"a\":1}"
    );
}

#[tokio::test]
async fn a_large_body_follows_its_head_whole() {
    let (ours, mut theirs) = duplex(1 << 20);
    let mut conn = Conn::new(ours);
    let body = Bytes::from(vec![b'x'; INLINE_BODY * 3]);
    conn.send("/", &HeaderMap::new(), &body).await.unwrap();
    drop(conn);
    let mut sent = Vec::new();
    theirs.read_to_end(&mut sent).await.unwrap();
    let head = format!("POST / HTTP/1.1\r\ncontent-length: {}\r\n\r\n", body.len());
    assert_eq!(&sent[..head.len()], head.as_bytes());
    assert_eq!(&sent[head.len()..], &body[..]);
}

#[tokio::test]
async fn a_length_body_is_read_and_the_connection_kept() {
    let r = ok(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Trace: a\r\nX-Trace: b\r\n\
          Content-Length: 11\r\n\r\n{\"code\":1}\n",
        false,
    )
    .await;
    assert_eq!(r.head.status, 200);
    assert_eq!(r.head.version, Version::HTTP_11);
    assert_eq!(r.head.headers["content-type"], "application/json");
    let traces: Vec<_> = r.head.headers.get_all("x-trace").iter().collect();
    assert_eq!(traces, ["a", "b"]);
    assert_eq!(&r.body[..], b"{\"code\":1}\n");
    assert!(r.reusable);
}

#[tokio::test]
async fn a_body_split_over_many_reads_is_whole() {
    let (ours, mut theirs) = duplex(64);
    let mut conn = Conn::new(ours);
    conn.send("/", &HeaderMap::new(), &Bytes::new())
        .await
        .unwrap();
    let body = "y".repeat(5000);
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let peer = tokio::spawn(async move {
        for piece in resp.as_bytes().chunks(7) {
            theirs.write_all(piece).await.unwrap();
        }
        theirs
    });
    let r = conn.receive(1 << 16).await.expect("response");
    assert_eq!(r.body.len(), 5000);
    assert!(r.reusable);
    drop(peer.await.unwrap());
}

#[tokio::test]
async fn two_responses_in_a_row_on_one_connection() {
    let (ours, mut theirs) = duplex(1 << 16);
    let mut conn = Conn::new(ours);
    for n in 0..3 {
        conn.send("/", &HeaderMap::new(), &Bytes::new())
            .await
            .unwrap();
        let body = format!("{{\"n\":{n}}}");
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        theirs.write_all(resp.as_bytes()).await.unwrap();
        let r = conn.receive(100).await.unwrap();
        assert_eq!(r.body, body.as_bytes());
        assert!(r.reusable);
    }
}

#[tokio::test]
async fn chunked_bodies_are_decoded_with_extensions_and_trailers_dropped() {
    let r = ok(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
          4\r\n{\"a\"\r\n3;ext=1\r\n:1}\r\n0\r\nX-Checksum: 9\r\n\r\n",
        false,
    )
    .await;
    assert_eq!(&r.body[..], b"{\"a\":1}");
    assert!(r.reusable);
    let r = ok(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, CHUNKED\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        false,
    )
    .await;
    assert_eq!(&r.body[..], b"{}");
}

#[tokio::test]
async fn without_a_length_the_body_runs_to_the_close() {
    let r = ok(b"HTTP/1.1 200 OK\r\n\r\n{\"all\":true}", true).await;
    assert_eq!(&r.body[..], b"{\"all\":true}");
    assert!(!r.reusable);
    // A transfer coding other than chunked last: also until the close.
    let r = ok(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\nzz",
        true,
    )
    .await;
    assert_eq!(&r.body[..], b"zz");
    assert!(!r.reusable);
}

#[tokio::test]
async fn what_makes_a_connection_unfit_for_reuse() {
    let cases: [&[u8]; 4] = [
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\ncontent-length: 2\r\n\r\n{}",
        b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}extra",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
    ];
    for case in cases {
        let r = ok(case, false).await;
        assert_eq!(&r.body[..], b"{}", "{}", String::from_utf8_lossy(case));
        assert!(!r.reusable, "{}", String::from_utf8_lossy(case));
    }
}

#[tokio::test]
async fn informational_heads_are_skipped_and_101_is_returned_unfit() {
    let r = ok(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
          HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
        false,
    )
    .await;
    assert_eq!(r.head.status, 200);
    assert!(!r.head.headers.contains_key("link"));
    assert_eq!(&r.body[..], b"{}");
    let r = ok(
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
        false,
    )
    .await;
    assert_eq!(r.head.status, 101);
    assert!(!r.reusable);
}

#[tokio::test]
async fn no_content_and_not_modified_have_no_body() {
    for status in [204, 304] {
        let head = format!("HTTP/1.1 {status} X\r\ncontent-length: 5\r\n\r\n");
        let r = ok(head.as_bytes(), false).await;
        assert!(r.body.is_empty());
        assert!(r.reusable);
    }
}

#[tokio::test]
async fn bodies_over_the_limit_are_refused() {
    // Known in advance: refused before it is read.
    let e = err(b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n", false, 10).await;
    assert!(matches!(e, Error::TooLarge), "{e}");
    let e = err(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\n123456\r\n5\r\n12345\r\n0\r\n\r\n",
        false,
        10,
    )
    .await;
    assert!(matches!(e, Error::TooLarge), "{e}");
    let e = err(b"HTTP/1.1 200 OK\r\n\r\n12345678901", true, 10).await;
    assert!(matches!(e, Error::TooLarge), "{e}");
    // Exactly the limit is fine.
    let r = exchange(
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n1234567890",
        false,
        10,
    )
    .await;
    assert_eq!(r.0.unwrap().body.len(), 10);
}

#[tokio::test]
async fn a_close_before_the_end_is_an_error() {
    for case in [
        &b""[..],
        b"HTTP/1.1 200 OK\r\ncontent-le",
        b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n12345",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\n12",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\nx-trailer: 1\r\n",
    ] {
        let e = err(case, true, 100).await;
        assert!(
            matches!(e, Error::Closed),
            "{e}: {}",
            String::from_utf8_lossy(case)
        );
    }
}

#[tokio::test]
async fn malformed_responses_are_invalid() {
    let many = format!(
        "HTTP/1.1 200 OK\r\n{}\r\n",
        "x-a: 1\r\n".repeat(MAX_HEADERS + 1)
    );
    let huge = format!("HTTP/1.1 200 OK\r\nx-a: {}", "a".repeat(MAX_HEAD));
    let cases: Vec<&[u8]> = vec![
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\ncontent-length: +2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\n{}XX0\r\n\r\n",
        b"HTTP/2 200 OK\r\n\r\n",
        b"SMTP ready\r\n\r\n",
        b"HTTP/1.1 20 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nbad name: 1\r\n\r\n",
        many.as_bytes(),
        huge.as_bytes(),
    ];
    for case in cases {
        let e = err(case, false, 100).await;
        assert!(
            matches!(e, Error::Invalid(_)),
            "{e}: {}",
            String::from_utf8_lossy(&case[..case.len().min(80)])
        );
    }
}

#[tokio::test]
async fn repeated_equal_lengths_are_one_length() {
    let r = ok(
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nContent-Length: 2, 2\r\n\r\n{}",
        false,
    )
    .await;
    assert_eq!(&r.body[..], b"{}");
    assert!(r.reusable);
}

#[tokio::test]
async fn a_peer_that_stops_reading_fails_the_write() {
    let (ours, theirs) = duplex(16);
    drop(theirs);
    let mut conn = Conn::new(ours);
    let e = conn
        .send("/", &HeaderMap::new(), &Bytes::from_static(b"{}"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Write(_)), "{e}");
}

#[test]
fn lengths_are_plain_digits() {
    assert_eq!(parse_length(b"0"), Some(0));
    assert_eq!(parse_length(b"0012"), Some(12));
    assert_eq!(parse_length(b"18446744073709551615"), None);
    for bad in [&b""[..], b"-1", b"1 2", b"0x10", b"1e3", b"+5"] {
        assert_eq!(parse_length(bad), None, "{bad:?}");
    }
}

#[tokio::test]
async fn a_response_map_has_room_for_what_the_gateway_adds() {
    let r = ok(
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ndate: x\r\nserver: y\r\n\
          x-a: 1\r\nx-b: 2\r\ncontent-length: 2\r\n\r\n{}",
        false,
    )
    .await;
    let mut headers = r.head.headers;
    let room = headers.capacity();
    for name in ["ratelimit-policy", "ratelimit", "x-request-id", "x-cache"] {
        headers.insert(HeaderName::from_static(name), HeaderValue::from_static("v"));
    }
    assert_eq!(crate::headers::ADDED_TO_RESPONSE, 4);
    assert_eq!(
        headers.capacity(),
        room,
        "adding the gateway's headers regrew the map"
    );
}
