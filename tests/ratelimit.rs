//! Rate limits as callers see them: 429 with Retry-After and the RateLimit headers, per-credential
//! buckets, cache hits that cost nothing, queue and shadow modes, and upstream quota feedback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Harness, Reply, SHOP_API, Setup};
use etelecom_gateway::mock::Behaviour;

/// Not cached, so every call is an upstream call.
const CALL_LOGS: &str = "/v1/shop.Etelecom/ListCallLogs";
const PARTNER_CALL_LOGS: &str = "/v1/partner.Etelecom/ListCallLogs";

async fn limited(rate_limit: &str) -> Harness {
    Harness::with(Setup {
        rate_limit: rate_limit.into(),
        ..Setup::default()
    })
    .await
}

fn assert_limited(r: &Reply) {
    r.assert_gateway_error(429, "resource_exhausted");
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "{retry}");
    assert!(r.headers.contains_key("ratelimit-policy"));
    assert!(r.headers.contains_key("ratelimit"));
}

#[tokio::test]
async fn burst_then_429_with_the_three_headers() {
    let h = limited("requests_per_second = 1\nburst = 3").await;
    for i in 0..3 {
        let r = h.call(CALL_LOGS, Some("acme"), "{}").await;
        assert_eq!(r.status, 200, "call {i}");
        assert_eq!(r.headers["ratelimit-policy"], "\"default\";q=3;w=3");
        let state = r.headers["ratelimit"].to_str().unwrap();
        assert!(
            state.starts_with(&format!("\"default\";r={}", 2 - i)),
            "{state}"
        );
    }
    let r = h.call(CALL_LOGS, Some("acme"), "{}").await;
    assert_limited(&r);
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(h.mock.request_count(), 3);
}

#[tokio::test]
async fn one_tenant_exhausted_leaves_others_untouched() {
    let h = limited("requests_per_second = 1\nburst = 1").await;
    assert_eq!(h.call(CALL_LOGS, Some("acme"), "{}").await.status, 200);
    assert_limited(&h.call(CALL_LOGS, Some("acme"), "{}").await);
    assert_eq!(h.call(CALL_LOGS, Some("globex"), "{}").await.status, 200);
}

#[tokio::test]
async fn shop_and_partner_issued_keys_are_separate_buckets() {
    let h = limited("requests_per_second = 1\nburst = 1").await;
    assert_eq!(h.call(CALL_LOGS, Some("acme"), "{}").await.status, 200);
    assert_limited(&h.call(CALL_LOGS, Some("acme"), "{}").await);
    assert_eq!(
        h.call(PARTNER_CALL_LOGS, Some("acme"), "{}").await.status,
        200
    );
    assert_limited(&h.call(PARTNER_CALL_LOGS, Some("acme"), "{}").await);
}

#[tokio::test]
async fn tenant_and_partner_overrides_apply() {
    let h = Harness::with(Setup {
        rate_limit: "requests_per_second = 1\nburst = 1".into(),
        acme: "rate_limit = { requests_per_second = 1, burst = 3 }".into(),
        ..Setup::default()
    })
    .await;
    for _ in 0..3 {
        let r = h.call(CALL_LOGS, Some("acme"), "{}").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["ratelimit-policy"], "\"tenant\";q=3;w=3");
    }
    assert_limited(&h.call(CALL_LOGS, Some("acme"), "{}").await);
    assert_eq!(h.call(CALL_LOGS, Some("globex"), "{}").await.status, 200);
    assert_limited(&h.call(CALL_LOGS, Some("globex"), "{}").await);
}

#[tokio::test]
async fn partner_key_is_one_shared_bucket() {
    let h = limited("requests_per_second = 1\nburst = 2").await;
    let path = "/v1/partner.Etelecom/GetPartnerTenantList";
    assert_eq!(h.call(path, None, "{}").await.status, 200);
    assert_eq!(h.call(path, Some("acme"), "{}").await.status, 200);
    assert_limited(&h.call(path, Some("globex"), "{}").await);
}

#[tokio::test]
async fn cache_hits_are_not_limited() {
    let h = limited("requests_per_second = 1\nburst = 1").await;
    let body = r#"{"extension_number":"101"}"#;
    assert_eq!(h.call(SHOP_API, Some("acme"), body).await.status, 200);
    for _ in 0..10 {
        let r = h.call(SHOP_API, Some("acme"), body).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.headers["x-cache"], "HIT");
    }
    assert_eq!(h.mock.request_count(), 1);
    // The one permit is spent: the next upstream call is refused.
    assert_limited(&h.call(CALL_LOGS, Some("acme"), "{}").await);
}

#[tokio::test]
async fn queue_mode_waits_then_succeeds() {
    let h =
        limited("requests_per_second = 10\nburst = 1\nmode = \"queue\"\nmax_wait_ms = 1000").await;
    assert_eq!(h.call(CALL_LOGS, Some("acme"), "{}").await.status, 200);
    let started = Instant::now();
    let r = h.call(CALL_LOGS, Some("acme"), "{}").await;
    assert_eq!(r.status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(50),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(h.mock.request_count(), 2);
}

#[tokio::test]
async fn queue_mode_rejects_when_the_wait_would_be_too_long() {
    let h =
        limited("requests_per_second = 1\nburst = 1\nmode = \"queue\"\nmax_wait_ms = 100").await;
    assert_eq!(h.call(CALL_LOGS, Some("acme"), "{}").await.status, 200);
    let started = Instant::now();
    assert_limited(&h.call(CALL_LOGS, Some("acme"), "{}").await);
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[tokio::test]
async fn shadow_mode_rejects_nothing() {
    let h = limited("requests_per_second = 1\nburst = 1\nenforce = false").await;
    for _ in 0..5 {
        assert_eq!(h.call(CALL_LOGS, Some("acme"), "{}").await.status, 200);
    }
    assert_eq!(h.mock.request_count(), 5);
    let m = h.metrics().await;
    let outcome = |o: &str| {
        common::sample(
            &m,
            "etelecom_gateway_ratelimit_decisions_total",
            &[("tenant", "acme"), ("outcome", o)],
        )
    };
    assert_eq!(outcome("allowed"), Some(1.0));
    assert_eq!(outcome("shadow_limited"), Some(4.0));
}

#[tokio::test]
async fn upstream_429_pauses_the_credential_for_its_retry_after() {
    let h = Harness::start().await;
    let r = h
        .call_mock(CALL_LOGS, Some("acme"), "status=429;retry_after=2")
        .await;
    assert_eq!(r.status, 429);
    assert!(
        r.json().get("meta").is_none(),
        "eTelecom's own answer passes through"
    );
    let r = h.call(CALL_LOGS, Some("acme"), "{}").await;
    assert_limited(&r);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry <= 2, "{retry}");
    assert_eq!(h.mock.request_count(), 1, "no call burnt while paused");
    // Other credentials are unaffected.
    assert_eq!(
        h.call(PARTNER_CALL_LOGS, Some("acme"), "{}").await.status,
        200
    );
    assert_eq!(h.call(CALL_LOGS, Some("globex"), "{}").await.status, 200);
}

#[tokio::test]
async fn upstream_403_resource_exhausted_pauses_for_the_configured_backoff() {
    let h = limited("requests_per_second = 100\nburst = 100\nupstream_backoff_secs = 30").await;
    h.mock.set_behaviour(Behaviour::Status {
        status: 403,
        body: r#"{"code":"resource_exhausted","msg":"quota"}"#.into(),
        retry_after: None,
    });
    assert_eq!(h.call(CALL_LOGS, Some("acme"), "{}").await.status, 403);
    h.mock.set_behaviour(Behaviour::Normal);
    let r = h.call(CALL_LOGS, Some("acme"), "{}").await;
    assert_limited(&r);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((29..=30).contains(&retry), "{retry}");
    // A plain permission_denied is not a quota signal.
    h.mock.set_behaviour(Behaviour::Status {
        status: 403,
        body: r#"{"code":"permission_denied","msg":"no"}"#.into(),
        retry_after: None,
    });
    assert_eq!(h.call(CALL_LOGS, Some("globex"), "{}").await.status, 403);
    h.mock.set_behaviour(Behaviour::Normal);
    assert_eq!(h.call(CALL_LOGS, Some("globex"), "{}").await.status, 200);
}
