//! The response cache as callers see it: X-Cache and Age, lifetimes bounded by `expires_at`,
//! tenant separation, canonical keys, single flight, invalidation, caller directives and
//! stale-if-error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Harness, SHOP_API, Setup};
use etelecom_gateway::mock::Behaviour;

const PARTNER_INFO: &str = "/v1/partner.Etelecom/GetExtensionInfo";
const EXTENSIONS: &str = "/v1/shop.Etelecom/GetExtensions";
const BODY: &str = r#"{"extension_number":"101"}"#;

fn rfc3339_in(secs: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

async fn with_cache(cache: &str) -> Harness {
    Harness::with(Setup {
        cache: cache.into(),
        ..Setup::default()
    })
    .await
}

#[tokio::test]
async fn miss_then_hit_with_age_and_one_upstream_call() {
    let h = Harness::start().await;
    let first = h.call(SHOP_API, Some("acme"), BODY).await;
    assert_eq!((first.status.as_u16(), first.x_cache()), (200, "MISS"));
    assert!(first.headers.get("age").is_none());
    let second = h.call(SHOP_API, Some("acme"), BODY).await;
    assert_eq!((second.status.as_u16(), second.x_cache()), (200, "HIT"));
    assert_eq!(second.headers["age"], "0");
    assert_eq!(second.headers["content-type"], "application/json");
    assert_eq!(second.body, first.body);
    assert!(second.headers.contains_key("x-request-id"));
    assert_eq!(h.mock.request_count(), 1);
}

#[tokio::test]
async fn writes_and_uncached_reads_carry_no_x_cache() {
    let h = Harness::start().await;
    let r = h
        .call("/v1/shop.Etelecom/ListCallLogs", Some("acme"), "{}")
        .await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, "<none>"));
    let r = h
        .call(
            "/v1/partner.Etelecom/UpdateHotlineForExtension",
            Some("acme"),
            "{}",
        )
        .await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, "<none>"));
}

#[tokio::test]
async fn entry_dies_at_expires_at_before_max_ttl() {
    let h = with_cache("max_ttl_secs = 300\nsafety_margin_secs = 1").await;
    h.mock.set_expires_at(Some(rfc3339_in(3)));
    let started = Instant::now();
    assert_eq!(h.call(SHOP_API, Some("acme"), BODY).await.x_cache(), "MISS");
    assert_eq!(h.call(SHOP_API, Some("acme"), BODY).await.x_cache(), "HIT");
    // Fresh until expires_at - 1 s (about 2 s from now): poll until the entry is gone.
    h.mock.set_expires_at(Some(rfc3339_in(3600)));
    loop {
        let r = h.call(SHOP_API, Some("acme"), BODY).await;
        if r.x_cache() == "MISS" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "entry outlived expires_at"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lived = started.elapsed();
    assert!(lived >= Duration::from_millis(1500), "{lived:?}");
    assert_eq!(h.mock.request_count(), 2);
}

#[tokio::test]
async fn zero_past_and_missing_expires_at_are_not_cached() {
    let h = Harness::start().await;
    for exp in [
        Some("0001-01-01T00:00:00Z".to_owned()),
        Some(rfc3339_in(-60)),
        None,
        Some("not a time".to_owned()),
    ] {
        h.mock.set_expires_at(exp.clone());
        let before = h.mock.request_count();
        for _ in 0..2 {
            let r = h.call(SHOP_API, Some("acme"), BODY).await;
            assert_eq!((r.status.as_u16(), r.x_cache()), (200, "MISS"), "{exp:?}");
        }
        assert_eq!(h.mock.request_count(), before + 2, "{exp:?}");
    }
}

#[tokio::test]
async fn list_entries_live_until_their_earliest_item() {
    let h = Harness::start().await;
    let r = h.call(EXTENSIONS, Some("acme"), "{}").await;
    assert_eq!(r.x_cache(), "MISS");
    assert!(!r.json()["extensions"].as_array().unwrap().is_empty());
    assert_eq!(
        h.call(EXTENSIONS, Some("acme"), "{}").await.x_cache(),
        "HIT"
    );
    h.mock.set_expires_at(Some("0001-01-01T00:00:00Z".into()));
    let r = h.call(EXTENSIONS, Some("globex"), "{}").await;
    assert_eq!(r.x_cache(), "MISS");
    assert_eq!(
        h.call(EXTENSIONS, Some("globex"), "{}").await.x_cache(),
        "MISS"
    );
}

#[tokio::test]
async fn errors_are_never_cached() {
    let h = Harness::start().await;
    for _ in 0..2 {
        let r = h
            .call_with(
                SHOP_API,
                Some("acme"),
                BODY,
                &[("x-mock-behaviour", "status=500")],
            )
            .await;
        assert_eq!((r.status.as_u16(), r.x_cache()), (500, "MISS"));
    }
    let r = h.call(SHOP_API, Some("acme"), BODY).await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, "MISS"));
    assert_eq!(h.mock.request_count(), 3);
}

#[tokio::test]
async fn tenants_never_share_entries() {
    let h = Harness::start().await;
    let acme = h.call(SHOP_API, Some("acme"), BODY).await;
    let globex = h.call(SHOP_API, Some("globex"), BODY).await;
    assert_eq!(globex.x_cache(), "MISS");
    assert_ne!(acme.json()["tenant_domain"], globex.json()["tenant_domain"]);
    assert_ne!(
        acme.json()["extension_password"],
        globex.json()["extension_password"]
    );
    let globex_again = h.call(SHOP_API, Some("globex"), BODY).await;
    assert_eq!(globex_again.x_cache(), "HIT");
    assert_eq!(globex_again.body, globex.body);
    // The shop path and the partner path of one tenant use different keys: separate entries.
    assert_eq!(
        h.call(PARTNER_INFO, Some("acme"), BODY).await.x_cache(),
        "MISS"
    );
}

#[tokio::test]
async fn key_order_and_whitespace_share_an_entry() {
    let h = Harness::start().await;
    let a = h
        .call(
            SHOP_API,
            Some("acme"),
            r#"{"extension_number":"101","email":"a@b.vn"}"#,
        )
        .await;
    assert_eq!(a.x_cache(), "MISS");
    let b = h
        .call(
            SHOP_API,
            Some("acme"),
            "{ \"email\" : \"a@b.vn\",\n  \"extension_number\": \"101\" }",
        )
        .await;
    assert_eq!(b.x_cache(), "HIT");
    let c = h
        .call(
            SHOP_API,
            Some("acme"),
            r#"{"extension_number":"102","email":"a@b.vn"}"#,
        )
        .await;
    assert_eq!(c.x_cache(), "MISS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_identical_misses_make_one_upstream_call() {
    let h = std::sync::Arc::new(Harness::start().await);
    h.mock
        .set_behaviour(Behaviour::Delay(Duration::from_millis(300)));
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let h = h.clone();
            tokio::spawn(async move { h.call(SHOP_API, Some("acme"), BODY).await })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.unwrap());
    }
    assert_eq!(h.mock.request_count(), 1);
    let misses = replies.iter().filter(|r| r.x_cache() == "MISS").count();
    assert_eq!(misses, 1);
    for r in &replies {
        assert_eq!(r.status, 200);
        assert_eq!(r.body, replies[0].body);
    }
}

#[tokio::test]
async fn a_write_invalidates_the_reads_it_names_for_that_tenant_only() {
    let h = Harness::start().await;
    for t in ["acme", "globex"] {
        h.call(SHOP_API, Some(t), BODY).await;
        assert_eq!(h.call(SHOP_API, Some(t), BODY).await.x_cache(), "HIT");
    }
    h.call(PARTNER_INFO, Some("acme"), BODY).await;
    let w = h
        .call(
            "/v1/partner.Etelecom/UpdateHotlineForExtension",
            Some("acme"),
            r#"{"extension_id":"1","hotline_id":"2"}"#,
        )
        .await;
    assert_eq!(w.status, 200);
    // Both path twins of acme's reads are gone; globex's stay.
    assert_eq!(h.call(SHOP_API, Some("acme"), BODY).await.x_cache(), "MISS");
    assert_eq!(
        h.call(PARTNER_INFO, Some("acme"), BODY).await.x_cache(),
        "MISS"
    );
    assert_eq!(
        h.call(SHOP_API, Some("globex"), BODY).await.x_cache(),
        "HIT"
    );
}

#[tokio::test]
async fn a_failed_write_invalidates_nothing() {
    let h = Harness::start().await;
    h.call(SHOP_API, Some("acme"), BODY).await;
    let w = h
        .call_mock(
            "/v1/partner.Etelecom/UpdateHotlineForExtension",
            Some("acme"),
            "status=400",
        )
        .await;
    assert_eq!(w.status, 400);
    assert_eq!(h.call(SHOP_API, Some("acme"), BODY).await.x_cache(), "HIT");
}

#[tokio::test]
async fn no_cache_refreshes_and_no_store_stores_nothing() {
    let h = Harness::start().await;
    h.call(SHOP_API, Some("acme"), BODY).await;
    let r = h
        .call_with(
            SHOP_API,
            Some("acme"),
            BODY,
            &[("cache-control", "no-cache")],
        )
        .await;
    assert_eq!(r.x_cache(), "BYPASS");
    assert_eq!(h.mock.request_count(), 2);
    assert_eq!(h.call(SHOP_API, Some("acme"), BODY).await.x_cache(), "HIT");

    let other = r#"{"extension_number":"999"}"#;
    let r = h
        .call_with(
            SHOP_API,
            Some("acme"),
            other,
            &[("cache-control", "no-store")],
        )
        .await;
    assert_eq!(r.x_cache(), "BYPASS");
    assert_eq!(
        h.call(SHOP_API, Some("acme"), other).await.x_cache(),
        "MISS"
    );
    assert_eq!(h.mock.request_count(), 4);
}

#[tokio::test]
async fn stale_if_error_serves_a_recently_expired_entry() {
    let h = with_cache("max_ttl_secs = 1\nstale_if_error_secs = 60").await;
    let fresh = h.call(SHOP_API, Some("acme"), BODY).await;
    h.mock.set_behaviour(Behaviour::status(503, None));
    let started = Instant::now();
    loop {
        let r = h.call(SHOP_API, Some("acme"), BODY).await;
        match r.x_cache() {
            "HIT" => {}
            "STALE" => {
                assert_eq!(r.status, 200);
                assert_eq!(r.body, fresh.body);
                assert!(r.headers.contains_key("age"));
                break;
            }
            other => panic!("{other}: {:?}", r.body),
        }
        assert!(started.elapsed() < Duration::from_secs(3));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Upstream down altogether (timeouts/connect errors) is served stale too.
    h.mock.set_behaviour(Behaviour::Reset);
    let r = h.call(SHOP_API, Some("acme"), BODY).await;
    assert_eq!((r.status.as_u16(), r.x_cache()), (200, "STALE"));
}

#[tokio::test]
async fn stale_is_never_served_past_its_window_or_expires_at() {
    // Window of 1 s after a 1 s freshness.
    let h = with_cache("max_ttl_secs = 1\nstale_if_error_secs = 1").await;
    h.call(SHOP_API, Some("acme"), BODY).await;
    h.mock.set_behaviour(Behaviour::status(503, None));
    let started = Instant::now();
    loop {
        let r = h.call(SHOP_API, Some("acme"), BODY).await;
        if r.status == 503 {
            assert_eq!(r.x_cache(), "MISS");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "stale served too long"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(1500));

    // expires_at 3 s ahead bounds the stale window even though it is 60 s.
    let h =
        with_cache("max_ttl_secs = 300\nsafety_margin_secs = 1\nstale_if_error_secs = 60").await;
    h.mock.set_expires_at(Some(rfc3339_in(3)));
    h.call(SHOP_API, Some("acme"), BODY).await;
    h.mock.set_behaviour(Behaviour::status(503, None));
    let started = Instant::now();
    loop {
        let r = h.call(SHOP_API, Some("acme"), BODY).await;
        if r.status == 503 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "served past expires_at"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn fixed_ttl_methods_are_cached_when_configured() {
    let h = with_cache("[cache.methods]\nGetTenant = { ttl_secs = 60 }").await;
    let path = "/v1/partner.Etelecom/GetTenant";
    assert_eq!(h.call(path, Some("acme"), "{}").await.x_cache(), "MISS");
    assert_eq!(h.call(path, Some("acme"), "{}").await.x_cache(), "HIT");
    let plain = Harness::start().await;
    assert_eq!(
        (plain.call(path, Some("acme"), "{}").await).x_cache(),
        "<none>"
    );
}
