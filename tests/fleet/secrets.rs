//! A Redis with `requirepass`: the right password works, a wrong one is a clear error in
//! `check --probe` and in the log, and the password appears in no log line (trace level),
//! metric, `/config`, error body or Redis key or value.

use std::time::Duration;

use crate::cache::{cache_on, write};
use crate::common::post;
use crate::common::proc::{Gateway, check_probe};
use crate::fleet_support::Fleet;
use crate::support::CALL_LOGS;

const PASSWORD: &str = "fleet-canary-redis-pw-6f1d2c";
const WRONG: &str = "fleet-canary-wrong-pw-0b9e7a";

/// `check --probe` on the fleet's config with `url` as `GATEWAY_REDIS_URL`, at trace level.
fn probe(f: &Fleet, url: &str) -> (Option<i32>, String) {
    check_probe(
        &f.config,
        &[("GATEWAY_REDIS_URL", url), ("RUST_LOG", "trace")],
    )
}

#[test]
fn requirepass_right_password_works_wrong_one_is_a_clear_error_and_never_shown() {
    let Some(mut f) = Fleet::start_with("fleet_requirepass", 0, Some(PASSWORD), |s| {
        s.extra
            .push_str(&crate::fleet_support::cluster_section(500, "reject"));
    }) else {
        return;
    };
    let url = f.redis.url();
    assert!(url.contains(PASSWORD));

    let (code, text) = probe(&f, &url);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(": answered PONG"), "{text}");
    assert!(text.contains("redis://:sha256:"), "{text}");
    let (code, text) = probe(&f, &f.redis.url_with(Some(WRONG)));
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("FAILED (Redis refused the credentials"),
        "{text}"
    );
    assert!(!text.contains(PASSWORD) && !text.contains(WRONG), "{text}");

    // The right password: fleet mode works, at trace level nothing shows the password.
    let env = [("GATEWAY_REDIS_URL", url.as_str()), ("RUST_LOG", "trace")];
    f.gateways.push(Gateway::start_with(&f.config, &env));
    f.wait_subscribed(1.0);
    let gw = f.gateways[0].public;
    f.rt.block_on(async {
        let r = f.http.send(post(gw, CALL_LOGS, Some("acme"), "{}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
        cache_on(&f, gw, "acme").await;
        write(&f, gw, "acme").await;
    });
    let shared = f.sample(
        0,
        "etelecom_gateway_cluster_requests_total",
        &[("op", "ratelimit"), ("result", "ok")],
    );
    assert!(shared >= 1.0, "the limiter used Redis: {shared}");

    // A wrong password: the gateway starts, logs why Redis is unavailable, answers 503
    // (reject mode) in the gateway's error shape.
    let wrong = f.redis.url_with(Some(WRONG));
    let env = [("GATEWAY_REDIS_URL", wrong.as_str()), ("RUST_LOG", "trace")];
    f.gateways.push(Gateway::start_with(&f.config, &env));
    let line = f.gateways[1]
        .proc
        .wait_for(Duration::from_secs(10), "Redis is unavailable");
    assert!(line.contains("Redis refused the credentials"), "{line}");
    let bad = f.gateways[1].public;
    let refused =
        f.rt.block_on(f.http.send(post(bad, CALL_LOGS, Some("acme"), "{}")));
    refused.assert_gateway_error(503, "unavailable");

    let mut seen = vec![refused.text()];
    for g in 0..2 {
        seen.push(f.metrics(g));
        let cfg =
            f.rt.block_on(f.http.get(&f.gateways[g].admin_url("/config")));
        let view = cfg.json();
        let shown = view["cluster"]["redis_url"].as_str().unwrap().to_owned();
        assert!(shown.starts_with("redis://:sha256:"), "{shown}");
        seen.push(cfg.text());
        f.gateways[g].proc.read_available();
        seen.push(f.gateways[g].proc.log_text());
    }
    for text in &seen {
        assert!(!text.contains(PASSWORD), "password shown:\n{text}");
        assert!(!text.contains(WRONG), "wrong password shown:\n{text}");
    }
    f.assert_no_secrets_in_redis(&[PASSWORD, WRONG]);
}
