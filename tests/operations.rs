//! Operations, end to end against the real binary (`serve` / `check --probe` as subprocesses,
//! the mock eTelecom in-process): the drain sequence on SIGTERM, key rotation by a Kubernetes
//! Secret `..data` symlink swap, refused reloads (file change and SIGHUP), the admin endpoints,
//! the `/metrics` text through `promtool check metrics` and a real Prometheus scraping the admin
//! port, and `check --probe`.
//!
//! Every socket is on 127.0.0.1 port 0 (the gateway logs the bound addresses in its
//! "gateway listening" line), every wait is a log line, a condition or a poll with a deadline,
//! and every loop is bounded in count and time. Each test owns a multi-thread Tokio runtime for
//! the mock and the HTTP client; the test thread itself only blocks on the subprocess.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package. Without them the two
//! tests that need them print SKIPPED and pass, unless the `CI` environment variable is set: then
//! they fail.
//!
//! The tests live in `tests/operations/`, one file per concern; the subprocess helper is
//! `common::proc`, shared with `tests/cli.rs`.
// Unix only: signals (`kill -TERM/-HUP`) and symlinks are what these tests are about.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "operations/admin.rs"]
mod admin;
mod common;
#[path = "operations/drain.rs"]
mod drain;
#[path = "operations/probe.rs"]
mod probe;
#[path = "operations/prometheus.rs"]
mod prometheus;
#[path = "operations/reload.rs"]
mod reload;
#[path = "operations/support.rs"]
mod support;
#[path = "operations/trace_log.rs"]
mod trace_log;
