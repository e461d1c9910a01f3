//! What a request runs against: one immutable snapshot of everything built from the config
//! (tenants and keys, the secret scrubber over their values, the upstream clients, the rate
//! limiter, the cache), swapped whole on reload. A request loads the snapshot once, so in-flight
//! requests finish with the config they
//! started with while new requests use the new one.
//!
//! Each upstream is one [`Upstream`] client: the eTelecom API (`[upstream]`) and, when `[sms]` is
//! configured, the SMS host. A reload keeps what did not change: each upstream client (and its
//! warm connection pool) when its section is the same, the limiter (and its buckets) when the
//! limits are the same, the cache (and its entries) when `[cache]` and the tenant set are the
//! same, and the Redis client (and its connection and circuit) when `[cluster]` is the same.

use std::sync::Arc;

use crate::cache::Cache;
use crate::catalogue::Target;
use crate::cluster::Cluster;
use crate::cluster::bus::Invalidations;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::ratelimit::{self, Limiter, RateLimiter};
use crate::redact::Scrubber;
use crate::tenants::Tenants;
use crate::upstream::Upstream;

pub(crate) struct State {
    pub config: Config,
    pub tenants: Tenants,
    /// Every secret value of this config, for logs and relayed error bodies.
    pub scrubber: Scrubber,
    pub upstream: Upstream,
    /// The SMS host; `None` without `[sms]`.
    pub sms: Option<Upstream>,
    pub limiter: Arc<Limiter>,
    pub cache: Option<Arc<Cache>>,
    /// Fleet mode's shared Redis (`[cluster]`).
    pub cluster: Option<Cluster>,
    /// Local generation bumps, plus a publish in fleet mode.
    pub invalidations: Invalidations,
}

/// What a reload did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reloaded {
    /// The new config differs and is now in use.
    Applied,
    /// The new config is the same as the one in use.
    Unchanged,
}

impl State {
    /// Builds a snapshot, reusing the parts of `previous` whose config did not change.
    pub fn build(
        cfg: Config,
        previous: Option<&State>,
        metrics: &Arc<Metrics>,
    ) -> Result<State, String> {
        let upstream = match previous {
            Some(p) if p.config.upstream == cfg.upstream => p.upstream.clone(),
            _ => Upstream::new(&cfg.upstream)?,
        };
        let sms = match (previous, &cfg.sms) {
            (_, None) => None,
            (Some(p), Some(sms)) if p.config.sms.as_ref() == Some(sms) => p.sms.clone(),
            (_, Some(sms)) => Some(Upstream::new(sms)?),
        };
        let cluster = match (previous, &cfg.cluster) {
            (_, None) => None,
            (Some(p), Some(c)) if p.config.cluster.as_ref() == Some(c) => p.cluster.clone(),
            (_, Some(c)) => Some(Cluster::new(c, metrics.clone())?),
        };
        let settings = limiter_settings(&cfg);
        let local = match previous {
            Some(p) if limiter_settings(&p.config) == settings => p.limiter.local().clone(),
            _ => Arc::new(RateLimiter::new(settings)),
        };
        // The back end is chosen here, once per snapshot; the proxy never asks which.
        let limiter = Arc::new(match &cluster {
            None => Limiter::Local(local),
            Some(c) => Limiter::Shared {
                local,
                cluster: c.clone(),
            },
        });
        let same_tenants = |p: &State| {
            p.config.tenants.len() == cfg.tenants.len()
                && p.config
                    .tenants
                    .iter()
                    .zip(&cfg.tenants)
                    .all(|(a, b)| a.id == b.id)
        };
        let cache = match previous {
            Some(p) if p.config.cache == cfg.cache && same_tenants(p) => p.cache.clone(),
            _ => cfg.cache.enabled.then(|| {
                Arc::new(Cache::new(
                    &cfg.cache,
                    cfg.tenants.iter().map(|t| &t.id),
                    metrics.clone(),
                ))
            }),
        };
        Ok(State {
            tenants: Tenants::new(&cfg),
            scrubber: Scrubber::new(cfg.secret_values()),
            upstream,
            sms,
            limiter,
            cache,
            invalidations: match &cluster {
                None => Invalidations::Local,
                Some(c) => Invalidations::Fleet(c.clone()),
            },
            cluster,
            config: cfg,
        })
    }
}

impl State {
    /// The client for a route's upstream; `None` for an SMS route without `[sms]`.
    pub fn upstream(&self, target: Target) -> Option<&Upstream> {
        match target {
            Target::Api => Some(&self.upstream),
            Target::Sms => self.sms.as_ref(),
        }
    }
}

/// The limiter's view of `[rate_limit]` and the per-tenant and partner overrides.
fn limiter_settings(cfg: &Config) -> ratelimit::Settings {
    let rl = &cfg.rate_limit;
    ratelimit::Settings {
        default: rl.default,
        tenants: cfg
            .tenants
            .iter()
            .filter_map(|t| Some((t.id.clone(), t.rate_limit?)))
            .collect(),
        sms: cfg
            .tenants
            .iter()
            .filter_map(|t| Some((t.id.clone(), t.sms_rate_limit?)))
            .collect(),
        partner: cfg.partner.as_ref().and_then(|p| p.rate_limit),
        mode: rl.mode,
        enforce: rl.enforce,
        upstream_backoff: rl.upstream_backoff,
    }
}
