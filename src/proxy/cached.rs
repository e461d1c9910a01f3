//! The lifecycle branch for cacheable reads: caller directives (`Cache-Control: no-cache` /
//! `no-store`), lookup, the single-flight fill, and stale-if-error.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, header};
use http_body_util::Full;

use super::state::State;
use super::{CacheStatus, Call, Forwarded, Gateway, respond};
use crate::access_log::AccessLog;
use crate::cache::{Cache, CacheKey, Entry, Lookup};
use crate::catalogue::Method;
use crate::error::GatewayError;
use crate::upstream::UpstreamResponse;

/// `Cache-Control` directives a caller may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CallerCache {
    Default,
    /// Skip the lookup, refresh the entry.
    NoCache,
    /// Skip the lookup, store nothing.
    NoStore,
}

impl CallerCache {
    pub(super) fn from_headers(headers: &http::HeaderMap) -> Self {
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

/// Why a cache fill produced no entry.
#[derive(Debug, Clone)]
enum FillError {
    Gateway(GatewayError),
    NotStored(Forwarded),
}

impl Gateway {
    /// Answers a cacheable read; `log.cache` says how.
    ///
    /// Only the lookup runs in this future: a hit is answered from it. The bypass and the fill
    /// (an upstream call, the single flight) are boxed, since their futures are large and
    /// would otherwise make every request's future large (hyper moves it once per request).
    pub(super) async fn cached(
        &self,
        state: &State,
        cache: &Cache,
        method: &'static Method,
        call: Call<'_>,
        caller: CallerCache,
        log: &mut AccessLog,
    ) -> Result<Response<Full<Bytes>>, GatewayError> {
        if caller != CallerCache::Default {
            return Box::pin(self.bypass(state, cache, method, call, caller, log)).await;
        }
        let tenant = call.cred.tenant.map(|t| &t.id);
        let key = cache.key(tenant, call.cred.key_class, method, &call.body);
        let stale = match cache.lookup(&key) {
            Lookup::Fresh(entry) => {
                log.cache = Some(CacheStatus::Hit);
                return Ok(respond_cached(&entry));
            }
            Lookup::Stale(entry) => Some(entry),
            Lookup::Absent => None,
        };
        // Owned from here on: the fill takes the request, whose body the key may borrow.
        let key = CacheKey::from(key);
        Box::pin(self.fill(state, cache, method, call, key, stale, log)).await
    }

    /// `Cache-Control: no-cache` or `no-store` from the caller: no lookup; `no-cache`
    /// refreshes the entry.
    async fn bypass(
        &self,
        state: &State,
        cache: &Cache,
        method: &'static Method,
        call: Call<'_>,
        caller: CallerCache,
        log: &mut AccessLog,
    ) -> Result<Response<Full<Bytes>>, GatewayError> {
        let tenant = call.cred.tenant.map(|t| &t.id);
        log.cache = Some(CacheStatus::Bypass);
        let key = (caller == CallerCache::NoCache)
            .then(|| CacheKey::from(cache.key(tenant, call.cred.key_class, method, &call.body)));
        let fwd = self.forward(state, call, log).await?;
        if let Some(key) = key {
            let up = &fwd.upstream;
            if let Some(entry) = cache.entry(method, up.status, content_type(up), &up.body) {
                cache.insert(key, entry);
            }
        }
        Ok(respond(fwd))
    }

    /// A miss (or a stale entry): one upstream call shared by every request for `key`
    /// (single-flight); stale-if-error when it fails.
    #[allow(clippy::too_many_arguments)]
    async fn fill(
        &self,
        state: &State,
        cache: &Cache,
        method: &'static Method,
        call: Call<'_>,
        key: CacheKey,
        stale: Option<Arc<Entry>>,
        log: &mut AccessLog,
    ) -> Result<Response<Full<Bytes>>, GatewayError> {
        if stale.is_some() {
            // Taken out so that the fill below runs; put back if the fill fails.
            cache.remove(&key);
        }
        let mut filled_here: Option<Forwarded> = None;
        let fill = async {
            let fwd = self
                .forward(state, call, log)
                .await
                .map_err(FillError::Gateway)?;
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
                cache.insert(key, entry);
                return Ok(resp);
            }
        }
        log.cache = Some(CacheStatus::Miss);
        match Arc::unwrap_or_clone(failure) {
            FillError::Gateway(e) => Err(e),
            FillError::NotStored(fwd) => Ok(respond(fwd)),
        }
    }
}

fn content_type(up: &UpstreamResponse) -> Option<&HeaderValue> {
    up.headers.get(header::CONTENT_TYPE)
}

/// A stored answer.
fn respond_cached(entry: &Entry) -> Response<Full<Bytes>> {
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
