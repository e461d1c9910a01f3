//! The project's mock eTelecom API: a real HTTP server (HTTP/1.1 and h2/h2c,
//! optionally TLS with a throwaway CA) on a loopback socket, used by the tests,
//! the `demo` command, the `mock-upstream` subcommand and the benchmarks.
//!
//! It owns: the public mock types ([`MockUpstream`], [`MockOptions`],
//! [`MockAccounts`], [`Behaviour`], [`Received`]), the accept loop and
//! connection lifecycle, request recording, behaviour control (global, over
//! HTTP at `/__mock/*`, and per request with the `x-mock-behaviour` header)
//! and [`run_standalone`]. The accept loop, connections and the answer to a
//! request live in `mock/server.rs`, the `/__mock/*` endpoints in
//! `mock/control.rs`, routing/auth rules in `mock/auth.rs`, response bodies in
//! `mock/bodies.rs`, the SMS brandname host (`/api/*`, credentials in the body)
//! in `mock/sms.rs`, certificate generation in `mock/tls.rs`, tests in
//! `mock/tests.rs` and `mock/tests/`.
//!
//! Answer order for an API request: record it, apply the behaviour (per-request
//! header, else global), then as eTelecom does: non-POST or unknown path → 404
//! `bad_route`; Content-Type not `application/json` → 404 `bad_route`
//! (`unexpected Content-Type: "<value>"`); key type not allowed on the path
//! type → 401 `unauthenticated`; body not a JSON object → 400
//! `invalid_argument`; else 200 with a per-shop body. Paths under `/api/` are
//! the SMS host's instead (see `mock/sms.rs`): after the behaviour, unknown path
//! → 404, body not an object → 400, wrong `username`/`password` → 401, a forced
//! `sms_status` → 200 business error, else the method's answer.
//!
//! Control endpoints (no auth, not recorded, not counted):
//! * `POST /__mock/behaviour` with `{"behaviour":"normal"|"hang"|"reset"|"echo_auth"}`,
//!   `{"behaviour":"delay","ms":200}`,
//!   `{"behaviour":"status","status":503,"body":{..},"retry_after":2}` (body and
//!   retry_after optional), `{"behaviour":"sms_status","sms_status":"-3"}` (SMS
//!   paths only), `{"expires_at":"<RFC 3339>"|null}`, `{"reset":true}`
//!   (back to normal and the default expiry); keys may be combined.
//! * `GET /__mock/requests` → `{"count":N}`; `DELETE /__mock/requests` clears.
//!
//! Per-request header `x-mock-behaviour`: `normal`, `hang`, `reset`, `echo_auth`,
//! `delay=<ms>`, `status=<code>`, `status=<code>;retry_after=<secs>` or
//! `sms_status=<-N>` (an SMS business error, e.g. `sms_status=-3`).

mod auth;
mod bodies;
mod control;
mod server;
mod sms;
mod tls;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode, Version};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub use bodies::{extension_password, tenant_domain};

/// Id of demo shop "Acme".
pub const DEMO_ACME_ID: &str = "1001";
/// Acme's own api_key (accepted on `/v1/shop.*`).
pub const DEMO_ACME_API_KEY: &str =
    "1001:demo-acme-api-key-2970ec2bf84af7bf933bddcedd40d3e0ca80129939ea14";
/// Acme's partner-issued shop_key (accepted on shop-scoped `/v1/partner.*`).
pub const DEMO_ACME_SHOP_KEY: &str =
    "shop1001:demo-acme-shop-key-8c1922cf7583baa1edf0c7a2c0ebf7a4dae5c7176cd13";
/// Id of demo shop "Globex".
pub const DEMO_GLOBEX_ID: &str = "1002";
/// Globex's own api_key.
pub const DEMO_GLOBEX_API_KEY: &str =
    "1002:demo-globex-api-key-b45248c2db89455388370211e187043d1a4dc0240225";
/// Globex's partner-issued shop_key.
pub const DEMO_GLOBEX_SHOP_KEY: &str =
    "shop1002:demo-globex-shop-key-b461907837643737232f5705798fa22bec5b8ad5510";
/// Acme's SMS brandname account (`username`, `password` in the JSON body).
pub const DEMO_ACME_SMS_USERNAME: &str = "acme_sms";
pub const DEMO_ACME_SMS_PASSWORD: &str = "demo-acme-sms-password-5d1f0c9a7e";
/// Globex's SMS brandname account.
pub const DEMO_GLOBEX_SMS_USERNAME: &str = "globex_sms";
pub const DEMO_GLOBEX_SMS_PASSWORD: &str = "demo-globex-sms-password-93be27d4a1";
/// The demo partner's key (partner id 9000; partner-level `/v1/partner.*`).
pub const DEMO_PARTNER_KEY: &str =
    "9000:demo-partner-key-e134f962cbc48167448590c3d36267de405b651556db7df";

/// Per-request behaviour override header.
pub const BEHAVIOUR_HEADER: &str = "x-mock-behaviour";

/// One tenant known to the mock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockShop {
    /// Decimal shop account id.
    pub id: String,
    /// The shop's own key, `<id>:<secret>`.
    pub api_key: String,
    /// The partner-issued key, `shop<id>:<secret>`.
    pub shop_key: String,
    /// The shop's SMS brandname account.
    pub sms_username: String,
    pub sms_password: String,
}

/// The credentials the mock accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MockAccounts {
    pub shops: Vec<MockShop>,
    /// The partner's own key, `<partner_id>:<secret>`.
    pub partner_key: String,
}

impl MockAccounts {
    /// Two shops and one partner, with the public `DEMO_*` keys:
    /// shop `1001` (Acme): [`DEMO_ACME_API_KEY`], [`DEMO_ACME_SHOP_KEY`], SMS
    /// [`DEMO_ACME_SMS_USERNAME`] / [`DEMO_ACME_SMS_PASSWORD`];
    /// shop `1002` (Globex): [`DEMO_GLOBEX_API_KEY`], [`DEMO_GLOBEX_SHOP_KEY`],
    /// SMS [`DEMO_GLOBEX_SMS_USERNAME`] / [`DEMO_GLOBEX_SMS_PASSWORD`];
    /// partner `9000`: [`DEMO_PARTNER_KEY`]. Secrets are 64 characters, as
    /// eTelecom's are.
    pub fn demo() -> Self {
        let shop = |id: &str, api: &str, key: &str, (user, pw): (&str, &str)| MockShop {
            id: id.to_owned(),
            api_key: api.to_owned(),
            shop_key: key.to_owned(),
            sms_username: user.to_owned(),
            sms_password: pw.to_owned(),
        };
        MockAccounts {
            shops: vec![
                shop(
                    DEMO_ACME_ID,
                    DEMO_ACME_API_KEY,
                    DEMO_ACME_SHOP_KEY,
                    (DEMO_ACME_SMS_USERNAME, DEMO_ACME_SMS_PASSWORD),
                ),
                shop(
                    DEMO_GLOBEX_ID,
                    DEMO_GLOBEX_API_KEY,
                    DEMO_GLOBEX_SHOP_KEY,
                    (DEMO_GLOBEX_SMS_USERNAME, DEMO_GLOBEX_SMS_PASSWORD),
                ),
            ],
            partner_key: DEMO_PARTNER_KEY.to_owned(),
        }
    }
}

/// How [`MockUpstream::start`] sets the mock up.
#[derive(Clone, Debug)]
pub struct MockOptions {
    pub accounts: MockAccounts,
    /// Serve TLS with a freshly generated CA (see [`MockUpstream::ca_pem`]).
    pub tls: bool,
}

impl Default for MockOptions {
    /// Demo accounts, plain HTTP.
    fn default() -> Self {
        MockOptions {
            accounts: MockAccounts::demo(),
            tls: false,
        }
    }
}

/// Which key the mock's auth rule accepted for a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MockKeyType {
    /// A shop's own api_key on `/v1/shop.*`.
    ShopApiKey { shop: String },
    /// A partner-issued shop_key on a shop-scoped `/v1/partner.*` method.
    ShopKey { shop: String },
    /// The partner key on a partner-level method.
    Partner,
    /// A shop's SMS account (`username` + `password` in the body) on an SMS path.
    Sms { shop: String },
}

/// One request as the mock received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub version: Version,
    pub method: Method,
    /// The URI path only (see `uri` for the query and, on h2, the authority).
    pub path: String,
    pub uri: http::Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The key the path's auth rule accepted; None when the path is not a
    /// method path or the key was missing, unknown or of the wrong type.
    pub accepted_key: Option<MockKeyType>,
}

/// How the mock answers API requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Behaviour {
    /// Answer as eTelecom would.
    Normal,
    /// Answer normally after this delay (ended early by shutdown).
    Delay(Duration),
    /// Never answer; the connection stays open until the mock shuts down.
    Hang,
    /// Answer with this status, this body (sent as `application/json`) and,
    /// when set, `Retry-After: <secs>`.
    Status {
        status: u16,
        body: String,
        retry_after: Option<u64>,
    },
    /// Fail the request without any HTTP response: HTTP/1 closes the
    /// connection, h2 resets the stream.
    Reset,
    /// Answer 401 `unauthenticated` with a body that quotes the `Authorization` value it was
    /// sent, raw in `msg`, inside nested objects and arrays, and JSON-escaped, as an eTelecom
    /// that echoes the token would.
    EchoAuth,
    /// SMS paths: after the credential check, answer 200 with this business
    /// error status (`"-3"`: out of credit). API paths answer normally.
    SmsStatus(String),
}

impl Behaviour {
    /// A forced status with eTelecom's error body for that status.
    pub fn status(status: u16, retry_after: Option<u64>) -> Self {
        let body = json!({
            "code": bodies::code_for_status(status),
            "msg": format!("mock: forced status {status}"),
        });
        Behaviour::Status {
            status,
            body: body.to_string(),
            retry_after,
        }
    }

    /// Parses an `x-mock-behaviour` header value.
    pub fn parse_header(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let bad = || format!("bad {BEHAVIOUR_HEADER} value {value:?}");
        match value {
            "normal" => return Ok(Behaviour::Normal),
            "hang" => return Ok(Behaviour::Hang),
            "reset" => return Ok(Behaviour::Reset),
            "echo_auth" => return Ok(Behaviour::EchoAuth),
            _ => {}
        }
        if let Some(status) = value.strip_prefix("sms_status=") {
            return sms_status(status).ok_or_else(bad);
        }
        if let Some(ms) = value.strip_prefix("delay=") {
            let ms = ms.trim().parse::<u64>().map_err(|_| bad())?;
            return Ok(Behaviour::Delay(Duration::from_millis(ms)));
        }
        let spec = value.strip_prefix("status=").ok_or_else(bad)?;
        let (code, rest) = spec.split_once(';').unwrap_or((spec, ""));
        let code = parse_status(code.trim().parse::<u64>().ok()).ok_or_else(bad)?;
        let retry_after = match rest.trim() {
            "" => None,
            r => {
                let secs = r
                    .strip_prefix("retry_after=")
                    .or_else(|| r.strip_prefix("retry-after="))
                    .ok_or_else(bad)?;
                Some(secs.trim().parse::<u64>().map_err(|_| bad())?)
            }
        };
        Ok(Behaviour::status(code, retry_after))
    }
}

/// An SMS business error status: `-1` to `-9`.
fn sms_status(v: &str) -> Option<Behaviour> {
    let v = v.trim();
    let ok = matches!(v.as_bytes(), [b'-', b'1'..=b'9']);
    ok.then(|| Behaviour::SmsStatus(v.to_owned()))
}

fn parse_status(v: Option<u64>) -> Option<u16> {
    let code = u16::try_from(v?).ok()?;
    StatusCode::from_u16(code).ok().map(|_| code)
}

/// What `expires_at` the mock puts in its bodies.
#[derive(Clone, Debug)]
enum ExpiresSetting {
    /// 30 days from the moment of the answer.
    Default,
    Omit,
    Fixed(String),
}

/// How many received requests are kept for [`MockUpstream::received`]: the most recent ones.
/// Bounded so that a benchmark's millions of requests cannot exhaust memory; the count keeps
/// counting them all.
pub const RECORD_LIMIT: usize = 10_000;

struct State {
    behaviour: Behaviour,
    expires: ExpiresSetting,
    received: std::collections::VecDeque<Received>,
    /// Every API request received since the start or the last clear.
    total: usize,
    /// Messages the SMS host accepted.
    outbox: sms::Outbox,
}

struct Shared {
    accounts: MockAccounts,
    state: Mutex<State>,
    /// Number of recorded requests, for [`MockUpstream::wait_for_requests`].
    count: watch::Sender<usize>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, r: Received) {
        let n = {
            let mut st = self.lock();
            if st.received.len() == RECORD_LIMIT {
                st.received.pop_front();
            }
            st.received.push_back(r);
            st.total += 1;
            st.total
        };
        self.count.send_replace(n);
    }

    fn clear(&self) {
        let mut st = self.lock();
        st.received.clear();
        st.total = 0;
        drop(st);
        self.count.send_replace(0);
    }

    fn expires_at(&self) -> Option<String> {
        let setting = self.lock().expires.clone();
        match setting {
            ExpiresSetting::Omit => None,
            ExpiresSetting::Fixed(s) => Some(s),
            ExpiresSetting::Default => {
                let t = time::OffsetDateTime::now_utc() + time::Duration::days(30);
                t.replace_nanosecond(0)
                    .unwrap_or(t)
                    .format(&time::format_description::well_known::Rfc3339)
                    .ok()
            }
        }
    }
}

/// A running mock eTelecom. Dropping it without [`MockUpstream::shutdown`]
/// still stops the server, in the background.
pub struct MockUpstream {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tls: bool,
    ca_pem: Option<String>,
    shutdown_tx: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MockUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockUpstream")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl MockUpstream {
    /// Starts serving on `listener` in a spawned task (needs a Tokio runtime).
    pub async fn start(listener: TcpListener, opts: MockOptions) -> io::Result<MockUpstream> {
        let addr = listener.local_addr()?;
        let material = if opts.tls {
            Some(tls::generate()?)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            accounts: opts.accounts,
            state: Mutex::new(State {
                behaviour: Behaviour::Normal,
                expires: ExpiresSetting::Default,
                received: std::collections::VecDeque::new(),
                total: 0,
                outbox: sms::Outbox::default(),
            }),
            count: watch::Sender::new(0),
        });
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let acceptor = material
            .as_ref()
            .map(|m| TlsAcceptor::from(Arc::clone(&m.config)));
        let task = tokio::spawn(server::accept_loop(
            listener,
            Arc::clone(&shared),
            acceptor,
            shutdown_rx,
        ));
        tracing::debug!(%addr, tls = opts.tls, "mock eTelecom started");
        Ok(MockUpstream {
            shared,
            addr,
            tls: opts.tls,
            ca_pem: material.map(|m| m.ca_pem),
            shutdown_tx,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (the bound address; unspecified → loopback),
    /// or `https://localhost:PORT` with TLS.
    pub fn base_url(&self) -> String {
        if self.tls {
            return format!("https://localhost:{}", self.addr.port());
        }
        let mut addr = self.addr;
        match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => addr.set_ip(Ipv4Addr::LOCALHOST.into()),
            IpAddr::V6(ip) if ip.is_unspecified() => addr.set_ip(Ipv6Addr::LOCALHOST.into()),
            _ => {}
        }
        format!("http://{addr}")
    }

    /// The CA certificate (PEM) that signed the server certificate, with TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    pub fn accounts(&self) -> &MockAccounts {
        &self.shared.accounts
    }

    /// The API requests received so far (the last [`RECORD_LIMIT`]), oldest first.
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().received.iter().cloned().collect()
    }

    /// Number of API requests received (control requests are not counted).
    pub fn request_count(&self) -> usize {
        self.shared.lock().total
    }

    /// Forgets the recorded requests (the count restarts at 0).
    pub fn clear_received(&self) {
        self.shared.clear();
    }

    /// Resolves once at least `n` API requests have been recorded.
    pub async fn wait_for_requests(&self, n: usize) {
        let mut rx = self.shared.count.subscribe();
        let _ = rx.wait_for(|c| *c >= n).await;
    }

    pub fn set_behaviour(&self, b: Behaviour) {
        self.shared.lock().behaviour = b;
    }

    pub fn behaviour(&self) -> Behaviour {
        self.shared.lock().behaviour.clone()
    }

    /// `Some(v)`: every `expires_at` is `v`; `None`: the field is omitted.
    pub fn set_expires_at(&self, v: Option<String>) {
        self.shared.lock().expires = v.map_or(ExpiresSetting::Omit, ExpiresSetting::Fixed);
    }

    /// Back to the default `expires_at` (30 days from now).
    pub fn reset_expires_at(&self) {
        self.shared.lock().expires = ExpiresSetting::Default;
    }

    /// Stops accepting, ends every connection (hanging ones too; others get
    /// a short grace period) and returns when all are gone.
    pub async fn shutdown(mut self) {
        self.shutdown_tx.send_replace(true);
        let Some(task) = self.task.take() else {
            return;
        };
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "mock eTelecom accept loop failed");
        }
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.shutdown_tx.send_replace(true);
    }
}

/// Runs the demo-accounts mock on `listen` until `shutdown` resolves (the
/// `mock-upstream` subcommand). With TLS and `ca_out`, the CA PEM is written
/// there before the listening address is logged.
pub async fn run_standalone(
    listen: SocketAddr,
    tls: bool,
    ca_out: Option<PathBuf>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    let mock = MockUpstream::start(
        listener,
        MockOptions {
            accounts: MockAccounts::demo(),
            tls,
        },
    )
    .await?;
    match (&ca_out, mock.ca_pem()) {
        (Some(path), Some(pem)) => {
            tokio::fs::write(path, pem).await?;
            tracing::info!(path = %path.display(), "mock eTelecom CA certificate written");
        }
        (Some(_), None) => tracing::warn!("--ca-out ignored: the mock is not serving TLS"),
        _ => {}
    }
    tracing::info!(
        addr = %mock.addr(),
        base_url = %mock.base_url(),
        "mock eTelecom listening on {}",
        mock.base_url()
    );
    shutdown.await;
    tracing::info!("mock eTelecom shutting down");
    mock.shutdown().await;
    Ok(())
}
