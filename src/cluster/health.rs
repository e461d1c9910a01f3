//! The circuit breaker in front of Redis: after [`FAILURES_TO_OPEN`] failed calls in a row the
//! circuit opens and requests stop calling Redis (they take the `on_unavailable` path at once,
//! paying no timeout); only the background probe (`Cluster::probe`) calls Redis then, and its
//! first success closes the circuit. One log line when the circuit opens, one when it closes;
//! `cluster_up` follows the circuit.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use crate::metrics::Metrics;

/// Consecutive failed calls that open the circuit.
pub const FAILURES_TO_OPEN: u32 = 3;

#[derive(Debug)]
pub(crate) struct Health {
    open: AtomicBool,
    failures: AtomicU32,
    metrics: Arc<Metrics>,
}

impl Health {
    /// Closed (requests call Redis) until calls fail.
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        metrics.set_cluster_up(true);
        Self {
            open: AtomicBool::new(false),
            failures: AtomicU32::new(0),
            metrics,
        }
    }

    /// Whether requests may call Redis (the circuit is closed).
    pub(crate) fn closed(&self) -> bool {
        !self.open.load(Ordering::Acquire)
    }

    /// A call answered: resets the failure count; closes an open circuit (logged once).
    pub(crate) fn success(&self) {
        self.failures.store(0, Ordering::Release);
        if self.open.swap(false, Ordering::AcqRel) {
            self.metrics.set_cluster_up(true);
            tracing::info!(
                "Redis is reachable again; fleet mode resumes (shared limits, pauses and invalidations)"
            );
        }
    }

    /// A call failed (`why` is a fixed description, never a URL or password); opens the circuit
    /// after [`FAILURES_TO_OPEN`] in a row (logged once).
    pub(crate) fn failure(&self, why: &str, on_unavailable: &'static str) {
        let n = self.failures.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= FAILURES_TO_OPEN && !self.open.swap(true, Ordering::AcqRel) {
            self.metrics.set_cluster_up(false);
            tracing::error!(
                error = why,
                on_unavailable,
                "Redis is unavailable; the gateway runs on its fallback until Redis answers again"
            );
        }
    }
}
