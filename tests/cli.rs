//! The command line as ops use it: `check` and its exit codes, `serve` refusing a bad config,
//! every shipped config file loading, and the redaction canary run at trace level.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

use common::proc::{BIN, Gateway, Proc, START};
use common::{post_with, write};
use etelecom_gateway::config::Config;
use etelecom_gateway::mock::{MockAccounts, MockShop};
use etelecom_gateway::secret::SecretSource;

/// Answers every env var and every secret file with a dummy key of the right shape.
struct FakeSecrets;

impl SecretSource for FakeSecrets {
    fn env(&self, name: &str) -> Option<String> {
        Some(if name.contains("SHOP_KEY") {
            "shop1001:dummy".into()
        } else {
            "1001:dummy".into()
        })
    }
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        let name = path.to_string_lossy();
        Ok(if name.contains("shop_key") {
            "shop1001:dummy\n".into()
        } else {
            "1001:dummy\n".into()
        })
    }
}

#[test]
fn every_file_in_config_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let cfg = Config::load(&path, &FakeSecrets)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                cfg.warnings.is_empty(),
                "{}: {:?}",
                path.display(),
                cfg.warnings
            );
            seen += 1;
        }
    }
    assert!(
        seen >= 2,
        "expected the example configs in {}",
        dir.display()
    );
}

#[test]
fn check_accepts_a_valid_config_and_prints_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "k", "1001:CANARY-check-key\n");
    let cfg = write(
        dir.path(),
        "gw.toml",
        "[[tenants]]\nid = \"acme\"\napi_key = { file = \"k\" }\nshop_key = { env = \"CHECK_SHOP_KEY\" }\n",
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&cfg)
        .env("CHECK_SHOP_KEY", "shop1001:CANARY-check-shop")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("ok:"), "{stdout}");
    assert!(!stdout.contains("CANARY") && !stderr.contains("CANARY"));
}

#[test]
fn check_lists_every_problem_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "gw.toml",
        r#"
bogus = 1
[server]
listen = "nowhere"
allowed_callers = ["10.0.0.0/33"]
[upstream]
base_url = "http://api.etelecom.vn"
[[tenants]]
id = "acme"
api_key = "1001:CANARY-inline"
[[tenants]]
id = "acme"
api_key = { env = "CHECK_UNSET_VAR" }
[[tenants]]
id = "empty"
"#,
    );
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&cfg)
        .env_remove("CHECK_UNSET_VAR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(64), "{stdout}");
    for path in [
        "bogus: unknown key",
        "server.listen:",
        "server.allowed_callers[0]:",
        "upstream.base_url:",
        "tenants[0].api_key:",
        "tenants[1].id: duplicate",
        "tenants[1].api_key.env: environment variable CHECK_UNSET_VAR is not set",
        "tenants[2]: has no key at all",
    ] {
        assert!(stdout.contains(path), "missing {path:?} in:\n{stdout}");
    }
    assert!(!stdout.contains("CANARY"), "{stdout}");
}

#[test]
fn config_path_can_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "gw.toml", "[server]\nlisten = \"bad\"\n");
    let out = Command::new(BIN)
        .arg("check")
        .env("ETELECOM_GATEWAY_CONFIG", &cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stdout).contains("server.listen"));
}

#[test]
fn serve_refuses_a_bad_config_with_64() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(dir.path(), "gw.toml", "[server]\nlisten = \"bad\"\n");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.listen"));
}

/// Canary keys and canary passwords through every flow at trace level: none may appear in any
/// log line or in any error body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_or_error_bodies_at_trace_level() {
    let accounts = MockAccounts {
        shops: vec![MockShop {
            id: "1001".into(),
            api_key: "1001:CANARY-api-key".into(),
            shop_key: "shop1001:CANARY-shop-key".into(),
            sms_username: "CANARY-sms-user".into(),
            sms_password: "CANARY-sms-password".into(),
        }],
        partner_key: "9000:CANARY-partner-key".into(),
    };
    let mock = common::start_mock(accounts, true).await;
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ca.pem", mock.ca_pem().unwrap());
    write(dir.path(), "shop.key", "shop1001:CANARY-shop-key\n");
    write(dir.path(), "partner.key", "9000:CANARY-partner-key\n");
    let cfg = write(
        dir.path(),
        "gw.toml",
        &format!(
            r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[shutdown]
drain_delay_secs = 0
[upstream]
base_url = "{}"
ca_file = "ca.pem"
timeout_ms = 500
[partner]
api_key = {{ file = "partner.key" }}
[[tenants]]
id = "acme"
api_key = {{ env = "CANARY_API_KEY" }}
shop_key = {{ file = "shop.key" }}
"#,
            mock.base_url()
        ),
    );
    let mut gw = Gateway::start_with(
        &cfg,
        &[
            ("RUST_LOG", "trace"),
            ("CANARY_API_KEY", "1001:CANARY-api-key"),
        ],
    );
    let client = common::client();
    let send = |path: &str, body: &str, extra: &[(&str, &str)]| {
        let req = post_with(gw.public, path, Some("acme"), body, extra);
        let client = client.clone();
        async move {
            let r = common::send(&client, req).await;
            (r.status, r.text())
        }
    };
    let caller = [
        ("authorization", "Bearer CANARY-caller-token"),
        ("cookie", "sid=CANARY-caller-cookie"),
    ];
    type Flow<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);
    let flows: Vec<Flow<'_>> = vec![
        (
            "/v1/shop.Etelecom/GetExtensionInfo",
            r#"{"extension_number":"101"}"#,
            &caller,
        ),
        ("/v1/partner.Etelecom/GetExtensions", "{}", &[]),
        (
            "/v1/partner.Etelecom/CreateExtension",
            r#"{"hotline_id":"1","extension_number":102}"#,
            &[],
        ),
        (
            "/v1/partner.Shop/CreateAccountUser",
            r#"{"full_name":"A","password":"CANARY-user-password","phone":"1"}"#,
            &[],
        ),
        (
            "/v1/shop.Zalo/ConnectOA",
            r#"{"code":"CANARY-oauth-code","oa_id":"1"}"#,
            &[],
        ),
        (
            "/v1/shop.Zalo/AuthorizeOA",
            r#"{"app_id":"1","app_secret":"CANARY-app-secret"}"#,
            &[],
        ),
        ("/v1/partner.Misc/CurrentAccount", "{}", &[]),
        (
            "/v1/shop.Etelecom/GetExtensionInfo",
            "{}",
            &[("x-mock-behaviour", "status=401")],
        ),
        // eTelecom quoting the key it was sent, for each key.
        (
            "/v1/shop.Etelecom/GetExtensionInfo",
            "{}",
            &[("x-mock-behaviour", "echo_auth")],
        ),
        (
            "/v1/partner.Etelecom/GetExtensions",
            "{}",
            &[("x-mock-behaviour", "echo_auth")],
        ),
        (
            "/v1/partner.Misc/CurrentAccount",
            "{}",
            &[("x-mock-behaviour", "echo_auth")],
        ),
        (
            "/v1/shop.Etelecom/GetExtensionInfo",
            "{}",
            &[("x-mock-behaviour", "hang")],
        ),
        (
            "/v1/shop.Etelecom/GetExtensionInfo",
            "{}",
            &[("x-mock-behaviour", "reset")],
        ),
        (
            "/v1/shop.Etelecom/GetExtensionInfo",
            "[\"CANARY-not-an-object\"]",
            &[],
        ),
        // A cache hit, an upstream quota answer, then the gateway's own 429 while paused.
        (
            "/v1/shop.Etelecom/GetExtensionInfo",
            r#"{"extension_number":"101"}"#,
            &[],
        ),
        (
            "/v1/partner.Etelecom/ListCallLogs",
            "{}",
            &[("x-mock-behaviour", "status=429;retry_after=5")],
        ),
        ("/v1/partner.Etelecom/ListCallLogs", "{}", &[]),
    ];
    let mut passwords = Vec::new();
    for (path, body, extra) in &flows {
        let (status, text) = send(path, body, extra).await;
        if status.is_success() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                collect_passwords(&v, &mut passwords);
            }
        } else {
            assert!(!text.contains("CANARY"), "{path}: error body leaks: {text}");
        }
    }
    assert!(
        !passwords.is_empty(),
        "the flows returned extension passwords"
    );
    assert_eq!(gw.proc.interrupt(), Some(0));
    let log = gw.proc.log_text();
    assert!(
        log.contains("\"message\":\"request\""),
        "access log present"
    );
    assert!(log.contains("response body"), "debug body logging ran");
    for line in &gw.proc.log {
        assert!(!line.contains("CANARY"), "log line leaks a canary: {line}");
        for p in &passwords {
            assert!(
                !line.contains(p.as_str()),
                "log line leaks a password: {line}"
            );
        }
    }
    mock.shutdown().await;
}

fn collect_passwords(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                match v {
                    serde_json::Value::String(s) if k == "extension_password" => {
                        out.push(s.clone())
                    }
                    _ => collect_passwords(v, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|i| collect_passwords(i, out)),
        _ => {}
    }
}

/// `demo` starts on a free port, its printed curl commands succeed (the last one being the error
/// case), and Ctrl-C stops it cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_runs_and_its_commands_work() {
    let mut cmd = Command::new(BIN);
    cmd.args(["demo", "--listen", "127.0.0.1:0"]);
    let mut demo = Proc::spawn(cmd);
    demo.wait_for(START, "Press Ctrl-C");
    let commands: Vec<String> = demo
        .log
        .iter()
        .filter(|l| l.trim_start().starts_with("curl "))
        .cloned()
        .collect();
    assert_eq!(commands.len(), 6, "{:?}", demo.log);
    let client = common::client();
    let mut statuses = Vec::new();
    for c in &commands {
        let r = common::send(&client, curl_to_request(c)).await;
        statuses.push(r.status.as_u16());
        if c.contains("/sms/") {
            // The SMS host accepted the message (not a business error).
            assert_eq!(r.json()["status"], "1", "{c}: {}", r.text());
        }
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 403], "{commands:#?}");
    assert_eq!(demo.interrupt(), Some(0), "{}", demo.log_text());
}

/// Parses the demo's `curl -s -i -X POST URL -H 'k: v' ... -d 'body'` lines.
fn curl_to_request(cmd: &str) -> http::Request<http_body_util::Full<bytes::Bytes>> {
    let mut parts = Vec::new();
    let mut rest = cmd.trim();
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix('\'') {
            let end = r.find('\'').unwrap();
            parts.push(r[..end].to_owned());
            rest = r[end + 1..].trim_start();
        } else {
            let end = rest.find(' ').unwrap_or(rest.len());
            parts.push(rest[..end].to_owned());
            rest = rest[end..].trim_start();
        }
    }
    let url = parts.iter().find(|p| p.starts_with("http://")).unwrap();
    let mut req = http::Request::post(url.as_str());
    let mut body = String::new();
    let mut it = parts.iter();
    while let Some(p) = it.next() {
        match p.as_str() {
            "-H" => {
                let (k, v) = it.next().unwrap().split_once(": ").unwrap();
                req = req.header(k, v);
            }
            "-d" => body = it.next().unwrap().clone(),
            _ => {}
        }
    }
    req.body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .unwrap()
}

/// The help screens: every option of `check`, `demo` and `mock-upstream` says what it is, and
/// each screen names the exit codes.
#[test]
fn help_explains_every_option_and_the_exit_codes() {
    let help = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["check", "--help"],
        &["demo", "--help"],
        &["mock-upstream", "--help"],
    ] {
        let text = help(args);
        assert!(text.contains("Exit codes:"), "{args:?}: {text}");
        for code in ["  0 ", "  1 ", "  64 ", "  130 "] {
            assert!(
                text.contains(code),
                "{args:?} lacks exit code {code:?}: {text}"
            );
        }
    }
    // Each option line is followed by its description, on the same line or the next.
    let described = |text: &str, flag: &str, words: &str| {
        let at = text
            .find(flag)
            .unwrap_or_else(|| panic!("{flag} in {text}"));
        let rest = &text[at..];
        let end = rest
            .match_indices("\n  -")
            .next()
            .map_or(rest.len(), |(i, _)| i);
        assert!(
            rest[..end].contains(words),
            "{flag} is not described with {words:?}: {}",
            &rest[..end]
        );
    };
    described(
        &help(&["check", "--help"]),
        "--config <CONFIG>",
        "config file",
    );
    described(
        &help(&["demo", "--help"]),
        "--listen <LISTEN>",
        "gateway listens",
    );
    described(&help(&["demo", "--help"]), "--admin <ADMIN>", "/metrics");
    described(
        &help(&["mock-upstream", "--help"]),
        "--listen <LISTEN>",
        "mock listens",
    );
}

/// `1 problem`, `1 tenant`: no "(1 problems)".
#[test]
fn counts_of_one_are_singular() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "k", "1001:plural-key\n");
    let tenant = "[[tenants]]\nid = \"acme\"\napi_key = { file = \"k\" }\n";
    let check = |name: &str, text: &str| {
        let path = write(dir.path(), name, text);
        let out = Command::new(BIN)
            .args(["check", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let ok = check("one.toml", tenant);
    assert!(
        ok.contains("is valid (1 tenant, partner key not configured)"),
        "{ok}"
    );
    let bad = check("bad.toml", &format!("[server]\nlisten = \"bad\"\n{tenant}"));
    assert!(
        bad.starts_with("invalid configuration (1 problem):"),
        "{bad}"
    );
}

/// A fatal error (here: the port is taken) is printed exactly once, in the chosen log format.
#[test]
fn a_fatal_error_is_printed_once() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "k", "1001:fatal-key\n");
    let cfg = write(
        dir.path(),
        "gw.toml",
        &format!(
            "[server]\nlisten = \"{addr}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [[tenants]]\nid = \"acme\"\napi_key = {{ file = \"k\" }}\n"
        ),
    );
    for format in ["json", "text"] {
        let out = Command::new(BIN)
            .args(["--log-format", format, "serve", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "info")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{format}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains(&format!("cannot listen on {addr}")))
            .collect();
        assert_eq!(lines.len(), 1, "{format}: {stderr}");
        match format {
            "json" => {
                let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
                assert_eq!(v["level"], "ERROR", "{v}");
            }
            _ => assert!(lines[0].starts_with("error: "), "{stderr}"),
        }
    }
    drop(taken);
}

/// `demo --log-format json` logs JSON lines (the demo's default is text); `--admin` serves
/// `/metrics` and `/config`; the access log's `duration_ms` is rounded to microseconds; a demo
/// without an admin listener does not mention `/readyz` when it drains.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_honours_log_format_and_admin() {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "demo",
        "--log-format",
        "json",
        "--listen",
        "127.0.0.1:0",
        "--admin",
        "127.0.0.1:0",
    ])
    .env("RUST_LOG", "info");
    let mut demo = Proc::spawn(cmd);
    let ready = demo.wait_for_each(START, &["gateway listening", "Press Ctrl-C"]);
    let v: serde_json::Value = serde_json::from_str(&ready[0]).expect("a JSON log line");
    let admin = v["admin"].as_str().unwrap().to_owned();
    let shown = demo.log_text();
    assert!(shown.contains(&format!("http://{admin}")), "{shown}");
    let client = common::client();
    let get = |path: &str| {
        http::Request::get(format!("http://{admin}{path}"))
            .body(http_body_util::Full::default())
            .unwrap()
    };
    let metrics = common::send(&client, get("/metrics")).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("etelecom_gateway_build_info"));
    let config = common::send(&client, get("/config")).await;
    assert_eq!(config.status, 200);
    assert_eq!(config.json()["tenants"][0]["id"], "acme");
    assert_eq!(demo.interrupt(), Some(0), "{}", demo.log_text());
    assert!(
        demo.log_text().contains("/readyz is 503"),
        "with an admin listener"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_text_logs_round_durations_and_skip_readyz_without_admin() {
    let mut cmd = Command::new(BIN);
    cmd.args(["demo", "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info");
    let mut demo = Proc::spawn(cmd);
    let ready = demo
        .wait_for_each(START, &["gateway listening", "Press Ctrl-C"])
        .swap_remove(0);
    assert!(
        !ready.trim_start().starts_with('{'),
        "text by default: {ready}"
    );
    let addr: std::net::SocketAddr = ready
        .split("listen=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no listen= in {ready}"));
    let r = common::send(
        &common::client(),
        common::post(
            addr,
            common::SHOP_API,
            Some("acme"),
            r#"{"extension_number":"101"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, 200);
    let line = demo.wait_for(START, "duration_ms=");
    let ms = line
        .split("duration_ms=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap();
    let decimals = ms.split_once('.').map_or(0, |(_, d)| d.len());
    assert!(decimals <= 3 && ms.parse::<f64>().is_ok(), "{line}");
    assert_eq!(demo.interrupt(), Some(0), "{}", demo.log_text());
    let log = demo.log_text();
    assert!(log.contains("draining"), "{log}");
    assert!(
        !log.contains("/readyz"),
        "no admin listener, no /readyz: {log}"
    );
}
