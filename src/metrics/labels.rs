//! The label sets of the metrics contract, one struct per distinct set. Values are `&'static str`
//! from the caller (closed sets) or the tenant id as a shared `Arc<str>`, so building one per
//! request allocates nothing.
//!
//! Each label set hashes as one `u64`, a foldhash fingerprint of its values: prometheus-client's
//! `Family` keeps its series in a std `HashMap` (SipHash, not configurable), and SipHash over
//! every label string cost ~600 more instructions per cache hit (of ~29k) than one `u64`. The
//! fingerprint is a function of the values alone, so equal label sets hash equally (what `Eq`
//! needs; a field left out of the list below would only add collisions); the values are closed
//! sets and configured tenant ids, so there is no caller-chosen input to collide.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use foldhash::fast::FixedState;

use prometheus_client::encoding::EncodeLabelSet;

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RequestLabels {
    pub(super) tenant: Arc<str>,
    pub(super) method: &'static str,
    pub(super) status: u16,
    pub(super) source: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DurationLabels {
    pub(super) method: &'static str,
    pub(super) cache: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct MethodLabels {
    pub(super) method: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct KindLabels {
    pub(super) kind: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CacheRequestLabels {
    pub(super) method: &'static str,
    pub(super) result: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CauseLabels {
    pub(super) cause: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RateLimitLabels {
    pub(super) tenant: Arc<str>,
    pub(super) key_class: &'static str,
    pub(super) outcome: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct CredentialLabels {
    pub(super) tenant: Arc<str>,
    pub(super) key_class: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResultLabels {
    pub(super) result: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct BuildLabels {
    pub(super) version: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ClusterRequestLabels {
    pub(super) op: &'static str,
    pub(super) result: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct OpLabels {
    pub(super) op: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabels {
    pub(super) reason: &'static str,
}

/// No labels: a family of one series that only appears once it is set (fleet-mode metrics stay
/// absent on a gateway without `[cluster]`).
#[derive(Clone, Debug, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct NoLabels {}

/// One foldhash pass over the values, written to the family's hasher as a single `u64`.
macro_rules! fingerprinted {
    ($($name:ident { $($field:ident),* })*) => {$(
        impl Hash for $name {
            fn hash<H: Hasher>(&self, state: &mut H) {
                #[allow(unused_mut)]
                let mut f = FixedState::default().build_hasher();
                $(self.$field.hash(&mut f);)*
                state.write_u64(f.finish());
            }
        }
    )*};
}

fingerprinted! {
    RequestLabels { tenant, method, status, source }
    DurationLabels { method, cache }
    MethodLabels { method }
    KindLabels { kind }
    CacheRequestLabels { method, result }
    CauseLabels { cause }
    RateLimitLabels { tenant, key_class, outcome }
    CredentialLabels { tenant, key_class }
    ResultLabels { result }
    BuildLabels { version }
    ClusterRequestLabels { op, result }
    OpLabels { op }
    ReasonLabels { reason }
    NoLabels {  }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_label_sets_hash_equally_and_different_ones_apart() {
        let state = std::collections::hash_map::RandomState::new();
        let a = RequestLabels {
            tenant: "acme".into(),
            method: "GetExtensionInfo",
            status: 200,
            source: "cache",
        };
        let b = RequestLabels {
            tenant: String::from("acme").into(),
            method: String::from("GetExtensionInfo").leak(),
            status: 200,
            source: "cache",
        };
        assert_eq!(a, b);
        assert_eq!(state.hash_one(&a), state.hash_one(&b));
        let c = RequestLabels {
            status: 404,
            ..a.clone()
        };
        assert_ne!(state.hash_one(&a), state.hash_one(&c));
        // Fields do not run into each other: ("ab", "c") and ("a", "bc") differ.
        let d = CacheRequestLabels {
            method: "ab",
            result: "c",
        };
        let e = CacheRequestLabels {
            method: "a",
            result: "bc",
        };
        assert_ne!(state.hash_one(&d), state.hash_one(&e));
    }
}
