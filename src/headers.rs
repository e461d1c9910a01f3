//! Header hygiene, both ways: what of the caller's headers may reach eTelecom, and what of
//! eTelecom's headers may reach the caller.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1) and every header named in `Connection` never cross the
//! gateway. Towards eTelecom the caller's credentials (`Authorization`, `Proxy-Authorization`,
//! `Cookie`), the tenant header and anything describing the internal network (`Forwarded`,
//! `X-Forwarded-*`, `X-Real-IP`) are removed, and `Accept-Encoding` is dropped so that the
//! response comes back as plain JSON the gateway can cache and inspect.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The fixed hop-by-hop set. `Proxy-Connection` and `Keep-Alive` are not in RFC 9110's list but
/// are sent by old clients with that meaning. A `match` on the (always lower-case) name: a
/// length test per arm and at most a few byte compares, where a slice of `HeaderName`s costs a
/// `HeaderName` comparison per entry, for every header of every request and response.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Caller headers that never go upstream, besides the hop-by-hop set and the tenant header.
/// The method- and URL-override headers are dropped so that no server behind the gateway can
/// be talked into another method or path than the one the gateway routed.
/// (The caller's `Authorization`, `Host` and `Content-Type` never go upstream either:
/// [`to_upstream`] replaces or removes them.)
fn never_upstream(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "cookie"
            | "content-length"
            | "accept-encoding"
            | "expect"
            | "forwarded"
            | "x-real-ip"
            | "x-http-method-override"
            | "x-original-url"
            | "x-rewrite-url"
    )
}

/// How many headers the gateway adds to an upstream answer on its way to the caller
/// (`RateLimit-Policy`, `RateLimit`, `X-Request-Id`, `X-Cache`): a response's header map is
/// built with this much room, so that adding them never regrows it.
pub const ADDED_TO_RESPONSE: usize = 4;

/// The names listed in `Connection` (which must not be forwarded either).
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut named = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',') {
            if let Ok(name) = HeaderName::from_bytes(token.trim().as_bytes()) {
                named.push(name);
            }
        }
    }
    named
}

/// Removes the hop-by-hop set and every header that `Connection` names. One pass over the
/// names present, then one removal per header found (most maps have none of them).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    remove_where(headers, is_hop_by_hop);
}

/// Removes every header that `Connection` names and every one `drop` selects.
fn remove_where(headers: &mut HeaderMap, drop: impl Fn(&HeaderName) -> bool) {
    let mut gone = if headers.contains_key(header::CONNECTION) {
        connection_named(headers)
    } else {
        Vec::new()
    };
    gone.extend(headers.keys().filter(|n| drop(n)).cloned());
    for name in &gone {
        headers.remove(name);
    }
}

/// Turns the caller's headers into the headers sent to eTelecom, in place. `bearer` is `None`
/// when the credential travels in the body (SMS): then no `Authorization` header goes at all.
pub fn to_upstream(
    headers: &mut HeaderMap,
    tenant_header: &HeaderName,
    bearer: Option<&HeaderValue>,
    host: &HeaderValue,
) {
    remove_where(headers, |name| {
        is_hop_by_hop(name)
            || never_upstream(name)
            || name == tenant_header
            || name.as_str().starts_with("x-forwarded-")
            || (bearer.is_none() && name == header::AUTHORIZATION)
    });
    // `insert` replaces every value the caller sent under these names.
    if let Some(bearer) = bearer {
        headers.insert(header::AUTHORIZATION, bearer.clone());
    }
    headers.insert(header::HOST, host.clone());
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
}

/// Turns eTelecom's response headers into the headers sent to the caller, in place. The length
/// is set again by the server from the body it actually sends.
pub fn to_caller(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    headers.remove(header::CONTENT_LENGTH);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn upstream_headers_lose_credentials_hops_and_the_tenant() {
        let mut h = map(&[
            ("authorization", "Bearer caller-token"),
            ("proxy-authorization", "Basic eA=="),
            ("cookie", "sid=1"),
            ("x-tenant-id", "acme"),
            ("connection", "keep-alive, x-custom-hop"),
            ("x-custom-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("host", "gateway.internal"),
            ("content-type", "text/plain"),
            ("x-forwarded-for", "10.0.0.1"),
            ("forwarded", "for=10.0.0.1"),
            ("accept-encoding", "gzip"),
            (
                "traceparent",
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("x-request-id", "abc"),
            ("accept", "application/json"),
            ("x-http-method-override", "DELETE"),
            ("x-original-url", "/v1/partner.Misc/CurrentAccount"),
            ("x-rewrite-url", "/v1/partner.Misc/CurrentAccount"),
        ]);
        let bearer = HeaderValue::from_static("Bearer 1:k");
        let host = HeaderValue::from_static("api.etelecom.vn");
        let mut sms = h.clone();
        to_upstream(
            &mut h,
            &HeaderName::from_static("x-tenant-id"),
            Some(&bearer),
            &host,
        );
        to_upstream(
            &mut sms,
            &HeaderName::from_static("x-tenant-id"),
            None,
            &host,
        );
        assert!(sms.get(header::AUTHORIZATION).is_none(), "{sms:?}");
        assert!(sms.get(header::PROXY_AUTHORIZATION).is_none());
        assert!(sms.get(header::COOKIE).is_none());
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "accept",
                "authorization",
                "content-type",
                "host",
                "traceparent",
                "x-request-id"
            ]
        );
        assert_eq!(h.get_all(header::AUTHORIZATION).iter().count(), 1);
        assert_eq!(h[header::AUTHORIZATION], "Bearer 1:k");
        assert_eq!(h[header::HOST], "api.etelecom.vn");
        assert_eq!(h[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn caller_headers_lose_hops_and_length() {
        let mut h = map(&[
            ("content-type", "application/json"),
            ("content-length", "12"),
            ("transfer-encoding", "chunked"),
            ("connection", "close, x-up-hop"),
            ("x-up-hop", "1"),
            ("set-cookie", "a=b"),
        ]);
        to_caller(&mut h);
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["content-type", "set-cookie"]);
    }
}
