//! Instance types and their offerings (zone × capacity type × price).

use std::collections::BTreeMap;

use crate::resources::Resources;

/// Resources a node reserves for the system.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overhead {
    /// kubelet `kubeReserved`.
    pub kube_reserved: Resources,
    /// kubelet `systemReserved`.
    pub system_reserved: Resources,
    /// kubelet hard eviction threshold.
    pub eviction_threshold: Resources,
}

impl Overhead {
    /// Sum of the three.
    pub fn total(&self) -> Resources {
        let mut t = self.kube_reserved.clone();
        t.add(&self.system_reserved);
        t.add(&self.eviction_threshold);
        t
    }
}

/// Where and how an instance type can be bought.
#[derive(Debug, Clone, PartialEq)]
pub struct Offering {
    /// `topology.kubernetes.io/zone` value.
    pub zone: String,
    /// `karpenter.sh/capacity-type` value (`spot`, `on-demand`, `reserved`).
    pub capacity_type: String,
    /// Price per hour.
    pub price: f64,
    /// Unavailable offerings (e.g. recent insufficient-capacity errors) are never chosen.
    pub available: bool,
}

impl Offering {
    /// An available offering.
    pub fn new(zone: &str, capacity_type: &str, price: f64) -> Self {
        Self {
            zone: zone.to_string(),
            capacity_type: capacity_type.to_string(),
            price,
            available: true,
        }
    }
}

/// An instance type of the catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceType {
    /// Name (also the `node.kubernetes.io/instance-type` label).
    pub name: String,
    /// Node capacity.
    pub capacity: Resources,
    /// Reserved resources; allocatable = capacity − overhead.
    pub overhead: Overhead,
    /// Labels every node of this type carries (arch, os, provider labels...). The instance-type,
    /// zone and capacity-type labels are implied and need not be listed.
    pub labels: BTreeMap<String, String>,
    /// Where it can be bought.
    pub offerings: Vec<Offering>,
}

impl InstanceType {
    /// capacity − kubeReserved − systemReserved − evictionThreshold.
    pub fn allocatable(&self) -> Resources {
        self.capacity.minus(&self.overhead.total())
    }

    /// The cheapest available offering, ties broken by zone then capacity type.
    pub fn cheapest_offering(&self) -> Option<&Offering> {
        self.offerings
            .iter()
            .filter(|o| o.available)
            .min_by(|a, b| {
                a.price
                    .total_cmp(&b.price)
                    .then_with(|| a.zone.cmp(&b.zone))
                    .then_with(|| a.capacity_type.cmp(&b.capacity_type))
            })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn allocatable_subtracts_all_overheads() {
        let it = InstanceType {
            name: "x".into(),
            capacity: Resources::parse([("cpu", "4"), ("memory", "8Gi")]).unwrap(),
            overhead: Overhead {
                kube_reserved: Resources::parse([("cpu", "100m"), ("memory", "10Mi")]).unwrap(),
                system_reserved: Resources::parse([("cpu", "50m")]).unwrap(),
                eviction_threshold: Resources::parse([("memory", "100Mi")]).unwrap(),
            },
            labels: BTreeMap::new(),
            offerings: vec![],
        };
        let a = it.allocatable();
        assert_eq!(a.get("cpu"), 3850);
        assert_eq!(a.get("memory"), (8 << 30) - (110 << 20));
    }
}
