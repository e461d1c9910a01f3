//! How the configuration's secrets appear outside the process: the effective configuration as
//! JSON, for the admin `GET /config` (every value as the gateway uses it, defaults filled in,
//! and every key shown only as a short fingerprint (`sha256:1a2b3c4d`) so ops can tell which key
//! version is loaded without seeing it; the Redis URL's password likewise), and the list of
//! secret values that the scrubber must keep out of logs and relayed bodies
//! ([`Config::secret_values`]).

use serde_json::{Value, json};

use super::{Config, RateMode, RatePolicy, UnknownMethods, UpstreamConfig};
use crate::catalogue::Catalogue;
use crate::secret::{ApiKey, SecretText};

fn fp(key: Option<&ApiKey>) -> Value {
    key.map_or(Value::Null, |k| {
        Value::String(format!("sha256:{}", k.fingerprint()))
    })
}

fn text_fp(secret: &SecretText) -> Value {
    Value::String(format!("sha256:{}", secret.fingerprint()))
}

fn upstream(u: &UpstreamConfig) -> Value {
    json!({
        "base_url": format!("{}://{}{}", u.scheme, u.authority, u.path_prefix),
        "connect_timeout_ms": u.connect_timeout.as_millis() as u64,
        "timeout_ms": u.timeout.as_millis() as u64,
        "extra_roots": u.extra_roots.len(),
        "system_roots": u.system_roots,
        "max_response_bytes": u.max_response_bytes,
        "pool_idle_timeout_ms": u.pool_idle_timeout.as_millis() as u64,
        "pool_max_idle_per_host": u.pool_max_idle_per_host,
    })
}

fn policy(p: Option<RatePolicy>) -> Value {
    p.map_or(
        Value::Null,
        |p| json!({ "requests_per_second": p.requests_per_second.get(), "burst": p.burst.get() }),
    )
}

fn nets(n: Option<&[ipnet::IpNet]>) -> Value {
    n.map_or(Value::Null, |n| n.iter().map(ToString::to_string).collect())
}

impl Config {
    /// Every secret value in use, for `redact::Scrubber::new`: each key whole and its secret
    /// part, and each SMS account's username and password. A new kind of secret (a password, another upstream's key) is added here, once.
    pub fn secret_values(&self) -> Vec<&[u8]> {
        let partner = self.partner.iter().map(|p| &p.api_key);
        let tenants = self
            .tenants
            .iter()
            .flat_map(|t| t.api_key.iter().chain(t.shop_key.iter()));
        let redis = self
            .cluster
            .iter()
            .flat_map(|c| c.redis_url.secret_values());
        let sms = self
            .tenants
            .iter()
            .filter_map(|t| t.sms.as_ref())
            .flat_map(|c| {
                [
                    c.username.expose().as_bytes(),
                    c.password.expose().as_bytes(),
                ]
            });
        partner
            .chain(tenants)
            .flat_map(ApiKey::secret_values)
            .chain(redis)
            .chain(sms)
            .collect()
    }

    pub fn view(&self) -> Value {
        let s = &self.server;
        let rl = &self.rate_limit;
        let c = &self.cache;
        let mut fixed: Vec<(&str, u64)> = c
            .fixed_ttl
            .iter()
            .map(|(id, ttl)| (&*Catalogue::get().method(*id).label, ttl.as_secs()))
            .collect();
        fixed.sort_unstable();
        json!({
            "server": {
                "listen": s.listen.to_string(),
                "tenant_header": s.tenant_header.as_str(),
                "default_tenant": s.default_tenant.as_deref(),
                "allowed_callers": nets(Some(&s.allowed_callers)),
                "max_body_bytes": s.max_body_bytes,
                "max_connections": s.max_connections,
                "header_read_timeout_ms": s.header_read_timeout.as_millis() as u64,
                "max_header_bytes": s.max_header_bytes,
                "max_json_depth": s.max_json_depth,
                "client_body_timeout_ms": s.timeouts.client_body.as_millis() as u64,
                "request_timeout_ms": s.timeouts.request.as_millis() as u64,
                "keepalive_timeout_ms": s.timeouts.keepalive.as_millis() as u64,
                "http2_keepalive_interval_ms": s.timeouts.http2_keepalive_interval.as_millis() as u64,
                "http2_keepalive_timeout_ms": s.timeouts.http2_keepalive_timeout.as_millis() as u64,
            },
            "upstream": upstream(&self.upstream),
            "sms": self.sms.as_ref().map(upstream),
            "routing": {
                "unknown_methods": match self.routing.unknown_methods {
                    UnknownMethods::Forward => "forward",
                    UnknownMethods::Reject => "reject",
                },
            },
            "partner": self.partner.as_ref().map(|p| json!({
                "api_key": fp(Some(&p.api_key)),
                "allowed_callers": nets(p.allowed_callers.as_deref()),
                "rate_limit": policy(p.rate_limit),
            })),
            "tenants": self.tenants.iter().map(|t| json!({
                "id": &*t.id,
                "api_key": fp(t.api_key.as_ref()),
                "shop_key": fp(t.shop_key.as_ref()),
                "sms": t.sms.as_ref().map(|c| json!({
                    "username": text_fp(&c.username),
                    "password": text_fp(&c.password),
                })),
                "allowed_callers": nets(t.allowed_callers.as_deref()),
                "rate_limit": policy(t.rate_limit),
                "sms_rate_limit": policy(t.sms_rate_limit),
            })).collect::<Vec<_>>(),
            "rate_limit": {
                "requests_per_second": rl.default.requests_per_second.get(),
                "burst": rl.default.burst.get(),
                "mode": match rl.mode { RateMode::Reject => "reject", RateMode::Queue { .. } => "queue" },
                "max_wait_ms": match rl.mode { RateMode::Reject => 0, RateMode::Queue { max_wait } => max_wait.as_millis() as u64 },
                "enforce": rl.enforce,
                "upstream_backoff_secs": rl.upstream_backoff.as_secs(),
                "housekeeping_interval_secs": rl.housekeeping_interval.as_secs(),
            },
            "cache": {
                "enabled": c.enabled,
                "max_ttl_secs": c.max_ttl.as_secs(),
                "safety_margin_secs": c.safety_margin.as_secs(),
                "max_bytes": c.max_bytes,
                "stale_if_error_secs": c.stale_if_error.as_secs(),
                "methods": fixed.into_iter().map(|(m, ttl)| (m.to_owned(), json!({ "ttl_secs": ttl }))).collect::<serde_json::Map<_, _>>(),
            },
            "admin": { "listen": self.admin.listen.to_string() },
            "shutdown": {
                "drain_delay_secs": self.shutdown.drain_delay.as_secs(),
                "grace_secs": self.shutdown.grace.as_secs(),
            },
            "reload": {
                "interval_secs": self.reload.interval.as_secs(),
                "watch": self.reload.watch,
            },
            "metrics": { "tenant_label": self.metrics.tenant_label },
            "cluster": self.cluster.as_ref().map(|c| json!({
                "redis_url": c.redis_url.shown(),
                "key_prefix": &*c.key_prefix,
                "timeout_ms": c.timeout.as_millis() as u64,
                "on_unavailable": c.on_unavailable.as_str(),
            })),
        })
    }
}
