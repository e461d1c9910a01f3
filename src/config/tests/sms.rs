//! `[sms]` and the tenants' `sms` accounts and `sms_rate_limit`.

use super::*;

fn sms_env(name: &str) -> Option<String> {
    match name {
        "ACME_SMS_USERNAME" => Some("acme_sms".into()),
        "ACME_SMS_PASSWORD" => Some("CANARY sms password".into()),
        "BAD_SMS_PASSWORD" => Some("CANARY\nline".into()),
        other => fake_env(other),
    }
}

fn parse_sms(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new(NO_DIR), &sms_env)
}

const ACME_SMS: &str = r#"
[[tenants]]
id = "acme"
api_key = { env = "ACME_API_KEY" }
sms = { username = { env = "ACME_SMS_USERNAME" }, password = { env = "ACME_SMS_PASSWORD" } }
sms_rate_limit = { requests_per_second = 2, burst = 4 }
"#;

#[test]
fn the_sms_section_and_a_tenants_account() {
    let cfg = parse_sms(&format!("[sms]\ntimeout_ms = 9000\n{ACME_SMS}")).expect("valid");
    let sms = cfg.sms.as_ref().expect("[sms]");
    assert_eq!(sms.scheme, Scheme::HTTPS);
    assert_eq!(sms.authority.as_str(), "sms.etelecom.vn");
    assert_eq!(sms.timeout, Duration::from_millis(9000));
    assert_eq!(sms.connect_timeout, cfg.upstream.connect_timeout);
    let t = &cfg.tenants[0];
    let account = t.sms.as_ref().expect("sms account");
    assert_eq!(account.username.expose(), "acme_sms");
    assert_eq!(account.password.expose(), "CANARY sms password");
    let rl = t.sms_rate_limit.expect("sms_rate_limit");
    assert_eq!((rl.requests_per_second.get(), rl.burst.get()), (2, 4));
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    let shown = cfg.view().to_string();
    assert!(
        !shown.contains("CANARY") && !shown.contains("acme_sms"),
        "{shown}"
    );
    assert_eq!(
        cfg.view()["tenants"][0]["sms"]["password"],
        format!("sha256:{}", account.password.fingerprint())
    );
    assert_eq!(cfg.view()["sms"]["base_url"], "https://sms.etelecom.vn");
    let values = cfg.secret_values();
    for v in [&b"acme_sms"[..], b"CANARY sms password"] {
        assert!(values.contains(&v), "the scrubber knows {v:?}");
    }
}

#[test]
fn no_sms_section_means_no_sms_upstream_and_a_warning_for_accounts() {
    let cfg = parse_sms(ACME_SMS).expect("valid");
    assert!(cfg.sms.is_none());
    assert_eq!(cfg.view()["sms"], serde_json::Value::Null);
    assert_eq!(cfg.warnings.len(), 1, "{:?}", cfg.warnings);
    assert!(cfg.warnings[0].starts_with("sms: "), "{:?}", cfg.warnings);
}

#[test]
fn a_tenant_with_only_an_sms_account_is_valid() {
    let text = r#"
[sms]
[[tenants]]
id = "notify"
sms = { username = { env = "ACME_SMS_USERNAME" }, password = { env = "ACME_SMS_PASSWORD" } }
"#;
    let cfg = parse_sms(text).expect("valid");
    assert!(cfg.tenants[0].api_key.is_none() && cfg.tenants[0].sms.is_some());
}

#[test]
fn sms_problems_are_reported_with_their_key_paths_and_never_echo_a_secret() {
    let text = r#"
[sms]
base_url = "http://sms.example"
ca_file = "missing.pem"
timeout_ms = 0
colour = "blue"
[[tenants]]
id = "acme"
sms = { username = { env = "UNSET_SMS_USER" }, password = "CANARY-inline" }
[[tenants]]
id = "beta"
sms = { password = { env = "BAD_SMS_PASSWORD" }, extra = 1 }
sms_rate_limit = { burst = 0 }
"#;
    let err = parse_sms(text).unwrap_err();
    let got = paths(&err.problems);
    assert_eq!(
        got,
        [
            "sms.base_url",
            "sms.timeout_ms",
            "sms.ca_file",
            "sms.colour",
            "tenants[0].sms.username.env",
            "tenants[0].sms.password",
            "tenants[1].sms.username",
            "tenants[1].sms.password.env",
            "tenants[1].sms.extra",
            "tenants[1].sms_rate_limit.requests_per_second",
        ],
        "{:#?}",
        err.problems
    );
    assert_no_canary(&err.problems);
    assert!(
        err.problems[0].contains("sms.allow_insecure_http"),
        "{}",
        err.problems[0]
    );
}

#[test]
fn sms_secret_files_are_watched() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), "sms/user", "acme_sms\n");
    write(dir.path(), "sms/password", "pw with spaces\n");
    let text = r#"
[sms]
[[tenants]]
id = "acme"
sms = { username = { file = "sms/user" }, password = { file = "sms/password" } }
"#;
    let cfg = Config::parse(text, dir.path(), &sms_env).expect("valid");
    assert!(
        cfg.files.contains(&dir.path().join("sms/password")),
        "{:?}",
        cfg.files
    );
    assert!(
        cfg.files.contains(&dir.path().join("sms/user")),
        "{:?}",
        cfg.files
    );
    let account = cfg.tenants[0].sms.as_ref().expect("sms");
    assert_eq!(account.password.expose(), "pw with spaces");
}
