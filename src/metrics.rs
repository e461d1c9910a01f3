//! Prometheus metrics: this module owns the metric registry, every metric's name, help text and
//! label set (a closed contract, see below), the cheap per-request recording calls, and the
//! `/metrics` exposition in Prometheus text 0.0.4 or OpenMetrics 1.0, chosen from `Accept`
//! ([`render`]). Nothing else registers metrics.
//!
//! # The contract (all names prefixed `etelecom_gateway_`; durations in seconds)
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `requests_total` | counter | `tenant`, `method`, `status`, `source` (`gateway`, `upstream`) |
//! | `request_duration_seconds` | histogram | `method`, `cache` (`hit`, `miss`, `bypass`, `stale`, `none`) |
//! | `upstream_duration_seconds` | histogram | `method` |
//! | `upstream_errors_total` | counter | `kind` (`connect`, `tls`, `timeout`, `protocol`) |
//! | `cache_requests_total` | counter | `method`, `result` (`hit`, `miss`, `bypass`, `stale`) |
//! | `cache_entries`, `cache_bytes` | gauge | |
//! | `cache_evictions_total` | counter | `cause` (`expired`, `size`, `explicit`, `replaced`) |
//! | `cache_invalidations_total` | counter | `method` |
//! | `ratelimit_decisions_total` | counter | `tenant`, `key_class`, `outcome` (`allowed`, `limited`, `queued`, `shadow_limited`, `upstream_paused`) |
//! | `credential_rejections_total` | counter | `tenant`, `key_class` (`api_key`, `shop_key`, `partner`, `sms`) |
//! | `config_reloads_total` | counter | `result` (`success`, `failure`, `unchanged`) |
//! | `config_last_reload_success_timestamp_seconds` | gauge (unix seconds) | |
//! | `in_flight_requests`, `open_connections` | gauge | |
//! | `build_info` | gauge (= 1) | `version` |
//! | `cluster_up` | gauge (0/1; only with `[cluster]`) | |
//! | `cluster_requests_total` | counter | `op` (`ratelimit`, `pause`, `publish`, `ping`, `subscribe`), `result` (`ok`, `error`, `timeout`, `circuit_open`) |
//! | `cluster_duration_seconds` | histogram | `op` |
//! | `cluster_fallback_total` | counter | `reason` (`circuit_open`, `error`, `timeout`) |
//! | `cache_remote_invalidations_total` | counter (only with `[cluster]`) | |
//!
//! `tenant` is the tenant id, `-` for a partner-level call (no tenant), or `all` for every call
//! when the config sets `tenant_label = false`. `method` is the catalogue label
//! (`shop.Etelecom/GetExtensionInfo`) or `other`. Every other label value is a `&'static str`
//! handed in by the caller, so label cardinality is bounded by the code, never by requests.
//!
//! # Formats
//! Both come from prometheus-client 0.26: [`prometheus_text::encode`] writes the Prometheus text
//! format 0.0.4 (counter families named with `_total`, no `# UNIT`, no `# EOF`) and
//! [`text::encode`] writes OpenMetrics 1.0 (ending in `# EOF`). Counters here carry no
//! `_created` sample in either format. No text is rewritten after encoding. A labelled family
//! appears once it has its first series (prometheus-client skips empty families).
//!
//! # Files
//! `labels.rs`: the label-set structs; `render.rs`: `Accept` negotiation and content types;
//! `tests.rs` (+ `tests/`): the contract checks, `promtool` and the OpenMetrics parser.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry, Unit};

mod labels;
mod render;
mod slots;
#[cfg(test)]
mod tests;

use labels::{
    BuildLabels, CacheRequestLabels, CauseLabels, ClusterRequestLabels, CredentialLabels,
    DurationLabels, KindLabels, MethodLabels, NoLabels, OpLabels, RateLimitLabels, ReasonLabels,
    RequestLabels, ResultLabels,
};
pub use render::{OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE, render};
pub use slots::MethodMetric;
use slots::MethodSlots;

/// Histogram buckets for request and upstream durations: 1 ms to 30 s.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const PREFIX: &str = "etelecom_gateway";
/// The `tenant` value when `tenant_label = false`.
const ALL_TENANTS: &str = "all";
/// The `tenant` value of a partner-level call.
const NO_TENANT: &str = "-";

/// Who produced a response: the gateway itself (its own errors) or eTelecom (answers relayed
/// or replayed from the cache).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Gateway,
    Upstream,
}

impl Source {
    /// The `source` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Upstream => "upstream",
        }
    }
}

/// Histogram buckets for one Redis call: 100 µs to 1 s.
pub const CLUSTER_BUCKETS: [f64; 11] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0,
];

fn cluster_histogram() -> Histogram {
    Histogram::new(CLUSTER_BUCKETS)
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn histograms<S: Clone + std::hash::Hash + Eq>() -> HistogramFamily<S> {
    Family::new_with_constructor(duration_histogram)
}

/// Registers `metric` (a handle: clones share the value) and hands it back.
fn register<M: Metric + Clone>(
    r: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: M,
) -> M {
    match unit {
        Some(unit) => r.register_with_unit(name, help, unit, metric.clone()),
        None => r.register(name, help, metric.clone()),
    }
    metric
}

/// The gateway's metrics; shared as `Arc<Metrics>`. Recording takes `&self`.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    tenant_label: bool,
    all_tenants: Arc<str>,
    no_tenant: Arc<str>,
    requests: Family<RequestLabels, Counter>,
    /// The per-method series of `request_duration`, `upstream_duration` and `cache_requests`,
    /// resolved once (see `slots.rs`).
    slots: MethodSlots,
    request_duration: HistogramFamily<DurationLabels>,
    upstream_duration: HistogramFamily<MethodLabels>,
    upstream_errors: Family<KindLabels, Counter>,
    cache_requests: Family<CacheRequestLabels, Counter>,
    cache_entries: Gauge,
    cache_bytes: Gauge,
    cache_evictions: Family<CauseLabels, Counter>,
    cache_invalidations: Family<MethodLabels, Counter>,
    ratelimit_decisions: Family<RateLimitLabels, Counter>,
    credential_rejections: Family<CredentialLabels, Counter>,
    config_reloads: Family<ResultLabels, Counter>,
    config_last_success: Gauge<f64, AtomicU64>,
    in_flight: Gauge,
    open_connections: Gauge,
    cluster_up: Family<NoLabels, Gauge>,
    cluster_requests: Family<ClusterRequestLabels, Counter>,
    cluster_duration: HistogramFamily<OpLabels>,
    cluster_fallback: Family<ReasonLabels, Counter>,
    remote_invalidations: Family<NoLabels, Counter>,
}

/// Holds a gauge up by one; takes it back down when dropped. `'static` and `Send`, so it can
/// move into a spawned connection task.
#[derive(Debug)]
#[must_use = "the gauge goes back down as soon as the guard is dropped"]
pub struct GaugeGuard(Gauge);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    /// Registers every metric of the contract and sets `build_info{version}` to 1.
    /// `tenant_label = false` records every `tenant` label as `all`.
    pub fn new(tenant_label: bool) -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let r = &mut registry;
        let seconds = Some(Unit::Seconds);

        let requests = register(
            r,
            "requests",
            "Requests answered, by tenant, method, status and whether the gateway or eTelecom produced the response",
            None,
            Family::default(),
        );
        let request_duration = register(
            r,
            "request_duration",
            "Time from request received to response ready, by method and cache status",
            seconds.clone(),
            histograms(),
        );
        let upstream_duration = register(
            r,
            "upstream_duration",
            "Time spent on one eTelecom call, by method",
            seconds.clone(),
            histograms(),
        );
        let upstream_errors = register(
            r,
            "upstream_errors",
            "eTelecom calls that failed without a response, by kind",
            None,
            Family::default(),
        );
        let cache_requests = register(
            r,
            "cache_requests",
            "Response cache lookups, by method and result",
            None,
            Family::default(),
        );
        let cache_entries = register(
            r,
            "cache_entries",
            "Entries in the response cache",
            None,
            Gauge::default(),
        );
        let cache_bytes = register(
            r,
            "cache_bytes",
            "Weighted size of the response cache in bytes",
            None,
            Gauge::default(),
        );
        let cache_evictions = register(
            r,
            "cache_evictions",
            "Entries removed from the response cache, by cause",
            None,
            Family::default(),
        );
        let cache_invalidations = register(
            r,
            "cache_invalidations",
            "Cached reads made stale by successful writes, by the read invalidated",
            None,
            Family::default(),
        );
        let ratelimit_decisions = register(
            r,
            "ratelimit_decisions",
            "Rate limiter decisions, by tenant, key class and outcome",
            None,
            Family::default(),
        );
        let credential_rejections = register(
            r,
            "credential_rejections",
            "Calls eTelecom rejected for a bad credential, by tenant and key class",
            None,
            Family::default(),
        );
        let config_reloads = register(
            r,
            "config_reloads",
            "Configuration load and reload attempts, by result",
            None,
            Family::default(),
        );
        let config_last_success = register(
            r,
            "config_last_reload_success_timestamp",
            "Unix time of the last configuration load or reload that succeeded or found nothing to change",
            seconds.clone(),
            Gauge::default(),
        );
        let in_flight = register(
            r,
            "in_flight_requests",
            "Requests being handled",
            None,
            Gauge::default(),
        );
        let open_connections = register(
            r,
            "open_connections",
            "Client connections open",
            None,
            Gauge::default(),
        );
        let cluster_up = register(
            r,
            "cluster_up",
            "1 while the shared Redis answers, 0 while the gateway runs on its fallback (fleet mode only)",
            None,
            Family::default(),
        );
        let cluster_requests = register(
            r,
            "cluster_requests",
            "Redis calls, by operation and result (circuit_open: not sent)",
            None,
            Family::default(),
        );
        let cluster_duration = register(
            r,
            "cluster_duration",
            "Time spent on one Redis call, by operation",
            seconds,
            Family::new_with_constructor(cluster_histogram as fn() -> Histogram),
        );
        let cluster_fallback = register(
            r,
            "cluster_fallback",
            "Rate-limit decisions taken without Redis (on_unavailable), by reason",
            None,
            Family::default(),
        );
        let remote_invalidations = register(
            r,
            "cache_remote_invalidations",
            "Invalidation and purge messages from other gateways applied to this cache",
            None,
            Family::default(),
        );
        let build_info: Family<BuildLabels, Gauge> = register(
            r,
            "build_info",
            "The gateway's version; always 1",
            None,
            Family::default(),
        );
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        Self {
            registry,
            tenant_label,
            all_tenants: Arc::from(ALL_TENANTS),
            no_tenant: Arc::from(NO_TENANT),
            requests,
            slots: MethodSlots::new(crate::catalogue::Catalogue::get().methods().len()),
            request_duration,
            upstream_duration,
            upstream_errors,
            cache_requests,
            cache_entries,
            cache_bytes,
            cache_evictions,
            cache_invalidations,
            ratelimit_decisions,
            credential_rejections,
            config_reloads,
            config_last_success,
            in_flight,
            open_connections,
            cluster_up,
            cluster_requests,
            cluster_duration,
            cluster_fallback,
            remote_invalidations,
        }
    }

    /// Fleet mode: whether Redis answers (`cluster_up`).
    pub fn set_cluster_up(&self, up: bool) {
        self.cluster_up
            .get_or_create(&NoLabels {})
            .set(i64::from(up));
    }

    /// One Redis call: `op` is `ratelimit`, `pause`, `publish`, `ping` or `subscribe`; `result`
    /// is `ok`, `error`, `timeout` or `circuit_open` (not sent; no duration then).
    pub fn cluster_request(
        &self,
        op: &'static str,
        result: &'static str,
        elapsed: Option<Duration>,
    ) {
        self.cluster_requests
            .get_or_create(&ClusterRequestLabels { op, result })
            .inc();
        if let Some(d) = elapsed {
            self.cluster_duration
                .get_or_create(&OpLabels { op })
                .observe(d.as_secs_f64());
        }
    }

    /// One decision taken without Redis: `reason` is `circuit_open`, `error` or `timeout`.
    pub fn cluster_fallback(&self, reason: &'static str) {
        self.cluster_fallback
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// One invalidation or purge message from another gateway applied.
    pub fn remote_invalidation(&self) {
        self.remote_invalidations.get_or_create(&NoLabels {}).inc();
    }

    /// The `tenant` label value: the id, `-` without a tenant, `all` when tenants are not labelled.
    fn tenant(&self, tenant: Option<&Arc<str>>) -> Arc<str> {
        match tenant {
            _ if !self.tenant_label => Arc::clone(&self.all_tenants),
            Some(t) => Arc::clone(t),
            None => Arc::clone(&self.no_tenant),
        }
    }

    /// One answered request: `requests_total` and `request_duration_seconds`. `cache` is the
    /// lowercase cache status (`hit`, `miss`, `bypass`, `stale`), `None` when the cache played
    /// no part (recorded as `none`).
    pub fn request(
        &self,
        tenant: Option<&Arc<str>>,
        method: MethodMetric,
        status: u16,
        source: Source,
        cache: Option<&'static str>,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                tenant: self.tenant(tenant),
                method: method.label(),
                status,
                source: source.as_str(),
            })
            .inc();
        let cache = cache.unwrap_or("none");
        let series = || {
            self.request_duration.get_or_create_owned(&DurationLabels {
                method: method.label(),
                cache,
            })
        };
        match self.slots.duration(method, cache) {
            Some(slot) => slot.get_or_init(series).observe(elapsed.as_secs_f64()),
            None => series().observe(elapsed.as_secs_f64()),
        }
    }

    /// One eTelecom call that got a response: `upstream_duration_seconds`.
    pub fn upstream(&self, method: MethodMetric, elapsed: Duration) {
        let series = || {
            self.upstream_duration.get_or_create_owned(&MethodLabels {
                method: method.label(),
            })
        };
        match self.slots.upstream(method) {
            Some(slot) => slot.get_or_init(series).observe(elapsed.as_secs_f64()),
            None => series().observe(elapsed.as_secs_f64()),
        }
    }

    /// One eTelecom call that failed: `kind` is `connect`, `tls`, `timeout` or `protocol`.
    pub fn upstream_error(&self, kind: &'static str) {
        self.upstream_errors
            .get_or_create(&KindLabels { kind })
            .inc();
    }

    /// One cache lookup: `result` is `hit`, `miss`, `bypass` or `stale`.
    pub fn cache_request(&self, method: MethodMetric, result: &'static str) {
        let series = || {
            self.cache_requests
                .get_or_create_owned(&CacheRequestLabels {
                    method: method.label(),
                    result,
                })
        };
        match self.slots.cache(method, result) {
            Some(slot) => slot.get_or_init(series).inc(),
            None => series().inc(),
        };
    }

    /// One cache entry removed: `cause` is `expired`, `size`, `explicit` or `replaced`.
    pub fn cache_eviction(&self, cause: &'static str) {
        self.cache_evictions(cause, 1);
    }

    /// `n` cache entries removed for `cause` (a purge, a sweep).
    pub fn cache_evictions(&self, cause: &'static str, n: u64) {
        if n > 0 {
            self.cache_evictions
                .get_or_create(&CauseLabels { cause })
                .inc_by(n);
        }
    }

    /// One invalidation triggered by a successful call of `method`.
    pub fn cache_invalidation(&self, method: &'static str) {
        self.cache_invalidations
            .get_or_create(&MethodLabels { method })
            .inc();
    }

    /// The cache's current size (values above `i64::MAX` saturate).
    pub fn set_cache_size(&self, entries: u64, bytes: u64) {
        self.cache_entries
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
        self.cache_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// One rate-limit decision: `key_class` is `api_key`, `shop_key`, `partner` or `sms`; `outcome`
    /// is `allowed`, `limited`, `queued`, `shadow_limited` or `upstream_paused`.
    pub fn ratelimit_decision(
        &self,
        tenant: Option<&Arc<str>>,
        key_class: &'static str,
        outcome: &'static str,
    ) {
        self.ratelimit_decisions
            .get_or_create(&RateLimitLabels {
                tenant: self.tenant(tenant),
                key_class,
                outcome,
            })
            .inc();
    }

    /// One call eTelecom rejected for a bad credential of `key_class`.
    pub fn credential_rejection(&self, tenant: Option<&Arc<str>>, key_class: &'static str) {
        self.credential_rejections
            .get_or_create(&CredentialLabels {
                tenant: self.tenant(tenant),
                key_class,
            })
            .inc();
    }

    /// One configuration load or reload: `result` is `success`, `failure` or `unchanged`.
    /// `success` and `unchanged` also set the last-success timestamp to `at`. The timestamp is 0
    /// until the first such call, so record the initial load too.
    pub fn config_reload(&self, result: &'static str, at: SystemTime) {
        self.config_reloads
            .get_or_create(&ResultLabels { result })
            .inc();
        if matches!(result, "success" | "unchanged") {
            let secs = at
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            self.config_last_success.set(secs);
        }
    }

    /// Counts one in-flight request until the guard is dropped.
    pub fn in_flight(&self) -> GaugeGuard {
        self.in_flight.inc();
        GaugeGuard(self.in_flight.clone())
    }

    /// Counts one open client connection until the guard is dropped.
    pub fn connection(&self) -> GaugeGuard {
        self.open_connections.inc();
        GaugeGuard(self.open_connections.clone())
    }

    /// Everything, in the Prometheus text exposition format 0.0.4.
    pub fn encode_prometheus(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = prometheus_text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics (Prometheus text) failed");
        }
        out
    }

    /// Everything, in the OpenMetrics 1.0 text format (ending in `# EOF`).
    pub fn encode_openmetrics(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if let Err(e) = text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics (OpenMetrics) failed");
        }
        out
    }
}
