use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;

use super::*;

fn cfg() -> CacheConfig {
    CacheConfig {
        enabled: true,
        max_ttl: Duration::from_secs(300),
        safety_margin: Duration::from_secs(5),
        max_bytes: 1024 * 1024,
        stale_if_error: Duration::ZERO,
        fixed_ttl: HashMap::default(),
    }
}

fn metrics() -> Arc<Metrics> {
    Arc::new(Metrics::new(true))
}

fn method(path: &str) -> &'static Method {
    Catalogue::get().lookup(path).expect(path)
}

const INFO: &str = "/v1/shop.Etelecom/GetExtensionInfo";

fn tenants() -> Vec<Arc<str>> {
    vec![Arc::from("acme"), Arc::from("globex")]
}

fn body_expiring_in(secs: u64) -> Bytes {
    let t = time::OffsetDateTime::now_utc() + Duration::from_secs(secs);
    let s = t
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    Bytes::from(format!(
        r#"{{"extension_number":"101","expires_at":"{s}"}}"#
    ))
}

#[test]
fn canonical_form_ignores_key_order_and_whitespace() {
    let a = canonical(br#"{"b": 1, "a": {"y": [1, {"d": 2, "c": 3}], "x": "s"}}"#);
    let b = canonical(br#"{"a":{"x":"s","y":[1,{"c":3,"d":2}]},"b":1}"#);
    assert_eq!(a, b);
    assert_eq!(&*a, br#"{"a":{"x":"s","y":[1,{"c":3,"d":2}]},"b":1}"#);
    assert_ne!(canonical(br#"{"a":[1,2]}"#), canonical(br#"{"a":[2,1]}"#));
}

#[test]
fn keys_separate_tenants_classes_and_generations() {
    let t = tenants();
    let c = Cache::new(&cfg(), &t, metrics());
    let m = method(INFO);
    let acme = c.key(Some(&t[0]), KeyClass::ApiKey, m, b"{}");
    let globex = c.key(Some(&t[1]), KeyClass::ApiKey, m, b"{}");
    assert_ne!(acme, globex);
    let create = method("/v1/partner.Etelecom/CreateExtension");
    assert_eq!(c.invalidate_after_write(Some("acme"), create), 5);
    assert_ne!(c.key(Some(&t[0]), KeyClass::ApiKey, m, b"{}"), acme);
    assert_eq!(c.key(Some(&t[1]), KeyClass::ApiKey, m, b"{}"), globex);
}

#[test]
fn partner_level_writes_invalidate_for_every_tenant() {
    let t = tenants();
    let c = Cache::new(&cfg(), &t, metrics());
    let get_tenant = method("/v1/partner.Etelecom/GetTenant");
    let before: Vec<_> = t
        .iter()
        .map(|x| c.key(Some(x), KeyClass::ShopKey, get_tenant, b"{}"))
        .collect();
    c.invalidate_after_write(None, method("/v1/partner.Etelecom/PartnerActivateTenant"));
    for (x, old) in t.iter().zip(before) {
        assert_ne!(c.key(Some(x), KeyClass::ShopKey, get_tenant, b"{}"), old);
    }
}

#[test]
fn only_readable_200s_with_a_lifetime_become_entries() {
    let c = Cache::new(&cfg(), &tenants(), metrics());
    let m = method(INFO);
    assert!(c.cacheable(m));
    assert!(!c.cacheable(method("/v1/partner.Etelecom/CreateExtension")));
    assert!(
        !c.cacheable(method("/v1/partner.Etelecom/GetTenant")),
        "no expires_at, no fixed ttl"
    );
    let ok = body_expiring_in(3600);
    assert!(c.entry(m, http::StatusCode::OK, None, &ok).is_some());
    assert!(c.entry(m, http::StatusCode::NOT_FOUND, None, &ok).is_none());
    assert!(
        c.entry(m, http::StatusCode::OK, None, &body_expiring_in(2))
            .is_none(),
        "inside margin"
    );
}

#[test]
fn fixed_ttl_makes_a_read_cacheable() {
    let mut cfg = cfg();
    let m = method("/v1/partner.Etelecom/GetTenant");
    cfg.fixed_ttl.insert(m.id, Duration::from_secs(60));
    let c = Cache::new(&cfg, &tenants(), metrics());
    assert!(c.cacheable(m));
    let e = c
        .entry(
            m,
            http::StatusCode::OK,
            None,
            &Bytes::from_static(b"{\"id\":\"1\"}"),
        )
        .expect("entry");
    assert_eq!(e.dies_at - e.stored_at, Duration::from_secs(60));
}

#[test]
fn stale_window_never_passes_expires_at() {
    let mut cfg = cfg();
    cfg.stale_if_error = Duration::from_secs(600);
    let c = Cache::new(&cfg, &tenants(), metrics());
    let m = method(INFO);
    let e = c
        .entry(m, http::StatusCode::OK, None, &body_expiring_in(100))
        .expect("entry");
    assert!(e.dies_at - e.stored_at <= Duration::from_secs(100));
    assert!(e.fresh_until <= e.stored_at + Duration::from_secs(95));
}

#[tokio::test]
async fn concurrent_misses_share_one_fetch_and_errors_are_not_stored() {
    let t = tenants();
    let c = Arc::new(Cache::new(&cfg(), &t, metrics()));
    let m = method(INFO);
    let fetches = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (c, fetches, gate, key) = (
            c.clone(),
            fetches.clone(),
            gate.clone(),
            CacheKey::from(c.key(Some(&t[0]), KeyClass::ApiKey, m, b"{}")),
        );
        tasks.push(tokio::spawn(async move {
            c.get_or_fetch(key, async {
                fetches.fetch_add(1, Ordering::SeqCst);
                gate.notified().await;
                Err::<Arc<Entry>, &str>("upstream down")
            })
            .await
            .map(|_| ())
        }));
    }
    // Let every task reach the cache, then release the one fetch.
    while fetches.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    gate.notify_waiters();
    for t in tasks {
        assert_eq!(*t.await.expect("task").unwrap_err(), "upstream down");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    let key = c.key(Some(&t[0]), KeyClass::ApiKey, m, b"{}");
    assert!(matches!(c.lookup(&key), Lookup::Absent));
}

/// A cache of `max_bytes` filled with `n` distinct entries of `body`.
async fn filled(max_bytes: u64, n: usize, body: &Bytes) -> Cache {
    let mut cfg = cfg();
    cfg.max_bytes = max_bytes;
    let t = tenants();
    let c = Cache::new(&cfg, &t, metrics());
    let m = method(INFO);
    for i in 0..n {
        let request = format!(r#"{{"extension_number":"{i}"}}"#);
        let key = c.key(Some(&t[0]), KeyClass::ApiKey, m, request.as_bytes());
        let e = c.entry(m, http::StatusCode::OK, None, body).expect("entry");
        c.insert(key, e);
    }
    c
}

#[tokio::test]
async fn memory_stays_under_max_bytes() {
    let c = filled(64 * 1024, 5_000, &body_expiring_in(3600)).await;
    let size = c.weighted_size();
    assert!(size <= 64 * 1024, "{size}");
    assert!(c.entry_count() > 0);
}

/// `max_bytes` bounds real memory only if each entry is weighed at what it costs: its answer and
/// request body plus, measured, ~340 bytes of entry and store bookkeeping.
#[tokio::test]
async fn entries_are_weighed_at_their_memory_cost() {
    let body = body_expiring_in(3600);
    let c = filled(1024 * 1024, 100, &body).await;
    assert_eq!(c.entry_count(), 100);
    let per_entry = c.weighted_size() / 100;
    let request = br#"{"extension_number":"10"}"#.len() as u64;
    assert!(
        per_entry >= body.len() as u64 + request + 340,
        "{per_entry} B per entry of a {} B answer",
        body.len()
    );
}

/// hyper hands out an upstream answer's body and header values as slices of the connection's
/// read buffer (8 KiB); an entry must keep neither, or every cached answer pins a whole buffer.
#[test]
fn entries_do_not_keep_the_read_buffer_alive() {
    let c = Cache::new(&cfg(), &tenants(), metrics());
    let m = method(INFO);
    let answer = body_expiring_in(3600);
    for ct in ["application/json", "application/json; charset=utf-8"] {
        let mut read_buf = bytes::BytesMut::with_capacity(8192);
        read_buf.extend_from_slice(ct.as_bytes());
        read_buf.extend_from_slice(&answer);
        let header = HeaderValue::from_maybe_shared(read_buf.split_to(ct.len()).freeze())
            .expect("header value");
        let body = read_buf.split_to(answer.len()).freeze();
        let e = c
            .entry(m, http::StatusCode::OK, Some(&header), &body)
            .expect("entry");
        drop((header, body));
        // The whole buffer can be reused only if nothing else refers to it any more.
        assert!(
            read_buf.try_reclaim(8192),
            "the entry keeps the buffer ({ct})"
        );
        assert_eq!(e.body, answer);
        assert_eq!(e.content_type.as_ref().expect("content type"), ct);
    }
}

#[tokio::test]
async fn purge_by_tenant_and_method() {
    let t = tenants();
    let c = Cache::new(&cfg(), &t, metrics());
    let info = method(INFO);
    let partner_info = method("/v1/partner.Etelecom/GetExtensionInfo");
    let body = body_expiring_in(3600);
    for (tenant, m) in [(&t[0], info), (&t[0], partner_info), (&t[1], info)] {
        let e = c
            .entry(m, http::StatusCode::OK, None, &body)
            .expect("entry");
        c.insert(c.key(Some(tenant), m.key_class, m, b"{}"), e);
    }
    assert_eq!(c.purge(Some("acme"), Some("GetExtensionInfo")), 2);
    assert_eq!(c.purge(Some("acme"), None), 0);
    assert_eq!(c.purge(None, Some("shop.Etelecom/GetExtensionInfo")), 1);
    assert_eq!(c.entry_count(), 0);
}

mod props {
    use super::super::canonical;
    use crate::prop_strategies::{leaf, object, tricky_string, write_differently};
    use proptest::prelude::*;
    use serde_json::Value;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Key order, whitespace and `\u` escapes do not change the canonical form.
        #[test]
        fn equal_for_reordered_keys_whitespace_and_escapes(
            v in object(4),
            ws in prop_oneof![Just(" "), Just("\n\t"), Just("  \r\n")],
            seed in any::<u8>(),
        ) {
            let text = v.to_string();
            let plain = canonical(text.as_bytes());
            let spelled = write_differently(&v, ws, &|i| (i + usize::from(seed)) % 2 == 0);
            prop_assert_eq!(canonical(spelled.as_bytes()), plain);
        }

        /// Documents that differ once parsed never share a canonical form.
        #[test]
        fn different_for_different_documents(a in object(3), b in object(3)) {
            let (ta, tb) = (a.to_string(), b.to_string());
            let parsed = |t: &str| serde_json::from_str::<Value>(t).ok();
            prop_assume!(parsed(&ta) != parsed(&tb));
            prop_assert_ne!(canonical(ta.as_bytes()), canonical(tb.as_bytes()));
        }

        /// Changing one member's value, at any depth of the document, changes the form.
        #[test]
        fn different_when_one_value_changes(
            v in object(3),
            key in tricky_string(),
            x in leaf(),
            y in leaf(),
        ) {
            let with = |leaf: &Value| {
                let mut doc = v.clone();
                if let Value::Object(map) = &mut doc {
                    map.insert(key.clone(), serde_json::json!({ "inner": [leaf] }));
                }
                doc.to_string()
            };
            let (tx, ty) = (with(&x), with(&y));
            prop_assume!(serde_json::from_str::<Value>(&tx).ok() != serde_json::from_str::<Value>(&ty).ok());
            prop_assert_ne!(canonical(tx.as_bytes()), canonical(ty.as_bytes()));
        }
    }
}

/// An entry built as it would have been `ago` ago, living for `life` after that.
fn entry_from_the_past(ago: Duration, life: Duration) -> Arc<Entry> {
    let stored_at = Instant::now()
        .checked_sub(ago)
        .expect("the clock is past `ago`");
    Arc::new(Entry {
        body: body_expiring_in(3600),
        content_type: None,
        stored_at,
        fresh_until: stored_at + life,
        dies_at: stored_at + life,
    })
}

fn evictions(m: &Metrics, cause: &str) -> u64 {
    let text = m.encode_prometheus();
    let series = format!("etelecom_gateway_cache_evictions_total{{cause=\"{cause}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.parse().expect("a count"))
}

/// A dead entry (past freshness and stale window) is never served; a lookup takes it out, the
/// housekeeping sweep takes out the rest, and both count it as expired.
#[test]
fn dead_entries_are_dropped_by_lookup_and_by_the_sweep() {
    let t = tenants();
    let m = metrics();
    let c = Cache::new(&cfg(), &t, m.clone());
    let info = method(INFO);
    let key = |body: &'static [u8]| c.key(Some(&t[0]), KeyClass::ApiKey, info, body);
    let (past, live) = (Duration::from_secs(60), Duration::from_secs(30));
    c.insert(key(b"{\"n\":1}"), entry_from_the_past(past, live));
    c.insert(key(b"{\"n\":2}"), entry_from_the_past(past, live));
    let alive = entry_from_the_past(Duration::ZERO, live);
    c.insert(key(b"{\"n\":3}"), alive.clone());
    assert_eq!(c.entry_count(), 3);

    assert!(matches!(c.lookup(&key(b"{\"n\":1}")), Lookup::Absent));
    assert_eq!((c.entry_count(), evictions(&m, "expired")), (2, 1));

    assert_eq!(c.sweep(), 1);
    assert_eq!((c.entry_count(), evictions(&m, "expired")), (1, 2));
    assert!(matches!(c.lookup(&key(b"{\"n\":3}")), Lookup::Fresh(_)));
    assert_eq!(
        c.weighted_size(),
        (b"{\"n\":3}".len() + alive.body.len() + ENTRY_OVERHEAD) as u64
    );
}

/// What the cache drops is counted by cause: `size` when it is full, `replaced` when an entry
/// is stored over another, `explicit` for a removal; and memory stays within `max_bytes`.
#[test]
fn evictions_are_counted_by_cause() {
    let t = tenants();
    let m = metrics();
    let mut cfg = cfg();
    cfg.max_bytes = 64 * 1024;
    let c = Cache::new(&cfg, &t, m.clone());
    let info = method(INFO);
    let live = Duration::from_secs(60);
    for i in 0..500 {
        let request = format!(r#"{{"extension_number":"{i}"}}"#);
        let key = c.key(Some(&t[0]), KeyClass::ApiKey, info, request.as_bytes());
        c.insert(key, entry_from_the_past(Duration::ZERO, live));
    }
    assert!(c.weighted_size() <= cfg.max_bytes, "{}", c.weighted_size());
    let held = c.entry_count();
    assert!(held > 0 && held < 500, "{held} held");
    assert_eq!(evictions(&m, "size"), 500 - held);
    assert_eq!(evictions(&m, "expired"), 0);

    let again = CacheKey::from(c.key(Some(&t[1]), KeyClass::ApiKey, info, b"{}"));
    c.insert(again.clone(), entry_from_the_past(Duration::ZERO, live));
    c.insert(again.clone(), entry_from_the_past(Duration::ZERO, live));
    assert_eq!(evictions(&m, "replaced"), 1);
    c.remove(&again);
    c.remove(&again);
    assert_eq!(evictions(&m, "explicit"), 1);
    assert!(matches!(c.lookup(&again), Lookup::Absent));
}

/// Keys and entries never print the bodies they hold: a caller's body or an answer may carry an
/// `extension_password`.
#[test]
fn keys_and_entries_print_no_body() {
    const CANARY: &str = "canary-extension-password-4f1d";
    let t = tenants();
    let c = Cache::new(&cfg(), &t, metrics());
    let m = method(INFO);
    let body = format!(r#"{{"extension_password":"{CANARY}"}}"#);
    let key = c.key(Some(&t[0]), KeyClass::ApiKey, m, body.as_bytes());
    let answer = Bytes::from(format!(
        r#"{{"extension_password":"{CANARY}","expires_at":"2999-01-01T00:00:00Z"}}"#
    ));
    let entry = c
        .entry(m, http::StatusCode::OK, None, &answer)
        .expect("entry");
    let borrowed = format!("{key:?}");
    let printed = format!("{borrowed} {:?} {entry:?}", CacheKey::from(key));
    assert!(!printed.contains(CANARY), "{printed}");
    assert!(printed.contains("body_len"), "{printed}");
}
