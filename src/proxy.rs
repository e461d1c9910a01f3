//! The request lifecycle, and nothing else: each step lives in its own module; this one only
//! puts them in order.
//!
//! caller allowed? → route → upstream for the route → credential (tenant + key or SMS account)
//! → body (size, JSON object) → cache lookup (cacheable reads, [`cached`]) → rate limit →
//! inject the credential → forward → store / invalidate → respond.
//! Any step's `GatewayError` becomes a response in `error.rs`; every request ends in exactly
//! one access-log event and one set of metrics. Everything built from the config sits in one
//! [`state`] snapshot, loaded once per request and swapped whole on reload.

mod cached;
mod state;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri, header, request};
use http_body_util::Full;
use hyper::body::Body;
use tracing::Level;

use crate::access_log::{AccessLog, REQUEST_ID, RequestIds};
use crate::cache::PurgeScope;
use crate::catalogue::Catalogue;
use crate::cluster::Cluster;
use crate::cluster::bus::{self, Event};
use crate::config::Config;
use crate::error::GatewayError;
use crate::metrics::{Metrics, Source};
use crate::ratelimit::{Bucket, RateLimitHeaders};
use crate::route::Route;
use crate::tenants::{self, Credential};
use crate::upstream::{Upstream, UpstreamResponse};
use crate::{body, inject, redact, route};

pub use state::Reloaded;
use state::State;

pub const X_CACHE: header::HeaderName = header::HeaderName::from_static("x-cache");

/// How long the unread body of a refused request is read before the answer goes out anyway
/// (NGINX's `lingering_timeout` plays the same part).
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// How a response relates to the cache, for `X-Cache`, the access log and the metrics.
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

    /// The metric label value.
    pub fn label(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Bypass => "bypass",
            Self::Stale => "stale",
        }
    }
}

/// The gateway service: cheap to clone, one per connection.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    state: ArcSwap<State>,
    metrics: Arc<Metrics>,
    request_ids: RequestIds,
}

/// One call on its way upstream.
struct Call<'a> {
    parts: request::Parts,
    uri: Uri,
    route: Route,
    upstream: &'a Upstream,
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

impl Gateway {
    /// Builds the gateway from a validated config (this builds the upstream client).
    pub fn new(cfg: Config, metrics: Arc<Metrics>) -> Result<Self, String> {
        let state = State::build(cfg, None, &metrics)?;
        Ok(Self {
            inner: Arc::new(Inner {
                state: ArcSwap::from_pointee(state),
                metrics,
                request_ids: RequestIds::default(),
            }),
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// Puts a new, already validated config in use for new requests.
    pub fn reload(&self, cfg: Config) -> Result<Reloaded, String> {
        let current = self.inner.state.load_full();
        if current.config == cfg {
            return Ok(Reloaded::Unchanged);
        }
        let next = State::build(cfg, Some(&current), &self.inner.metrics)?;
        self.inner.state.store(Arc::new(next));
        Ok(Reloaded::Applied)
    }

    /// The effective config, keys as fingerprints (admin `GET /config`).
    pub fn config_view(&self) -> serde_json::Value {
        self.inner.state.load().config.view()
    }

    /// Drops idle rate-limit buckets, expired idle upstream connections and dead cache
    /// entries, and refreshes the cache gauges.
    pub fn housekeeping(&self) {
        let state = self.inner.state.load_full();
        state.limiter.housekeeping();
        state.upstream.close_idle();
        if let Some(sms) = &state.sms {
            sms.close_idle();
        }
        if let Some(c) = &state.cache {
            c.sweep();
        }
        self.refresh_cache_gauges();
    }

    /// Fleet mode: one PING to Redis (its answer closes an open circuit); nothing without
    /// `[cluster]`. Called by the app's background probe.
    pub async fn cluster_probe(&self) {
        let cluster = self.inner.state.load().cluster.clone();
        if let Some(c) = cluster {
            let _ = c.probe().await;
        }
    }

    /// Sets the cache size gauges from the cache itself.
    pub fn refresh_cache_gauges(&self) {
        let state = self.inner.state.load_full();
        let (entries, bytes) = match &state.cache {
            Some(c) => (c.entry_count(), c.weighted_size()),
            None => (0, 0),
        };
        self.inner.metrics.set_cache_size(entries, bytes);
    }

    /// Whether `id` is a configured tenant.
    pub fn has_tenant(&self, id: &str) -> bool {
        self.inner.state.load().tenants.get(id).is_some()
    }

    /// Drops the cached entries `scope` names, here and (fleet mode) on every gateway; returns
    /// how many went here.
    pub async fn purge(&self, scope: &PurgeScope) -> usize {
        let state = self.inner.state.load_full();
        state
            .invalidations
            .purge(state.cache.as_deref(), scope)
            .await
    }

    /// Fleet mode: the current snapshot's Redis.
    pub(crate) fn cluster(&self) -> Option<Cluster> {
        self.inner.state.load().cluster.clone()
    }

    /// Fleet mode: whether other gateways' invalidations arrive (the subscriber says).
    pub(crate) fn set_cache_coherent(&self, coherent: bool) {
        if let Some(c) = &self.inner.state.load().cache {
            c.set_coherent(coherent);
        }
    }

    /// Fleet mode: drops every entry of this gateway's cache only (after a subscription gap).
    pub(crate) fn purge_local(&self) {
        let state = self.inner.state.load_full();
        if let Some(c) = &state.cache {
            c.purge(None, None);
        }
    }

    /// Fleet mode: applies another gateway's invalidation or purge.
    pub(crate) fn apply_remote(&self, event: &Event) {
        let state = self.inner.state.load_full();
        if let Some(c) = &state.cache {
            bus::apply(c, event);
        }
    }

    /// Handles one request from `peer`. Never fails: errors become responses here.
    pub async fn handle<B>(&self, req: Request<B>, peer: SocketAddr) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let metrics = &self.inner.metrics;
        let _in_flight = metrics.in_flight();
        let request_id = self.inner.request_ids.for_request(req.headers());
        let mut log = AccessLog::new(peer, request_id);
        let state = self.inner.state.load_full();
        let mut resp = match self.process(&state, req, &mut log).await {
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
        let source = if log.error.is_some() {
            Source::Gateway
        } else {
            Source::Upstream
        };
        metrics.request(
            log.tenant.as_ref(),
            log.method,
            resp.status().as_u16(),
            source,
            log.cache.map(CacheStatus::label),
            log.started.elapsed(),
        );
        log.emit(resp.status(), bytes_out);
        resp
    }

    /// The lifecycle; a request refused before its body was read has the body read (and
    /// dropped, within `max_body_bytes` and [`LINGER`]) before the answer goes out, so that the
    /// caller sees a clean end of its request: an HTTP/2 client is not reset mid-upload, an
    /// HTTP/1.1 connection stays usable.
    async fn process<B>(
        &self,
        state: &State,
        req: Request<B>,
        log: &mut AccessLog,
    ) -> Result<Response<Full<Bytes>>, GatewayError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let (parts, body) = req.into_parts();
        let mut body = Some(body);
        let result = self.steps(state, parts, &mut body, log).await;
        if let (Err(_), Some(unread)) = (&result, body) {
            let server = &state.config.server;
            let limits = server.timeouts.body_limits(server.max_body_bytes);
            let none = http::HeaderMap::new();
            let drained = body::collect_limited(&none, unread, &limits);
            let _ = tokio::time::timeout(LINGER, drained).await;
        }
        result
    }

    async fn steps<B>(
        &self,
        state: &State,
        mut parts: request::Parts,
        body: &mut Option<B>,
        log: &mut AccessLog,
    ) -> Result<Response<Full<Bytes>>, GatewayError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let cfg = &state.config;
        let peer = log.peer.ip();
        tenants::allowed(Some(&cfg.server.allowed_callers), peer)?;
        let route = route::resolve(&parts, cfg.routing.unknown_methods)?;
        log.method = route.metric();
        let upstream = state
            .upstream(route.prefix.target())
            .ok_or(GatewayError::SmsNotConfigured)?;
        let tenant = state.tenants.tenant(&parts.headers, route.key_class)?;
        log.tenant = tenant.map(|t| t.id.clone());
        log.key_class = Some(route.key_class);
        let cred = state.tenants.credential(tenant, route.key_class, peer)?;

        let body = body
            .take()
            .ok_or(GatewayError::Internal("request body taken twice"))?;
        let limits = cfg.server.timeouts.body_limits(cfg.server.max_body_bytes);
        let body = body::collect_limited(&parts.headers, body, &limits).await?;
        log.bytes_in = body.len();
        let body = body::json_object(body, cfg.server.max_json_depth)?;
        if tracing::enabled!(Level::DEBUG) {
            let secrets = route
                .method
                .map_or(Catalogue::get().global_secrets(), |m| &m.request_secrets);
            tracing::debug!(
                request_id = log.request_id.to_str().unwrap_or("-"),
                headers = %redact::Headers(&parts.headers, &state.scrubber),
                body = %redact::Body::new(&body, secrets, &state.scrubber),
                "request body"
            );
        }
        let caller_cache = cached::CallerCache::from_headers(&parts.headers);
        parts.headers.insert(REQUEST_ID, log.request_id.clone());
        let uri = std::mem::take(&mut parts.uri);
        let call = Call {
            parts,
            uri,
            route,
            upstream,
            cred,
            body,
        };
        match (&state.cache, route.method) {
            // Both branches are boxed, so a request's own future stays small (~2.7 KB instead
            // of ~6.1 KB): hyper copies it whole into its connection slot, and a cache hit
            // would otherwise carry the forward path's ~3.5 KB (the upstream exchange under
            // its timeout). Fewer cold cache lines per request at 256 connections; see
            // `benches/compare/results.md`.
            (Some(cache), Some(m)) if cache.cacheable(m) => {
                let resp = Box::pin(self.cached(state, cache, m, call, caller_cache, log)).await;
                if let Some(status) = log.cache {
                    self.inner.metrics.cache_request(log.method, status.label());
                }
                resp
            }
            _ => Ok(respond(Box::pin(self.forward(state, call, log)).await?)),
        }
    }

    /// Rate limit, then one upstream call; then upstream feedback to the limiter, the
    /// credential-rejection signal, and cache invalidation after a successful write.
    async fn forward(
        &self,
        state: &State,
        call: Call<'_>,
        log: &mut AccessLog,
    ) -> Result<Forwarded, GatewayError> {
        let metrics = &self.inner.metrics;
        let bucket = call.bucket();
        let Call {
            parts,
            uri,
            route,
            upstream,
            cred,
            body,
        } = call;
        let tenant = cred.tenant.map(|t| &t.id);
        let key_class = cred.key_class.as_str();
        let decision = state.limiter.acquire(bucket).await?;
        metrics.ratelimit_decision(tenant, key_class, decision.outcome.as_str());
        if let Some(retry_after) = decision.retry_after {
            return Err(GatewayError::RateLimited {
                retry_after,
                headers: decision.headers,
            });
        }
        let out = inject::inject(cred.secret, body)?;
        let started = Instant::now();
        let sent = upstream
            .send(
                parts,
                route.upstream_path(uri.path()),
                state.tenants.header(),
                out.authorization,
                out.body,
            )
            .await;
        let mut upstream = match sent {
            Ok(up) => up,
            Err(e) => {
                metrics.upstream_error(e.kind());
                return Err(e.into());
            }
        };
        metrics.upstream(log.method, started.elapsed());
        log.upstream_status = Some(upstream.status);
        if !upstream.status.is_success() {
            // eTelecom may quote the key it was sent; the caller must never learn it. The
            // length is set from the body that is actually sent.
            upstream.body = state.scrubber.scrub_relayed(upstream.body);
        }
        if tracing::enabled!(Level::DEBUG) {
            let secrets = route
                .method
                .map_or(Catalogue::get().global_secrets(), |m| &m.response_secrets);
            tracing::debug!(
                request_id = log.request_id.to_str().unwrap_or("-"),
                status = upstream.status.as_u16(),
                body = %redact::Body::new(&upstream.body, secrets, &state.scrubber),
                "response body"
            );
        }
        let paused = state
            .limiter
            .observe_upstream(bucket, upstream.status, &upstream.headers, &upstream.body)
            .await;
        if let Some(pause) = paused {
            tracing::warn!(
                tenant = log.tenant.as_deref().unwrap_or("-"),
                key_class,
                pause_ms = pause.as_millis() as u64,
                "eTelecom signalled quota exhaustion; credential paused"
            );
        } else if matches!(
            upstream.status,
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            tracing::warn!(
                tenant = log.tenant.as_deref().unwrap_or("-"),
                key_class,
                status = upstream.status.as_u16(),
                key = %format_args!("sha256:{}", cred.secret.fingerprint()),
                "eTelecom refused the key the gateway injected (revoked or rotated?)"
            );
            metrics.credential_rejection(tenant, key_class);
        }
        if let (Some(cache), Some(m)) = (&state.cache, route.method) {
            if upstream.status.is_success() && !m.read_only {
                let tenant = cred.tenant.map(|t| &*t.id);
                state.invalidations.after_write(cache, tenant, m).await;
            }
        }
        Ok(Forwarded {
            upstream,
            ratelimit: decision.headers,
        })
    }
}

/// eTelecom's answer, passed on unchanged, with the rate-limit state of its credential.
fn respond(fwd: Forwarded) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(fwd.upstream.body));
    *resp.status_mut() = fwd.upstream.status;
    *resp.headers_mut() = fwd.upstream.headers;
    fwd.ratelimit.insert_into(resp.headers_mut());
    resp
}
