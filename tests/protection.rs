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
