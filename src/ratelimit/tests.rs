use std::time::Instant;

use governor::clock::FakeRelativeClock;

use super::feedback::upstream_backoff_at;
use super::*;
use http::header::RETRY_AFTER;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

fn policy(rps: u32, burst: u32) -> Policy {
    Policy::new(
        NonZeroU32::new(rps).expect("rps > 0"),
        NonZeroU32::new(burst).expect("burst > 0"),
    )
}

fn fake(settings: Settings) -> (RateLimiter<FakeRelativeClock>, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    (RateLimiter::with_clock(settings, clock.clone()), clock)
}

fn tenant(id: &str) -> Arc<str> {
    Arc::from(id)
}

fn api(t: &Arc<str>) -> Bucket<'_> {
    Bucket::Tenant {
        tenant: t,
        class: KeyClass::ApiKey,
    }
}

fn shop(t: &Arc<str>) -> Bucket<'_> {
    Bucket::Tenant {
        tenant: t,
        class: KeyClass::ShopKey,
    }
}

fn drain<C: Clock>(lim: &RateLimiter<C>, bucket: Bucket<'_>, n: u32) {
    for i in 0..n {
        let d = lim.check(bucket);
        assert_eq!(d.outcome, Outcome::Allowed, "permit {i}");
        assert_eq!(d.retry_after, None);
    }
}

fn state(d: &Decision) -> &str {
    d.headers.state.to_str().expect("ascii")
}

fn policy_header(d: &Decision) -> &str {
    d.headers.policy.to_str().expect("ascii")
}

#[test]
fn outcome_labels_are_exact() {
    let all = [
        (Outcome::Allowed, "allowed"),
        (Outcome::Limited, "limited"),
        (Outcome::Queued, "queued"),
        (Outcome::ShadowLimited, "shadow_limited"),
        (Outcome::UpstreamPaused, "upstream_paused"),
    ];
    for (o, s) in all {
        assert_eq!(o.as_str(), s);
        assert_eq!(o.to_string(), s);
    }
}

#[test]
fn burst_then_denied_with_retry_after_of_one_interval() {
    let (lim, clock) = fake(Settings::new(policy(10, 3)));
    let t = tenant("shop-a");
    drain(&lim, api(&t), 3);
    let d = lim.check(api(&t));
    assert_eq!(d.outcome, Outcome::Limited);
    assert!(d.is_denied());
    assert_eq!(d.retry_after, Some(Duration::from_millis(100)));
    assert_eq!(d.retry_after_secs(), Some(1));
    clock.advance(Duration::from_millis(40));
    assert_eq!(
        lim.check(api(&t)).retry_after,
        Some(Duration::from_millis(60))
    );
    clock.advance(Duration::from_millis(60));
    assert_eq!(lim.check(api(&t)).outcome, Outcome::Allowed);
    assert_eq!(lim.check(api(&t)).outcome, Outcome::Limited);
}

#[test]
fn one_tenant_exhausted_leaves_others_untouched() {
    let (lim, _clock) = fake(Settings::new(policy(1, 2)));
    let (a, b) = (tenant("a"), tenant("b"));
    drain(&lim, api(&a), 2);
    assert_eq!(lim.check(api(&a)).outcome, Outcome::Limited);
    drain(&lim, api(&b), 2);
    assert_eq!(lim.check(api(&b)).outcome, Outcome::Limited);
    assert_eq!(lim.check(Bucket::Partner).outcome, Outcome::Allowed);
}

#[test]
fn api_key_and_shop_key_of_one_tenant_are_separate_buckets() {
    let (lim, _clock) = fake(Settings::new(policy(1, 2)));
    let a = tenant("a");
    drain(&lim, api(&a), 2);
    assert_eq!(lim.check(api(&a)).outcome, Outcome::Limited);
    drain(&lim, shop(&a), 2);
    assert_eq!(lim.check(shop(&a)).outcome, Outcome::Limited);
    assert_eq!(lim.tracked_buckets(), 2);
}

#[test]
fn partner_is_one_shared_bucket() {
    let (lim, _clock) = fake(Settings::new(policy(1, 3)));
    let (a, b) = (tenant("a"), tenant("b"));
    // However the partner bucket is named, it is the same bucket.
    let via_a = Bucket::for_credential(Some(&a), KeyClass::Partner).expect("bucket");
    let via_b = Bucket::Tenant {
        tenant: &b,
        class: KeyClass::Partner,
    };
    assert_eq!(via_a, Bucket::Partner);
    assert_eq!(lim.check(via_a).outcome, Outcome::Allowed);
    assert_eq!(lim.check(via_b).outcome, Outcome::Allowed);
    assert_eq!(lim.check(Bucket::Partner).outcome, Outcome::Allowed);
    let d = lim.check(via_a);
    assert_eq!(d.outcome, Outcome::Limited);
    assert_eq!(d.policy, PolicyName::Default);
    // Tenant buckets are unaffected, and the partner bucket is not a keyed entry.
    assert_eq!(lim.check(api(&a)).outcome, Outcome::Allowed);
    assert_eq!(lim.tracked_buckets(), 1);
}

#[test]
fn bucket_for_credential() {
    let a = tenant("a");
    assert_eq!(
        Bucket::for_credential(Some(&a), KeyClass::ShopKey),
        Some(shop(&a))
    );
    assert_eq!(
        Bucket::for_credential(None, KeyClass::Partner),
        Some(Bucket::Partner)
    );
    assert_eq!(Bucket::for_credential(None, KeyClass::ApiKey), None);
    assert_eq!(shop(&a).tenant(), Some("a"));
    assert_eq!(shop(&a).key_class(), KeyClass::ShopKey);
    let odd = Bucket::Tenant {
        tenant: &a,
        class: KeyClass::Partner,
    };
    assert_eq!((odd.tenant(), odd.key_class()), (None, KeyClass::Partner));
}

#[test]
fn tenant_override_applies_to_both_key_classes_each_its_own_bucket() {
    let mut settings = Settings::new(policy(1, 1));
    settings.tenants.insert(tenant("big"), policy(100, 5));
    let (lim, _clock) = fake(settings);
    let (big, small) = (tenant("big"), tenant("small"));
    drain(&lim, api(&big), 5);
    let d = lim.check(api(&big));
    assert_eq!(
        (d.outcome, d.policy),
        (Outcome::Limited, PolicyName::Tenant)
    );
    assert_eq!(d.retry_after, Some(Duration::from_millis(10)));
    assert_eq!(policy_header(&d), "\"tenant\";q=5;w=1");
    drain(&lim, shop(&big), 5);
    assert_eq!(lim.check(shop(&big)).outcome, Outcome::Limited);
    // Override tenants never enter the keyed (default) store.
    assert_eq!(lim.tracked_buckets(), 0);
    // Others stay on the default.
    drain(&lim, api(&small), 1);
    let d = lim.check(api(&small));
    assert_eq!(
        (d.outcome, d.policy),
        (Outcome::Limited, PolicyName::Default)
    );
    assert_eq!(d.retry_after, Some(Duration::from_secs(1)));
}

#[test]
fn partner_override_applies() {
    let mut settings = Settings::new(policy(1, 1));
    settings.partner = Some(policy(50, 4));
    let (lim, _clock) = fake(settings);
    drain(&lim, Bucket::Partner, 4);
    let d = lim.check(Bucket::Partner);
    assert_eq!(
        (d.outcome, d.policy),
        (Outcome::Limited, PolicyName::Partner)
    );
    assert_eq!(d.retry_after, Some(Duration::from_millis(20)));
    assert_eq!(policy_header(&d), "\"partner\";q=4;w=1");
    assert_eq!(state(&d), "\"partner\";r=0;t=1");
}

#[test]
fn header_values_are_exact() {
    let (lim, clock) = fake(Settings::new(policy(10, 20)));
    let a = tenant("a");
    let first = lim.check(api(&a));
    assert_eq!(policy_header(&first), "\"default\";q=20;w=2");
    assert_eq!(state(&first), "\"default\";r=19;t=1");
    assert_eq!(state(&lim.check(api(&a))), "\"default\";r=18;t=1");
    for _ in 0..8 {
        let _ = lim.check(api(&a));
    }
    // 10 used: full again in 10 × 100 ms.
    assert_eq!(state(&lim.check(api(&a))), "\"default\";r=9;t=2");
    for _ in 0..9 {
        let _ = lim.check(api(&a));
    }
    let denied = lim.check(api(&a));
    assert!(denied.is_denied());
    assert_eq!(policy_header(&denied), "\"default\";q=20;w=2");
    assert_eq!(state(&denied), "\"default\";r=0;t=1");
    clock.advance(Duration::from_secs(2));
    assert_eq!(state(&lim.check(api(&a))), "\"default\";r=19;t=1");

    let mut map = HeaderMap::new();
    denied.headers.insert_into(&mut map);
    assert_eq!(map[RATELIMIT_POLICY], "\"default\";q=20;w=2");
    assert_eq!(map["RateLimit"], "\"default\";r=0;t=1");
}

#[test]
fn policy_window_is_rounded_up_and_at_least_one_second() {
    assert_eq!(policy(10, 20).window_secs(), 2);
    assert_eq!(policy(3, 10).window_secs(), 4);
    assert_eq!(policy(100, 5).window_secs(), 1);
    assert_eq!(policy(1, 1).window_secs(), 1);
    let (lim, _clock) = fake(Settings::new(policy(3, 10)));
    let d = lim.check(Bucket::Partner);
    assert_eq!(policy_header(&d), "\"default\";q=10;w=4");
    // One used at 333.333333 ms per permit: full again in under a second.
    assert_eq!(state(&d), "\"default\";r=9;t=1");
}

#[test]
fn retry_after_secs_rounds_up() {
    let (lim, clock) = fake(Settings::new(policy(1, 1)));
    let _ = lim.check(Bucket::Partner);
    clock.advance(Duration::from_millis(999));
    let d = lim.check(Bucket::Partner);
    assert_eq!(d.retry_after, Some(Duration::from_millis(1)));
    assert_eq!(d.retry_after_secs(), Some(1));
    assert_eq!(state(&d), "\"default\";r=0;t=1");
    clock.advance(Duration::from_millis(1));
    assert_eq!(lim.check(Bucket::Partner).retry_after_secs(), None);
}

#[test]
fn shadow_mode_never_denies_but_reports_shadow_limited() {
    let mut settings = Settings::new(policy(1, 2));
    settings.enforce = false;
    let (lim, _clock) = fake(settings);
    let a = tenant("a");
    drain(&lim, api(&a), 2);
    for _ in 0..5 {
        let d = lim.check(api(&a));
        assert_eq!(d.outcome, Outcome::ShadowLimited);
        assert_eq!(d.retry_after, None);
        assert!(!d.is_denied());
        assert_eq!(state(&d), "\"default\";r=0;t=1");
    }
    // Paused credentials are not denied either.
    lim.pause(Bucket::Partner, Duration::from_secs(5));
    let d = lim.check(Bucket::Partner);
    assert_eq!((d.outcome, d.retry_after), (Outcome::ShadowLimited, None));
}

#[tokio::test]
async fn shadow_queue_mode_never_waits() {
    let mut settings = Settings::new(policy(1, 1));
    settings.enforce = false;
    settings.mode = Mode::Queue {
        max_wait: Duration::from_secs(5),
    };
    let (lim, _clock) = fake(settings);
    let a = tenant("a");
    assert_eq!(lim.acquire(api(&a)).await.outcome, Outcome::Allowed);
    // Would only have been queued: no rejection to report, and no wait.
    let d = lim.acquire(api(&a)).await;
    assert_eq!((d.outcome, d.retry_after), (Outcome::Allowed, None));
    lim.pause(api(&a), Duration::from_secs(1));
    let d = lim.acquire(api(&a)).await;
    assert_eq!((d.outcome, d.retry_after), (Outcome::ShadowLimited, None));
}

fn queue(rps: u32, max_wait: Duration) -> RateLimiter {
    let mut settings = Settings::new(policy(rps, 1));
    settings.mode = Mode::Queue { max_wait };
    RateLimiter::new(settings)
}

#[tokio::test]
async fn queue_mode_waits_then_succeeds() {
    // 20 per second, burst 1: the second call needs ~50 ms.
    let lim = queue(20, Duration::from_millis(500));
    let a = tenant("a");
    assert_eq!(lim.acquire(api(&a)).await.outcome, Outcome::Allowed);
    let started = Instant::now();
    let d = lim.acquire(api(&a)).await;
    assert_eq!((d.outcome, d.retry_after), (Outcome::Queued, None));
    assert!(started.elapsed() >= Duration::from_millis(30), "it waited");
}

#[tokio::test]
async fn queue_mode_rejects_at_once_when_the_wait_exceeds_max_wait() {
    // 1 per second, burst 1: the second call needs ~1 s, more than the 500 ms allowed.
    let lim = queue(1, Duration::from_millis(500));
    let a = tenant("a");
    assert_eq!(lim.acquire(api(&a)).await.outcome, Outcome::Allowed);
    let started = Instant::now();
    let d = lim.acquire(api(&a)).await;
    assert!(started.elapsed() < Duration::from_millis(250), "no wait");
    assert_eq!(d.outcome, Outcome::Limited);
    let wait = d.retry_after.expect("denied");
    assert!(wait > Duration::from_millis(500) && wait <= Duration::from_secs(1));
}

#[tokio::test]
async fn queue_mode_does_not_wait_out_a_pause() {
    let lim = queue(1, Duration::from_secs(10));
    let a = tenant("a");
    lim.pause(api(&a), Duration::from_secs(2));
    let started = Instant::now();
    let d = lim.acquire(api(&a)).await;
    assert!(started.elapsed() < Duration::from_millis(250), "no wait");
    assert_eq!(d.outcome, Outcome::UpstreamPaused);
}

#[tokio::test]
async fn reject_mode_acquire_is_check() {
    let (lim, _clock) = fake(Settings::new(policy(1, 1)));
    assert_eq!(lim.acquire(Bucket::Partner).await.outcome, Outcome::Allowed);
    let d = lim.acquire(Bucket::Partner).await;
    assert_eq!(d.outcome, Outcome::Limited);
    assert_eq!(d.retry_after, Some(Duration::from_secs(1)));
}

#[test]
fn acquire_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let lim = RateLimiter::new(Settings::new(policy(1, 1)));
    let a = tenant("a");
    let fut = lim.acquire(api(&a));
    assert_send(&fut);
}

#[test]
fn pause_denies_for_its_duration_then_allows() {
    let (lim, clock) = fake(Settings::new(policy(10, 10)));
    let (a, b) = (tenant("a"), tenant("b"));
    lim.pause(api(&a), Duration::from_secs(5));
    let d = lim.check(api(&a));
    assert_eq!(d.outcome, Outcome::UpstreamPaused);
    assert_eq!(d.retry_after, Some(Duration::from_secs(5)));
    assert_eq!(state(&d), "\"default\";r=0;t=5");
    // Only that credential is paused.
    assert_eq!(lim.check(shop(&a)).outcome, Outcome::Allowed);
    assert_eq!(lim.check(api(&b)).outcome, Outcome::Allowed);
    assert_eq!(lim.check(Bucket::Partner).outcome, Outcome::Allowed);
    clock.advance(Duration::from_millis(3500));
    let d = lim.check(api(&a));
    assert_eq!(d.outcome, Outcome::UpstreamPaused);
    assert_eq!(d.retry_after, Some(Duration::from_millis(1500)));
    assert_eq!(d.retry_after_secs(), Some(2));
    // A shorter pause does not cut the running one.
    lim.pause(api(&a), Duration::from_millis(100));
    assert_eq!(
        lim.check(api(&a)).retry_after,
        Some(Duration::from_millis(1500))
    );
    clock.advance(Duration::from_millis(1500));
    let d = lim.check(api(&a));
    assert_eq!(d.outcome, Outcome::Allowed);
    // The paused calls did not use permits.
    assert_eq!(state(&d), "\"default\";r=9;t=1");
}

#[test]
fn pause_of_partner_and_override_buckets() {
    let mut settings = Settings::new(policy(10, 10));
    settings.tenants.insert(tenant("big"), policy(100, 100));
    let (lim, clock) = fake(settings);
    let big = tenant("big");
    lim.pause(Bucket::Partner, Duration::from_secs(1));
    lim.pause(shop(&big), Duration::from_secs(2));
    let d = lim.check(shop(&big));
    assert_eq!(
        (d.outcome, d.policy),
        (Outcome::UpstreamPaused, PolicyName::Tenant)
    );
    assert_eq!(lim.check(api(&big)).outcome, Outcome::Allowed);
    let d = lim.check(Bucket::Partner);
    assert_eq!(
        (d.outcome, d.policy),
        (Outcome::UpstreamPaused, PolicyName::Default)
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(lim.check(Bucket::Partner).outcome, Outcome::Allowed);
    assert_eq!(lim.check(shop(&big)).outcome, Outcome::UpstreamPaused);
}

#[test]
fn pause_is_capped_and_zero_is_ignored() {
    let (lim, _clock) = fake(Settings::new(policy(10, 10)));
    lim.pause(Bucket::Partner, Duration::ZERO);
    assert_eq!(lim.check(Bucket::Partner).outcome, Outcome::Allowed);
    lim.pause(Bucket::Partner, Duration::from_secs(u64::MAX));
    assert_eq!(lim.check(Bucket::Partner).retry_after, Some(MAX_PAUSE));
}

#[test]
fn observe_upstream_pauses_on_quota_answers_only() {
    let mut settings = Settings::new(policy(10, 10));
    settings.upstream_backoff = Duration::from_secs(12);
    let (lim, _clock) = fake(settings);
    let a = tenant("a");
    let none = HeaderMap::new();
    assert_eq!(
        lim.observe_upstream(api(&a), StatusCode::OK, &none, b"{}"),
        None
    );
    assert_eq!(lim.check(api(&a)).outcome, Outcome::Allowed);
    assert_eq!(
        lim.observe_upstream(api(&a), StatusCode::TOO_MANY_REQUESTS, &none, b""),
        Some(Duration::from_secs(12))
    );
    let d = lim.check(api(&a));
    assert_eq!(d.outcome, Outcome::UpstreamPaused);
    assert_eq!(d.retry_after, Some(Duration::from_secs(12)));
}

fn retry_after(v: &'static str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(RETRY_AFTER, HeaderValue::from_static(v));
    h
}

#[test]
fn upstream_backoff_cases() {
    let default = Duration::from_secs(30);
    let none = HeaderMap::new();
    let exhausted = br#"{"code":"resource_exhausted","msg":"quota"}"#;
    let denied = br#"{"code":"permission_denied","msg":"no"}"#;
    let cases: [(StatusCode, HeaderMap, &[u8], Option<Duration>); 9] = [
        (
            StatusCode::TOO_MANY_REQUESTS,
            retry_after("7"),
            b"",
            Some(Duration::from_secs(7)),
        ),
        (
            StatusCode::TOO_MANY_REQUESTS,
            none.clone(),
            b"",
            Some(default),
        ),
        (
            StatusCode::TOO_MANY_REQUESTS,
            retry_after("soon"),
            b"",
            Some(default),
        ),
        (
            StatusCode::FORBIDDEN,
            retry_after(" 2 "),
            exhausted,
            Some(Duration::from_secs(2)),
        ),
        (
            StatusCode::FORBIDDEN,
            none.clone(),
            exhausted,
            Some(default),
        ),
        (StatusCode::FORBIDDEN, retry_after("2"), denied, None),
        (StatusCode::FORBIDDEN, none.clone(), b"not json", None),
        (StatusCode::OK, retry_after("2"), exhausted, None),
        (StatusCode::SERVICE_UNAVAILABLE, retry_after("2"), b"", None),
    ];
    for (i, (status, headers, body, want)) in cases.into_iter().enumerate() {
        assert_eq!(
            upstream_backoff(status, &headers, body, default),
            want,
            "case {i}"
        );
    }
}

#[test]
fn upstream_backoff_http_date() {
    let now = OffsetDateTime::parse("Wed, 21 Oct 2015 07:28:00 GMT", &Rfc2822).expect("date");
    let at = |v| {
        upstream_backoff_at(
            StatusCode::TOO_MANY_REQUESTS,
            &retry_after(v),
            b"",
            Duration::from_secs(30),
            now,
        )
    };
    assert_eq!(
        at("Wed, 21 Oct 2015 07:28:42 GMT"),
        Some(Duration::from_secs(42))
    );
    assert_eq!(at("Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO));
    assert_eq!(
        at("Wednesday, 21-Oct-15 07:28:42 GMT"),
        Some(Duration::from_secs(30))
    );
}

#[test]
fn housekeeping_drops_idle_keys_and_expired_pauses() {
    let (lim, clock) = fake(Settings::new(policy(10, 5)));
    let ids: Vec<Arc<str>> = (0..50).map(|i| tenant(&format!("t{i}"))).collect();
    for t in &ids {
        let _ = lim.check(api(t));
        let _ = lim.check(shop(t));
    }
    assert_eq!(lim.tracked_buckets(), 100);
    // Still refilling: kept.
    lim.housekeeping();
    assert_eq!(lim.tracked_buckets(), 100);
    // One tenant stays busy.
    clock.advance(Duration::from_millis(500));
    drain(&lim, api(&ids[0]), 5);
    lim.pause(api(&ids[1]), Duration::from_secs(1));
    lim.pause(Bucket::Partner, Duration::from_secs(10));
    lim.housekeeping();
    assert_eq!(lim.tracked_buckets(), 1);
    assert_eq!(lim.check(api(&ids[1])).outcome, Outcome::UpstreamPaused);
    // Expired pauses go; running ones stay.
    clock.advance(Duration::from_secs(1));
    lim.housekeeping();
    assert!(lim.any_paused.load(Ordering::Acquire));
    assert_eq!(lim.lock_pauses().tenants.len(), 0);
    assert_eq!(lim.check(api(&ids[1])).outcome, Outcome::Allowed);
    assert_eq!(lim.check(Bucket::Partner).outcome, Outcome::UpstreamPaused);
    clock.advance(Duration::from_secs(9));
    lim.housekeeping();
    assert!(!lim.any_paused.load(Ordering::Acquire));
    // A dropped bucket comes back full.
    assert_eq!(state(&lim.check(api(&ids[2]))), "\"default\";r=4;t=1");
}

fn sms(t: &Arc<str>) -> Bucket<'_> {
    Bucket::Tenant {
        tenant: t,
        class: KeyClass::Sms,
    }
}

#[test]
fn the_sms_bucket_is_a_third_bucket_with_its_own_override() {
    let mut settings = Settings::new(policy(1, 1));
    settings.tenants.insert(tenant("big"), policy(100, 5));
    settings.sms.insert(tenant("big"), policy(100, 2));
    settings.tenants.insert(tenant("mid"), policy(100, 3));
    let (lim, clock) = fake(settings);
    let (big, mid, small) = (tenant("big"), tenant("mid"), tenant("small"));
    // sms_rate_limit wins over the tenant's rate_limit, under its own policy name.
    drain(&lim, sms(&big), 2);
    let d = lim.check(sms(&big));
    assert_eq!((d.outcome, d.policy), (Outcome::Limited, PolicyName::Sms));
    assert_eq!(policy_header(&d), "\"sms\";q=2;w=1");
    // The tenant's other buckets are untouched by it.
    drain(&lim, api(&big), 5);
    drain(&lim, shop(&big), 5);
    // Without sms_rate_limit the tenant's rate_limit applies, in a bucket of its own.
    drain(&lim, sms(&mid), 3);
    let d = lim.check(sms(&mid));
    assert_eq!(
        (d.outcome, d.policy),
        (Outcome::Limited, PolicyName::Tenant)
    );
    drain(&lim, api(&mid), 3);
    // Default tenants: one keyed bucket per class.
    drain(&lim, sms(&small), 1);
    assert_eq!(lim.check(sms(&small)).outcome, Outcome::Limited);
    drain(&lim, api(&small), 1);
    // A pause of the SMS bucket leaves the tenant's API buckets alone.
    clock.advance(Duration::from_secs(2));
    lim.pause(sms(&small), Duration::from_secs(5));
    assert_eq!(lim.check(sms(&small)).outcome, Outcome::UpstreamPaused);
    assert_eq!(lim.check(api(&small)).outcome, Outcome::Allowed);
    assert_eq!(lim.check(shop(&small)).outcome, Outcome::Allowed);
}
