//! The request lifecycle, and nothing else: each step lives in its own module; this one only
//! puts them in order.
//!
//! caller allowed? → route → credential (tenant + key) → body (size, JSON object) → [cache] →
//! [rate limit] → forward → respond. Any step's `GatewayError` becomes a response in
//! `error.rs`; every request ends in exactly one access-log event.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Body;
use ipnet::IpNet;
use tracing::Level;

use crate::access_log::{AccessLog, REQUEST_ID, RequestIds};
use crate::config::{Config, UnknownMethods};
use crate::error::GatewayError;
use crate::tenants::{self, Tenants};
use crate::upstream::Upstream;
use crate::{body, redact, route};

/// The gateway service: cheap to clone, one per connection.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

struct Inner {
    tenants: Tenants,
    upstream: Upstream,
    allowed_callers: Vec<IpNet>,
    max_body_bytes: u64,
    unknown_methods: UnknownMethods,
    request_ids: RequestIds,
}

impl Gateway {
    /// Builds the gateway from a validated config (this builds the upstream client).
    pub fn new(cfg: &Config) -> Result<Self, String> {
        Ok(Self {
            inner: Arc::new(Inner {
                tenants: Tenants::new(cfg),
                upstream: Upstream::new(&cfg.upstream)?,
                allowed_callers: cfg.server.allowed_callers.clone(),
                max_body_bytes: cfg.server.max_body_bytes,
                unknown_methods: cfg.routing.unknown_methods,
                request_ids: RequestIds::default(),
            }),
        })
    }

    /// Handles one request from `peer`. Never fails: errors become responses here.
    pub async fn handle<B>(&self, req: Request<B>, peer: SocketAddr) -> Response<Full<Bytes>>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let request_id = self.inner.request_ids.for_request(req.headers());
        let mut log = AccessLog::new(peer, request_id);
        let mut resp = match self.process(req, &mut log).await {
            Ok(resp) => resp,
            Err(e) => {
                log.error = Some((e.code(), e.detail()));
                let id = log.request_id.to_str().unwrap_or("-");
                e.into_response(id)
            }
        };
        resp.headers_mut()
            .insert(REQUEST_ID, log.request_id.clone());
        let bytes_out = usize::try_from(resp.body().size_hint().lower()).unwrap_or(usize::MAX);
        log.emit(resp.status(), bytes_out);
        resp
    }

    async fn process<B>(
        &self,
        req: Request<B>,
        log: &mut AccessLog,
    ) -> Result<Response<Full<Bytes>>, GatewayError>
    where
        B: Body<Data = Bytes>,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let inner = &*self.inner;
        let peer = log.peer.ip();
        tenants::allowed(Some(&inner.allowed_callers), peer)?;
        let (mut parts, body) = req.into_parts();
        let route = route::resolve(&parts.method, &parts.uri, inner.unknown_methods)?;
        log.method = route.label();
        let cred = inner
            .tenants
            .credential(&parts.headers, route.key_class, peer)?;
        log.tenant = cred.tenant.map(|t| t.id.clone());
        log.key_class = Some(cred.key_class);

        let body = body::collect_limited(&parts.headers, body, inner.max_body_bytes).await?;
        log.bytes_in = body.len();
        let body = body::json_object(body)?;
        let global = crate::catalogue::Catalogue::get().global_secrets();
        if tracing::enabled!(Level::DEBUG) {
            let secrets = route.method.map_or(global, |m| &m.request_secrets);
            tracing::debug!(
                request_id = log.request_id.to_str().unwrap_or("-"),
                headers = %redact::Headers(&parts.headers),
                body = %redact::Body::new(&body, secrets),
                "request body"
            );
        }

        parts.headers.insert(REQUEST_ID, log.request_id.clone());
        let uri = std::mem::take(&mut parts.uri);
        let upstream = inner
            .upstream
            .send(
                parts,
                uri.path(),
                inner.tenants.header(),
                cred.key.bearer(),
                body,
            )
            .await?;
        log.upstream_status = Some(upstream.status);
        if tracing::enabled!(Level::DEBUG) {
            let secrets = route.method.map_or(global, |m| &m.response_secrets);
            tracing::debug!(
                request_id = log.request_id.to_str().unwrap_or("-"),
                status = upstream.status.as_u16(),
                body = %redact::Body::new(&upstream.body, secrets),
                "response body"
            );
        }

        let mut resp = Response::new(Full::new(upstream.body));
        *resp.status_mut() = upstream.status;
        *resp.headers_mut() = upstream.headers;
        Ok(resp)
    }
}
