//! What `POST /cache/purge` may drop, parsed strictly: a [`PurgeScope`] is either everything
//! (only when asked for with `{"all": true}`), one tenant (optionally one method of it), or one
//! method for every tenant. Anything else (an unknown field, a wrong type, an empty string, a
//! tenant or method the gateway does not know) is refused with the reason, and nothing is
//! purged.
//!
//! The scope is a plain serde type so that it can also travel between gateway instances (e.g.
//! published on a bus) and be applied the same way there.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::catalogue::Catalogue;
use crate::config::valid_tenant_id;

/// Which cached entries a purge drops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scope", rename_all = "snake_case", deny_unknown_fields)]
pub enum PurgeScope {
    /// Every entry of every tenant.
    All,
    /// The entries of one tenant; of one method only when `method` is set.
    Tenant {
        tenant: String,
        method: Option<String>,
    },
    /// One method's entries, for every tenant. `method` is a name (both prefixes) or a label
    /// (`shop.Etelecom/GetExtensionInfo`).
    Method { method: String },
}

impl PurgeScope {
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Self::Tenant { tenant, .. } => Some(tenant),
            Self::All | Self::Method { .. } => None,
        }
    }

    pub fn method(&self) -> Option<&str> {
        match self {
            Self::Tenant { method, .. } => method.as_deref(),
            Self::Method { method } => Some(method),
            Self::All => None,
        }
    }

    /// Parses a purge request: the fields come either from the query string
    /// (`?tenant=acme&method=GetExtensionInfo`, `?all=true`) or from a JSON object body
    /// (`{"tenant": "acme", "method": "..."}`, `{"all": true}`), never from both.
    /// `known_tenant` says whether a tenant id is configured.
    pub fn parse(
        query: Option<&str>,
        body: &[u8],
        known_tenant: impl Fn(&str) -> bool,
    ) -> Result<PurgeScope, &'static str> {
        let query = query.filter(|q| !q.is_empty());
        let body_given = !body.iter().all(u8::is_ascii_whitespace);
        let fields = match (query, body_given) {
            (Some(_), true) => {
                return Err("give the purge scope in the query string or in the body, not both");
            }
            (Some(q), false) => Fields::from_query(q)?,
            (None, true) => Fields::from_json(body)?,
            (None, false) => Fields::default(),
        };
        fields.scope(known_tenant)
    }
}

/// The fields of a purge request, each given at most once.
#[derive(Default)]
struct Fields {
    tenant: Option<String>,
    method: Option<String>,
    all: Option<bool>,
}

const UNKNOWN_FIELD: &str =
    "unknown field in purge request; expected \"tenant\", \"method\" or \"all\"";

impl Fields {
    fn from_query(q: &str) -> Result<Fields, &'static str> {
        let mut f = Fields::default();
        for pair in q.split('&') {
            let (k, v) = pair
                .split_once('=')
                .ok_or("every query parameter needs a value (name=value)")?;
            match k {
                "tenant" => set(&mut f.tenant, v.to_owned())?,
                "method" => set(&mut f.method, v.to_owned())?,
                "all" => match v {
                    "true" => set(&mut f.all, true)?,
                    _ => return Err("\"all\" must be true"),
                },
                _ => return Err(UNKNOWN_FIELD),
            }
        }
        Ok(f)
    }

    fn from_json(body: &[u8]) -> Result<Fields, &'static str> {
        let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
            return Err("purge body must be a JSON object");
        };
        let mut f = Fields::default();
        for (k, v) in map {
            match (k.as_str(), v) {
                ("tenant", Value::String(s)) => f.tenant = Some(s),
                ("tenant", _) => return Err("\"tenant\" must be a string"),
                ("method", Value::String(s)) => f.method = Some(s),
                ("method", _) => return Err("\"method\" must be a string"),
                ("all", Value::Bool(true)) => f.all = Some(true),
                ("all", _) => return Err("\"all\" must be true"),
                _ => return Err(UNKNOWN_FIELD),
            }
        }
        Ok(f)
    }

    fn scope(self, known_tenant: impl Fn(&str) -> bool) -> Result<PurgeScope, &'static str> {
        if let Some(t) = &self.tenant {
            if !valid_tenant_id(t) {
                return Err("\"tenant\" must be a tenant id (1-64 of A-Z a-z 0-9 . _ -)");
            }
            if !known_tenant(t) {
                return Err("\"tenant\" names no configured tenant");
            }
        }
        if let Some(m) = &self.method {
            let known = Catalogue::get()
                .methods()
                .iter()
                .any(|c| *c.name == **m || *c.label == **m);
            if !known {
                return Err(
                    "\"method\" must be a catalogue method name (GetExtensionInfo) or label (shop.Etelecom/GetExtensionInfo)",
                );
            }
        }
        match (self.all, self.tenant, self.method) {
            (Some(true), None, None) => Ok(PurgeScope::All),
            (Some(_), _, _) => Err("\"all\" cannot be combined with \"tenant\" or \"method\""),
            (None, Some(tenant), method) => Ok(PurgeScope::Tenant { tenant, method }),
            (None, None, Some(method)) => Ok(PurgeScope::Method { method }),
            (None, None, None) => Err(
                "say what to purge: \"tenant\", \"method\", both, or \"all\": true for everything",
            ),
        }
    }
}

/// Fills `slot` once; a repeated query parameter is refused.
fn set<T>(slot: &mut Option<T>, v: T) -> Result<(), &'static str> {
    if slot.replace(v).is_some() {
        return Err("a purge field is given more than once");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: Option<&str>, body: &str) -> Result<PurgeScope, &'static str> {
        PurgeScope::parse(query, body.as_bytes(), |t| t == "acme" || t == "globex")
    }

    fn tenant(t: &str, m: Option<&str>) -> PurgeScope {
        PurgeScope::Tenant {
            tenant: t.into(),
            method: m.map(str::to_owned),
        }
    }

    #[test]
    fn the_accepted_forms() {
        assert_eq!(parse(None, r#"{"all":true}"#), Ok(PurgeScope::All));
        assert_eq!(parse(Some("all=true"), ""), Ok(PurgeScope::All));
        assert_eq!(
            parse(None, r#"{"tenant":"acme"}"#),
            Ok(tenant("acme", None))
        );
        assert_eq!(parse(Some("tenant=acme"), ""), Ok(tenant("acme", None)));
        assert_eq!(
            parse(None, r#" {"tenant":"acme","method":"GetExtensionInfo"} "#),
            Ok(tenant("acme", Some("GetExtensionInfo")))
        );
        assert_eq!(
            parse(
                Some("method=shop.Etelecom/GetExtensionInfo&tenant=globex"),
                ""
            ),
            Ok(tenant("globex", Some("shop.Etelecom/GetExtensionInfo")))
        );
        assert_eq!(
            parse(None, r#"{"method":"GetShopOA"}"#),
            Ok(PurgeScope::Method {
                method: "GetShopOA".into()
            })
        );
    }

    #[test]
    fn everything_else_is_refused() {
        let bad_bodies = [
            "",
            "{}",
            r#"{"teant":"acme"}"#,
            r#"{"tenant":1}"#,
            r#"{"tenant":["acme"]}"#,
            r#"{"tenant":null}"#,
            r#"{"tenant":""}"#,
            r#"{"tenant":"nobody"}"#,
            r#"{"tenant":"bad id!"}"#,
            r#"{"method":"GetNothing"}"#,
            r#"{"method":""}"#,
            r#"{"all":false}"#,
            r#"{"all":"true"}"#,
            r#"{"all":true,"tenant":"acme"}"#,
            r#"["acme"]"#,
            "null",
            "1",
            "\"acme\"",
            "{",
        ];
        for b in bad_bodies {
            assert!(parse(None, b).is_err(), "{b:?}");
        }
        let bad_queries = [
            "tenant=",
            "teant=acme",
            "tenant",
            "tenant=acme&tenant=globex",
            "all=1",
            "all=true&method=GetShopOA",
            "tenant=nobody",
            "&",
        ];
        for q in bad_queries {
            assert!(parse(Some(q), "").is_err(), "{q:?}");
        }
        assert!(parse(Some("tenant=acme"), r#"{"tenant":"acme"}"#).is_err());
    }

    #[test]
    fn the_scope_round_trips_through_json() {
        for s in [
            PurgeScope::All,
            tenant("acme", None),
            tenant("acme", Some("GetExtensionInfo")),
            PurgeScope::Method {
                method: "GetShopOA".into(),
            },
        ] {
            let text = serde_json::to_string(&s).expect("serialise");
            assert_eq!(serde_json::from_str::<PurgeScope>(&text).expect("parse"), s);
        }
    }
}
