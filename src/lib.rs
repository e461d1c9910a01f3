//! etelecom-gateway: a drop-in eTelecom base URL for internal services. Callers send eTelecom's
//! own paths and JSON without credentials, naming a tenant in a header; the gateway injects the
//! right eTelecom key and forwards over TLS.
//!
//! # Layout
//! - [`config`]: TOML → validated [`config::Config`], every problem listed with its key path.
//! - [`secret`]: secret references (`env` / `file`) and [`secret::ApiKey`], which never prints.
//! - [`catalogue`]: the eTelecom method table (key class, read-only, secrets, invalidations).
//! - [`route`]: request target → catalogue entry, or a local 404/405/400.
//! - [`tenants`]: tenant header → tenant → the credential for the method's key class; caller allow-lists.
//! - [`inject`]: the one function that puts a credential into the upstream request (Bearer header
//!   or the SMS body's `username` / `password`).
//! - [`body`]: size-limited request bodies, JSON-object check.
//! - [`headers`]: hop-by-hop and credential hygiene in both directions.
//! - [`upstream`]: pooled hyper-rustls client, timeouts, [`upstream::UpstreamError`].
//! - [`error`]: [`error::GatewayError`] and the one place it becomes a response.
//! - [`redact`]: the only route from request data to the logs.
//! - [`access_log`]: request ids and the per-request access-log event.
//! - [`cluster`]: fleet mode: the shared Redis (client, circuit, Lua scripts, key schema,
//!   invalidation bus) behind `[cluster]`.
//! - [`proxy`]: the lifecycle, in order; [`server`]: listener, limits, graceful stop.
//! - [`app`]: bind, serve, stop on a signal; [`signals`]: SIGTERM/SIGINT/SIGHUP, installed first; [`logging`]: subscriber set-up; [`mock`]: the mock eTelecom; [`demo`]: the `demo` command.
//!
//! # A request's path
//! accept ([`server`]) → caller allowed? → route ([`route`]) → upstream for the route (eTelecom
//! API or SMS host) → credential ([`tenants`]) → body ([`body`]) → inject ([`inject`]) → forward
//! ([`upstream`], [`headers`]) → respond; on any error
//! [`error::GatewayError::into_response`]; always one access-log event ([`access_log`]).

pub mod access_log;
pub mod admin;
pub mod app;
pub mod body;
pub mod cache;
pub mod catalogue;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod error;
pub mod headers;
pub mod inject;
pub mod logging;
pub mod metrics;
pub mod mock;
pub mod probe;
#[cfg(test)]
mod prop_strategies;
pub mod proxy;
pub mod ratelimit;
pub mod redact;
pub mod reload;
pub mod route;
pub mod secret;
pub mod server;
pub mod signals;
pub mod tenants;
pub mod upstream;
