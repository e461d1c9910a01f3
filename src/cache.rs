//! The response cache: eTelecom reads served from memory for as long as their `expires_at`
//! allows (see [`expiry`]), never across tenants, never after a write that makes them stale.
//!
//! - Key: tenant + key class + catalogue method (which fixes the path) + the method's
//!   invalidation generation for that tenant + the canonical form of the JSON body (keys sorted,
//!   whitespace dropped). The tenant is part of the key, so one tenant cannot be served another
//!   tenant's entry by construction.
//! - Store: `quick_cache` (CLOCK-Pro, sharded): a hit takes a shard's read lock and sets a
//!   reference bit, and writes nothing else shared; key and value sit in one slab slot.
//! - Single flight ([`flight`]): concurrent identical misses share one upstream call; if it
//!   fails, every waiter gets the failure and nothing is stored.
//! - Invalidation: a successful write bumps the generation of each read it names (per tenant; a
//!   partner-level write, having no tenant, bumps it for every tenant). Old entries become
//!   unreachable at once and age out.
//! - Staleness: an entry lives on past its freshness for `stale_if_error` (never past its
//!   `expires_at`), so it can be served as STALE when eTelecom fails. Past that it is dead: a
//!   lookup drops it, housekeeping sweeps the rest ([`Cache::sweep`]), and eviction counts it
//!   as expired.
//! - Memory: bounded by `max_bytes` through a weigher over key, body and the measured
//!   per-entry cost (`ENTRY_OVERHEAD`); entries never hold slices of hyper's read buffers.
//! - Fleet mode: other gateways' invalidations arrive through `cluster::bus`; while they may be
//!   missed the cache is *incoherent* ([`Cache::set_coherent`]) and serves no entry older than
//!   [`INCOHERENT_MAX_AGE`].
//!
//! This module never calls eTelecom itself: the proxy hands it the fetch future.

mod canonical;
pub mod expiry;
mod flight;
pub mod purge;

use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::Hash;
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
/// [`Entry`] and its `Arc` (144 B as allocated), the answer's shared `Bytes` header (32), the
/// key body's own allocation, the store's slot (key, value, links and state, ~96 B), its
/// hash-table slot and the ghost record an eviction leaves; plus malloc's per-allocation header
/// and rounding. Measured (RSS over 100,000 entries of a 72 B answer, quick_cache 0.7): 438 B
/// per entry, ~340 B beyond answer and request body (moka 0.12 took ~670), so the weigher adds
/// 400 B and `max_bytes` bounds the real memory.
const ENTRY_OVERHEAD: usize = 400;

/// A stored entry's key. Hashed and compared through [`KeyView`], as a [`RequestKey`] is, so a
/// lookup needs no owned key. Its `Debug` shows the body's length only (a caller's body may carry
/// an `extension_password`).
#[derive(Clone)]
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

    fn view(&self) -> KeyView<'_> {
        KeyView {
            tenant: &self.tenant,
            class: self.class,
            method: self.method,
            generation: self.generation,
            body: &self.body,
        }
    }
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &Self) -> bool {
        self.view() == other.view()
    }
}

impl Eq for CacheKey {}

impl std::hash::Hash for CacheKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.view().hash(state);
    }
}

/// The key of a request, borrowing what it can: the tenant's id from the config and, when it is
/// canonical already (the usual case), the body from the request. A hit allocates no key; a
/// miss turns it into a [`CacheKey`] to store. `Debug` as [`CacheKey`]'s.
pub struct RequestKey<'a> {
    tenant: &'a Arc<str>,
    class: KeyClass,
    method: MethodId,
    generation: u64,
    body: Cow<'a, [u8]>,
}

impl RequestKey<'_> {
    fn view(&self) -> KeyView<'_> {
        KeyView {
            tenant: self.tenant,
            class: self.class,
            method: self.method,
            generation: self.generation,
            body: &self.body,
        }
    }
}

impl PartialEq for RequestKey<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.view() == other.view()
    }
}

impl std::hash::Hash for RequestKey<'_> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.view().hash(state);
    }
}

impl quick_cache::Equivalent<CacheKey> for RequestKey<'_> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        self.view() == key.view()
    }
}

impl From<RequestKey<'_>> for CacheKey {
    fn from(k: RequestKey<'_>) -> Self {
        CacheKey {
            tenant: k.tenant.clone(),
            class: k.class,
            method: k.method,
            generation: k.generation,
            body: k.body.into_owned().into_boxed_slice(),
        }
    }
}

/// What both key forms hash and compare: one definition, so equal keys hash alike; and what
/// they print, without the body's bytes.
#[derive(PartialEq, Eq, Hash)]
struct KeyView<'a> {
    tenant: &'a str,
    class: KeyClass,
    method: MethodId,
    generation: u64,
    body: &'a [u8],
}

impl std::fmt::Debug for KeyView<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheKey")
            .field("tenant", &self.tenant)
            .field("class", &self.class)
            .field("method", &self.method)
            .field("generation", &self.generation)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.view().fmt(f)
    }
}

impl std::fmt::Debug for RequestKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.view().fmt(f)
    }
}

/// One stored answer (always a 200 with a JSON body). Its `Debug` shows the body's length only
/// (an answer may carry an `extension_password`).
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

    fn dead(&self, now: Instant) -> bool {
        now >= self.dies_at
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("body_len", &self.body.len())
            .field("content_type", &self.content_type)
            .field("stored_at", &self.stored_at)
            .field("fresh_until", &self.fresh_until)
            .field("dies_at", &self.dies_at)
            .finish()
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

/// Weighs an entry at what it costs in memory (see [`ENTRY_OVERHEAD`]).
#[derive(Clone)]
struct Weigher;

impl quick_cache::Weighter<CacheKey, Arc<Entry>> for Weigher {
    fn weight(&self, k: &CacheKey, v: &Arc<Entry>) -> u64 {
        // The tenant's id is shared with the config, not held per entry.
        let content_type = v.content_type.as_ref().map_or(0, HeaderValue::len);
        (k.body.len() + v.body.len() + content_type + ENTRY_OVERHEAD) as u64
    }
}

/// Counts what the store pushes out for room: `expired` if it was dead already, else `size`.
#[derive(Clone)]
struct Evictions(Arc<Metrics>);

impl quick_cache::Lifecycle<CacheKey, Arc<Entry>> for Evictions {
    type RequestState = ();

    fn on_evict(&self, _: &mut (), _key: CacheKey, value: Arc<Entry>) {
        self.0.cache_eviction(if value.dead(Instant::now()) {
            "expired"
        } else {
            "size"
        });
    }
}

type Store = quick_cache::sync::Cache<CacheKey, Arc<Entry>, Weigher, RandomState, Evictions>;

pub struct Cache {
    /// SipHash, randomly keyed: keys hold callers' bodies.
    store: Store,
    fills: flight::Flights<CacheKey, Arc<Entry>>,
    /// Per tenant ("" for the partner), one generation per catalogue method.
    /// One entry per configured tenant, fixed when the cache is built (a fast seeded hash).
    generations: HashMap<Arc<str>, Box<[AtomicU64]>, foldhash::fast::RandomState>,
    /// The tenant of partner-level keys (`""`).
    partner: Arc<str>,
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
        let partner: Arc<str> = Arc::from("");
        generations.insert(partner.clone(), counters());
        // The store wants a rough item count (its ghost list is sized from it): `max_bytes`
        // over the weight of a typical small answer.
        let estimated = usize::try_from(cfg.max_bytes / (ENTRY_OVERHEAD as u64 + 256))
            .unwrap_or(usize::MAX)
            .max(1);
        let options = quick_cache::OptionsBuilder::new()
            .estimated_items_capacity(estimated)
            .weight_capacity(cfg.max_bytes)
            .build()
            .expect("both required options are set");
        let store = Store::with_options(
            options,
            Weigher,
            RandomState::new(),
            Evictions(metrics.clone()),
        );
        Self {
            store,
            fills: flight::Flights::new(),
            generations,
            partner,
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
    pub fn key<'a>(
        &'a self,
        tenant: Option<&'a Arc<str>>,
        class: KeyClass,
        method: &Method,
        body: &'a [u8],
    ) -> RequestKey<'a> {
        let tenant = tenant.unwrap_or(&self.partner);
        let generation = self
            .generations
            .get(tenant)
            .map_or(0, |g| g[usize::from(method.id.0)].load(Ordering::Acquire));
        RequestKey {
            tenant,
            class,
            method: method.id,
            generation,
            body: canonical(body),
        }
    }

    /// What is stored for `key` (a [`RequestKey`] or a [`CacheKey`]).
    pub fn lookup<K: Hash + quick_cache::Equivalent<CacheKey>>(&self, key: &K) -> Lookup {
        let Some(e) = self.store.get(key) else {
            return Lookup::Absent;
        };
        let now = Instant::now();
        if e.dead(now) {
            self.drop_entry(key, &e, "expired");
            return Lookup::Absent;
        }
        if self.incoherent.load(Ordering::Acquire)
            && now.saturating_duration_since(e.stored_at) > INCOHERENT_MAX_AGE
        {
            // Taken out, so that the fill that follows refreshes it.
            self.drop_entry(key, &e, "explicit");
            return Lookup::Absent;
        }
        if now < e.fresh_until {
            Lookup::Fresh(e)
        } else {
            Lookup::Stale(e)
        }
    }

    /// Removes `key` if it still holds `seen` (not an entry stored since), counting it.
    fn drop_entry<K: Hash + quick_cache::Equivalent<CacheKey>>(
        &self,
        key: &K,
        seen: &Arc<Entry>,
        cause: &'static str,
    ) {
        if self
            .store
            .remove_if(key, |v| Arc::ptr_eq(v, seen))
            .is_some()
        {
            self.metrics.cache_eviction(cause);
        }
    }

    /// The live entry for `key`, if any, fresh or stale.
    fn alive(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        self.store.peek(key).filter(|e| !e.dead(Instant::now()))
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
    pub async fn get_or_fetch<F, E>(
        &self,
        key: impl Into<CacheKey>,
        fetch: F,
    ) -> Result<Arc<Entry>, Arc<E>>
    where
        F: Future<Output = Result<Arc<Entry>, E>>,
        E: Send + Sync + 'static,
    {
        let key = key.into();
        self.fills
            .run(
                &key,
                || self.alive(&key),
                fetch,
                |entry| self.insert(key.clone(), entry.clone()),
            )
            .await
    }

    /// Stores `entry`; it keeps the deadlines it was built with, so putting back a stale entry
    /// does not extend its life.
    pub fn insert(&self, key: impl Into<CacheKey>, entry: Arc<Entry>) {
        let key = key.into();
        let replaces = self.store.peek(&key).is_some();
        self.store.insert(key, entry);
        if replaces {
            self.metrics.cache_eviction("replaced");
        }
    }

    pub fn remove(&self, key: &CacheKey) {
        if self.store.remove(key).is_some() {
            self.metrics.cache_eviction("explicit");
        }
    }

    /// Drops every dead entry (housekeeping); returns how many went. A pass visits each entry
    /// under its shard's write lock, one shard at a time.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        self.drop_where("expired", |_, e| e.dead(now))
    }

    /// Drops every entry `doomed` names, counting them as evicted for `cause`.
    fn drop_where(&self, cause: &'static str, doomed: impl Fn(&CacheKey, &Entry) -> bool) -> usize {
        let dropped = std::sync::atomic::AtomicUsize::new(0);
        self.store.retain(|k, e| {
            let drop = doomed(k, e);
            if drop {
                dropped.fetch_add(1, Ordering::Relaxed);
            }
            !drop
        });
        let dropped = dropped.into_inner();
        self.metrics.cache_evictions(cause, dropped as u64);
        dropped
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
    pub fn purge(&self, tenant: Option<&str>, method: Option<&str>) -> usize {
        let catalogue = Catalogue::get();
        let matches = |k: &CacheKey| {
            let m = catalogue.method(k.method);
            tenant.is_none_or(|t| *k.tenant == *t)
                && method.is_none_or(|name| *m.name == *name || *m.label == *name)
        };
        self.drop_where("explicit", |k, _| matches(k))
    }

    /// Entries currently held.
    pub fn entry_count(&self) -> u64 {
        self.store.len() as u64
    }

    /// Bytes currently held, as weighed.
    pub fn weighted_size(&self) -> u64 {
        self.store.weight()
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
