//! The eTelecom method table: for each gateway path, which credential it needs, where that
//! credential goes (a Bearer header or the JSON body's `username` / `password`), which upstream
//! serves it, whether it only reads, where its `expires_at` sits, which fields are secret and which
//! cached reads a success makes stale.
//!
//! The table is the project's own copy of the API notes (`catalogue/methods.json`), compiled into
//! the binary and parsed once. Two route families:
//! - the eTelecom API, `/v1/{shop,partner}.<Service>/<Method>`, served by `[upstream]` with a
//!   Bearer key;
//! - SMS brandname, whose entries are full `https://sms.etelecom.vn/api/<Service>/<Method>` URLs in
//!   the notes: the gateway serves them as `/sms/api/<Service>/<Method>`, forwards them to `[sms]`
//!   as `/api/<Service>/<Method>`, and puts the tenant's SMS account into the body.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use serde::Deserialize;

const METHODS_JSON: &str = include_str!("catalogue/methods.json");

/// The secret field that only counts as secret for one method (ConnectOA's OAuth `code`); `code`
/// elsewhere is eTelecom's error code, which logs need.
const METHOD_SCOPED_SECRETS: &[&str] = &["code"];

/// The SMS API's host, as the notes write it.
const SMS_HOST: &str = "https://sms.etelecom.vn";
/// The gateway path prefix of the SMS route family.
pub const SMS_PREFIX: &str = "/sms";
/// The JSON body fields an SMS credential is written into (username first, then password). They
/// are secret in every logged SMS request body.
pub const BODY_CREDENTIAL_FIELDS: [&str; 2] = ["username", "password"];

/// Which path family a request is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prefix {
    Shop,
    Partner,
    /// `/sms/api/<Service>/<Method>`: SMS brandname.
    Sms,
}

impl Prefix {
    /// The upstream that serves this family.
    pub fn target(self) -> Target {
        match self {
            Self::Shop | Self::Partner => Target::Api,
            Self::Sms => Target::Sms,
        }
    }
}

/// Which upstream serves a route: one `Upstream` client each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// `[upstream]`: the eTelecom API.
    Api,
    /// `[sms]`: the SMS brandname host.
    Sms,
}

/// Where a credential goes in the request sent upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Placement {
    /// `Authorization: Bearer <key>`.
    Header,
    /// The JSON body's [`BODY_CREDENTIAL_FIELDS`], set over whatever the caller sent; no
    /// `Authorization` header.
    Body,
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
    /// The tenant's SMS account (`username` + `password`), on `/sms/api/*`.
    Sms,
}

impl KeyClass {
    /// A stable label for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApiKey => "api_key",
            Self::ShopKey => "shop_key",
            Self::Partner => "partner",
            Self::Sms => "sms",
        }
    }

    /// Where this credential goes in the upstream request.
    pub fn placement(self) -> Placement {
        match self {
            Self::ApiKey | Self::ShopKey | Self::Partner => Placement::Header,
            Self::Sms => Placement::Body,
        }
    }

    pub(crate) fn missing_message(self) -> &'static str {
        match self {
            Self::ApiKey => "this method needs the tenant's api_key, which is not configured",
            Self::ShopKey => "this method needs the tenant's shop_key, which is not configured",
            Self::Partner => "this method needs the partner api_key, which is not configured",
            Self::Sms => {
                "this method needs the tenant's sms credentials (username and password), which are not configured"
            }
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
    /// The gateway path: `/v1/shop.Etelecom/GetExtensionInfo`, `/sms/api/OmniMessage/SendMessage`.
    pub path: Box<str>,
    /// `shop.Etelecom/GetExtensionInfo`, `sms.OmniMessage/SendMessage`: the closed-set name used
    /// in logs and metrics.
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
    /// Built once from the catalogue; looked up by callers' paths, never grown by them, so a
    /// fast seeded hash is enough.
    by_path: HashMap<Box<str>, MethodId, foldhash::fast::RandomState>,
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
        let mut raw: Vec<RawEntry> = serde_json::from_str(json).map_err(|e| e.to_string())?;
        // SMS entries are full URLs in the notes: they become gateway paths under `/sms`.
        for e in &mut raw {
            for p in std::iter::once(&mut e.path).chain(e.invalidates.iter_mut()) {
                if let Some(rest) = p.strip_prefix(SMS_HOST) {
                    *p = format!("{SMS_PREFIX}{rest}");
                }
            }
        }
        let mut by_path = HashMap::default();
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
                // The notes say "shop" for the tenant-specific SMS account.
                ("shop", Prefix::Sms) => KeyClass::Sms,
                (k, _) => return Err(format!("{}: key {k} on this prefix", e.path)),
            };
            let mut request_secrets = global_secrets.clone();
            if key_class.placement() == Placement::Body {
                for f in BODY_CREDENTIAL_FIELDS {
                    if !request_secrets.iter().any(|s| &**s == f) {
                        request_secrets.push(f.into());
                    }
                }
            }
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
            let label = match prefix {
                Prefix::Shop | Prefix::Partner => e.path["/v1/".len()..].into(),
                Prefix::Sms => format!("sms.{}/{}", rest.0, rest.1).into(),
            };
            methods.push(Method {
                id: MethodId(i as u16),
                label,
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
/// `GetExtensionInfo`), and `/sms/api/OmniMessage/SendMessage` into [`Prefix::Sms`] and
/// (`OmniMessage`, `SendMessage`). Service and method names are ASCII letters, digits and `_`.
pub fn split_path(path: &str) -> Option<(Prefix, (&str, &str))> {
    let (prefix, rest) = if let Some(rest) = path.strip_prefix("/v1/") {
        if let Some(r) = rest.strip_prefix("shop.") {
            (Prefix::Shop, r)
        } else if let Some(r) = rest.strip_prefix("partner.") {
            (Prefix::Partner, r)
        } else {
            return None;
        }
    } else {
        (
            Prefix::Sms,
            path.strip_prefix(SMS_PREFIX)?.strip_prefix("/api/")?,
        )
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
    fn builtin_catalogue_parses_both_route_families() {
        let c = Catalogue::get();
        assert_eq!(c.methods().len(), 71, "69 API methods and 2 SMS methods");
        let (sms, api): (Vec<&Method>, Vec<&Method>) =
            c.methods().iter().partition(|m| m.prefix == Prefix::Sms);
        assert_eq!(api.len(), 69);
        assert!(api.iter().all(|m| m.path.starts_with("/v1/")));
        assert!(
            api.iter()
                .all(|m| m.key_class.placement() == Placement::Header)
        );
        let paths: Vec<&str> = sms.iter().map(|m| &*m.path).collect();
        assert_eq!(
            paths,
            [
                "/sms/api/OmniMessage/SendMessage",
                "/sms/api/OmniReport/GetStatusOmni"
            ]
        );
    }

    #[test]
    fn sms_methods_take_body_credentials_from_the_sms_host() {
        let c = Catalogue::get();
        let send = c.lookup("/sms/api/OmniMessage/SendMessage").expect("send");
        assert_eq!(send.label.as_ref(), "sms.OmniMessage/SendMessage");
        assert_eq!(send.name.as_ref(), "SendMessage");
        assert_eq!(send.key_class, KeyClass::Sms);
        assert_eq!(send.key_class.placement(), Placement::Body);
        assert_eq!(send.prefix.target(), Target::Sms);
        assert!(!send.read_only, "SendMessage is a write");
        let status = c
            .lookup("/sms/api/OmniReport/GetStatusOmni")
            .expect("status");
        assert!(status.read_only);
        assert_eq!(status.expires_at, None, "cacheable only with a fixed TTL");
        for m in [send, status] {
            for f in BODY_CREDENTIAL_FIELDS {
                assert!(m.request_secrets.iter().any(|s| &**s == f), "{f}");
            }
        }
        assert!(
            !c.global_secrets().iter().any(|s| &**s == "username"),
            "username is secret on SMS methods only"
        );
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
        assert_eq!(
            split_path("/sms/api/OmniMessage/SendMessage"),
            Some((Prefix::Sms, ("OmniMessage", "SendMessage")))
        );
        for bad in [
            "/sms/OmniMessage/SendMessage",
            "/sms/api/OmniMessage/",
            "/sms/api/OmniMessage/A/B",
            "/sms/api/../v1/X",
            "/smsx/api/A/B",
        ] {
            assert!(split_path(bad).is_none(), "{bad}");
        }
    }
}
