//! Soak: the real gateway binary (`serve`, a subprocess, so its RSS, fds and CPU are its own) in
//! front of the in-process mock eTelecom, under mixed traffic from many connections for a while,
//! with upstream faults, a config reload every 3 s and cache purges every 2 s. Then it checks that
//! nothing was lost and that the process returns to where it started.
//!
//! Traffic (32 workers, each its own keep-alive client): cache hits, misses (an uncached read),
//! writes, gateway errors (unknown tenant, bad JSON), upstream 5xx, resets and hangs (the gateway
//! answers 502/504), slow clients (a body trickling in), and idle sockets (opened, never used,
//! closed by the gateway's header timeout). Every 5 s the whole upstream flaps to `reset` for
//! 300 ms.
//!
//! Prints a table; exits 1 when a request was lost (sent, never answered), or when open fds, RSS
//! or idle CPU end above their bounds. Run: `cargo bench --locked --bench soak -- --secs 60`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use etelecom_gateway::mock::{MockAccounts, MockOptions, MockUpstream};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const WORKERS: usize = 32;
const IDLE_SOCKETS: usize = 40;
/// Bounds checked at the end.
const MAX_FD_GROWTH: i64 = 8;
const MAX_RSS_GROWTH_KB: i64 = 64 * 1024;
const MAX_IDLE_CPU: f64 = 0.02;
/// How long the gateway gets after the load to close its idle connections.
const SETTLE: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    c2: AtomicU64,
    c4: AtomicU64,
    c5: AtomicU64,
    other: AtomicU64,
    lost: AtomicU64,
}

impl Counts {
    fn answered(&self, status: u16) {
        let c = match status / 100 {
            2 => &self.c2,
            4 => &self.c4,
            5 => &self.c5,
            _ => &self.other,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }
}

fn config(mock: &str, generation: u64) -> String {
    format!(
        "# soak generation {generation}\n\
         [server]\nlisten = \"127.0.0.1:0\"\nheader_read_timeout_ms = 2000\nkeepalive_timeout_ms = 2000\n\
         client_body_timeout_ms = 2000\nrequest_timeout_ms = 5000\nmax_connections = 1024\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [upstream]\nbase_url = \"{mock}\"\ntimeout_ms = 1000\nconnect_timeout_ms = 500\n\
         pool_idle_timeout_ms = 2000\n\
         [rate_limit]\nrequests_per_second = 100000\nburst = 100000\nhousekeeping_interval_secs = 1\n\
         [reload]\ninterval_secs = 3600\n\
         [shutdown]\ndrain_delay_secs = 0\ngrace_secs = 5\n\
         [partner]\napi_key = {{ file = \"partner.key\" }}\n\
         [[tenants]]\nid = \"acme\"\napi_key = {{ file = \"acme.api\" }}\nshop_key = {{ file = \"acme.shop\" }}\n"
    )
}

/// (fds, RSS in KiB, CPU ticks) of `pid`.
fn usage(pid: u32) -> (i64, i64, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count()) as i64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |r| r.1)
        .split_whitespace()
        .collect();
    let ticks = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (fds, rss, ticks)
}

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `serve` and reads its addresses from the "gateway listening" line; the rest of its
/// log is read and dropped on a thread.
fn start_gateway(config: &Path) -> (Gateway, SocketAddr, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_etelecom-gateway"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the gateway");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let gw = Gateway(child);
    let line = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("gateway listening"))
        .expect("the gateway's ready line");
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = |k: &str| v[k].as_str().unwrap().parse().unwrap();
    (gw, addr("listen"), addr("admin"))
}

fn post(
    url: String,
    tenant: Option<&str>,
    body: &str,
    behaviour: Option<&str>,
) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::post(url).header("content-type", "application/json");
    if let Some(t) = tenant {
        b = b.header("x-tenant-id", t);
    }
    if let Some(m) = behaviour {
        b = b.header("x-mock-behaviour", m);
    }
    b.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}

/// Sends one request, counting it; an answer must come within 10 s.
async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: http::Request<Full<Bytes>>,
    counts: &Counts,
) {
    counts.sent.fetch_add(1, Ordering::Relaxed);
    let answer = tokio::time::timeout(Duration::from_secs(10), async {
        let resp = client.request(req).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        resp.into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(status)
    })
    .await;
    match answer {
        Ok(Ok(status)) => counts.answered(status),
        Ok(Err(e)) => {
            eprintln!("lost: {e}");
            counts.lost.fetch_add(1, Ordering::Relaxed);
        }
        Err(_) => {
            eprintln!("lost: no answer within 10 s");
            counts.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A slow client: the head, then the body one byte every 50 ms.
async fn slow_client(addr: SocketAddr, counts: &Counts) {
    counts.sent.fetch_add(1, Ordering::Relaxed);
    let body = br#"{"extension_number":"101"}"#;
    let run = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let head = format!(
            "POST /v1/shop.Etelecom/GetExtensionInfo HTTP/1.1\r\nhost: x\r\nx-tenant-id: acme\r\n\
             connection: close\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        for b in body {
            s.write_all(&[*b]).await.map_err(|e| e.to_string())?;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out)
            .await
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out);
        text.get(9..12)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or(format!("no status: {text}"))
    };
    match tokio::time::timeout(Duration::from_secs(10), run).await {
        Ok(Ok(status)) => counts.answered(status),
        other => {
            eprintln!("lost (slow client): {other:?}");
            counts.lost.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn main() {
    let secs: u64 = std::env::args()
        .skip_while(|a| a != "--secs")
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let ok = rt.block_on(soak(Duration::from_secs(secs)));
    std::process::exit(if ok { 0 } else { 1 });
}

async fn soak(duration: Duration) -> bool {
    let accounts = MockAccounts::demo();
    let mock = MockUpstream::start(
        TcpListener::bind("127.0.0.1:0").await.unwrap(),
        MockOptions {
            accounts: accounts.clone(),
            tls: false,
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let w = |n: &str, v: &str| std::fs::write(dir.path().join(n), format!("{v}\n")).unwrap();
    w("partner.key", &accounts.partner_key);
    w("acme.api", &accounts.shops[0].api_key);
    w("acme.shop", &accounts.shops[0].shop_key);
    let cfg_path = dir.path().join("gw.toml");
    std::fs::write(&cfg_path, config(&mock.base_url(), 0)).unwrap();
    let (gw, public, admin) = start_gateway(&cfg_path);
    let pid = gw.0.id();
    let (fd0, rss0, _) = usage(pid);

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for worker in 0..WORKERS {
        let (counts, stop) = (counts.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let client: Client<HttpConnector, Full<Bytes>> =
                Client::builder(TokioExecutor::new()).build_http();
            let url = |p: &str| format!("http://{public}{p}");
            let mut i = worker;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let req = match i % 12 {
                    0..=3 => post(
                        url("/v1/shop.Etelecom/GetExtensionInfo"),
                        Some("acme"),
                        r#"{"extension_number":"101"}"#,
                        None,
                    ),
                    4 | 5 => post(
                        url("/v1/shop.Etelecom/ListCallLogs"),
                        Some("acme"),
                        "{}",
                        None,
                    ),
                    6 => post(
                        url("/v1/partner.Etelecom/UpdateHotlineForExtension"),
                        Some("acme"),
                        r#"{"extension_id":"1001101","hotline_id":"2001"}"#,
                        None,
                    ),
                    7 => post(
                        url("/v1/shop.Etelecom/ListCallLogs"),
                        Some("nobody"),
                        "{}",
                        None,
                    ),
                    8 => post(
                        url("/v1/shop.Etelecom/ListCallLogs"),
                        Some("acme"),
                        "[1]",
                        None,
                    ),
                    9 => post(
                        url("/v1/shop.Etelecom/ListCallLogs"),
                        Some("acme"),
                        "{}",
                        Some("status=503"),
                    ),
                    10 => post(
                        url("/v1/shop.Etelecom/ListCallLogs"),
                        Some("acme"),
                        "{}",
                        Some("reset"),
                    ),
                    _ => post(
                        url("/v1/shop.Etelecom/ListCallLogs"),
                        Some("acme"),
                        "{}",
                        Some(if i % 48 == 11 { "hang" } else { "delay=20" }),
                    ),
                };
                send(&client, req, &counts).await;
            }
        }));
    }
    {
        let (counts, stop) = (counts.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                slow_client(public, &counts).await;
            }
        }));
    }
    {
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let mut held = Vec::new();
                for _ in 0..IDLE_SOCKETS {
                    if let Ok(s) = TcpStream::connect(public).await {
                        held.push(s);
                    }
                }
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        }));
    }
    let started = Instant::now();
    let control: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let (mut reloads, mut purges, mut flaps) = (0u64, 0u64, 0u64);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while started.elapsed() < duration {
        tick.tick().await;
        let s = started.elapsed().as_secs();
        if s % 3 == 0 {
            reloads += 1;
            std::fs::write(&cfg_path, config(&mock.base_url(), reloads)).unwrap();
        }
        if s % 2 == 0 {
            purges += 1;
            let req = post(
                format!("http://{admin}/cache/purge"),
                None,
                r#"{"tenant":"acme"}"#,
                None,
            );
            let _ = control.request(req).await;
        }
        if s % 5 == 0 {
            flaps += 1;
            let url = format!("{}/__mock/behaviour", mock.base_url());
            let _ = control
                .request(post(url.clone(), None, r#"{"behaviour":"reset"}"#, None))
                .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let _ = control
                .request(post(url, None, r#"{"behaviour":"normal"}"#, None))
                .await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(15), t).await;
    }
    // Idle: every caller connection closes by the keep-alive / header timeouts (2 s) and every
    // pooled upstream connection by the pool's idle timeout (2 s, housekeeping every 1 s). Wait
    // for the fds to come back within the bound, at most SETTLE.
    let settle_started = Instant::now();
    let (fd1, rss1, t0) = loop {
        let (fds, rss, ticks) = usage(pid);
        if fds - fd0 <= MAX_FD_GROWTH || settle_started.elapsed() >= SETTLE {
            break (fds, rss, ticks);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let settled_in = settle_started.elapsed();
    let idle_for = Duration::from_secs(3);
    tokio::time::sleep(idle_for).await;
    let (_, _, t1) = usage(pid);
    let idle_cpu = (t1 - t0) as f64 / 100.0 / idle_for.as_secs_f64();
    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let lost = c(&counts.lost);
    println!(
        "soak: {:?} against the gateway (pid {pid}), {WORKERS} workers + 1 slow client + {IDLE_SOCKETS} idle sockets",
        duration
    );
    println!("| measure | value | bound |");
    println!("| --- | --- | --- |");
    println!("| requests sent | {} | |", c(&counts.sent));
    println!("| answered 2xx | {} | |", c(&counts.c2));
    println!("| answered 4xx | {} | |", c(&counts.c4));
    println!("| answered 5xx | {} | |", c(&counts.c5));
    println!("| answered other | {} | |", c(&counts.other));
    println!("| lost | {lost} | 0 |");
    println!("| reloads / purges / upstream flaps | {reloads} / {purges} / {flaps} | |");
    println!(
        "| open fds start → end (settled in {:.1} s) | {fd0} → {fd1} | +{MAX_FD_GROWTH} |",
        settled_in.as_secs_f64()
    );
    println!("| RSS KiB start → end | {rss0} → {rss1} | +{MAX_RSS_GROWTH_KB} |");
    println!(
        "| idle CPU after | {:.1}% | {:.0}% |",
        idle_cpu * 100.0,
        MAX_IDLE_CPU * 100.0
    );
    let ok = lost == 0
        && fd1 - fd0 <= MAX_FD_GROWTH
        && rss1 - rss0 <= MAX_RSS_GROWTH_KB
        && idle_cpu <= MAX_IDLE_CPU
        && c(&counts.c2) > 0;
    println!("soak: {}", if ok { "PASS" } else { "FAIL" });
    drop(gw);
    mock.shutdown().await;
    ok
}
