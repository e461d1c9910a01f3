//! The TOML configuration: parsed field by field into a validated [`Config`], with every problem
//! collected under its key path so that one run reports them all.
//!
//! Each known key is taken out of its table and converted on its own; what is left in a table
//! afterwards is an unknown key. Secrets are resolved here (through a [`SecretSource`], so tests
//! need no process environment) and the optional CA file is read here: once a `Config` exists,
//! nothing else has to touch the file system. Parsing starts from a string; [`Config::load`] only
//! adds reading the file.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderName;
use http::uri::{Authority, Scheme, Uri};
use ipnet::IpNet;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::de::DeserializeOwned;
use toml::{Table, Value};

use crate::secret::{ApiKey, SecretRef, SecretSource, SecretText, SmsCredentials};

mod cluster;
mod limits;
mod ops;
mod tenants;
mod timeouts;
mod view;
pub use cluster::{ClusterConfig, OnUnavailable};
pub use limits::{CacheConfig, RateLimitConfig, RateMode, RatePolicy};
pub use ops::{AdminConfig, MetricsConfig, ReloadConfig, ShutdownConfig};
pub use timeouts::ServerTimeouts;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    /// `[sms]`: the SMS brandname host. `None` (no section) turns the `/sms` routes off.
    pub sms: Option<UpstreamConfig>,
    pub routing: RoutingConfig,
    pub partner: Option<PartnerConfig>,
    pub tenants: Vec<TenantConfig>,
    pub rate_limit: RateLimitConfig,
    pub cache: CacheConfig,
    pub admin: AdminConfig,
    pub shutdown: ShutdownConfig,
    pub reload: ReloadConfig,
    pub metrics: MetricsConfig,
    /// `[cluster]`: fleet mode through Redis. `None` = one process on its own.
    pub cluster: Option<ClusterConfig>,
    /// Every file this config was read from: the config file itself (when loaded from one), the
    /// secret files (SMS credentials included) and the CA files. A change to any of them triggers
    /// a reload.
    pub files: Vec<PathBuf>,
    /// Things that are allowed but probably wrong (a key of an unexpected shape). Never secret.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub tenant_header: HeaderName,
    pub default_tenant: Option<Arc<str>>,
    pub allowed_callers: Vec<IpNet>,
    pub max_body_bytes: u64,
    pub max_connections: usize,
    /// From accept (or a later request's first byte) to a complete request head.
    pub header_read_timeout: Duration,
    pub max_header_bytes: usize,
    /// Deepest nesting of arrays and objects accepted in a request body (the body's own
    /// object is depth 1).
    pub max_json_depth: usize,
    /// Body, keep-alive and HTTP/2 PING timeouts.
    pub timeouts: ServerTimeouts,
}

#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub scheme: Scheme,
    pub authority: Authority,
    /// A path the base URL carries, without trailing slash (usually empty).
    pub path_prefix: Box<str>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Trust the operating system's roots too (besides the built-in Mozilla set).
    pub system_roots: bool,
    pub max_response_bytes: u64,
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownMethods {
    Forward,
    Reject,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RoutingConfig {
    pub unknown_methods: UnknownMethods,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PartnerConfig {
    pub api_key: ApiKey,
    pub allowed_callers: Option<Vec<IpNet>>,
    /// Overrides `[rate_limit]` for the partner key's one shared bucket.
    pub rate_limit: Option<RatePolicy>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TenantConfig {
    pub id: Arc<str>,
    pub api_key: Option<ApiKey>,
    pub shop_key: Option<ApiKey>,
    /// The SMS brandname account injected into `/sms/api/*` bodies.
    pub sms: Option<SmsCredentials>,
    pub allowed_callers: Option<Vec<IpNet>>,
    /// Overrides `[rate_limit]` for each of this tenant's buckets.
    pub rate_limit: Option<RatePolicy>,
    /// Overrides the policy of the tenant's SMS bucket (else `rate_limit`, else `[rate_limit]`).
    pub sms_rate_limit: Option<RatePolicy>,
}

/// Every problem found in a config, each under its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "invalid configuration ({}):",
            plural(self.problems.len(), "problem")
        )?;
        for p in &self.problems {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_TENANT_HEADER: &str = "x-tenant-id";
pub const DEFAULT_BASE_URL: &str = "https://api.etelecom.vn";
pub const DEFAULT_SMS_BASE_URL: &str = "https://sms.etelecom.vn";

/// Header names a tenant header may not take: the gateway sets or strips them itself.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "content-type",
    "content-length",
    "transfer-encoding",
    "connection",
    "x-request-id",
    "traceparent",
];

impl Config {
    /// Reads and validates the file at `path`; relative paths inside it are resolved against its
    /// folder.
    pub fn load(path: &Path, source: &dyn SecretSource) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![format!("cannot read config file {}: {e}", path.display())],
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut cfg = Config::parse(&text, base, source)?;
        cfg.files.insert(0, path.to_path_buf());
        Ok(cfg)
    }

    /// Parses and validates config text.
    pub fn parse(
        text: &str,
        base_dir: &Path,
        source: &dyn SecretSource,
    ) -> Result<Config, ConfigError> {
        let root: Table = toml::from_str(text).map_err(|e| ConfigError {
            problems: vec![toml_syntax(text, &e)],
        })?;
        let mut p = Parser {
            problems: Vec::new(),
            warnings: Vec::new(),
            base_dir,
            source,
            default_tenant: None,
            tenant_ids: HashSet::new(),
            files: Vec::new(),
        };
        let mut root = Section::root(root);
        let section = root.table(&mut p, "server");
        let server = p.server(section);
        let section = root.table(&mut p, "upstream");
        let upstream = p.upstream(section, DEFAULT_BASE_URL);
        let had_sms = root.table.contains_key("sms");
        let sms = root
            .optional_table(&mut p, "sms")
            .map(|s| p.upstream(s, DEFAULT_SMS_BASE_URL));
        let section = root.table(&mut p, "routing");
        let routing = p.routing(section);
        let section = root.table(&mut p, "rate_limit");
        let rate_limit = p.rate_limit(section);
        let section = root.table(&mut p, "cache");
        let cache = p.cache(section);
        let section = root.table(&mut p, "admin");
        let admin = p.admin(section);
        let section = root.table(&mut p, "shutdown");
        let shutdown = p.shutdown(section);
        let section = root.table(&mut p, "reload");
        let reload = p.reload(section);
        let section = root.table(&mut p, "metrics");
        let metrics = p.metrics(section);
        let cluster = root
            .optional_table(&mut p, "cluster")
            .and_then(|s| p.cluster(s));
        let had_partner = root.table.contains_key("partner");
        let partner = root
            .optional_table(&mut p, "partner")
            .and_then(|s| p.partner(s));
        let tenants = p.tenants(&mut root);
        root.finish(&mut p);
        if !had_sms {
            for t in tenants.iter().filter(|t| t.sms.is_some()) {
                p.warnings.push(format!(
                    "sms: there is no [sms] section, so the /sms routes are off, although tenant {:?} has sms credentials",
                    &*t.id
                ));
            }
        }
        // A config with no key at all would refuse every request: most likely a file caught
        // half-written, or the wrong file. Refused, so a reload never swaps it in.
        if !had_partner && p.tenant_ids.is_empty() && !p.mentions("tenants") {
            p.problem(
                "tenants",
                "no tenant and no [partner]: configure at least one key".into(),
            );
        }

        let unknown_default = p
            .default_tenant
            .take()
            .filter(|d| !p.tenant_ids.contains(&**d));
        if let Some(d) = unknown_default {
            p.problem(
                "server.default_tenant",
                format!("names tenant {d:?}, which is not configured"),
            );
        }
        let ops = (admin, shutdown, reload, metrics);
        let sms = match sms {
            None => Some(None),
            Some(parsed) => parsed.map(Some),
        };
        match (server, (upstream, sms), routing, rate_limit, cache, ops) {
            (
                Some(server),
                (Some(upstream), Some(sms)),
                Some(routing),
                Some(rate_limit),
                Some(cache),
                (Some(admin), Some(shutdown), Some(reload), Some(metrics)),
            ) if p.problems.is_empty() => Ok(Config {
                server,
                upstream,
                sms,
                routing,
                partner,
                tenants,
                rate_limit,
                cache,
                admin,
                shutdown,
                reload,
                metrics,
                cluster,
                files: p.files,
                warnings: p.warnings,
            }),
            _ => Err(ConfigError {
                problems: p.problems,
            }),
        }
    }
}

struct Parser<'a> {
    problems: Vec<String>,
    warnings: Vec<String>,
    base_dir: &'a Path,
    source: &'a dyn SecretSource,
    /// `server.default_tenant`, kept even when `[server]` has other problems.
    default_tenant: Option<Arc<str>>,
    /// Every well-formed tenant id declared, including tenants that have other problems.
    tenant_ids: HashSet<String>,
    /// Files read while parsing (secrets, CA).
    files: Vec<PathBuf>,
}

/// A table being taken apart; whatever is left at `finish` is unknown.
struct Section {
    path: String,
    table: Table,
}

impl Section {
    fn root(table: Table) -> Self {
        Self {
            path: String::new(),
            table,
        }
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Takes `key`, converting it to `T`; a wrong type is a problem and gives `None`.
    fn take<T: DeserializeOwned>(&mut self, p: &mut Parser<'_>, key: &str) -> Option<T> {
        let v = self.table.remove(key)?;
        match v.try_into() {
            Ok(t) => Some(t),
            Err(e) => {
                p.problem(&self.key_path(key), e.to_string().trim().to_owned());
                None
            }
        }
    }

    fn take_or<T: DeserializeOwned>(&mut self, p: &mut Parser<'_>, key: &str, default: T) -> T {
        self.take(p, key).unwrap_or(default)
    }

    /// A sub-table that may be absent (then empty, so defaults apply).
    fn table(&mut self, p: &mut Parser<'_>, key: &str) -> Section {
        self.optional_table(p, key).unwrap_or(Section {
            path: self.key_path(key),
            table: Table::new(),
        })
    }

    fn optional_table(&mut self, p: &mut Parser<'_>, key: &str) -> Option<Section> {
        let path = self.key_path(key);
        match self.table.remove(key)? {
            Value::Table(table) => Some(Section { path, table }),
            other => {
                p.problem(
                    &path,
                    format!("must be a table, found {}", other.type_str()),
                );
                None
            }
        }
    }

    /// Takes a secret reference to an eTelecom key.
    fn secret(&mut self, p: &mut Parser<'_>, key: &str) -> Option<ApiKey> {
        self.secret_with(p, key, |r, dir, src| r.load(dir, src))
    }

    /// Takes a secret reference to free-form text (an SMS username or password).
    fn secret_text(&mut self, p: &mut Parser<'_>, key: &str) -> Option<SecretText> {
        self.secret_with(p, key, |r, dir, src| r.load_secret_text(dir, src))
    }

    /// Takes a secret reference and resolves it with `load` (an eTelecom key, a Redis URL, an
    /// SMS account's text).
    fn secret_with<T>(
        &mut self,
        p: &mut Parser<'_>,
        key: &str,
        load: impl FnOnce(&SecretRef, &Path, &dyn SecretSource) -> Result<T, String>,
    ) -> Option<T> {
        let path = self.key_path(key);
        let v = self.table.remove(key)?;
        let r = match &v {
            Value::Table(t) if t.len() == 1 => v.clone().try_into::<SecretRef>().ok(),
            _ => None,
        };
        let Some(r) = r else {
            p.problem(
                &path,
                "must be { env = \"NAME\" } or { file = \"PATH\" }; a key is never written in the config itself".into(),
            );
            return None;
        };
        let key_path = match &r {
            SecretRef::Env(_) => format!("{path}.env"),
            SecretRef::File(f) => {
                p.files.push(p.base_dir.join(f));
                format!("{path}.file")
            }
        };
        match load(&r, p.base_dir, p.source) {
            Ok(k) => Some(k),
            Err(e) => {
                p.problem(&key_path, e);
                None
            }
        }
    }

    fn cidrs(&mut self, p: &mut Parser<'_>, key: &str) -> Option<Vec<IpNet>> {
        let list: Vec<String> = self.take(p, key)?;
        let mut out = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            let parsed = s
                .parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from));
            match parsed {
                Ok(n) => out.push(n.trunc()),
                Err(_) => p.problem(
                    &format!("{}[{i}]", self.key_path(key)),
                    format!("{s:?} is not an IP address or CIDR block"),
                ),
            }
        }
        Some(out)
    }

    fn millis(&mut self, p: &mut Parser<'_>, key: &str, default: u64) -> Duration {
        let ms: u64 = self.take_or(p, key, default);
        if ms == 0 {
            p.problem(&self.key_path(key), "must be greater than 0".into());
        }
        Duration::from_millis(ms)
    }

    fn positive(&mut self, p: &mut Parser<'_>, key: &str, default: u64) -> u64 {
        let n: u64 = self.take_or(p, key, default);
        if n == 0 {
            p.problem(&self.key_path(key), "must be greater than 0".into());
        }
        n
    }

    fn finish(self, p: &mut Parser<'_>) {
        for key in self.table.keys() {
            p.problem(&self.key_path(key), "unknown key".into());
        }
    }
}

impl Parser<'_> {
    fn problem(&mut self, path: &str, msg: String) {
        self.problems.push(format!("{path}: {msg}"));
    }

    fn server(&mut self, mut s: Section) -> Option<ServerConfig> {
        let listen: String = s.take_or(self, "listen", DEFAULT_LISTEN.to_owned());
        let listen = listen
            .parse::<SocketAddr>()
            .map_err(|_| {
                self.problem(
                    "server.listen",
                    format!("{listen:?} is not an address:port"),
                )
            })
            .ok();
        let header: String = s.take_or(self, "tenant_header", DEFAULT_TENANT_HEADER.to_owned());
        let tenant_header = match HeaderName::try_from(header.as_str()) {
            Ok(h) if RESERVED_HEADERS.contains(&h.as_str()) => {
                self.problem(
                    "server.tenant_header",
                    format!("{header:?} is a header the gateway sets or strips itself"),
                );
                None
            }
            Ok(h) => Some(h),
            Err(_) => {
                self.problem(
                    "server.tenant_header",
                    format!("{header:?} is not a valid header name"),
                );
                None
            }
        };
        let default_tenant = s
            .take::<String>(self, "default_tenant")
            .map(|t| Arc::<str>::from(t.as_str()));
        self.default_tenant.clone_from(&default_tenant);
        let allowed_callers = s.cidrs(self, "allowed_callers").unwrap_or_else(|| {
            ["127.0.0.0/8", "::1/128"]
                .iter()
                .filter_map(|c| c.parse().ok())
                .collect()
        });
        let max_body_bytes = s.positive(self, "max_body_bytes", 1024 * 1024);
        let max_connections = s.positive(self, "max_connections", 4096);
        let header_read_timeout = s.millis(self, "header_read_timeout_ms", 10_000);
        let timeouts = self.server_timeouts(&mut s);
        let max_header_bytes: u64 = s.take_or(self, "max_header_bytes", 16 * 1024);
        if !(8192..=1024 * 1024).contains(&max_header_bytes) {
            self.problem(
                "server.max_header_bytes",
                "must be between 8192 and 1048576".into(),
            );
        }
        let max_json_depth: u64 = s.take_or(self, "max_json_depth", 64);
        if !(1..=1024).contains(&max_json_depth) {
            self.problem("server.max_json_depth", "must be between 1 and 1024".into());
        }
        s.finish(self);
        Some(ServerConfig {
            listen: listen?,
            tenant_header: tenant_header?,
            default_tenant,
            allowed_callers,
            max_body_bytes,
            max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
            header_read_timeout,
            max_header_bytes: usize::try_from(max_header_bytes).unwrap_or(usize::MAX),
            max_json_depth: usize::try_from(max_json_depth).unwrap_or(usize::MAX),
            timeouts,
        })
    }

    /// `[upstream]` or `[sms]`: the same keys and rules, each section with its own default URL.
    fn upstream(&mut self, mut s: Section, default_url: &str) -> Option<UpstreamConfig> {
        let base_url: String = s.take_or(self, "base_url", default_url.to_owned());
        let allow_http: bool = s.take_or(self, "allow_insecure_http", false);
        let base = self.base_url(&s.path, &base_url, allow_http);
        let connect_timeout = s.millis(self, "connect_timeout_ms", 3_000);
        let timeout = s.millis(self, "timeout_ms", 15_000);
        let extra_roots = s
            .take::<PathBuf>(self, "ca_file")
            .map(|f| self.ca_file(&s.key_path("ca_file"), &f))
            .unwrap_or_default();
        let system_roots = s.take_or(self, "system_roots", false);
        let max_response_bytes = s.positive(self, "max_response_bytes", 16 * 1024 * 1024);
        let pool_idle_timeout = s.millis(self, "pool_idle_timeout_ms", 90_000);
        let pool_max_idle_per_host: u64 = s.take_or(self, "pool_max_idle_per_host", 64);
        s.finish(self);
        let (scheme, authority, path_prefix) = base?;
        Some(UpstreamConfig {
            scheme,
            authority,
            path_prefix,
            connect_timeout,
            timeout,
            extra_roots,
            system_roots,
            max_response_bytes,
            pool_idle_timeout,
            pool_max_idle_per_host: usize::try_from(pool_max_idle_per_host).unwrap_or(usize::MAX),
        })
    }

    fn base_url(
        &mut self,
        section: &str,
        url: &str,
        allow_http: bool,
    ) -> Option<(Scheme, Authority, Box<str>)> {
        // User info may hold a password: such a URL is not echoed.
        let shown = if url.contains('@') {
            "(URL not shown: it holds an @)".to_owned()
        } else {
            format!("{url:?}")
        };
        let mut fail = |msg: &str| {
            self.problems
                .push(format!("{section}.base_url: {shown} {msg}"));
            None
        };
        let Ok(uri) = url.parse::<Uri>() else {
            return fail("is not a URL");
        };
        let (Some(scheme), Some(authority)) = (uri.scheme().cloned(), uri.authority().cloned())
        else {
            return fail("must be an absolute http(s) URL");
        };
        if authority.as_str().contains('@') {
            return fail("must not carry user info");
        }
        if uri.query().is_some() {
            return fail("must not carry a query");
        }
        if scheme == Scheme::HTTP {
            let host = authority
                .host()
                .trim_start_matches('[')
                .trim_end_matches(']');
            let loopback =
                host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if !loopback && !allow_http {
                return fail(&format!(
                    "uses plain http to a non-loopback host; use https or set {section}.allow_insecure_http = true"
                ));
            }
        } else if scheme != Scheme::HTTPS {
            return fail("must use https (or http to a loopback host)");
        }
        let prefix = uri.path().trim_end_matches('/');
        Some((scheme, authority, prefix.into()))
    }

    fn ca_file(&mut self, key_path: &str, file: &Path) -> Vec<CertificateDer<'static>> {
        let full = self.base_dir.join(file);
        self.files.push(full.clone());
        let certs: Result<Vec<_>, _> = match CertificateDer::pem_file_iter(&full) {
            Ok(it) => it.collect(),
            Err(e) => {
                self.problem(key_path, format!("cannot read {}: {e}", full.display()));
                return Vec::new();
            }
        };
        match certs {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => {
                self.problem(
                    key_path,
                    format!("{} holds no PEM certificate", full.display()),
                );
                Vec::new()
            }
            Err(e) => {
                self.problem(
                    key_path,
                    format!("{} is not valid PEM: {e}", full.display()),
                );
                Vec::new()
            }
        }
    }

    fn routing(&mut self, mut s: Section) -> Option<RoutingConfig> {
        let mode: String = s.take_or(self, "unknown_methods", "forward".to_owned());
        let unknown_methods = match mode.as_str() {
            "forward" => Some(UnknownMethods::Forward),
            "reject" => Some(UnknownMethods::Reject),
            other => {
                self.problem(
                    "routing.unknown_methods",
                    format!("{other:?} is neither \"forward\" nor \"reject\""),
                );
                None
            }
        };
        s.finish(self);
        Some(RoutingConfig {
            unknown_methods: unknown_methods?,
        })
    }
}

/// A TOML syntax error by position and message only: toml's own `Display` quotes the offending
/// line, which may hold a key pasted inline.
fn toml_syntax(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim();
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            format!("TOML syntax at line {line}, column {column}: {msg}")
        }
        None => format!("TOML syntax: {msg}"),
    }
}

/// `1 problem`, `2 problems`: a count and its noun (regular plurals only).
pub fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

/// Tenant ids go into logs and metric labels: a short, plain charset.
pub fn valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod tests;
