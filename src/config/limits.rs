//! The `[rate_limit]` and `[cache]` sections, and the `rate_limit` override a tenant or the
//! partner may carry.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

use super::{Parser, Section};
use crate::catalogue::{Catalogue, MethodId};

/// A bucket's rate and burst, and what happens over the limit: the limiter's own types.
pub use crate::ratelimit::{Mode as RateMode, Policy as RatePolicy};

#[derive(Debug, Clone, PartialEq)]
pub struct RateLimitConfig {
    pub default: RatePolicy,
    pub mode: RateMode,
    /// `false`: shadow mode, count would-be rejections and reject nothing.
    pub enforce: bool,
    /// How long a credential is paused after eTelecom says "quota" without a Retry-After.
    pub upstream_backoff: Duration,
    /// How often idle buckets are dropped.
    pub housekeeping_interval: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CacheConfig {
    pub enabled: bool,
    pub max_ttl: Duration,
    pub safety_margin: Duration,
    pub max_bytes: u64,
    pub stale_if_error: Duration,
    /// Read methods without `expires_at` given a fixed TTL, by catalogue entry (both path twins).
    pub fixed_ttl: HashMap<MethodId, Duration, foldhash::fast::RandomState>,
}

pub const DEFAULT_RATE: RatePolicy = RatePolicy::new(
    NonZeroU32::new(10).expect("non-zero"),
    NonZeroU32::new(20).expect("non-zero"),
);

impl Parser<'_> {
    /// A `{ requests_per_second, burst }` table at `key` of `s` (burst defaults to the rate).
    pub(super) fn rate_override(&mut self, s: &mut Section, key: &str) -> Option<RatePolicy> {
        let mut t = s.optional_table(self, key)?;
        let policy = self.rate_fields(&mut t, None);
        t.finish(self);
        policy
    }

    fn rate_fields(&mut self, s: &mut Section, default: Option<RatePolicy>) -> Option<RatePolicy> {
        let rps: Option<u32> = s.take(self, "requests_per_second");
        let burst: Option<u32> = s.take(self, "burst");
        // A burst not given defaults to the rate given next to it, else to the default's.
        let (rps, burst) = match (rps, default) {
            (Some(r), _) => (r, burst.unwrap_or(r.max(1))),
            (None, Some(d)) => (d.requests_per_second.get(), burst.unwrap_or(d.burst.get())),
            (None, None) => {
                self.problem(&s.key_path("requests_per_second"), "is required".into());
                return None;
            }
        };
        let nz = |p: &mut Self, key: &str, v: u32| {
            let n = NonZeroU32::new(v);
            if n.is_none() {
                p.problem(&s.key_path(key), "must be greater than 0".into());
            }
            n
        };
        let rps = nz(self, "requests_per_second", rps);
        let burst = nz(self, "burst", burst);
        Some(RatePolicy {
            requests_per_second: rps?,
            burst: burst?,
        })
    }

    pub(super) fn rate_limit(&mut self, mut s: Section) -> Option<RateLimitConfig> {
        let default = self.rate_fields(&mut s, Some(DEFAULT_RATE));
        let mode: String = s.take_or(self, "mode", "reject".to_owned());
        let max_wait: u64 = s.take_or(self, "max_wait_ms", 0);
        let mode = match mode.as_str() {
            "reject" => Some(RateMode::Reject),
            "queue" if max_wait == 0 => {
                self.problem(
                    &s.key_path("max_wait_ms"),
                    "must be greater than 0 when mode = \"queue\"".into(),
                );
                None
            }
            "queue" => Some(RateMode::Queue {
                max_wait: Duration::from_millis(max_wait),
            }),
            other => {
                self.problem(
                    &s.key_path("mode"),
                    format!("{other:?} is neither \"reject\" nor \"queue\""),
                );
                None
            }
        };
        let enforce = s.take_or(self, "enforce", true);
        let upstream_backoff = secs(self, &mut s, "upstream_backoff_secs", 30);
        let housekeeping_interval = secs(self, &mut s, "housekeeping_interval_secs", 60);
        s.finish(self);
        Some(RateLimitConfig {
            default: default?,
            mode: mode?,
            enforce,
            upstream_backoff,
            housekeeping_interval,
        })
    }

    pub(super) fn cache(&mut self, mut s: Section) -> Option<CacheConfig> {
        let enabled = s.take_or(self, "enabled", true);
        let max_ttl = secs(self, &mut s, "max_ttl_secs", 300);
        let safety_margin = Duration::from_secs(s.take_or(self, "safety_margin_secs", 5));
        let max_bytes = s.positive(self, "max_bytes", 64 * 1024 * 1024);
        let stale_if_error = Duration::from_secs(s.take_or(self, "stale_if_error_secs", 0));
        let mut fixed_ttl = HashMap::default();
        if let Some(mut methods) = s.optional_table(self, "methods") {
            let names: Vec<String> = methods.table.keys().cloned().collect();
            for name in names {
                let Some(mut m) = methods.optional_table(self, &name) else {
                    continue;
                };
                let ttl = secs(self, &mut m, "ttl_secs", 0);
                let path = m.path.clone();
                m.finish(self);
                let matching: Vec<_> = Catalogue::get()
                    .methods()
                    .iter()
                    .filter(|c| *c.name == *name)
                    .collect();
                if matching.is_empty() {
                    self.problem(&path, "is not a method of the eTelecom catalogue".into());
                } else if matching.iter().any(|c| !c.read_only) {
                    self.problem(
                        &path,
                        "is not a read-only method: writes are never cached".into(),
                    );
                } else if ttl > max_ttl {
                    self.problem(
                        &format!("{path}.ttl_secs"),
                        "must not exceed cache.max_ttl_secs".into(),
                    );
                } else {
                    fixed_ttl.extend(matching.iter().map(|c| (c.id, ttl)));
                }
            }
            methods.finish(self);
        }
        s.finish(self);
        Some(CacheConfig {
            enabled,
            max_ttl,
            safety_margin,
            max_bytes,
            stale_if_error,
            fixed_ttl,
        })
    }
}

/// A whole number of seconds, greater than 0.
fn secs(p: &mut Parser<'_>, s: &mut Section, key: &str, default: u64) -> Duration {
    let n: u64 = s.take_or(p, key, default);
    if n == 0 {
        p.problem(&s.key_path(key), "must be greater than 0".into());
    }
    Duration::from_secs(n)
}
