//! Instance types and their offerings (zone × capacity type × price).

use std::collections::{BTreeMap, HashMap};

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

/// A capacity reservation an offering launches into (upstream `ReservationCapacity` and the
/// provider's reservation-ID label): instances bought through it are already paid for, so the
/// offering is priced near zero, and at most `capacity` new nodes may use it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reservation {
    /// The reservation's ID (e.g. `cr-0123…` on AWS). Offerings of several instance types or
    /// zones may share one reservation; the capacity is counted per ID.
    pub id: String,
    /// Instances the reservation can still launch (what running instances leave). Zero or
    /// less makes the offering unusable; a plan never puts more new nodes on one ID.
    pub capacity: i64,
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
    /// The capacity reservation behind a `reserved` offering (`None` for spot and on-demand).
    pub reservation: Option<Reservation>,
}

impl Offering {
    /// An available offering.
    pub fn new(zone: &str, capacity_type: &str, price: f64) -> Self {
        Self {
            zone: zone.to_string(),
            capacity_type: capacity_type.to_string(),
            price,
            available: true,
            reservation: None,
        }
    }

    /// An available `reserved` offering of reservation `id` with `capacity` instances left.
    pub fn reserved(zone: &str, price: f64, id: &str, capacity: i64) -> Self {
        Self {
            reservation: Some(Reservation {
                id: id.to_string(),
                capacity,
            }),
            ..Self::new(zone, crate::labels::CAPACITY_TYPE_RESERVED, price)
        }
    }

    /// Whether the offering can be launched at all: available, and if it is a reservation, one
    /// with capacity left.
    pub fn usable(&self) -> bool {
        self.available && self.reservation.as_ref().is_none_or(|r| r.capacity > 0)
    }

    /// The reservation's ID, for a reserved offering.
    pub fn reservation_id(&self) -> Option<&str> {
        self.reservation.as_ref().map(|r| r.id.as_str())
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
        self.offerings.iter().filter(|o| o.usable()).min_by(|a, b| {
            a.price
                .total_cmp(&b.price)
                .then_with(|| a.zone.cmp(&b.zone))
                .then_with(|| a.capacity_type.cmp(&b.capacity_type))
        })
    }
}

/// The NodePool an entry of the catalog is a copy for: a catalog merged from NodePools that
/// see an instance type differently (a NodeOverlay scoped to one NodePool) lists that type
/// once per NodePool, each copy labelled `karpenter.sh/nodepool` (see
/// [`crate::overlay::merge_catalogs`]); `None` for an entry every NodePool shares.
pub fn pool_of_copy(it: &InstanceType) -> Option<&str> {
    it.labels.get(crate::labels::NODEPOOL).map(String::as_str)
}

/// The entry of instance type `name` that NodePool `pool` sees in a catalog from
/// [`crate::overlay::merge_catalogs`]: the shared entry, else its own copy, else (a node of a
/// NodePool no longer listed) the first copy.
/// A linear scan, as a lookup by name is; use [`CatalogIndex`] for many.
pub fn find_for_pool<'a>(
    catalog: &'a [InstanceType],
    pool: &str,
    name: &str,
) -> Option<&'a InstanceType> {
    let mut first = None;
    for it in catalog.iter().filter(|it| it.name == name) {
        match pool_of_copy(it) {
            // A merged catalog has either one shared entry of a type or only copies: the
            // first shared entry is the answer (and as quick as a plain lookup by name).
            None => return Some(it),
            Some(p) if p == pool => return Some(it),
            Some(_) => {
                first.get_or_insert(it);
            }
        }
    }
    first
}

/// Catalog positions by instance-type name, aware of per-NodePool copies (same answers as
/// [`find_for_pool`], in constant time).
#[derive(Debug, Clone, Default)]
pub struct CatalogIndex {
    shared: HashMap<String, usize>,
    /// name → NodePool → position, for copies reserved to a NodePool.
    own: HashMap<String, BTreeMap<String, usize>>,
}

impl CatalogIndex {
    /// Indexes `catalog` (positions are indices into it).
    pub fn new(catalog: &[InstanceType]) -> Self {
        let mut index = Self::default();
        for (i, it) in catalog.iter().enumerate() {
            match pool_of_copy(it) {
                Some(pool) => {
                    index
                        .own
                        .entry(it.name.clone())
                        .or_default()
                        .entry(pool.to_owned())
                        .or_insert(i);
                }
                None => {
                    index.shared.entry(it.name.clone()).or_insert(i);
                }
            }
        }
        index
    }

    /// The position of the entry of `name` that NodePool `pool` sees (`None`: any NodePool).
    pub fn get(&self, pool: Option<&str>, name: &str) -> Option<usize> {
        let own = self.own.get(name);
        own.and_then(|m| pool.and_then(|p| m.get(p)))
            .or_else(|| self.shared.get(name))
            .or_else(|| own.and_then(|m| m.values().min()))
            .copied()
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
