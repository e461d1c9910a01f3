//! The request lifecycle, and nothing else: each step lives in its own module; this one only
//! puts them in order.
//!
//! caller allowed? → route → credential (tenant + key) → body (size, JSON object) → cache
//! lookup (cacheable reads) → rate limit → forward → store / invalidate → respond. Any step's
//! `GatewayError` becomes a response in `error.rs`; every request ends in exactly one
//! access-log event.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, Uri, header, request};
use http_body_util::Full;
use hyper::body::Body;
use ipnet::IpNet;
use tracing::Level;

use crate::access_log::{AccessLog, REQUEST_ID, RequestIds};
use crate::cache::{Cache, Lookup};
use crate::catalogue::{Catalogue, Method};
use crate::config::{Config, RateMode, RatePolicy, UnknownMethods};
use crate::error::GatewayError;
use crate::ratelimit::{self, Bucket, RateLimitHeaders, RateLimiter};
use crate::route::Route;
use crate::tenants::{self, Credential, Tenants};
use crate::upstream::{Upstream, UpstreamResponse};
use crate::{body, redact, route};

pub const X_CACHE: header::HeaderName = header::HeaderName::from_static("x-cache");

/// How a response relates to the cache, for `X-Cache` and the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Bypass,
    Stale,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "HIT",
            Self::Miss => "MISS",
            Self::Bypass => "BYPASS",
            Self::Stale => "STALE",
        }
    }
}

/// The gateway service: cheap to clone, one per connection.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    tenants: Tenants,
    upstream: Upstream,
    cache: Option<Cache>,
    limiter: Arc<RateLimiter>,
    upstream_backoff: std::time::Duration,
    allowed_callers: Vec<IpNet>,
    max_body_bytes: u64,
    unknown_methods: UnknownMethods,
    request_ids: RequestIds,
}

/// One call on its way upstream.
struct Call<'a> {
    parts: request::Parts,
    uri: Uri,
    route: Route,
    cred: Credential<'a>,
    body: Bytes,
}

impl<'a> Call<'a> {
    fn bucket(&self) -> Bucket<'a> {
        Bucket::for_credential(self.cred.tenant.map(|t| &t.id), self.cred.key_class)
            .unwrap_or(Bucket::Partner)
    }
}

/// What came back from one upstream call.
#[derive(Debug, Clone)]
struct Forwarded {
    upstream: UpstreamResponse,
    ratelimit: RateLimitHeaders,
}

/// Why a cache fill produced no entry.
#[derive(Debug, Clone)]
enum FillError {
    Gateway(GatewayError),
    NotStored(Forwarded),
}

/// `Cache-Control` directives a caller may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CallerCache {
    Default,
    /// Skip the lookup, refresh the entry.
    NoCache,
    /// Skip the lookup, store nothing.
    NoStore,
}

impl CallerCache {
    fn from_headers(headers: &http::HeaderMap) -> Self {
        let mut out = Self::Default;
        for v in headers.get_all(header::CACHE_CONTROL) {
            for d in v.to_str().unwrap_or("").split(',') {
                let d = d.trim();
                if d.eq_ignore_ascii_case("no-store") {
                    return Self::NoStore;
                }
                if d.eq_ignore_ascii_case("no-cache") {
                    out = Self::NoCache;
                }
            }
        }
        out
    }
}

impl Gateway {
    /// Builds the gateway from a validated config (this builds the upstream client).
    pub fn new(cfg: &Config) -> Result<Self, String> {
        let cache = cfg
            .cache
            .enabled
            .then(|| Cache::new(&cfg.cache, cfg.tenants.iter().map(|t| &t.id)));
        Ok(Self {
            inner: Arc::new(Inner {
                tenants: Tenants::new(cfg),
                upstream: Upstream::new(&cfg.upstream)?,
                cache,
                limiter: Arc::new(RateLimiter::new(limiter_settings(cfg))),
                upstream_backoff: cfg.rate_limit.upstream_backoff,
                allowed_callers: cfg.server.allowed_callers.clone(),
                max_body_bytes: cfg.server.max_body_bytes,
                unknown_methods: cfg.routing.unknown_methods,
                request_ids: RequestIds::default(),
            }),
        })
    }

    /// The rate limiter, for its housekeeping task.
    pub fn limiter(&self) -> &Arc<RateLimiter> {
        &self.inner.limiter
    }

    /// Handles one request from `peer`. Never fails: errors become responses here.
    pub async fn handle<B>(&self, req: Request<B>, peer: SocketAddr) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let request_id = self.inner.request_ids.for_request(req.headers());
        let mut log = AccessLog::new(peer, request_id);
        let mut resp = match self.process(req, &mut log).await {
            Ok(resp) => resp,
            Err(e) => {
                log.error = Some((e.code(), e.detail()));
                let id = log.request_id.to_str().unwrap_or("-");
                e.into_response(id)
            }
        };
        let headers = resp.headers_mut();
        headers.insert(REQUEST_ID, log.request_id.clone());
        if let Some(c) = log.cache {
            headers.insert(X_CACHE, HeaderValue::from_static(c.as_str()));
        }
        let bytes_out = usize::try_from(resp.body().size_hint().lower()).unwrap_or(usize::MAX);
        log.emit(resp.status(), bytes_out);
        resp
    }

    async fn process<B>(
        &self,
        req: Request<B>,
        log: &mut AccessLog,
    ) -> Result<Response<Full<Bytes>>, GatewayError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let inner = &*self.inner;
        let peer = log.peer.ip();
        tenants::allowed(Some(&inner.allowed_callers), peer)?;
        let (mut parts, body) = req.into_parts();
        let route = route::resolve(&parts.method, &parts.uri, inner.unknown_methods)?;
        log.method = route.label();
        let cred = inner
            .tenants
            .credential(&parts.headers, route.key_class, peer)?;
        log.tenant = cred.tenant.map(|t| t.id.clone());
        log.key_class = Some(cred.key_class);

        let body = body::collect_limited(&parts.headers, body, inner.max_body_bytes).await?;
        log.bytes_in = body.len();
        let body = body::json_object(body)?;
        if tracing::enabled!(Level::DEBUG) {
            let secrets = route
                .method
                .map_or(Catalogue::get().global_secrets(), |m| &m.request_secrets);
            tracing::debug!(
                request_id = log.request_id.to_str().unwrap_or("-"),
                headers = %redact::Headers(&parts.headers),
                body = %redact::Body::new(&body, secrets),
                "request body"
            );
        }
        let caller_cache = CallerCache::from_headers(&parts.headers);
        parts.headers.insert(REQUEST_ID, log.request_id.clone());
        let uri = std::mem::take(&mut parts.uri);
        let call = Call {
            parts,
            uri,
            route,
            cred,
            body,
        };
        match (&inner.cache, route.method) {
            (Some(cache), Some(m)) if cache.cacheable(m) => {
                self.cached(cache, m, call, caller_cache, log).await
            }
            _ => Ok(respond(self.forward(call, log).await?)),
        }
    }

    /// A cacheable read: lookup, single-flight fill, stale-if-error.
    async fn cached(
        &self,
        cache: &Cache,
        method: &Method,
        call: Call<'_>,
        caller: CallerCache,
        log: &mut AccessLog,
    ) -> Result<Response<Full<Bytes>>, GatewayError> {
        let tenant = call.cred.tenant.map(|t| &t.id);
        if caller != CallerCache::Default {
            log.cache = Some(CacheStatus::Bypass);
            let key = (caller == CallerCache::NoCache)
                .then(|| cache.key(tenant, call.cred.key_class, method, &call.body));
            let fwd = self.forward(call, log).await?;
            if let Some(key) = key {
                let up = &fwd.upstream;
                if let Some(entry) = cache.entry(method, up.status, content_type(up), &up.body) {
                    cache.insert(key, entry).await;
                }
            }
            return Ok(respond(fwd));
        }

        let key = cache.key(tenant, call.cred.key_class, method, &call.body);
        let stale = match cache.lookup(&key).await {
            Lookup::Fresh(entry) => {
                log.cache = Some(CacheStatus::Hit);
                return Ok(respond_cached(&entry));
            }
            // Taken out so that the fill below runs; put back if the fill fails.
            Lookup::Stale(entry) => {
                cache.remove(&key).await;
                Some(entry)
            }
            Lookup::Absent => None,
        };
        let mut filled_here: Option<Forwarded> = None;
        let fill = async {
            let fwd = self.forward(call, log).await.map_err(FillError::Gateway)?;
            let up = &fwd.upstream;
            match cache.entry(method, up.status, content_type(up), &up.body) {
                Some(entry) => {
                    filled_here = Some(fwd);
                    Ok(entry)
                }
                None => Err(FillError::NotStored(fwd)),
            }
        };
        let result = cache.get_or_fetch(key.clone(), fill).await;
        let failure = match (result, filled_here) {
            (Ok(_), Some(fwd)) => {
                log.cache = Some(CacheStatus::Miss);
                return Ok(respond(fwd));
            }
            // Served by another request's fill: no upstream call of ours.
            (Ok(entry), None) => {
                log.cache = Some(CacheStatus::Hit);
                return Ok(respond_cached(&entry));
            }
            (Err(e), _) => e,
        };
        let upstream_failed = match &*failure {
            FillError::Gateway(GatewayError::Upstream(_)) => true,
            FillError::NotStored(f) => f.upstream.status.is_server_error(),
            FillError::Gateway(_) => false,
        };
        if let Some(entry) = stale {
            if upstream_failed {
                log.cache = Some(CacheStatus::Stale);
                let resp = respond_cached(&entry);
                cache.insert(key, entry).await;
                return Ok(resp);
            }
        }
        log.cache = Some(CacheStatus::Miss);
        match Arc::unwrap_or_clone(failure) {
            FillError::Gateway(e) => Err(e),
            FillError::NotStored(fwd) => Ok(respond(fwd)),
        }
    }

    /// Rate limit, then one upstream call; then upstream feedback to the limiter and cache
    /// invalidation after a successful write.
    async fn forward(
        &self,
        call: Call<'_>,
        log: &mut AccessLog,
    ) -> Result<Forwarded, GatewayError> {
        let inner = &*self.inner;
        let bucket = call.bucket();
        let Call {
            parts,
            uri,
            route,
            cred,
            body,
        } = call;
        let decision = inner.limiter.acquire(bucket).await;
        if let Some(retry_after) = decision.retry_after {
            return Err(GatewayError::RateLimited {
                retry_after,
                headers: decision.headers,
            });
        }
        let upstream = inner
            .upstream
            .send(
                parts,
                uri.path(),
                inner.tenants.header(),
                cred.key.bearer(),
                body,
            )
            .await?;
        log.upstream_status = Some(upstream.status);
        if tracing::enabled!(Level::DEBUG) {
            let secrets = route
                .method
                .map_or(Catalogue::get().global_secrets(), |m| &m.response_secrets);
            tracing::debug!(
                request_id = log.request_id.to_str().unwrap_or("-"),
                status = upstream.status.as_u16(),
                body = %redact::Body::new(&upstream.body, secrets),
                "response body"
            );
        }
        if let Some(pause) = ratelimit::upstream_backoff(
            upstream.status,
            &upstream.headers,
            &upstream.body,
            inner.upstream_backoff,
        ) {
            tracing::warn!(
                tenant = log.tenant.as_deref().unwrap_or("-"),
                key_class = cred.key_class.as_str(),
                pause_ms = pause.as_millis() as u64,
                "eTelecom signalled quota exhaustion; pausing this credential"
            );
            inner.limiter.pause(bucket, pause);
        }
        if let (Some(cache), Some(m)) = (&inner.cache, route.method) {
            if upstream.status.is_success() && !m.read_only {
                cache.invalidate_after_write(cred.tenant.map(|t| &*t.id), m);
            }
        }
        Ok(Forwarded {
            upstream,
            ratelimit: decision.headers,
        })
    }
}

/// The limiter's view of `[rate_limit]` and the per-tenant and partner overrides.
fn limiter_settings(cfg: &Config) -> ratelimit::Settings {
    let policy = |p: RatePolicy| ratelimit::Policy::new(p.requests_per_second, p.burst);
    let rl = &cfg.rate_limit;
    ratelimit::Settings {
        default: policy(rl.default),
        tenants: cfg
            .tenants
            .iter()
            .filter_map(|t| Some((t.id.clone(), policy(t.rate_limit?))))
            .collect(),
        partner: cfg.partner.as_ref().and_then(|p| p.rate_limit).map(policy),
        mode: match rl.mode {
            RateMode::Reject => ratelimit::Mode::Reject,
            RateMode::Queue { max_wait } => ratelimit::Mode::Queue { max_wait },
        },
        enforce: rl.enforce,
        upstream_backoff: rl.upstream_backoff,
    }
}

fn content_type(up: &UpstreamResponse) -> Option<&HeaderValue> {
    up.headers.get(header::CONTENT_TYPE)
}

/// eTelecom's answer, passed on unchanged, with the rate-limit state of its credential.
fn respond(fwd: Forwarded) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(fwd.upstream.body));
    *resp.status_mut() = fwd.upstream.status;
    *resp.headers_mut() = fwd.upstream.headers;
    fwd.ratelimit.insert_into(resp.headers_mut());
    resp
}

/// A stored answer.
fn respond_cached(entry: &crate::cache::Entry) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(entry.body.clone()));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        entry
            .content_type
            .clone()
            .unwrap_or(HeaderValue::from_static("application/json")),
    );
    headers.insert(header::AGE, HeaderValue::from(entry.age()));
    resp
}
