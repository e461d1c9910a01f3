//! Routing: which request targets the gateway forwards, and which catalogue entry (hence which
//! key class and which upstream) each one maps to. Everything else is answered here and never forwarded.
//!
//! HTTP/1.1 and HTTP/2 (h2c or h2) are routed the same way. The request target must be in
//! origin form (`/v1/...`): on HTTP/1 a scheme or authority in the target is an absolute-form
//! request and refused; on HTTP/2 the scheme and `:authority` pseudo-headers are always there
//! and are the Host. The Host must be given exactly once: one `Host` header on HTTP/1.1 (HTTP/1.0
//! may omit it), and on HTTP/2 `:authority` or one `Host`, equal when both are sent.

use http::{HeaderMap, Method as HttpMethod, Uri, Version, header, request};

use crate::catalogue::{Catalogue, KeyClass, Method, Prefix, SMS_PREFIX, split_path};
use crate::config::UnknownMethods;
use crate::error::GatewayError;
use crate::metrics::MethodMetric;

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
        self.metric().label()
    }

    /// The method as the metrics and the access log see it (label and catalogue id).
    pub fn metric(&self) -> MethodMetric {
        MethodMetric::route(self.method)
    }

    /// The path sent upstream for the gateway path `path`: unchanged on the eTelecom API, without
    /// the `/sms` prefix on the SMS host.
    pub fn upstream_path<'p>(&self, path: &'p str) -> &'p str {
        match self.prefix {
            Prefix::Shop | Prefix::Partner => path,
            Prefix::Sms => path.strip_prefix(SMS_PREFIX).unwrap_or(path),
        }
    }
}

/// Resolves a request: its target form and Host first ([`check_target`]), then its path. The
/// query string is never forwarded (eTelecom takes none).
pub fn resolve(parts: &request::Parts, unknown: UnknownMethods) -> Result<Route, GatewayError> {
    if parts.method == HttpMethod::CONNECT {
        return Err(GatewayError::MethodNotAllowed);
    }
    if parts
        .extensions
        .get::<crate::server::FragmentInTarget>()
        .is_some()
    {
        return Err(GatewayError::FragmentInTarget);
    }
    check_target(parts.version, &parts.uri, &parts.headers)?;
    resolve_path(&parts.method, parts.uri.path(), unknown)
}

/// The target form and the Host, by HTTP version (see the module docs).
pub fn check_target(version: Version, uri: &Uri, headers: &HeaderMap) -> Result<(), GatewayError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(GatewayError::ConflictingHost);
    }
    if version == Version::HTTP_2 || version == Version::HTTP_3 {
        return match (uri.authority(), host) {
            (None, None) => Err(GatewayError::MissingHost),
            (Some(a), Some(h)) if !a.as_str().eq_ignore_ascii_case(h.to_str().unwrap_or("")) => {
                Err(GatewayError::ConflictingHost)
            }
            _ => Ok(()),
        };
    }
    if uri.scheme().is_some() || uri.authority().is_some() {
        return Err(GatewayError::AbsoluteForm);
    }
    if host.is_none() && version != Version::HTTP_10 && version != Version::HTTP_09 {
        return Err(GatewayError::MissingHost);
    }
    Ok(())
}

/// Routes an origin-form path.
pub fn resolve_path(
    method: &HttpMethod,
    path: &str,
    unknown: UnknownMethods,
) -> Result<Route, GatewayError> {
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
                Prefix::Sms => KeyClass::Sms,
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, target: &str, version: Version, hosts: &[&str]) -> request::Parts {
        let mut req = http::Request::builder()
            .method(method)
            .uri(target)
            .version(version);
        for h in hosts {
            req = req.header(header::HOST, *h);
        }
        req.body(()).expect("request").into_parts().0
    }

    fn route(method: &str, target: &str) -> Result<Route, GatewayError> {
        let p = parts(method, target, Version::HTTP_11, &["gw"]);
        resolve(&p, UnknownMethods::Forward)
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
        let err = resolve_path(
            &HttpMethod::POST,
            "/v1/shop.Etelecom/GetDriverConfig",
            UnknownMethods::Reject,
        )
        .unwrap_err();
        assert!(matches!(err, GatewayError::UnknownMethodRejected));
    }

    #[test]
    fn sms_paths_map_to_the_sms_class_and_lose_their_prefix_upstream() {
        let path = "/sms/api/OmniMessage/SendMessage";
        let r = route("POST", path).expect("route");
        assert_eq!(r.key_class, KeyClass::Sms);
        assert_eq!(r.label(), "sms.OmniMessage/SendMessage");
        assert_eq!(r.upstream_path(path), "/api/OmniMessage/SendMessage");
        let r = route("POST", "/sms/api/OmniMessage/SendBulk").expect("route");
        assert_eq!((r.key_class, r.label()), (KeyClass::Sms, "other"));
        let api = route("POST", "/v1/shop.Misc/CurrentAccount").expect("route");
        assert_eq!(
            api.upstream_path("/v1/shop.Misc/CurrentAccount"),
            "/v1/shop.Misc/CurrentAccount"
        );
        let err = resolve_path(
            &HttpMethod::POST,
            "/sms/api/OmniMessage/SendBulk",
            UnknownMethods::Reject,
        )
        .unwrap_err();
        assert!(matches!(err, GatewayError::UnknownMethodRejected));
        for bad in ["/sms", "/sms/api", "/sms/api/OmniMessage", "/sms/x/A/B"] {
            assert_eq!(
                route("POST", bad).unwrap_err().status().as_u16(),
                404,
                "{bad}"
            );
        }
        assert_eq!(route("GET", path).unwrap_err().status().as_u16(), 405);
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
            &parts("CONNECT", "api.etelecom.vn:443", Version::HTTP_11, &["gw"]),
            UnknownMethods::Forward,
        )
        .unwrap_err();
        assert_eq!(connect.status().as_u16(), 405);
    }

    #[test]
    fn host_rules_by_version() {
        const PATH: &str = "/v1/shop.Etelecom/GetExtensionInfo";
        const ABS: &str = "http://gw/v1/shop.Etelecom/GetExtensionInfo";
        let check = |target: &str, v: Version, hosts: &[&str]| {
            let p = parts("POST", target, v, hosts);
            check_target(p.version, &p.uri, &p.headers)
        };
        assert!(check(PATH, Version::HTTP_11, &["gw"]).is_ok());
        assert!(check(PATH, Version::HTTP_10, &[]).is_ok());
        assert!(matches!(
            check(PATH, Version::HTTP_11, &[]),
            Err(GatewayError::MissingHost)
        ));
        for v in [Version::HTTP_10, Version::HTTP_11, Version::HTTP_2] {
            assert!(
                matches!(
                    check(PATH, v, &["gw", "gw"]),
                    Err(GatewayError::ConflictingHost)
                ),
                "{v:?}"
            );
        }
        // HTTP/2: :authority is the host; a Host header must agree with it.
        assert!(check(ABS, Version::HTTP_2, &[]).is_ok());
        assert!(check(ABS, Version::HTTP_2, &["GW"]).is_ok());
        assert!(check(PATH, Version::HTTP_2, &["gw"]).is_ok());
        assert!(matches!(
            check(PATH, Version::HTTP_2, &[]),
            Err(GatewayError::MissingHost)
        ));
        assert!(matches!(
            check(ABS, Version::HTTP_2, &["other"]),
            Err(GatewayError::ConflictingHost)
        ));
        // HTTP/1.1: absolute form stays refused.
        assert!(matches!(
            check(ABS, Version::HTTP_11, &["gw"]),
            Err(GatewayError::AbsoluteForm)
        ));
    }

    mod props {
        use super::super::*;
        use crate::catalogue::Catalogue;
        use proptest::prelude::*;

        /// The forwarding grammar, written independently of the router:
        /// `/v1/{shop,partner}.<Service>/<Method>` and the SMS family
        /// `/sms/api/<Service>/<Method>`, identifiers of 1–64 `A-Z a-z 0-9 _`.
        fn forwardable(path: &str) -> bool {
            let ident = |s: &str| {
                (1..=64).contains(&s.len())
                    && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            };
            let segments: Vec<&str> = path.split('/').collect();
            match segments[..] {
                ["", "v1", family, method] => family.split_once('.').is_some_and(|(p, service)| {
                    (p == "shop" || p == "partner") && ident(service) && ident(method)
                }),
                ["", "sms", "api", service, method] => ident(service) && ident(method),
                _ => false,
            }
        }

        /// Near misses: a catalogue path with one character inserted, removed or replaced,
        /// or a prefix and a random tail.
        fn target() -> impl Strategy<Value = String> {
            let paths: Vec<String> = Catalogue::get()
                .methods()
                .iter()
                .map(|m| m.path.to_string())
                .collect();
            let mutated = (
                proptest::sample::select(paths),
                any::<prop::sample::Index>(),
                "[A-Za-z0-9_./%?#:@ -]",
                0u8..3,
            )
                .prop_map(|(p, at, c, how)| {
                    let mut chars: Vec<char> = p.chars().collect();
                    let i = at.index(chars.len());
                    match how {
                        0 => chars.splice(i..i, c.chars()).for_each(drop),
                        1 => {
                            chars.remove(i);
                        }
                        _ => chars.splice(i..=i, c.chars()).for_each(drop),
                    }
                    chars.into_iter().collect()
                });
            let random = (
                prop_oneof![
                    Just("/v1/shop."),
                    Just("/v1/partner."),
                    Just("/v1/"),
                    Just("/"),
                    Just("//v1/shop."),
                    Just("/sms/api/"),
                    Just("/sms/"),
                ],
                "[A-Za-z0-9_./%?#-]{0,40}",
            )
                .prop_map(|(p, t)| format!("{p}{t}"));
            prop_oneof![mutated, random]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Whatever the target, the path that would be forwarded (the URI's path, never the
            /// query) is in the grammar, and with `unknown_methods = "reject"` in the catalogue.
            #[test]
            fn nothing_outside_the_grammar_is_forwarded(target in target()) {
                let Ok(uri) = target.parse::<Uri>() else {
                    return Ok(());
                };
                let Ok(req) = http::Request::post(uri.clone()).header(header::HOST, "gw").body(()) else {
                    return Ok(());
                };
                let (p, ()) = req.into_parts();
                match resolve(&p, UnknownMethods::Forward) {
                    Ok(_) => prop_assert!(forwardable(uri.path()), "{} routed", uri.path()),
                    Err(_) => prop_assert!(
                        !forwardable(uri.path()) || uri.authority().is_some(),
                        "{} refused", target
                    ),
                }
                if resolve(&p, UnknownMethods::Reject).is_ok() {
                    prop_assert!(Catalogue::get().lookup(uri.path()).is_some());
                }
            }
        }
    }
}
