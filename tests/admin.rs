//! The admin listener in-process: every metric family moves when it should, `/readyz`,
//! `/healthz`, `/config` shows fingerprints only, and `/cache/purge`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Harness, SHOP_API, Setup, sample};
use etelecom_gateway::mock::Behaviour;

const CALL_LOGS: &str = "/v1/shop.Etelecom/ListCallLogs";
const INFO_LABEL: &str = "shop.Etelecom/GetExtensionInfo";

#[tokio::test]
async fn request_and_cache_families_move() {
    let h = Harness::start().await;
    let m = h.metrics().await;
    assert_eq!(
        sample(
            &m,
            "etelecom_gateway_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "etelecom_gateway_config_reloads_total",
            &[("result", "success")]
        ),
        Some(1.0)
    );
    assert!(
        sample(
            &m,
            "etelecom_gateway_config_last_reload_success_timestamp_seconds",
            &[]
        )
        .unwrap()
            > 1.0e9
    );
    assert!(sample(&m, "etelecom_gateway_requests_total", &[]).is_none());

    h.call(SHOP_API, Some("acme"), "{}").await;
    h.call(SHOP_API, Some("acme"), "{}").await;
    h.call_with(
        SHOP_API,
        Some("acme"),
        "{}",
        &[("cache-control", "no-cache")],
    )
    .await;
    h.call(SHOP_API, Some("nobody"), "{}").await;
    let m = h.metrics().await;
    let req = |status: &str, source: &str, tenant: &str| {
        sample(
            &m,
            "etelecom_gateway_requests_total",
            &[
                ("tenant", tenant),
                ("method", INFO_LABEL),
                ("status", status),
                ("source", source),
            ],
        )
    };
    assert_eq!(req("200", "upstream", "acme"), Some(3.0));
    assert_eq!(req("403", "gateway", "-"), Some(1.0));
    for (result, n) in [("miss", 1.0), ("hit", 1.0), ("bypass", 1.0)] {
        assert_eq!(
            sample(
                &m,
                "etelecom_gateway_cache_requests_total",
                &[("method", INFO_LABEL), ("result", result)]
            ),
            Some(n),
            "{result}"
        );
        assert_eq!(
            sample(
                &m,
                "etelecom_gateway_request_duration_seconds_count",
                &[("method", INFO_LABEL), ("cache", result)]
            ),
            Some(n),
            "{result}"
        );
    }
    assert_eq!(
        sample(
            &m,
            "etelecom_gateway_upstream_duration_seconds_count",
            &[("method", INFO_LABEL)]
        ),
        Some(2.0)
    );
    assert!(sample(&m, "etelecom_gateway_cache_entries", &[]).unwrap() >= 1.0);
    assert!(sample(&m, "etelecom_gateway_cache_bytes", &[]).unwrap() > 100.0);
    assert_eq!(
        sample(
            &m,
            "etelecom_gateway_ratelimit_decisions_total",
            &[
                ("tenant", "acme"),
                ("key_class", "api_key"),
                ("outcome", "allowed")
            ]
        ),
        Some(2.0)
    );
    // The no-cache refresh replaced the entry.
    assert_eq!(
        sample(
            &m,
            "etelecom_gateway_cache_evictions_total",
            &[("cause", "replaced")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn invalidations_evictions_and_purge() {
    let h = Harness::start().await;
    h.call(SHOP_API, Some("acme"), "{}").await;
    h.call(SHOP_API, Some("globex"), "{}").await;
    h.call(
        "/v1/partner.Etelecom/RemoveUserOfExtension",
        Some("acme"),
        "{}",
    )
    .await;
    let m = h.metrics().await;
    for label in [
        INFO_LABEL,
        "partner.Etelecom/GetExtensions",
        "partner.Shop/GetAccountUsers",
    ] {
        assert_eq!(
            sample(
                &m,
                "etelecom_gateway_cache_invalidations_total",
                &[("method", label)]
            ),
            Some(1.0),
            "{label}"
        );
    }
    let r = h.admin("POST", "/cache/purge?tenant=globex").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["purged"], 1);
    let r = h.call(SHOP_API, Some("globex"), "{}").await;
    assert_eq!(r.headers["x-cache"], "MISS");
    let r = h
        .admin_with("POST", "/cache/purge", r#"{"all": true}"#)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["purged"].as_u64().unwrap() >= 1);
    let m = h.metrics().await;
    assert!(
        sample(
            &m,
            "etelecom_gateway_cache_evictions_total",
            &[("cause", "explicit")]
        )
        .unwrap()
            >= 2.0
    );
    let r = h.admin("GET", "/cache/purge").await;
    assert_eq!(
        (r.status.as_u16(), r.json()["code"].as_str()),
        (405, Some("bad_route"))
    );
}

/// Bad purge input is a 400 with the reason and purges nothing; `{"all": true}` is the only way
/// to purge everything; the tenant and method forms keep working.
#[tokio::test]
async fn purge_refuses_bad_input_and_purges_nothing() {
    let h = &Harness::start().await;
    let body = r#"{"extension_number":"101"}"#;
    let cached = move |tenant: &'static str| async move {
        h.call(SHOP_API, Some(tenant), body)
            .await
            .x_cache()
            .to_owned()
    };
    assert_eq!(cached("acme").await, "MISS");
    assert_eq!(cached("globex").await, "MISS");
    let bad: &[(&str, &str)] = &[
        ("", ""),
        ("", "{}"),
        ("", r#"{"teant":"acme"}"#),
        ("", r#"{"tenant":1}"#),
        ("", r#"{"tenant":["acme"]}"#),
        ("", r#"["acme"]"#),
        ("", "null"),
        ("", r#"{"tenant":null}"#),
        ("", "7"),
        ("", r#"{"tenant":""}"#),
        ("", r#"{"tenant":"nobody"}"#),
        ("", r#"{"method":"GetNothing"}"#),
        ("", r#"{"all":false}"#),
        ("", r#"{"all":true,"tenant":"acme"}"#),
        ("", "{not json"),
        ("?tenant=", ""),
        ("?teant=acme", ""),
        ("?tenant=acme", r#"{"tenant":"acme"}"#),
    ];
    for (query, body) in bad {
        let r = h
            .admin_with("POST", &format!("/cache/purge{query}"), body)
            .await;
        assert_eq!(r.status, 400, "{query} {body}: {}", r.text());
        let v = r.json();
        assert_eq!(v["code"], "invalid_argument", "{v}");
        assert_eq!(v["meta"]["source"], "gateway", "{v}");
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        assert_eq!(cached("acme").await, "HIT", "{query} {body} purged acme");
        assert_eq!(
            cached("globex").await,
            "HIT",
            "{query} {body} purged globex"
        );
    }
    let purge = move |body: &'static str| async move {
        let r = h.admin_with("POST", "/cache/purge", body).await;
        assert_eq!(r.status, 200, "{body}: {}", r.text());
        r.json()["purged"].as_u64().unwrap()
    };
    assert_eq!(purge(r#"{"tenant":"acme","method":"GetShopOA"}"#).await, 0);
    assert_eq!(
        purge(r#"{"tenant":"acme","method":"GetExtensionInfo"}"#).await,
        1
    );
    assert_eq!(cached("acme").await, "MISS");
    assert_eq!(cached("globex").await, "HIT");
    assert_eq!(purge(r#"{"tenant":"globex"}"#).await, 1);
    assert_eq!(cached("globex").await, "MISS");
    assert_eq!(
        purge(r#"{"method":"shop.Etelecom/GetExtensionInfo"}"#).await,
        2
    );
    assert_eq!(cached("acme").await, "MISS");
    assert_eq!(cached("globex").await, "MISS");
    assert_eq!(purge(r#"{"all":true}"#).await, 2);
}

#[tokio::test]
async fn upstream_errors_limits_and_rejections_move() {
    let h = Harness::with(Setup {
        upstream: "timeout_ms = 300".into(),
        rate_limit: "requests_per_second = 1\nburst = 2".into(),
        ..Setup::default()
    })
    .await;
    h.call_mock(CALL_LOGS, Some("acme"), "hang").await;
    h.call_mock(CALL_LOGS, Some("globex"), "reset").await;
    h.call_mock(CALL_LOGS, Some("acme"), "status=401").await;
    h.call(CALL_LOGS, Some("acme"), "{}").await;
    let m = h.metrics().await;
    assert_eq!(
        sample(
            &m,
            "etelecom_gateway_upstream_errors_total",
            &[("kind", "timeout")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "etelecom_gateway_upstream_errors_total",
            &[("kind", "protocol")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "etelecom_gateway_credential_rejections_total",
            &[("tenant", "acme"), ("key_class", "api_key")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "etelecom_gateway_ratelimit_decisions_total",
            &[("tenant", "acme"), ("outcome", "limited")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &m,
            "etelecom_gateway_requests_total",
            &[("status", "504"), ("source", "gateway")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn connect_errors_are_counted() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let h = Harness::with(Setup {
        base_url: Some(format!("http://{closed}")),
        ..Setup::default()
    })
    .await;
    h.call(CALL_LOGS, Some("acme"), "{}").await;
    let m = h.metrics().await;
    assert_eq!(
        sample(
            &m,
            "etelecom_gateway_upstream_errors_total",
            &[("kind", "connect")]
        ),
        Some(1.0)
    );
}

#[tokio::test]
async fn in_flight_and_open_connections_gauges() {
    let h = std::sync::Arc::new(Harness::start().await);
    assert_eq!(
        sample(
            &h.metrics().await,
            "etelecom_gateway_in_flight_requests",
            &[]
        ),
        Some(0.0)
    );
    h.mock.set_behaviour(Behaviour::Hang);
    let slow = {
        let h = h.clone();
        tokio::spawn(async move { h.call(CALL_LOGS, Some("acme"), "{}").await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = h.metrics().await;
        if sample(&m, "etelecom_gateway_in_flight_requests", &[]) == Some(1.0) {
            assert!(sample(&m, "etelecom_gateway_open_connections", &[]).unwrap() >= 1.0);
            break;
        }
        assert!(Instant::now() < deadline, "in-flight gauge never rose");
        tokio::task::yield_now().await;
    }
    h.mock.set_behaviour(Behaviour::Normal);
    slow.abort();
}

#[tokio::test]
async fn tenant_label_can_be_collapsed() {
    let h = Harness::with(Setup {
        extra: "[metrics]\ntenant_label = false".into(),
        ..Setup::default()
    })
    .await;
    h.call(SHOP_API, Some("acme"), "{}").await;
    let m = h.metrics().await;
    assert_eq!(
        sample(&m, "etelecom_gateway_requests_total", &[("tenant", "all")]),
        Some(1.0)
    );
    assert!(!m.contains("tenant=\"acme\""));
}

#[tokio::test]
async fn health_readiness_and_openmetrics() {
    let h = Harness::start().await;
    assert_eq!(h.admin("GET", "/healthz").await.status, 200);
    let r = h.admin("GET", "/readyz").await;
    assert_eq!(
        (r.status.as_u16(), r.json()["status"].as_str().unwrap()),
        (200, "ready")
    );
    let r = h.admin("GET", "/nope").await;
    assert_eq!(
        (r.status.as_u16(), r.json()["code"].as_str()),
        (404, Some("bad_route"))
    );
    let req = http::Request::get(format!("http://{}/metrics", h.admin))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .body(http_body_util::Full::default())
        .unwrap();
    let r = h.send(req).await;
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    assert!(
        String::from_utf8_lossy(&r.body)
            .trim_end()
            .ends_with("# EOF")
    );
    let plain = h.admin("GET", "/metrics").await;
    assert!(
        plain.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
}

#[tokio::test]
async fn config_and_metrics_hold_no_secret_and_no_raw_path() {
    let h = Harness::start().await;
    h.call(SHOP_API, Some("acme"), "{}").await;
    h.call("/v1/shop.Etelecom/SomethingOdd", Some("acme"), "{}")
        .await;
    h.call("/v1/shop.Etelecom/../../etc", Some("acme"), "{}")
        .await;
    let cfg = h.admin("GET", "/config").await;
    assert_eq!(cfg.status, 200);
    let v = cfg.json();
    let fp = v["tenants"][0]["api_key"].as_str().unwrap();
    assert!(fp.starts_with("sha256:") && fp.len() == 15, "{fp}");
    assert_eq!(v["tenants"][1]["shop_key"], serde_json::Value::Null);
    let metrics = h.metrics().await;
    assert!(metrics.contains("method=\"other\""));
    let password = etelecom_gateway::mock::extension_password(&h.accounts.shops[0].id, "101");
    for text in [String::from_utf8_lossy(&cfg.body).into_owned(), metrics] {
        for secret in [
            h.accounts.shops[0].api_key.as_str(),
            h.accounts.shops[0].shop_key.as_str(),
            h.accounts.shops[1].api_key.as_str(),
            h.accounts.partner_key.as_str(),
            password.as_str(),
            "SomethingOdd",
            "etc",
        ] {
            let secret_part = secret.split(':').next_back().unwrap();
            assert!(!text.contains(secret_part), "{secret_part} leaked");
        }
    }
}
