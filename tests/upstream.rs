//! The upstream side: TLS through a test CA, HTTP/2 by ALPN, and every way eTelecom can fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Harness, SHOP_API, Setup};
use etelecom_gateway::mock::Behaviour;

#[tokio::test]
async fn tls_upstream_through_a_test_ca_negotiates_http2() {
    let h = Harness::with(Setup {
        tls: true,
        ..Setup::default()
    })
    .await;
    assert!(h.mock.base_url().starts_with("https://"));
    let r = h.call(SHOP_API, Some("acme"), "{}").await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let got = &h.mock.received()[0];
    assert_eq!(got.version, http::Version::HTTP_2);
    assert_eq!(
        got.headers["authorization"],
        format!("Bearer {}", h.accounts.shops[0].api_key)
    );
}

#[tokio::test]
async fn untrusted_upstream_certificate_is_a_502() {
    // TLS mock, but the gateway is not given its CA.
    let h = Harness::with(Setup {
        tls: true,
        ..Setup::default()
    })
    .await;
    std::fs::remove_file(h.dir.path().join("ca.pem")).unwrap();
    let text = common::config_text(&Setup::default(), &h.mock.base_url());
    let addr = common::spawn_gateway(&text, h.dir.path()).await;
    let r = h
        .send(common::post(addr, SHOP_API, Some("acme"), "{}"))
        .await;
    r.assert_gateway_error(502, "unavailable");
    assert!(r.json()["msg"].as_str().unwrap().contains("TLS"));
    assert_eq!(h.mock.request_count(), 0);
}

#[tokio::test]
async fn upstream_down_is_a_502_without_the_address() {
    // A port that was just closed: connection refused.
    let closed = common::closed_addr();
    let h = Harness::with(Setup {
        base_url: Some(format!("http://{closed}")),
        ..Setup::default()
    })
    .await;
    let r = h.call(SHOP_API, Some("acme"), "{}").await;
    r.assert_gateway_error(502, "unavailable");
    let text = String::from_utf8_lossy(&r.body).into_owned();
    assert!(!text.contains(&closed.port().to_string()), "{text}");
    assert!(!text.contains("127.0.0.1"), "{text}");
}

#[tokio::test]
async fn upstream_hang_is_a_504_within_the_timeout() {
    let h = Harness::with(Setup {
        upstream: "timeout_ms = 300".into(),
        ..Setup::default()
    })
    .await;
    h.mock.set_behaviour(Behaviour::Hang);
    let started = Instant::now();
    let r = h.call(SHOP_API, Some("acme"), "{}").await;
    let took = started.elapsed();
    r.assert_gateway_error(504, "deadline_exceeded");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
}

#[tokio::test]
async fn slow_but_in_time_is_fine() {
    let h = Harness::with(Setup {
        upstream: "timeout_ms = 2000".into(),
        ..Setup::default()
    })
    .await;
    let r = h.call_mock(SHOP_API, Some("acme"), "delay=100").await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn upstream_errors_pass_through_unchanged() {
    let h = Harness::start().await;
    // A key the mock does not know: 401 from "eTelecom", in its own shape.
    let r = h.call_mock(SHOP_API, Some("acme"), "status=401").await;
    assert_eq!(r.status, 401);
    let v = r.json();
    assert!(v.get("meta").and_then(|m| m.get("source")).is_none(), "{v}");
    assert!(v["code"].is_string());

    h.mock.set_behaviour(Behaviour::Status {
        status: 503,
        body: r#"{"code":"unavailable","msg":"maintenance"}"#.into(),
        retry_after: None,
    });
    let r = h.call(SHOP_API, Some("acme"), "{}").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["msg"], "maintenance");
}

#[tokio::test]
async fn real_401_for_a_wrong_key_passes_through() {
    let h = Harness::start().await;
    // Give acme's api_key the value of its shop_key: eTelecom refuses it on shop paths.
    std::fs::write(
        h.dir.path().join("acme.api"),
        format!("{}\n", h.accounts.shops[0].shop_key),
    )
    .unwrap();
    let text = common::config_text(&Setup::default(), &h.mock.base_url());
    let addr = common::spawn_gateway(&text, h.dir.path()).await;
    let r = h
        .send(common::post(addr, SHOP_API, Some("acme"), "{}"))
        .await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["code"], "unauthenticated");
}

#[tokio::test]
async fn connection_reset_is_a_502() {
    let h = Harness::start().await;
    let r = h.call_mock(SHOP_API, Some("acme"), "reset").await;
    r.assert_gateway_error(502, "unavailable");
}

#[tokio::test]
async fn statuses_outside_2xx_to_5xx_are_a_502_protocol() {
    let h = Harness::start().await;
    for status in ["101", "999", "600"] {
        let r = h
            .call_mock(SHOP_API, Some("acme"), &format!("status={status}"))
            .await;
        r.assert_gateway_error(502, "unavailable");
        assert_eq!(
            r.json()["msg"],
            "eTelecom answered with an invalid HTTP response",
            "{status}"
        );
    }
    assert_eq!(h.mock.request_count(), 3, "each reached the mock");
    let m = h.metrics().await;
    assert_eq!(
        common::sample(
            &m,
            "etelecom_gateway_upstream_errors_total",
            &[("kind", "protocol")]
        ),
        Some(3.0),
        "{m}"
    );
}

/// eTelecom quoting the key it was sent (raw, nested, as an object key, JSON-escaped): the caller
/// gets the answer's status and shape with every key value replaced, and a matching length.
#[tokio::test]
async fn relayed_errors_never_carry_the_key() {
    let h = Harness::start().await;
    let cases = [
        (SHOP_API, Some("acme"), h.accounts.shops[0].api_key.clone()),
        (
            common::PARTNER_SHOP,
            Some("acme"),
            h.accounts.shops[0].shop_key.clone(),
        ),
        (common::PARTNER_LEVEL, None, h.accounts.partner_key.clone()),
    ];
    for (path, tenant, key) in cases {
        let r = h.call_mock(path, tenant, "echo_auth").await;
        assert_eq!(r.status, 401, "{path}");
        let got = h.mock.received();
        let sent = got.last().unwrap();
        assert_eq!(sent.headers["authorization"], format!("Bearer {key}"));
        let text = r.text();
        let secret = key.split_once(':').unwrap().1;
        assert!(!text.contains(&key), "{path}: {text}");
        assert!(!text.contains(secret), "{path}: {text}");
        assert!(text.contains("[REDACTED]"), "{path}: {text}");
        let v = r.json();
        assert_eq!(v["code"], "unauthenticated", "{v}");
        assert_eq!(
            v["msg"],
            "invalid authorization \"Bearer [REDACTED]\": token [REDACTED] is not valid"
        );
        assert_eq!(v["escaped"], "echo [REDACTED]", "{v}");
        assert_eq!(
            r.headers["content-length"].to_str().unwrap(),
            r.body.len().to_string()
        );
    }
}
