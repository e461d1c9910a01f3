//! Shared limits: one credential's burst and rate hold across the fleet, credentials stay
//! separate buckets, and eTelecom's quota answer to one gateway pauses the credential on all.

use std::time::{Duration, Instant};

use crate::common::post_with;
use crate::fleet_support::Fleet;
use crate::support::{CALL_LOGS, poll};

const PARTNER_CALL_LOGS: &str = "/v1/partner.Etelecom/ListCallLogs";

/// Sends `n` calls to `path` for `tenant`, round-robin over the fleet's gateways; returns the
/// statuses and how long it took.
fn round_robin(f: &Fleet, path: &str, tenant: &str, n: usize) -> (Vec<u16>, Duration) {
    let started = Instant::now();
    let statuses = f.rt.block_on(async {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let gw = &f.gateways[i % f.gateways.len()];
            let r = f
                .http
                .send(post_with(gw.public, path, Some(tenant), "{}", &[]))
                .await;
            if r.status == 429 {
                r.assert_gateway_error(429, "resource_exhausted");
                assert!(r.headers.contains_key("retry-after"));
                assert!(r.headers.contains_key("ratelimit-policy"));
            }
            out.push(r.status.as_u16());
        }
        out
    });
    (statuses, started.elapsed())
}

/// The most calls one credential may send in `elapsed`: its burst plus rate × time (rounded up).
fn bound(burst: u32, rps: u32, elapsed: Duration) -> usize {
    (burst as f64 + rps as f64 * elapsed.as_secs_f64()).ceil() as usize
}

/// Three gateways, one credential with burst 4 at 1 request/s: eTelecom receives at most
/// burst + rate × time in total (three independent gateways would let 12 through at once).
#[test]
fn a_burst_split_across_gateways_stays_within_one_credential_budget() {
    let Some(f) = Fleet::start("fleet_burst", 3, |s| {
        s.rate_limit = "requests_per_second = 1\nburst = 4".into();
    }) else {
        return;
    };
    let (statuses, elapsed) = round_robin(&f, CALL_LOGS, "acme", 24);
    let passed = statuses.iter().filter(|&&s| s == 200).count();
    let received = f.mock.request_count();
    assert_eq!(passed, received, "{statuses:?}");
    assert!(received >= 4, "the burst passes: {statuses:?}");
    assert!(
        received <= bound(4, 1, elapsed),
        "{received} upstream calls in {elapsed:?}: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 429),
        "{statuses:?}"
    );
    // The bucket lives in Redis under the tenant and key class, with a TTL.
    let keys = f.redis.dump_all();
    let tat = keys
        .iter()
        .find(|(k, _, _)| k == "fleet-test:rl:{acme:api_key}:tat")
        .unwrap_or_else(|| panic!("{keys:?}"));
    assert!(tat.1 > 0 && tat.1 <= 25_000, "TTL {} ms", tat.1);
    f.assert_no_secrets_in_redis(&[]);
}

/// A tenant's own key, its partner-issued shop key, and another tenant: three buckets, each
/// with its own burst across the fleet.
#[test]
fn shop_and_partner_keys_and_tenants_are_separate_buckets() {
    let Some(f) = Fleet::start("fleet_buckets", 2, |s| {
        s.rate_limit = "requests_per_second = 1\nburst = 2".into();
    }) else {
        return;
    };
    for (path, tenant) in [
        (CALL_LOGS, "acme"),
        (PARTNER_CALL_LOGS, "acme"),
        (CALL_LOGS, "globex"),
    ] {
        let (statuses, elapsed) = round_robin(&f, path, tenant, 6);
        let passed = statuses.iter().filter(|&&s| s == 200).count();
        assert!(
            passed >= 2 && passed <= bound(2, 1, elapsed),
            "{tenant} {path}: {statuses:?} in {elapsed:?}"
        );
    }
    let keys = f.redis.keys();
    for k in [
        "fleet-test:rl:{acme:api_key}:tat",
        "fleet-test:rl:{acme:shop_key}:tat",
        "fleet-test:rl:{globex:api_key}:tat",
    ] {
        assert!(keys.iter().any(|x| x == k), "{k} in {keys:?}");
    }
    f.assert_no_secrets_in_redis(&[]);
}

/// eTelecom answers gateway A with 429 and `Retry-After: 2`: gateway B answers that credential
/// with its own 429 without calling eTelecom until the pause ends, then calls again. Another
/// tenant is not paused.
#[test]
fn a_quota_answer_to_one_gateway_pauses_the_credential_on_all() {
    let Some(f) = Fleet::start("fleet_pause", 2, |_| {}) else {
        return;
    };
    let (a, b) = (f.gateways[0].public, f.gateways[1].public);
    f.rt.block_on(async {
        let quota = [("x-mock-behaviour", "status=429;retry_after=2")];
        let r = f
            .http
            .send(post_with(a, CALL_LOGS, Some("acme"), "{}", &quota))
            .await;
        assert_eq!(r.status, 429, "eTelecom's own 429, relayed");
        let paused_at = Instant::now();
        assert_eq!(f.mock.request_count(), 1);

        let r = f
            .http
            .send(post_with(b, CALL_LOGS, Some("acme"), "{}", &[]))
            .await;
        r.assert_gateway_error(429, "resource_exhausted");
        let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry), "Retry-After {retry}");
        assert_eq!(f.mock.request_count(), 1, "B did not call eTelecom");

        let r = f
            .http
            .send(post_with(b, CALL_LOGS, Some("globex"), "{}", &[]))
            .await;
        assert_eq!(r.status, 200, "another tenant is not paused");
        assert_eq!(f.mock.request_count(), 2);

        let r = poll(
            Duration::from_secs(6),
            Duration::from_millis(100),
            "B calls again",
            || async {
                let r = f
                    .http
                    .send(post_with(b, CALL_LOGS, Some("acme"), "{}", &[]))
                    .await;
                (r.status == 200).then_some(r)
            },
        )
        .await;
        assert_eq!(r.status, 200);
        assert!(
            paused_at.elapsed() >= Duration::from_millis(1500),
            "the pause held: {:?}",
            paused_at.elapsed()
        );
        assert_eq!(f.mock.request_count(), 3);
    });
    f.assert_no_secrets_in_redis(&[]);
}
