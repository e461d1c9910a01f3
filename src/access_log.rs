//! Request ids and the one access-log event each request produces.
//!
//! The event carries what ops need to follow a call (request id, tenant, method name, key class,
//! status, upstream status, duration, bytes) and nothing a caller sent: method names come from
//! the catalogue's closed set, tenants from the config, errors from fixed texts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::{HeaderMap, HeaderValue, StatusCode};

use crate::catalogue::KeyClass;
use crate::metrics::MethodMetric;
use crate::proxy::CacheStatus;

pub const REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// Generates request ids: a random per-process prefix and a counter, 32 hex digits.
#[derive(Debug)]
pub struct RequestIds {
    prefix: u64,
    counter: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        let mut seed = [0u8; 8];
        // Without the system RNG the ids are still unique per process, only guessable.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
        Self {
            prefix: u64::from_le_bytes(seed),
            counter: AtomicU64::new(0),
        }
    }
}

impl RequestIds {
    /// The caller's `x-request-id` when it is a sane token (1-128 visible ASCII characters),
    /// otherwise a new one.
    pub fn for_request(&self, headers: &HeaderMap) -> HeaderValue {
        if let Some(v) = headers.get(REQUEST_ID) {
            let b = v.as_bytes();
            if !b.is_empty() && b.len() <= 128 && b.iter().all(u8::is_ascii_graphic) {
                return v.clone();
            }
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut id = [0u8; 32];
        hex(&mut id[..16], self.prefix);
        hex(&mut id[16..], n);
        HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("-"))
    }
}

/// Writes `v` as 16 lower-case hex digits (what `format!("{v:016x}")` gives, without `fmt`).
fn hex(out: &mut [u8], v: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, d) in out.iter_mut().enumerate() {
        *d = DIGITS[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// What is known about a request as it goes through the lifecycle.
#[derive(Debug)]
pub struct AccessLog {
    pub started: Instant,
    pub peer: SocketAddr,
    pub request_id: HeaderValue,
    /// The route's method: `-` until routed.
    pub method: MethodMetric,
    pub tenant: Option<Arc<str>>,
    pub key_class: Option<KeyClass>,
    pub upstream_status: Option<StatusCode>,
    pub bytes_in: usize,
    pub cache: Option<CacheStatus>,
    pub error: Option<(&'static str, String)>,
}

impl AccessLog {
    pub fn new(peer: SocketAddr, request_id: HeaderValue) -> Self {
        Self {
            started: Instant::now(),
            peer,
            request_id,
            method: MethodMetric::UNROUTED,
            tenant: None,
            key_class: None,
            upstream_status: None,
            bytes_in: 0,
            cache: None,
            error: None,
        }
    }

    /// Emits the access-log event: in the JSON format written straight into the log buffer
    /// ([`crate::logging::write_direct`], the same bytes as the `tracing` event gives; a test
    /// holds the two to that), otherwise as the event.
    pub fn emit(&self, status: StatusCode, bytes_out: usize) {
        if !crate::logging::access_enabled() {
            return;
        }
        let line = self.line(status, bytes_out);
        if !crate::logging::write_direct("request", "access", |json| line.write_json(json)) {
            line.emit_event();
        }
    }

    fn line(&self, status: StatusCode, bytes_out: usize) -> Line<'_> {
        let (error_code, error) = match &self.error {
            Some((code, detail)) => (*code, detail.as_str()),
            None => ("", ""),
        };
        Line {
            request_id: self.request_id.to_str().unwrap_or("-"),
            peer: PeerText::new(self.peer),
            tenant: self.tenant.as_deref().unwrap_or("-"),
            method: self.method.label(),
            key_class: self.key_class.map_or("-", KeyClass::as_str),
            status: status.as_u16(),
            upstream_status: self.upstream_status.map_or(0, |s| s.as_u16()),
            cache: self.cache.map_or("-", CacheStatus::as_str),
            source: if self.error.is_none() {
                "upstream"
            } else {
                "gateway"
            },
            // Whole microseconds: `0.568`, not `0.5676140000000001`.
            duration_ms: self.started.elapsed().as_micros() as f64 / 1000.0,
            bytes_in: self.bytes_in,
            bytes_out,
            error_code,
            error,
        }
    }
}

/// One access line's values, written either way.
struct Line<'a> {
    request_id: &'a str,
    peer: PeerText,
    tenant: &'a str,
    method: &'static str,
    key_class: &'static str,
    status: u16,
    upstream_status: u16,
    cache: &'static str,
    source: &'static str,
    duration_ms: f64,
    bytes_in: usize,
    bytes_out: usize,
    error_code: &'static str,
    error: &'a str,
}

impl Line<'_> {
    /// The values from closed sets, the peer address (digits and punctuation) and the tenant (a
    /// configured id: A-Z a-z 0-9 . _ -) go in unscanned; the caller's request id and the
    /// error text are escaped.
    fn write_json(&self, json: &mut crate::logging::JsonLine<'_>) {
        json.str(crate::json_key!("request_id"), self.request_id)
            .plain(crate::json_key!("peer"), self.peer.as_str())
            .plain(crate::json_key!("tenant"), self.tenant)
            .plain(crate::json_key!("method"), self.method)
            .plain(crate::json_key!("key_class"), self.key_class)
            .u64(crate::json_key!("status"), self.status.into())
            .u64(
                crate::json_key!("upstream_status"),
                self.upstream_status.into(),
            )
            .plain(crate::json_key!("cache"), self.cache)
            .plain(crate::json_key!("source"), self.source)
            .f64(crate::json_key!("duration_ms"), self.duration_ms)
            .u64(crate::json_key!("bytes_in"), self.bytes_in as u64)
            .u64(crate::json_key!("bytes_out"), self.bytes_out as u64)
            .plain(crate::json_key!("error_code"), self.error_code)
            .str(crate::json_key!("error"), self.error);
    }

    fn emit_event(&self) {
        tracing::info!(
            target: "access",
            request_id = self.request_id,
            peer = self.peer.as_str(),
            tenant = self.tenant,
            method = self.method,
            key_class = self.key_class,
            status = self.status,
            upstream_status = self.upstream_status,
            cache = self.cache,
            source = self.source,
            duration_ms = self.duration_ms,
            bytes_in = self.bytes_in,
            bytes_out = self.bytes_out,
            error_code = self.error_code,
            error = self.error,
            "request"
        );
    }
}

/// A peer address as `SocketAddr`'s `Display` writes it, built without `fmt` for IPv4 (every
/// access line has one).
struct PeerText {
    buf: [u8; 64],
    len: usize,
}

impl PeerText {
    fn new(peer: SocketAddr) -> Self {
        let mut t = Self {
            buf: [0; 64],
            len: 0,
        };
        match peer {
            SocketAddr::V4(v4) => {
                for (i, octet) in v4.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        t.push(b'.');
                    }
                    t.number(octet.into());
                }
                t.push(b':');
                t.number(v4.port());
            }
            SocketAddr::V6(v6) => {
                // Always fits: "[" + 39 + "%" + 10 + "]:" + 5 bytes.
                let _ = std::fmt::Write::write_fmt(&mut t, format_args!("{v6}"));
            }
        }
        t
    }

    fn push(&mut self, b: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = b;
            self.len += 1;
        }
    }

    fn number(&mut self, n: u16) {
        let mut digits = [0u8; 5];
        let mut at = digits.len();
        let mut n = n;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for &d in &digits[at..] {
            self.push(d);
        }
    }

    fn as_str(&self) -> &str {
        // Only ASCII was written (digits, dots, colons, brackets, hex and a scope id).
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("-")
    }
}

impl std::fmt::Write for PeerText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        s.bytes().for_each(|b| self.push(b));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_written_as_display_writes_them() {
        for peer in [
            "127.0.0.1:80",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "10.20.3.4:5060",
            "[::1]:8080",
            "[fe80::1%4294967295]:65535",
            "[2001:db8::ff00:42:8329]:443",
        ] {
            let addr: SocketAddr = peer.parse().expect("address");
            assert_eq!(PeerText::new(addr).as_str(), addr.to_string(), "{peer}");
        }
    }

    /// Everything after the timestamp (the two lines are written microseconds apart).
    fn after_timestamp(line: &str) -> &str {
        let at = line
            .find("\",\"level\"")
            .expect("a level after the timestamp");
        &line[at..]
    }

    #[test]
    fn the_direct_line_is_the_tracing_events_line() {
        let peer: SocketAddr = "10.1.2.3:40000".parse().expect("address");
        let mut log = AccessLog::new(peer, HeaderValue::from_static("req-\"1\""));
        log.method = MethodMetric::route(
            crate::catalogue::Catalogue::get().lookup("/v1/shop.Etelecom/GetExtensionInfo"),
        );
        log.tenant = Some("acme".into());
        log.key_class = Some(KeyClass::ApiKey);
        log.upstream_status = Some(StatusCode::BAD_GATEWAY);
        log.bytes_in = 27;
        log.cache = Some(CacheStatus::Miss);
        log.error = Some(("upstream_error", "upstream said \"no\"\n".to_owned()));
        for log in [log, AccessLog::new(peer, HeaderValue::from_static("r"))] {
            let line = log.line(StatusCode::BAD_GATEWAY, 123);
            let event = crate::logging::json_events(|| line.emit_event());
            let mut direct = String::new();
            let mut json =
                crate::logging::JsonLine::start(&mut direct, tracing::Level::INFO, "request");
            line.write_json(&mut json);
            json.finish("access");
            assert_eq!(after_timestamp(&direct), after_timestamp(&event));
            assert_eq!(direct.len(), event.len(), "{direct}\n{event}");
            let v: serde_json::Value = serde_json::from_str(&direct).expect("JSON");
            assert_eq!(v["status"], 502);
            assert_eq!(v["peer"], "10.1.2.3:40000");
        }
    }

    #[test]
    fn caller_ids_are_kept_when_sane_and_replaced_otherwise() {
        let ids = RequestIds::default();
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, HeaderValue::from_static("abc-123"));
        assert_eq!(ids.for_request(&h), "abc-123");
        h.insert(REQUEST_ID, HeaderValue::from_static("has space"));
        let generated = ids.for_request(&h);
        assert_eq!(generated.len(), 32);
        let next = ids.for_request(&HeaderMap::new());
        assert_ne!(generated, next);
        let expected = format!("{:016x}{:016x}", ids.prefix, 1);
        assert_eq!(next, expected.as_str());
    }
}
