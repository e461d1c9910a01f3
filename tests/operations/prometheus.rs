//! Prometheus: the `/metrics` text after mixed traffic through `promtool check metrics`, and a
//! real Prometheus scraping the admin port. Both need Debian's `prometheus` package.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etelecom_gateway::mock::MockAccounts;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::Value;

use crate::common::proc::{Gateway, run_bounded};
use crate::common::{post, post_with, write};
use crate::support::{
    CALL_LOGS, EXTENSION_INFO, Http, config, poll, runtime, start_mock, try_poll, write_config,
};

/// A tool from Debian's `prometheus` package (see [`common::external_tool`]).
fn external_tool(name: &str, test: &str) -> Option<PathBuf> {
    crate::common::external_tool(name, "prometheus", test)
}

/// Traffic that touches every kind of series: cache misses and hits, a forwarded upstream
/// error, an upstream failure (no response), gateway errors, an unknown method and a local 429
/// (globex's tiny rate limit). Returns the statuses seen, for the caller to check.
async fn mixed_traffic(http: &Http, gw: SocketAddr) -> Vec<u16> {
    let mut seen = Vec::new();
    let body = r#"{"extension_number":"101"}"#;
    for _ in 0..2 {
        let r = http
            .send(post(gw, EXTENSION_INFO, Some("acme"), body))
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        seen.push(r.status.as_u16());
    }
    for (path, tenant, extra) in [
        (CALL_LOGS, "acme", &[("x-mock-behaviour", "status=503")][..]),
        (CALL_LOGS, "acme", &[("x-mock-behaviour", "reset")][..]),
        (CALL_LOGS, "nobody", &[][..]),
        ("/v1/shop.Etelecom/SomethingOdd", "acme", &[][..]),
        ("/v1/partner.Etelecom/GetExtensions", "acme", &[][..]),
    ] {
        let r = http
            .send(post_with(gw, path, Some(tenant), "{}", extra))
            .await;
        seen.push(r.status.as_u16());
    }
    // globex: 1 request per second, burst 1. Back to back, one of the first few is refused.
    for _ in 0..10 {
        let r = http.send(post(gw, CALL_LOGS, Some("globex"), "{}")).await;
        seen.push(r.status.as_u16());
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
    }
    seen
}

/// After hits, misses, errors and a 429, the `/metrics` Prometheus text passes
/// `promtool check metrics` with no lint output.
#[test]
fn promtool_accepts_metrics_after_mixed_traffic() {
    let Some(promtool) = external_tool("promtool", "promtool_accepts_metrics_after_mixed_traffic")
    else {
        return;
    };
    let rt = runtime();
    let mock = start_mock(&rt, MockAccounts::demo());
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(&mock, None);
    cfg.globex = "rate_limit = { requests_per_second = 1, burst = 1 }".into();
    let gw = Gateway::start(&write_config(dir.path(), &cfg));
    let http = Http::new();
    let (statuses, metrics) = rt.block_on(async {
        let statuses = mixed_traffic(&http, gw.public).await;
        (statuses, http.get(&gw.admin_url("/metrics")).await)
    });
    assert!(
        statuses.contains(&429),
        "a 429 from the tiny limit: {statuses:?}"
    );
    assert!(
        statuses.contains(&503) && statuses.contains(&502),
        "{statuses:?}"
    );
    assert_eq!(
        metrics.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = metrics.text();
    for needle in [
        "status=\"429\"",
        "result=\"hit\"",
        "result=\"miss\"",
        "etelecom_gateway_upstream_errors_total{kind=",
        "etelecom_gateway_request_duration_seconds_bucket{",
        "outcome=\"limited\"",
    ] {
        assert!(text.contains(needle), "{needle} missing in:\n{text}");
    }

    let mut cmd = Command::new(promtool);
    cmd.args(["check", "metrics"]);
    let out = run_bounded(cmd, text.as_bytes(), Duration::from_secs(30));
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\nstdout: {}\nstderr: {}\ninput:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// Kills the process when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Asks Prometheus for `query`; the result vector's series (empty until there is data, or
/// while Prometheus is still starting).
async fn prometheus_query(http: &Http, prom: SocketAddr, query: &str) -> Vec<Value> {
    let url = format!("http://{prom}/api/v1/query?query={query}");
    let req = Request::get(url).body(Full::default()).unwrap();
    match http.try_send(req, false).await {
        Ok(r) if r.status == 200 => {
            let v: Value = serde_json::from_slice(&r.body).unwrap_or_default();
            v["data"]["result"].as_array().cloned().unwrap_or_default()
        }
        _ => Vec::new(),
    }
}

/// Prometheus (1 s scrape interval) scrapes the gateway's admin port: `build_info` shows up
/// under `job="etelecom-gateway"`, and after traffic so do `requests_total` series.
#[test]
fn prometheus_scrapes_the_admin_port() {
    let Some(prometheus) = external_tool("prometheus", "prometheus_scrapes_the_admin_port") else {
        return;
    };
    const JOB: &str = "etelecom-gateway";
    let rt = runtime();
    let mock = start_mock(&rt, MockAccounts::demo());
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&write_config(dir.path(), &config(&mock, None)));
    let http = Http::new();

    let prom_dir = tempfile::tempdir().unwrap();
    let config = write(
        prom_dir.path(),
        "prometheus.yml",
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: {JOB}\n    static_configs:\n      - targets: ['{}']\n",
            gw.admin
        ),
    );
    let storage = prom_dir.path().join("data");
    let prom_log = std::fs::File::create(prom_dir.path().join("prometheus.log")).unwrap();
    // A free port: bound, then released just before Prometheus binds it.
    let prom_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut prom = KillOnDrop(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", storage.display()))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdin(Stdio::null())
            .stdout(prom_log.try_clone().unwrap())
            .stderr(prom_log)
            .spawn()
            .unwrap(),
    );
    let prom_log = || std::fs::read_to_string(prom_dir.path().join("prometheus.log")).unwrap();
    let of_job = |series: &[Value]| -> Vec<Value> {
        series
            .iter()
            .filter(|s| s["metric"]["job"] == JOB)
            .cloned()
            .collect()
    };

    let build_info = rt.block_on(try_poll(
        Duration::from_secs(30),
        Duration::from_millis(200),
        || {
            if let Ok(Some(status)) = prom.0.try_wait() {
                panic!("prometheus exited ({status}):\n{}", prom_log());
            }
            async {
                let query = "etelecom_gateway_build_info";
                let found = of_job(&prometheus_query(&http, prom_addr, query).await);
                (!found.is_empty()).then_some(found)
            }
        },
    ));
    let Some(build_info) = build_info else {
        // What Prometheus thinks of the target (e.g. the scrape's last error).
        let targets = rt.block_on(async {
            let url = format!("http://{prom_addr}/api/v1/targets");
            let req = Request::get(url).body(Full::default()).unwrap();
            http.try_send(req, false).await.map(|r| r.text())
        });
        panic!(
            "no etelecom_gateway_build_info{{job=\"{JOB}\"}} in Prometheus within 30 s\n\
             targets: {targets:?}\nprometheus log:\n{}",
            prom_log()
        );
    };
    assert_eq!(build_info.len(), 1, "{build_info:?}");
    assert_eq!(build_info[0]["metric"]["instance"], gw.admin.to_string());
    assert_eq!(build_info[0]["value"][1], "1");
    assert_eq!(
        build_info[0]["metric"]["version"],
        env!("CARGO_PKG_VERSION")
    );

    let statuses = rt.block_on(async {
        let mut statuses = Vec::new();
        for _ in 0..3 {
            let r = http
                .send(post(gw.public, EXTENSION_INFO, Some("acme"), "{}"))
                .await;
            statuses.push(r.status.as_u16());
        }
        statuses
    });
    assert_eq!(statuses, [200, 200, 200]);
    let requests = rt.block_on(poll(
        Duration::from_secs(30),
        Duration::from_millis(200),
        "etelecom_gateway_requests_total for the traffic in Prometheus",
        || async {
            let found = of_job(
                &prometheus_query(&http, prom_addr, "etelecom_gateway_requests_total").await,
            );
            found.into_iter().find(|s| {
                s["metric"]["tenant"] == "acme"
                    && s["metric"]["method"] == "shop.Etelecom/GetExtensionInfo"
                    && s["metric"]["status"] == "200"
                    && s["value"][1] == "3"
            })
        },
    ));
    assert_eq!(requests["metric"]["source"], "upstream", "{requests}");
    let up = rt.block_on(prometheus_query(&http, prom_addr, "up"));
    let up = of_job(&up);
    assert!(
        up.len() == 1 && up[0]["value"][1] == "1",
        "up: {up:?}\n{}",
        prom_log()
    );
    // Prometheus says nothing about the scrapes (a sample it cannot ingest would be a warning).
    let log = prom_log();
    assert!(
        !log.contains("level=warn") && !log.contains("level=error"),
        "prometheus log:\n{log}"
    );
    drop(prom);
}
