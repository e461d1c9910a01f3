//! Trace logging must not feed itself: with `RUST_LOG=trace` and the log written to a file in the
//! config file's folder (which the gateway watches), an idle gateway's log stops growing and its
//! CPU stays near zero; a Kubernetes `..data` swap in that same folder is still seen and applied;
//! and SIGTERM still stops it promptly.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etelecom_gateway::mock::MockAccounts;

use crate::common::proc::{BIN, START};
use crate::common::write;
use crate::support::{Http, fingerprint, poll, runtime, start_mock};

/// How long the log must stay the same size to count as quiet.
const QUIET_FOR: Duration = Duration::from_secs(1);
/// The most an idle gateway may take to fall quiet after start.
const SETTLE: Duration = Duration::from_secs(15);

/// The gateway with stderr going to `log`; killed on drop.
struct Logged(Child);

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn symlink(target: &str, link: &Path) {
    std::os::unix::fs::symlink(target, link).unwrap();
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// utime + stime of `pid`, in clock ticks (1/100 s on Linux).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // Fields 14 and 15 of stat(5), counted after the command name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Polls (every 100 ms, at most `within`) until the file has kept one size for [`QUIET_FOR`];
/// returns (the size, the CPU ticks spent during that quiet window).
fn wait_quiet(log: &Path, pid: u32, within: Duration) -> (u64, u64) {
    let deadline = Instant::now() + within;
    let mut since = (Instant::now(), size(log), cpu_ticks(pid));
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = size(log);
        if now != since.1 {
            since = (Instant::now(), now, cpu_ticks(pid));
        } else if since.0.elapsed() >= QUIET_FOR {
            return (now, cpu_ticks(pid) - since.2);
        }
        assert!(
            Instant::now() < deadline,
            "the log never stopped growing: {} bytes after {within:?}",
            size(log)
        );
    }
}

#[test]
fn trace_logging_into_the_watched_folder_stays_quiet_and_reloads_still_work() {
    let rt = runtime();
    let mock = start_mock(&rt, MockAccounts::demo());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("..2026_a")).unwrap();
    write(&d.join("..2026_a"), "api_key", "1001:trace-key-a\n");
    symlink("..2026_a", &d.join("..data"));
    symlink("..data/api_key", &d.join("api_key"));
    let config = write(
        d,
        "gw.toml",
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [upstream]\nbase_url = \"{}\"\n[reload]\ninterval_secs = 3600\n\
             [shutdown]\ndrain_delay_secs = 0\ngrace_secs = 2\n\
             [[tenants]]\nid = \"acme\"\napi_key = {{ file = \"api_key\" }}\n",
            mock.base_url()
        ),
    );
    let log = d.join("gateway.log");
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "trace")
        .env_remove("ETELECOM_GATEWAY_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut gw = Logged(child);
    let pid = gw.0.id();
    let text = || std::fs::read_to_string(&log).unwrap_or_default();

    let admin = rt.block_on(poll(
        START,
        Duration::from_millis(50),
        "gateway listening",
        || async {
            text()
                .lines()
                .find(|l| l.contains("\"message\":\"gateway listening\""))
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v["admin"].as_str().unwrap().to_owned()
                })
        },
    ));
    assert!(
        text().contains("watching for config changes"),
        "the folder is watched"
    );

    // Idle: the log stops growing, and the process spends (almost) no CPU meanwhile.
    let (quiet_at, ticks) = wait_quiet(&log, pid, SETTLE);
    assert!(
        quiet_at < 256 * 1024,
        "{quiet_at} bytes of log from an idle start"
    );
    assert!(ticks <= 10, "{ticks} CPU ticks in {QUIET_FOR:?} of idling");

    // The kubelet's atomic swap in the same folder is seen and applied.
    std::fs::create_dir(d.join("..2026_b")).unwrap();
    write(&d.join("..2026_b"), "api_key", "1001:trace-key-b\n");
    symlink("..2026_b", &d.join("..data_tmp"));
    std::fs::rename(d.join("..data_tmp"), d.join("..data")).unwrap();
    let want = format!("sha256:{}", fingerprint("1001:trace-key-b"));
    let http = Http::new();
    rt.block_on(poll(
        Duration::from_secs(10),
        Duration::from_millis(50),
        "the new key in /config",
        || async {
            let r = http.get(&format!("http://{admin}/config")).await;
            (r.json()["tenants"][0]["api_key"] == want.as_str()).then_some(())
        },
    ));
    assert!(
        text().contains("\"message\":\"config reloaded\""),
        "{}",
        text()
    );
    let (after, ticks) = wait_quiet(&log, pid, SETTLE);
    assert!(
        after - quiet_at < 256 * 1024,
        "{} bytes for one reload",
        after - quiet_at
    );
    assert!(ticks <= 10, "{ticks} CPU ticks idling after the reload");

    // SIGTERM: drained and gone within the bound.
    let stopped = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = stopped + Duration::from_secs(10);
    let code = loop {
        if let Some(s) = gw.0.try_wait().unwrap() {
            break s.code();
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0), "{}", text());
    assert!(text().contains("gateway stopped"));
}
