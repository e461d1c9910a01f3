//! Routing: which request targets the gateway forwards, and which catalogue entry (hence which
//! key class) each one maps to. Everything else is answered here and never forwarded.

use http::{Method as HttpMethod, Uri};

use crate::catalogue::{Catalogue, KeyClass, Method, Prefix, split_path};
use crate::config::UnknownMethods;
use crate::error::GatewayError;

/// Where a request goes.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// The catalogue entry; `None` for a well-formed method the catalogue does not know.
    pub method: Option<&'static Method>,
    pub prefix: Prefix,
    pub key_class: KeyClass,
}

impl Route {
    /// The closed-set name for logs and metrics: the catalogue label or `other`.
    pub fn label(&self) -> &'static str {
        self.method.map_or("other", |m| &*m.label)
    }
}

/// Resolves a request target. The query string is never forwarded (eTelecom takes none).
pub fn resolve(
    method: &HttpMethod,
    uri: &Uri,
    unknown: UnknownMethods,
) -> Result<Route, GatewayError> {
    if method == HttpMethod::CONNECT {
        return Err(GatewayError::MethodNotAllowed);
    }
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(GatewayError::AbsoluteForm);
    }
    let path = uri.path();
    let (prefix, _) = split_path(path).ok_or(GatewayError::UnknownRoute)?;
    if method != HttpMethod::POST {
        return Err(GatewayError::MethodNotAllowed);
    }
    if let Some(m) = Catalogue::get().lookup(path) {
        return Ok(Route {
            method: Some(m),
            prefix,
            key_class: m.key_class,
        });
    }
    match unknown {
        UnknownMethods::Reject => Err(GatewayError::UnknownMethodRejected),
        UnknownMethods::Forward => Ok(Route {
            method: None,
            prefix,
            key_class: match prefix {
                Prefix::Shop => KeyClass::ApiKey,
                Prefix::Partner => KeyClass::ShopKey,
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: &str, target: &str) -> Result<Route, GatewayError> {
        resolve(
            &method.parse().expect("method"),
            &target.parse().expect("uri"),
            UnknownMethods::Forward,
        )
    }

    #[test]
    fn catalogue_paths_map_to_their_key_class() {
        let r = route("POST", "/v1/shop.Etelecom/GetExtensionInfo").expect("route");
        assert_eq!(r.key_class, KeyClass::ApiKey);
        assert_eq!(r.label(), "shop.Etelecom/GetExtensionInfo");
        let r = route("POST", "/v1/partner.Etelecom/GetExtensions").expect("route");
        assert_eq!(r.key_class, KeyClass::ShopKey);
        let r = route("POST", "/v1/partner.Etelecom/GetPartnerTenantList").expect("route");
        assert_eq!(r.key_class, KeyClass::Partner);
    }

    #[test]
    fn unknown_methods_follow_the_prefix_rule_or_are_rejected() {
        let r = route("POST", "/v1/shop.Etelecom/GetDriverConfig").expect("route");
        assert_eq!((r.key_class, r.label()), (KeyClass::ApiKey, "other"));
        let r = route("POST", "/v1/partner.Etelecom/PartnerRemoveHotline").expect("route");
        assert_eq!((r.key_class, r.label()), (KeyClass::ShopKey, "other"));
        let err = resolve(
            &HttpMethod::POST,
            &"/v1/shop.Etelecom/GetDriverConfig".parse().expect("uri"),
            UnknownMethods::Reject,
        )
        .unwrap_err();
        assert!(matches!(err, GatewayError::UnknownMethodRejected));
    }

    #[test]
    fn everything_else_is_answered_locally() {
        let cases: &[(&str, &str, u16)] = &[
            ("POST", "/", 404),
            ("POST", "/v1/admin.Etelecom/X", 404),
            (
                "POST",
                "/v1/shop.Etelecom/../partner.Misc/CurrentAccount",
                404,
            ),
            ("POST", "/v1/shop.Etelecom/%2e%2e", 404),
            ("POST", "/v1/shop.Etelecom/A/B", 404),
            ("GET", "/v1/shop.Etelecom/GetExtensionInfo", 405),
            ("DELETE", "/v1/shop.Etelecom/GetExtensionInfo", 405),
            ("GET", "/healthz", 404),
            (
                "POST",
                "http://evil.example/v1/shop.Etelecom/GetExtensionInfo",
                400,
            ),
        ];
        for (m, t, status) in cases {
            let err = route(m, t).unwrap_err();
            assert_eq!(err.status().as_u16(), *status, "{m} {t}");
        }
        let connect = resolve(
            &HttpMethod::CONNECT,
            &"api.etelecom.vn:443".parse().expect("authority-form"),
            UnknownMethods::Forward,
        )
        .unwrap_err();
        assert_eq!(connect.status().as_u16(), 405);
    }
}
