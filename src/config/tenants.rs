//! The key-holding sections: `[partner]` and every `[[tenants]]` entry (its `api_key`,
//! `shop_key`, `sms = { username, password }`, `allowed_callers` and rate-limit overrides).

use super::{Parser, PartnerConfig, Section, TenantConfig, valid_tenant_id};
use crate::secret::{ApiKey, SmsCredentials};
use toml::Value;

impl Parser<'_> {
    pub(super) fn partner(&mut self, mut s: Section) -> Option<PartnerConfig> {
        let present = s.table.contains_key("api_key");
        let api_key = s.secret(self, "api_key");
        let allowed_callers = s.cidrs(self, "allowed_callers");
        let rate_limit = self.rate_override(&mut s, "rate_limit");
        s.finish(self);
        if !present {
            self.problem("partner.api_key", "is required in [partner]".into());
        }
        let api_key = api_key?;
        self.check_shape(&api_key, false, "partner.api_key");
        Some(PartnerConfig {
            api_key,
            allowed_callers,
            rate_limit,
        })
    }

    /// Whether a problem was already reported at `path` or below it.
    pub(super) fn mentions(&self, path: &str) -> bool {
        self.problems.iter().any(|p| {
            p.strip_prefix(path)
                .is_some_and(|rest| rest.starts_with([':', '.', '[']))
        })
    }

    pub(super) fn tenants(&mut self, root: &mut Section) -> Vec<TenantConfig> {
        let Some(v) = root.table.remove("tenants") else {
            return Vec::new();
        };
        let Value::Array(items) = v else {
            self.problem("tenants", "must be an array of tables ([[tenants]])".into());
            return Vec::new();
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.into_iter().enumerate() {
            let path = format!("tenants[{i}]");
            let Value::Table(table) = item else {
                self.problem(&path, "must be a table".into());
                continue;
            };
            let mut s = Section { path, table };
            let id: Option<String> = s.take(self, "id");
            let id = match id {
                None if !self.mentions(&s.key_path("id")) => {
                    self.problem(&s.key_path("id"), "is required".into());
                    None
                }
                None => None,
                Some(id) if !valid_tenant_id(&id) => {
                    self.problem(
                        &s.key_path("id"),
                        format!("{id:?} must be 1-64 characters of A-Z a-z 0-9 . _ -"),
                    );
                    None
                }
                Some(id) if !self.tenant_ids.insert(id.clone()) => {
                    self.problem(&s.key_path("id"), format!("duplicate tenant id {id:?}"));
                    None
                }
                Some(id) => Some(id),
            };
            let had_key_field = ["api_key", "shop_key", "sms"]
                .iter()
                .any(|k| s.table.contains_key(*k));
            let had_sms = s.table.contains_key("sms");
            let api_key = s.secret(self, "api_key");
            let shop_key = s.secret(self, "shop_key");
            let sms = s
                .optional_table(self, "sms")
                .and_then(|t| self.sms_account(t));
            if !had_key_field {
                self.problem(
                    &s.path,
                    "has no key at all: set api_key (for /v1/shop.*), shop_key (for /v1/partner.*) and/or sms (for /sms/api/*)"
                        .into(),
                );
            }
            let allowed_callers = s.cidrs(self, "allowed_callers");
            let rate_limit = self.rate_override(&mut s, "rate_limit");
            let sms_rate_limit = self.rate_override(&mut s, "sms_rate_limit");
            if let Some(k) = &api_key {
                self.check_shape(k, false, &s.key_path("api_key"));
            }
            if let Some(k) = &shop_key {
                self.check_shape(k, true, &s.key_path("shop_key"));
            }
            if sms_rate_limit.is_some() && !had_sms {
                self.warnings.push(format!(
                    "{}: is set but the tenant has no sms credentials",
                    s.key_path("sms_rate_limit")
                ));
            }
            let path = s.path.clone();
            s.finish(self);
            if let Some(id) = id.filter(|_| !self.mentions(&path)) {
                out.push(TenantConfig {
                    id: id.as_str().into(),
                    api_key,
                    shop_key,
                    sms,
                    allowed_callers,
                    rate_limit,
                    sms_rate_limit,
                });
            }
        }
        out
    }

    /// `sms = { username = { .. }, password = { .. } }`: both required, both secret references.
    fn sms_account(&mut self, mut s: Section) -> Option<SmsCredentials> {
        let mut field = |p: &mut Self, key: &str| {
            if !s.table.contains_key(key) {
                p.problem(&s.key_path(key), "is required".into());
                return None;
            }
            s.secret_text(p, key)
        };
        let username = field(self, "username");
        let password = field(self, "password");
        s.finish(self);
        Some(SmsCredentials {
            username: username?,
            password: password?,
        })
    }

    fn check_shape(&mut self, key: &ApiKey, shop_key: bool, path: &str) {
        if !key.looks_like(shop_key) {
            let want = if shop_key {
                "shop<id>:<secret>"
            } else {
                "<id>:<secret>"
            };
            self.warnings.push(format!(
                "{path}: the key does not have the shape eTelecom issues for this use ({want}); eTelecom may refuse it"
            ));
        }
    }
}
