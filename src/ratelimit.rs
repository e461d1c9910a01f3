//! Rate limits on upstream calls, and nothing else: one GCRA bucket (governor) per eTelecom
//! credential actually used, the decision for one call (allow / wait / reject / shadow), the IETF
//! `RateLimit` / `RateLimit-Policy` header values, pauses after eTelecom's own quota answers
//! ([`upstream_backoff`]), and the housekeeping that drops idle buckets.
//!
//! # Buckets
//! The bucket is the credential: `(tenant, key class)` for a tenant's `api_key` / `shop_key` /
//! SMS account (up to three buckets per tenant), and one shared bucket for the partner key. The caller decides when
//! to ask: cache hits never reach this module.
//!
//! # Storage (why it looks like this)
//! - Tenants on the default policy share one keyed governor limiter (`DashMapStateStore`) keyed by
//!   `(Arc<str>, KeyClass)`. The caller hands over the tenant id as `&Arc<str>` (the registry
//!   already holds it as one), so building the key is a reference-count increment, never a string
//!   allocation. Entries appear on first use and [`RateLimiter::housekeeping`] drops the idle ones
//!   (`retain_recent` + `shrink_to_fit`), so the map only holds recently active credentials.
//! - Tenants with an override get three pre-built direct limiters (one per key class), looked up
//!   by `&str` in a `HashMap<Arc<str>, _>` built from the config: a fixed, small set, nothing to
//!   clean up. A tenant's `sms_rate_limit` gives its SMS bucket a direct limiter of its own in
//!   a second such map (policy name `sms`); it wins over the tenant's `rate_limit`.
//! - The partner key has one direct limiter.
//! - Pauses (eTelecom said "quota") live in a small mutex-guarded map behind an atomic "anything
//!   paused?" flag, so the hot path only takes the lock while some credential is paused. No lock
//!   is ever held across an `.await`.
//!
//! The allowed hot path allocates one small `HeaderValue` (the `RateLimit` state); the policy
//! header is built once per policy and cloned (a reference-count increment).

use std::collections::HashMap;

/// The hasher of the maps looked up per request, keyed by configured tenant ids (never caller
/// input that is not a configured tenant): foldhash, as the tenant table, instead of SipHash.
type FastHash = foldhash::fast::RandomState;
use std::fmt;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use crate::catalogue::KeyClass;

/// The production clock (governor's default: quanta, monotonic).
pub use governor::clock::DefaultClock;

/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers): the current state of the bucket.
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
/// `RateLimit-Policy`: the quota policy that applied.
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

/// Pause after an upstream quota answer without a usable `Retry-After`, unless configured.
pub const DEFAULT_UPSTREAM_BACKOFF: Duration = Duration::from_secs(30);
/// Longest pause [`RateLimiter::pause`] applies: a longer `Retry-After` is cut to this. The cost
/// of cutting is one more upstream call per hour, which answers with a fresh `Retry-After`; the
/// cap keeps a bogus header from locking a credential out for days.
pub const MAX_PAUSE: Duration = Duration::from_secs(60 * 60);
/// Shortest sleep in queue mode, so a zero wait can never spin.
const MIN_QUEUE_SLEEP: Duration = Duration::from_millis(1);

/// Requests per second and burst of one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub requests_per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Policy {
    pub const fn new(requests_per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self {
            requests_per_second,
            burst,
        }
    }

    /// The governor quota: one permit every `1 / rps` seconds, `burst` at once.
    pub fn quota(self) -> Quota {
        Quota::per_second(self.requests_per_second).allow_burst(self.burst)
    }

    /// The `w` of `RateLimit-Policy`: `ceil(burst / rps)` seconds, at least 1.
    pub fn window_secs(self) -> u64 {
        let burst = u64::from(self.burst.get());
        let rps = u64::from(self.requests_per_second.get());
        burst.div_ceil(rps).max(1)
    }
}

/// What happens over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Deny at once.
    Reject,
    /// Wait up to `max_wait` for a permit; if the wait needed is longer, deny at once.
    Queue { max_wait: Duration },
}

/// Everything the limiter needs from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub default: Policy,
    /// Per-tenant overrides: each applies to every key class of the tenant, one bucket each.
    pub tenants: HashMap<Arc<str>, Policy>,
    /// Per-tenant overrides of the SMS bucket alone (`sms_rate_limit`).
    pub sms: HashMap<Arc<str>, Policy>,
    /// The partner key's policy; `None` = the default policy.
    pub partner: Option<Policy>,
    pub mode: Mode,
    /// `false` = shadow mode: would-be rejections are reported and logged, nothing is denied.
    pub enforce: bool,
    /// Pause after an upstream quota answer without `Retry-After`.
    pub upstream_backoff: Duration,
}

impl Settings {
    /// `default` for everyone, reject mode, enforced, [`DEFAULT_UPSTREAM_BACKOFF`].
    pub fn new(default: Policy) -> Self {
        Self {
            default,
            tenants: HashMap::new(),
            sms: HashMap::new(),
            partner: None,
            mode: Mode::Reject,
            enforce: true,
            upstream_backoff: DEFAULT_UPSTREAM_BACKOFF,
        }
    }
}

/// The credential whose bucket a call draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket<'a> {
    /// A tenant's `api_key`, `shop_key` or SMS account. `class: KeyClass::Partner` means the
    /// partner bucket.
    Tenant {
        tenant: &'a Arc<str>,
        class: KeyClass,
    },
    /// The partner's own key: one bucket shared by everyone.
    Partner,
}

impl<'a> Bucket<'a> {
    /// The bucket of a chosen credential: `None` for a tenant key class without a tenant (the
    /// credential step never produces that).
    pub fn for_credential(tenant: Option<&'a Arc<str>>, class: KeyClass) -> Option<Self> {
        match (class, tenant) {
            (KeyClass::Partner, _) => Some(Self::Partner),
            (class, Some(tenant)) => Some(Self::Tenant { tenant, class }),
            (_, None) => None,
        }
    }

    pub fn key_class(self) -> KeyClass {
        self.slot().1
    }

    /// The tenant, `None` for the partner bucket.
    pub fn tenant(self) -> Option<&'a str> {
        self.slot().0.map(|t| &**t)
    }

    /// Normalised: `(Some(tenant), ApiKey | ShopKey | Sms)` or `(None, Partner)`.
    fn slot(self) -> (Option<&'a Arc<str>>, KeyClass) {
        match self {
            Self::Tenant { tenant, class } if class != KeyClass::Partner => (Some(tenant), class),
            _ => (None, KeyClass::Partner),
        }
    }
}

/// Which policy applied (the `RateLimit` policy name).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyName {
    Default,
    Tenant,
    Partner,
    /// A tenant's `sms_rate_limit`.
    Sms,
}

impl PolicyName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Tenant => "tenant",
            Self::Partner => "partner",
            Self::Sms => "sms",
        }
    }
}

/// What happened to one call, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A permit was free.
    Allowed,
    /// Denied: the bucket is empty (and, in queue mode, the wait is longer than `max_wait`).
    Limited,
    /// Allowed after waiting (queue mode).
    Queued,
    /// Shadow mode: enforcing would have denied this call; it was allowed.
    ShadowLimited,
    /// Denied: eTelecom answered "quota" for this credential and the pause is still running.
    UpstreamPaused,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Limited => "limited",
            Self::Queued => "queued",
            Self::ShadowLimited => "shadow_limited",
            Self::UpstreamPaused => "upstream_paused",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The two IETF header values for one response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitHeaders {
    /// `RateLimit-Policy: "<name>";q=<burst>;w=<window secs>`
    pub policy: HeaderValue,
    /// `RateLimit: "<name>";r=<remaining>;t=<secs>`: `t` is the wait for the next permit when
    /// `r=0`, else the time until the bucket is full again (both rounded up).
    pub state: HeaderValue,
}

impl RateLimitHeaders {
    /// Sets `RateLimit-Policy` and `RateLimit` on `headers` (replacing any upstream copies).
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_POLICY, self.policy.clone());
        headers.insert(RATELIMIT, self.state.clone());
    }
}

/// The decision for one upstream call. Denied exactly when `retry_after` is `Some`.
#[derive(Debug, Clone)]
#[must_use = "a denied decision must stop the upstream call"]
pub struct Decision {
    pub outcome: Outcome,
    pub policy: PolicyName,
    /// `Some` when denied: how long until the credential may be used again.
    pub retry_after: Option<Duration>,
    pub headers: RateLimitHeaders,
}

impl Decision {
    pub fn is_denied(&self) -> bool {
        self.retry_after.is_some()
    }

    /// `Retry-After` in whole seconds, rounded up, at least 1; `None` when allowed.
    pub fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after.map(|d| ceil_secs(d).max(1))
    }
}

type Mw = StateInformationMiddleware;
type Direct<C> = governor::RateLimiter<NotKeyed, InMemoryState, C, Mw>;
type TenantKey = (Arc<str>, KeyClass);
type Keyed<C> = governor::RateLimiter<TenantKey, DashMapStateStore<TenantKey, FastHash>, C, Mw>;

/// A tenant with its own policy: one bucket per key class.
struct TenantOverride<C: Clock> {
    api_key: Direct<C>,
    shop_key: Direct<C>,
    sms: Direct<C>,
    policy: Applied,
}

/// A tenant's SMS bucket with its own policy (`sms_rate_limit`).
struct SmsOverride<C: Clock> {
    limiter: Direct<C>,
    policy: Applied,
}

/// Running pauses: deadline per credential.
struct Pauses<I> {
    /// `[api_key, shop_key, sms]`.
    tenants: HashMap<Arc<str>, [Option<I>; 3], FastHash>,
    partner: Option<I>,
}

impl<I: Copy> Pauses<I> {
    fn slot(&self, tenant: Option<&Arc<str>>, class: KeyClass) -> Option<I> {
        match tenant {
            None => self.partner,
            Some(t) => self.tenants.get(&**t).and_then(|s| s[class_index(class)]),
        }
    }

    fn slot_mut(&mut self, tenant: Option<&Arc<str>>, class: KeyClass) -> &mut Option<I> {
        match tenant {
            None => &mut self.partner,
            Some(t) => {
                let slots = self
                    .tenants
                    .entry(Arc::clone(t))
                    .or_insert([None, None, None]);
                &mut slots[class_index(class)]
            }
        }
    }
}

fn class_index(class: KeyClass) -> usize {
    match class {
        KeyClass::ShopKey => 1,
        KeyClass::Sms => 2,
        KeyClass::ApiKey | KeyClass::Partner => 0,
    }
}

/// The result of one non-waiting look at a bucket, before enforce/shadow is applied.
enum Probe<'p> {
    Allowed {
        policy: &'p Applied,
        snapshot: StateSnapshot,
    },
    Denied {
        policy: &'p Applied,
        /// `Limited` or `UpstreamPaused`.
        outcome: Outcome,
        wait: Duration,
    },
}

/// The gateway's rate limiter: all buckets, pauses and the mode. Share it in an `Arc`.
pub struct RateLimiter<C: Clock = DefaultClock> {
    clock: C,
    default: Keyed<C>,
    default_policy: Applied,
    overrides: HashMap<Arc<str>, TenantOverride<C>, FastHash>,
    sms_overrides: HashMap<Arc<str>, SmsOverride<C>, FastHash>,
    partner: Direct<C>,
    partner_policy: Applied,
    mode: Mode,
    enforce: bool,
    upstream_backoff: Duration,
    pauses: Mutex<Pauses<C::Instant>>,
    /// Set while `pauses` may hold an entry; lets the hot path skip the lock.
    any_paused: AtomicBool,
}

impl<C: Clock> fmt::Debug for RateLimiter<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("default", &self.default_policy)
            .field("overrides", &self.overrides.len())
            .field("sms_overrides", &self.sms_overrides.len())
            .field("partner", &self.partner_policy)
            .field("mode", &self.mode)
            .field("enforce", &self.enforce)
            .field("tracked_buckets", &self.default.len())
            .finish_non_exhaustive()
    }
}

impl RateLimiter<DefaultClock> {
    /// The production limiter, on governor's default monotonic clock.
    pub fn new(settings: Settings) -> Self {
        Self::with_clock(settings, DefaultClock::default())
    }
}

impl<C: Clock + Clone> RateLimiter<C> {
    /// A limiter on `clock` (tests: `governor::clock::FakeRelativeClock`).
    pub fn with_clock(settings: Settings, clock: C) -> Self {
        let direct = |p: Policy| -> Direct<C> {
            governor::RateLimiter::new(p.quota(), InMemoryState::default(), clock.clone())
        };
        let overrides = settings
            .tenants
            .iter()
            .map(|(id, &p)| {
                let o = TenantOverride {
                    api_key: direct(p),
                    shop_key: direct(p),
                    sms: direct(p),
                    policy: Applied::new(PolicyName::Tenant, p),
                };
                (Arc::clone(id), o)
            })
            .collect();
        let sms_overrides = settings
            .sms
            .iter()
            .map(|(id, &p)| {
                let o = SmsOverride {
                    limiter: direct(p),
                    policy: Applied::new(PolicyName::Sms, p),
                };
                (Arc::clone(id), o)
            })
            .collect();
        let (partner_name, partner) = match settings.partner {
            Some(p) => (PolicyName::Partner, p),
            None => (PolicyName::Default, settings.default),
        };
        Self {
            default: governor::RateLimiter::new(
                settings.default.quota(),
                DashMapStateStore::default(),
                clock.clone(),
            ),
            default_policy: Applied::new(PolicyName::Default, settings.default),
            overrides,
            sms_overrides,
            partner: direct(partner),
            partner_policy: Applied::new(partner_name, partner),
            mode: settings.mode,
            enforce: settings.enforce,
            upstream_backoff: settings.upstream_backoff,
            pauses: Mutex::new(Pauses {
                tenants: HashMap::default(),
                partner: None,
            }),
            any_paused: AtomicBool::new(false),
            clock,
        }
    }
}

impl<C: Clock> RateLimiter<C> {
    /// The decision for one upstream call, applying the mode: in queue mode this waits (real
    /// time, `tokio::time::sleep`) for up to `max_wait`, and denies at once when the wait needed
    /// is longer. Never fails; denied = `retry_after` is `Some`. Shadow mode never waits: a call
    /// that would only have been queued is `Allowed`, one that would have been denied is
    /// `ShadowLimited`.
    ///
    /// Under contention a waiter can find its permit taken after the sleep; it then waits again
    /// if the new wait still fits the original deadline, else it is denied.
    pub async fn acquire(&self, bucket: Bucket<'_>) -> Decision {
        let Mode::Queue { max_wait } = self.mode else {
            return self.check(bucket);
        };
        let mut probe = self.probe(bucket);
        if !self.enforce {
            return match probe {
                Probe::Denied {
                    policy,
                    outcome: Outcome::Limited,
                    wait,
                } if wait <= max_wait => Decision {
                    outcome: Outcome::Allowed,
                    policy: policy.name,
                    retry_after: None,
                    headers: policy.denied(wait),
                },
                other => self.decide(bucket, other, false),
            };
        }
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut waited = false;
        loop {
            match probe {
                Probe::Denied {
                    outcome: Outcome::Limited,
                    wait,
                    ..
                } if tokio::time::Instant::now() + wait <= deadline => {
                    tokio::time::sleep(wait.max(MIN_QUEUE_SLEEP)).await;
                    waited = true;
                    probe = self.probe(bucket);
                }
                other => return self.decide(bucket, other, waited),
            }
        }
    }

    /// One non-waiting decision, whatever the mode (acquire's first step; handy in tests).
    pub fn check(&self, bucket: Bucket<'_>) -> Decision {
        let probe = self.probe(bucket);
        self.decide(bucket, probe, false)
    }

    /// Pauses `bucket` for `for_` (capped at [`MAX_PAUSE`]): until then it is denied at once
    /// with `UpstreamPaused`. A shorter pause never cuts a running longer one. Silent: the caller
    /// logs the upstream answer that caused it.
    pub fn pause(&self, bucket: Bucket<'_>, for_: Duration) {
        let for_ = for_.min(MAX_PAUSE);
        if for_.is_zero() {
            return;
        }
        let until = self.clock.now() + Nanos::from(for_);
        let (tenant, class) = bucket.slot();
        let mut pauses = self.lock_pauses();
        let slot = pauses.slot_mut(tenant, class);
        *slot = Some(slot.map_or(until, |u| u.max(until)));
        self.any_paused.store(true, Ordering::Release);
    }

    /// For the proxy after an upstream answer: if it is a quota answer ([`upstream_backoff`],
    /// with the configured default), pauses `bucket` and returns the pause.
    pub fn observe_upstream(
        &self,
        bucket: Bucket<'_>,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<Duration> {
        let pause = upstream_backoff(status, headers, body, self.upstream_backoff)?;
        self.pause(bucket, pause);
        Some(pause)
    }

    /// Drops idle buckets (state indistinguishable from a fresh, full bucket) and expired
    /// pauses, and gives back their memory.
    pub fn housekeeping(&self) {
        self.default.retain_recent();
        self.default.shrink_to_fit();
        let now = self.clock.now();
        let mut pauses = self.lock_pauses();
        let expired = |s: &mut Option<C::Instant>| {
            if s.is_some_and(|until| until <= now) {
                *s = None;
            }
        };
        expired(&mut pauses.partner);
        pauses.tenants.retain(|_, slots| {
            slots.iter_mut().for_each(expired);
            slots.iter().any(Option::is_some)
        });
        pauses.tenants.shrink_to_fit();
        let any = pauses.partner.is_some() || !pauses.tenants.is_empty();
        self.any_paused.store(any, Ordering::Release);
    }

    /// The decision for a paused credential, without touching its bucket; `None` when it is not
    /// paused (the shared limiter asks this first: a paused credential costs no Redis call).
    fn paused_decision(&self, bucket: Bucket<'_>) -> Option<Decision> {
        let (tenant, class) = bucket.slot();
        let wait = self.paused_for(tenant, class)?;
        let probe = Probe::Denied {
            policy: self.policy_of(tenant, class),
            outcome: Outcome::UpstreamPaused,
            wait,
        };
        Some(self.decide(bucket, probe, false))
    }

    /// How many default-policy buckets are held (idle ones go at the next housekeeping).
    pub fn tracked_buckets(&self) -> usize {
        self.default.len()
    }

    fn lock_pauses(&self) -> MutexGuard<'_, Pauses<C::Instant>> {
        self.pauses.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The remaining pause of a credential, if any.
    fn paused_for(&self, tenant: Option<&Arc<str>>, class: KeyClass) -> Option<Duration> {
        if !self.any_paused.load(Ordering::Acquire) {
            return None;
        }
        let now = self.clock.now();
        let until = self.lock_pauses().slot(tenant, class)?;
        (until > now).then(|| until.duration_since(now).into())
    }

    fn policy_of(&self, tenant: Option<&Arc<str>>, class: KeyClass) -> &Applied {
        match tenant {
            None => &self.partner_policy,
            Some(t) => match self.sms_overrides.get(&**t) {
                Some(o) if class == KeyClass::Sms => &o.policy,
                _ => self
                    .overrides
                    .get(&**t)
                    .map_or(&self.default_policy, |o| &o.policy),
            },
        }
    }

    /// One non-waiting look: pause first, then the bucket (taking a permit if there is one).
    fn probe(&self, bucket: Bucket<'_>) -> Probe<'_> {
        let (tenant, class) = bucket.slot();
        if let Some(wait) = self.paused_for(tenant, class) {
            return Probe::Denied {
                policy: self.policy_of(tenant, class),
                outcome: Outcome::UpstreamPaused,
                wait,
            };
        }
        let (policy, result) = match tenant {
            None => (&self.partner_policy, check_direct(&self.partner)),
            Some(t) => match (self.sms_overrides.get(&**t), self.overrides.get(&**t)) {
                (Some(o), _) if class == KeyClass::Sms => (&o.policy, check_direct(&o.limiter)),
                (_, Some(o)) => {
                    let limiter = match class {
                        KeyClass::ShopKey => &o.shop_key,
                        KeyClass::Sms => &o.sms,
                        KeyClass::ApiKey | KeyClass::Partner => &o.api_key,
                    };
                    (&o.policy, check_direct(limiter))
                }
                _ => {
                    let result = self
                        .default
                        .check_key(&(Arc::clone(t), class))
                        .map_err(|nu| wait_time(&nu, self.default.clock().now()));
                    (&self.default_policy, result)
                }
            },
        };
        match result {
            Ok(snapshot) => Probe::Allowed { policy, snapshot },
            Err(wait) => Probe::Denied {
                policy,
                outcome: Outcome::Limited,
                wait,
            },
        }
    }

    /// Enforce or shadow a probe.
    fn decide(&self, bucket: Bucket<'_>, probe: Probe<'_>, waited: bool) -> Decision {
        match probe {
            Probe::Allowed { policy, snapshot } => Decision {
                outcome: if waited {
                    Outcome::Queued
                } else {
                    Outcome::Allowed
                },
                policy: policy.name,
                retry_after: None,
                headers: policy.allowed(&snapshot),
            },
            Probe::Denied {
                policy,
                outcome,
                wait,
            } => {
                let headers = policy.denied(wait);
                if self.enforce {
                    return Decision {
                        outcome,
                        policy: policy.name,
                        retry_after: Some(wait),
                        headers,
                    };
                }
                let tenant = bucket.tenant();
                let key_class = bucket.key_class().as_str();
                if outcome == Outcome::UpstreamPaused {
                    tracing::warn!(
                        tenant,
                        key_class,
                        "shadow rate limit: would reject, eTelecom paused this key"
                    );
                } else {
                    tracing::warn!(tenant, key_class, "shadow rate limit: would reject");
                }
                Decision {
                    outcome: Outcome::ShadowLimited,
                    policy: policy.name,
                    retry_after: None,
                    headers,
                }
            }
        }
    }
}

fn check_direct<C: Clock>(limiter: &Direct<C>) -> Result<StateSnapshot, Duration> {
    limiter
        .check()
        .map_err(|nu| wait_time(&nu, limiter.clock().now()))
}

fn wait_time<P: Reference>(not_until: &NotUntil<P>, now: P) -> Duration {
    not_until.wait_time_from(now)
}

mod feedback;
mod headers;
mod shared;
#[cfg(test)]
mod tests;

pub use feedback::upstream_backoff;
use headers::{Applied, ceil_secs};
pub(crate) use shared::Limiter;
pub use shared::Unavailable;
