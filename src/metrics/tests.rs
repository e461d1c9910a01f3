//! Tests of the metrics contract: names, types, label sets and values in both exposition formats.
//! `external` runs outside validators on the outputs; `parse` reads them back.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use http::HeaderValue;

use super::*;

mod external;
mod parse;

use parse::{Sample, parse};

const METHOD: &str = "shop.Etelecom/GetExtensionInfo";
const WRITE_METHOD: &str = "shop.Etelecom/CreateExtension";

/// `METHOD` as a routed request carries it (its catalogue entry).
fn routed() -> MethodMetric {
    let m = crate::catalogue::Catalogue::get().lookup(&format!("/v1/{METHOD}"));
    assert!(m.is_some(), "{METHOD} is in the catalogue");
    MethodMetric::route(m)
}

/// Every family of the contract as named in Prometheus text: (name, type, label names).
const FAMILIES: &[(&str, &str, &[&str])] = &[
    (
        "etelecom_gateway_requests_total",
        "counter",
        &["tenant", "method", "status", "source"],
    ),
    (
        "etelecom_gateway_request_duration_seconds",
        "histogram",
        &["method", "cache"],
    ),
    (
        "etelecom_gateway_upstream_duration_seconds",
        "histogram",
        &["method"],
    ),
    (
        "etelecom_gateway_upstream_errors_total",
        "counter",
        &["kind"],
    ),
    (
        "etelecom_gateway_cache_requests_total",
        "counter",
        &["method", "result"],
    ),
    ("etelecom_gateway_cache_entries", "gauge", &[]),
    ("etelecom_gateway_cache_bytes", "gauge", &[]),
    (
        "etelecom_gateway_cache_evictions_total",
        "counter",
        &["cause"],
    ),
    (
        "etelecom_gateway_cache_invalidations_total",
        "counter",
        &["method"],
    ),
    (
        "etelecom_gateway_ratelimit_decisions_total",
        "counter",
        &["tenant", "key_class", "outcome"],
    ),
    (
        "etelecom_gateway_credential_rejections_total",
        "counter",
        &["tenant", "key_class"],
    ),
    (
        "etelecom_gateway_config_reloads_total",
        "counter",
        &["result"],
    ),
    (
        "etelecom_gateway_config_last_reload_success_timestamp_seconds",
        "gauge",
        &[],
    ),
    ("etelecom_gateway_in_flight_requests", "gauge", &[]),
    ("etelecom_gateway_open_connections", "gauge", &[]),
    ("etelecom_gateway_build_info", "gauge", &["version"]),
];

/// Records one of everything; returns the guards so the gauges stay up.
fn record_one_of_each(m: &Metrics) -> (GaugeGuard, GaugeGuard) {
    let tenant: Arc<str> = Arc::from("shop-a");
    let t = Some(&tenant);
    m.request(
        t,
        routed(),
        200,
        Source::Upstream,
        Some("miss"),
        Duration::from_millis(3),
    );
    m.request(
        None,
        MethodMetric::route(None),
        429,
        Source::Gateway,
        None,
        Duration::from_micros(200),
    );
    m.upstream(routed(), Duration::from_millis(40));
    m.upstream_error("timeout");
    m.cache_request(routed(), "hit");
    m.cache_eviction("expired");
    m.cache_invalidation(WRITE_METHOD);
    m.set_cache_size(3, 4096);
    m.ratelimit_decision(t, "api_key", "allowed");
    m.ratelimit_decision(None, "partner", "limited");
    m.credential_rejection(t, "shop_key");
    m.config_reload(
        "success",
        UNIX_EPOCH + Duration::from_millis(1_700_000_000_500),
    );
    (m.in_flight(), m.connection())
}

/// Every label value `record_one_of_each` passes or implies.
fn allowed_values() -> BTreeSet<&'static str> {
    [
        "shop-a",
        "-",
        METHOD,
        WRITE_METHOD,
        "other",
        "200",
        "429",
        "upstream",
        "gateway",
        "miss",
        "none",
        "timeout",
        "hit",
        "expired",
        "api_key",
        "partner",
        "shop_key",
        "allowed",
        "limited",
        "success",
        env!("CARGO_PKG_VERSION"),
    ]
    .into_iter()
    .collect()
}

#[test]
fn prometheus_text_has_every_family_with_the_contract_labels() {
    let m = Metrics::new(true);
    let _guards = record_one_of_each(&m);
    let text = m.encode_prometheus();
    let exp = parse(&text);

    assert!(!text.contains("# UNIT"), "{text}");
    assert!(!text.contains("# EOF"), "{text}");
    assert!(!text.contains("_created"), "{text}");

    let declared: BTreeSet<&str> = exp.types.keys().map(String::as_str).collect();
    let expected: BTreeSet<&str> = FAMILIES.iter().map(|f| f.0).collect();
    assert_eq!(declared, expected, "exactly the contract's families");

    for &(family, ty, labels) in FAMILIES {
        assert_eq!(exp.types[family], ty, "{family}");
        assert!(exp.helps.contains(family), "{family} has no HELP");
        if ty == "counter" {
            assert!(family.ends_with("_total"), "{family}");
        }
        let sample_names: Vec<String> = match ty {
            "histogram" => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{family}{s}"))
                .collect(),
            _ => vec![family.to_string()],
        };
        for name in &sample_names {
            let samples: Vec<&Sample> = exp.samples_of(name).collect();
            assert!(!samples.is_empty(), "{name} has no sample:\n{text}");
            for s in samples {
                let mut got: BTreeSet<&str> = s.labels.keys().map(String::as_str).collect();
                if name.ends_with("_bucket") {
                    assert!(got.remove("le"), "{name} bucket without le");
                }
                let want: BTreeSet<&str> = labels.iter().copied().collect();
                assert_eq!(got, want, "labels of {name}");
            }
        }
    }
    // Every sample belongs to a declared family.
    for s in &exp.samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suf| s.name.strip_suffix(suf))
            .filter(|f| exp.types.get(*f).map(String::as_str) == Some("histogram"))
            .unwrap_or(&s.name);
        assert!(exp.types.contains_key(family), "stray sample {}", s.name);
    }
}

#[test]
fn label_values_come_only_from_the_caller() {
    let m = Metrics::new(true);
    let _guards = record_one_of_each(&m);
    let allowed = allowed_values();
    for text in [m.encode_prometheus(), m.encode_openmetrics()] {
        for s in parse(&text).samples {
            for (k, v) in &s.labels {
                if k == "le" {
                    continue;
                }
                assert!(allowed.contains(v.as_str()), "{}: {k}={v:?}", s.name);
            }
        }
    }
}

#[test]
fn recorded_values() {
    let m = Metrics::new(true);
    let guards = record_one_of_each(&m);
    let exp = parse(&m.encode_prometheus());
    let p = |n: &str| format!("etelecom_gateway_{n}");

    let ok = [
        ("tenant", "shop-a"),
        ("method", METHOD),
        ("status", "200"),
        ("source", "upstream"),
    ];
    assert_eq!(exp.value(&p("requests_total"), &ok), Some(1.0));
    let partner = [
        ("tenant", "-"),
        ("method", "other"),
        ("status", "429"),
        ("source", "gateway"),
    ];
    assert_eq!(exp.value(&p("requests_total"), &partner), Some(1.0));

    // 3 ms lands in le=0.005, not le=0.0025: durations are in seconds.
    let h = p("request_duration_seconds_bucket");
    let miss = [("method", METHOD), ("cache", "miss")];
    let bucket = |le: &str| {
        let mut l = miss.to_vec();
        l.push(("le", le));
        exp.value(&h, &l)
    };
    assert_eq!(bucket("0.0025"), Some(0.0));
    assert_eq!(bucket("0.005"), Some(1.0));
    assert_eq!(bucket("+Inf"), Some(1.0));
    let none = [("method", "other"), ("cache", "none")];
    assert_eq!(
        exp.value(&p("request_duration_seconds_count"), &none),
        Some(1.0)
    );
    let sum = exp
        .value(&p("upstream_duration_seconds_sum"), &[("method", METHOD)])
        .expect("upstream sum");
    assert!((sum - 0.04).abs() < 1e-9, "{sum}");

    assert_eq!(exp.value(&p("cache_entries"), &[]), Some(3.0));
    assert_eq!(exp.value(&p("cache_bytes"), &[]), Some(4096.0));
    assert_eq!(exp.value(&p("in_flight_requests"), &[]), Some(1.0));
    assert_eq!(exp.value(&p("open_connections"), &[]), Some(1.0));
    let ts = exp
        .value(&p("config_last_reload_success_timestamp_seconds"), &[])
        .expect("timestamp");
    assert!((ts - 1_700_000_000.5).abs() < 1e-3, "{ts}");
    assert_eq!(
        exp.value(&p("build_info"), &[("version", env!("CARGO_PKG_VERSION"))]),
        Some(1.0)
    );

    drop(guards);
    let exp = parse(&m.encode_prometheus());
    assert_eq!(exp.value(&p("in_flight_requests"), &[]), Some(0.0));
    assert_eq!(exp.value(&p("open_connections"), &[]), Some(0.0));
}

#[test]
fn tenant_label_false_collapses_every_tenant_to_all() {
    let m = Metrics::new(false);
    let _guards = record_one_of_each(&m);
    let exp = parse(&m.encode_prometheus());
    let mut seen = 0;
    for s in &exp.samples {
        if let Some(t) = s.labels.get("tenant") {
            assert_eq!(t, "all", "{s:?}");
            seen += 1;
        }
    }
    assert!(
        seen >= 3,
        "requests, ratelimit and credential samples carry tenant"
    );
    // shop-a and the partner call (no tenant) share one series.
    let all_limited = [
        ("tenant", "all"),
        ("key_class", "partner"),
        ("outcome", "limited"),
    ];
    assert_eq!(
        exp.value("etelecom_gateway_ratelimit_decisions_total", &all_limited),
        Some(1.0)
    );
}

#[test]
fn config_reload_updates_the_timestamp_only_on_success_or_unchanged() {
    let m = Metrics::new(true);
    let name = "etelecom_gateway_config_last_reload_success_timestamp_seconds";
    let ts = |m: &Metrics| parse(&m.encode_prometheus()).value(name, &[]);
    let at = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
    assert_eq!(ts(&m), Some(0.0));
    m.config_reload("failure", at(100));
    assert_eq!(ts(&m), Some(0.0));
    m.config_reload("success", at(200));
    assert_eq!(ts(&m), Some(200.0));
    m.config_reload("unchanged", at(300));
    assert_eq!(ts(&m), Some(300.0));
    m.config_reload("failure", at(400));
    assert_eq!(ts(&m), Some(300.0));
    let exp = parse(&m.encode_prometheus());
    let reloads = "etelecom_gateway_config_reloads_total";
    assert_eq!(exp.value(reloads, &[("result", "failure")]), Some(2.0));
    assert_eq!(exp.value(reloads, &[("result", "success")]), Some(1.0));
    assert_eq!(exp.value(reloads, &[("result", "unchanged")]), Some(1.0));
}

#[test]
fn openmetrics_text_shape() {
    let m = Metrics::new(true);
    let _guards = record_one_of_each(&m);
    let text = m.encode_openmetrics();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(text.matches("# EOF").count(), 1);
    // OpenMetrics names the counter family without `_total`; its samples carry it.
    assert!(text.contains("# TYPE etelecom_gateway_requests counter\n"));
    assert!(text.contains("# UNIT etelecom_gateway_request_duration_seconds seconds\n"));
    let exp = parse(&text);
    assert_eq!(exp.types.len(), FAMILIES.len());
    for &(family, ty, _) in FAMILIES {
        let om = family.strip_suffix("_total").unwrap_or(family);
        assert_eq!(exp.types.get(om).map(String::as_str), Some(ty), "{om}");
    }
    assert!(
        exp.samples_of("etelecom_gateway_requests_total").count() == 2,
        "{text}"
    );
}

#[test]
fn render_negotiates_the_format() {
    let m = Metrics::new(true);
    let h = HeaderValue::from_static;
    let ct = |accept: Option<HeaderValue>| render(&m, accept.as_ref()).1;

    assert_eq!(ct(None), PROMETHEUS_CONTENT_TYPE);
    assert_eq!(ct(Some(h("text/plain"))), PROMETHEUS_CONTENT_TYPE);
    assert_eq!(ct(Some(h("*/*"))), PROMETHEUS_CONTENT_TYPE);
    // Prometheus 2.x's default scrape Accept header.
    let prom2 = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                 version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    assert_eq!(ct(Some(h(prom2))), OPENMETRICS_CONTENT_TYPE);
    assert_eq!(
        ct(Some(h("Application/OpenMetrics-Text; version=1.0.0"))),
        OPENMETRICS_CONTENT_TYPE
    );
    assert_eq!(
        ct(Some(h("application/openmetrics-text;q=0"))),
        PROMETHEUS_CONTENT_TYPE
    );
    assert_eq!(
        ct(Some(h(
            "text/plain;q=1, application/openmetrics-text;q=0.5"
        ))),
        PROMETHEUS_CONTENT_TYPE
    );
    assert_eq!(
        ct(Some(h("application/openmetrics-text;q=oops"))),
        PROMETHEUS_CONTENT_TYPE
    );
    let (body, _) = render(&m, Some(&h(prom2)));
    assert!(body.ends_with("# EOF\n"));
    let (body, _) = render(&m, None);
    assert!(!body.contains("# EOF"));
}

/// The per-method slots (`slots.rs`) record into the family's own series: the first call
/// resolves the slot, the later ones go through it, and `/metrics` counts all of them under the
/// right labels; methods outside the catalogue go through the family.
#[test]
fn series_resolved_once_per_method_are_the_familys_series() {
    let m = Metrics::new(true);
    let p = |n: &str| format!("etelecom_gateway_{n}");
    let caches = ["hit", "miss", "bypass", "stale"];
    for round in 1..=3u32 {
        for (i, cache) in caches.iter().enumerate() {
            // `i + 1` requests per cache status and round: a swapped slot shows as a wrong count.
            for _ in 0..=i {
                m.request(
                    None,
                    routed(),
                    200,
                    Source::Upstream,
                    Some(cache),
                    Duration::from_millis(1),
                );
                m.cache_request(routed(), cache);
            }
        }
        m.request(None, routed(), 200, Source::Upstream, None, Duration::ZERO);
        m.request(
            None,
            MethodMetric::UNROUTED,
            404,
            Source::Gateway,
            None,
            Duration::ZERO,
        );
        m.upstream(routed(), Duration::from_millis(40));
        m.upstream(MethodMetric::route(None), Duration::from_millis(40));

        let exp = parse(&m.encode_prometheus());
        let round = f64::from(round);
        for (i, cache) in caches.iter().enumerate() {
            let want = Some(round * (i as f64 + 1.0));
            let labels = [("method", METHOD), ("cache", *cache)];
            assert_eq!(
                exp.value(&p("request_duration_seconds_count"), &labels),
                want,
                "{cache}"
            );
            let labels = [("method", METHOD), ("result", *cache)];
            assert_eq!(
                exp.value(&p("cache_requests_total"), &labels),
                want,
                "{cache}"
            );
        }
        let count = |method: &str, cache: &str| {
            exp.value(
                &p("request_duration_seconds_count"),
                &[("method", method), ("cache", cache)],
            )
        };
        assert_eq!(count(METHOD, "none"), Some(round));
        assert_eq!(count("-", "none"), Some(round));
        let upstream =
            |method: &str| exp.value(&p("upstream_duration_seconds_count"), &[("method", method)]);
        assert_eq!(upstream(METHOD), Some(round));
        assert_eq!(upstream("other"), Some(round));
        let all = [
            ("tenant", "-"),
            ("method", METHOD),
            ("status", "200"),
            ("source", "upstream"),
        ];
        assert_eq!(exp.value(&p("requests_total"), &all), Some(round * 11.0));
    }
}

#[test]
fn guards_are_static_and_send() {
    fn check<T: Send + 'static>(_: &T) {}
    let m = Arc::new(Metrics::new(true));
    let g = m.connection();
    check(&g);
    check(&m.in_flight());
}

#[test]
fn a_fresh_registry_shows_only_unlabelled_gauges_and_build_info() {
    // prometheus-client leaves a labelled family out until it has a series.
    let m = Metrics::new(true);
    let exp = parse(&m.encode_prometheus());
    let declared: BTreeSet<&str> = exp.types.keys().map(String::as_str).collect();
    let want: BTreeSet<&str> = FAMILIES
        .iter()
        .filter(|f| f.2.is_empty() || f.0 == "etelecom_gateway_build_info")
        .map(|f| f.0)
        .collect();
    assert_eq!(declared, want);
    assert!(m.encode_openmetrics().ends_with("# EOF\n"));
}
