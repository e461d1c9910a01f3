//! Reloads without a restart: key and SMS password rotation by a Kubernetes Secret volume swap
//! under a request loop (file watching alone), and invalid reloads (an emptied secret, SIGHUP, invalid TOML) refused while the
//! running config stays.

use std::path::Path;
use std::time::{Duration, Instant};

use etelecom_gateway::mock::DEMO_ACME_SMS_USERNAME;
use etelecom_gateway::mock::{DEMO_ACME_ID, DEMO_ACME_SHOP_KEY, DEMO_PARTNER_KEY};
use etelecom_gateway::mock::{MockAccounts, MockShop, MockUpstream, Received};

use crate::common::proc::Gateway;
use crate::common::{post, post_with, sample, write};
use crate::support::{
    CALL_LOGS, Http, config, fingerprint, poll, runtime, start_mock, write_config,
};

/// Shop 1001's key before and after a rotation; the mock accepts both (two `MockShop` entries
/// with the same id, see [`rotating_accounts`]).
const OLD_KEY: &str = "1001:ops-old-api-key-4f1d2c3b4a5968778695a4b3c2d1e0f1a2b3c4d5e6f708192a3b";
const NEW_KEY: &str = "1001:ops-new-api-key-9e8d7c6b5a4938271605f4e3d2c1b0a9f8e7d6c5b4a39281706f";
/// Shop 1001's SMS password before and after a rotation (the same two `MockShop` entries).
const OLD_SMS_PASSWORD: &str = "ops-old-sms-password 7c1e";
const NEW_SMS_PASSWORD: &str = "ops-new-sms-password 2b9d";

/// Bound for a reload to show up in the log after the file change or the signal.
const RELOAD: Duration = Duration::from_secs(10);

/// Shop 1001 twice, once with the old and once with the new key and SMS password: the mock takes
/// the first shop whose credential matches, so both are accepted as shop 1001 (what eTelecom
/// does while both credentials of a rotation are valid).
fn rotating_accounts() -> MockAccounts {
    let shop = |api_key: &str, sms_password: &str| MockShop {
        id: DEMO_ACME_ID.into(),
        api_key: api_key.into(),
        shop_key: DEMO_ACME_SHOP_KEY.into(),
        sms_username: DEMO_ACME_SMS_USERNAME.into(),
        sms_password: sms_password.into(),
    };
    MockAccounts {
        shops: vec![
            shop(OLD_KEY, OLD_SMS_PASSWORD),
            shop(NEW_KEY, NEW_SMS_PASSWORD),
        ],
        partner_key: DEMO_PARTNER_KEY.into(),
    }
}

/// Replaces `path` atomically (write a sibling, rename over), so a reload never reads it half
/// written.
fn replace(path: &Path, text: &str) {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn symlink(target: &str, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// `config_reloads_total{result}`; 0 when absent.
fn reloads(metrics: &str, result: &str) -> f64 {
    sample(
        metrics,
        "etelecom_gateway_config_reloads_total",
        &[("result", result)],
    )
    .unwrap_or(0.0)
}

/// The bearer token the mock received in `r` (`-` for none).
fn bearer(r: &Received) -> String {
    r.headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("-")
        .to_owned()
}

/// The SMS password the mock received in the body of `r` (`-` for none).
fn sms_password(r: &Received) -> String {
    serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| v["password"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "-".into())
}

/// The bearer tokens the mock received on `path`, oldest first.
fn keys_received(mock: &MockUpstream, path: &str) -> Vec<String> {
    mock.received()
        .iter()
        .filter(|r| r.path == path)
        .map(bearer)
        .collect()
}

/// Neither key of the rotation is in `log`.
fn assert_no_key(log: &str) {
    for key in [OLD_KEY, NEW_KEY] {
        assert!(!log.contains(key), "a key reached the log");
    }
}

/// One secret rotated by a Kubernetes Secret volume swap while requests keep coming.
struct Rotation {
    /// The file's name in the volume.
    file: &'static str,
    old: &'static str,
    new: &'static str,
    /// The `[[tenants]]` block reading the secret from the given path.
    tenants: fn(&Path) -> String,
    /// Extra top-level sections.
    extra: &'static str,
    /// The gateway path called, the body sent, and the path the mock receives it on.
    path: &'static str,
    body: &'static str,
    upstream_path: &'static str,
    /// The secret as the mock received it in one request.
    received: fn(&Received) -> String,
    /// Where `GET /config` shows the secret's fingerprint.
    view: fn(&serde_json::Value) -> &serde_json::Value,
}

/// A Secret volume as the kubelet lays it out: `..2026_a/<file>`, `..data -> ..2026_a`,
/// `<file> -> ..data/<file>`. The kubelet's update (new timestamped dir, `..data_tmp` renamed
/// over `..data`) is picked up by file watching alone (the reload interval is an hour): requests
/// switch to the new secret without a restart, none fails, and the old one is not sent again.
fn secret_swap_under_load(rot: &Rotation) {
    const MAX_REQUESTS: usize = 4000;
    const MAX_TIME: Duration = Duration::from_secs(20);
    /// Requests sent after the reload was logged, before the loop stops.
    const AFTER_RELOAD: usize = 20;
    /// Requests sent before the swap.
    const BEFORE_SWAP: usize = 5;

    let rt = runtime();
    let mock = start_mock(&rt, rotating_accounts());
    let dir = tempfile::tempdir().unwrap();
    let vol = dir.path().join("secret-volume");
    std::fs::create_dir_all(vol.join("..2026_a")).unwrap();
    write(&vol.join("..2026_a"), rot.file, &format!("{}\n", rot.old));
    symlink("..2026_a", &vol.join("..data"));
    symlink(&format!("..data/{}", rot.file), &vol.join(rot.file));
    let tenants = (rot.tenants)(&vol.join(rot.file));
    let mut setup = config(&mock, Some(&tenants));
    setup
        .extra
        .push_str(&rot.extra.replace("$MOCK", &mock.base_url()));
    let env = [("OPS_SMS_USERNAME", DEMO_ACME_SMS_USERNAME)];
    let mut gw = Gateway::start_with(&write_config(dir.path(), &setup), &env);
    let pid = gw.proc.pid();
    let http = Http::new();

    let began = Instant::now();
    let mut statuses: Vec<(usize, u16, String)> = Vec::new();
    let mut sent = 0;
    let mut reload_logged_at: Option<usize> = None;
    rt.block_on(async {
        // Pacing only keeps the loop from hogging the CPU; nothing waits on it.
        let mut pace = tokio::time::interval(Duration::from_millis(5));
        for i in 0..MAX_REQUESTS {
            if began.elapsed() > MAX_TIME {
                break;
            }
            pace.tick().await;
            let r = http
                .try_send(post(gw.public, rot.path, Some("acme"), rot.body), false)
                .await
                .unwrap_or_else(|e| panic!("request {i}: {e}"));
            sent += 1;
            if r.status != 200 {
                statuses.push((i, r.status.as_u16(), r.text()));
            }
            if i + 1 == BEFORE_SWAP {
                // What the kubelet's atomic writer does.
                std::fs::create_dir(vol.join("..2026_b")).unwrap();
                write(&vol.join("..2026_b"), rot.file, &format!("{}\n", rot.new));
                symlink("..2026_b", &vol.join("..data_tmp"));
                std::fs::rename(vol.join("..data_tmp"), vol.join("..data")).unwrap();
            }
            if reload_logged_at.is_none() && gw.proc.read_available() > 0 {
                let reloaded = gw
                    .proc
                    .log
                    .iter()
                    .any(|l| l.contains("\"message\":\"config reloaded\""));
                if reloaded {
                    reload_logged_at = Some(i);
                }
            }
            if reload_logged_at.is_some_and(|at| i >= at + AFTER_RELOAD) {
                break;
            }
        }
    });
    let log = gw.proc.log_text();
    let reload_at = reload_logged_at.unwrap_or_else(|| {
        panic!("no \"config reloaded\" within {MAX_TIME:?} / {MAX_REQUESTS} requests; log:\n{log}")
    });
    assert!(statuses.is_empty(), "requests that failed: {statuses:?}");
    assert!(
        gw.proc.is_running() && gw.proc.pid() == pid,
        "the gateway restarted"
    );
    let line = gw
        .proc
        .log
        .iter()
        .find(|l| l.contains("\"message\":\"config reloaded\""))
        .unwrap();
    assert!(line.contains("FileChange"), "reload trigger: {line}");

    let secrets: Vec<String> = mock
        .received()
        .iter()
        .filter(|r| r.path == rot.upstream_path)
        .map(rot.received)
        .collect();
    // No request lost: every one the loop sent reached the upstream, once.
    assert_eq!(secrets.len(), sent, "requests sent vs received upstream");
    assert!(secrets.len() >= reload_at + AFTER_RELOAD, "{sent} requests");
    assert!(
        secrets[..BEFORE_SWAP].iter().all(|k| k == rot.old),
        "before the swap the old secret is sent"
    );
    assert!(
        secrets.iter().all(|k| k == rot.old || k == rot.new),
        "only the two secrets are ever sent"
    );
    let first_new = secrets
        .iter()
        .position(|k| k == rot.new)
        .expect("the mock received the new secret");
    // The loop is sequential and the gateway swaps its state atomically: once one request
    // carried the new secret, every later one does.
    let old_after: Vec<usize> = secrets
        .iter()
        .enumerate()
        .skip(first_new)
        .filter(|(_, k)| *k == rot.old)
        .map(|(i, _)| i)
        .collect();
    assert!(
        old_after.is_empty(),
        "the old secret was sent after the new one (first new at {first_new}): {old_after:?}"
    );
    let tail = &secrets[secrets.len() - AFTER_RELOAD..];
    assert!(
        tail.iter().all(|k| k == rot.new),
        "last {AFTER_RELOAD}: new secret"
    );

    // The admin view shows the new secret's fingerprint.
    let view = rt.block_on(http.get(&gw.admin_url("/config"))).json();
    assert_eq!(
        (rot.view)(&view),
        &serde_json::Value::String(format!("sha256:{}", fingerprint(rot.new)))
    );
    for secret in [rot.old, rot.new] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
}

#[test]
fn kubernetes_secret_swap_rotates_the_key_without_a_restart() {
    secret_swap_under_load(&Rotation {
        file: "api_key",
        old: OLD_KEY,
        new: NEW_KEY,
        tenants: |file| {
            format!(
                "[[tenants]]\nid = \"acme\"\napi_key = {{ file = \"{}\" }}\n",
                file.display()
            )
        },
        extra: "",
        path: CALL_LOGS,
        body: "{}",
        upstream_path: CALL_LOGS,
        received: bearer,
        view: |v| &v["tenants"][0]["api_key"],
    });
}

/// The same swap for an SMS password: `SendMessage` keeps succeeding and the SMS host receives
/// the new password in the body from the reload on.
#[test]
fn kubernetes_secret_swap_rotates_the_sms_password_without_a_restart() {
    secret_swap_under_load(&Rotation {
        file: "sms_password",
        old: OLD_SMS_PASSWORD,
        new: NEW_SMS_PASSWORD,
        tenants: |file| {
            format!(
                "[[tenants]]\nid = \"acme\"\nsms = {{ username = {{ env = \"OPS_SMS_USERNAME\" }}, password = {{ file = \"{}\" }} }}\n",
                file.display()
            )
        },
        extra: "[sms]\nbase_url = \"$MOCK\"\n",
        path: "/sms/api/OmniMessage/SendMessage",
        body: r#"{"phonenumber":"84901234567","templatecode":"OTP1","list_param":{"otp":"1"}}"#,
        upstream_path: "/api/OmniMessage/SendMessage",
        received: sms_password,
        view: |v| &v["tenants"][0]["sms"]["password"],
    });
}

/// An emptied secret file, then SIGHUP with it still empty, then invalid TOML in the config:
/// each reload is refused (log and metrics), the process stays up and requests keep succeeding
/// with the running key. Fixing the secret (with the new key) applies; restoring the config
/// file to what is running is "unchanged".
#[test]
fn an_invalid_reload_is_refused_and_the_running_config_stays() {
    let rt = runtime();
    let mock = start_mock(&rt, rotating_accounts());
    let dir = tempfile::tempdir().unwrap();
    let secret = write(dir.path(), "acme.api", &format!("{OLD_KEY}\n"));
    let tenants = "[[tenants]]\nid = \"acme\"\napi_key = { file = \"acme.api\" }\n";
    let config = write_config(dir.path(), &config(&mock, Some(tenants)));
    let good_config = std::fs::read_to_string(&config).unwrap();
    let mut gw = Gateway::start(&config);
    let pid = gw.proc.pid();
    let http = Http::new();
    let metrics_url = gw.admin_url("/metrics");
    let metrics = || rt.block_on(http.get(&metrics_url)).text();
    // One request; asserts 200 and returns the key the mock received for it.
    let call = || {
        let r = rt.block_on(http.send(post(gw.public, CALL_LOGS, Some("acme"), "{}")));
        assert_eq!(r.status, 200, "{}", r.text());
        keys_received(&mock, CALL_LOGS).pop().unwrap()
    };
    let refused = |trigger: &'static str| {
        move |l: &str| l.contains("config reload refused") && l.contains(trigger)
    };

    assert_eq!(call(), OLD_KEY);
    let m = metrics();
    assert_eq!(reloads(&m, "success"), 1.0, "the start counts as one load");
    assert_eq!(reloads(&m, "failure"), 0.0);

    // 1. The secret file is emptied: the file watcher's reload is refused.
    std::fs::write(&secret, "").unwrap();
    let line = gw
        .proc
        .wait_line(RELOAD, "refusing the empty secret", refused("FileChange"));
    assert!(line.contains("is empty"), "{line}");
    assert!(reloads(&metrics(), "failure") >= 1.0);
    assert_eq!(call(), OLD_KEY, "the running key stays");

    // 2. SIGHUP with the file still empty: refused again, the process lives on.
    let failures = reloads(&metrics(), "failure");
    gw.proc.signal("HUP");
    gw.proc
        .wait_line(RELOAD, "refusing on SIGHUP", refused("Signal"));
    assert!(gw.proc.is_running(), "SIGHUP must not end the process");
    assert!(reloads(&metrics(), "failure") > failures);
    assert_eq!(call(), OLD_KEY);

    // 3. Fixed, with the rotated key: applied.
    let successes = reloads(&metrics(), "success");
    replace(&secret, &format!("{NEW_KEY}\n"));
    gw.proc.wait_line(RELOAD, "\"config reloaded\"", |l| {
        l.contains("\"message\":\"config reloaded\"")
    });
    assert!(reloads(&metrics(), "success") > successes);
    assert_eq!(call(), NEW_KEY);
    // The scrubber follows the reload: eTelecom quoting the new key never reaches the caller.
    let echo = [("x-mock-behaviour", "echo_auth")];
    let echoed = rt.block_on(http.send(post_with(gw.public, CALL_LOGS, Some("acme"), "{}", &echo)));
    assert_eq!(echoed.status, 401, "{}", echoed.text());
    let secret_part = NEW_KEY.split_once(':').unwrap().1;
    assert!(!echoed.text().contains(secret_part), "{}", echoed.text());
    assert!(echoed.text().contains("[REDACTED]"), "{}", echoed.text());

    // 4. Invalid TOML in the config file itself: refused, the running config stays.
    let failures = reloads(&metrics(), "failure");
    replace(&config, "[server\nlisten = \n");
    let line = gw
        .proc
        .wait_line(RELOAD, "refusing invalid TOML", refused("FileChange"));
    assert!(line.contains("TOML syntax"), "{line}");
    assert!(reloads(&metrics(), "failure") > failures);
    assert_eq!(call(), NEW_KEY);

    // 5. The config file back as it was: the same as what runs, so "unchanged".
    let unchanged = reloads(&metrics(), "unchanged");
    replace(&config, &good_config);
    rt.block_on(poll(
        RELOAD,
        Duration::from_millis(50),
        "config_reloads_total{result=\"unchanged\"} to grow",
        || async {
            let m = http.get(&metrics_url).await.text();
            (reloads(&m, "unchanged") > unchanged).then_some(())
        },
    ));
    assert_eq!(call(), NEW_KEY);
    assert!(gw.proc.is_running() && gw.proc.pid() == pid);
    gw.proc.read_available();
    let log = gw.proc.log_text();
    assert_no_key(&log);
}
