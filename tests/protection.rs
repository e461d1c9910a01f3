//! Protection of the listener: header size bound, slow-loris header timeout, the connection cap,
//! and garbage that must never crash or wedge the process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Harness, SHOP_API, Setup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until EOF (or `limit`), returning what came.
async fn read_to_close(s: &mut TcpStream, limit: Duration) -> Result<String, &'static str> {
    let mut buf = Vec::new();
    match tokio::time::timeout(limit, s.read_to_end(&mut buf)).await {
        Ok(_) => Ok(String::from_utf8_lossy(&buf).into_owned()),
        Err(_) => Err("connection still open"),
    }
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    let h = Harness::with(Setup {
        server: "max_header_bytes = 8192".into(),
        ..Setup::default()
    })
    .await;
    let big = "a".repeat(20_000);
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    let req = format!(
        "POST {SHOP_API} HTTP/1.1\r\nhost: x\r\nx-tenant-id: acme\r\nx-big: {big}\r\ncontent-length: 2\r\n\r\n{{}}"
    );
    let _ = s.write_all(req.as_bytes()).await;
    let answer = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
    assert_eq!(h.mock.request_count(), 0);
    // The gateway still serves.
    assert_eq!(h.call(SHOP_API, Some("acme"), "{}").await.status, 200);
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let h = Harness::with(Setup {
        server: "header_read_timeout_ms = 300".into(),
        ..Setup::default()
    })
    .await;
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(b"POST /v1/shop.Etelecom/GetExtensionInfo HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let answer = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
}

#[tokio::test]
async fn connections_over_the_cap_wait_for_a_free_slot() {
    let h = Harness::with(Setup {
        server: "max_connections = 1\nheader_read_timeout_ms = 60000".into(),
        ..Setup::default()
    })
    .await;
    // Hold the only slot with a connection that has sent half a request.
    let mut holder = TcpStream::connect(h.addr).await.unwrap();
    holder.write_all(b"POST / HTTP/1.1\r\n").await.unwrap();
    let mut waiting = TcpStream::connect(h.addr).await.unwrap();
    waiting
        .write_all(
            format!(
                "POST {SHOP_API} HTTP/1.1\r\nhost: x\r\nx-tenant-id: acme\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(300), waiting.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "over the cap, the second caller is not served yet"
    );
    drop(holder);
    let answer = read_to_close(&mut waiting, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[tokio::test]
async fn garbage_never_wedges_the_gateway() {
    let h = Harness::start().await;
    let inputs: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\xff\xfe garbage\r\n\r\n".to_vec(),
        b"POST /v1/shop.Etelecom/GetExtensionInfo HTTP/1.1\r\nhost: x\r\ncontent-length: -5\r\n\r\n".to_vec(),
        b"POST /v1/shop.Etelecom/GetExtensionInfo HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\nx-tenant-id: acme\r\n\r\nzz\r\n".to_vec(),
        b"POST /v1/shop.Etelecom/GetExtensionInfo HTTP/1.1\r\nhost: x\r\nx-tenant-id: \xff\xfe\r\ncontent-length: 2\r\n\r\n{}".to_vec(),
        b"GET http://example.com/ HTTP/1.1\r\nhost: example.com\r\n\r\n".to_vec(),
        b"CONNECT api.etelecom.vn:443 HTTP/1.1\r\nhost: api.etelecom.vn:443\r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x09\x00\x00\x00\x00\x00".to_vec(),
    ];
    for input in &inputs {
        let mut s = TcpStream::connect(h.addr).await.unwrap();
        let _ = s.write_all(input).await;
        let _ = s.shutdown().await;
        let answer = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
        let h2 = input.starts_with(b"PRI * HTTP/2.0");
        assert!(
            h2 || answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{:?} -> {answer}",
            String::from_utf8_lossy(input)
        );
    }
    assert_eq!(h.mock.request_count(), 0);
    assert_eq!(h.call(SHOP_API, Some("acme"), "{}").await.status, 200);
}

/// Sends one raw HTTP/1 request on a fresh connection (which it closes) and returns the answer.
async fn raw(h: &Harness, head: &str) -> String {
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(format!("{head}connection: close\r\ncontent-length: 2\r\n\r\n{{}}").as_bytes())
        .await
        .unwrap();
    read_to_close(&mut s, Duration::from_secs(5)).await.unwrap()
}

#[tokio::test]
async fn the_host_must_be_given_exactly_once() {
    let h = Harness::start().await;
    let line = format!("POST {SHOP_API} HTTP/1.1\r\nx-tenant-id: acme\r\n");
    for (head, msg) in [
        (line.clone(), "request has no Host header"),
        (
            format!("{line}host: a\r\nhost: b\r\n"),
            "request has more than one Host",
        ),
        (
            format!("{line}host: a\r\nhost: a\r\n"),
            "request has more than one Host",
        ),
    ] {
        let answer = raw(&h, &head).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{head:?} -> {answer}");
        assert!(answer.contains("\"code\":\"invalid_argument\""), "{answer}");
        assert!(answer.contains("\"source\":\"gateway\""), "{answer}");
        assert!(answer.contains(msg), "{answer}");
    }
    assert_eq!(h.mock.request_count(), 0);
    let answer = raw(&h, &format!("{line}host: gw\r\n")).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // HTTP/1.0 predates Host: it may leave it out.
    let answer = raw(
        &h,
        &format!("POST {SHOP_API} HTTP/1.0\r\nx-tenant-id: acme\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
}

#[tokio::test]
async fn a_fragment_in_the_target_is_a_400_and_the_connection_goes_on() {
    let h = Harness::start().await;
    let head = |target: &str| {
        format!("POST {target} HTTP/1.1\r\nhost: gw\r\nx-tenant-id: acme\r\nx-note: a#b\r\n")
    };
    // Three pipelined requests on one connection: '#' in a header and in a chunked body is
    // fine, in the target it is refused, and the request after it is served.
    let pipeline = format!(
        "{}transfer-encoding: chunked\r\n\r\n6\r\n{{\"#\":1\r\n1\r\n}}\r\n0\r\n\r\n\
         {}content-length: 2\r\n\r\n{{}}\
         {}connection: close\r\ncontent-length: 2\r\n\r\n{{}}",
        head(SHOP_API),
        head(&format!("{SHOP_API}#frag")),
        head(SHOP_API),
    );
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(pipeline.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
    let statuses: Vec<&str> = answer
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &answer[i + 9..i + 12])
        .collect();
    assert_eq!(statuses, ["200", "400", "200"], "{answer}");
    assert!(answer.contains("\"code\":\"invalid_argument\""), "{answer}");
    assert!(
        answer.contains("request target has a #fragment"),
        "{answer}"
    );
    assert_eq!(
        h.mock.request_count(),
        2,
        "the refused request is not forwarded"
    );
}

#[tokio::test]
async fn a_non_utf8_tenant_header_is_a_400() {
    let h = Harness::start().await;
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(
        format!("POST {SHOP_API} HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-tenant-id: \u{e9}t\u{e9}\r\ncontent-length: 2\r\n\r\n{{}}")
            .as_bytes(),
    )
    .await
    .unwrap();
    let answer = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"code\":\"invalid_argument\""), "{answer}");
}

/// Asserts that something the gateway cut off took at least `min` (it waited for its timeout)
/// and well under the bound of the test's reads.
#[track_caller]
fn assert_took(took: Duration, min: Duration) {
    assert!(
        took >= min && took < Duration::from_secs(3),
        "took {took:?}, expected at least {min:?}"
    );
}

/// Connects and sends `bytes` (maybe none).
async fn open(h: &Harness, bytes: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    if !bytes.is_empty() {
        s.write_all(bytes).await.unwrap();
    }
    s
}

/// A complete HTTP/1.1 request for `acme`, keeping the connection open unless `close`.
fn full_request(close: bool) -> Vec<u8> {
    let connection = if close { "connection: close\r\n" } else { "" };
    format!(
        "POST {SHOP_API} HTTP/1.1\r\nhost: x\r\nx-tenant-id: acme\r\n{connection}content-length: 2\r\n\r\n{{}}"
    )
    .into_bytes()
}

/// Reads one HTTP/1.1 response head (up to the blank line) and returns it.
async fn read_head(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .expect("a response within 5 s")
            .unwrap();
        assert_eq!(
            n,
            1,
            "closed before a response: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.push(byte[0]);
    }
    String::from_utf8(got).unwrap()
}

#[tokio::test]
async fn a_silent_connection_is_closed_within_the_header_timeout() {
    let h = Harness::with(Setup {
        server: "header_read_timeout_ms = 300".into(),
        ..Setup::default()
    })
    .await;
    let started = Instant::now();
    let mut s = open(&h, b"").await;
    let answer = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
    let took = started.elapsed();
    assert!(answer.is_empty(), "{answer}");
    assert_took(took, Duration::from_millis(250));
}

/// Headers complete, `Content-Length: 100`, 2 bytes, then silence: a JSON 408 after the body
/// timeout, nothing sent upstream.
#[tokio::test]
async fn a_stalled_body_gets_a_json_408() {
    let h = Harness::with(Setup {
        server: "client_body_timeout_ms = 300\nrequest_timeout_ms = 5000".into(),
        ..Setup::default()
    })
    .await;
    let head = format!(
        "POST {SHOP_API} HTTP/1.1\r\nhost: x\r\nx-tenant-id: acme\r\ncontent-length: 100\r\n\r\n{{\""
    );
    let started = Instant::now();
    let mut s = open(&h, head.as_bytes()).await;
    let answer = read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
    let took = started.elapsed();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["code"], "deadline_exceeded", "{v}");
    assert_eq!(v["meta"]["source"], "gateway", "{v}");
    assert!(
        answer.contains("content-type: application/json"),
        "{answer}"
    );
    assert_took(took, Duration::from_millis(250));
    assert_eq!(h.mock.request_count(), 0);
}

/// A body that trickles in (a byte every 100 ms, never a 300 ms gap) is refused once the total
/// request time has passed.
#[tokio::test]
async fn a_trickling_body_hits_the_total_timeout() {
    let h = Harness::with(Setup {
        server: "client_body_timeout_ms = 300\nrequest_timeout_ms = 800".into(),
        ..Setup::default()
    })
    .await;
    let head = format!(
        "POST {SHOP_API} HTTP/1.1\r\nhost: x\r\nx-tenant-id: acme\r\ncontent-length: 100\r\n\r\n"
    );
    let started = Instant::now();
    let mut s = open(&h, head.as_bytes()).await;
    let (mut rd, mut wr) = s.split();
    let trickle = async {
        // The slow client itself: it paces its writes (this is the behaviour under test).
        for _ in 0..50 {
            if wr.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), rd.read_to_end(&mut buf));
    let (read, ()) = tokio::join!(read, trickle);
    read.expect("closed within 5 s").ok();
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_took(took, Duration::from_millis(700));
}

/// An HTTP/2 connection that sends its preface and SETTINGS and then nothing is closed (GOAWAY,
/// then EOF) within the header timeout.
#[tokio::test]
async fn an_h2_connection_sending_only_the_preface_is_closed() {
    let h = Harness::with(Setup {
        server: "header_read_timeout_ms = 300".into(),
        ..Setup::default()
    })
    .await;
    let started = Instant::now();
    let mut s = open(
        &h,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    )
    .await;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .expect("closed within 5 s")
        .ok();
    let took = started.elapsed();
    assert_took(took, Duration::from_millis(250));
    // The server's frames: SETTINGS (type 4) first, and a GOAWAY (type 7) before the close.
    assert!(buf.len() >= 9 && buf[3] == 4, "{buf:?}");
    let mut at = 0;
    let mut types = Vec::new();
    while at + 9 <= buf.len() {
        let len =
            usize::from(buf[at]) << 16 | usize::from(buf[at + 1]) << 8 | usize::from(buf[at + 2]);
        types.push(buf[at + 3]);
        at += 9 + len;
    }
    assert!(types.contains(&7), "a GOAWAY among the frames {types:?}");
}

/// A keep-alive connection with no new request is closed after the keep-alive timeout.
#[tokio::test]
async fn an_idle_keepalive_connection_is_closed() {
    let h = Harness::with(Setup {
        server: "keepalive_timeout_ms = 300\nheader_read_timeout_ms = 10000".into(),
        ..Setup::default()
    })
    .await;
    let mut s = open(&h, &full_request(false)).await;
    assert!(read_head(&mut s).await.starts_with("HTTP/1.1 200"));
    let served = Instant::now();
    read_to_close(&mut s, Duration::from_secs(5)).await.unwrap();
    let took = served.elapsed();
    assert_took(took, Duration::from_millis(250));
}

/// With `max_connections = 3` held by idle sockets (two silent since accept, one kept alive
/// after a request), new callers are still served at once: the longest-idle one is closed to
/// make room, and nobody waits for a timeout (all are a minute here).
#[tokio::test]
async fn idle_connections_cannot_lock_callers_out() {
    let h = Harness::with(Setup {
        server: "max_connections = 3\nheader_read_timeout_ms = 60000\nkeepalive_timeout_ms = 60000"
            .into(),
        ..Setup::default()
    })
    .await;
    let mut kept = open(&h, &full_request(false)).await;
    assert!(read_head(&mut kept).await.starts_with("HTTP/1.1 200"));
    let mut silent = vec![open(&h, b"").await, open(&h, b"").await];
    for round in 0..4 {
        let started = Instant::now();
        let mut caller = open(&h, &full_request(true)).await;
        let answer = read_to_close(&mut caller, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("caller {round}: {e}"));
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "caller {round}: {answer}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        // Take the idle seat back for the next round.
        silent.push(open(&h, b"").await);
    }
    // The oldest idle connection (the kept-alive one) was among those closed.
    let closed = read_to_close(&mut kept, Duration::from_secs(5)).await;
    assert!(closed.is_ok(), "the longest-idle connection was closed");
}
