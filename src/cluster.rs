//! Fleet mode: the one shared Redis (or Valkey, KeyDB) behind `[cluster]`, and nothing else
//! touches it. This module owns the client (the `redis` crate: one multiplexed connection
//! through its `ConnectionManager`, which reconnects by itself; the invalidation subscriber has
//! its own connection because a subscribed connection cannot send commands), its health
//! ([`health`]: circuit breaker, `cluster_up`), the Lua scripts ([`scripts`]), the invalidation
//! messages ([`bus`]) and the key schema below.
//!
//! # Key schema (every key starts with `key_prefix`, every key has a TTL)
//! | key | value | TTL |
//! | --- | --- | --- |
//! | `{prefix}:rl:{<tenant>:<class>}:tat` | the bucket's GCRA theoretical arrival time (µs, Redis clock) | until the bucket is full again |
//! | `{prefix}:rl:{<tenant>:<class>}:pause` | the end of eTelecom's quota pause (µs) | until that end |
//! | `{prefix}:rl:{~partner}:tat` / `:pause` | the same for the partner key's one bucket | same |
//! | channel `{prefix}:invalidate` | `<node> inv <tenant or -> <method ids>` / `<node> purge <scope>` | (pub/sub) |
//!
//! `<class>` is `api_key`, `shop_key` or `sms`; `~` cannot occur in a tenant id, so the partner bucket
//! never meets a tenant's. The two keys of one bucket share one hash tag (`{...}`), so a script
//! touching both works on Redis Cluster too. No key, fingerprint of a key, response body or
//! password is ever written to Redis: only tenant ids, key classes, catalogue method ids and
//! times.
//!
//! # Failure
//! Every call is bounded by `timeout_ms`; failures open the circuit ([`health`]) and callers
//! take their `on_unavailable` path; errors are described by kind only (never the URL).

pub(crate) mod bus;
pub(crate) mod health;
mod scripts;

use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, RedisResult, Script};

use crate::config::{ClusterConfig, OnUnavailable};
use crate::metrics::Metrics;
use crate::ratelimit::Bucket;
use health::Health;

/// How long the client waits for a (re)connection attempt; a request never waits longer than
/// `timeout_ms` for it (it fails over, the connection keeps trying in the background).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a Redis call gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Not sent: the circuit is open.
    CircuitOpen,
    /// No answer within `timeout_ms`.
    Timeout,
    /// Refused or failed; a fixed description (error code or kind), never the URL.
    Error(String),
}

impl Failure {
    /// The `reason` label of `cluster_fallback_total`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Self::CircuitOpen => "circuit_open",
            Self::Timeout => "timeout",
            Self::Error(_) => "error",
        }
    }
}

/// One GCRA answer ([`scripts::GCRA`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Gcra {
    Allowed {
        remaining: u32,
    },
    /// A permit is reserved `wait` from now (queue mode).
    Reserved {
        wait: Duration,
    },
    Limited {
        wait: Duration,
    },
    Paused {
        wait: Duration,
    },
}

/// The shared Redis of a fleet. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    /// For the invalidation subscriber's own connection.
    client: redis::Client,
    conn: ConnectionManager,
    prefix: Arc<str>,
    timeout: Duration,
    on_unavailable: OnUnavailable,
    health: Health,
    metrics: Arc<Metrics>,
    /// This process's id in invalidation messages (its own messages are skipped).
    node: String,
    gcra: Script,
    pause: Script,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("prefix", &self.inner.prefix)
            .field("node", &self.inner.node)
            .finish_non_exhaustive()
    }
}

/// A client for `cfg`'s URL (parsing only; no connection yet).
fn client(cfg: &ClusterConfig) -> Result<redis::Client, String> {
    redis::Client::open(cfg.redis_url.expose())
        .map_err(|e| format!("cluster.redis_url: {}", describe(&e)))
}

impl Cluster {
    /// Builds the client; the connection is made on first use and kept (reconnecting by itself).
    pub(crate) fn new(cfg: &ClusterConfig, metrics: Arc<Metrics>) -> Result<Self, String> {
        let client = client(cfg)?;
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(cfg.timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager)
            .map_err(|e| format!("cluster.redis_url: {}", describe(&e)))?;
        Ok(Self {
            inner: Arc::new(Inner {
                client: client.clone(),
                conn,
                prefix: cfg.key_prefix.clone(),
                timeout: cfg.timeout,
                on_unavailable: cfg.on_unavailable,
                health: Health::new(metrics.clone()),
                metrics,
                node: node_id(),
                gcra: Script::new(scripts::GCRA),
                pause: Script::new(scripts::PAUSE),
            }),
        })
    }

    pub(crate) fn on_unavailable(&self) -> OnUnavailable {
        self.inner.on_unavailable
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// `{prefix}:rl:{<tenant>:<class>}` (or `{~partner}`), with room for the suffix.
    fn bucket_tag(&self, bucket: Bucket<'_>) -> String {
        let mut key = String::with_capacity(self.inner.prefix.len() + 40);
        let _ = match bucket.tenant() {
            Some(t) => write!(
                key,
                "{}:rl:{{{t}:{}}}",
                self.inner.prefix,
                bucket.key_class().as_str()
            ),
            None => write!(key, "{}:rl:{{~partner}}", self.inner.prefix),
        };
        key
    }

    /// One GCRA decision (with the bucket's pause) in Redis: one round trip.
    pub(crate) async fn gcra(
        &self,
        bucket: Bucket<'_>,
        interval_us: f64,
        burst: u32,
        reserve: Duration,
    ) -> Result<Gcra, Failure> {
        let tag = self.bucket_tag(bucket);
        let mut conn = self.inner.conn.clone();
        let mut call = self.inner.gcra.key(format!("{tag}:tat"));
        call.key(format!("{tag}:pause"))
            .arg(interval_us)
            .arg(burst)
            .arg(u64::try_from(reserve.as_micros()).unwrap_or(u64::MAX));
        let (status, wait, remaining): (u8, u64, u32) =
            self.call("ratelimit", call.invoke_async(&mut conn)).await?;
        let wait = Duration::from_micros(wait);
        Ok(match status {
            0 => Gcra::Allowed { remaining },
            1 => Gcra::Reserved { wait },
            2 => Gcra::Limited { wait },
            _ => Gcra::Paused { wait },
        })
    }

    /// Writes eTelecom's quota pause of `bucket` for the fleet.
    pub(crate) async fn pause(&self, bucket: Bucket<'_>, for_: Duration) -> Result<(), Failure> {
        let tag = self.bucket_tag(bucket);
        let mut conn = self.inner.conn.clone();
        let mut call = self.inner.pause.key(format!("{tag}:pause"));
        call.arg(u64::try_from(for_.as_micros()).unwrap_or(u64::MAX));
        let _: i64 = self.call("pause", call.invoke_async(&mut conn)).await?;
        Ok(())
    }

    /// The background probe: one PING, sent even while the circuit is open (its success closes
    /// the circuit).
    pub(crate) async fn probe(&self) -> Result<(), Failure> {
        let mut conn = self.inner.conn.clone();
        let ping = async move { redis::cmd("PING").query_async::<String>(&mut conn).await };
        self.call("ping", ping).await.map(drop)
    }

    /// Runs one Redis call: refused while the circuit is open (except the probe), bounded by
    /// `timeout_ms`, counted in the metrics and in the circuit.
    async fn call<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, Failure> {
        let inner = &*self.inner;
        if op != "ping" && !inner.health.closed() {
            inner.metrics.cluster_request(op, "circuit_open", None);
            return Err(Failure::CircuitOpen);
        }
        let started = Instant::now();
        let result = tokio::time::timeout(inner.timeout, fut).await;
        let elapsed = Some(started.elapsed());
        let mode = inner.on_unavailable.as_str();
        match result {
            Ok(Ok(v)) => {
                inner.metrics.cluster_request(op, "ok", elapsed);
                inner.health.success();
                Ok(v)
            }
            Ok(Err(e)) => {
                let why = describe(&e);
                inner.metrics.cluster_request(op, "error", elapsed);
                inner.health.failure(&why, mode);
                Err(Failure::Error(why))
            }
            Err(_) => {
                inner.metrics.cluster_request(op, "timeout", elapsed);
                inner.health.failure("no answer within timeout_ms", mode);
                Err(Failure::Timeout)
            }
        }
    }
}

/// `check --probe`: connects to `cfg`'s Redis and PINGs it. `Ok` holds the answer; `Err` says
/// what failed, never the URL or its password.
pub async fn ping(cfg: &ClusterConfig) -> Result<String, String> {
    let client = client(cfg)?;
    let bound = cfg.timeout.max(Duration::from_secs(2));
    let attempt = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(bound, attempt).await {
        Ok(Ok(pong)) => Ok(pong),
        Ok(Err(e)) => Err(describe(&e)),
        Err(_) => Err(format!("no answer within {} ms", bound.as_millis())),
    }
}

/// What went wrong, by Redis error code or kind only: a client error message may quote the
/// URL, and with it the password.
pub(crate) fn describe(e: &RedisError) -> String {
    if let Some(code) = e.code() {
        return match code {
            "WRONGPASS" | "NOAUTH" | "NOPERM" => {
                format!("Redis refused the credentials ({code}); check the password in redis_url")
            }
            _ => format!("Redis answered {code}"),
        };
    }
    if e.kind() == redis::ErrorKind::AuthenticationFailed {
        return "Redis refused the credentials (authentication failed); check the password in redis_url"
            .to_owned();
    }
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connection_refusal() {
        "connection refused"
    } else if e.is_connection_dropped() {
        "connection dropped"
    } else if e.is_io_error() {
        "I/O error"
    } else {
        return format!("Redis client error ({:?})", e.kind());
    };
    kind.to_owned()
}

/// A random id for this process (16 hex digits).
fn node_id() -> String {
    use ring::rand::{SecureRandom as _, SystemRandom};
    let mut b = [0u8; 8];
    if SystemRandom::new().fill(&mut b).is_err() {
        // No randomness: the pid and the time still tell processes apart.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        b = (t ^ u64::from(std::process::id())).to_be_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}
