//! The IETF `RateLimit-Policy` / `RateLimit` header values of a decision, built with one small
//! allocation per response.

use std::fmt::{self, Write as _};
use std::time::Duration;

use governor::middleware::StateSnapshot;
use http::HeaderValue;

use super::{Policy, PolicyName, RateLimitHeaders};

/// One policy as applied: its name, its numbers and its pre-built `RateLimit-Policy` value.
#[derive(Debug)]
pub(super) struct Applied {
    pub(super) name: PolicyName,
    pub(super) burst: u32,
    /// Emission interval (`1 / rps`) in nanoseconds, at least 1 (as governor clamps it).
    pub(super) interval_nanos: u64,
    policy_header: HeaderValue,
}

impl Applied {
    pub(super) fn new(name: PolicyName, policy: Policy) -> Self {
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
    pub(super) fn allowed(&self, snapshot: &StateSnapshot) -> RateLimitHeaders {
        self.allowed_remaining(snapshot.remaining_burst_capacity())
    }

    /// [`Applied::allowed`] from the count left (the shared limiter's answer).
    pub(super) fn allowed_remaining(&self, remaining: u32) -> RateLimitHeaders {
        let remaining = remaining.min(self.burst);
        let missing = u128::from(self.burst - remaining);
        let full_in = (missing * u128::from(self.interval_nanos)).div_ceil(1_000_000_000);
        self.headers(remaining, u64::try_from(full_in).unwrap_or(u64::MAX))
    }

    /// Denied: nothing left, `t` is the wait for the next permit.
    pub(super) fn denied(&self, wait: Duration) -> RateLimitHeaders {
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

pub(super) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
