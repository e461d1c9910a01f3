//! How long an eTelecom answer may be served from memory: the `expires_at` it carries (at the
//! top level, or the earliest among its list items), less a safety margin, and never longer
//! than the configured cap.
//!
//! A missing, unparseable, zero (`0001-01-01T00:00:00Z`) or past `expires_at` means "do not
//! cache". RFC 3339 with any offset and fractional seconds parses.

use std::time::{Duration, SystemTime};

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::catalogue::ExpiresAt;

/// Freshness of one answer, relative to when it was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Served as a HIT this long.
    pub fresh: Duration,
    /// Never served at all past this (the `expires_at` itself), stale or not.
    pub hard: Option<Duration>,
}

/// Parses one `expires_at` value into a point in time; `None` for the zero time and anything
/// unparseable.
pub fn parse(value: &str) -> Option<SystemTime> {
    let t = OffsetDateTime::parse(value, &Rfc3339).ok()?;
    if t.year() <= 1 {
        return None;
    }
    Some(SystemTime::from(t))
}

/// The earliest `expires_at` of a response body, by where the catalogue says it sits.
pub fn earliest(body: &[u8], at: ExpiresAt) -> Option<SystemTime> {
    match at {
        ExpiresAt::Top => {
            #[derive(Deserialize)]
            struct Top<'a> {
                #[serde(borrow)]
                expires_at: Option<std::borrow::Cow<'a, str>>,
            }
            let top: Top<'_> = serde_json::from_slice(body).ok()?;
            parse(&top.expires_at?)
        }
        ExpiresAt::Items => {
            let v: Value = serde_json::from_slice(body).ok()?;
            // The list is the one top-level array of objects (`extensions`, `accounts`,
            // `consents`); every item must carry a valid `expires_at`.
            let items = v
                .as_object()?
                .values()
                .find_map(|v| v.as_array().filter(|a| a.iter().all(Value::is_object)))?;
            let mut min: Option<SystemTime> = None;
            for item in items {
                let t = parse(item.get("expires_at")?.as_str()?)?;
                min = Some(min.map_or(t, |m| m.min(t)));
            }
            min
        }
    }
}

/// The lifetime of an answer received at `now`.
///
/// `expires_at` methods: until `expires_at - margin`, capped by `cap`; `None` when that is
/// already over or the field is unusable. Fixed-TTL methods (`at = None`): `cap`, but the body
/// must still be valid JSON.
pub fn lifetime(
    body: &[u8],
    at: Option<ExpiresAt>,
    cap: Duration,
    margin: Duration,
    now: SystemTime,
) -> Option<Lifetime> {
    let Some(at) = at else {
        serde_json::from_slice::<IgnoredAny>(body).ok()?;
        return Some(Lifetime {
            fresh: cap,
            hard: None,
        });
    };
    let expires = earliest(body, at)?;
    let hard = expires.duration_since(now).ok()?;
    let fresh = hard.checked_sub(margin)?.min(cap);
    (!fresh.is_zero()).then_some(Lifetime {
        fresh,
        hard: Some(hard),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        parse(s).expect(s)
    }

    #[test]
    fn rfc3339_with_offsets_and_fractions() {
        assert_eq!(at("2030-01-01T07:00:00+07:00"), at("2030-01-01T00:00:00Z"));
        assert_eq!(
            at("2030-01-01T00:00:00.250Z")
                .duration_since(at("2030-01-01T00:00:00Z"))
                .expect("later"),
            Duration::from_millis(250)
        );
        assert!(parse("0001-01-01T00:00:00Z").is_none(), "zero time");
        assert!(parse("2030-01-01 00:00:00").is_none());
        assert!(parse("").is_none());
    }

    #[test]
    fn top_level_lifetime_is_capped_and_margined() {
        let now = at("2030-01-01T00:00:00Z");
        let cap = Duration::from_secs(300);
        let margin = Duration::from_secs(5);
        let body = |e: &str| format!(r#"{{"extension_number":"101","expires_at":"{e}"}}"#);
        let l = |e: &str| lifetime(body(e).as_bytes(), Some(ExpiresAt::Top), cap, margin, now);
        // Far away: the cap decides.
        assert_eq!(l("2030-06-01T00:00:00Z").expect("cacheable").fresh, cap);
        // Soon: expires_at - margin decides.
        let soon = l("2030-01-01T00:00:20+00:00").expect("cacheable");
        assert_eq!(soon.fresh, Duration::from_secs(15));
        assert_eq!(soon.hard, Some(Duration::from_secs(20)));
        // Within the margin, past, zero, missing, garbage: not cached.
        assert!(l("2030-01-01T00:00:04Z").is_none());
        assert!(l("2029-12-31T23:59:59Z").is_none());
        assert!(l("0001-01-01T00:00:00Z").is_none());
        assert!(lifetime(b"{}", Some(ExpiresAt::Top), cap, margin, now).is_none());
        assert!(lifetime(b"not json", Some(ExpiresAt::Top), cap, margin, now).is_none());
        assert!(
            lifetime(
                br#"{"expires_at":7}"#,
                Some(ExpiresAt::Top),
                cap,
                margin,
                now
            )
            .is_none()
        );
    }

    #[test]
    fn items_take_the_earliest_and_need_all() {
        let now = at("2030-01-01T00:00:00Z");
        let cap = Duration::from_secs(300);
        let l = |b: &str| {
            lifetime(
                b.as_bytes(),
                Some(ExpiresAt::Items),
                cap,
                Duration::ZERO,
                now,
            )
        };
        let two = r#"{"extensions":[{"expires_at":"2030-01-01T00:01:40Z"},{"expires_at":"2030-01-01T00:00:30Z"}],"paging":{}}"#;
        assert_eq!(l(two).expect("cacheable").fresh, Duration::from_secs(30));
        let one_zero = r#"{"extensions":[{"expires_at":"2030-01-01T00:01:40Z"},{"expires_at":"0001-01-01T00:00:00Z"}]}"#;
        assert!(l(one_zero).is_none());
        let one_missing = r#"{"accounts":[{"expires_at":"2030-01-01T00:01:40Z"},{"oa_id":"1"}]}"#;
        assert!(l(one_missing).is_none());
        assert!(
            l(r#"{"extensions":[],"paging":{}}"#).is_none(),
            "empty list has no expiry"
        );
    }

    #[test]
    fn fixed_ttl_needs_json_only() {
        let now = SystemTime::now();
        let cap = Duration::from_secs(60);
        let l = lifetime(br#"{"id":"1"}"#, None, cap, Duration::from_secs(5), now);
        assert_eq!(l.expect("cacheable").fresh, cap);
        assert!(lifetime(b"<html>", None, cap, Duration::ZERO, now).is_none());
    }
}
