//! The connection and body timeouts of `[server]` (besides `header_read_timeout_ms`, which is
//! parsed with the rest of the section). Names follow NGINX and Envoy:
//!
//! | key | default | NGINX / Envoy |
//! | --- | --- | --- |
//! | `header_read_timeout_ms` | 10 s | `client_header_timeout` / `request_headers_timeout`: from accept (or the first byte of a later request) to the complete head |
//! | `client_body_timeout_ms` | 10 s | `client_body_timeout`: the longest gap between two reads of a body |
//! | `request_timeout_ms` | 30 s | Envoy `request_timeout`: the whole body, counted from its head |
//! | `keepalive_timeout_ms` | 75 s | `keepalive_timeout` / `idle_timeout`: a connection with no request in progress (HTTP/1.1 between requests, HTTP/2 with no open stream) |
//! | `http2_keepalive_interval_ms` / `http2_keepalive_timeout_ms` | 30 s / 10 s | Envoy `connection_keepalive`: PING an HTTP/2 peer that has sent nothing for the interval; close if no answer within the timeout |

use std::time::Duration;

use super::{Parser, Section};
use crate::body::BodyLimits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerTimeouts {
    pub client_body: Duration,
    pub request: Duration,
    pub keepalive: Duration,
    pub http2_keepalive_interval: Duration,
    pub http2_keepalive_timeout: Duration,
}

impl ServerTimeouts {
    /// What [`crate::body::collect_limited`] needs, for bodies of at most `max_bytes`.
    pub fn body_limits(&self, max_bytes: u64) -> BodyLimits {
        BodyLimits {
            max_bytes,
            between_reads: self.client_body,
            total: self.request,
        }
    }
}

impl Parser<'_> {
    pub(super) fn server_timeouts(&mut self, s: &mut Section) -> ServerTimeouts {
        let client_body = s.millis(self, "client_body_timeout_ms", 10_000);
        let request = s.millis(self, "request_timeout_ms", 30_000);
        if client_body > request {
            self.problem(
                &s.key_path("client_body_timeout_ms"),
                "must not exceed server.request_timeout_ms".into(),
            );
        }
        let keepalive = s.millis(self, "keepalive_timeout_ms", 75_000);
        let http2_keepalive_interval = s.millis(self, "http2_keepalive_interval_ms", 30_000);
        let http2_keepalive_timeout = s.millis(self, "http2_keepalive_timeout_ms", 10_000);
        ServerTimeouts {
            client_body,
            request,
            keepalive,
            http2_keepalive_interval,
            http2_keepalive_timeout,
        }
    }
}
