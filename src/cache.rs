//! The response cache: eTelecom reads served from memory for as long as their `expires_at`
//! allows (see [`expiry`]), never across tenants, never after a write that makes them stale.
//!
//! - Key: tenant + key class + catalogue method (which fixes the path) + the method's
//!   invalidation generation for that tenant + the canonical form of the JSON body (keys sorted,
//!   whitespace dropped). The tenant is part of the key, so one tenant cannot be served another
//!   tenant's entry by construction.
//! - Single flight: concurrent identical misses share one upstream call (moka `try_get_with`);
//!   if it fails, every waiter gets the failure and nothing is stored.
//! - Invalidation: a successful write bumps the generation of each read it names (per tenant; a
//!   partner-level write, having no tenant, bumps it for every tenant). Old entries become
//!   unreachable at once and age out.
//! - Staleness: an entry lives on past its freshness for `stale_if_error` (never past its
//!   `expires_at`), so it can be served as STALE when eTelecom fails.
//! - Memory: bounded by `max_bytes` through a weigher over key, body and the measured
//!   per-entry cost (`ENTRY_OVERHEAD`); entries never hold slices of hyper's read buffers.
//! - Fleet mode: other gateways' invalidations arrive through `cluster::bus`; while they may be
//!   missed the cache is *incoherent* ([`Cache::set_coherent`]) and serves no entry older than
//!   [`INCOHERENT_MAX_AGE`].
//!
//! This module never calls eTelecom itself: the proxy hands it the fetch future.

mod canonical;
pub mod expiry;
pub mod purge;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::HeaderValue;
use serde_json::Value;

use crate::catalogue::{Catalogue, KeyClass, Method, MethodId};
use crate::config::CacheConfig;
use crate::metrics::Metrics;

pub use canonical::canonical;
pub use purge::PurgeScope;

/// Fleet mode: while other gateways' invalidations may be missed, the longest an entry is
/// served (a short effective TTL: the bound on staleness during a Redis outage).
pub const INCOHERENT_MAX_AGE: Duration = Duration::from_secs(1);

/// What an entry costs in memory beyond its answer, request body and content type: the
/// [`Entry`] and its `Arc` (144 B as allocated), the answer's shared `Bytes` header (32), and
/// moka's per-entry structures: value entry (112), key `Arc` (80), entry info (64), timer-wheel
/// node for the per-entry expiry (48), LRU deque node (32), hash-table bucket (~48); plus malloc's
/// per-allocation header and rounding. Measured (heaptrack, moka 0.12): RSS grows by ~840 B per
/// entry of a ~173 B answer, so the weigher adds 672 B and `max_bytes` bounds the real memory.
const ENTRY_OVERHEAD: usize = 672;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey {
    tenant: Arc<str>,
    class: KeyClass,
    method: MethodId,
    generation: u64,
    body: Box<[u8]>,
}

impl CacheKey {
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    pub fn method(&self) -> MethodId {
        self.method
    }
}

/// One stored answer (always a 200 with a JSON body).
#[derive(Debug)]
pub struct Entry {
    pub body: Bytes,
    pub content_type: Option<HeaderValue>,
    stored_at: Instant,
    fresh_until: Instant,
    /// Past this the entry is gone: freshness plus the stale window, never past `expires_at`.
    dies_at: Instant,
}

impl Entry {
    /// Whole seconds since the answer was received (the `Age` header).
    pub fn age(&self) -> u64 {
        self.stored_at.elapsed().as_secs()
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    Fresh(Arc<Entry>),
    /// Past its freshness, within its stale-if-error window.
    Stale(Arc<Entry>),
    Absent,
}

struct EntryExpiry;

impl moka::Expiry<CacheKey, Arc<Entry>> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<Entry>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.dies_at.saturating_duration_since(created_at))
    }

    fn expire_after_update(
        &self,
        _key: &CacheKey,
        value: &Arc<Entry>,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.dies_at.saturating_duration_since(updated_at))
    }
}

pub struct Cache {
    store: moka::future::Cache<CacheKey, Arc<Entry>>,
    /// Per tenant ("" for the partner), one generation per catalogue method.
    /// One entry per configured tenant, fixed when the cache is built (a fast seeded hash).
    generations: HashMap<Arc<str>, Box<[AtomicU64]>, foldhash::fast::RandomState>,
    cfg: CacheConfig,
    metrics: Arc<Metrics>,
    /// Set while invalidations from other gateways may be missed (fleet mode only).
    incoherent: AtomicBool,
}

impl Cache {
    pub fn new<'a>(
        cfg: &CacheConfig,
        tenants: impl IntoIterator<Item = &'a Arc<str>>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let methods = Catalogue::get().methods().len();
        let counters = || (0..methods).map(|_| AtomicU64::new(0)).collect();
        let mut generations: HashMap<Arc<str>, Box<[AtomicU64]>, _> = tenants
            .into_iter()
            .map(|t| (t.clone(), counters()))
            .collect();
        generations.insert(Arc::from(""), counters());
        let store = moka::future::Cache::builder()
            .max_capacity(cfg.max_bytes)
            .weigher(|k: &CacheKey, v: &Arc<Entry>| {
                // The tenant's id is shared with the config, not held per entry.
                let content_type = v.content_type.as_ref().map_or(0, HeaderValue::len);
                let w = k.body.len() + v.body.len() + content_type + ENTRY_OVERHEAD;
                u32::try_from(w).unwrap_or(u32::MAX)
            })
            .expire_after(EntryExpiry)
            .eviction_listener({
                let metrics = metrics.clone();
                move |_k, _v, cause| {
                    metrics.cache_eviction(match cause {
                        moka::notification::RemovalCause::Expired => "expired",
                        moka::notification::RemovalCause::Size => "size",
                        moka::notification::RemovalCause::Explicit => "explicit",
                        moka::notification::RemovalCause::Replaced => "replaced",
                    })
                }
            })
            .build();
        Self {
            store,
            generations,
            cfg: cfg.clone(),
            metrics,
            incoherent: AtomicBool::new(false),
        }
    }

    /// Fleet mode: `false` while invalidations from other gateways may be missed; entries older
    /// than [`INCOHERENT_MAX_AGE`] are not served then (a miss refills them).
    pub fn set_coherent(&self, coherent: bool) {
        self.incoherent.store(!coherent, Ordering::Release);
    }

    /// Whether answers of `method` may be stored.
    pub fn cacheable(&self, method: &Method) -> bool {
        method.read_only
            && (method.expires_at.is_some() || self.cfg.fixed_ttl.contains_key(&method.id))
    }

    /// The key for a request; `tenant` is `None` for partner-level calls.
    pub fn key(
        &self,
        tenant: Option<&Arc<str>>,
        class: KeyClass,
        method: &Method,
        body: &[u8],
    ) -> CacheKey {
        let tenant = tenant.cloned().unwrap_or_else(|| Arc::from(""));
        let generation = self
            .generations
            .get(&tenant)
            .map_or(0, |g| g[usize::from(method.id.0)].load(Ordering::Acquire));
        CacheKey {
            tenant,
            class,
            method: method.id,
            generation,
            body: canonical(body),
        }
    }

    pub async fn lookup(&self, key: &CacheKey) -> Lookup {
        match self.store.get(key).await {
            None => Lookup::Absent,
            Some(e)
                if self.incoherent.load(Ordering::Acquire)
                    && e.stored_at.elapsed() > INCOHERENT_MAX_AGE =>
            {
                // Taken out, so that the fill that follows refreshes it.
                self.store.invalidate(key).await;
                Lookup::Absent
            }
            Some(e) if Instant::now() < e.fresh_until => Lookup::Fresh(e),
            Some(e) => Lookup::Stale(e),
        }
    }

    /// Builds the entry for an answer to `method`, or `None` when it must not be stored (not a
    /// 200, or no usable lifetime).
    pub fn entry(
        &self,
        method: &Method,
        status: http::StatusCode,
        content_type: Option<&HeaderValue>,
        body: &Bytes,
    ) -> Option<Arc<Entry>> {
        if status != http::StatusCode::OK || sms_business_error(method, body) {
            return None;
        }
        let cap = self
            .cfg
            .fixed_ttl
            .get(&method.id)
            .copied()
            .unwrap_or(self.cfg.max_ttl);
        let life = expiry::lifetime(
            body,
            method.expires_at,
            cap,
            self.cfg.safety_margin,
            SystemTime::now(),
        )?;
        let with_stale = life.fresh + self.cfg.stale_if_error;
        let live_for = life.hard.map_or(with_stale, |h| h.min(with_stale));
        let now = Instant::now();
        Some(Arc::new(Entry {
            // Copies, not slices: hyper hands out the body and header values as slices of the
            // upstream connection's read buffer (8 KiB), which a stored slice would keep alive
            // for the entry's whole life (~5 KB per entry measured, against ~0.5 KB weighed).
            body: Bytes::copy_from_slice(body),
            content_type: content_type.and_then(detached),
            stored_at: now,
            fresh_until: now + life.fresh,
            dies_at: now + live_for,
        }))
    }

    /// Returns the entry for `key`, running `fetch` if there is none; concurrent calls for the
    /// same key share one `fetch`. A fetch error reaches every waiter and stores nothing.
    pub async fn get_or_fetch<F, E>(&self, key: CacheKey, fetch: F) -> Result<Arc<Entry>, Arc<E>>
    where
        F: Future<Output = Result<Arc<Entry>, E>>,
        E: Send + Sync + 'static,
    {
        self.store.try_get_with(key, fetch).await
    }

    /// Stores `entry`; it keeps the deadlines it was built with, so putting back a stale entry
    /// does not extend its life.
    pub async fn insert(&self, key: CacheKey, entry: Arc<Entry>) {
        self.store.insert(key, entry).await;
    }

    pub async fn remove(&self, key: &CacheKey) {
        self.store.invalidate(key).await;
    }

    /// Makes the reads a successful `method` call names stale for `tenant` (for every tenant
    /// when `tenant` is `None`, i.e. a partner-level write). Returns how many reads it named.
    pub fn invalidate_after_write(&self, tenant: Option<&str>, method: &Method) -> usize {
        if method.invalidates.is_empty() {
            return 0;
        }
        let bump = |gens: &[AtomicU64]| {
            for id in &method.invalidates {
                gens[usize::from(id.0)].fetch_add(1, Ordering::AcqRel);
            }
        };
        let catalogue = Catalogue::get();
        for id in &method.invalidates {
            self.metrics
                .cache_invalidation(&catalogue.method(*id).label);
        }
        match tenant {
            Some(t) => {
                if let Some(g) = self.generations.get(t) {
                    bump(g);
                }
            }
            None => self.generations.values().for_each(|g| bump(g)),
        }
        method.invalidates.len()
    }

    /// Drops the entries of `tenant` and/or of `method` (a catalogue method name such as
    /// `GetExtensionInfo`, both path twins, or a label such as `shop.Etelecom/GetExtensionInfo`);
    /// with neither, everything. Returns how many entries went.
    pub async fn purge(&self, tenant: Option<&str>, method: Option<&str>) -> usize {
        let catalogue = Catalogue::get();
        let matches = |k: &CacheKey| {
            let m = catalogue.method(k.method);
            tenant.is_none_or(|t| *k.tenant == *t)
                && method.is_none_or(|name| *m.name == *name || *m.label == *name)
        };
        let doomed: Vec<Arc<CacheKey>> = self
            .store
            .iter()
            .filter(|(k, _)| matches(k))
            .map(|(k, _)| k)
            .collect();
        for k in &doomed {
            self.store.invalidate(&**k).await;
        }
        doomed.len()
    }

    /// Entries currently held (after pending maintenance).
    pub async fn entry_count(&self) -> u64 {
        self.store.run_pending_tasks().await;
        self.store.entry_count()
    }

    /// Bytes currently held, as weighed (after pending maintenance).
    pub async fn weighted_size(&self) -> u64 {
        self.store.run_pending_tasks().await;
        self.store.weighted_size()
    }
}

/// An owned copy of a header value, sharing no buffer with the response it came from; the usual
/// `application/json` is a static one. A value that was a valid `HeaderValue` is valid again, so
/// `None` does not happen in practice (it would be answered as `application/json`).
fn detached(v: &HeaderValue) -> Option<HeaderValue> {
    if v == "application/json" {
        return Some(HeaderValue::from_static("application/json"));
    }
    HeaderValue::from_bytes(v.as_bytes()).ok()
}

/// An SMS answer that is an HTTP 200 carrying a business error (`"status": "-1"` .. `"-9"`):
/// never stored, like any other error.
fn sms_business_error(method: &Method, body: &[u8]) -> bool {
    method.prefix == crate::catalogue::Prefix::Sms
        && serde_json::from_slice::<Value>(body).is_ok_and(|v| {
            v.get("status")
                .and_then(Value::as_str)
                .is_some_and(|s| s.starts_with('-'))
        })
}

#[cfg(test)]
mod tests;
