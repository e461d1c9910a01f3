//! Every error the gateway answers itself, and the one place where such an error becomes an HTTP
//! response.
//!
//! The body uses eTelecom's own error shape, so callers parse one format whether the answer came
//! from the gateway or from eTelecom:
//! `{"code": "...", "msg": "...", "meta": {"source": "gateway", "request_id": "..."}}`.
//! Messages are fixed strings chosen here: no error body ever carries a key, an upstream address
//! or internal detail. Details go to the access log once, through [`GatewayError::detail`].

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::catalogue::KeyClass;
use crate::ratelimit::{RateLimitHeaders, Unavailable};
use crate::upstream::UpstreamError;

/// What went wrong, from the caller's point of view. `status()` and `code()` are exhaustive
/// matches: a new variant does not compile until it has an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("missing tenant header")]
    MissingTenant,
    #[error("tenant header is not a valid tenant id")]
    MalformedTenant,
    #[error("tenant header given more than once")]
    DuplicateTenant,
    #[error("unknown tenant")]
    UnknownTenant,
    #[error("caller address not allowed")]
    CallerNotAllowed,
    #[error("no {0} configured for this tenant")]
    KeyNotConfigured(KeyClass),
    #[error("no route for this path")]
    UnknownRoute,
    #[error("an /sms route, and no [sms] section is configured")]
    SmsNotConfigured,
    #[error("method not in the catalogue and unknown methods are rejected")]
    UnknownMethodRejected,
    #[error("only POST is accepted")]
    MethodNotAllowed,
    #[error("absolute-form request targets are not accepted")]
    AbsoluteForm,
    #[error("request target has a #fragment")]
    FragmentInTarget,
    #[error("no Host header")]
    MissingHost,
    #[error("more than one Host, or a Host that differs from :authority")]
    ConflictingHost,
    #[error("body is not a JSON object")]
    BodyNotJsonObject,
    #[error("body is not valid UTF-8")]
    BodyNotUtf8,
    #[error("body nests JSON deeper than server.max_json_depth")]
    BodyTooDeep,
    #[error("bad purge request: {0}")]
    BadPurge(&'static str),
    #[error("body larger than {limit} bytes")]
    BodyTooLarge { limit: u64 },
    #[error("request body could not be read")]
    BodyRead,
    #[error("request body did not arrive in time")]
    BodyTimeout,
    #[error("rate limited")]
    RateLimited {
        retry_after: Duration,
        headers: RateLimitHeaders,
    },
    #[error("fleet mode: Redis is unavailable and cluster.on_unavailable = \"reject\"")]
    ClusterUnavailable,
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl From<Unavailable> for GatewayError {
    fn from(_: Unavailable) -> Self {
        Self::ClusterUnavailable
    }
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingTenant
            | Self::MalformedTenant
            | Self::DuplicateTenant
            | Self::BodyNotJsonObject
            | Self::BodyNotUtf8
            | Self::BodyTooDeep => StatusCode::BAD_REQUEST,
            Self::AbsoluteForm
            | Self::FragmentInTarget
            | Self::MissingHost
            | Self::ConflictingHost
            | Self::BodyRead
            | Self::BadPurge(_) => StatusCode::BAD_REQUEST,
            Self::UnknownTenant | Self::CallerNotAllowed | Self::KeyNotConfigured(_) => {
                StatusCode::FORBIDDEN
            }
            Self::UnknownRoute | Self::UnknownMethodRejected | Self::SmsNotConfigured => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::ClusterUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::Upstream(e) => match e {
                UpstreamError::Timeout | UpstreamError::ConnectTimeout => {
                    StatusCode::GATEWAY_TIMEOUT
                }
                UpstreamError::Connect
                | UpstreamError::Tls
                | UpstreamError::Protocol
                | UpstreamError::ResponseTooLarge => StatusCode::BAD_GATEWAY,
            },
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The eTelecom (twirp-style) error code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingTenant
            | Self::MalformedTenant
            | Self::DuplicateTenant
            | Self::BodyNotJsonObject
            | Self::BodyNotUtf8
            | Self::BodyTooDeep
            | Self::BodyTooLarge { .. }
            | Self::AbsoluteForm
            | Self::FragmentInTarget
            | Self::MissingHost
            | Self::ConflictingHost
            | Self::BodyRead
            | Self::BadPurge(_) => "invalid_argument",
            Self::UnknownTenant | Self::CallerNotAllowed | Self::KeyNotConfigured(_) => {
                "permission_denied"
            }
            Self::UnknownRoute
            | Self::UnknownMethodRejected
            | Self::SmsNotConfigured
            | Self::MethodNotAllowed => "bad_route",
            Self::RateLimited { .. } => "resource_exhausted",
            Self::ClusterUnavailable => "unavailable",
            // Twirp maps deadline_exceeded to 408 too.
            Self::BodyTimeout => "deadline_exceeded",
            Self::Upstream(e) => match e {
                UpstreamError::Timeout | UpstreamError::ConnectTimeout => "deadline_exceeded",
                UpstreamError::Connect
                | UpstreamError::Tls
                | UpstreamError::Protocol
                | UpstreamError::ResponseTooLarge => "unavailable",
            },
            Self::Internal(_) => "internal",
        }
    }

    /// The message the caller reads. Fixed text only.
    pub fn message(&self) -> &'static str {
        match self {
            Self::MissingTenant => "missing tenant header",
            Self::MalformedTenant => "tenant header is not a valid tenant id",
            Self::DuplicateTenant => "the tenant header must be sent exactly once",
            Self::UnknownTenant => "unknown tenant",
            Self::CallerNotAllowed => "caller address is not allowed",
            Self::KeyNotConfigured(k) => k.missing_message(),
            Self::UnknownRoute => {
                "no such eTelecom method path; expected POST /v1/shop.<Service>/<Method>, /v1/partner.<Service>/<Method> or /sms/api/<Service>/<Method>"
            }
            Self::SmsNotConfigured => "the SMS API is not enabled on this gateway",
            Self::UnknownMethodRejected => "method is not in the gateway's catalogue",
            Self::MethodNotAllowed => "only POST is accepted",
            Self::AbsoluteForm => "absolute-form request targets are not accepted",
            Self::FragmentInTarget => {
                "request target has a #fragment; fragments are for the client and never sent"
            }
            Self::MissingHost => "request has no Host header",
            Self::ConflictingHost => {
                "request has more than one Host, or a Host that differs from :authority"
            }
            Self::BodyNotJsonObject => "request body must be a JSON object",
            Self::BodyNotUtf8 => "request body is not valid UTF-8",
            Self::BodyTooDeep => "request body nests arrays and objects too deeply",
            Self::BodyTooLarge { .. } => "request body is too large",
            Self::BodyRead => "request body could not be read",
            Self::BodyTimeout => "request body did not arrive in time",
            Self::BadPurge(reason) => reason,
            Self::RateLimited { .. } => "rate limit exceeded for this eTelecom key",
            Self::ClusterUnavailable => {
                "the gateway fleet's shared rate-limit store is unavailable; try again shortly"
            }
            Self::Upstream(e) => match e {
                UpstreamError::Connect => "eTelecom is unreachable",
                UpstreamError::ConnectTimeout => "timed out connecting to eTelecom",
                UpstreamError::Tls => "TLS handshake with eTelecom failed",
                UpstreamError::Protocol => "eTelecom answered with an invalid HTTP response",
                UpstreamError::ResponseTooLarge => "eTelecom's response is too large",
                UpstreamError::Timeout => "eTelecom did not answer in time",
            },
            Self::Internal(_) => "internal gateway error",
        }
    }

    /// The detail for the access log (never for the caller). Contains no secret by construction:
    /// variants carry no request data.
    pub fn detail(&self) -> String {
        self.to_string()
    }

    /// The only place a `GatewayError` becomes a response.
    pub fn into_response(self, request_id: &str) -> Response<Full<Bytes>> {
        let body = serde_json::json!({
            "code": self.code(),
            "msg": self.message(),
            "meta": { "source": "gateway", "request_id": request_id },
        });
        let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        match &self {
            Self::MethodNotAllowed => {
                headers.insert(header::ALLOW, HeaderValue::from_static("POST"));
            }
            Self::RateLimited {
                retry_after,
                headers: limits,
            } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
                limits.insert_into(headers);
            }
            _ => {}
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(resp: Response<Full<Bytes>>) -> serde_json::Value {
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        serde_json::from_slice(&bytes).expect("json")
    }

    #[tokio::test]
    async fn error_body_has_etelecom_shape_and_request_id() {
        let resp = GatewayError::UnknownTenant.into_response("req-1");
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
        let v = body_json(resp).await;
        assert_eq!(v["code"], "permission_denied");
        assert_eq!(v["msg"], "unknown tenant");
        assert_eq!(v["meta"]["source"], "gateway");
        assert_eq!(v["meta"]["request_id"], "req-1");
    }

    #[test]
    fn every_status_and_code_of_the_contract() {
        let cases: Vec<(GatewayError, u16, &str)> = vec![
            (GatewayError::MissingTenant, 400, "invalid_argument"),
            (GatewayError::BodyNotJsonObject, 400, "invalid_argument"),
            (GatewayError::DuplicateTenant, 400, "invalid_argument"),
            (GatewayError::BodyNotUtf8, 400, "invalid_argument"),
            (GatewayError::BodyTooDeep, 400, "invalid_argument"),
            (GatewayError::MissingHost, 400, "invalid_argument"),
            (GatewayError::FragmentInTarget, 400, "invalid_argument"),
            (GatewayError::ConflictingHost, 400, "invalid_argument"),
            (GatewayError::BadPurge("x"), 400, "invalid_argument"),
            (GatewayError::UnknownTenant, 403, "permission_denied"),
            (GatewayError::CallerNotAllowed, 403, "permission_denied"),
            (
                GatewayError::KeyNotConfigured(KeyClass::ShopKey),
                403,
                "permission_denied",
            ),
            (GatewayError::UnknownRoute, 404, "bad_route"),
            (GatewayError::SmsNotConfigured, 404, "bad_route"),
            (
                GatewayError::KeyNotConfigured(KeyClass::Sms),
                403,
                "permission_denied",
            ),
            (GatewayError::MethodNotAllowed, 405, "bad_route"),
            (
                GatewayError::BodyTooLarge { limit: 1 },
                413,
                "invalid_argument",
            ),
            (
                GatewayError::RateLimited {
                    retry_after: Duration::from_millis(1500),
                    headers: test_headers(),
                },
                429,
                "resource_exhausted",
            ),
            (GatewayError::ClusterUnavailable, 503, "unavailable"),
            (UpstreamError::Connect.into(), 502, "unavailable"),
            (UpstreamError::Tls.into(), 502, "unavailable"),
            (UpstreamError::Protocol.into(), 502, "unavailable"),
            (UpstreamError::Timeout.into(), 504, "deadline_exceeded"),
            (GatewayError::Internal("x"), 500, "internal"),
        ];
        for (err, status, code) in cases {
            assert_eq!(err.status().as_u16(), status, "{err:?}");
            assert_eq!(err.code(), code, "{err:?}");
        }
    }

    fn test_headers() -> RateLimitHeaders {
        RateLimitHeaders {
            policy: HeaderValue::from_static("\"default\";q=20;w=2"),
            state: HeaderValue::from_static("\"default\";r=0;t=2"),
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        let resp = GatewayError::RateLimited {
            retry_after: Duration::from_millis(1500),
            headers: test_headers(),
        }
        .into_response("r");
        assert_eq!(resp.headers()[header::RETRY_AFTER], "2");
        assert_eq!(resp.headers()["ratelimit-policy"], "\"default\";q=20;w=2");
        assert_eq!(resp.headers()["ratelimit"], "\"default\";r=0;t=2");
    }

    #[tokio::test]
    async fn missing_key_names_the_key() {
        let v =
            body_json(GatewayError::KeyNotConfigured(KeyClass::ShopKey).into_response("r")).await;
        assert!(v["msg"].as_str().expect("msg").contains("shop_key"));
        let v = body_json(GatewayError::KeyNotConfigured(KeyClass::Sms).into_response("r")).await;
        assert!(v["msg"].as_str().expect("msg").contains("sms"), "{v}");
    }
}
