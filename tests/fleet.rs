//! Fleet mode end to end: two or three gateway processes (`serve`, the real binary) sharing one
//! real `redis-server` and one mock eTelecom: shared limits and pauses (`fleet/limits.rs`),
//! cross-gateway invalidation and purge (`fleet/cache.rs`), Redis stopped, frozen and back
//! (`fleet/failure.rs`), a password-protected Redis and the no-secrets-in-Redis check
//! (`fleet/secrets.rs`; every test ends with that scan of all Redis keys and values).
//!
//! `redis-server` comes from Debian's `redis-server` package; each test starts its own on a
//! free loopback port and stops it by PID (`common::redis`). Without it the tests print SKIPPED
//! and pass, unless `CI` is set: then they fail. Every wait is a log line, a condition or a poll
//! with a deadline.
#![cfg(unix)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "fleet/cache.rs"]
mod cache;
mod common;
#[path = "fleet/failure.rs"]
mod failure;
#[path = "fleet/support.rs"]
mod fleet_support;
#[path = "fleet/limits.rs"]
mod limits;
#[path = "fleet/secrets.rs"]
mod secrets;
#[path = "operations/support.rs"]
#[allow(dead_code)]
mod support;
