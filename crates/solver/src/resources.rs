//! Resource vectors (name → integer amount) and the pod/node arithmetic built on them.
//!
//! Units: `cpu` in millicores, every other resource in base units (bytes for memory and
//! storage, counts for `pods`, GPUs and other extended resources). The map is ordered so
//! anything derived from it (reasons, JSON) is deterministic.

use std::collections::BTreeMap;

use crate::quantity::{QuantityError, format_bytes, format_milli, parse_for_resource};

/// `cpu`, in millicores.
pub const CPU: &str = "cpu";
/// `memory`, in bytes.
pub const MEMORY: &str = "memory";
/// `pods`: the number of pod slots a node offers; every pod uses one.
pub const PODS: &str = "pods";
/// `ephemeral-storage`, in bytes.
pub const EPHEMERAL_STORAGE: &str = "ephemeral-storage";
/// Pseudo-resource counting NodeClaims, only meaningful in NodePool `limits`.
pub const NODES: &str = "nodes";

/// A resource vector: resource name → integer amount. Missing names are zero.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resources(pub BTreeMap<String, i64>);

impl Resources {
    /// An empty (all-zero) vector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a vector from `(name, amount)` pairs already in integer units.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, i64)>) -> Self {
        let mut r = Self::new();
        for (k, v) in pairs {
            r.add_one(k, v);
        }
        r
    }

    /// Parses `(name, quantity string)` pairs, e.g. `[("cpu", "500m"), ("memory", "1Gi")]`.
    pub fn parse<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, QuantityError> {
        let mut r = Self::new();
        for (k, v) in pairs {
            r.add_one(k, parse_for_resource(k, v)?);
        }
        Ok(r)
    }

    /// The amount of `name` (zero when absent).
    pub fn get(&self, name: &str) -> i64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// Sets `name` to `v` (removing it when zero keeps equality structural).
    pub fn set(&mut self, name: &str, v: i64) {
        if v == 0 {
            self.0.remove(name);
        } else {
            self.0.insert(name.to_string(), v);
        }
    }

    /// Adds `v` to `name`.
    pub fn add_one(&mut self, name: &str, v: i64) {
        let cur = self.get(name);
        self.set(name, cur.saturating_add(v));
    }

    /// Element-wise `self += other`.
    pub fn add(&mut self, other: &Resources) {
        for (k, v) in &other.0 {
            self.add_one(k, *v);
        }
    }

    /// Element-wise `self - other` (may go negative).
    pub fn minus(&self, other: &Resources) -> Resources {
        let mut r = self.clone();
        for (k, v) in &other.0 {
            r.add_one(k, -*v);
        }
        r
    }

    /// Element-wise maximum.
    pub fn max_with(&mut self, other: &Resources) {
        for (k, v) in &other.0 {
            if *v > self.get(k) {
                self.set(k, *v);
            }
        }
    }

    /// True when every amount in `self` is ≤ the same amount in `available`.
    pub fn fits_in(&self, available: &Resources) -> bool {
        self.0.iter().all(|(k, v)| *v <= available.get(k))
    }

    /// The resources (name, needed, available) where `self` exceeds `available`.
    pub fn exceeding<'a>(&'a self, available: &'a Resources) -> Vec<(&'a str, i64, i64)> {
        self.0
            .iter()
            .filter(|(k, v)| **v > available.get(k))
            .map(|(k, v)| (k.as_str(), *v, available.get(k)))
            .collect()
    }

    /// True when every amount is zero.
    pub fn is_zero(&self) -> bool {
        self.0.values().all(|v| *v == 0)
    }
}

/// Formats one amount of `name` for people: `1.5 cpu`, `4Gi memory`, `3 nvidia.com/gpu`.
pub fn format_amount(name: &str, v: i64) -> String {
    match name {
        CPU => {
            // Millicores printed as decimal cores so "63.9 cpu" reads naturally.
            let whole = v / 1000;
            let frac = (v % 1000).abs();
            if frac == 0 {
                format!("{whole} cpu")
            } else {
                let s = format!("{frac:03}");
                format!("{whole}.{} cpu", s.trim_end_matches('0'))
            }
        }
        MEMORY | EPHEMERAL_STORAGE => format!("{} {name}", format_bytes(v)),
        _ => format!("{v} {name}"),
    }
}

/// Formats a quantity string in Kubernetes notation (`1500m`, `4Gi`, `3`).
pub fn format_quantity(name: &str, v: i64) -> String {
    match name {
        CPU => format_milli(v),
        MEMORY | EPHEMERAL_STORAGE => format_bytes(v),
        _ => v.to_string(),
    }
}

/// One container's requests, as the conversion layer sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerRequests {
    /// The container's resource requests.
    pub requests: Resources,
    /// For init containers: `restartPolicy: Always` (a sidecar that keeps running).
    pub sidecar: bool,
}

/// Effective requests of a pod, as kube-scheduler and Karpenter compute them:
/// `max(Σ containers + Σ sidecars, max_i(init_i + sidecars started before i)) + overhead`,
/// plus one `pods` slot.
///
/// `init` is in declaration order: a sidecar (`sidecar: true`) keeps running for every later
/// init container and for the main containers; an ordinary init container runs alone next to
/// the sidecars started before it.
pub fn effective_pod_requests(
    containers: &[Resources],
    init: &[ContainerRequests],
    overhead: &Resources,
) -> Resources {
    let mut main = Resources::new();
    for c in containers {
        main.add(c);
    }
    let mut sidecars = Resources::new();
    let mut init_peak = Resources::new();
    for c in init {
        let mut during = sidecars.clone();
        during.add(&c.requests);
        init_peak.max_with(&during);
        if c.sidecar {
            sidecars.add(&c.requests);
        }
    }
    main.add(&sidecars);
    main.max_with(&init_peak);
    main.add(overhead);
    main.set(PODS, main.get(PODS).max(0) + 1);
    main
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn r(pairs: &[(&str, &str)]) -> Resources {
        Resources::parse(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn init_containers_take_the_max() {
        // Upstream scenario 10.1#3: cpu 1 / 1Gi container, init cpu 2 / 1Gi => cpu 2.
        let eff = effective_pod_requests(
            &[r(&[("cpu", "1"), ("memory", "1Gi")])],
            &[ContainerRequests {
                requests: r(&[("cpu", "2"), ("memory", "1Gi")]),
                sidecar: false,
            }],
            &Resources::new(),
        );
        assert_eq!(eff.get(CPU), 2000);
        assert_eq!(eff.get(MEMORY), 1 << 30);
        assert_eq!(eff.get(PODS), 1);
    }

    #[test]
    fn sidecars_add_to_main_and_later_inits() {
        let eff = effective_pod_requests(
            &[r(&[("cpu", "1")])],
            &[
                ContainerRequests {
                    requests: r(&[("cpu", "500m")]),
                    sidecar: true,
                },
                ContainerRequests {
                    requests: r(&[("cpu", "1200m")]),
                    sidecar: false,
                },
            ],
            &r(&[("cpu", "100m")]),
        );
        // main = 1 + 0.5 = 1.5; init peak = 0.5 + 1.2 = 1.7; + overhead 0.1
        assert_eq!(eff.get(CPU), 1800);
    }

    #[test]
    fn empty_pod_still_takes_a_slot() {
        let eff = effective_pod_requests(&[], &[], &Resources::new());
        assert_eq!(eff.get(PODS), 1);
        assert_eq!(eff.get(CPU), 0);
    }

    #[test]
    fn format_cpu() {
        assert_eq!(format_amount(CPU, 63_900), "63.9 cpu");
        assert_eq!(format_amount(CPU, 96_000), "96 cpu");
        assert_eq!(format_amount(CPU, 1_250), "1.25 cpu");
        assert_eq!(format_amount(MEMORY, 4 << 30), "4Gi memory");
    }
}
