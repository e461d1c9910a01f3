//! The limiter's back-end seam: [`Limiter::Local`] is the in-process governor limiter of one
//! gateway; [`Limiter::Shared`] takes the GCRA decision in Redis (`src/cluster.rs`, one Lua script
//! per call, pause included) so a fleet of gateways shares each credential's rate, burst and
//! quota pause. The snapshot build chooses the variant once; the proxy calls
//! [`Limiter::acquire`] and [`Limiter::observe_upstream`] whichever it is.
//!
//! Shared mode keeps the local limiter for three things: the policies and header values (so
//! modes, the 429 answer and the IETF headers are exactly those of the local limiter), a local
//! copy of running pauses (a paused credential costs no Redis call), and the fallback when
//! Redis is unavailable and `on_unavailable = "local"`.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, StatusCode};

use super::{Bucket, Decision, MAX_PAUSE, Mode, Outcome, Probe, RateLimiter};
use crate::cluster::{Cluster, Gcra};
use crate::config::OnUnavailable;

/// Redis is unavailable and `on_unavailable = "reject"`: the call must not go upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// The rate limiter a snapshot uses.
pub(crate) enum Limiter {
    /// One process: every bucket in memory.
    Local(Arc<RateLimiter>),
    /// Fleet mode: buckets and pauses in Redis.
    Shared {
        local: Arc<RateLimiter>,
        cluster: Cluster,
    },
}

impl Limiter {
    /// The in-process limiter (the whole limiter in local mode; policies, pauses and fallback
    /// in shared mode).
    pub(crate) fn local(&self) -> &Arc<RateLimiter> {
        match self {
            Self::Local(l) | Self::Shared { local: l, .. } => l,
        }
    }

    /// The decision for one upstream call ([`RateLimiter::acquire`]'s contract). `Err` only in
    /// shared mode, while Redis is unavailable and `on_unavailable = "reject"`.
    pub(crate) async fn acquire(&self, bucket: Bucket<'_>) -> Result<Decision, Unavailable> {
        match self {
            Self::Local(l) => Ok(l.acquire(bucket).await),
            // Boxed: the Redis call's future is large, and every request's future would carry
            // its size (and hyper moves that future once per request) in local mode too.
            Self::Shared { local, cluster } => {
                Box::pin(shared_acquire(local, cluster, bucket)).await
            }
        }
    }

    /// After an upstream answer: a quota answer pauses the credential here and, in shared
    /// mode, for the fleet. Returns the pause.
    pub(crate) async fn observe_upstream(
        &self,
        bucket: Bucket<'_>,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Option<Duration> {
        let pause = self
            .local()
            .observe_upstream(bucket, status, headers, body)?;
        if let Self::Shared { cluster, .. } = self {
            // A failure is counted by the cluster; the local pause stands either way.
            let _ = Box::pin(cluster.pause(bucket, pause.min(MAX_PAUSE))).await;
        }
        Some(pause)
    }

    /// Drops idle local buckets and expired local pauses (Redis keys expire by themselves).
    pub(crate) fn housekeeping(&self) {
        self.local().housekeeping();
    }
}

async fn shared_acquire(
    local: &RateLimiter,
    cluster: &Cluster,
    bucket: Bucket<'_>,
) -> Result<Decision, Unavailable> {
    if let Some(paused) = local.paused_decision(bucket) {
        return Ok(paused);
    }
    let (tenant, class) = bucket.slot();
    let policy = local.policy_of(tenant, class);
    let queue = match local.mode {
        Mode::Queue { max_wait } => Some(max_wait),
        Mode::Reject => None,
    };
    // Shadow mode never waits, so it never reserves.
    let reserve = match queue {
        Some(max_wait) if local.enforce => max_wait,
        _ => Duration::ZERO,
    };
    let interval_us = policy.interval_nanos as f64 / 1000.0;
    let answer = cluster
        .gcra(bucket, interval_us, policy.burst, reserve)
        .await;
    let denied = |outcome, wait| Probe::Denied {
        policy,
        outcome,
        wait,
    };
    match answer {
        Ok(Gcra::Allowed { remaining }) => Ok(Decision {
            outcome: Outcome::Allowed,
            policy: policy.name,
            retry_after: None,
            headers: policy.allowed_remaining(remaining),
        }),
        Ok(Gcra::Reserved { wait }) => {
            tokio::time::sleep(wait).await;
            Ok(Decision {
                outcome: Outcome::Queued,
                policy: policy.name,
                retry_after: None,
                headers: policy.allowed_remaining(0),
            })
        }
        // Shadow mode in queue mode: a call that would only have waited is allowed.
        Ok(Gcra::Limited { wait }) if !local.enforce && queue.is_some_and(|m| wait <= m) => {
            Ok(Decision {
                outcome: Outcome::Allowed,
                policy: policy.name,
                retry_after: None,
                headers: policy.denied(wait),
            })
        }
        Ok(Gcra::Limited { wait }) => {
            Ok(local.decide(bucket, denied(Outcome::Limited, wait), false))
        }
        Ok(Gcra::Paused { wait }) => {
            // Kept locally too: until it ends, this gateway answers without asking Redis.
            local.pause(bucket, wait);
            Ok(local.decide(bucket, denied(Outcome::UpstreamPaused, wait), false))
        }
        Err(failure) => {
            cluster.metrics().cluster_fallback(failure.reason());
            match cluster.on_unavailable() {
                OnUnavailable::Local => Ok(local.acquire(bucket).await),
                OnUnavailable::Reject => Err(Unavailable),
            }
        }
    }
}
