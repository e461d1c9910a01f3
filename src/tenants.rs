//! Tenants and their keys: who a request is made for, and which eTelecom key it is made with.
//!
//! A tenant is one eTelecom shop account (not eTelecom's PBX "tenant" object). It is named by the
//! tenant header, or by `server.default_tenant` in the one-tenant sidecar form. Partner-level
//! methods need no tenant: they use the partner's own key.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

use crate::catalogue::KeyClass;
use crate::config::{Config, PartnerConfig, TenantConfig, valid_tenant_id};
use crate::error::GatewayError;
use crate::inject::Secret;

/// The registry built from a config.
#[derive(Debug)]
pub struct Tenants {
    /// Built from the config; looked up by the tenant header, never grown by it, so a fast
    /// seeded hash is enough.
    by_id: HashMap<Arc<str>, TenantConfig, foldhash::fast::RandomState>,
    default: Option<Arc<str>>,
    partner: Option<PartnerConfig>,
    header: HeaderName,
}

/// The credential chosen for one request.
#[derive(Debug, Clone, Copy)]
pub struct Credential<'a> {
    /// `None` for partner-level calls.
    pub tenant: Option<&'a TenantConfig>,
    pub key_class: KeyClass,
    /// The key or account, by where it goes upstream.
    pub secret: Secret<'a>,
}

impl Tenants {
    pub fn new(cfg: &Config) -> Self {
        Self {
            by_id: cfg
                .tenants
                .iter()
                .map(|t| (t.id.clone(), t.clone()))
                .collect(),
            default: cfg.server.default_tenant.clone(),
            partner: cfg.partner.clone(),
            header: cfg.server.tenant_header.clone(),
        }
    }

    pub fn get(&self, id: &str) -> Option<&TenantConfig> {
        self.by_id.get(id)
    }

    pub fn header(&self) -> &HeaderName {
        &self.header
    }

    /// Who the request is made for: `None` for partner-level calls (the tenant header is not
    /// needed there, but it must still not be repeated). Known before the key is chosen, so
    /// that a tenant lacking a key is still named in the access log and the metrics.
    pub fn tenant(
        &self,
        headers: &HeaderMap,
        class: KeyClass,
    ) -> Result<Option<&TenantConfig>, GatewayError> {
        let mut values = headers.get_all(&self.header).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(GatewayError::DuplicateTenant);
        }
        if class == KeyClass::Partner {
            return Ok(None);
        }
        let id = match first {
            Some(v) => {
                let id = v.to_str().map_err(|_| GatewayError::MalformedTenant)?;
                if !valid_tenant_id(id) {
                    return Err(GatewayError::MalformedTenant);
                }
                id
            }
            None => self.default.as_deref().ok_or(GatewayError::MissingTenant)?,
        };
        self.by_id
            .get(id)
            .map(Some)
            .ok_or(GatewayError::UnknownTenant)
    }

    /// Picks the key for `class` (of `tenant`, or the partner's own for partner-level calls),
    /// checking the caller against the narrower allow-list of the tenant (or of the partner
    /// section).
    pub fn credential<'a>(
        &'a self,
        tenant: Option<&'a TenantConfig>,
        class: KeyClass,
        peer: IpAddr,
    ) -> Result<Credential<'a>, GatewayError> {
        if class == KeyClass::Partner {
            let partner = self
                .partner
                .as_ref()
                .ok_or(GatewayError::KeyNotConfigured(KeyClass::Partner))?;
            allowed(partner.allowed_callers.as_deref(), peer)?;
            return Ok(Credential {
                tenant: None,
                key_class: KeyClass::Partner,
                secret: Secret::Header(&partner.api_key),
            });
        }
        let tenant = tenant.ok_or(GatewayError::MissingTenant)?;
        allowed(tenant.allowed_callers.as_deref(), peer)?;
        let secret = match class {
            KeyClass::ApiKey => tenant.api_key.as_ref().map(Secret::Header),
            KeyClass::ShopKey => tenant.shop_key.as_ref().map(Secret::Header),
            KeyClass::Sms => tenant.sms.as_ref().map(Secret::Body),
            KeyClass::Partner => None,
        }
        .ok_or(GatewayError::KeyNotConfigured(class))?;
        Ok(Credential {
            tenant: Some(tenant),
            key_class: class,
            secret,
        })
    }
}

/// Checks `peer` against an allow-list; `None` means no narrowing.
pub fn allowed(list: Option<&[IpNet]>, peer: IpAddr) -> Result<(), GatewayError> {
    match list {
        None => Ok(()),
        Some(nets) => {
            let peer = peer.to_canonical();
            if nets.iter().any(|n| n.contains(&peer)) {
                Ok(())
            } else {
                Err(GatewayError::CallerNotAllowed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn tenants(extra_server: &str) -> Tenants {
        let text = format!(
            r#"
            [server]
            {extra_server}
            [partner]
            api_key = {{ env = "P" }}
            [[tenants]]
            id = "acme"
            api_key = {{ env = "A" }}
            shop_key = {{ env = "S" }}
            sms = {{ username = {{ env = "SU" }}, password = {{ env = "SP" }} }}
            [[tenants]]
            id = "solo"
            api_key = {{ env = "A2" }}
            allowed_callers = ["10.1.0.0/16"]
            "#
        );
        let env = |n: &str| {
            Some(match n {
                "P" => "9:partner".to_owned(),
                "A" => "1:acme".to_owned(),
                "S" => "shop1:acme".to_owned(),
                "SU" => "acme-sms-user".to_owned(),
                "SP" => "acme sms password".to_owned(),
                _ => "2:solo".to_owned(),
            })
        };
        let cfg = Config::parse(&text, Path::new("."), &env).expect("config");
        Tenants::new(&cfg)
    }

    fn hdr(tenant: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-tenant-id", tenant.parse().expect("value"));
        h
    }

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// Both steps, as the proxy runs them.
    fn credential<'a>(
        t: &'a Tenants,
        h: &HeaderMap,
        c: KeyClass,
        peer: IpAddr,
    ) -> Result<Credential<'a>, GatewayError> {
        t.credential(t.tenant(h, c)?, c, peer)
    }

    #[test]
    fn each_key_class_picks_its_key() {
        let t = tenants("");
        let bearer =
            |h: &HeaderMap, c| match credential(&t, h, c, LOCAL).expect("credential").secret {
                Secret::Header(k) => k.bearer().clone(),
                Secret::Body(_) => panic!("{c} is a header credential"),
            };
        assert_eq!(bearer(&hdr("acme"), KeyClass::ApiKey), "Bearer 1:acme");
        assert_eq!(bearer(&hdr("acme"), KeyClass::ShopKey), "Bearer shop1:acme");
        assert_eq!(
            bearer(&HeaderMap::new(), KeyClass::Partner),
            "Bearer 9:partner"
        );
        match credential(&t, &hdr("acme"), KeyClass::Sms, LOCAL)
            .expect("sms")
            .secret
        {
            Secret::Body(c) => {
                assert_eq!(c.username.expose(), "acme-sms-user");
                assert_eq!(c.password.expose(), "acme sms password");
            }
            Secret::Header(_) => panic!("sms credentials go in the body"),
        }
    }

    #[test]
    fn tenant_errors() {
        let t = tenants("");
        let err = |h: &HeaderMap, c| credential(&t, h, c, LOCAL).unwrap_err();
        assert!(matches!(
            err(&HeaderMap::new(), KeyClass::ApiKey),
            GatewayError::MissingTenant
        ));
        assert!(matches!(
            err(&hdr("nobody"), KeyClass::ApiKey),
            GatewayError::UnknownTenant
        ));
        assert!(matches!(
            err(&hdr("bad id!"), KeyClass::ApiKey),
            GatewayError::MalformedTenant
        ));
        let ten = "10.1.2.3".parse().expect("ip");
        assert!(matches!(
            credential(&t, &hdr("solo"), KeyClass::ShopKey, ten).unwrap_err(),
            GatewayError::KeyNotConfigured(KeyClass::ShopKey)
        ));
        assert!(matches!(
            credential(&t, &hdr("solo"), KeyClass::ApiKey, LOCAL).unwrap_err(),
            GatewayError::CallerNotAllowed
        ));
        assert!(credential(&t, &hdr("solo"), KeyClass::ApiKey, ten).is_ok());
        assert!(matches!(
            credential(&t, &hdr("solo"), KeyClass::Sms, ten).unwrap_err(),
            GatewayError::KeyNotConfigured(KeyClass::Sms)
        ));
    }

    #[test]
    fn default_tenant_makes_the_header_optional() {
        let t = tenants("default_tenant = \"acme\"");
        let c = credential(&t, &HeaderMap::new(), KeyClass::ApiKey, LOCAL).expect("default tenant");
        assert_eq!(&*c.tenant.expect("tenant").id, "acme");
    }

    #[test]
    fn a_repeated_tenant_header_is_refused_even_when_equal() {
        let t = tenants("default_tenant = \"acme\"");
        for (a, b) in [("globex", "acme"), ("acme", "acme")] {
            let mut h = hdr(a);
            h.append("x-tenant-id", b.parse().expect("value"));
            for class in [KeyClass::ApiKey, KeyClass::ShopKey, KeyClass::Partner] {
                assert!(
                    matches!(t.tenant(&h, class), Err(GatewayError::DuplicateTenant)),
                    "{a} {b} {class:?}"
                );
            }
        }
    }

    #[test]
    fn a_tenant_without_the_key_is_still_known() {
        let t = tenants("");
        let tenant = t.tenant(&hdr("solo"), KeyClass::ShopKey).expect("tenant");
        assert_eq!(tenant.map(|t| &*t.id), Some("solo"));
        let ten = "10.1.2.3".parse().expect("ip");
        assert!(matches!(
            t.credential(tenant, KeyClass::ShopKey, ten),
            Err(GatewayError::KeyNotConfigured(KeyClass::ShopKey))
        ));
    }

    #[test]
    fn mapped_ipv4_peers_match_ipv4_blocks() {
        let nets: Vec<IpNet> = vec!["127.0.0.0/8".parse().expect("net")];
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().expect("ip");
        assert!(allowed(Some(&nets), mapped).is_ok());
        assert!(allowed(Some(&nets), "::1".parse().expect("ip")).is_err());
    }
}
