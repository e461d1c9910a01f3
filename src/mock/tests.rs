//! Tests of the mock eTelecom over real loopback sockets with real clients
//! (hyper-util's legacy client; tokio-rustls + hyper for TLS/ALPN).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, Method, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};

use super::*;

mod behaviour;
mod bodies;
mod sms;
mod transport;

/// Upper bound for anything that must not hang in a test.
const LIMIT: Duration = Duration::from_secs(10);

type HttpClient = Client<HttpConnector, Full<Bytes>>;

async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test step timed out")
}

async fn start(tls: bool) -> MockUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let opts = MockOptions {
        accounts: MockAccounts::demo(),
        tls,
    };
    MockUpstream::start(listener, opts)
        .await
        .expect("start mock")
}

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A POST with, if given, the bearer key (and no Content-Type).
fn bare(mock: &MockUpstream, path: &str, key: Option<&str>) -> http::request::Builder {
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(format!("{}{path}", mock.base_url()));
    if let Some(k) = key {
        b = b.header(AUTHORIZATION, format!("Bearer {k}"));
    }
    b
}

/// A POST with `Content-Type: application/json` and, if given, the bearer key.
fn post(mock: &MockUpstream, path: &str, key: Option<&str>) -> http::request::Builder {
    bare(mock, path, key).header(CONTENT_TYPE, "application/json")
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    json: Value,
}

async fn send(client: &HttpClient, req: http::request::Builder, body: &str) -> Answer {
    let req = req
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    let resp = within(client.request(req)).await.expect("response");
    let (parts, body) = resp.into_parts();
    let bytes = within(body.collect()).await.expect("body").to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status: parts.status,
        headers: parts.headers,
        json,
    }
}

async fn call(
    client: &HttpClient,
    mock: &MockUpstream,
    path: &str,
    key: &str,
    body: &str,
) -> Answer {
    send(client, post(mock, path, Some(key)), body).await
}

const SHOP_PATH: &str = "/v1/shop.Etelecom/GetExtensions";
const PARTNER_LEVEL_PATH: &str = "/v1/partner.Etelecom/GetPartnerTenantList";
const PARTNER_SHOP_PATH: &str = "/v1/partner.Etelecom/GetExtensionInfo";

#[tokio::test]
async fn auth_matrix() {
    let mock = start(false).await;
    let c = client();
    let acme = || {
        Some(MockKeyType::ShopApiKey {
            shop: "1001".into(),
        })
    };
    let acme_sk = || {
        Some(MockKeyType::ShopKey {
            shop: "1001".into(),
        })
    };
    let globex = || {
        Some(MockKeyType::ShopApiKey {
            shop: "1002".into(),
        })
    };
    // (authorization header, path, expected status, expected accepted key)
    let cases: Vec<(Option<String>, &str, u16, Option<MockKeyType>)> = vec![
        (
            Some(format!("Bearer {DEMO_ACME_API_KEY}")),
            SHOP_PATH,
            200,
            acme(),
        ),
        (
            Some(format!("Bearer {DEMO_ACME_API_KEY}")),
            PARTNER_LEVEL_PATH,
            401,
            None,
        ),
        (
            Some(format!("Bearer {DEMO_ACME_API_KEY}")),
            PARTNER_SHOP_PATH,
            401,
            None,
        ),
        (
            Some(format!("Bearer {DEMO_GLOBEX_API_KEY}")),
            SHOP_PATH,
            200,
            globex(),
        ),
        (
            Some(format!("Bearer {DEMO_ACME_SHOP_KEY}")),
            SHOP_PATH,
            401,
            None,
        ),
        (
            Some(format!("Bearer {DEMO_ACME_SHOP_KEY}")),
            PARTNER_LEVEL_PATH,
            401,
            None,
        ),
        (
            Some(format!("Bearer {DEMO_ACME_SHOP_KEY}")),
            PARTNER_SHOP_PATH,
            200,
            acme_sk(),
        ),
        (
            Some(format!("Bearer {DEMO_PARTNER_KEY}")),
            SHOP_PATH,
            401,
            None,
        ),
        (
            Some(format!("Bearer {DEMO_PARTNER_KEY}")),
            PARTNER_LEVEL_PATH,
            200,
            Some(MockKeyType::Partner),
        ),
        (
            Some(format!("Bearer {DEMO_PARTNER_KEY}")),
            "/v1/partner.Misc/CurrentAccount",
            200,
            Some(MockKeyType::Partner),
        ),
        (
            Some(format!("Bearer {DEMO_PARTNER_KEY}")),
            PARTNER_SHOP_PATH,
            401,
            None,
        ),
        (
            Some("Bearer 1001:not-a-known-key".into()),
            SHOP_PATH,
            401,
            None,
        ),
        (Some(DEMO_ACME_API_KEY.into()), SHOP_PATH, 401, None),
        (
            Some(format!("Basic {DEMO_ACME_API_KEY}")),
            SHOP_PATH,
            401,
            None,
        ),
        (None, SHOP_PATH, 401, None),
        (None, PARTNER_LEVEL_PATH, 401, None),
        (None, PARTNER_SHOP_PATH, 401, None),
    ];
    for (i, (authz, path, want, key)) in cases.into_iter().enumerate() {
        let mut req = post(&mock, path, None);
        if let Some(a) = &authz {
            req = req.header(AUTHORIZATION, a);
        }
        let a = send(&c, req, "{}").await;
        assert_eq!(a.status.as_u16(), want, "case {i}: {authz:?} on {path}");
        assert_eq!(a.headers[CONTENT_TYPE], "application/json", "case {i}");
        if want == 401 {
            assert_eq!(a.json["code"], "unauthenticated", "case {i}");
            assert!(
                a.json["msg"].as_str().is_some_and(|m| !m.is_empty()),
                "case {i}"
            );
        }
        let rec = mock.received();
        assert_eq!(rec.len(), i + 1);
        assert_eq!(rec[i].accepted_key, key, "case {i}");
    }
    mock.shutdown().await;
}

#[tokio::test]
async fn routing_content_type_and_body_errors() {
    let mock = start(false).await;
    let c = client();
    let k = Some(DEMO_ACME_API_KEY);
    let path = "/v1/shop.Misc/CurrentAccount";

    let a = send(&c, bare(&mock, path, k), "{}").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(
        a.json,
        json!({"code": "bad_route", "msg": "unexpected Content-Type: \"\""})
    );

    let text = bare(&mock, path, k).header(CONTENT_TYPE, "text/plain");
    let a = send(&c, text, "{}").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json["msg"], "unexpected Content-Type: \"text/plain\"");

    let charset = bare(&mock, path, k).header(CONTENT_TYPE, "application/json; charset=utf-8");
    assert_eq!(send(&c, charset, "{}").await.status, StatusCode::OK);

    let get = post(&mock, path, k).method(Method::GET);
    let a = send(&c, get, "").await;
    assert_eq!(
        (a.status, a.json["code"].clone()),
        (StatusCode::NOT_FOUND, json!("bad_route"))
    );

    for bad in [
        "/v1/shop.ETelecom/GetExtensions",
        "/v1/shop.Misc",
        "/healthz",
        "/v2/shop.Misc/CurrentAccount",
    ] {
        let a = send(&c, post(&mock, bad, k), "{}").await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{bad}");
        assert_eq!(a.json["code"], "bad_route", "{bad}");
    }

    for body in ["", "[1]", "\"x\"", "{", "null"] {
        let a = send(&c, post(&mock, path, k), body).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body:?}");
        assert_eq!(a.json["code"], "invalid_argument", "{body:?}");
    }
    // Unknown but well-formed methods answer {}.
    let a = call(
        &c,
        &mock,
        "/v1/shop.Zalo/SendZNS",
        DEMO_ACME_API_KEY,
        "{\"oa_id\":\"1\"}",
    )
    .await;
    assert_eq!((a.status, a.json), (StatusCode::OK, json!({})));
    mock.shutdown().await;
}

#[tokio::test]
async fn records_requests_and_control_is_not_counted() {
    let mock = start(false).await;
    let c = client();
    let req = post(&mock, "/v1/partner.Zalo/ListOA", Some(DEMO_GLOBEX_SHOP_KEY))
        .header("x-request-id", "abc-123");
    let a = send(&c, req, r#"{"paging":{"limit":5}}"#).await;
    assert_eq!(a.status, StatusCode::OK);

    let rec = mock.received();
    assert_eq!(rec.len(), 1);
    let r = &rec[0];
    assert_eq!(r.version, Version::HTTP_11);
    assert_eq!(r.method, Method::POST);
    assert_eq!(r.path, "/v1/partner.Zalo/ListOA");
    assert_eq!(r.headers["x-request-id"], "abc-123");
    assert_eq!(
        r.headers[AUTHORIZATION],
        format!("Bearer {DEMO_GLOBEX_SHOP_KEY}").as_str()
    );
    assert_eq!(r.body, Bytes::from_static(br#"{"paging":{"limit":5}}"#));
    assert_eq!(
        r.accepted_key,
        Some(MockKeyType::ShopKey {
            shop: "1002".into()
        })
    );

    let count = Request::builder().uri(format!("{}/__mock/requests", mock.base_url()));
    assert_eq!(send(&c, count, "").await.json, json!({"count": 1}));
    assert_eq!(mock.request_count(), 1);
    within(mock.wait_for_requests(1)).await;

    let clear = Request::builder()
        .method(Method::DELETE)
        .uri(format!("{}/__mock/requests", mock.base_url()));
    assert_eq!(send(&c, clear, "").await.json, json!({"count": 0}));
    assert_eq!(mock.request_count(), 0);
    mock.shutdown().await;
}

fn days_from_now(rfc3339: &str) -> i64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339");
    (t - time::OffsetDateTime::now_utc()).whole_hours() / 24
}

#[tokio::test]
async fn recording_keeps_the_most_recent_requests_and_counts_them_all() {
    let mock = start(false).await;
    let received = |i: usize| Received {
        version: Version::HTTP_11,
        method: Method::POST,
        path: format!("/v1/shop.Misc/N{i}"),
        uri: "/".parse().expect("uri"),
        headers: HeaderMap::new(),
        body: Bytes::new(),
        accepted_key: None,
    };
    for i in 0..RECORD_LIMIT + 5 {
        mock.shared.record(received(i));
    }
    assert_eq!(mock.request_count(), RECORD_LIMIT + 5);
    let kept = mock.received();
    assert_eq!(kept.len(), RECORD_LIMIT);
    assert_eq!(kept[0].path, "/v1/shop.Misc/N5");
    mock.clear_received();
    assert_eq!((mock.request_count(), mock.received().len()), (0, 0));
    mock.shutdown().await;
}
