//! The pool against a minimal HTTP/1.1 origin that counts its connections: reuse, a peer that
//! closes idle connections, no idle pool, expiry, and concurrent callers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// Answers every request `{"n":<connection number>}`; with `close_after`, closes the connection
/// (without saying so) after each answer.
struct Origin {
    authority: Authority,
    accepted: Arc<AtomicUsize>,
    /// Signalled each time the origin closed a connection.
    closed: tokio::sync::mpsc::UnboundedReceiver<()>,
}

async fn origin(close_after: bool) -> Origin {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = Authority::try_from(listener.local_addr().unwrap().to_string()).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (closed_tx, closed) = tokio::sync::mpsc::unbounded_channel();
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let Some(end) = read_request(&mut tcp, &mut buf).await else {
                        break;
                    };
                    buf.drain(..end);
                    let body = format!("{{\"n\":{n}}}");
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n", body.len());
                    if tcp
                        .write_all(format!("{head}{body}").as_bytes())
                        .await
                        .is_err()
                    {
                        break;
                    }
                    if close_after {
                        break;
                    }
                }
                drop(tcp);
                let _ = closed_tx.send(());
            });
        }
    });
    Origin {
        authority,
        accepted,
        closed,
    }
}

/// Reads one whole request (head and `content-length` body) into `buf`; returns its length.
async fn read_request(tcp: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if buf.len() >= head_end + 4 + len {
                return Some(head_end + 4 + len);
            }
        }
        let mut chunk = [0u8; 1024];
        match tcp.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn pool(o: &Origin, max_idle: usize, idle_timeout: Duration) -> Arc<Pool> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("tls")
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    let p = Pool::new(
        connector,
        Scheme::HTTP,
        o.authority.clone(),
        max_idle,
        idle_timeout,
    );
    Arc::new(p.expect("pool"))
}

/// One call; returns the number of the origin's connection that answered it.
async fn call(p: &Pool) -> u64 {
    let (head, body) = p
        .exchange(HeaderMap::new(), Bytes::from_static(b"{}"), "/v1/x", 1024)
        .await
        .expect("exchange");
    assert_eq!(head.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    v["n"].as_u64().unwrap()
}

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn sequential_calls_reuse_one_connection() {
    let o = origin(false).await;
    let p = pool(&o, 4, MINUTE);
    for _ in 0..5 {
        assert_eq!(call(&p).await, 1);
    }
    assert_eq!(o.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(p.idle_len(), 1);
}

#[tokio::test]
async fn a_connection_the_origin_closed_is_not_reused() {
    let mut o = origin(true).await;
    let p = pool(&o, 4, MINUTE);
    assert_eq!(call(&p).await, 1);
    o.closed.recv().await.unwrap();
    // Once the closing is seen, housekeeping drops the connection; a call opens a new one.
    tokio::time::timeout(Duration::from_secs(5), async {
        while p.idle_len() > 0 {
            p.close_expired();
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the closed connection is noticed");
    assert_eq!(call(&p).await, 2);
}

#[tokio::test]
async fn without_an_idle_pool_every_call_connects() {
    let o = origin(false).await;
    let p = pool(&o, 0, MINUTE);
    assert_eq!(call(&p).await, 1);
    assert_eq!(call(&p).await, 2);
    assert_eq!(p.idle_len(), 0);
}

#[tokio::test]
async fn expired_idle_connections_are_not_reused() {
    let o = origin(false).await;
    let p = pool(&o, 4, Duration::ZERO);
    assert_eq!(call(&p).await, 1);
    assert_eq!(call(&p).await, 2);
    p.close_expired();
    assert_eq!(p.idle_len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_share_at_most_max_idle_connections() {
    let o = origin(false).await;
    let p = pool(&o, 3, MINUTE);
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let p = Arc::clone(&p);
            tokio::spawn(async move { call(&p).await })
        })
        .collect();
    for c in calls {
        c.await.unwrap();
    }
    let opened = o.accepted.load(Ordering::SeqCst);
    assert!((1..=16).contains(&opened), "{opened}");
    assert!(p.idle_len() <= 3, "{}", p.idle_len());
    // Later calls run on the idle connections: nothing new is opened.
    for _ in 0..8 {
        call(&p).await;
    }
    assert_eq!(o.accepted.load(Ordering::SeqCst), opened);
}

#[test]
fn the_exchange_future_stays_small() {
    // Moving a future copies all of it: the HTTP/1.1 connection (kilobytes with TLS) is boxed
    // and connecting is boxed, so a call's future stays about the size of its request.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let o = rt.block_on(origin(false));
    let p = rt.block_on(async { pool(&o, 1, MINUTE) });
    let fut = p.exchange(HeaderMap::new(), Bytes::new(), "/", 1);
    assert!(
        std::mem::size_of_val(&fut) < 2048,
        "{}",
        std::mem::size_of_val(&fut)
    );
}
