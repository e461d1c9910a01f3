//! `check --probe`: asks eTelecom, with each configured key, for one cheap read and reports per
//! tenant and key class whether the key is accepted. Keys are shown only as fingerprints.
//!
//! Reads used: `shop.Misc/CurrentAccount` for a shop's own `api_key`,
//! `partner.Misc/CurrentAccount` for the partner key and `partner.Etelecom/GetTenant` for a
//! partner-issued `shop_key` (CurrentAccount does not take that key class). A key is refused
//! when eTelecom answers 401, or 403 other than a quota answer; any other answer means eTelecom
//! accepted the key.
//!
//! With `[cluster]`, [`probe_cluster`] also PINGs Redis and reports the answer; the URL is shown
//! with its password as a fingerprint.

use std::fmt;

use bytes::Bytes;
use http::{HeaderName, Request, StatusCode};

use crate::catalogue::KeyClass;
use crate::config::Config;
use crate::ratelimit;
use crate::secret::ApiKey;
use crate::upstream::{Upstream, UpstreamError};

/// The verdict for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Accepted(StatusCode),
    Refused(StatusCode),
    Unreachable(UpstreamError),
}

#[derive(Debug, Clone)]
pub struct Probe {
    /// `None` for the partner key.
    pub tenant: Option<String>,
    pub key_class: KeyClass,
    pub fingerprint: String,
    pub verdict: Verdict,
}

impl Probe {
    pub fn accepted(&self) -> bool {
        matches!(self.verdict, Verdict::Accepted(_))
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = self
            .tenant
            .as_deref()
            .map_or("partner".to_owned(), |t| format!("tenant {t}"));
        let verdict = match &self.verdict {
            Verdict::Accepted(s) => format!("accepted (HTTP {})", s.as_u16()),
            Verdict::Refused(s) => format!("REFUSED (HTTP {})", s.as_u16()),
            Verdict::Unreachable(e) => format!("UNREACHABLE ({e})"),
        };
        write!(
            f,
            "{who} {} (sha256:{}): {verdict}",
            self.key_class, self.fingerprint
        )
    }
}

/// Probes every key of `cfg`, one after the other.
pub async fn probe(cfg: &Config) -> Result<Vec<Probe>, String> {
    let upstream = Upstream::new(&cfg.upstream)?;
    let mut keys: Vec<(Option<String>, KeyClass, &ApiKey)> = Vec::new();
    if let Some(p) = &cfg.partner {
        keys.push((None, KeyClass::Partner, &p.api_key));
    }
    for t in &cfg.tenants {
        if let Some(k) = &t.api_key {
            keys.push((Some(t.id.to_string()), KeyClass::ApiKey, k));
        }
        if let Some(k) = &t.shop_key {
            keys.push((Some(t.id.to_string()), KeyClass::ShopKey, k));
        }
    }
    let mut out = Vec::with_capacity(keys.len());
    for (tenant, key_class, key) in keys {
        let path = match key_class {
            KeyClass::ApiKey => "/v1/shop.Misc/CurrentAccount",
            KeyClass::ShopKey => "/v1/partner.Etelecom/GetTenant",
            KeyClass::Partner => "/v1/partner.Misc/CurrentAccount",
            // Only eTelecom API keys are listed above.
            KeyClass::Sms => continue,
        };
        let (parts, ()) = Request::post(path)
            .body(())
            .map_err(|e| e.to_string())?
            .into_parts();
        let unused = HeaderName::from_static("x-tenant-id");
        let verdict = match upstream
            .send(
                parts,
                path,
                &unused,
                Some(key.bearer()),
                Bytes::from_static(b"{}"),
            )
            .await
        {
            Err(e) => Verdict::Unreachable(e),
            Ok(r) => {
                let quota = ratelimit::upstream_backoff(
                    r.status,
                    &r.headers,
                    &r.body,
                    std::time::Duration::ZERO,
                )
                .is_some();
                match r.status {
                    StatusCode::UNAUTHORIZED => Verdict::Refused(r.status),
                    StatusCode::FORBIDDEN if !quota => Verdict::Refused(r.status),
                    s => Verdict::Accepted(s),
                }
            }
        };
        out.push(Probe {
            tenant,
            key_class,
            fingerprint: key.fingerprint(),
            verdict,
        });
    }
    Ok(out)
}

/// `check --probe` with `[cluster]`: one line about Redis (`Ok` when it answered PING), the URL
/// with its password as a fingerprint. `None` without `[cluster]`.
pub async fn probe_cluster(cfg: &Config) -> Option<Result<String, String>> {
    let c = cfg.cluster.as_ref()?;
    let url = c.redis_url.shown();
    Some(match crate::cluster::ping(c).await {
        Ok(answer) => Ok(format!("redis {url}: answered {answer}")),
        Err(why) => Err(format!("redis {url}: FAILED ({why})")),
    })
}
