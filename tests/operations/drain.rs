//! The drain sequence on SIGTERM: `/readyz` 503 at once, requests served during the drain
//! delay, then the listener closed, the request in flight finished, exit 0.

use std::time::{Duration, Instant};

use etelecom_gateway::mock::MockAccounts;
use http::{Request, StatusCode};
use http_body_util::Full;

use crate::common::proc::Gateway;
use crate::common::{post, post_with};
use crate::support::{
    CALL_LOGS, Http, config, poll, runtime, start_mock, upstream_timeouts, write_config,
};

/// SIGTERM: `/readyz` turns 503 at once while `/healthz` stays 200; during the drain delay new
/// requests are still served; then the public port refuses connections; the request in flight
/// finishes with 200; the process exits 0 within drain delay + grace.
#[test]
fn sigterm_drains_in_order_and_exits_zero() {
    const DRAIN: Duration = Duration::from_secs(1);
    const GRACE: Duration = Duration::from_secs(5);
    let rt = runtime();
    let mock = start_mock(&rt, MockAccounts::demo());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&mock, None);
    cfg.shutdown = "drain_delay_secs = 1\ngrace_secs = 5".into();
    cfg.upstream = upstream_timeouts(30_000);
    let mut gw = Gateway::start(&write_config(dir.path(), &cfg));
    let http = Http::new();
    let public = gw.public;

    // The slow request, in flight across the whole drain (the mock answers after 2.5 s).
    let slow = {
        let http = http.clone();
        let req = post_with(
            public,
            CALL_LOGS,
            Some("acme"),
            "{}",
            &[("x-mock-behaviour", "delay=2500")],
        );
        rt.spawn(async move {
            let r = http.try_send(req, true).await;
            (r, Instant::now())
        })
    };
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(10), mock.wait_for_requests(1)).await
    })
    .expect("the slow request reached the mock");

    let sigterm = Instant::now();
    gw.proc.signal("TERM");

    let (served_during_drain, refused_at) = rt.block_on(async {
        let readyz = gw.admin_url("/readyz");
        let healthz = gw.admin_url("/healthz");
        let r = poll(DRAIN, Duration::from_millis(10), "/readyz 503", || async {
            let req = Request::get(&readyz).body(Full::default()).unwrap();
            http.try_send(req, true)
                .await
                .ok()
                .filter(|r| r.status == StatusCode::SERVICE_UNAVAILABLE)
        })
        .await;
        assert_eq!(r.json()["status"], "draining");
        let ready_after = sigterm.elapsed();

        let req = Request::get(&healthz).body(Full::default()).unwrap();
        let h = http.try_send(req, true).await.expect("/healthz answers");
        assert_eq!(h.status, 200, "/healthz while draining: {}", h.text());

        // A new connection and request during the drain delay is still served.
        let sent_after = sigterm.elapsed();
        let during = http
            .try_send(post(public, CALL_LOGS, Some("acme"), "{}"), true)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "request sent {sent_after:?} after SIGTERM (readyz 503 after \
                     {ready_after:?}, drain delay {DRAIN:?}) failed: {e}"
                )
            });
        assert_eq!(during.status, 200, "{}", during.text());

        // After the delay the listener closes: new connections are refused.
        let refused_at = poll(
            DRAIN + Duration::from_secs(4),
            Duration::from_millis(20),
            "public port refusing connections",
            || async {
                match tokio::net::TcpStream::connect(public).await {
                    Ok(_) => None,
                    // Refused; or reset, when the attempt raced the listener's close and
                    // was dropped from its backlog. Either way it is not served.
                    Err(e) => {
                        assert!(
                            matches!(
                                e.kind(),
                                std::io::ErrorKind::ConnectionRefused
                                    | std::io::ErrorKind::ConnectionReset
                            ),
                            "{e}"
                        );
                        Some(Instant::now())
                    }
                }
            },
        )
        .await;
        (during, refused_at)
    });
    assert_eq!(served_during_drain.status, 200);
    assert!(
        refused_at - sigterm >= DRAIN,
        "the listener closed {:?} after SIGTERM, before the drain delay {DRAIN:?}",
        refused_at - sigterm
    );

    let (slow, slow_done) = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), slow).await })
        .expect("the slow request finished")
        .unwrap();
    let slow = slow.expect("the in-flight request got an answer");
    assert_eq!(slow.status, 200, "{}", slow.text());
    assert!(
        slow_done > refused_at,
        "the slow request was meant to outlive the listener"
    );

    let margin = Duration::from_secs(2);
    let status = gw
        .proc
        .wait_exit((DRAIN + GRACE + margin).saturating_sub(sigterm.elapsed()));
    let took = sigterm.elapsed();
    assert_eq!(status.code(), Some(0), "{}", gw.proc.log_text());
    assert!(took < DRAIN + GRACE + margin, "exit took {took:?}");
    let log = gw.proc.log_text();
    assert!(log.contains("\"signal\":\"SIGTERM\""), "{log}");
    assert!(log.contains("draining"), "{log}");
    assert!(log.contains("gateway stopped"), "{log}");
    // Both calls have their access line by exit, the slow one (answered during the grace
    // period, just before the exit) included: the batched access log is flushed on the way out.
    let access = log
        .lines()
        .filter(|l| l.contains("\"target\":\"access\"") && l.contains("ListCallLogs"))
        .filter(|l| l.contains("\"status\":200"))
        .count();
    assert_eq!(access, 2, "{log}");
}
