//! Operations, end to end against the real binary (`serve` / `check --probe` as subprocesses,
//! the mock eTelecom in-process): the drain sequence on SIGTERM, key rotation by a Kubernetes
//! Secret `..data` symlink swap, refused reloads (file change and SIGHUP), the admin endpoints,
//! the `/metrics` text through `promtool check metrics` and a real Prometheus scraping the admin
//! port, and `check --probe`.
//!
//! Every socket is on 127.0.0.1 port 0 (the gateway logs the bound addresses in its
//! "gateway listening" line), every wait is a log line, a condition or a poll with a deadline,
//! and every loop is bounded in count and time. Each test owns a multi-thread Tokio runtime for
//! the mock and the HTTP client; the test thread itself only blocks on the subprocess.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package. Without them the two
//! tests that need them print SKIPPED and pass, unless the `CI` environment variable is set: then
//! they fail.
// Unix only: signals (`kill -TERM/-HUP`) and symlinks are what these tests are about.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use etelecom_gateway::mock::{
    DEMO_ACME_API_KEY, DEMO_ACME_ID, DEMO_ACME_SHOP_KEY, DEMO_GLOBEX_API_KEY, DEMO_PARTNER_KEY,
    MockAccounts, MockOptions, MockShop, MockUpstream,
};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::runtime::Runtime;

const BIN: &str = env!("CARGO_BIN_EXE_etelecom-gateway");

/// A read the gateway never caches: every call goes upstream with the injected key.
const CALL_LOGS: &str = "/v1/shop.Etelecom/ListCallLogs";
/// A read the gateway caches (the mock's answer carries `expires_at`).
const EXTENSION_INFO: &str = "/v1/shop.Etelecom/GetExtensionInfo";

/// Shop 1001's key before and after a rotation; the mock accepts both (two `MockShop` entries
/// with the same id, see [`rotating_accounts`]).
const OLD_KEY: &str = "1001:ops-old-api-key-4f1d2c3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f708192a3b";
const NEW_KEY: &str = "1001:ops-new-api-key-9e8d7c6b5a4938271605f4e3d2c1b0a9f8e7d6c5b4a39281706f";
/// Of the right shape for a partner-issued shop key, but unknown to the mock.
const BAD_SHOP_KEY: &str =
    "shop1001:ops-revoked-shop-key-0a1b2c3d4e5f60718293a4b5c6d7e8f9a0b1c2d3e4";

/// Bound for the gateway to start (build artefacts are warm; this only absorbs a loaded box).
const START: Duration = Duration::from_secs(30);
/// Bound for a reload to show up in the log after the file change or the signal.
const RELOAD: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Test support: runtime and mock, config, the gateway process, HTTP, metrics, external tools.
// ---------------------------------------------------------------------------------------------

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn start_mock(rt: &Runtime, accounts: MockAccounts) -> MockUpstream {
    rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        MockUpstream::start(
            listener,
            MockOptions {
                accounts,
                tls: false,
            },
        )
        .await
        .unwrap()
    })
}

/// Shop 1001 twice, once with [`OLD_KEY`] and once with [`NEW_KEY`]: the mock's
/// `identify_token` takes the first shop whose key matches, so both keys are accepted as shop
/// 1001 (what eTelecom does while both keys of a rotation are valid).
fn rotating_accounts() -> MockAccounts {
    let shop = |api_key: &str| MockShop {
        id: DEMO_ACME_ID.into(),
        api_key: api_key.into(),
        shop_key: DEMO_ACME_SHOP_KEY.into(),
    };
    MockAccounts {
        shops: vec![shop(OLD_KEY), shop(NEW_KEY)],
        partner_key: DEMO_PARTNER_KEY.into(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// Replaces `path` atomically (write a sibling, rename over), so a reload never reads it half
/// written.
fn replace(path: &Path, text: &str) {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn symlink(target: &str, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// The gateway config the tests write: both listeners on port 0, reloads only by file watching
/// or SIGHUP (the interval is an hour), generous limits unless a test says otherwise.
struct Cfg {
    base_url: String,
    timeout_ms: u64,
    shutdown: &'static str,
    rate_limit: &'static str,
    /// `[partner]` and `[[tenants]]` blocks.
    tenants: String,
}

impl Cfg {
    fn new(mock: &MockUpstream, tenants: &str) -> Cfg {
        Cfg {
            base_url: mock.base_url(),
            timeout_ms: 5_000,
            shutdown: "drain_delay_secs = 0\ngrace_secs = 5",
            rate_limit: "requests_per_second = 10000\nburst = 10000",
            tenants: tenants.to_owned(),
        }
    }

    fn render(&self) -> String {
        format!(
            r#"
[server]
listen = "127.0.0.1:0"

[admin]
listen = "127.0.0.1:0"

[upstream]
base_url = "{base_url}"
connect_timeout_ms = 2000
timeout_ms = {timeout_ms}

[shutdown]
{shutdown}

[reload]
interval_secs = 3600

[rate_limit]
{rate_limit}

{tenants}
"#,
            base_url = self.base_url,
            timeout_ms = self.timeout_ms,
            shutdown = self.shutdown,
            rate_limit = self.rate_limit,
            tenants = self.tenants,
        )
    }

    fn write(&self, dir: &Path) -> PathBuf {
        write(dir, "gw.toml", &self.render())
    }
}

/// `acme` (api_key and shop_key), `globex` (api_key) and the partner key, with the mock's demo
/// keys, as secret files in `dir`. `globex_extra` goes into globex's table.
fn demo_tenants(dir: &Path, globex_extra: &str) -> String {
    write(dir, "acme.api", &format!("{DEMO_ACME_API_KEY}\n"));
    write(dir, "acme.shop", &format!("{DEMO_ACME_SHOP_KEY}\n"));
    write(dir, "globex.api", &format!("{DEMO_GLOBEX_API_KEY}\n"));
    write(dir, "partner.key", &format!("{DEMO_PARTNER_KEY}\n"));
    format!(
        r#"
[partner]
api_key = {{ file = "partner.key" }}

[[tenants]]
id = "acme"
api_key = {{ file = "acme.api" }}
shop_key = {{ file = "acme.shop" }}

[[tenants]]
id = "globex"
api_key = {{ file = "globex.api" }}
{globex_extra}
"#
    )
}

/// A running subprocess whose stdout and stderr lines arrive on a channel; killed on drop.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far.
    log: Vec<String>,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let pipes: [Box<dyn Read + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for pipe in pipes {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        // Only the reader threads hold senders now: the channel disconnects when both pipes
        // close, i.e. when the process has exited.
        drop(tx);
        Proc {
            child,
            lines,
            log: Vec::new(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log_text(&self) -> String {
        self.log.join("\n")
    }

    /// Reads lines until one satisfies `pred` (returned), for at most `within`.
    fn wait_line(&mut self, within: Duration, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.log.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no log line {what} within {within:?}; got:\n{}",
                        self.log_text()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "the process exited ({:?}) before a log line {what}; got:\n{}",
                    self.child.try_wait(),
                    self.log_text()
                ),
            }
        }
    }

    /// Takes the lines already available, without waiting; returns how many there were.
    fn read_available(&mut self) -> usize {
        let mut n = 0;
        loop {
            match self.lines.try_recv() {
                Ok(line) => {
                    self.log.push(line);
                    n += 1;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return n,
            }
        }
    }

    /// Sends `SIG<sig>` (e.g. `"TERM"`, `"HUP"`).
    fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{sig} {}", self.pid());
    }

    fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits (at most `within`) for the process to exit, reading the rest of its output.
    fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.log.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("still running after {within:?}; log:\n{}", self.log_text())
                }
            }
        }
        // Both pipes are closed: the process has exited (it starts no children).
        self.child.wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `etelecom-gateway serve` and its bound addresses.
struct Gateway {
    proc: Proc,
    public: SocketAddr,
    admin: SocketAddr,
}

impl Gateway {
    fn start(config: &Path) -> Gateway {
        let mut cmd = Command::new(BIN);
        cmd.args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .env_remove("ETELECOM_GATEWAY_CONFIG");
        let mut proc = Proc::spawn(cmd);
        let line = proc.wait_line(START, "\"gateway listening\"", |l| {
            l.contains("gateway listening")
        });
        let v: Value = serde_json::from_str(&line).unwrap();
        let addr = |field: &str| -> SocketAddr {
            v[field]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no {field} address in {line}"))
        };
        let (public, admin) = (addr("listen"), addr("admin"));
        Gateway {
            proc,
            public,
            admin,
        }
    }

    fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("not JSON: {}", self.body))
    }

    fn x_cache(&self) -> &str {
        self.headers
            .get("x-cache")
            .map_or("-", |v| v.to_str().unwrap())
    }
}

/// HTTP/1.1 clients: `pooled` keeps connections alive, `fresh` opens one per request.
#[derive(Clone)]
struct Http {
    pooled: Client<HttpConnector, Full<Bytes>>,
    fresh: Client<HttpConnector, Full<Bytes>>,
}

impl Http {
    fn new() -> Http {
        Http {
            pooled: Client::builder(TokioExecutor::new()).build_http(),
            fresh: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build_http(),
        }
    }

    /// Sends `req`; an error is a transport error (refused, reset, ...); bounded at 20 s.
    async fn try_send(&self, req: Request<Full<Bytes>>, fresh: bool) -> Result<Reply, String> {
        let client = if fresh { &self.fresh } else { &self.pooled };
        let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
            .await
            .map_err(|_| "no answer within 20 s".to_owned())?
            .map_err(|e| format!("{e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        let what = format!("{} {}", req.method(), req.uri());
        self.try_send(req, false)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    async fn get(&self, url: &str) -> Reply {
        self.send(Request::get(url).body(Full::default()).unwrap())
            .await
    }
}

/// A POST of `body` to `path` on the gateway at `addr` for `tenant`, with extra headers.
fn api(
    addr: SocketAddr,
    path: &str,
    tenant: &str,
    extra: &[(&str, &str)],
    body: &str,
) -> Request<Full<Bytes>> {
    let mut req = Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .header("x-tenant-id", tenant);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}

/// Polls `f` every `every` until it gives `Some`, for at most `within` (so at most
/// `within / every` rounds); `None` when time is up.
async fn try_poll<T, F, Fut>(within: Duration, every: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// [`try_poll`], panicking with `what` when time is up.
async fn poll<T, F, Fut>(within: Duration, every: Duration, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    try_poll(within, every, f)
        .await
        .unwrap_or_else(|| panic!("{what}: not within {within:?}"))
}

/// The value of one series in Prometheus text (`name{labels}` exactly as exposed); 0 when
/// absent.
fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| {
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{series}: {v:?}"))
        })
}

fn reloads(metrics: &str, result: &str) -> f64 {
    sample(
        metrics,
        &format!("etelecom_gateway_config_reloads_total{{result=\"{result}\"}}"),
    )
}

/// The first 8 hex digits of the key's SHA-256, as the gateway shows keys.
fn fingerprint(key: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    d.as_ref()[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// The bearer tokens the mock received on `path`, oldest first.
fn keys_received(mock: &MockUpstream, path: &str) -> Vec<String> {
    mock.received()
        .iter()
        .filter(|r| r.path == path)
        .map(|r| {
            r.headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .unwrap_or("-")
                .to_owned()
        })
        .collect()
}

/// A tool from Debian's `prometheus` package. Missing: `None` after printing SKIPPED, or a
/// failure when `CI` is set (CI installs the package).
fn external_tool(name: &str, test: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|p| {
                std::fs::metadata(p)
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
    });
    match found {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => panic!(
            "{test}: `{name}` is not on PATH and CI is set (install Debian's `prometheus` package)"
        ),
        None => {
            eprintln!(
                "SKIPPED {test}: `{name}` is not on PATH (Debian: apt-get install prometheus)"
            );
            None
        }
    }
}

/// Runs `cmd` to completion with `stdin` as its input, for at most `within`; killed when it
/// takes longer.
fn run_bounded(mut cmd: Command, stdin: &[u8], within: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let pid = child.id();
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    // Writing from its own thread: a child that answers before reading all its input cannot
    // block us. The pipe closes when the thread is done.
    std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(within) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{cmd:?} did not finish within {within:?}")
        }
    }
}

/// Traffic that touches every kind of series: cache misses and hits, a forwarded upstream
/// error, an upstream failure (no response), gateway errors, an unknown method and a local 429
/// (globex's tiny rate limit). Returns the statuses seen, for the caller to check.
async fn mixed_traffic(http: &Http, gw: SocketAddr) -> Vec<u16> {
    let mut seen = Vec::new();
    let body = r#"{"extension_number":"101"}"#;
    for _ in 0..2 {
        let r = http.send(api(gw, EXTENSION_INFO, "acme", &[], body)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        seen.push(r.status.as_u16());
    }
    for (path, tenant, extra) in [
        (CALL_LOGS, "acme", &[("x-mock-behaviour", "status=503")][..]),
        (CALL_LOGS, "acme", &[("x-mock-behaviour", "reset")][..]),
        (CALL_LOGS, "nobody", &[][..]),
        ("/v1/shop.Etelecom/SomethingOdd", "acme", &[][..]),
        ("/v1/partner.Etelecom/GetExtensions", "acme", &[][..]),
    ] {
        let r = http.send(api(gw, path, tenant, extra, "{}")).await;
        seen.push(r.status.as_u16());
    }
    // globex: 1 request per second, burst 1. Back to back, one of the first few is refused.
    for _ in 0..10 {
        let r = http.send(api(gw, CALL_LOGS, "globex", &[], "{}")).await;
        seen.push(r.status.as_u16());
        if r.status == StatusCode::TOO_MANY_REQUESTS {
            break;
        }
    }
    seen
}

// ---------------------------------------------------------------------------------------------
// 1. Drain
// ---------------------------------------------------------------------------------------------

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
    let mut cfg = Cfg::new(&mock, &demo_tenants(dir.path(), ""));
    cfg.shutdown = "drain_delay_secs = 1\ngrace_secs = 5";
    cfg.timeout_ms = 30_000;
    let mut gw = Gateway::start(&cfg.write(dir.path()));
    let http = Http::new();
    let public = gw.public;

    // The slow request, in flight across the whole drain (the mock answers after 2.5 s).
    let slow = {
        let http = http.clone();
        let req = api(
            public,
            CALL_LOGS,
            "acme",
            &[("x-mock-behaviour", "delay=2500")],
            "{}",
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
        assert_eq!(h.status, 200, "/healthz while draining: {}", h.body);

        // A new connection and request during the drain delay is still served.
        let sent_after = sigterm.elapsed();
        let during = http
            .try_send(api(public, CALL_LOGS, "acme", &[], "{}"), true)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "request sent {sent_after:?} after SIGTERM (readyz 503 after \
                     {ready_after:?}, drain delay {DRAIN:?}) failed: {e}"
                )
            });
        assert_eq!(during.status, 200, "{}", during.body);

        // After the delay the listener closes: new connections are refused.
        let refused_at = poll(
            DRAIN + Duration::from_secs(4),
            Duration::from_millis(20),
            "public port refusing connections",
            || async {
                match tokio::net::TcpStream::connect(public).await {
                    Ok(_) => None,
                    Err(e) => {
                        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
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
    assert_eq!(slow.status, 200, "{}", slow.body);
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
}

// ---------------------------------------------------------------------------------------------
// 2. Rotation by a Kubernetes Secret volume swap
// ---------------------------------------------------------------------------------------------

/// A Secret volume as the kubelet lays it out: `..2026_a/api_key`, `..data -> ..2026_a`,
/// `api_key -> ..data/api_key`. The kubelet's update (new timestamped dir, `..data_tmp` renamed
/// over `..data`) is picked up by file watching alone (the reload interval is an hour): requests
/// switch to the new key without a restart, none fails, and the old key is not sent again.
#[test]
fn kubernetes_secret_swap_rotates_the_key_without_a_restart() {
    const MAX_REQUESTS: usize = 4000;
    const MAX_TIME: Duration = Duration::from_secs(20);
    /// Requests sent after the reload was logged, before the loop stops.
    const AFTER_RELOAD: usize = 20;
    /// Requests sent before the swap.
    const BEFORE_SWAP: usize = 5;

    let rt = runtime();
    let mock = start_mock(&rt, rotating_accounts());
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("secret-volume");
    std::fs::create_dir_all(vol.join("..2026_a")).unwrap();
    write(&vol.join("..2026_a"), "api_key", &format!("{OLD_KEY}\n"));
    symlink("..2026_a", &vol.join("..data"));
    symlink("..data/api_key", &vol.join("api_key"));
    let tenants = format!(
        "[[tenants]]\nid = \"acme\"\napi_key = {{ file = \"{}\" }}\n",
        vol.join("api_key").display()
    );
    let mut gw = Gateway::start(&Cfg::new(&mock, &tenants).write(dir.path()));
    let pid = gw.proc.pid();
    let http = Http::new();

    let began = Instant::now();
    let mut statuses: Vec<(usize, u16, String)> = Vec::new();
    let mut reload_logged_at: Option<usize> = None;
    rt.block_on(async {
        // Pacing only keeps the loop from hogging the CPU; nothing waits on it.
        let mut pace = tokio::time::interval(Duration::from_millis(5));
        for i in 0..MAX_REQUESTS {
            if began.elapsed() > MAX_TIME {
                break;
            }
            pace.tick().await;
            let r = http
                .try_send(api(gw.public, CALL_LOGS, "acme", &[], "{}"), false)
                .await
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            if r.status != 200 {
                statuses.push((i, r.status.as_u16(), r.body.clone()));
            }
            if i + 1 == BEFORE_SWAP {
                // What the kubelet's atomic writer does.
                std::fs::create_dir(vol.join("..2026_b")).unwrap();
                write(&vol.join("..2026_b"), "api_key", &format!("{NEW_KEY}\n"));
                symlink("..2026_b", &vol.join("..data_tmp"));
                std::fs::rename(vol.join("..data_tmp"), vol.join("..data")).unwrap();
            }
            if reload_logged_at.is_none() && gw.proc.read_available() > 0 {
                let reloaded = gw
                    .proc
                    .log
                    .iter()
                    .any(|l| l.contains("\"message\":\"config reloaded\""));
                if reloaded {
                    reload_logged_at = Some(i);
                }
            }
            if reload_logged_at.is_some_and(|at| i >= at + AFTER_RELOAD) {
                break;
            }
        }
    });
    let log = gw.proc.log_text();
    let reload_at = reload_logged_at.unwrap_or_else(|| {
        panic!("no \"config reloaded\" within {MAX_TIME:?} / {MAX_REQUESTS} requests; log:\n{log}")
    });
    assert!(statuses.is_empty(), "requests that failed: {statuses:?}");
    assert!(
        gw.proc.is_running() && gw.proc.pid() == pid,
        "the gateway restarted"
    );
    let line = gw
        .proc
        .log
        .iter()
        .find(|l| l.contains("\"message\":\"config reloaded\""))
        .unwrap();
    assert!(line.contains("FileChange"), "reload trigger: {line}");

    let keys = keys_received(&mock, CALL_LOGS);
    assert!(
        keys.len() >= reload_at + AFTER_RELOAD,
        "{} requests",
        keys.len()
    );
    assert!(
        keys[..BEFORE_SWAP].iter().all(|k| k == OLD_KEY),
        "before the swap the old key is sent"
    );
    assert!(
        keys.iter().all(|k| k == OLD_KEY || k == NEW_KEY),
        "only the two keys are ever sent"
    );
    let first_new = keys
        .iter()
        .position(|k| k == NEW_KEY)
        .expect("the mock received the new key");
    // The loop is sequential and the gateway swaps its state atomically: once one request
    // carried the new key, every later one does.
    let old_after: Vec<usize> = keys
        .iter()
        .enumerate()
        .skip(first_new)
        .filter(|(_, k)| *k == OLD_KEY)
        .map(|(i, _)| i)
        .collect();
    assert!(
        old_after.is_empty(),
        "the old key was sent after the new one (first new at {first_new}): {old_after:?}"
    );
    let tail = &keys[keys.len() - AFTER_RELOAD..];
    assert!(
        tail.iter().all(|k| k == NEW_KEY),
        "last {AFTER_RELOAD}: new key"
    );

    // The admin view shows the new key's fingerprint.
    let view = rt.block_on(http.get(&gw.admin_url("/config"))).json();
    assert_eq!(
        view["tenants"][0]["api_key"],
        format!("sha256:{}", fingerprint(NEW_KEY))
    );
    for key in [OLD_KEY, NEW_KEY] {
        assert!(!log.contains(key), "a key reached the log");
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Invalid reloads keep the running config
// ---------------------------------------------------------------------------------------------

/// An emptied secret file, then SIGHUP with it still empty, then invalid TOML in the config:
/// each reload is refused (log and metrics), the process stays up and requests keep succeeding
/// with the running key. Fixing the secret (with the new key) applies; restoring the config
/// file to what is running is "unchanged".
#[test]
fn an_invalid_reload_is_refused_and_the_running_config_stays() {
    let rt = runtime();
    let mock = start_mock(&rt, rotating_accounts());
    let dir = tempfile::tempdir().unwrap();
    let secret = write(dir.path(), "acme.api", &format!("{OLD_KEY}\n"));
    let tenants = "[[tenants]]\nid = \"acme\"\napi_key = { file = \"acme.api\" }\n";
    let config = Cfg::new(&mock, tenants).write(dir.path());
    let good_config = std::fs::read_to_string(&config).unwrap();
    let mut gw = Gateway::start(&config);
    let pid = gw.proc.pid();
    let http = Http::new();
    let metrics_url = gw.admin_url("/metrics");
    let metrics = || rt.block_on(http.get(&metrics_url)).body;
    // One request; asserts 200 and returns the key the mock received for it.
    let call = || {
        let r = rt.block_on(http.send(api(gw.public, CALL_LOGS, "acme", &[], "{}")));
        assert_eq!(r.status, 200, "{}", r.body);
        keys_received(&mock, CALL_LOGS).pop().unwrap()
    };
    let refused = |trigger: &'static str| {
        move |l: &str| l.contains("config reload refused") && l.contains(trigger)
    };

    assert_eq!(call(), OLD_KEY);
    let m = metrics();
    assert_eq!(reloads(&m, "success"), 1.0, "the start counts as one load");
    assert_eq!(reloads(&m, "failure"), 0.0);

    // 1. The secret file is emptied: the file watcher's reload is refused.
    std::fs::write(&secret, "").unwrap();
    let line = gw
        .proc
        .wait_line(RELOAD, "refusing the empty secret", refused("FileChange"));
    assert!(line.contains("is empty"), "{line}");
    assert!(reloads(&metrics(), "failure") >= 1.0);
    assert_eq!(call(), OLD_KEY, "the running key stays");

    // 2. SIGHUP with the file still empty: refused again, the process lives on.
    let failures = reloads(&metrics(), "failure");
    gw.proc.signal("HUP");
    gw.proc
        .wait_line(RELOAD, "refusing on SIGHUP", refused("Signal"));
    assert!(gw.proc.is_running(), "SIGHUP must not end the process");
    assert!(reloads(&metrics(), "failure") > failures);
    assert_eq!(call(), OLD_KEY);

    // 3. Fixed, with the rotated key: applied.
    let successes = reloads(&metrics(), "success");
    replace(&secret, &format!("{NEW_KEY}\n"));
    gw.proc.wait_line(RELOAD, "\"config reloaded\"", |l| {
        l.contains("\"message\":\"config reloaded\"")
    });
    assert!(reloads(&metrics(), "success") > successes);
    assert_eq!(call(), NEW_KEY);

    // 4. Invalid TOML in the config file itself: refused, the running config stays.
    let failures = reloads(&metrics(), "failure");
    replace(&config, "[server\nlisten = \n");
    let line = gw
        .proc
        .wait_line(RELOAD, "refusing invalid TOML", refused("FileChange"));
    assert!(line.contains("TOML syntax"), "{line}");
    assert!(reloads(&metrics(), "failure") > failures);
    assert_eq!(call(), NEW_KEY);

    // 5. The config file back as it was: the same as what runs, so "unchanged".
    let unchanged = reloads(&metrics(), "unchanged");
    replace(&config, &good_config);
    rt.block_on(poll(
        RELOAD,
        Duration::from_millis(50),
        "config_reloads_total{result=\"unchanged\"} to grow",
        || async {
            let m = http.get(&metrics_url).await.body;
            (reloads(&m, "unchanged") > unchanged).then_some(())
        },
    ));
    assert_eq!(call(), NEW_KEY);
    assert!(gw.proc.is_running() && gw.proc.pid() == pid);
    gw.proc.read_available();
    let log = gw.proc.log_text();
    for key in [OLD_KEY, NEW_KEY] {
        assert!(!log.contains(key), "a key reached the log");
    }
}

// ---------------------------------------------------------------------------------------------
// 4. Admin endpoints over the binary
// ---------------------------------------------------------------------------------------------

/// `GET /config` shows keys as `sha256:` + 8 hex digits only; `POST /cache/purge?tenant=acme`
/// drops the cached read; `/metrics` holds no key, no extension password and no raw path.
#[test]
fn admin_endpoints_show_fingerprints_purge_and_keep_metrics_clean() {
    let rt = runtime();
    let mock = start_mock(&rt, MockAccounts::demo());
    let dir = tempfile::tempdir().unwrap();
    let gw = Gateway::start(&Cfg::new(&mock, &demo_tenants(dir.path(), "")).write(dir.path()));
    let http = Http::new();
    let keys = [
        DEMO_ACME_API_KEY,
        DEMO_ACME_SHOP_KEY,
        DEMO_GLOBEX_API_KEY,
        DEMO_PARTNER_KEY,
    ];
    let secret_parts: Vec<&str> = keys.iter().map(|k| k.split_once(':').unwrap().1).collect();

    rt.block_on(async {
        // GET /config
        let r = http.get(&gw.admin_url("/config")).await;
        assert_eq!(r.status, 200);
        let v = r.json();
        let fp = |k: &str| Value::String(format!("sha256:{}", fingerprint(k)));
        let tenants = v["tenants"].as_array().unwrap();
        assert_eq!(tenants.len(), 2, "{v}");
        assert_eq!(tenants[0]["id"], "acme");
        assert_eq!(tenants[0]["api_key"], fp(DEMO_ACME_API_KEY));
        assert_eq!(tenants[0]["shop_key"], fp(DEMO_ACME_SHOP_KEY));
        assert_eq!(tenants[1]["id"], "globex");
        assert_eq!(tenants[1]["api_key"], fp(DEMO_GLOBEX_API_KEY));
        assert_eq!(tenants[1]["shop_key"], Value::Null);
        assert_eq!(v["partner"]["api_key"], fp(DEMO_PARTNER_KEY));
        for t in tenants {
            for class in ["api_key", "shop_key"] {
                if let Some(s) = t[class].as_str() {
                    let hex = s.strip_prefix("sha256:").unwrap_or_else(|| panic!("{s}"));
                    assert!(
                        hex.len() == 8 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                        "{s}"
                    );
                }
            }
        }
        for s in &secret_parts {
            assert!(!r.body.contains(s), "/config shows a key: {}", r.body);
        }

        // Two cached reads, a purge, a read again.
        let body = r#"{"extension_number":"101"}"#;
        let read = || http.send(api(gw.public, EXTENSION_INFO, "acme", &[], body));
        let first = read().await;
        assert_eq!(first.status, 200, "{}", first.body);
        assert!(first.body.contains("mock-sip-pw-"), "{}", first.body);
        assert_eq!(first.x_cache(), "MISS");
        let second = read().await;
        assert_eq!(second.x_cache(), "HIT");
        assert_eq!(second.body, first.body);
        let upstream_reads = || {
            mock.received()
                .iter()
                .filter(|r| r.path == EXTENSION_INFO)
                .count()
        };
        assert_eq!(upstream_reads(), 1);

        let purge = Request::post(gw.admin_url("/cache/purge?tenant=acme"))
            .body(Full::default())
            .unwrap();
        let p = http.send(purge).await;
        assert_eq!(p.status, 200, "{}", p.body);
        assert_eq!(p.json(), serde_json::json!({ "purged": 1 }));
        let third = read().await;
        assert_eq!(third.status, 200);
        assert_eq!(third.x_cache(), "MISS", "purged, so fetched again");
        assert_eq!(upstream_reads(), 2);

        // A method the catalogue doesn't know: forwarded, labelled "other".
        let odd = http
            .send(api(gw.public, "/v1/shop.Etelecom/SomethingOdd", "acme", &[], "{}"))
            .await;
        assert!(
            mock.received().iter().any(|r| r.path.ends_with("SomethingOdd")),
            "forwarded ({})",
            odd.status
        );

        let m = http.get(&gw.admin_url("/metrics")).await;
        assert_eq!(m.status, 200);
        let text = &m.body;
        let odd_series = format!(
            "etelecom_gateway_requests_total{{tenant=\"acme\",method=\"other\",status=\"{}\",source=\"upstream\"}}",
            odd.status.as_u16()
        );
        assert_eq!(sample(text, &odd_series), 1.0, "{odd_series} in:\n{text}");
        assert!(text.contains(
            "etelecom_gateway_cache_requests_total{method=\"shop.Etelecom/GetExtensionInfo\",result=\"hit\"} 1"
        ), "{text}");
        assert!(!text.contains("SomethingOdd"), "a raw path in /metrics");
        assert!(!text.contains("/v1/"), "a raw path in /metrics");
        assert!(!text.contains("mock-sip-pw-"), "a password in /metrics");
        for (k, s) in keys.iter().zip(&secret_parts) {
            assert!(!text.contains(k) && !text.contains(s), "a key in /metrics");
        }
    });
}

// ---------------------------------------------------------------------------------------------
// 5. promtool check metrics
// ---------------------------------------------------------------------------------------------

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
    let tenants = demo_tenants(
        dir.path(),
        "rate_limit = { requests_per_second = 1, burst = 1 }",
    );
    let gw = Gateway::start(&Cfg::new(&mock, &tenants).write(dir.path()));
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
    let text = metrics.body;
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

// ---------------------------------------------------------------------------------------------
// 6. A real Prometheus scrapes the admin port
// ---------------------------------------------------------------------------------------------

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
            let v: Value = serde_json::from_str(&r.body).unwrap_or_default();
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
    let gw = Gateway::start(&Cfg::new(&mock, &demo_tenants(dir.path(), "")).write(dir.path()));
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
            http.try_send(req, false).await.map(|r| r.body)
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
                .send(api(gw.public, EXTENSION_INFO, "acme", &[], "{}"))
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

// ---------------------------------------------------------------------------------------------
// 7. check --probe
// ---------------------------------------------------------------------------------------------

/// `check --probe` asks the mock with each key: one line per key with its fingerprint and the
/// verdict; exit 1 when one is refused, 0 when all are accepted; never a key in the output.
#[test]
fn check_probe_reports_each_key_and_exits_by_verdict() {
    let rt = runtime();
    let mock = start_mock(&rt, MockAccounts::demo());
    let dir = tempfile::tempdir().unwrap();
    let run = |tenants: &str| -> (Option<i32>, String) {
        let cfg = Cfg::new(&mock, tenants).write(dir.path());
        let mut cmd = Command::new(BIN);
        cmd.args(["check", "--probe", "--config"])
            .arg(cfg)
            .env_remove("ETELECOM_GATEWAY_CONFIG");
        let out = run_bounded(cmd, b"", Duration::from_secs(60));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let assert_no_key = |text: &str, keys: &[&str]| {
        for k in keys {
            let secret = k.split_once(':').unwrap().1;
            assert!(!text.contains(secret), "the output shows a key:\n{text}");
        }
    };

    // A good api_key and a bad shop_key.
    write(dir.path(), "acme.api", &format!("{DEMO_ACME_API_KEY}\n"));
    write(dir.path(), "acme.bad", &format!("{BAD_SHOP_KEY}\n"));
    let (code, text) = run(
        "[[tenants]]\nid = \"acme\"\napi_key = { file = \"acme.api\" }\nshop_key = { file = \"acme.bad\" }\n",
    );
    let good = format!(
        "probe: tenant acme api_key (sha256:{}): accepted (HTTP 200)",
        fingerprint(DEMO_ACME_API_KEY)
    );
    let bad = format!(
        "probe: tenant acme shop_key (sha256:{}): REFUSED (HTTP 401)",
        fingerprint(BAD_SHOP_KEY)
    );
    assert_eq!(code, Some(1), "{text}");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("probe: ")).collect();
    assert_eq!(lines, [good.as_str(), bad.as_str()], "{text}");
    assert_no_key(&text, &[DEMO_ACME_API_KEY, BAD_SHOP_KEY]);
    let paths: Vec<String> = mock.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            "/v1/shop.Misc/CurrentAccount",
            "/v1/partner.Etelecom/GetTenant"
        ],
        "one cheap read per key"
    );

    // Every key good, the partner's too.
    mock.clear_received();
    let (code, text) = run(&demo_tenants(dir.path(), ""));
    assert_eq!(code, Some(0), "{text}");
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("probe: ")).collect();
    assert_eq!(lines.len(), 4, "{text}");
    for (line, (who, key)) in lines.iter().zip([
        ("partner partner", DEMO_PARTNER_KEY),
        ("tenant acme api_key", DEMO_ACME_API_KEY),
        ("tenant acme shop_key", DEMO_ACME_SHOP_KEY),
        ("tenant globex api_key", DEMO_GLOBEX_API_KEY),
    ]) {
        let want = format!(
            "probe: {who} (sha256:{}): accepted (HTTP 200)",
            fingerprint(key)
        );
        assert_eq!(*line, want, "{text}");
    }
    assert_no_key(
        &text,
        &[
            DEMO_PARTNER_KEY,
            DEMO_ACME_API_KEY,
            DEMO_ACME_SHOP_KEY,
            DEMO_GLOBEX_API_KEY,
        ],
    );
    assert_eq!(mock.request_count(), 4);
}
