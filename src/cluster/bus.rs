//! Cache coherence for a fleet: a small invalidation bus on one Redis pub/sub channel
//! (`{prefix}:invalidate`). Cached bodies never leave the process; only *what became stale*
//! travels: `{"node":"<id>","write":{"tenant":"acme","path":"/v1/shop.Etelecom/CreateExtension"}}`
//! after a successful write, `{"node":"<id>","purge":{"scope":"all"}}` after an admin purge. The
//! receiver looks the write up in its own catalogue and bumps the same generations the writer
//! bumped, so a rolling update with a newer catalogue still invalidates what it knows.
//!
//! - [`Invalidations`] is the seam the snapshot chooses once: `Local` only bumps this cache;
//!   `Fleet` bumps it and publishes (bounded by `timeout_ms`, before the write's answer goes
//!   out, so by the time the caller has the answer the message is in Redis).
//! - [`subscriber`] is the one task (owned by `app.rs`, stopped like the housekeeping loop) that
//!   applies other gateways' messages; its own are skipped by the per-process node id.
//!
//! # The reconnect gap
//! A gateway that lost its subscription may have missed messages. Chosen: while not subscribed
//! the cache is *incoherent* and serves no entry older than
//! [`INCOHERENT_MAX_AGE`](crate::cache::INCOHERENT_MAX_AGE) (a short
//! effective TTL: a miss refills it), and on every (re)subscription the whole local cache is
//! dropped. So no entry cached before or during a gap outlives the gap by more than
//! `INCOHERENT_MAX_AGE`. A shared generation number read from Redis would cost a round trip per
//! cache hit; dropping costs one refill per entry after an outage, which is rare.
//! The subscription PINGs every [`PING_EVERY`], so a Redis that hangs (rather than closing the
//! connection) is noticed too.

use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::{Cluster, describe};
use crate::cache::{Cache, PurgeScope};
use crate::catalogue::{Catalogue, Method};
use crate::proxy::Gateway;

/// The subscription's keep-alive PING (and how often a reload of `[cluster]` is noticed).
pub const PING_EVERY: Duration = Duration::from_millis(500);
/// Wait between subscription attempts while Redis is away.
const RESUBSCRIBE_EVERY: Duration = Duration::from_millis(250);

/// One message on the bus.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Message {
    /// The sending process ([`Cluster::node`]).
    node: String,
    #[serde(flatten)]
    event: Event,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Event {
    /// A successful write of `path` for `tenant` (`None`: a partner-level write, every tenant).
    Write {
        tenant: Option<String>,
        path: String,
    },
    /// An admin purge.
    Purge(PurgeScope),
}

/// How a snapshot makes cached reads stale: here only, or here and on every other gateway.
pub(crate) enum Invalidations {
    Local,
    Fleet(Cluster),
}

impl Invalidations {
    /// After a successful `method` call for `tenant`: bumps this cache's generations and, in
    /// fleet mode, tells the fleet. A failed publish is counted and logged at warn: the other
    /// gateways keep their entries until these expire (or, if they lost Redis too, until they
    /// resubscribe and drop their caches).
    pub(crate) async fn after_write(&self, cache: &Cache, tenant: Option<&str>, method: &Method) {
        if cache.invalidate_after_write(tenant, method) == 0 {
            return;
        }
        if let Self::Fleet(cluster) = self {
            let event = Event::Write {
                tenant: tenant.map(str::to_owned),
                path: method.path.to_string(),
            };
            // Boxed: keeps the Redis future out of every request's future (see the limiter).
            if let Err(f) = Box::pin(cluster.publish(&event)).await {
                tracing::warn!(
                    tenant = tenant.unwrap_or("-"),
                    method = &*method.label,
                    reason = f.reason(),
                    "could not tell the fleet about a write; other gateways may serve the old answer until their entries expire"
                );
            }
        }
    }

    /// An admin purge: here, and in fleet mode on every gateway. Returns how many entries went
    /// here.
    pub(crate) async fn purge(&self, cache: Option<&Cache>, scope: &PurgeScope) -> usize {
        let purged = match cache {
            Some(c) => c.purge(scope.tenant(), scope.method()),
            None => 0,
        };
        if let Self::Fleet(cluster) = self {
            if let Err(f) = cluster.publish(&Event::Purge(scope.clone())).await {
                tracing::warn!(
                    reason = f.reason(),
                    "could not publish the purge to the fleet; only this gateway was purged"
                );
            }
        }
        purged
    }
}

/// Applies one message from another gateway to `cache`.
pub(crate) fn apply(cache: &Cache, event: &Event) {
    match event {
        Event::Write { tenant, path } => {
            if let Some(m) = Catalogue::get().lookup(path) {
                cache.invalidate_after_write(tenant.as_deref(), m);
            }
        }
        Event::Purge(scope) => {
            cache.purge(scope.tenant(), scope.method());
        }
    }
}

impl Cluster {
    /// The bus channel.
    fn channel(&self) -> String {
        format!("{}:invalidate", self.inner.prefix)
    }

    /// Publishes `event` for the other gateways.
    pub(crate) async fn publish(&self, event: &Event) -> Result<(), super::Failure> {
        let msg = Message {
            node: self.inner.node.clone(),
            event: event.clone(),
        };
        let payload = serde_json::to_string(&msg).unwrap_or_default();
        let mut conn = self.inner.conn.clone();
        let channel = self.channel();
        let publish = async move {
            redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async::<i64>(&mut conn)
                .await
        };
        self.call("publish", publish).await.map(drop)
    }

    /// A message from another gateway, or `None` for our own or an unreadable one.
    fn decode(&self, payload: &[u8]) -> Option<Event> {
        match serde_json::from_slice::<Message>(payload) {
            Ok(m) if m.node == self.inner.node => None,
            Ok(m) => Some(m.event),
            Err(e) => {
                tracing::debug!(error = %e, "ignoring an unreadable invalidation message");
                None
            }
        }
    }
}

/// The subscriber task: keeps one subscription to the bus of the current snapshot's cluster,
/// applies other gateways' messages, and marks the cache incoherent (and drops it on
/// resubscription) around every gap. Returns when `stop` resolves. Without `[cluster]` it only
/// waits for a reload that adds one.
pub(crate) async fn subscriber(gateway: Gateway, stop: impl Future<Output = ()>) {
    let mut stop = std::pin::pin!(stop);
    loop {
        let wait = match gateway.cluster() {
            None => PING_EVERY,
            Some(cluster) => {
                tokio::select! {
                    () = &mut stop => return,
                    () = subscribed(&gateway, &cluster) => {}
                }
                gateway.set_cache_coherent(false);
                RESUBSCRIBE_EVERY
            }
        };
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One subscription, until it fails or the snapshot's cluster changes.
async fn subscribed(gateway: &Gateway, cluster: &Cluster) {
    let inner = &*cluster.inner;
    let metrics = &inner.metrics;
    let bound = inner.timeout.max(Duration::from_millis(500));
    let connect = async {
        let mut pubsub = inner.client.get_async_pubsub().await?;
        pubsub.subscribe(cluster.channel()).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    let pubsub = match tokio::time::timeout(super::CONNECT_TIMEOUT, connect).await {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            metrics.cluster_request("subscribe", "error", None);
            tracing::debug!(error = %describe(&e), "invalidation subscription failed");
            return;
        }
        Err(_) => {
            metrics.cluster_request("subscribe", "timeout", None);
            return;
        }
    };
    metrics.cluster_request("subscribe", "ok", None);
    // Whatever is cached may have missed messages before this subscription: dropped.
    gateway.purge_local();
    gateway.set_cache_coherent(true);
    tracing::debug!("subscribed to the invalidation bus");
    let (mut sink, mut messages) = pubsub.split();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else { return };
                if let Some(event) = cluster.decode(msg.get_payload_bytes()) {
                    gateway.apply_remote(&event);
                    metrics.remote_invalidation();
                }
            }
            _ = ping.tick() => {
                let current = gateway.cluster();
                if !current.is_some_and(|c| std::sync::Arc::ptr_eq(&c.inner, &cluster.inner)) {
                    return;
                }
                let alive = tokio::time::timeout(bound, sink.ping::<String>()).await;
                if !matches!(alive, Ok(Ok(_))) {
                    tracing::debug!("invalidation subscription lost");
                    return;
                }
                gateway.set_cache_coherent(true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_tenant_and_method_only() {
        let m = Message {
            node: "n1".into(),
            event: Event::Write {
                tenant: Some("acme".into()),
                path: "/v1/shop.Etelecom/CreateExtension".into(),
            },
        };
        let text = serde_json::to_string(&m).expect("json");
        assert_eq!(
            text,
            r#"{"node":"n1","write":{"tenant":"acme","path":"/v1/shop.Etelecom/CreateExtension"}}"#
        );
        assert_eq!(serde_json::from_str::<Message>(&text).expect("back"), m);
        let p = Message {
            node: "n1".into(),
            event: Event::Purge(PurgeScope::All),
        };
        let text = serde_json::to_string(&p).expect("json");
        assert_eq!(text, r#"{"node":"n1","purge":{"scope":"all"}}"#);
        assert_eq!(serde_json::from_str::<Message>(&text).expect("back"), p);
    }
}
