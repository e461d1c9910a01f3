//! HTTP/2 over plain TCP with prior knowledge (h2c), as internal services speak it: routed and
//! checked exactly like HTTP/1.1, with hyper's own HTTP/2 client and with `curl
//! --http2-prior-knowledge` (Debian's `curl`; missing: SKIPPED, or a failure when `CI` is set).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::proc::run_bounded;
use common::{Harness, PARTNER_LEVEL, PARTNER_SHOP, SHOP_API, external_tool, post, post_with};
use etelecom_gateway::mock::MockKeyType;
use http::Version;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

#[tokio::test]
async fn hyper_h2c_is_routed_and_checked_like_http1() {
    let h = Harness::start().await;
    let c = h2c_client();
    let send = |req| common::send(&c, req);

    // Each key class, as over HTTP/1.1.
    let r = send(post(h.addr, SHOP_API, Some("acme"), "{}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.x_cache(), "MISS");
    let r = send(post(h.addr, PARTNER_SHOP, Some("acme"), "{}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(post(h.addr, PARTNER_LEVEL, None, "{}")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let keys: Vec<_> = h
        .mock
        .received()
        .into_iter()
        .map(|r| r.accepted_key)
        .collect();
    assert_eq!(
        keys,
        [
            Some(MockKeyType::ShopApiKey {
                shop: "1001".into()
            }),
            Some(MockKeyType::ShopKey {
                shop: "1001".into()
            }),
            Some(MockKeyType::Partner),
        ]
    );
    // The same read again is a hit.
    let r = send(post(h.addr, SHOP_API, Some("acme"), "{}")).await;
    assert_eq!(r.x_cache(), "HIT");

    // The same checks and the same error answers.
    send(post(h.addr, SHOP_API, Some("nobody"), "{}"))
        .await
        .assert_gateway_error(403, "permission_denied");
    send(post(h.addr, "/v1/admin.X/Y", Some("acme"), "{}"))
        .await
        .assert_gateway_error(404, "bad_route");
    send(post(h.addr, SHOP_API, Some("acme"), "[1]"))
        .await
        .assert_gateway_error(400, "invalid_argument");
    send(post_with(
        h.addr,
        SHOP_API,
        Some("acme"),
        "{}",
        &[("x-tenant-id", "globex")],
    ))
    .await
    .assert_gateway_error(400, "invalid_argument");
    let r = send(post_with(
        h.addr,
        SHOP_API,
        Some("acme"),
        "{}",
        &[("host", "elsewhere.example")],
    ))
    .await;
    r.assert_gateway_error(400, "invalid_argument");
    assert!(r.json()["msg"].as_str().unwrap().contains(":authority"));
    assert_eq!(
        h.mock.request_count(),
        3,
        "only the three good calls went upstream"
    );
}

#[tokio::test]
async fn curl_http2_prior_knowledge_works() {
    let test = "curl_http2_prior_knowledge_works";
    let Some(curl) = external_tool("curl", "curl", test) else {
        return;
    };
    let h = Harness::start().await;
    let url = h.url(SHOP_API);
    let run = move |tenant: &str| {
        let mut cmd = Command::new(&curl);
        cmd.args(["-sS", "--http2-prior-knowledge", "-X", "POST", &url])
            .args(["-H", &format!("x-tenant-id: {tenant}")])
            .args(["-H", "content-type: application/json"])
            .args(["-d", r#"{"extension_number":"101"}"#])
            .args(["-w", "\n%{http_version} %{http_code}"]);
        cmd
    };
    let out = tokio::task::spawn_blocking(move || {
        let ok = run_bounded(run("acme"), b"", Duration::from_secs(20));
        let refused = run_bounded(run("nobody"), b"", Duration::from_secs(20));
        (ok, refused)
    })
    .await
    .unwrap();
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        )
    };
    let (ok, refused) = (text(&out.0), text(&out.1));
    assert!(out.0.status.success(), "{ok} {:?}", out.0);
    assert!(ok.ends_with("\n2 200"), "{ok}");
    assert!(ok.contains("\"extension_number\":\"101\""), "{ok}");
    assert!(refused.ends_with("\n2 403"), "{refused}");
    assert!(refused.contains("\"source\":\"gateway\""), "{refused}");
    let got = h.mock.received();
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].version,
        Version::HTTP_11,
        "upstream is the gateway's own choice"
    );
    assert_eq!(
        got[0].headers["authorization"],
        format!("Bearer {}", h.accounts.shops[0].api_key)
    );
}
