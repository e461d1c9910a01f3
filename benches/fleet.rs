//! The cost of fleet mode on the forward path (`cargo bench --bench fleet`): the gateway binary
//! as its own process in front of the mock eTelecom, once without `[cluster]` and once with a
//! loopback `redis-server` (Debian's package), and the same load against both:
//!
//! - CPU per forwarded request of the gateway process and of `redis-server`, from
//!   `/proc/<pid>/stat` (utime + stime) before and after a run of concurrent requests: CPU time is
//!   robust against other load on the machine, wall time is not;
//! - latency p50 / p99 of one request at a time (client → gateway → mock), where Redis adds one
//!   round trip;
//! - Redis calls per forwarded request and per cache hit, from the gateway's own
//!   `cluster_requests_total`.
//!
//! The gateway runs at `RUST_LOG=warn` (no access log) so the numbers are the forward path's.
//! Everything is on 127.0.0.1 with free ports. Not a test: it prints a table and asserts only
//! the round-trip targets (one Redis call per forward, none per hit).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use etelecom_gateway::mock::{MockAccounts, MockOptions, MockUpstream};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;

const BIN: &str = env!("CARGO_BIN_EXE_etelecom-gateway");
const FORWARD: &str = "/v1/shop.Etelecom/ListCallLogs";
const HIT: &str = "/v1/shop.Etelecom/GetExtensionInfo";
const BODY: &str = r#"{"extension_number":"101"}"#;
/// Concurrent callers in the CPU run, and requests in it.
const CONCURRENCY: usize = 8;
const CPU_REQUESTS: usize = 20_000;
/// Requests, one at a time, in the latency run.
const LATENCY_REQUESTS: usize = 3_000;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// utime + stime of `pid`, in seconds (`/proc/<pid>/stat` fields 14 and 15, in clock ticks).
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // The command name (field 2) may hold spaces: count fields after its closing parenthesis.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    // CLK_TCK is 100 on Linux (x86-64, arm64); getconf would need a subprocess per read.
    ticks / 100.0
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port()
}

fn redis_server(dir: &Path) -> Option<(Proc, u16)> {
    let port = free_port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server not ready");
        std::thread::sleep(Duration::from_millis(20));
    }
    Some((Proc(child), port))
}

/// Starts `serve` on `config`; returns the process and its public and admin addresses.
fn gateway(config: &Path, redis_url: Option<&str>) -> (Proc, SocketAddr, SocketAddr) {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn,etelecom_gateway::app=info")
        .env_remove("ETELECOM_GATEWAY_CONFIG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(u) = redis_url {
        cmd.env("GATEWAY_REDIS_URL", u);
    }
    let mut child = cmd.spawn().expect("gateway");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let listening = loop {
        let line = lines.next().expect("the gateway exited").expect("line");
        if line.contains("gateway listening") {
            break line;
        }
    };
    std::thread::spawn(move || for _ in lines {});
    let v: serde_json::Value = serde_json::from_str(&listening).expect("json");
    let addr = |f: &str| v[f].as_str().and_then(|s| s.parse().ok()).expect(f);
    (Proc(child), addr("listen"), addr("admin"))
}

async fn call(client: &HttpClient, url: &str, body: &'static str) -> u16 {
    let req = Request::post(url)
        .header("x-tenant-id", "acme")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("request");
    let resp = client.request(req).await.expect("response");
    let status = resp.status().as_u16();
    resp.into_body().collect().await.expect("body");
    status
}

async fn metric(client: &HttpClient, admin: SocketAddr, name: &str, op: &str) -> f64 {
    let req = Request::get(format!("http://{admin}/metrics"))
        .body(Full::default())
        .expect("request");
    let body = client.request(req).await.expect("metrics").into_body();
    let text =
        String::from_utf8(body.collect().await.expect("body").to_bytes().to_vec()).expect("utf-8");
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(&format!("op=\"{op}\"")))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

struct Row {
    gateway_cpu_us: f64,
    redis_cpu_us: Option<f64>,
    p50_us: f64,
    p99_us: f64,
    redis_per_forward: f64,
    redis_per_hit: f64,
}

async fn measure(gw: SocketAddr, admin: SocketAddr, gw_pid: u32, redis_pid: Option<u32>) -> Row {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let url = Arc::new(format!("http://{gw}{FORWARD}"));
    // Warm-up: connections, the Lua script loaded.
    for _ in 0..200 {
        assert_eq!(call(&client, &url, "{}").await, 200);
    }
    let calls_before = metric(
        &client,
        admin,
        "etelecom_gateway_cluster_requests_total",
        "ratelimit",
    )
    .await;
    let (g0, r0) = (cpu_secs(gw_pid), redis_pid.map(cpu_secs));
    let mut tasks = Vec::new();
    for _ in 0..CONCURRENCY {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..CPU_REQUESTS / CONCURRENCY {
                assert_eq!(call(&client, &url, "{}").await, 200);
            }
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    let (g1, r1) = (cpu_secs(gw_pid), redis_pid.map(cpu_secs));
    let calls_after = metric(
        &client,
        admin,
        "etelecom_gateway_cluster_requests_total",
        "ratelimit",
    )
    .await;
    let n = CPU_REQUESTS as f64;

    let mut lat = Vec::with_capacity(LATENCY_REQUESTS);
    for _ in 0..LATENCY_REQUESTS {
        let t = Instant::now();
        assert_eq!(call(&client, &url, "{}").await, 200);
        lat.push(t.elapsed());
    }
    lat.sort_unstable();
    let pct =
        |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)].as_secs_f64() * 1e6;

    let hit_url = format!("http://{gw}{HIT}");
    call(&client, &hit_url, BODY).await;
    let all_before = metric(
        &client,
        admin,
        "etelecom_gateway_cluster_requests_total",
        "ratelimit",
    )
    .await;
    for _ in 0..1000 {
        call(&client, &hit_url, BODY).await;
    }
    let all_after = metric(
        &client,
        admin,
        "etelecom_gateway_cluster_requests_total",
        "ratelimit",
    )
    .await;
    Row {
        gateway_cpu_us: (g1 - g0) / n * 1e6,
        redis_cpu_us: r0.zip(r1).map(|(a, b)| (b - a) / n * 1e6),
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        redis_per_forward: (calls_after - calls_before) / n,
        redis_per_hit: (all_after - all_before) / 1000.0,
    }
}

fn write_config(dir: &Path, mock: &str, cluster: bool) -> PathBuf {
    let accounts = MockAccounts::demo();
    std::fs::write(dir.join("acme.api"), &accounts.shops[0].api_key).expect("key");
    let cluster = if cluster {
        "[cluster]\nredis_url = { env = \"GATEWAY_REDIS_URL\" }\ntimeout_ms = 200\n"
    } else {
        ""
    };
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[upstream]\nbase_url = \"{mock}\"\n\
         [rate_limit]\nrequests_per_second = 1000000\nburst = 1000000\n{cluster}\
         [[tenants]]\nid = \"acme\"\napi_key = {{ file = \"acme.api\" }}\n"
    );
    let name = if cluster.is_empty() {
        "local.toml"
    } else {
        "fleet.toml"
    };
    let path = dir.join(name);
    std::fs::write(&path, text).expect("config");
    path
}

fn main() {
    // `cargo test --benches` runs bench targets with `--bench` absent: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let mock = rt.block_on(async {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        MockUpstream::start(
            l,
            MockOptions {
                accounts: MockAccounts::demo(),
                tls: false,
            },
        )
        .await
        .expect("mock")
    });
    let Some((redis, port)) = redis_server(dir.path()) else {
        eprintln!("SKIPPED: redis-server is not on PATH (Debian: apt-get install redis-server)");
        return;
    };
    let url = format!("redis://127.0.0.1:{port}/0");
    let mut rows = Vec::new();
    for cluster in [false, true] {
        let cfg = write_config(dir.path(), &mock.base_url(), cluster);
        let (gw, addr, admin) = gateway(&cfg, cluster.then_some(url.as_str()));
        let redis_pid = cluster.then_some(redis.0.id());
        let row = rt.block_on(measure(addr, admin, gw.0.id(), redis_pid));
        rows.push((
            if cluster {
                "[cluster], loopback Redis"
            } else {
                "no [cluster]"
            },
            row,
        ));
        drop(gw);
    }
    println!(
        "\n{CPU_REQUESTS} forwarded requests at concurrency {CONCURRENCY} (CPU), {LATENCY_REQUESTS} one at a time (latency)\n"
    );
    println!(
        "| mode | gateway CPU / forward | Redis CPU / forward | p50 | p99 | Redis calls / forward | Redis calls / cache hit |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (name, r) in &rows {
        println!(
            "| {name} | {:.1} µs | {} | {:.0} µs | {:.0} µs | {:.2} | {:.2} |",
            r.gateway_cpu_us,
            r.redis_cpu_us
                .map_or("-".to_owned(), |c| format!("{c:.1} µs")),
            r.p50_us,
            r.p99_us,
            r.redis_per_forward,
            r.redis_per_hit,
        );
    }
    let (base, fleet) = (&rows[0].1, &rows[1].1);
    println!(
        "\nadded by fleet mode: {:.1} µs CPU per forward ({:.0} %), p50 +{:.0} µs, p99 +{:.0} µs",
        fleet.gateway_cpu_us - base.gateway_cpu_us,
        (fleet.gateway_cpu_us / base.gateway_cpu_us - 1.0) * 100.0,
        fleet.p50_us - base.p50_us,
        fleet.p99_us - base.p99_us,
    );
    assert!(
        fleet.redis_per_forward <= 1.01,
        "at most one Redis call per forward"
    );
    assert!(fleet.redis_per_hit == 0.0, "no Redis call on a cache hit");
}
