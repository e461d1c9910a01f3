//! Series resolved once per catalogue method, and the method as the metrics see it
//! ([`MethodMetric`]).
//!
//! Every answered request records `request_duration_seconds{method, cache}`, every upstream call
//! `upstream_duration_seconds{method}` and every cache lookup `cache_requests_total{method,
//! result}`. Through a `Family`, each of those is a read lock and a SipHash lookup (~350
//! instructions, the hasher of prometheus-client's map cannot be set). Here a catalogue method
//! looks its series up in the family once; afterwards it uses the handle kept in its slot (one
//! atomic load). A handle shares its value with the family's series (prometheus-client's
//! metrics are `Arc`s), so `/metrics` is the same either way. Methods outside the catalogue
//! (`other`, `-`) and label values outside the closed sets below go through the family.

use std::sync::OnceLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;

use crate::catalogue::{Method, MethodId};

/// A request's method for the metrics: its label and, for a catalogue method, its id. Built
/// only from a route's catalogue entry (or as [`MethodMetric::UNROUTED`]), so the id and the
/// label always name the same method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodMetric {
    label: &'static str,
    id: Option<MethodId>,
}

impl MethodMetric {
    /// Before routing (or when routing refused the request): `-`.
    pub const UNROUTED: Self = Self {
        label: "-",
        id: None,
    };

    /// The label of a well-formed method the catalogue does not know.
    pub const OTHER: &'static str = "other";

    /// A routed request: the catalogue entry's label, or `other` without one.
    pub fn route(method: Option<&'static Method>) -> Self {
        match method {
            Some(m) => Self {
                label: &m.label,
                id: Some(m.id),
            },
            None => Self {
                label: Self::OTHER,
                id: None,
            },
        }
    }

    /// The `method` label value (also the access line's `method`).
    pub fn label(self) -> &'static str {
        self.label
    }
}

/// The slot of a `cache` value of `request_duration_seconds` (`hit`, `miss`, `bypass`, `stale`,
/// `none`), which is also the slot of a `result` of `cache_requests_total` (the same values
/// without `none`).
fn cache_slot(value: &str) -> Option<usize> {
    match value {
        "hit" => Some(0),
        "miss" => Some(1),
        "bypass" => Some(2),
        "stale" => Some(3),
        "none" => Some(4),
        _ => None,
    }
}

#[derive(Debug, Default)]
struct Slots {
    duration: [OnceLock<Histogram>; 5],
    upstream: OnceLock<Histogram>,
    cache: [OnceLock<Counter>; 4],
}

/// One [`Slots`] per catalogue method, indexed by [`MethodId`].
#[derive(Debug)]
pub(super) struct MethodSlots(Box<[Slots]>);

impl MethodSlots {
    pub(super) fn new(methods: usize) -> Self {
        Self((0..methods).map(|_| Slots::default()).collect())
    }

    fn of(&self, method: MethodMetric) -> Option<&Slots> {
        self.0.get(usize::from(method.id?.0))
    }

    /// The `request_duration_seconds` slot of (`method`, `cache`).
    pub(super) fn duration(
        &self,
        method: MethodMetric,
        cache: &str,
    ) -> Option<&OnceLock<Histogram>> {
        self.of(method)?.duration.get(cache_slot(cache)?)
    }

    /// The `upstream_duration_seconds` slot of `method`.
    pub(super) fn upstream(&self, method: MethodMetric) -> Option<&OnceLock<Histogram>> {
        Some(&self.of(method)?.upstream)
    }

    /// The `cache_requests_total` slot of (`method`, `result`).
    pub(super) fn cache(&self, method: MethodMetric, result: &str) -> Option<&OnceLock<Counter>> {
        self.of(method)?.cache.get(cache_slot(result)?)
    }
}
