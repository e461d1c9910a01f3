//! Redis is not a single point of failure: stopped mid-load (local fallback) or frozen (reject
//! mode: clean 503s), requests neither fail nor hang past `timeout_ms`, `cluster_up` drops to 0, the
//! fallback counter moves, one log line each way, and fleet mode resumes without restarts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cache::{BOUND, cache_on, miss_within, write};
use crate::common::{post, post_with};
use crate::fleet_support::{Fleet, cluster_section};
use crate::support::{CALL_LOGS, poll};

/// Slack over `timeout_ms` for one request on a loaded two-core box (the mock answers in
/// microseconds).
const SLACK: Duration = Duration::from_millis(400);

const GONE: &str = "Redis is unavailable";
const BACK: &str = "Redis is reachable again";

/// Calls from a background task until stopped; returns every (status, latency).
fn load(f: &Fleet, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<(u16, Duration)>> {
    let http = f.http.clone();
    let gws: Vec<_> = f.gateways.iter().map(|g| g.public).collect();
    f.rt.spawn(async move {
        let mut out = Vec::new();
        let mut i = 0;
        while !stop.load(Ordering::Acquire) && out.len() < 100_000 {
            let started = Instant::now();
            let r = http
                .send(post(gws[i % gws.len()], CALL_LOGS, Some("acme"), "{}"))
                .await;
            out.push((r.status.as_u16(), started.elapsed()));
            i += 1;
        }
        out
    })
}

fn count(gw: &crate::common::proc::Gateway, needle: &str) -> usize {
    gw.proc.log.iter().filter(|l| l.contains(needle)).count()
}

#[test]
fn redis_stopped_mid_load_falls_back_then_fleet_mode_resumes() {
    let timeout = Duration::from_millis(100);
    let Some(mut f) = Fleet::start_with("fleet_redis_down", 2, None, |s| {
        s.extra.push_str(&cluster_section(100, "local"));
        s.globex = "rate_limit = { requests_per_second = 1, burst = 3 }".into();
    }) else {
        return;
    };
    f.wait_subscribed(1.0);
    let (a, b) = (f.gateways[0].public, f.gateways[1].public);
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(&f, stop.clone());

    f.redis.stop();
    for gw in &mut f.gateways {
        let line = gw.proc.wait_for(Duration::from_secs(10), GONE);
        assert!(line.contains("\"on_unavailable\":\"local\""), "{line}");
    }
    // The cache during the gap: B caches, A writes (its publish fails), B's entry is not served
    // past the incoherent bound.
    f.rt.block_on(async {
        cache_on(&f, b, "acme").await;
        write(&f, a, "acme").await;
        miss_within(&f, b, "acme", BOUND + SLACK).await;
    });
    stop.store(true, Ordering::Release);
    let during = f.rt.block_on(running).unwrap();
    assert!(during.len() > 10, "load ran: {}", during.len());
    let slowest = during.iter().map(|(_, d)| *d).max().unwrap();
    assert!(
        during.iter().all(|(s, _)| *s == 200),
        "local fallback serves: {during:?}"
    );
    assert!(slowest < timeout + SLACK, "slowest request {slowest:?}");
    for i in 0..2 {
        assert_eq!(f.sample(i, "etelecom_gateway_cluster_up", &[]), 0.0);
        let fallback = f.sample(i, "etelecom_gateway_cluster_fallback_total", &[]);
        assert!(fallback >= 1.0, "gateway {i}: fallback {fallback}");
        let ready =
            f.rt.block_on(f.http.get(&f.gateways[i].admin_url("/readyz")));
        assert_eq!(ready.status, 200, "ready while the fallback serves");
    }

    f.redis.restart();
    for gw in &mut f.gateways {
        gw.proc.wait_for(Duration::from_secs(10), BACK);
    }
    for gw in &mut f.gateways {
        gw.proc.read_available();
        assert_eq!(count(gw, GONE), 1, "one line when Redis went away");
        assert_eq!(count(gw, BACK), 1, "one line when it came back");
    }
    f.wait_subscribed(2.0);
    assert_eq!(f.sample(0, "etelecom_gateway_cluster_up", &[]), 1.0);
    // Shared limits again: globex's burst of 3 holds across both gateways.
    let started = Instant::now();
    let passed = f.rt.block_on(async {
        let mut passed = 0;
        for i in 0..12 {
            let gw = [a, b][i % 2];
            let r = f.http.send(post(gw, CALL_LOGS, Some("globex"), "{}")).await;
            passed += usize::from(r.status == 200);
        }
        passed
    });
    let bound = 3 + started.elapsed().as_secs_f64().ceil() as usize;
    assert!(
        (3..=bound).contains(&passed),
        "{passed} of 12 passed (bound {bound})"
    );
    // Invalidations again.
    f.rt.block_on(async {
        cache_on(&f, b, "acme").await;
        write(&f, a, "acme").await;
        miss_within(&f, b, "acme", BOUND).await;
    });
    f.assert_no_secrets_in_redis(&[]);
}

#[test]
fn reject_mode_answers_clean_503s_while_redis_hangs() {
    let timeout = Duration::from_millis(100);
    let Some(mut f) = Fleet::start_with("fleet_reject", 1, None, |s| {
        s.extra.push_str(&cluster_section(100, "reject"));
    }) else {
        return;
    };
    f.wait_subscribed(1.0);
    let gw = f.gateways[0].public;
    f.redis.signal("STOP");
    let replies = f.rt.block_on(async {
        let mut out = Vec::new();
        for _ in 0..8 {
            let started = Instant::now();
            let r = f
                .http
                .send(post_with(gw, CALL_LOGS, Some("acme"), "{}", &[]))
                .await;
            out.push((r, started.elapsed()));
        }
        out
    });
    for (r, took) in &replies {
        r.assert_gateway_error(503, "unavailable");
        assert!(*took < timeout + SLACK, "took {took:?}");
    }
    // The circuit is open: the last calls did not wait for Redis at all.
    assert!(
        replies.last().unwrap().1 < timeout,
        "{:?}",
        replies.last().unwrap().1
    );
    f.gateways[0].proc.wait_for(Duration::from_secs(5), GONE);
    assert_eq!(f.sample(0, "etelecom_gateway_cluster_up", &[]), 0.0);
    assert!(
        f.sample(
            0,
            "etelecom_gateway_cluster_fallback_total",
            &[("reason", "circuit_open")]
        ) >= 1.0
    );
    f.redis.signal("CONT");
    f.gateways[0].proc.wait_for(Duration::from_secs(10), BACK);
    let r = f.rt.block_on(poll(
        Duration::from_secs(5),
        Duration::from_millis(50),
        "200 again",
        || async {
            let r = f.http.send(post(gw, CALL_LOGS, Some("acme"), "{}")).await;
            (r.status == 200).then_some(r)
        },
    ));
    assert_eq!(r.status, 200);
}
