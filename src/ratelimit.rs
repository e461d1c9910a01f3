//! Rate limits on upstream calls, and nothing else: one GCRA bucket (governor) per eTelecom
//! credential actually used, the decision for one call (allow / wait / reject / shadow), the IETF
//! `RateLimit` / `RateLimit-Policy` header values, pauses after eTelecom's own quota answers
//! ([`upstream_backoff`]), and the housekeeping that drops idle buckets.
//!
//! # Buckets
//! The bucket is the credential: `(tenant, key class)` for a tenant's `api_key` / `shop_key`
//! (two buckets per tenant), and one shared bucket for the partner key. The caller decides when
//! to ask: cache hits never reach this module.
//!
//! # Storage (why it looks like this)
//! - Tenants on the default policy share one keyed governor limiter (`DashMapStateStore`) keyed by
//!   `(Arc<str>, KeyClass)`. The caller hands over the tenant id as `&Arc<str>` (the registry
//!   already holds it as one), so building the key is a reference-count increment, never a string
//!   allocation. Entries appear on first use and [`RateLimiter::housekeeping`] drops the idle ones
//!   (`retain_recent` + `shrink_to_fit`), so the map only holds recently active credentials.
//! - Tenants with an override get two pre-built direct limiters (one per key class), looked up by
//!   `&str` in a `HashMap<Arc<str>, _>` built from the config: a fixed, small set, nothing to
//!   clean up.
//! - The partner key has one direct limiter.
//! - Pauses (eTelecom said "quota") live in a small mutex-guarded map behind an atomic "anything
//!   paused?" flag, so the hot path only takes the lock while some credential is paused. No lock
//!   is ever held across an `.await`.
//!
//! The allowed hot path allocates one small `HeaderValue` (the `RateLimit` state); the policy
//! header is built once per policy and cloned (a reference-count increment).

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::future::Future;
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
use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;
use tokio::task::JoinHandle;

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
    /// Per-tenant overrides: each applies to both key classes of the tenant, one bucket each.
    pub tenants: HashMap<Arc<str>, Policy>,
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
    /// A tenant's `api_key` or `shop_key`. `class: KeyClass::Partner` means the partner bucket.
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

    /// Normalised: `(Some(tenant), ApiKey | ShopKey)` or `(None, Partner)`.
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
}

impl PolicyName {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::Tenant => "tenant",
            Self::Partner => "partner",
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

/// The pause-or-not answer for an upstream response: `Some(pause)` for a 429, or a 403 whose
/// JSON body has `"code":"resource_exhausted"`; the pause is `Retry-After` (delta-seconds or an
/// IMF-fixdate HTTP-date; a date in the past gives zero) or else `default`. `None` otherwise.
pub fn upstream_backoff(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    default: Duration,
) -> Option<Duration> {
    upstream_backoff_at(status, headers, body, default, OffsetDateTime::now_utc())
}

fn upstream_backoff_at(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    default: Duration,
    now: OffsetDateTime,
) -> Option<Duration> {
    let quota = match status {
        StatusCode::TOO_MANY_REQUESTS => true,
        StatusCode::FORBIDDEN => is_resource_exhausted(body),
        _ => false,
    };
    if !quota {
        return None;
    }
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| parse_retry_after(v, now));
    Some(retry_after.unwrap_or(default))
}

fn is_resource_exhausted(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct TwirpError<'a> {
        #[serde(borrow, default)]
        code: Option<Cow<'a, str>>,
    }
    serde_json::from_slice::<TwirpError<'_>>(body)
        .is_ok_and(|e| e.code.as_deref() == Some("resource_exhausted"))
}

fn parse_retry_after(value: &HeaderValue, now: OffsetDateTime) -> Option<Duration> {
    let s = value.to_str().ok()?.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        // Only overflow can fail here: treat it as "very long" (pauses are capped anyway).
        return Some(Duration::from_secs(s.parse().unwrap_or(u64::MAX)));
    }
    let at = OffsetDateTime::parse(s, &Rfc2822).ok()?;
    Some(Duration::try_from(at - now).unwrap_or(Duration::ZERO))
}

type Mw = StateInformationMiddleware;
type Direct<C> = governor::RateLimiter<NotKeyed, InMemoryState, C, Mw>;
type TenantKey = (Arc<str>, KeyClass);
type Keyed<C> = governor::RateLimiter<TenantKey, DashMapStateStore<TenantKey>, C, Mw>;

/// One policy as applied: its name, its numbers and its pre-built `RateLimit-Policy` value.
#[derive(Debug)]
struct Applied {
    name: PolicyName,
    burst: u32,
    /// Emission interval (`1 / rps`) in nanoseconds, at least 1 (as governor clamps it).
    interval_nanos: u64,
    policy_header: HeaderValue,
}

impl Applied {
    fn new(name: PolicyName, policy: Policy) -> Self {
        let burst = policy.burst.get();
        let text = format!("\"{}\";q={burst};w={}", name.as_str(), policy.window_secs());
        let interval = policy.quota().replenish_interval().as_nanos();
        Self {
            name,
            burst,
            interval_nanos: u64::try_from(interval).unwrap_or(u64::MAX).max(1),
            policy_header: HeaderValue::try_from(text)
                .unwrap_or_else(|_| HeaderValue::from_static("")),
        }
    }

    fn headers(&self, remaining: u32, secs: u64) -> RateLimitHeaders {
        let mut buf = HeaderBuf::new();
        let written = write!(buf, "\"{}\";r={remaining};t={secs}", self.name.as_str());
        let state = match written {
            Ok(()) => HeaderValue::from_bytes(buf.as_bytes()).ok(),
            Err(_) => None,
        };
        RateLimitHeaders {
            policy: self.policy_header.clone(),
            state: state.unwrap_or_else(|| HeaderValue::from_static("")),
        }
    }

    /// After a permit was taken: `r` is what is left, `t` the time until the bucket is full.
    fn allowed(&self, snapshot: &StateSnapshot) -> RateLimitHeaders {
        let remaining = snapshot.remaining_burst_capacity().min(self.burst);
        let missing = u128::from(self.burst - remaining);
        let full_in = (missing * u128::from(self.interval_nanos)).div_ceil(1_000_000_000);
        self.headers(remaining, u64::try_from(full_in).unwrap_or(u64::MAX))
    }

    /// Denied: nothing left, `t` is the wait for the next permit.
    fn denied(&self, wait: Duration) -> RateLimitHeaders {
        self.headers(0, ceil_secs(wait))
    }
}

/// A stack buffer for the one `RateLimit` value per decision, so the only allocation is the
/// `HeaderValue` itself. The longest value (`"partner";r=<u32>;t=<u64>`) is 45 bytes.
struct HeaderBuf {
    buf: [u8; 64],
    len: usize,
}

impl HeaderBuf {
    fn new() -> Self {
        Self {
            buf: [0; 64],
            len: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl fmt::Write for HeaderBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self
            .len
            .checked_add(s.len())
            .filter(|&end| end <= self.buf.len())
            .ok_or(fmt::Error)?;
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// A tenant with its own policy: one bucket per key class.
struct TenantOverride<C: Clock> {
    api_key: Direct<C>,
    shop_key: Direct<C>,
    policy: Applied,
}

/// Running pauses: deadline per credential.
struct Pauses<I> {
    /// `[api_key, shop_key]`.
    tenants: HashMap<Arc<str>, [Option<I>; 2]>,
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
                let slots = self.tenants.entry(Arc::clone(t)).or_insert([None, None]);
                &mut slots[class_index(class)]
            }
        }
    }
}

fn class_index(class: KeyClass) -> usize {
    match class {
        KeyClass::ShopKey => 1,
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
    overrides: HashMap<Arc<str>, TenantOverride<C>>,
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
                    policy: Applied::new(PolicyName::Tenant, p),
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
            partner: direct(partner),
            partner_policy: Applied::new(partner_name, partner),
            mode: settings.mode,
            enforce: settings.enforce,
            upstream_backoff: settings.upstream_backoff,
            pauses: Mutex::new(Pauses {
                tenants: HashMap::new(),
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

    /// The configured pause for quota answers without `Retry-After`.
    pub fn upstream_backoff_default(&self) -> Duration {
        self.upstream_backoff
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

    /// How many default-policy buckets are held (idle ones go at the next housekeeping).
    pub fn tracked_buckets(&self) -> usize {
        self.default.len()
    }

    /// Runs [`Self::housekeeping`] every `every` until `shutdown` resolves (or the limiter is
    /// dropped: the task only holds a weak reference).
    pub fn spawn_housekeeping(
        self: &Arc<Self>,
        every: Duration,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()>
    where
        C: Send + Sync + 'static,
    {
        let limiter = Arc::downgrade(self);
        let every = every.max(MIN_QUEUE_SLEEP);
        tokio::spawn(async move {
            let start = tokio::time::Instant::now() + every;
            let mut ticks = tokio::time::interval_at(start, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    _ = ticks.tick() => {
                        let Some(limiter) = limiter.upgrade() else { break };
                        limiter.housekeeping();
                    }
                }
            }
        })
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

    fn policy_of(&self, tenant: Option<&Arc<str>>) -> &Applied {
        match tenant {
            None => &self.partner_policy,
            Some(t) => self
                .overrides
                .get(&**t)
                .map_or(&self.default_policy, |o| &o.policy),
        }
    }

    /// One non-waiting look: pause first, then the bucket (taking a permit if there is one).
    fn probe(&self, bucket: Bucket<'_>) -> Probe<'_> {
        let (tenant, class) = bucket.slot();
        if let Some(wait) = self.paused_for(tenant, class) {
            return Probe::Denied {
                policy: self.policy_of(tenant),
                outcome: Outcome::UpstreamPaused,
                wait,
            };
        }
        let (policy, result) = match tenant {
            None => (&self.partner_policy, check_direct(&self.partner)),
            Some(t) => match self.overrides.get(&**t) {
                Some(o) => {
                    let limiter = match class {
                        KeyClass::ShopKey => &o.shop_key,
                        KeyClass::ApiKey | KeyClass::Partner => &o.api_key,
                    };
                    (&o.policy, check_direct(limiter))
                }
                None => {
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

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use governor::clock::FakeRelativeClock;

    use super::*;

    fn policy(rps: u32, burst: u32) -> Policy {
        Policy::new(
            NonZeroU32::new(rps).expect("rps > 0"),
            NonZeroU32::new(burst).expect("burst > 0"),
        )
    }

    fn fake(settings: Settings) -> (RateLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (RateLimiter::with_clock(settings, clock.clone()), clock)
    }

    fn tenant(id: &str) -> Arc<str> {
        Arc::from(id)
    }

    fn api(t: &Arc<str>) -> Bucket<'_> {
        Bucket::Tenant {
            tenant: t,
            class: KeyClass::ApiKey,
        }
    }

    fn shop(t: &Arc<str>) -> Bucket<'_> {
        Bucket::Tenant {
            tenant: t,
            class: KeyClass::ShopKey,
        }
    }

    fn drain<C: Clock>(lim: &RateLimiter<C>, bucket: Bucket<'_>, n: u32) {
        for i in 0..n {
            let d = lim.check(bucket);
            assert_eq!(d.outcome, Outcome::Allowed, "permit {i}");
            assert_eq!(d.retry_after, None);
        }
    }

    fn state(d: &Decision) -> &str {
        d.headers.state.to_str().expect("ascii")
    }

    fn policy_header(d: &Decision) -> &str {
        d.headers.policy.to_str().expect("ascii")
    }

    #[test]
    fn outcome_labels_are_exact() {
        let all = [
            (Outcome::Allowed, "allowed"),
            (Outcome::Limited, "limited"),
            (Outcome::Queued, "queued"),
            (Outcome::ShadowLimited, "shadow_limited"),
            (Outcome::UpstreamPaused, "upstream_paused"),
        ];
        for (o, s) in all {
            assert_eq!(o.as_str(), s);
            assert_eq!(o.to_string(), s);
        }
    }

    #[test]
    fn burst_then_denied_with_retry_after_of_one_interval() {
        let (lim, clock) = fake(Settings::new(policy(10, 3)));
        let t = tenant("shop-a");
        drain(&lim, api(&t), 3);
        let d = lim.check(api(&t));
        assert_eq!(d.outcome, Outcome::Limited);
        assert!(d.is_denied());
        assert_eq!(d.retry_after, Some(Duration::from_millis(100)));
        assert_eq!(d.retry_after_secs(), Some(1));
        clock.advance(Duration::from_millis(40));
        assert_eq!(
            lim.check(api(&t)).retry_after,
            Some(Duration::from_millis(60))
        );
        clock.advance(Duration::from_millis(60));
        assert_eq!(lim.check(api(&t)).outcome, Outcome::Allowed);
        assert_eq!(lim.check(api(&t)).outcome, Outcome::Limited);
    }

    #[test]
    fn one_tenant_exhausted_leaves_others_untouched() {
        let (lim, _clock) = fake(Settings::new(policy(1, 2)));
        let (a, b) = (tenant("a"), tenant("b"));
        drain(&lim, api(&a), 2);
        assert_eq!(lim.check(api(&a)).outcome, Outcome::Limited);
        drain(&lim, api(&b), 2);
        assert_eq!(lim.check(api(&b)).outcome, Outcome::Limited);
        assert_eq!(lim.check(Bucket::Partner).outcome, Outcome::Allowed);
    }

    #[test]
    fn api_key_and_shop_key_of_one_tenant_are_separate_buckets() {
        let (lim, _clock) = fake(Settings::new(policy(1, 2)));
        let a = tenant("a");
        drain(&lim, api(&a), 2);
        assert_eq!(lim.check(api(&a)).outcome, Outcome::Limited);
        drain(&lim, shop(&a), 2);
        assert_eq!(lim.check(shop(&a)).outcome, Outcome::Limited);
        assert_eq!(lim.tracked_buckets(), 2);
    }

    #[test]
    fn partner_is_one_shared_bucket() {
        let (lim, _clock) = fake(Settings::new(policy(1, 3)));
        let (a, b) = (tenant("a"), tenant("b"));
        // However the partner bucket is named, it is the same bucket.
        let via_a = Bucket::for_credential(Some(&a), KeyClass::Partner).expect("bucket");
        let via_b = Bucket::Tenant {
            tenant: &b,
            class: KeyClass::Partner,
        };
        assert_eq!(via_a, Bucket::Partner);
        assert_eq!(lim.check(via_a).outcome, Outcome::Allowed);
        assert_eq!(lim.check(via_b).outcome, Outcome::Allowed);
        assert_eq!(lim.check(Bucket::Partner).outcome, Outcome::Allowed);
        let d = lim.check(via_a);
        assert_eq!(d.outcome, Outcome::Limited);
        assert_eq!(d.policy, PolicyName::Default);
        // Tenant buckets are unaffected, and the partner bucket is not a keyed entry.
        assert_eq!(lim.check(api(&a)).outcome, Outcome::Allowed);
        assert_eq!(lim.tracked_buckets(), 1);
    }

    #[test]
    fn bucket_for_credential() {
        let a = tenant("a");
        assert_eq!(
            Bucket::for_credential(Some(&a), KeyClass::ShopKey),
            Some(shop(&a))
        );
        assert_eq!(
            Bucket::for_credential(None, KeyClass::Partner),
            Some(Bucket::Partner)
        );
        assert_eq!(Bucket::for_credential(None, KeyClass::ApiKey), None);
        assert_eq!(shop(&a).tenant(), Some("a"));
        assert_eq!(shop(&a).key_class(), KeyClass::ShopKey);
        let odd = Bucket::Tenant {
            tenant: &a,
            class: KeyClass::Partner,
        };
        assert_eq!((odd.tenant(), odd.key_class()), (None, KeyClass::Partner));
    }

    #[test]
    fn tenant_override_applies_to_both_key_classes_each_its_own_bucket() {
        let mut settings = Settings::new(policy(1, 1));
        settings.tenants.insert(tenant("big"), policy(100, 5));
        let (lim, _clock) = fake(settings);
        let (big, small) = (tenant("big"), tenant("small"));
        drain(&lim, api(&big), 5);
        let d = lim.check(api(&big));
        assert_eq!(
            (d.outcome, d.policy),
            (Outcome::Limited, PolicyName::Tenant)
        );
        assert_eq!(d.retry_after, Some(Duration::from_millis(10)));
        assert_eq!(policy_header(&d), "\"tenant\";q=5;w=1");
        drain(&lim, shop(&big), 5);
        assert_eq!(lim.check(shop(&big)).outcome, Outcome::Limited);
        // Override tenants never enter the keyed (default) store.
        assert_eq!(lim.tracked_buckets(), 0);
        // Others stay on the default.
        drain(&lim, api(&small), 1);
        let d = lim.check(api(&small));
        assert_eq!(
            (d.outcome, d.policy),
            (Outcome::Limited, PolicyName::Default)
        );
        assert_eq!(d.retry_after, Some(Duration::from_secs(1)));
    }

    #[test]
    fn partner_override_applies() {
        let mut settings = Settings::new(policy(1, 1));
        settings.partner = Some(policy(50, 4));
        let (lim, _clock) = fake(settings);
        drain(&lim, Bucket::Partner, 4);
        let d = lim.check(Bucket::Partner);
        assert_eq!(
            (d.outcome, d.policy),
            (Outcome::Limited, PolicyName::Partner)
        );
        assert_eq!(d.retry_after, Some(Duration::from_millis(20)));
        assert_eq!(policy_header(&d), "\"partner\";q=4;w=1");
        assert_eq!(state(&d), "\"partner\";r=0;t=1");
    }

    #[test]
    fn header_values_are_exact() {
        let (lim, clock) = fake(Settings::new(policy(10, 20)));
        let a = tenant("a");
        let first = lim.check(api(&a));
        assert_eq!(policy_header(&first), "\"default\";q=20;w=2");
        assert_eq!(state(&first), "\"default\";r=19;t=1");
        assert_eq!(state(&lim.check(api(&a))), "\"default\";r=18;t=1");
        for _ in 0..8 {
            let _ = lim.check(api(&a));
        }
        // 10 used: full again in 10 × 100 ms.
        assert_eq!(state(&lim.check(api(&a))), "\"default\";r=9;t=2");
        for _ in 0..9 {
            let _ = lim.check(api(&a));
        }
        let denied = lim.check(api(&a));
        assert!(denied.is_denied());
        assert_eq!(policy_header(&denied), "\"default\";q=20;w=2");
        assert_eq!(state(&denied), "\"default\";r=0;t=1");
        clock.advance(Duration::from_secs(2));
        assert_eq!(state(&lim.check(api(&a))), "\"default\";r=19;t=1");

        let mut map = HeaderMap::new();
        denied.headers.insert_into(&mut map);
        assert_eq!(map[RATELIMIT_POLICY], "\"default\";q=20;w=2");
        assert_eq!(map["RateLimit"], "\"default\";r=0;t=1");
    }

    #[test]
    fn policy_window_is_rounded_up_and_at_least_one_second() {
        assert_eq!(policy(10, 20).window_secs(), 2);
        assert_eq!(policy(3, 10).window_secs(), 4);
        assert_eq!(policy(100, 5).window_secs(), 1);
        assert_eq!(policy(1, 1).window_secs(), 1);
        let (lim, _clock) = fake(Settings::new(policy(3, 10)));
        let d = lim.check(Bucket::Partner);
        assert_eq!(policy_header(&d), "\"default\";q=10;w=4");
        // One used at 333.333333 ms per permit: full again in under a second.
        assert_eq!(state(&d), "\"default\";r=9;t=1");
    }

    #[test]
    fn retry_after_secs_rounds_up() {
        let (lim, clock) = fake(Settings::new(policy(1, 1)));
        let _ = lim.check(Bucket::Partner);
        clock.advance(Duration::from_millis(999));
        let d = lim.check(Bucket::Partner);
        assert_eq!(d.retry_after, Some(Duration::from_millis(1)));
        assert_eq!(d.retry_after_secs(), Some(1));
        assert_eq!(state(&d), "\"default\";r=0;t=1");
        clock.advance(Duration::from_millis(1));
        assert_eq!(lim.check(Bucket::Partner).retry_after_secs(), None);
    }

    #[test]
    fn shadow_mode_never_denies_but_reports_shadow_limited() {
        let mut settings = Settings::new(policy(1, 2));
        settings.enforce = false;
        let (lim, _clock) = fake(settings);
        let a = tenant("a");
        drain(&lim, api(&a), 2);
        for _ in 0..5 {
            let d = lim.check(api(&a));
            assert_eq!(d.outcome, Outcome::ShadowLimited);
            assert_eq!(d.retry_after, None);
            assert!(!d.is_denied());
            assert_eq!(state(&d), "\"default\";r=0;t=1");
        }
        // Paused credentials are not denied either.
        lim.pause(Bucket::Partner, Duration::from_secs(5));
        let d = lim.check(Bucket::Partner);
        assert_eq!((d.outcome, d.retry_after), (Outcome::ShadowLimited, None));
    }

    #[tokio::test]
    async fn shadow_queue_mode_never_waits() {
        let mut settings = Settings::new(policy(1, 1));
        settings.enforce = false;
        settings.mode = Mode::Queue {
            max_wait: Duration::from_secs(5),
        };
        let (lim, _clock) = fake(settings);
        let a = tenant("a");
        assert_eq!(lim.acquire(api(&a)).await.outcome, Outcome::Allowed);
        // Would only have been queued: no rejection to report, and no wait.
        let d = lim.acquire(api(&a)).await;
        assert_eq!((d.outcome, d.retry_after), (Outcome::Allowed, None));
        lim.pause(api(&a), Duration::from_secs(1));
        let d = lim.acquire(api(&a)).await;
        assert_eq!((d.outcome, d.retry_after), (Outcome::ShadowLimited, None));
    }

    fn queue(rps: u32, max_wait: Duration) -> RateLimiter {
        let mut settings = Settings::new(policy(rps, 1));
        settings.mode = Mode::Queue { max_wait };
        RateLimiter::new(settings)
    }

    #[tokio::test]
    async fn queue_mode_waits_then_succeeds() {
        // 20 per second, burst 1: the second call needs ~50 ms.
        let lim = queue(20, Duration::from_millis(500));
        let a = tenant("a");
        assert_eq!(lim.acquire(api(&a)).await.outcome, Outcome::Allowed);
        let started = Instant::now();
        let d = lim.acquire(api(&a)).await;
        assert_eq!((d.outcome, d.retry_after), (Outcome::Queued, None));
        assert!(started.elapsed() >= Duration::from_millis(30), "it waited");
    }

    #[tokio::test]
    async fn queue_mode_rejects_at_once_when_the_wait_exceeds_max_wait() {
        // 1 per second, burst 1: the second call needs ~1 s, more than the 500 ms allowed.
        let lim = queue(1, Duration::from_millis(500));
        let a = tenant("a");
        assert_eq!(lim.acquire(api(&a)).await.outcome, Outcome::Allowed);
        let started = Instant::now();
        let d = lim.acquire(api(&a)).await;
        assert!(started.elapsed() < Duration::from_millis(250), "no wait");
        assert_eq!(d.outcome, Outcome::Limited);
        let wait = d.retry_after.expect("denied");
        assert!(wait > Duration::from_millis(500) && wait <= Duration::from_secs(1));
    }

    #[tokio::test]
    async fn queue_mode_does_not_wait_out_a_pause() {
        let lim = queue(1, Duration::from_secs(10));
        let a = tenant("a");
        lim.pause(api(&a), Duration::from_secs(2));
        let started = Instant::now();
        let d = lim.acquire(api(&a)).await;
        assert!(started.elapsed() < Duration::from_millis(250), "no wait");
        assert_eq!(d.outcome, Outcome::UpstreamPaused);
    }

    #[tokio::test]
    async fn reject_mode_acquire_is_check() {
        let (lim, _clock) = fake(Settings::new(policy(1, 1)));
        assert_eq!(lim.acquire(Bucket::Partner).await.outcome, Outcome::Allowed);
        let d = lim.acquire(Bucket::Partner).await;
        assert_eq!(d.outcome, Outcome::Limited);
        assert_eq!(d.retry_after, Some(Duration::from_secs(1)));
    }

    #[test]
    fn acquire_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let lim = RateLimiter::new(Settings::new(policy(1, 1)));
        let a = tenant("a");
        let fut = lim.acquire(api(&a));
        assert_send(&fut);
    }

    #[test]
    fn pause_denies_for_its_duration_then_allows() {
        let (lim, clock) = fake(Settings::new(policy(10, 10)));
        let (a, b) = (tenant("a"), tenant("b"));
        lim.pause(api(&a), Duration::from_secs(5));
        let d = lim.check(api(&a));
        assert_eq!(d.outcome, Outcome::UpstreamPaused);
        assert_eq!(d.retry_after, Some(Duration::from_secs(5)));
        assert_eq!(state(&d), "\"default\";r=0;t=5");
        // Only that credential is paused.
        assert_eq!(lim.check(shop(&a)).outcome, Outcome::Allowed);
        assert_eq!(lim.check(api(&b)).outcome, Outcome::Allowed);
        assert_eq!(lim.check(Bucket::Partner).outcome, Outcome::Allowed);
        clock.advance(Duration::from_millis(3500));
        let d = lim.check(api(&a));
        assert_eq!(d.outcome, Outcome::UpstreamPaused);
        assert_eq!(d.retry_after, Some(Duration::from_millis(1500)));
        assert_eq!(d.retry_after_secs(), Some(2));
        // A shorter pause does not cut the running one.
        lim.pause(api(&a), Duration::from_millis(100));
        assert_eq!(
            lim.check(api(&a)).retry_after,
            Some(Duration::from_millis(1500))
        );
        clock.advance(Duration::from_millis(1500));
        let d = lim.check(api(&a));
        assert_eq!(d.outcome, Outcome::Allowed);
        // The paused calls did not use permits.
        assert_eq!(state(&d), "\"default\";r=9;t=1");
    }

    #[test]
    fn pause_of_partner_and_override_buckets() {
        let mut settings = Settings::new(policy(10, 10));
        settings.tenants.insert(tenant("big"), policy(100, 100));
        let (lim, clock) = fake(settings);
        let big = tenant("big");
        lim.pause(Bucket::Partner, Duration::from_secs(1));
        lim.pause(shop(&big), Duration::from_secs(2));
        let d = lim.check(shop(&big));
        assert_eq!(
            (d.outcome, d.policy),
            (Outcome::UpstreamPaused, PolicyName::Tenant)
        );
        assert_eq!(lim.check(api(&big)).outcome, Outcome::Allowed);
        let d = lim.check(Bucket::Partner);
        assert_eq!(
            (d.outcome, d.policy),
            (Outcome::UpstreamPaused, PolicyName::Default)
        );
        clock.advance(Duration::from_secs(1));
        assert_eq!(lim.check(Bucket::Partner).outcome, Outcome::Allowed);
        assert_eq!(lim.check(shop(&big)).outcome, Outcome::UpstreamPaused);
    }

    #[test]
    fn pause_is_capped_and_zero_is_ignored() {
        let (lim, _clock) = fake(Settings::new(policy(10, 10)));
        lim.pause(Bucket::Partner, Duration::ZERO);
        assert_eq!(lim.check(Bucket::Partner).outcome, Outcome::Allowed);
        lim.pause(Bucket::Partner, Duration::from_secs(u64::MAX));
        assert_eq!(lim.check(Bucket::Partner).retry_after, Some(MAX_PAUSE));
    }

    #[test]
    fn observe_upstream_pauses_on_quota_answers_only() {
        let mut settings = Settings::new(policy(10, 10));
        settings.upstream_backoff = Duration::from_secs(12);
        let (lim, _clock) = fake(settings);
        let a = tenant("a");
        let none = HeaderMap::new();
        assert_eq!(
            lim.observe_upstream(api(&a), StatusCode::OK, &none, b"{}"),
            None
        );
        assert_eq!(lim.check(api(&a)).outcome, Outcome::Allowed);
        assert_eq!(
            lim.observe_upstream(api(&a), StatusCode::TOO_MANY_REQUESTS, &none, b""),
            Some(Duration::from_secs(12))
        );
        let d = lim.check(api(&a));
        assert_eq!(d.outcome, Outcome::UpstreamPaused);
        assert_eq!(d.retry_after, Some(Duration::from_secs(12)));
        assert_eq!(lim.upstream_backoff_default(), Duration::from_secs(12));
    }

    fn retry_after(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn upstream_backoff_cases() {
        let default = Duration::from_secs(30);
        let none = HeaderMap::new();
        let exhausted = br#"{"code":"resource_exhausted","msg":"quota"}"#;
        let denied = br#"{"code":"permission_denied","msg":"no"}"#;
        let cases: [(StatusCode, HeaderMap, &[u8], Option<Duration>); 9] = [
            (
                StatusCode::TOO_MANY_REQUESTS,
                retry_after("7"),
                b"",
                Some(Duration::from_secs(7)),
            ),
            (
                StatusCode::TOO_MANY_REQUESTS,
                none.clone(),
                b"",
                Some(default),
            ),
            (
                StatusCode::TOO_MANY_REQUESTS,
                retry_after("soon"),
                b"",
                Some(default),
            ),
            (
                StatusCode::FORBIDDEN,
                retry_after(" 2 "),
                exhausted,
                Some(Duration::from_secs(2)),
            ),
            (
                StatusCode::FORBIDDEN,
                none.clone(),
                exhausted,
                Some(default),
            ),
            (StatusCode::FORBIDDEN, retry_after("2"), denied, None),
            (StatusCode::FORBIDDEN, none.clone(), b"not json", None),
            (StatusCode::OK, retry_after("2"), exhausted, None),
            (StatusCode::SERVICE_UNAVAILABLE, retry_after("2"), b"", None),
        ];
        for (i, (status, headers, body, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                upstream_backoff(status, &headers, body, default),
                want,
                "case {i}"
            );
        }
    }

    #[test]
    fn upstream_backoff_http_date() {
        let now = OffsetDateTime::parse("Wed, 21 Oct 2015 07:28:00 GMT", &Rfc2822).expect("date");
        let at = |v| {
            upstream_backoff_at(
                StatusCode::TOO_MANY_REQUESTS,
                &retry_after(v),
                b"",
                Duration::from_secs(30),
                now,
            )
        };
        assert_eq!(
            at("Wed, 21 Oct 2015 07:28:42 GMT"),
            Some(Duration::from_secs(42))
        );
        assert_eq!(at("Wed, 21 Oct 2015 07:00:00 GMT"), Some(Duration::ZERO));
        assert_eq!(
            at("Wednesday, 21-Oct-15 07:28:42 GMT"),
            Some(Duration::from_secs(30))
        );
    }

    #[test]
    fn housekeeping_drops_idle_keys_and_expired_pauses() {
        let (lim, clock) = fake(Settings::new(policy(10, 5)));
        let ids: Vec<Arc<str>> = (0..50).map(|i| tenant(&format!("t{i}"))).collect();
        for t in &ids {
            let _ = lim.check(api(t));
            let _ = lim.check(shop(t));
        }
        assert_eq!(lim.tracked_buckets(), 100);
        // Still refilling: kept.
        lim.housekeeping();
        assert_eq!(lim.tracked_buckets(), 100);
        // One tenant stays busy.
        clock.advance(Duration::from_millis(500));
        drain(&lim, api(&ids[0]), 5);
        lim.pause(api(&ids[1]), Duration::from_secs(1));
        lim.pause(Bucket::Partner, Duration::from_secs(10));
        lim.housekeeping();
        assert_eq!(lim.tracked_buckets(), 1);
        assert_eq!(lim.check(api(&ids[1])).outcome, Outcome::UpstreamPaused);
        // Expired pauses go; running ones stay.
        clock.advance(Duration::from_secs(1));
        lim.housekeeping();
        assert!(lim.any_paused.load(Ordering::Acquire));
        assert_eq!(lim.lock_pauses().tenants.len(), 0);
        assert_eq!(lim.check(api(&ids[1])).outcome, Outcome::Allowed);
        assert_eq!(lim.check(Bucket::Partner).outcome, Outcome::UpstreamPaused);
        clock.advance(Duration::from_secs(9));
        lim.housekeeping();
        assert!(!lim.any_paused.load(Ordering::Acquire));
        // A dropped bucket comes back full.
        assert_eq!(state(&lim.check(api(&ids[2]))), "\"default\";r=4;t=1");
    }

    #[tokio::test]
    async fn spawned_housekeeping_runs_and_stops_on_shutdown() {
        let clock = FakeRelativeClock::default();
        let lim = Arc::new(RateLimiter::with_clock(
            Settings::new(policy(10, 1)),
            clock.clone(),
        ));
        let a = tenant("a");
        let _ = lim.check(api(&a));
        assert_eq!(lim.tracked_buckets(), 1);
        clock.advance(Duration::from_secs(1));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = lim.spawn_housekeeping(Duration::from_millis(5), async move {
            let _ = stopped.await;
        });
        tokio::time::timeout(Duration::from_secs(5), async {
            while lim.tracked_buckets() > 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("housekeeping ran");
        stop.send(()).expect("task alive");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("task stopped")
            .expect("no panic");
    }

    #[tokio::test]
    async fn spawned_housekeeping_stops_when_the_limiter_is_dropped() {
        let lim = Arc::new(RateLimiter::new(Settings::new(policy(10, 1))));
        let task = lim.spawn_housekeeping(Duration::from_millis(5), std::future::pending());
        drop(lim);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("task stopped")
            .expect("no panic");
    }
}
