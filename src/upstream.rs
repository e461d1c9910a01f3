//! The connection to eTelecom: requests over a gateway-owned connection [`pool`] (hyper-rustls
//! connector; HTTP/1.1 with the gateway's own codec, [`h1`], driven from the caller's task;
//! HTTP/2 by ALPN through hyper), their timeouts, and the classification of what can go wrong on
//! the way.
//!
//! The whole exchange, response headers and body, runs under `timeout`: a stalled upstream turns
//! into a 504, never a hung caller. Bodies are read whole (eTelecom answers small JSON documents)
//! under `max_response_bytes`.

mod h1;
mod pool;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, request};
use http_body_util::LengthLimitError;
use hyper_rustls::HttpsConnectorBuilder;
use hyper_util::client::legacy::connect::HttpConnector;

use pool::{Failure, Pool};

use crate::config::UpstreamConfig;
use crate::headers;

/// Why no usable answer came back from eTelecom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("could not connect to the upstream")]
    Connect,
    #[error("timed out connecting to the upstream")]
    ConnectTimeout,
    #[error("TLS failure with the upstream")]
    Tls,
    #[error("invalid or broken HTTP exchange with the upstream")]
    Protocol,
    #[error("upstream response larger than the configured limit")]
    ResponseTooLarge,
    #[error("upstream did not answer in time")]
    Timeout,
}

impl UpstreamError {
    /// The closed-set label for logs and metrics.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::ConnectTimeout | Self::Timeout => "timeout",
            Self::Tls => "tls",
            Self::Protocol | Self::ResponseTooLarge => "protocol",
        }
    }
}

/// eTelecom's answer, read whole.
#[derive(Debug, Clone)]
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The pooled client and where it points (cheap to clone: clones share the pool).
#[derive(Clone)]
pub struct Upstream {
    pool: Arc<Pool>,
    host: HeaderValue,
    path_prefix: Arc<str>,
    timeout: Duration,
    max_response_bytes: usize,
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> Result<Self, String> {
        let tls = client_tls(cfg)?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let builder = HttpsConnectorBuilder::new().with_tls_config(tls);
        let builder = if cfg.scheme == Scheme::HTTPS {
            builder.https_only()
        } else {
            builder.https_or_http()
        };
        let connector = builder.enable_all_versions().wrap_connector(http);
        let pool = Pool::new(
            connector,
            cfg.scheme.clone(),
            cfg.authority.clone(),
            cfg.pool_max_idle_per_host,
            cfg.pool_idle_timeout,
        )?;
        let host = HeaderValue::from_str(cfg.authority.as_str())
            .map_err(|_| "upstream authority is not a valid Host header".to_owned())?;
        Ok(Self {
            pool: Arc::new(pool),
            host,
            path_prefix: cfg.path_prefix.as_ref().into(),
            timeout: cfg.timeout,
            max_response_bytes: usize::try_from(cfg.max_response_bytes).unwrap_or(usize::MAX),
        })
    }

    /// Forwards one call: the caller's request head (credentials and hop-by-hop headers are
    /// stripped here), the `Authorization` value to set (`None`: the credential is in the body)
    /// and the body.
    pub async fn send(
        &self,
        parts: request::Parts,
        path: &str,
        tenant_header: &HeaderName,
        bearer: Option<&HeaderValue>,
        body: Bytes,
    ) -> Result<UpstreamResponse, UpstreamError> {
        let path = self.path(path);
        let mut headers = parts.headers;
        headers::to_upstream(&mut headers, tenant_header, bearer, &self.host);
        let exchange = self
            .pool
            .exchange(headers, body, &path, self.max_response_bytes);
        let (mut head, body) = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result.map_err(classify)?,
            Err(_) => return Err(UpstreamError::Timeout),
        };
        check_status(head.status)?;
        headers::to_caller(&mut head.headers);
        Ok(UpstreamResponse {
            status: head.status,
            headers: head.headers,
            body,
        })
    }

    /// Closes idle connections that expired or that eTelecom closed (housekeeping).
    pub fn close_idle(&self) {
        self.pool.close_expired();
    }

    /// The path sent upstream: the base URL's path prefix and the call's path. Both are valid
    /// already (the prefix was checked with the config, the call's path by the request parser),
    /// so nothing is validated or copied again when there is no prefix.
    fn path<'p>(&self, path: &'p str) -> Cow<'p, str> {
        match (self.path_prefix.is_empty(), path.is_empty()) {
            (true, false) => Cow::Borrowed(path),
            (true, true) => Cow::Borrowed("/"),
            (false, _) => Cow::Owned(format!("{}{path}", self.path_prefix)),
        }
    }
}

/// The rustls client config: Mozilla's roots (compiled in, so a distroless image needs no CA
/// bundle), the system's roots when asked for, plus the operator's extra roots. No
/// process-wide crypto provider is installed.
fn client_tls(cfg: &UpstreamConfig) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if cfg.system_roots {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "while loading the system's root certificates");
        }
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::info!(added, ignored, "system root certificates loaded");
    }
    for cert in &cfg.extra_roots {
        roots
            .add(cert.clone())
            .map_err(|e| format!("upstream.ca_file: certificate rejected: {e}"))?;
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up failed: {e}"))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// Sorts a failure into connect / TLS / protocol / size, logging the cause (which names the
/// upstream address and never a header).
fn classify(f: Failure) -> UpstreamError {
    let kind = match &f {
        Failure::Connect(e) => classify_kind(&**e, true),
        Failure::Exchange(e) => classify_kind(e, false),
        Failure::H1(h1::Error::TooLarge) => return UpstreamError::ResponseTooLarge,
        Failure::H1(e) => classify_kind(e, false),
        Failure::Body(e) if e.is::<LengthLimitError>() => return UpstreamError::ResponseTooLarge,
        Failure::Body(e) => {
            tracing::warn!(error = %chain(&**e), "upstream response body failed");
            return UpstreamError::Protocol;
        }
        Failure::Uri(_) => UpstreamError::Protocol,
    };
    let error: &(dyn std::error::Error + 'static) = match &f {
        Failure::Connect(e) | Failure::Body(e) => &**e,
        Failure::Exchange(e) => e,
        Failure::H1(e) => e,
        Failure::Uri(e) => e,
    };
    tracing::warn!(error = %chain(error), kind = kind.kind(), "upstream request failed");
    kind
}

/// Walks `e` and its causes: a rustls error is TLS, a timed-out connect is a connect timeout,
/// anything else a connect or protocol error by where it happened.
fn classify_kind(e: &(dyn std::error::Error + 'static), connecting: bool) -> UpstreamError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<rustls::Error>() {
            return UpstreamError::Tls;
        }
        // `io::Error::source` skips the error it wraps, so walk into it by hand.
        cause = match c.downcast_ref::<std::io::Error>() {
            Some(io) if connecting && io.kind() == std::io::ErrorKind::TimedOut => {
                return UpstreamError::ConnectTimeout;
            }
            Some(io) => match io.get_ref() {
                Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                None => c.source(),
            },
            None => c.source(),
        };
    }
    if connecting {
        UpstreamError::Connect
    } else {
        UpstreamError::Protocol
    }
}

/// Only final statuses (2xx–5xx) are answers: an unsolicited `101 Switching Protocols`, any other
/// 1xx that reaches this point, or a status past 599 (e.g. `999`) is a broken exchange, never
/// something to relay to the caller.
pub(crate) fn check_status(status: StatusCode) -> Result<(), UpstreamError> {
    if (200..=599).contains(&status.as_u16()) {
        Ok(())
    } else {
        tracing::warn!(
            status = status.as_u16(),
            kind = UpstreamError::Protocol.kind(),
            "upstream answered with a status outside 2xx-5xx"
        );
        Err(UpstreamError::Protocol)
    }
}

/// An error and its causes on one line.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn upstream_cfg(extra: &str) -> UpstreamConfig {
        let text =
            format!("[upstream]\n{extra}\n[[tenants]]\nid = \"a\"\napi_key = {{ env = \"K\" }}\n");
        let env = |_: &str| Some("1:k".to_owned());
        Config::parse(&text, std::path::Path::new("."), &env)
            .expect("config")
            .upstream
    }

    #[tokio::test]
    async fn clients_build_with_and_without_system_roots() {
        for extra in ["", "system_roots = true"] {
            let cfg = upstream_cfg(extra);
            assert_eq!(cfg.system_roots, !extra.is_empty());
            assert!(Upstream::new(&cfg).is_ok(), "{extra}");
        }
    }

    #[test]
    fn only_2xx_to_5xx_are_answers() {
        for ok in [200, 204, 299, 301, 401, 404, 429, 500, 503, 599] {
            let s = StatusCode::from_u16(ok).expect("status");
            assert_eq!(check_status(s), Ok(()), "{ok}");
        }
        for bad in [100, 101, 102, 103, 199, 600, 700, 999] {
            let s = StatusCode::from_u16(bad).expect("status");
            assert_eq!(check_status(s), Err(UpstreamError::Protocol), "{bad}");
        }
    }

    #[test]
    fn base_url_path_prefix_is_joined() {
        let u = Upstream::new(&upstream_cfg("base_url = \"https://sandbox.example/api/\""))
            .expect("client");
        let path = u.path("/v1/shop.Misc/CurrentAccount");
        assert_eq!(path, "/api/v1/shop.Misc/CurrentAccount");
    }

    #[test]
    fn without_a_prefix_the_callers_path_is_sent_as_it_is_never_copied() {
        let u = Upstream::new(&upstream_cfg("base_url = \"https://sandbox.example/\""))
            .expect("client");
        let call = "/v1/shop.Misc/CurrentAccount";
        let sent = u.path(call);
        assert!(
            matches!(sent, Cow::Borrowed(p) if std::ptr::eq(p, call)),
            "{sent:?}"
        );
        assert_eq!(
            u.path(""),
            "/",
            "an empty path is never a request line without a target"
        );
    }
}
