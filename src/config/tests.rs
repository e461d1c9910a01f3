//! Unit tests of [`Config::parse`] (and [`Config::load`]). Secrets come from a fake environment
//! handed in as a closure or fn: no test reads or mutates the process environment.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ipnet::IpNet;

use super::*;
use crate::secret::ApiKey;

const ACME_KEY: &str = "1001:acme-own-secret";
const ACME_SHOP_KEY: &str = "shop1001:acme-shop-secret";
const BETA_SHOP_KEY: &str = "shop2002:beta-shop-secret";
const PARTNER_KEY: &str = "3003:partner-secret";
/// Planted wherever a secret could leak into a message; no problem or warning may contain it.
const CANARY: &str = "999:CANARY-inline-secret";

/// A folder that does not exist: nothing relative to it may be read by accident.
const NO_DIR: &str = "/nonexistent/etelecom-gateway-tests";

fn fake_env(name: &str) -> Option<String> {
    let v = match name {
        "ACME_API_KEY" => ACME_KEY,
        "ACME_SHOP_KEY" => ACME_SHOP_KEY,
        "BETA_SHOP_KEY" => BETA_SHOP_KEY,
        "PARTNER_API_KEY" => PARTNER_KEY,
        "EMPTY_API_KEY" => "",
        // A key that is not a valid header value / holds whitespace.
        "SPACED_API_KEY" => "999:CANARY inline secret",
        "NEWLINE_API_KEY" => "999:CANARY-inline-secret\nmore",
        // Keys of the wrong shape (allowed, with a warning).
        "OWN_SHAPED_SHOP_KEY" => "1001:CANARY-own-shaped",
        "SHOP_SHAPED_API_KEY" => "shop1001:CANARY-shop-shaped",
        "NO_COLON_API_KEY" => "CANARY-no-colon",
        _ => return None,
    };
    Some(v.to_owned())
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(NO_DIR), &fake_env)
}

#[track_caller]
fn parse_ok(text: &str) -> Config {
    match parse(text) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid config, got {e}"),
    }
}

#[track_caller]
fn problems(text: &str) -> Vec<String> {
    match parse(text) {
        Ok(c) => panic!("expected problems, got a valid config: {c:?}"),
        Err(e) => {
            assert!(!e.problems.is_empty(), "an error must hold a problem");
            e.problems
        }
    }
}

/// The key path each problem is reported under (the text before the first `": "`).
fn paths(problems: &[String]) -> Vec<&str> {
    problems
        .iter()
        .map(|p| p.split_once(": ").map_or(p.as_str(), |(path, _)| path))
        .collect()
}

#[track_caller]
fn assert_paths(text: &str, want: &[&str]) -> Vec<String> {
    let got = problems(text);
    assert_eq!(paths(&got), want, "problems: {got:#?}");
    assert_no_canary(&got);
    got
}

#[track_caller]
fn assert_no_canary(messages: &[String]) {
    for m in messages {
        assert!(!m.contains("CANARY"), "a message echoes a secret: {m}");
    }
}

fn key(s: &str) -> ApiKey {
    ApiKey::new(s).expect("valid key")
}

fn net(s: &str) -> IpNet {
    s.parse().expect("valid CIDR")
}

fn write(dir: &Path, name: &str, contents: &str) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("mkdir");
    }
    std::fs::write(path, contents).expect("write");
}

/// The smallest valid config: a single tenant.
const MINIMAL: &str = r#"
[[tenants]]
id = "acme"
api_key = { env = "ACME_API_KEY" }
"#;

/// `MINIMAL` with `extra` placed before the tenant (so it may open sections).
fn with_tenant(extra: &str) -> String {
    format!("{extra}\n{MINIMAL}")
}

#[test]
fn documented_defaults_are_the_constants() {
    assert_eq!(DEFAULT_LISTEN, "127.0.0.1:8080");
    assert_eq!(DEFAULT_TENANT_HEADER, "x-tenant-id");
    assert_eq!(DEFAULT_BASE_URL, "https://api.etelecom.vn");
}

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let c = parse_ok(MINIMAL);

    let s = &c.server;
    assert_eq!(
        s.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(s.tenant_header.as_str(), "x-tenant-id");
    assert_eq!(s.default_tenant, None);
    assert_eq!(s.allowed_callers, vec![net("127.0.0.0/8"), net("::1/128")]);
    assert_eq!(s.max_body_bytes, 1_048_576);
    assert_eq!(s.max_connections, 4096);
    assert_eq!(s.header_read_timeout, Duration::from_millis(10_000));
    assert_eq!(s.max_header_bytes, 16 * 1024);
    assert_eq!(s.max_json_depth, 64);
    let t = &s.timeouts;
    assert_eq!(t.client_body, Duration::from_secs(10));
    assert_eq!(t.request, Duration::from_secs(30));
    assert_eq!(t.keepalive, Duration::from_secs(75));
    assert_eq!(t.http2_keepalive_interval, Duration::from_secs(30));
    assert_eq!(t.http2_keepalive_timeout, Duration::from_secs(10));
    assert_eq!(c.shutdown.grace, Duration::from_secs(25));
    assert_eq!(c.shutdown.drain_delay, Duration::from_secs(5));
    assert_eq!(
        c.admin.listen,
        "127.0.0.1:9090".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(c.reload.interval, Duration::from_secs(30));
    assert!(c.reload.watch);
    assert!(c.metrics.tenant_label);
    assert!(c.cache.enabled);
    assert_eq!(c.cache.max_ttl, Duration::from_secs(300));
    assert_eq!(c.rate_limit.default.requests_per_second.get(), 10);
    assert_eq!(c.rate_limit.default.burst.get(), 20);

    let u = &c.upstream;
    assert_eq!(u.scheme, Scheme::HTTPS);
    assert_eq!(u.authority.as_str(), "api.etelecom.vn");
    assert_eq!(&*u.path_prefix, "");
    assert_eq!(u.connect_timeout, Duration::from_millis(3_000));
    assert_eq!(u.timeout, Duration::from_millis(15_000));
    assert!(u.extra_roots.is_empty());
    assert_eq!(u.max_response_bytes, 16 * 1024 * 1024);
    assert_eq!(u.pool_idle_timeout, Duration::from_millis(90_000));
    assert_eq!(u.pool_max_idle_per_host, 64);

    assert_eq!(c.routing.unknown_methods, UnknownMethods::Forward);
    assert!(c.partner.is_none());

    assert_eq!(c.tenants.len(), 1);
    let t = &c.tenants[0];
    assert_eq!(&*t.id, "acme");
    assert_eq!(t.api_key, Some(key(ACME_KEY)));
    assert_eq!(t.shop_key, None);
    assert_eq!(t.allowed_callers, None);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn empty_sections_are_the_same_as_absent_ones() {
    let c = parse_ok(&with_tenant("[server]\n[upstream]\n[routing]\n"));
    assert_eq!(c.server.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(c.upstream.authority.as_str(), "api.etelecom.vn");
    assert_eq!(c.routing.unknown_methods, UnknownMethods::Forward);
}

#[test]
fn every_key_is_parsed_into_its_typed_value() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    write(dir.path(), "certs/extra-roots.pem", &ca.cert.pem());
    write(
        dir.path(),
        "secrets/acme_shop_key",
        &format!("{ACME_SHOP_KEY}\n"),
    );
    let text = r#"
[server]
listen = "0.0.0.0:9090"
tenant_header = "X-Shop-Id"
default_tenant = "acme"
allowed_callers = ["10.0.0.0/8", "192.168.1.7", "10.1.2.3/16", "fd00::/8", "::1"]
max_body_bytes = 2048
max_connections = 10
header_read_timeout_ms = 500
max_header_bytes = 8192

[shutdown]
drain_delay_secs = 0
grace_secs = 2

[upstream]
base_url = "https://sandbox.etelecom.vn:8443/api/"
connect_timeout_ms = 100
timeout_ms = 200
ca_file = "certs/extra-roots.pem"
allow_insecure_http = true
max_response_bytes = 4096
pool_idle_timeout_ms = 300
pool_max_idle_per_host = 0

[routing]
unknown_methods = "reject"

[partner]
api_key = { env = "PARTNER_API_KEY" }
allowed_callers = ["10.9.0.0/16"]

[[tenants]]
id = "acme"
api_key = { env = "ACME_API_KEY" }
shop_key = { file = "secrets/acme_shop_key" }
allowed_callers = ["10.1.0.0/16"]

[[tenants]]
id = "Beta_2.shop-x"
shop_key = { env = "BETA_SHOP_KEY" }
"#;
    let c = match Config::parse(text, dir.path(), &fake_env) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };

    let s = &c.server;
    assert_eq!(
        s.listen,
        "0.0.0.0:9090".parse::<SocketAddr>().expect("addr")
    );
    assert_eq!(
        s.tenant_header.as_str(),
        "x-shop-id",
        "header names are lowercased"
    );
    assert_eq!(s.default_tenant.as_deref(), Some("acme"));
    assert_eq!(
        s.allowed_callers,
        vec![
            net("10.0.0.0/8"),
            net("192.168.1.7/32"),
            net("10.1.0.0/16"), // host bits are cleared
            net("fd00::/8"),
            net("::1/128"),
        ]
    );
    assert_eq!(s.max_body_bytes, 2048);
    assert_eq!(s.max_connections, 10);
    assert_eq!(s.header_read_timeout, Duration::from_millis(500));
    assert_eq!(s.max_header_bytes, 8192);
    assert_eq!(c.shutdown.grace, Duration::from_secs(2));
    assert_eq!(c.shutdown.drain_delay, Duration::ZERO);

    let u = &c.upstream;
    assert_eq!(u.scheme, Scheme::HTTPS);
    assert_eq!(u.authority.as_str(), "sandbox.etelecom.vn:8443");
    assert_eq!(&*u.path_prefix, "/api", "trailing slash trimmed");
    assert_eq!(u.connect_timeout, Duration::from_millis(100));
    assert_eq!(u.timeout, Duration::from_millis(200));
    assert_eq!(u.extra_roots.len(), 1);
    assert_eq!(u.extra_roots[0].as_ref(), ca.cert.der().as_ref());
    assert_eq!(u.max_response_bytes, 4096);
    assert_eq!(u.pool_idle_timeout, Duration::from_millis(300));
    assert_eq!(u.pool_max_idle_per_host, 0, "0 (no idle pool) is allowed");

    assert_eq!(c.routing.unknown_methods, UnknownMethods::Reject);

    let partner = c.partner.as_ref().expect("partner");
    assert_eq!(partner.api_key, key(PARTNER_KEY));
    assert_eq!(partner.allowed_callers, Some(vec![net("10.9.0.0/16")]));

    assert_eq!(c.tenants.len(), 2);
    let acme = &c.tenants[0];
    assert_eq!(&*acme.id, "acme");
    assert_eq!(acme.api_key, Some(key(ACME_KEY)));
    assert_eq!(acme.shop_key, Some(key(ACME_SHOP_KEY)));
    assert_eq!(acme.allowed_callers, Some(vec![net("10.1.0.0/16")]));
    let beta = &c.tenants[1];
    assert_eq!(&*beta.id, "Beta_2.shop-x");
    assert_eq!(beta.api_key, None);
    assert_eq!(beta.shop_key, Some(key(BETA_SHOP_KEY)));
    assert_eq!(beta.allowed_callers, None);

    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // Keys are held redacted: not even Debug of the whole config shows them.
    let debug = format!("{c:?}");
    for secret in [ACME_KEY, ACME_SHOP_KEY, BETA_SHOP_KEY, PARTNER_KEY] {
        let (_, tail) = secret.split_once(':').expect("colon");
        assert!(!debug.contains(tail), "Debug shows {secret}");
    }
}

#[test]
fn unknown_keys_are_reported_with_their_path() {
    let text = r#"
bogus = 1

[server]
lisen = "127.0.0.1:8080"

[upstream]
base_uri = "https://api.etelecom.vn"

[routing]
unknown_method = "reject"

[partner]
api_key = { env = "PARTNER_API_KEY" }
alowed_callers = []

[[tenants]]
id = "acme"
api_key = { env = "ACME_API_KEY" }
apikey = "999:CANARY-inline-secret"
"#;
    let got = assert_paths(
        text,
        &[
            "server.lisen",
            "upstream.base_uri",
            "routing.unknown_method",
            "partner.alowed_callers",
            "tenants[0].apikey",
            "bogus",
        ],
    );
    for p in &got {
        assert!(p.ends_with(": unknown key"), "{p}");
    }
}

#[test]
fn unknown_keys_in_every_tenant_are_reported_by_index() {
    let text = r#"
[[tenants]]
id = "a"
api_key = { env = "ACME_API_KEY" }

[[tenants]]
id = "b"
api_key = { env = "ACME_API_KEY" }
allowed_caller = ["10.0.0.0/8"]

[[tenants]]
id = "c"
api_key = { env = "ACME_API_KEY" }
[tenants.extra]
x = 1
"#;
    assert_paths(text, &["tenants[1].allowed_caller", "tenants[2].extra"]);
}

#[test]
fn a_broken_config_reports_every_problem_in_one_run() {
    let text = r#"
bogus_top = true

[server]
listen = "localhost"
tenant_header = "x tenant"
default_tenant = "ghost"
allowed_callers = ["127.0.0.1/8", "10.0.0.0/33", "::1"]
header_read_timeout_ms = 0

[upstream]
base_url = "http://api.etelecom.vn"
timeout_ms = 0

[routing]
unknown_methods = "drop"

[partner]
api_key = { env = "EMPTY_API_KEY" }

[[tenants]]
id = "acme"
api_key = { env = "ACME_API_KEY" }
allowed_callers = ["10.1.0.0/16", "not-an-ip"]

[[tenants]]
id = "acme"
api_key = { env = "ACME_API_KEY" }

[[tenants]]
id = "nokey"

[[tenants]]
id = "unset"
api_key = { env = "UNSET_API_KEY" }

[[tenants]]
id = "unreadable"
shop_key = { file = "missing/shop_key" }

[[tenants]]
id = "inline"
api_key = "999:CANARY-inline-secret"

[[tenants]]
id = "bad id!"
api_key = { env = "ACME_API_KEY" }
"#;
    let got = assert_paths(
        text,
        &[
            "server.listen",
            "server.tenant_header",
            "server.allowed_callers[1]",
            "server.header_read_timeout_ms",
            "upstream.base_url",
            "upstream.timeout_ms",
            "routing.unknown_methods",
            "partner.api_key.env",
            "tenants[0].allowed_callers[1]",
            "tenants[1].id",
            "tenants[2]",
            "tenants[3].api_key.env",
            "tenants[4].shop_key.file",
            "tenants[5].api_key",
            "tenants[6].id",
            "bogus_top",
            "server.default_tenant",
        ],
    );
    let expect = |i: usize, fragment: &str| {
        assert!(got[i].contains(fragment), "{:?} lacks {fragment:?}", got[i]);
    };
    expect(0, "\"localhost\" is not an address:port");
    expect(1, "not a valid header name");
    expect(2, "\"10.0.0.0/33\"");
    expect(3, "must be greater than 0");
    expect(4, "plain http to a non-loopback host");
    expect(5, "must be greater than 0");
    expect(6, "\"drop\"");
    expect(7, "environment variable EMPTY_API_KEY is empty");
    expect(8, "\"not-an-ip\" is not an IP address or CIDR block");
    expect(9, "duplicate tenant id \"acme\"");
    expect(10, "has no key at all");
    expect(11, "environment variable UNSET_API_KEY is not set");
    expect(12, "cannot read secret file");
    expect(12, "missing/shop_key");
    expect(13, "a key is never written in the config itself");
    expect(14, "\"bad id!\"");
    expect(15, "unknown key");
    expect(16, "\"ghost\"");

    // The Display lists them all.
    let shown = parse(text).expect_err("invalid").to_string();
    assert!(shown.starts_with(&format!(
        "invalid configuration ({}):",
        super::plural(got.len(), "problem")
    )));
    for p in &got {
        assert!(shown.contains(&format!("  - {p}\n")), "{shown}");
    }
    assert!(!shown.contains("CANARY"));
}

#[test]
fn an_inline_key_is_never_echoed() {
    let shapes = [
        r#""999:CANARY-inline-secret""#,
        r#"'999:CANARY-inline-secret'"#,
        r#"["999:CANARY-inline-secret"]"#,
        r#"{ value = "999:CANARY-inline-secret" }"#,
        r#"{ key = "999:CANARY-inline-secret" }"#,
        r#"{ env = "ACME_API_KEY", value = "999:CANARY-inline-secret" }"#,
        r#"{ env = "ACME_API_KEY", file = "999:CANARY-inline-secret" }"#,
        r#"{ env = ["999:CANARY-inline-secret"] }"#,
        r#"{ env = { value = "999:CANARY-inline-secret" } }"#,
        r#"999"#,
    ];
    for shape in shapes {
        for field in ["api_key", "shop_key"] {
            let text = format!("[[tenants]]\nid = \"acme\"\n{field} = {shape}\n");
            let got = assert_paths(&text, &[&format!("tenants[0].{field}")]);
            assert!(got[0].contains("{ env = \"NAME\" }"), "{}", got[0]);
        }
        let text = with_tenant(&format!("[partner]\napi_key = {shape}\n"));
        assert_paths(&text, &["partner.api_key"]);
    }
}

#[test]
fn a_key_pasted_as_an_env_var_name_is_not_echoed() {
    let text = format!("[[tenants]]\nid = \"acme\"\napi_key = {{ env = \"{CANARY}\" }}\n");
    let got = assert_paths(&text, &["tenants[0].api_key.env"]);
    assert!(
        got[0].contains("not a valid environment variable name"),
        "{got:?}"
    );
    let text = with_tenant(&format!(
        "[partner]\napi_key = {{ env = \" {CANARY} \" }}\n"
    ));
    assert_paths(&text, &["partner.api_key.env"]);
}

#[test]
fn a_malformed_key_value_is_not_echoed() {
    for var in ["SPACED_API_KEY", "NEWLINE_API_KEY"] {
        let text = format!("[[tenants]]\nid = \"acme\"\napi_key = {{ env = \"{var}\" }}\n");
        let got = assert_paths(&text, &["tenants[0].api_key.env"]);
        assert!(got[0].contains(var), "{}", got[0]);
    }
}

#[test]
fn secret_references_report_the_env_var_or_file_by_name() {
    let text = r#"
[partner]
api_key = { env = "UNSET_PARTNER_KEY" }

[[tenants]]
id = "acme"
api_key = { env = "EMPTY_API_KEY" }
shop_key = { file = "/nonexistent/etelecom/shop_key" }
"#;
    let got = assert_paths(
        text,
        &[
            "partner.api_key.env",
            "tenants[0].api_key.env",
            "tenants[0].shop_key.file",
        ],
    );
    assert_eq!(
        got[0],
        "partner.api_key.env: environment variable UNSET_PARTNER_KEY is not set"
    );
    assert_eq!(
        got[1],
        "tenants[0].api_key.env: environment variable EMPTY_API_KEY is empty"
    );
    assert!(
        got[2].starts_with(
            "tenants[0].shop_key.file: cannot read secret file /nonexistent/etelecom/shop_key"
        ),
        "{}",
        got[2]
    );
}

#[test]
fn secret_files_are_trimmed_and_resolved_against_base_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(
        dir.path(),
        "secrets/shop_key",
        &format!("{ACME_SHOP_KEY}\n"),
    );
    write(
        dir.path(),
        "secrets/api_key_crlf",
        &format!("{ACME_KEY}\r\n"),
    );
    write(dir.path(), "secrets/partner", PARTNER_KEY);
    let absolute = dir.path().join("secrets/partner");
    let text = format!(
        r#"
[partner]
api_key = {{ file = "{}" }}

[[tenants]]
id = "acme"
api_key = {{ file = "secrets/api_key_crlf" }}
shop_key = {{ file = "secrets/shop_key" }}
"#,
        absolute.display()
    );
    let c = match Config::parse(&text, dir.path(), &fake_env) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(c.tenants[0].shop_key, Some(key(ACME_SHOP_KEY)));
    assert_eq!(c.tenants[0].api_key, Some(key(ACME_KEY)));
    assert_eq!(c.partner.expect("partner").api_key, key(PARTNER_KEY));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    // The same text against another folder: the relative files are not found there, the
    // absolute one still is.
    let other = tempfile::tempdir().expect("tempdir");
    let err = Config::parse(&text, other.path(), &fake_env).expect_err("relative paths");
    assert_eq!(
        paths(&err.problems),
        ["tenants[0].api_key.file", "tenants[0].shop_key.file"]
    );
    let shown = other.path().join("secrets/shop_key").display().to_string();
    assert!(err.problems[1].contains(&shown), "{:?}", err.problems);
}

#[test]
fn secret_files_that_are_empty_or_malformed_are_problems() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "empty", "\n");
    write(dir.path(), "two_newlines", &format!("{CANARY}\n\n"));
    write(dir.path(), "spaced", "999:CANARY inline\n");
    let text = r#"
[[tenants]]
id = "a"
api_key = { file = "empty" }

[[tenants]]
id = "b"
api_key = { file = "two_newlines" }

[[tenants]]
id = "c"
api_key = { file = "spaced" }
"#;
    let err = Config::parse(text, dir.path(), &fake_env).expect_err("invalid");
    assert_eq!(
        paths(&err.problems),
        [
            "tenants[0].api_key.file",
            "tenants[1].api_key.file",
            "tenants[2].api_key.file"
        ]
    );
    assert!(err.problems[0].ends_with("is empty"), "{:?}", err.problems);
    assert_no_canary(&err.problems);
}

#[test]
fn load_resolves_relative_paths_against_the_config_files_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "etc/shop_key", &format!("{ACME_SHOP_KEY}\n"));
    write(
        dir.path(),
        "etc/gateway.toml",
        "[[tenants]]\nid = \"acme\"\nshop_key = { file = \"shop_key\" }\n",
    );
    let c = match Config::load(&dir.path().join("etc/gateway.toml"), &fake_env) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(c.tenants[0].shop_key, Some(key(ACME_SHOP_KEY)));

    let err = Config::load(&dir.path().join("etc/missing.toml"), &fake_env).expect_err("missing");
    assert_eq!(err.problems.len(), 1);
    assert!(
        err.problems[0].starts_with("cannot read config file"),
        "{:?}",
        err.problems
    );
}

#[test]
fn ca_file_problems_and_a_valid_bundle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    let b = rcgen::generate_simple_self_signed(vec!["sandbox.test".into()]).expect("cert");
    write(dir.path(), "one.pem", &a.cert.pem());
    write(
        dir.path(),
        "two.pem",
        &format!("# bundle\n{}\n{}", a.cert.pem(), b.cert.pem()),
    );
    write(
        dir.path(),
        "not-pem.txt",
        "just some text, no certificate here\n",
    );
    write(dir.path(), "key-only.pem", &a.signing_key.serialize_pem());
    let ca = |file: &str| with_tenant(&format!("[upstream]\nca_file = \"{file}\"\n"));

    let c = match Config::parse(&ca("one.pem"), dir.path(), &fake_env) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(c.upstream.extra_roots.len(), 1);
    assert_eq!(c.upstream.extra_roots[0].as_ref(), a.cert.der().as_ref());

    let c = match Config::parse(&ca("two.pem"), dir.path(), &fake_env) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    let ders: Vec<&[u8]> = c.upstream.extra_roots.iter().map(|c| c.as_ref()).collect();
    assert_eq!(ders, [a.cert.der().as_ref(), b.cert.der().as_ref()]);

    for (file, fragment) in [
        ("missing.pem", "cannot read"),
        ("not-pem.txt", "holds no PEM certificate"),
        ("key-only.pem", "holds no PEM certificate"),
    ] {
        let err = Config::parse(&ca(file), dir.path(), &fake_env).expect_err(file);
        assert_eq!(paths(&err.problems), ["upstream.ca_file"], "{file}");
        assert!(err.problems[0].contains(fragment), "{:?}", err.problems);
        assert!(err.problems[0].contains(file), "{:?}", err.problems);
    }
}

#[test]
fn key_shape_mismatches_are_warnings_that_do_not_show_the_key() {
    let text = r#"
[partner]
api_key = { env = "NO_COLON_API_KEY" }

[[tenants]]
id = "acme"
api_key = { env = "SHOP_SHAPED_API_KEY" }
shop_key = { env = "OWN_SHAPED_SHOP_KEY" }
"#;
    let c = parse_ok(text);
    assert_eq!(
        paths(&c.warnings),
        [
            "partner.api_key",
            "tenants[0].api_key",
            "tenants[0].shop_key"
        ]
    );
    assert!(
        c.warnings[0].contains("(<id>:<secret>)"),
        "{:?}",
        c.warnings
    );
    assert!(
        c.warnings[1].contains("(<id>:<secret>)"),
        "{:?}",
        c.warnings
    );
    assert!(
        c.warnings[2].contains("(shop<id>:<secret>)"),
        "{:?}",
        c.warnings
    );
    assert_no_canary(&c.warnings);
    // The keys are still loaded.
    assert_eq!(
        c.tenants[0].shop_key,
        Some(key("1001:CANARY-own-shaped")),
        "a warning does not drop the key"
    );

    // Keys of the right shape give no warning.
    let c = parse_ok(
        "[partner]\napi_key = { env = \"PARTNER_API_KEY\" }\n[[tenants]]\nid = \"acme\"\n\
         api_key = { env = \"ACME_API_KEY\" }\nshop_key = { env = \"ACME_SHOP_KEY\" }\n",
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn toml_syntax_errors_are_reported_without_echoing_the_line() {
    for (text, at) in [
        ("[server\nlisten = \"127.0.0.1:8080\"\n", "line 1, column 8"),
        (
            "[[tenants]]\nid = \"acme\"\napi_key = \"999:CANARY-inline-secret\n",
            "line 3, column 36",
        ),
        (
            "[[tenants]]\nid = \"acme\"\napi_key = 999:CANARY-inline-secret\n",
            "line 3, column 11",
        ),
        (
            "[[tenants]]\nid = \"acme\"\nid = \"999:CANARY-inline-secret\"\n",
            "line 3, column 1",
        ),
    ] {
        let got = problems(text);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(&format!("TOML syntax at {at}: ")),
            "{got:?}"
        );
        assert_no_canary(&got);
    }
}

#[test]
fn base_url_rules() {
    let url = |u: &str, insecure: bool| {
        with_tenant(&format!(
            "[upstream]\nbase_url = \"{u}\"\nallow_insecure_http = {insecure}\n"
        ))
    };
    for (u, insecure, scheme, authority, prefix) in [
        (
            "https://api.etelecom.vn",
            false,
            "https",
            "api.etelecom.vn",
            "",
        ),
        (
            "https://api.etelecom.vn/",
            false,
            "https",
            "api.etelecom.vn",
            "",
        ),
        (
            "https://h.test:8443/v1//",
            false,
            "https",
            "h.test:8443",
            "/v1",
        ),
        ("http://127.0.0.1:9000", false, "http", "127.0.0.1:9000", ""),
        ("http://127.8.9.10", false, "http", "127.8.9.10", ""),
        (
            "http://localhost:9000/x",
            false,
            "http",
            "localhost:9000",
            "/x",
        ),
        ("http://[::1]:9000", false, "http", "[::1]:9000", ""),
        (
            "http://api.etelecom.vn",
            true,
            "http",
            "api.etelecom.vn",
            "",
        ),
        ("http://10.0.0.5:80", true, "http", "10.0.0.5:80", ""),
    ] {
        let c = parse_ok(&url(u, insecure));
        assert_eq!(c.upstream.scheme.as_str(), scheme, "{u}");
        assert_eq!(c.upstream.authority.as_str(), authority, "{u}");
        assert_eq!(&*c.upstream.path_prefix, prefix, "{u}");
    }
    for (u, fragment) in [
        ("http://api.etelecom.vn", "non-loopback"),
        ("http://10.0.0.5", "non-loopback"),
        ("http://[::2]:80", "non-loopback"),
        ("http://localhost.evil.test", "non-loopback"),
        ("ftp://api.etelecom.vn", "must use https"),
        ("api.etelecom.vn", "absolute"),
        ("/v1/shop.Foo", "absolute"),
        ("https://api.etelecom.vn/?debug=1", "query"),
        ("not a url", "is not a URL"),
        ("", "is not a URL"),
    ] {
        let got = assert_paths(&url(u, false), &["upstream.base_url"]);
        assert!(got[0].contains(fragment), "{u}: {got:?}");
    }
    // User info is refused, and the URL (which holds a password) is not echoed.
    let got = assert_paths(
        &url("https://user:CANARY-password@api.etelecom.vn", true),
        &["upstream.base_url"],
    );
    assert!(got[0].contains("user info"), "{got:?}");
}

#[test]
fn tenant_header_rules() {
    let header = |h: &str| with_tenant(&format!("[server]\ntenant_header = \"{h}\"\n"));
    assert_eq!(
        parse_ok(&header("X-Tenant")).server.tenant_header.as_str(),
        "x-tenant"
    );
    for h in [
        "Authorization",
        "proxy-authorization",
        "cookie",
        "host",
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "x-request-id",
        "traceparent",
    ] {
        let got = assert_paths(&header(h), &["server.tenant_header"]);
        assert!(got[0].contains("sets or strips itself"), "{got:?}");
    }
    for h in ["", "x tenant", "x-tenant:", "x-ténant"] {
        let got = assert_paths(&header(h), &["server.tenant_header"]);
        assert!(got[0].contains("not a valid header name"), "{got:?}");
    }
}

#[test]
fn listen_must_be_an_address_and_port() {
    let listen = |l: &str| with_tenant(&format!("[server]\nlisten = \"{l}\"\n"));
    assert_eq!(parse_ok(&listen("[::1]:0")).server.listen.port(), 0);
    for bad in [
        "127.0.0.1",
        "localhost:8080",
        ":8080",
        "127.0.0.1:99999",
        "",
    ] {
        assert_paths(&listen(bad), &["server.listen"]);
    }
}

#[test]
fn default_tenant_must_name_a_configured_tenant() {
    let c = parse_ok(&with_tenant("[server]\ndefault_tenant = \"acme\"\n"));
    assert_eq!(c.server.default_tenant.as_deref(), Some("acme"));
    let got = assert_paths(
        &with_tenant("[server]\ndefault_tenant = \"Acme\"\n"),
        &["server.default_tenant"],
    );
    assert!(got[0].contains("\"Acme\""), "{got:?}");
    // A declared tenant with a problem of its own is reported there only: it is not "unknown".
    let got = assert_paths(
        "[server]\ndefault_tenant = \"acme\"\n[[tenants]]\nid = \"acme\"\n\
         api_key = { env = \"UNSET_API_KEY\" }\n",
        &["tenants[0].api_key.env"],
    );
    assert!(got[0].contains("UNSET_API_KEY is not set"), "{got:?}");
    // Checked even when [server] has other problems.
    assert_paths(
        &with_tenant("[server]\nlisten = \"nope\"\ndefault_tenant = \"ghost\"\n"),
        &["server.listen", "server.default_tenant"],
    );
    // With no tenants at all.
    assert_paths(
        "[server]\ndefault_tenant = \"acme\"\n",
        &["tenants", "server.default_tenant"],
    );
}

#[test]
fn zero_limits_and_timeouts_are_refused() {
    for (section, key) in [
        ("server", "max_body_bytes"),
        ("server", "max_connections"),
        ("server", "header_read_timeout_ms"),
        ("server", "client_body_timeout_ms"),
        ("server", "keepalive_timeout_ms"),
        ("server", "http2_keepalive_interval_ms"),
        ("server", "http2_keepalive_timeout_ms"),
        ("upstream", "connect_timeout_ms"),
        ("upstream", "timeout_ms"),
        ("upstream", "max_response_bytes"),
        ("upstream", "pool_idle_timeout_ms"),
        ("shutdown", "grace_secs"),
        ("reload", "interval_secs"),
        ("rate_limit", "requests_per_second"),
        ("rate_limit", "burst"),
        ("rate_limit", "upstream_backoff_secs"),
        ("cache", "max_ttl_secs"),
        ("cache", "max_bytes"),
    ] {
        let got = assert_paths(
            &with_tenant(&format!("[{section}]\n{key} = 0\n")),
            &[&format!("{section}.{key}")],
        );
        assert!(got[0].ends_with("must be greater than 0"), "{got:?}");
    }
}

#[test]
fn rate_limit_and_cache_sections() {
    let c = parse_ok(&with_tenant(
        r#"
[rate_limit]
requests_per_second = 5
burst = 7
mode = "queue"
max_wait_ms = 250
enforce = false

[cache]
max_ttl_secs = 120
safety_margin_secs = 2
max_bytes = 1000
stale_if_error_secs = 30

[cache.methods]
GetTenant = { ttl_secs = 60 }
"#,
    ));
    let rl = &c.rate_limit;
    assert_eq!(
        (rl.default.requests_per_second.get(), rl.default.burst.get()),
        (5, 7)
    );
    assert_eq!(
        rl.mode,
        RateMode::Queue {
            max_wait: Duration::from_millis(250)
        }
    );
    assert!(!rl.enforce);
    assert_eq!(c.cache.max_ttl, Duration::from_secs(120));
    assert_eq!(c.cache.stale_if_error, Duration::from_secs(30));
    let get_tenant = crate::catalogue::Catalogue::get()
        .lookup("/v1/partner.Etelecom/GetTenant")
        .expect("GetTenant");
    assert_eq!(
        c.cache.fixed_ttl.get(&get_tenant.id),
        Some(&Duration::from_secs(60))
    );
}

#[test]
fn burst_defaults_to_the_rate_given_next_to_it() {
    let c = parse_ok(&with_tenant("[rate_limit]\nrequests_per_second = 100\n"));
    assert_eq!(c.rate_limit.default.burst.get(), 100);
    let c = parse_ok(&with_tenant("[rate_limit]\nburst = 7\n"));
    assert_eq!(
        (
            c.rate_limit.default.requests_per_second.get(),
            c.rate_limit.default.burst.get()
        ),
        (10, 7)
    );
}

#[test]
fn rate_limit_and_cache_problems() {
    assert_paths(
        &with_tenant(
            r#"
[rate_limit]
mode = "queue"

[cache.methods]
CreateExtension = { ttl_secs = 60 }
NoSuchMethod = { ttl_secs = 60 }
GetTenant = { ttl_secs = 9999 }
"#,
        ),
        &[
            "rate_limit.max_wait_ms",
            "cache.methods.CreateExtension",
            "cache.methods.GetTenant.ttl_secs",
            "cache.methods.NoSuchMethod",
        ],
    );
}

#[test]
fn tenant_and_partner_rate_limit_overrides() {
    let c = parse_ok(&with_tenant(
        "[partner]\napi_key = { env = \"PARTNER_API_KEY\" }\nrate_limit = { requests_per_second = 3 }\n",
    ));
    let p = c.partner.expect("partner").rate_limit.expect("override");
    assert_eq!((p.requests_per_second.get(), p.burst.get()), (3, 3));
}

#[test]
fn files_read_are_listed_for_the_reload_watcher() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "keys/shop_key", &format!("{ACME_SHOP_KEY}\n"));
    let cfg_path = dir.path().join("gw.toml");
    write(
        dir.path(),
        "gw.toml",
        "[[tenants]]\nid = \"acme\"\nshop_key = { file = \"keys/shop_key\" }\n",
    );
    let c = Config::load(&cfg_path, &fake_env).expect("config");
    assert_eq!(c.files, vec![cfg_path, dir.path().join("keys/shop_key")]);
}

#[test]
fn connection_and_body_timeouts() {
    let c = parse_ok(&with_tenant(
        "[server]\nclient_body_timeout_ms = 500\nrequest_timeout_ms = 2000\n\
         keepalive_timeout_ms = 3000\nhttp2_keepalive_interval_ms = 4000\n\
         http2_keepalive_timeout_ms = 600\n",
    ));
    let t = c.server.timeouts;
    assert_eq!(
        t.body_limits(7),
        crate::body::BodyLimits {
            max_bytes: 7,
            between_reads: Duration::from_millis(500),
            total: Duration::from_secs(2),
        }
    );
    assert_eq!(t.keepalive, Duration::from_secs(3));
    assert_eq!(t.http2_keepalive_interval, Duration::from_secs(4));
    assert_eq!(t.http2_keepalive_timeout, Duration::from_millis(600));
    let view = c.view();
    assert_eq!(view["server"]["request_timeout_ms"], 2000);
    assert_eq!(view["server"]["keepalive_timeout_ms"], 3000);
    // Every problem at once: a zero total, and a gap longer than the total.
    let got = assert_paths(
        &with_tenant("[server]\nrequest_timeout_ms = 0\nkeepalive_timeout_ms = \"1s\"\n"),
        &[
            "server.request_timeout_ms",
            "server.client_body_timeout_ms",
            "server.keepalive_timeout_ms",
        ],
    );
    assert!(
        got[1].ends_with("must not exceed server.request_timeout_ms"),
        "{got:?}"
    );
}

#[test]
fn max_header_bytes_bounds() {
    let mhb = |n: u64| with_tenant(&format!("[server]\nmax_header_bytes = {n}\n"));
    assert_eq!(parse_ok(&mhb(8192)).server.max_header_bytes, 8192);
    assert_eq!(parse_ok(&mhb(1_048_576)).server.max_header_bytes, 1_048_576);
    for n in [0, 8191, 1_048_577] {
        assert_paths(&mhb(n), &["server.max_header_bytes"]);
    }
}

#[test]
fn max_json_depth_bounds() {
    let d = |n: i64| with_tenant(&format!("[server]\nmax_json_depth = {n}\n"));
    assert_eq!(parse_ok(&d(1)).server.max_json_depth, 1);
    assert_eq!(parse_ok(&d(1024)).server.max_json_depth, 1024);
    for n in [0, 1025, -1] {
        assert_paths(&d(n), &["server.max_json_depth"]);
    }
}

#[test]
fn unknown_methods_values() {
    let um = |v: &str| with_tenant(&format!("[routing]\nunknown_methods = \"{v}\"\n"));
    assert_eq!(
        parse_ok(&um("forward")).routing.unknown_methods,
        UnknownMethods::Forward
    );
    assert_eq!(
        parse_ok(&um("reject")).routing.unknown_methods,
        UnknownMethods::Reject
    );
    for bad in ["Reject", "drop", ""] {
        assert_paths(&um(bad), &["routing.unknown_methods"]);
    }
}

#[test]
fn values_of_the_wrong_type_are_reported_once_each() {
    let text = r#"
[server]
listen = 8080
tenant_header = ["x-tenant-id"]
default_tenant = 7
allowed_callers = "10.0.0.0/8"
max_body_bytes = "1MB"
max_connections = -1
header_read_timeout_ms = 1.5
max_header_bytes = true
grace_ms = "25s"

[upstream]
base_url = { url = "https://api.etelecom.vn" }
connect_timeout_ms = "3s"
timeout_ms = -5
ca_file = 1
allow_insecure_http = "yes"
max_response_bytes = 1e9
pool_idle_timeout_ms = []
pool_max_idle_per_host = "64"

[routing]
unknown_methods = false

[partner]
api_key = { env = "PARTNER_API_KEY" }
allowed_callers = [1, 2]
"#;
    assert_paths(
        &with_tenant(text),
        &[
            "server.listen",
            "server.tenant_header",
            "server.default_tenant",
            "server.allowed_callers",
            "server.max_body_bytes",
            "server.max_connections",
            "server.header_read_timeout_ms",
            "server.max_header_bytes",
            "server.grace_ms",
            "upstream.base_url",
            "upstream.allow_insecure_http",
            "upstream.connect_timeout_ms",
            "upstream.timeout_ms",
            "upstream.ca_file",
            "upstream.max_response_bytes",
            "upstream.pool_idle_timeout_ms",
            "upstream.pool_max_idle_per_host",
            "routing.unknown_methods",
            "partner.allowed_callers",
        ],
    );
}

#[test]
fn sections_of_the_wrong_type() {
    let text = r#"
server = "127.0.0.1:8080"
upstream = ["https://api.etelecom.vn"]
routing = 1
partner = "999:CANARY-inline-secret"
tenants = "acme"
"#;
    let got = assert_paths(
        text,
        &["server", "upstream", "routing", "partner", "tenants"],
    );
    assert!(got[0].contains("must be a table"), "{got:?}");

    assert_paths(
        "[tenants]\nid = \"acme\"\napi_key = { env = \"ACME_API_KEY\" }\n",
        &["tenants"],
    );
    assert_paths(
        "tenants = [\"acme\", { id = \"b\", api_key = { env = \"ACME_API_KEY\" } }]\n",
        &["tenants[0]"],
    );
}

#[test]
fn cidr_lists_report_each_bad_entry_by_index() {
    let text = r#"
[server]
allowed_callers = ["10.0.0.0/8", "10.0.0.0/33", "::1", "300.1.1.1", "fe80::/129", "10.0.0.1/8"]

[partner]
api_key = { env = "PARTNER_API_KEY" }
allowed_callers = ["", "10.9.0.0/16"]

[[tenants]]
id = "acme"
api_key = { env = "ACME_API_KEY" }
allowed_callers = ["10.1.0.0/16", "10.1.0.0/16/2"]
"#;
    let got = assert_paths(
        text,
        &[
            "server.allowed_callers[1]",
            "server.allowed_callers[3]",
            "server.allowed_callers[4]",
            "partner.allowed_callers[0]",
            "tenants[0].allowed_callers[1]",
        ],
    );
    assert!(got[2].contains("\"fe80::/129\""), "{got:?}");

    // An empty list is allowed (nobody may call) and differs from an absent one.
    let c = parse_ok(&with_tenant("[server]\nallowed_callers = []\n"));
    assert!(c.server.allowed_callers.is_empty());
}

#[test]
fn tenant_ids() {
    let tenant =
        |id: &str| format!("[[tenants]]\nid = {id}\napi_key = {{ env = \"ACME_API_KEY\" }}\n");
    let max = "a".repeat(64);
    assert_eq!(
        &*parse_ok(&tenant(&format!("\"{max}\""))).tenants[0].id,
        max
    );
    for bad in [
        "\"\"".to_owned(),
        format!("\"{}\"", "a".repeat(65)),
        "\"a b\"".to_owned(),
        "\"a/b\"".to_owned(),
        "\"ténant\"".to_owned(),
        // A wrong type is one problem, not also "is required".
        "7".to_owned(),
    ] {
        assert_paths(&tenant(&bad), &["tenants[0].id"]);
    }
    let got = assert_paths(
        "[[tenants]]\napi_key = { env = \"ACME_API_KEY\" }\n",
        &["tenants[0].id"],
    );
    assert!(got[0].ends_with("is required"), "{got:?}");
    assert!(valid_tenant_id("Acme-1.shop_2"));
    assert!(!valid_tenant_id("acme:1"));
}

#[test]
fn a_tenant_needs_at_least_one_key() {
    let got = assert_paths(
        "[[tenants]]\nid = \"acme\"\nallowed_callers = [\"10.0.0.0/8\"]\n",
        &["tenants[0]"],
    );
    assert!(got[0].contains("has no key at all"), "{got:?}");

    let c = parse_ok("[[tenants]]\nid = \"acme\"\nshop_key = { env = \"ACME_SHOP_KEY\" }\n");
    assert_eq!(c.tenants[0].api_key, None);
    assert_eq!(c.tenants[0].shop_key, Some(key(ACME_SHOP_KEY)));
}

#[test]
fn partner_section() {
    let c = parse_ok(&with_tenant(
        "[partner]\napi_key = { env = \"PARTNER_API_KEY\" }\n",
    ));
    let partner = c.partner.expect("partner");
    assert_eq!(partner.api_key, key(PARTNER_KEY));
    assert_eq!(partner.allowed_callers, None);

    let got = assert_paths(&with_tenant("[partner]\n"), &["partner.api_key"]);
    assert!(got[0].contains("is required"), "{got:?}");
    assert_paths(
        &with_tenant("[partner]\nallowed_callers = [\"nope\"]\n"),
        &["partner.allowed_callers[0]", "partner.api_key"],
    );
    assert_paths(
        &with_tenant("[partner]\napi_key = { env = \"UNSET_PARTNER_KEY\" }\n"),
        &["partner.api_key.env"],
    );
}

#[test]
fn a_config_without_any_key_is_refused() {
    for text in [
        "",
        "[server]\nlisten = \"127.0.0.1:8080\"\n",
        "tenants = []\n",
    ] {
        let got = assert_paths(text, &["tenants"]);
        assert!(got[0].contains("at least one key"), "{got:?}");
    }
}

#[test]
fn no_tenants_is_valid_for_a_partner_only_gateway() {
    let c = parse_ok("[partner]\napi_key = { env = \"PARTNER_API_KEY\" }\n");
    assert!(c.tenants.is_empty());
    assert!(c.partner.is_some());
}

mod sms;
