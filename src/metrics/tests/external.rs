//! The outputs through outside validators: `promtool check metrics` (Prometheus text) and the
//! Python reference OpenMetrics parser. Each test is skipped, with a printed note, when its tool
//! is missing (Debian packages: `prometheus`, `python3-prometheus-client`).

use std::io::Write as _;
use std::process::{Command, Stdio};

use super::parse::parse;
use super::record_one_of_each;
use crate::metrics::Metrics;

/// `promtool check metrics` on the Prometheus text; skipped when promtool is not on PATH
/// (Debian: `apt-get install prometheus`).
#[test]
fn promtool_accepts_the_prometheus_text() {
    let m = Metrics::new(true);
    let _guards = record_one_of_each(&m);
    let text = m.encode_prometheus();
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!("SKIPPED promtool_accepts_the_prometheus_text: promtool is not on PATH");
            return;
        }
        Err(e) => panic!("running promtool: {e}"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to promtool");
    let out = child.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}\nstdout: {}\nstderr: {}\ninput:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

/// The OpenMetrics text through the reference Python parser (`prometheus_client`, Debian's
/// `python3-prometheus-client`); skipped when no python3 on PATH (or /usr/bin) has it.
#[test]
fn python_openmetrics_parser_accepts_the_openmetrics_text() {
    const SCRIPT: &str = "import sys\n\
        from prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
        print(sum(len(f.samples) for f in p(sys.stdin.read())))\n";
    const PROBE: &str = "import prometheus_client.openmetrics.parser";
    let Some(python) = ["python3", "/usr/bin/python3"].into_iter().find(|py| {
        Command::new(py)
            .args(["-c", PROBE])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }) else {
        eprintln!(
            "SKIPPED python_openmetrics_parser_accepts_the_openmetrics_text: \
             no python3 with prometheus_client"
        );
        return;
    };
    let m = Metrics::new(true);
    let _guards = record_one_of_each(&m);
    let text = m.encode_openmetrics();
    let mut child = Command::new(python)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write to python");
    let out = child.wait_with_output().expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "OpenMetrics parser: {}\n{}\ninput:\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
    );
    let parsed: usize = stdout.trim().parse().expect("sample count");
    assert_eq!(parsed, parse(&text).samples.len());
}
