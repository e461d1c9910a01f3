//! The admin endpoints over the binary: `/config` fingerprints, `/cache/purge`, and a
//! `/metrics` free of keys, passwords and raw paths.

use etelecom_gateway::mock::{
    DEMO_ACME_API_KEY, DEMO_ACME_SHOP_KEY, DEMO_GLOBEX_API_KEY, DEMO_PARTNER_KEY, MockAccounts,
};
use http::Request;
use http_body_util::Full;
use serde_json::Value;

use crate::common::proc::Gateway;
use crate::common::{PARTNER_SHOP, post, sample};
use crate::support::{
    EXTENSION_INFO, Http, config, fingerprint, runtime, start_mock, write_config,
};

/// `GET /config` shows keys as `sha256:` + 8 hex digits only; `POST /cache/purge?tenant=acme`
/// drops the cached read; `/metrics` holds no key, no extension password and no raw path.
#[test]
fn admin_endpoints_show_fingerprints_purge_and_keep_metrics_clean() {
    let rt = runtime();
    let mock = start_mock(&rt, MockAccounts::demo());
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&write_config(dir.path(), &config(&mock, None)));
    let http = Http::new();
    let keys = [
        DEMO_ACME_API_KEY,
        DEMO_ACME_SHOP_KEY,
        DEMO_GLOBEX_API_KEY,
        DEMO_PARTNER_KEY,
    ];
    let secret_parts: Vec<&str> = keys.iter().map(|k| k.split_once(':').unwrap().1).collect();

    rt.block_on(async {
        // GET /config
        let r = http.get(&gw.admin_url("/config")).await;
        assert_eq!(r.status, 200);
        let v = r.json();
        let fp = |k: &str| Value::String(format!("sha256:{}", fingerprint(k)));
        let tenants = v["tenants"].as_array().unwrap();
        assert_eq!(tenants.len(), 2, "{v}");
        assert_eq!(tenants[0]["id"], "acme");
        assert_eq!(tenants[0]["api_key"], fp(DEMO_ACME_API_KEY));
        assert_eq!(tenants[0]["shop_key"], fp(DEMO_ACME_SHOP_KEY));
        assert_eq!(tenants[1]["id"], "globex");
        assert_eq!(tenants[1]["api_key"], fp(DEMO_GLOBEX_API_KEY));
        assert_eq!(tenants[1]["shop_key"], Value::Null);
        assert_eq!(v["partner"]["api_key"], fp(DEMO_PARTNER_KEY));
        for t in tenants {
            for class in ["api_key", "shop_key"] {
                if let Some(s) = t[class].as_str() {
                    let hex = s.strip_prefix("sha256:").unwrap_or_else(|| panic!("{s}"));
                    assert!(
                        hex.len() == 8 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                        "{s}"
                    );
                }
            }
        }
        let shown = r.text();
        for s in &secret_parts {
            assert!(!shown.contains(s), "/config shows a key: {shown}");
        }

        // Two cached reads, a purge, a read again.
        let body = r#"{"extension_number":"101"}"#;
        let read = || http.send(post(gw.public, EXTENSION_INFO, Some("acme"), body));
        let first = read().await;
        let first_text = first.text();
        assert_eq!(first.status, 200, "{first_text}");
        assert!(first_text.contains("mock-sip-pw-"), "{first_text}");
        assert_eq!(first.x_cache(), "MISS");
        let second = read().await;
        assert_eq!(second.x_cache(), "HIT");
        assert_eq!(second.body, first.body);
        let upstream_reads = || {
            mock.received()
                .iter()
                .filter(|r| r.path == EXTENSION_INFO)
                .count()
        };
        assert_eq!(upstream_reads(), 1);

        let purge = Request::post(gw.admin_url("/cache/purge?tenant=acme"))
            .body(Full::default())
            .unwrap();
        let p = http.send(purge).await;
        assert_eq!(p.status, 200, "{}", p.text());
        assert_eq!(p.json(), serde_json::json!({ "purged": 1 }));
        let third = read().await;
        assert_eq!(third.status, 200);
        assert_eq!(third.x_cache(), "MISS", "purged, so fetched again");
        assert_eq!(upstream_reads(), 2);

        // A method the catalogue doesn't know: forwarded, labelled "other".
        let odd = http
            .send(post(gw.public, "/v1/shop.Etelecom/SomethingOdd", Some("acme"), "{}"))
            .await;
        assert!(
            mock.received().iter().any(|r| r.path.ends_with("SomethingOdd")),
            "forwarded ({})",
            odd.status
        );

        let m = http.get(&gw.admin_url("/metrics")).await;
        assert_eq!(m.status, 200);
        let text = &m.text();
        let odd_status = odd.status.as_u16().to_string();
        let odd_series = [
            ("tenant", "acme"),
            ("method", "other"),
            ("status", odd_status.as_str()),
            ("source", "upstream"),
        ];
        assert_eq!(
            sample(text, "etelecom_gateway_requests_total", &odd_series),
            Some(1.0),
            "requests_total{odd_series:?} in:\n{text}"
        );
        assert!(text.contains(
            "etelecom_gateway_cache_requests_total{method=\"shop.Etelecom/GetExtensionInfo\",result=\"hit\"} 1"
        ), "{text}");
        assert!(!text.contains("SomethingOdd"), "a raw path in /metrics");
        assert!(!text.contains("/v1/"), "a raw path in /metrics");
        assert!(!text.contains("mock-sip-pw-"), "a password in /metrics");
        for (k, s) in keys.iter().zip(&secret_parts) {
            assert!(!text.contains(k) && !text.contains(s), "a key in /metrics");
        }
    });
}

/// A known tenant that lacks the key a method needs is named in the access log and in
/// `requests_total` (not `-`), so an operator can tell which tenant is misconfigured.
#[test]
fn a_tenant_lacking_a_key_is_named_in_the_access_log_and_metrics() {
    let rt = runtime();
    let mock = start_mock(&rt, MockAccounts::demo());
    let dir = tempfile::tempdir().unwrap();
    let mut gw = Gateway::start(&write_config(dir.path(), &config(&mock, None)));
    let http = Http::new();
    let r = rt.block_on(http.send(post(gw.public, PARTNER_SHOP, Some("globex"), "{}")));
    r.assert_gateway_error(403, "permission_denied");
    let id = r.headers["x-request-id"].to_str().unwrap().to_owned();
    let line = gw
        .proc
        .wait_line(std::time::Duration::from_secs(10), "access log", |l| {
            l.contains("\"message\":\"request\"") && l.contains(&id)
        });
    let v: Value = serde_json::from_str(&line).unwrap();
    let fields = &v;
    assert_eq!(fields["tenant"], "globex", "{line}");
    assert_eq!(fields["key_class"], "shop_key", "{line}");
    assert_eq!(fields["status"], 403, "{line}");
    let m = rt.block_on(http.get(&gw.admin_url("/metrics")));
    let series = [
        ("tenant", "globex"),
        ("status", "403"),
        ("source", "gateway"),
    ];
    assert_eq!(
        sample(&m.text(), "etelecom_gateway_requests_total", &series),
        Some(1.0),
        "{}",
        m.text()
    );
    assert_eq!(mock.request_count(), 0);
}
