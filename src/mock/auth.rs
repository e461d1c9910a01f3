//! Routing and authentication rules of the mock eTelecom: which paths exist
//! (`/v1/{shop,partner}.<Service>/<Method>`), which Content-Type is accepted
//! and which bearer key type each path type admits (API notes 1.2, 1.3).

use http::HeaderMap;
use http::header::{AUTHORIZATION, CONTENT_TYPE};

use super::{MockAccounts, MockKeyType};

/// Services eTelecom exposes (routes are case-sensitive: `Etelecom`, not `ETelecom`).
const SERVICES: [&str; 4] = ["Misc", "Shop", "Etelecom", "Zalo"];

/// `/v1/partner.*` methods that take the partner's own key; every other
/// `/v1/partner.*` method takes a partner-issued `shop_key`.
const PARTNER_LEVEL: [(&str, &str); 7] = [
    ("Misc", "CurrentAccount"),
    ("Shop", "AuthorizeShop"),
    ("Shop", "CreateShopAccount"),
    ("Etelecom", "GetPartnerTenantList"),
    ("Etelecom", "PartnerAddHotline"),
    ("Etelecom", "GetPartnerHotlineList"),
    ("Etelecom", "PartnerActivateTenant"),
];

/// Which credential a path requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum PathKind {
    /// `/v1/shop.*`: the shop's own `api_key`.
    Shop,
    /// Partner-level `/v1/partner.*` methods: the partner key.
    PartnerLevel,
    /// Shop-scoped `/v1/partner.*` methods: a `shop<id>:<secret>` shop_key.
    PartnerShop,
}

/// A well-formed eTelecom method path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Route<'a> {
    pub kind: PathKind,
    pub service: &'a str,
    pub method: &'a str,
}

fn is_ident(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && s.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Parses `/v1/shop.<Service>/<Method>` or `/v1/partner.<Service>/<Method>`.
pub(super) fn parse_route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix("/v1/")?;
    let (prefixed_service, method) = rest.split_once('/')?;
    let (prefix, service) = prefixed_service.split_once('.')?;
    if !SERVICES.contains(&service) || !is_ident(method) {
        return None;
    }
    let kind = match prefix {
        "shop" => PathKind::Shop,
        "partner" if PARTNER_LEVEL.contains(&(service, method)) => PathKind::PartnerLevel,
        "partner" => PathKind::PartnerShop,
        _ => return None,
    };
    Some(Route {
        kind,
        service,
        method,
    })
}

/// Twirp's Content-Type check: the media type (before any `;`) must be
/// `application/json`, case-insensitively. Returns the error message otherwise.
pub(super) fn content_type_error(headers: &HeaderMap) -> Option<String> {
    let raw = headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let media = raw.split(';').next().unwrap_or_default().trim();
    if media.eq_ignore_ascii_case("application/json") {
        None
    } else {
        Some(format!("unexpected Content-Type: {raw:?}"))
    }
}

/// Which account a bearer token belongs to, regardless of the path.
pub(super) fn identify_token(accounts: &MockAccounts, token: &str) -> Option<MockKeyType> {
    if token == accounts.partner_key {
        return Some(MockKeyType::Partner);
    }
    accounts.shops.iter().find_map(|shop| {
        if token == shop.api_key {
            Some(MockKeyType::ShopApiKey {
                shop: shop.id.clone(),
            })
        } else if token == shop.shop_key {
            Some(MockKeyType::ShopKey {
                shop: shop.id.clone(),
            })
        } else {
            None
        }
    })
}

/// Applies eTelecom's ACL: the key type must match the path type.
/// `Err` carries the `msg` of the 401 `unauthenticated` answer.
pub(super) fn authenticate(
    accounts: &MockAccounts,
    kind: PathKind,
    headers: &HeaderMap,
) -> Result<MockKeyType, &'static str> {
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err("missing Authorization header");
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or("Authorization header must be \"Bearer <key>\"")?;
    let key = identify_token(accounts, token).ok_or("invalid api key")?;
    let allowed = matches!(
        (kind, &key),
        (PathKind::Shop, MockKeyType::ShopApiKey { .. })
            | (PathKind::PartnerLevel, MockKeyType::Partner)
            | (PathKind::PartnerShop, MockKeyType::ShopKey { .. })
    );
    if allowed {
        Ok(key)
    } else {
        Err(match kind {
            PathKind::Shop => "this method requires a shop api_key",
            PathKind::PartnerLevel => "this method requires the partner api_key",
            PathKind::PartnerShop => "this method requires a partner-issued shop_key",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_classified_by_path() {
        let r = parse_route("/v1/shop.Etelecom/GetExtensions").expect("route");
        assert_eq!(r.kind, PathKind::Shop);
        assert_eq!((r.service, r.method), ("Etelecom", "GetExtensions"));
        let r = parse_route("/v1/partner.Misc/CurrentAccount").expect("route");
        assert_eq!(r.kind, PathKind::PartnerLevel);
        let r = parse_route("/v1/partner.Etelecom/GetExtensionInfo").expect("route");
        assert_eq!(r.kind, PathKind::PartnerShop);
        for bad in [
            "/v1/shop.ETelecom/GetExtensions",
            "/v1/shop.Etelecom/",
            "/v1/shop.Etelecom/Get/Extensions",
            "/v1/user.Misc/CurrentAccount",
            "/v2/shop.Misc/CurrentAccount",
            "/v1/shop.Misc/currentAccount",
            "/",
        ] {
            assert_eq!(parse_route(bad), None, "{bad}");
        }
    }

    #[test]
    fn content_type_media_type_only() {
        let mut h = HeaderMap::new();
        assert_eq!(
            content_type_error(&h).as_deref(),
            Some("unexpected Content-Type: \"\"")
        );
        h.insert(
            CONTENT_TYPE,
            http::HeaderValue::from_static("Application/JSON; charset=utf-8"),
        );
        assert_eq!(content_type_error(&h), None);
        h.insert(CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
        assert_eq!(
            content_type_error(&h).as_deref(),
            Some("unexpected Content-Type: \"text/plain\"")
        );
    }
}
