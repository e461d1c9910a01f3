//! Upstream feedback: whether an eTelecom answer says "quota" (a 429, or a 403 whose JSON body
//! has `"code":"resource_exhausted"`), and how long the credential should then rest.

use std::borrow::Cow;
use std::time::Duration;

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc2822;

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

pub(super) fn upstream_backoff_at(
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
