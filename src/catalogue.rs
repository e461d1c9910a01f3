//! The eTelecom method table: for each `/v1/{shop,partner}.<Service>/<Method>` path, which key it
//! needs, whether it only reads, where its `expires_at` sits, which fields are secret and which
//! cached reads a success makes stale.
//!
//! The table is the project's own copy of the API notes (`catalogue/methods.json`), compiled into
//! the binary and parsed once. The two `sms.etelecom.vn` entries are dropped: that product lives
//! on another host with body-borne credentials, so the gateway does not route it.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use serde::Deserialize;

const METHODS_JSON: &str = include_str!("catalogue/methods.json");

/// The secret field that only counts as secret for one method (ConnectOA's OAuth `code`); `code`
/// elsewhere is eTelecom's error code, which logs need.
const METHOD_SCOPED_SECRETS: &[&str] = &["code"];

/// Which path family a request is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prefix {
    Shop,
    Partner,
}

/// The credential a method needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyClass {
    /// The shop's own `api_key`, on `/v1/shop.*`.
    ApiKey,
    /// The partner-issued per-shop `shop_key`, on shop-scoped `/v1/partner.*` methods.
    ShopKey,
    /// The partner's own `api_key`, on partner-level `/v1/partner.*` methods (no tenant).
    Partner,
}

impl KeyClass {
    /// A stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::ShopKey => "shop_key",
            Self::Partner => "partner",
        }
    }

    pub(crate) fn missing_message(self) -> &'static str {
        match self {
            Self::ApiKey => "this method needs the tenant's api_key, which is not configured",
            Self::ShopKey => "this method needs the tenant's shop_key, which is not configured",
            Self::Partner => "this method needs the partner api_key, which is not configured",
        }
    }
}

impl fmt::Display for KeyClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a response's `expires_at` sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExpiresAt {
    Top,
    Items,
}

/// Index of a method in the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MethodId(pub u16);

/// One catalogue entry.
#[derive(Debug)]
pub struct Method {
    pub id: MethodId,
    /// `/v1/shop.Etelecom/GetExtensionInfo`
    pub path: Box<str>,
    /// `shop.Etelecom/GetExtensionInfo`: the closed-set name used in logs and metrics.
    pub label: Box<str>,
    /// `GetExtensionInfo`
    pub name: Box<str>,
    pub prefix: Prefix,
    pub key_class: KeyClass,
    pub read_only: bool,
    pub expires_at: Option<ExpiresAt>,
    /// Field names masked in logged request bodies (at any depth).
    pub request_secrets: Vec<Box<str>>,
    /// Field names masked in logged response bodies (at any depth).
    pub response_secrets: Vec<Box<str>>,
    /// Cached reads of the same tenant that a successful call makes stale.
    pub invalidates: Vec<MethodId>,
}

/// The whole table.
#[derive(Debug)]
pub struct Catalogue {
    methods: Vec<Method>,
    by_path: HashMap<Box<str>, MethodId>,
    /// Every secret field name of the catalogue except the method-scoped ones: masked in every
    /// logged body, whatever the method (unknown methods included).
    global_secrets: Vec<Box<str>>,
}

#[derive(Deserialize)]
struct RawEntry {
    path: String,
    key: String,
    read_only: bool,
    secret_fields: Vec<String>,
    expires_at: Option<ExpiresAt>,
    invalidates: Vec<String>,
}

impl Catalogue {
    /// The built-in catalogue, parsed on first use.
    pub fn get() -> &'static Catalogue {
        static CATALOGUE: OnceLock<Catalogue> = OnceLock::new();
        CATALOGUE.get_or_init(|| {
            // The JSON is compiled in and checked by the tests below; a failure here is a build
            // defect, not an input error.
            #[allow(clippy::expect_used)]
            Catalogue::parse(METHODS_JSON).expect("built-in catalogue is valid")
        })
    }

    fn parse(json: &str) -> Result<Catalogue, String> {
        let raw: Vec<RawEntry> = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let raw: Vec<RawEntry> = raw
            .into_iter()
            .filter(|e| e.path.starts_with("/v1/"))
            .collect();
        let mut by_path = HashMap::new();
        for (i, e) in raw.iter().enumerate() {
            let id = MethodId(u16::try_from(i).map_err(|_| "too many methods")?);
            if by_path
                .insert(e.path.clone().into_boxed_str(), id)
                .is_some()
            {
                return Err(format!("duplicate path {}", e.path));
            }
        }
        let leaf = |f: &str| -> (bool, Box<str>) {
            let is_request = f.starts_with("request.");
            let name = f.rsplit(['.', ']']).next().unwrap_or(f);
            (is_request, name.into())
        };
        let mut global_secrets: Vec<Box<str>> = Vec::new();
        for e in &raw {
            for f in &e.secret_fields {
                let (_, name) = leaf(f);
                if !METHOD_SCOPED_SECRETS.contains(&&*name) && !global_secrets.contains(&name) {
                    global_secrets.push(name);
                }
            }
        }
        let mut methods = Vec::with_capacity(raw.len());
        for (i, e) in raw.into_iter().enumerate() {
            let (prefix, rest) = split_path(&e.path).ok_or(format!("bad path {}", e.path))?;
            let key_class = match (e.key.as_str(), prefix) {
                ("partner", Prefix::Partner) => KeyClass::Partner,
                ("shop", Prefix::Partner) => KeyClass::ShopKey,
                ("shop", Prefix::Shop) => KeyClass::ApiKey,
                (k, _) => return Err(format!("{}: key {k} on this prefix", e.path)),
            };
            let mut request_secrets = global_secrets.clone();
            let mut response_secrets = global_secrets.clone();
            for f in &e.secret_fields {
                let (is_request, name) = leaf(f);
                let list = if is_request {
                    &mut request_secrets
                } else {
                    &mut response_secrets
                };
                if !list.contains(&name) {
                    list.push(name);
                }
            }
            let invalidates = e
                .invalidates
                .iter()
                .map(|p| {
                    by_path
                        .get(p.as_str())
                        .copied()
                        .ok_or(format!("{}: invalidates unknown {p}", e.path))
                })
                .collect::<Result<Vec<_>, _>>()?;
            methods.push(Method {
                id: MethodId(i as u16),
                label: e.path["/v1/".len()..].into(),
                name: rest.1.into(),
                path: e.path.into_boxed_str(),
                prefix,
                key_class,
                read_only: e.read_only,
                expires_at: e.expires_at,
                request_secrets,
                response_secrets,
                invalidates,
            });
        }
        Ok(Catalogue {
            methods,
            by_path,
            global_secrets,
        })
    }

    pub fn lookup(&self, path: &str) -> Option<&Method> {
        self.by_path
            .get(path)
            .map(|id| &self.methods[usize::from(id.0)])
    }

    pub fn method(&self, id: MethodId) -> &Method {
        &self.methods[usize::from(id.0)]
    }

    pub fn methods(&self) -> &[Method] {
        &self.methods
    }

    /// The secret field names masked in any logged body.
    pub fn global_secrets(&self) -> &[Box<str>] {
        &self.global_secrets
    }
}

/// Splits `/v1/shop.Etelecom/GetExtensionInfo` into its prefix and (`Etelecom`,
/// `GetExtensionInfo`). Service and method names are ASCII letters, digits and `_`.
pub fn split_path(path: &str) -> Option<(Prefix, (&str, &str))> {
    let rest = path.strip_prefix("/v1/")?;
    let (prefix, rest) = if let Some(r) = rest.strip_prefix("shop.") {
        (Prefix::Shop, r)
    } else if let Some(r) = rest.strip_prefix("partner.") {
        (Prefix::Partner, r)
    } else {
        return None;
    };
    let (service, method) = rest.split_once('/')?;
    let ident = |s: &str| {
        !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    };
    (ident(service) && ident(method)).then_some((prefix, (service, method)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_catalogue_parses_and_keeps_only_api_paths() {
        let c = Catalogue::get();
        assert_eq!(c.methods().len(), 69, "71 entries less the two SMS ones");
        assert!(c.methods().iter().all(|m| m.path.starts_with("/v1/")));
    }

    #[test]
    fn key_classes_follow_the_path_and_the_docs() {
        let c = Catalogue::get();
        let class = |p: &str| c.lookup(p).expect(p).key_class;
        assert_eq!(
            class("/v1/shop.Etelecom/GetExtensionInfo"),
            KeyClass::ApiKey
        );
        assert_eq!(
            class("/v1/partner.Etelecom/GetExtensionInfo"),
            KeyClass::ShopKey
        );
        for partner_level in [
            "/v1/partner.Misc/CurrentAccount",
            "/v1/partner.Shop/AuthorizeShop",
            "/v1/partner.Shop/CreateShopAccount",
            "/v1/partner.Etelecom/GetPartnerTenantList",
            "/v1/partner.Etelecom/PartnerAddHotline",
            "/v1/partner.Etelecom/GetPartnerHotlineList",
            "/v1/partner.Etelecom/PartnerActivateTenant",
        ] {
            assert_eq!(class(partner_level), KeyClass::Partner, "{partner_level}");
        }
        let partner_count = c
            .methods()
            .iter()
            .filter(|m| m.key_class == KeyClass::Partner)
            .count();
        assert_eq!(partner_count, 7);
    }

    #[test]
    fn secrets_are_collected_by_leaf_name_and_code_is_method_scoped() {
        let c = Catalogue::get();
        let g: Vec<&str> = c.global_secrets().iter().map(|s| &**s).collect();
        for name in [
            "extension_password",
            "password",
            "auth_token",
            "auth_url",
            "api_key",
            "shop_key",
            "app_secret",
        ] {
            assert!(g.contains(&name), "{name} in {g:?}");
        }
        assert!(!g.contains(&"code"));
        let connect = c.lookup("/v1/shop.Zalo/ConnectOA").expect("ConnectOA");
        assert!(connect.request_secrets.iter().any(|s| &**s == "code"));
        assert!(!connect.response_secrets.iter().any(|s| &**s == "code"));
    }

    #[test]
    fn invalidations_resolve_to_read_only_methods() {
        let c = Catalogue::get();
        let create = c
            .lookup("/v1/partner.Etelecom/CreateExtension")
            .expect("CreateExtension");
        let names: Vec<&str> = create
            .invalidates
            .iter()
            .map(|id| &*c.method(*id).label)
            .collect();
        assert!(names.contains(&"shop.Etelecom/GetExtensionInfo"));
        assert!(names.contains(&"partner.Etelecom/GetExtensions"));
        for m in c.methods() {
            for id in &m.invalidates {
                assert!(c.method(*id).read_only, "{} invalidates a write", m.path);
            }
        }
    }

    #[test]
    fn split_path_accepts_only_the_two_prefixes_and_plain_names() {
        assert_eq!(
            split_path("/v1/shop.Zalo/ListOA"),
            Some((Prefix::Shop, ("Zalo", "ListOA")))
        );
        assert!(split_path("/v1/admin.Etelecom/X").is_none());
        assert!(split_path("/v1/shop.Etelecom/A/B").is_none());
        assert!(split_path("/v1/shop.Etelecom/").is_none());
        assert!(split_path("/v1/shop.Et%2Fx/A").is_none());
        assert!(split_path("/v2/shop.Etelecom/A").is_none());
    }
}
