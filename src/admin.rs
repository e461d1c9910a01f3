//! The admin listener, never the public one: `GET /metrics` (Prometheus text, or OpenMetrics
//! when the scraper asks), `GET /healthz` (alive), `GET /readyz` (503 while draining),
//! `POST /cache/purge` (a strict [`PurgeScope`]; answers how many entries went) and
//! `GET /config` (the effective config, keys as fingerprints).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;

use crate::cache::PurgeScope;
use crate::error::GatewayError;
use crate::metrics;
use crate::proxy::Gateway;
use crate::server::Handler;

/// Readiness, shared by the admin listener and the shutdown sequence.
#[derive(Debug, Clone, Default)]
pub struct Health {
    draining: Arc<AtomicBool>,
}

impl Health {
    /// From now on `/readyz` answers 503.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        !self.draining.load(Ordering::Acquire)
    }
}

#[derive(Clone)]
pub struct Admin {
    gateway: Gateway,
    health: Health,
}

impl Admin {
    pub fn new(gateway: Gateway, health: Health) -> Self {
        Self { gateway, health }
    }

    async fn route(&self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, GatewayError> {
        let path = req.uri().path();
        let method = req.method().clone();
        match (path, method) {
            ("/metrics", Method::GET) => {
                self.gateway.refresh_cache_gauges();
                let accept = req.headers().get(header::ACCEPT);
                let (body, content_type) = metrics::render(self.gateway.metrics(), accept);
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
                Ok(resp)
            }
            ("/healthz", Method::GET) => {
                Ok(json(StatusCode::OK, serde_json::json!({"status": "ok"})))
            }
            ("/readyz", Method::GET) => Ok(if self.health.is_ready() {
                json(StatusCode::OK, serde_json::json!({"status": "ready"}))
            } else {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"status": "draining"}),
                )
            }),
            ("/config", Method::GET) => Ok(json(StatusCode::OK, self.gateway.config_view())),
            ("/cache/purge", Method::POST) => self.purge(req).await,
            ("/metrics" | "/healthz" | "/readyz" | "/config" | "/cache/purge", _) => {
                Err(GatewayError::MethodNotAllowed)
            }
            _ => Err(GatewayError::UnknownRoute),
        }
    }

    /// `POST /cache/purge` with a [`PurgeScope`]: `{"tenant": "acme"}`,
    /// `{"tenant": "acme", "method": "GetExtensionInfo"}`, `{"method": ...}` or `{"all": true}`
    /// (or the same fields as a query string). Bad input is a 400 and purges nothing.
    async fn purge(&self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, GatewayError> {
        let (parts, body) = req.into_parts();
        let body = Limited::new(body, 64 * 1024)
            .collect()
            .await
            .map_err(|_| GatewayError::BodyRead)?
            .to_bytes();
        let scope = PurgeScope::parse(parts.uri.query(), &body, |t| self.gateway.has_tenant(t))
            .map_err(GatewayError::BadPurge)?;
        let purged = self.gateway.purge(&scope).await;
        tracing::info!(
            tenant = scope.tenant().unwrap_or("*"),
            method = scope.method().unwrap_or("*"),
            purged,
            "cache purge"
        );
        Ok(json(
            StatusCode::OK,
            serde_json::json!({ "purged": purged }),
        ))
    }
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(v.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

impl Handler for Admin {
    type Connection = ();

    fn connection(&self) {}

    async fn call(&self, req: Request<Incoming>, _peer: SocketAddr) -> Response<Full<Bytes>> {
        match self.route(req).await {
            Ok(resp) => resp,
            Err(e) => e.into_response("-"),
        }
    }
}
