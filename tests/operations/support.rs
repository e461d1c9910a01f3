//! Shared by the operations tests: the runtime and the mock, the config they write, an HTTP
//! client with and without connection reuse, bounded polling and key fingerprints.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use etelecom_gateway::mock::{MockAccounts, MockUpstream};
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::runtime::Runtime;

use crate::common::{self, Reply, Setup};

/// A read the gateway never caches: every call goes upstream with the injected key.
pub const CALL_LOGS: &str = "/v1/shop.Etelecom/ListCallLogs";
/// A read the gateway caches (the mock's answer carries `expires_at`).
pub const EXTENSION_INFO: &str = "/v1/shop.Etelecom/GetExtensionInfo";

pub fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The mock eTelecom (plain HTTP) with `accounts`, on `rt`.
pub fn start_mock(rt: &Runtime, accounts: MockAccounts) -> MockUpstream {
    rt.block_on(common::start_mock(accounts, false))
}

/// The gateway config the tests write: both listeners on port 0, reloads only by file watching
/// or SIGHUP (the interval is an hour), generous limits unless a test says otherwise.
/// `tenants`: the `[partner]` and `[[tenants]]` blocks; `None` for the harness's `acme`, `globex`
/// and partner with the mock's demo keys (see [`write_config`]).
pub fn config(mock: &MockUpstream, tenants: Option<&str>) -> Setup {
    Setup {
        base_url: Some(mock.base_url()),
        upstream: upstream_timeouts(5_000),
        extra: "[admin]\nlisten = \"127.0.0.1:0\"\n\n[reload]\ninterval_secs = 3600\n".into(),
        tenants: tenants.map(str::to_owned),
        ..Setup::default()
    }
}

/// The `[upstream]` timeouts: connect 2 s, the whole call `timeout_ms`.
pub fn upstream_timeouts(timeout_ms: u64) -> String {
    format!("connect_timeout_ms = 2000\ntimeout_ms = {timeout_ms}")
}

/// Writes `setup` to `dir/gw.toml` and, for the default tenants, their key files (the mock's
/// demo keys); returns the config's path.
pub fn write_config(dir: &Path, setup: &Setup) -> PathBuf {
    if setup.tenants.is_none() {
        common::write_keys(dir, &MockAccounts::demo());
    }
    let base_url = setup.base_url.as_deref().expect("the mock's URL");
    common::write(dir, "gw.toml", &common::config_text(setup, base_url))
}

/// HTTP/1.1 clients: `pooled` keeps connections alive, `fresh` opens one per request.
#[derive(Clone)]
pub struct Http {
    pooled: Client<HttpConnector, Full<Bytes>>,
    fresh: Client<HttpConnector, Full<Bytes>>,
}

impl Http {
    pub fn new() -> Http {
        Http {
            pooled: common::client(),
            fresh: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(0)
                .build_http(),
        }
    }

    /// Sends `req`; an error is a transport error (refused, reset, ...); bounded at 20 s.
    pub async fn try_send(&self, req: Request<Full<Bytes>>, fresh: bool) -> Result<Reply, String> {
        let client = if fresh { &self.fresh } else { &self.pooled };
        common::request(client, req).await
    }

    pub async fn send(&self, req: Request<Full<Bytes>>) -> Reply {
        common::send(&self.pooled, req).await
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.send(Request::get(url).body(Full::default()).unwrap())
            .await
    }
}

/// Polls `f` every `every` until it gives `Some`, for at most `within` (so at most
/// `within / every` rounds); `None` when time is up.
pub async fn try_poll<T, F, Fut>(within: Duration, every: Duration, mut f: F) -> Option<T>
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
pub async fn poll<T, F, Fut>(within: Duration, every: Duration, what: &str, f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    try_poll(within, every, f)
        .await
        .unwrap_or_else(|| panic!("{what}: not within {within:?}"))
}

pub use crate::common::fingerprint;
