//! Test harness: the mock eTelecom and the gateway, both in-process on `127.0.0.1:0`, and a
//! plain HTTP/1.1 client. No fixed ports; the gateway stops when the harness is dropped.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod proc;
pub mod redis;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use etelecom_gateway::config::Config;
use etelecom_gateway::mock::{MockAccounts, MockOptions, MockUpstream};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const SHOP_API: &str = "/v1/shop.Etelecom/GetExtensionInfo";
pub const PARTNER_SHOP: &str = "/v1/partner.Etelecom/GetExtensions";
pub const PARTNER_LEVEL: &str = "/v1/partner.Etelecom/GetPartnerTenantList";

/// What a test can change in the generated config.
#[derive(Clone)]
pub struct Setup {
    pub tls: bool,
    /// Extra lines for `[server]`.
    pub server: String,
    /// Extra lines for `[upstream]`.
    pub upstream: String,
    /// Extra top-level sections.
    pub extra: String,
    /// Override the upstream base URL (e.g. a closed port).
    pub base_url: Option<String>,
    /// The `[shutdown]` section's body.
    pub shutdown: String,
    /// Extra lines for the `acme` tenant.
    pub acme: String,
    /// Extra lines for the `globex` tenant.
    pub globex: String,
    /// Whether `[partner]` is configured.
    pub partner: bool,
    /// The `[partner]` and `[[tenants]]` blocks in place of the default ones (then `acme`,
    /// `globex` and `partner` do not apply).
    pub tenants: Option<String>,
    /// The `[rate_limit]` section's body (generous by default so that only rate-limit tests
    /// meet the limit).
    pub rate_limit: String,
    /// The `[cache]` section's body.
    pub cache: String,
    /// The `[sms]` section's body (`None`: no `[sms]` section). `$MOCK` stands for the mock's
    /// base URL (the mock serves the SMS host's paths too); with `tls`, `ca_file` is added.
    pub sms: Option<String>,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            tls: false,
            server: String::new(),
            upstream: "timeout_ms = 2000\nconnect_timeout_ms = 1000".into(),
            extra: String::new(),
            base_url: None,
            shutdown: "drain_delay_secs = 0\ngrace_secs = 5".into(),
            acme: String::new(),
            globex: String::new(),
            partner: true,
            tenants: None,
            rate_limit: "requests_per_second = 10000\nburst = 10000".into(),
            cache: String::new(),
            sms: None,
        }
    }
}

pub struct Harness {
    pub mock: MockUpstream,
    pub accounts: MockAccounts,
    pub addr: SocketAddr,
    /// The admin listener (`/metrics`, `/readyz`, `/config`, `/cache/purge`).
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
    pub client: Client<HttpConnector, Full<Bytes>>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), String>>>,
}

/// Lines that give a default tenant (`acme` or `globex`) its SMS account from the files
/// [`write_keys`] writes.
pub fn sms_account(tenant: &str) -> String {
    format!(
        "sms = {{ username = {{ file = \"{tenant}.sms_user\" }}, password = {{ file = \"{tenant}.sms_password\" }} }}\n"
    )
}

/// A harness set-up with `[sms]` pointing at the mock and both default tenants holding their
/// SMS account.
pub fn sms_setup() -> Setup {
    Setup {
        sms: Some("base_url = \"$MOCK\"\ntimeout_ms = 2000".into()),
        acme: sms_account("acme"),
        globex: sms_account("globex"),
        ..Setup::default()
    }
}

/// The config text the harness uses: unless `setup.tenants` says otherwise, tenants `acme`
/// (both keys) and `globex` (api_key only), and the partner key, all as `{ file = ... }` secrets
/// in `dir` (see [`write_keys`]).
pub fn config_text(setup: &Setup, base_url: &str) -> String {
    let ca = if setup.tls {
        "ca_file = \"ca.pem\"\n"
    } else {
        ""
    };
    let tenants = setup.tenants.clone().unwrap_or_else(|| {
        format!(
            r#"
{partner}
[[tenants]]
id = "acme"
api_key = {{ file = "acme.api" }}
shop_key = {{ file = "acme.shop" }}
{acme}

[[tenants]]
id = "globex"
api_key = {{ file = "globex.api" }}
{globex}
"#,
            acme = setup.acme,
            globex = setup.globex,
            partner = if setup.partner {
                "[partner]\napi_key = { file = \"partner.key\" }\n"
            } else {
                ""
            },
        )
    });
    let sms = setup.sms.as_ref().map_or(String::new(), |body| {
        format!("[sms]\n{ca}{}\n", body.replace("$MOCK", base_url))
    });
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{server}

{sms}

[upstream]
base_url = "{base_url}"
{ca}{upstream}

[shutdown]
{shutdown}

[rate_limit]
{rate_limit}

[cache]
{cache}

{tenants}

{extra}
"#,
        server = setup.server,
        upstream = setup.upstream,
        shutdown = setup.shutdown,
        extra = setup.extra,
        rate_limit = setup.rate_limit,
        cache = setup.cache,
    )
}

/// Writes `text` to `dir/name`; returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// The key files [`config_text`]'s default tenants read, with `accounts`' keys.
pub fn write_keys(dir: &Path, accounts: &MockAccounts) {
    let w = |n: &str, v: &str| write(dir, n, &format!("{v}\n"));
    w("partner.key", &accounts.partner_key);
    w("acme.api", &accounts.shops[0].api_key);
    w("acme.shop", &accounts.shops[0].shop_key);
    w("globex.api", &accounts.shops[1].api_key);
    for (name, shop) in ["acme", "globex"].iter().zip(&accounts.shops) {
        w(&format!("{name}.sms_user"), &shop.sms_username);
        w(&format!("{name}.sms_password"), &shop.sms_password);
    }
}

impl Harness {
    pub async fn start() -> Harness {
        Self::with(Setup::default()).await
    }

    pub async fn with(setup: Setup) -> Harness {
        let accounts = MockAccounts::demo();
        let mock = start_mock(accounts.clone(), setup.tls).await;
        let dir = tempfile::tempdir().unwrap();
        write_keys(dir.path(), &accounts);
        if let Some(pem) = mock.ca_pem() {
            write(dir.path(), "ca.pem", pem);
        }
        let base = setup.base_url.clone().unwrap_or_else(|| mock.base_url());
        let text = config_text(&setup, &base);
        let no_env = |_: &str| None;
        let cfg = Config::parse(&text, dir.path(), &no_env).unwrap_or_else(|e| panic!("{e}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let opts = etelecom_gateway::app::Options {
            admin: Some(admin_listener),
            config_path: None,
            hangup: None,
        };
        let task = tokio::spawn(async move {
            etelecom_gateway::app::run_with(cfg, listener, opts, async {
                let _ = stopped.await;
            })
            .await
        });
        let client = client();
        Harness {
            mock,
            accounts,
            addr,
            admin,
            dir,
            client,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// POSTs `body` to `path` for `tenant`, with extra headers.
    pub async fn call_with(
        &self,
        path: &str,
        tenant: Option<&str>,
        body: &str,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.send(post_with(self.addr, path, tenant, body, headers))
            .await
    }

    /// POSTs `{}` to `path` for `tenant`, telling the mock eTelecom how to behave for this one
    /// request (`hang`, `reset`, `delay=<ms>`, `status=<code>[;retry_after=<s>]`).
    pub async fn call_mock(&self, path: &str, tenant: Option<&str>, behaviour: &str) -> Reply {
        self.call_with(path, tenant, "{}", &[("x-mock-behaviour", behaviour)])
            .await
    }

    /// A request to the admin listener.
    pub async fn admin(&self, method: &str, path_and_query: &str) -> Reply {
        self.admin_with(method, path_and_query, "").await
    }

    /// A request with a body to the admin listener.
    pub async fn admin_with(&self, method: &str, path_and_query: &str, body: &str) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path_and_query}", self.admin))
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        self.send(req).await
    }

    /// `/metrics` as text.
    pub async fn metrics(&self) -> String {
        let r = self.admin("GET", "/metrics").await;
        assert_eq!(r.status, 200);
        String::from_utf8(r.body.to_vec()).unwrap()
    }

    pub async fn call(&self, path: &str, tenant: Option<&str>, body: &str) -> Reply {
        self.call_with(path, tenant, body, &[]).await
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        send(&self.client, req).await
    }

    /// Stops the gateway and waits for it.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap().unwrap();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `x-cache` header; `<none>` when absent.
    pub fn x_cache(&self) -> &str {
        self.headers
            .get("x-cache")
            .map_or("<none>", |v| v.to_str().unwrap())
    }

    /// Asserts a gateway error: status, code, `meta.source` and the request id echoed.
    pub fn assert_gateway_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {:?}", self.body);
        let v = self.json();
        assert_eq!(v["code"], code, "{v}");
        assert_eq!(v["meta"]["source"], "gateway", "{v}");
        let id = self.headers["x-request-id"].to_str().unwrap();
        assert_eq!(v["meta"]["request_id"], id, "{v}");
        assert_eq!(self.headers["content-type"], "application/json");
    }
}

/// Starts one more gateway from config text whose relative paths resolve in `dir`; it runs
/// until the test's runtime ends. Returns its address.
pub async fn spawn_gateway(text: &str, dir: &Path) -> SocketAddr {
    let cfg = Config::parse(text, dir, &|_: &str| None).unwrap_or_else(|e| panic!("{e}"));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        etelecom_gateway::app::run(&cfg, listener, std::future::pending()).await
    });
    addr
}

/// Starts the mock eTelecom on a free port of 127.0.0.1.
pub async fn start_mock(accounts: MockAccounts, tls: bool) -> MockUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    MockUpstream::start(listener, MockOptions { accounts, tls })
        .await
        .unwrap()
}

/// A plain HTTP/1.1 client that keeps connections alive.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `req` with `client`; an error is a transport error (refused, reset, ...) or no answer
/// within 20 s.
pub async fn request(
    client: &Client<HttpConnector, Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<Reply, String> {
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .map_err(|_| "no answer within 20 s".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// [`request`], panicking on a transport error.
pub async fn send(client: &Client<HttpConnector, Full<Bytes>>, req: Request<Full<Bytes>>) -> Reply {
    let what = format!("{} {}", req.method(), req.uri());
    request(client, req)
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"))
}

/// A POST of `body` to `path` on the gateway at `addr`.
pub fn post(
    addr: SocketAddr,
    path: &str,
    tenant: Option<&str>,
    body: &str,
) -> Request<Full<Bytes>> {
    post_with(addr, path, tenant, body, &[])
}

/// [`post`] with extra headers.
pub fn post_with(
    addr: SocketAddr,
    path: &str,
    tenant: Option<&str>,
    body: &str,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut req =
        Request::post(format!("http://{addr}{path}")).header("content-type", "application/json");
    if let Some(t) = tenant {
        req = req.header("x-tenant-id", t);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(Bytes::from(body.to_owned()))).unwrap()
}

/// The value of the sample `name{...}` whose labels include every `labels` pair; `None` when no
/// such sample exists.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            (n == name).then_some((rest, value))
        })
        .filter(|(rest, _)| {
            labels
                .iter()
                .all(|(k, v)| rest.split(',').any(|p| p == format!("{k}=\"{v}\"")))
        })
        .map(|(_, v)| v.parse::<f64>().unwrap())
        .reduce(|a, b| a + b)
}

/// An installed tool (`name`, from Debian's `package`) on `PATH`. Missing: `None` after printing
/// SKIPPED, or a failure when `CI` is set (CI installs the package).
pub fn external_tool(name: &str, package: &str, test: &str) -> Option<PathBuf> {
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
            "{test}: `{name}` is not on PATH and CI is set (install Debian's `{package}` package)"
        ),
        None => {
            eprintln!(
                "SKIPPED {test}: `{name}` is not on PATH (Debian: apt-get install {package})"
            );
            None
        }
    }
}

/// The first 8 hex digits of a secret's SHA-256, as the gateway shows keys and SMS accounts.
pub fn fingerprint(secret: &str) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    d.as_ref()[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// An address on 127.0.0.1 whose port was just closed: connecting to it is refused.
pub fn closed_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}
