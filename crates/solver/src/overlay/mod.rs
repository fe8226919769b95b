//! NodeOverlays applied to the catalog before solving (upstream `pkg/controllers/nodeoverlay`
//! store and `pkg/cloudprovider/overlay`): price overlays set or adjust the price of the
//! offerings they match, capacity overlays add extended resources to the instance types they
//! match.
//!
//! Precedence and conflicts, as upstream: overlays are taken by weight (highest first), equal
//! weights by name in reverse alphabetical order. Per offering the first price overlay wins;
//! per instance type and resource the first capacity overlay wins. An overlay that would change
//! an offering's price (or a resource) already changed by an overlay *of the same weight*
//! conflicts and is left out entirely (price and capacity alike); the one taken first stays.
//! Price and capacity are tracked separately, so a price overlay and a capacity overlay of
//! equal weight never conflict.

mod pools;
mod price;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

pub use pools::{PoolLabels, apply_overlays_per_pool, apply_overlays_to_problem, merge_catalogs};
pub use price::PriceChange;
use thiserror::Error;

use crate::error::SolveError;
use crate::instance_type::InstanceType;
use crate::labels;
use crate::requirements::{NodeSelectorRequirement, Requirements};
use crate::resources::Resources;

/// An overlay that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OverlayError {
    /// `spec.price` or `spec.priceAdjustment` is malformed.
    #[error("{field}: {value:?} is not a valid price or price adjustment")]
    Price {
        /// The field path.
        field: &'static str,
        /// The value given.
        value: String,
    },
    /// A requirement is malformed.
    #[error("spec.requirements: {0}")]
    Requirement(#[from] SolveError),
}

/// A NodeOverlay as the solver sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Overlay {
    /// `metadata.name` (names conflicts; orders equal weights).
    pub name: String,
    /// `spec.weight` (0 when unset).
    pub weight: i32,
    /// `spec.requirements`, over the instance type's labels and each offering's zone and
    /// capacity type.
    pub requirements: Requirements,
    /// `spec.price` or `spec.priceAdjustment`.
    pub price: Option<PriceChange>,
    /// `spec.capacity`: resources set on matching instance types.
    pub capacity: Resources,
}

impl Overlay {
    /// Builds an overlay from its spec's parts.
    pub fn new(
        name: &str,
        weight: i32,
        requirements: &[NodeSelectorRequirement],
        price: Option<PriceChange>,
        capacity: Resources,
    ) -> Result<Self, OverlayError> {
        Ok(Self {
            name: name.to_owned(),
            weight,
            requirements: Requirements::from_selectors(requirements)?,
            price,
            capacity,
        })
    }
}

/// What an overlay would have changed that another overlay of its weight changes already.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ConflictKind {
    /// The price of an offering.
    Price,
    /// A resource of an instance type.
    Capacity,
}

/// Why an overlay was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The overlay of equal weight taken first.
    pub with: String,
    /// Price or capacity.
    pub kind: ConflictKind,
    /// The first instance type (in catalog order) both change.
    pub instance_type: String,
}

impl std::fmt::Display for Conflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            ConflictKind::Price => "the price of an offering",
            ConflictKind::Capacity => "a capacity resource",
        };
        write!(
            f,
            "conflicts with NodeOverlay {:?} of the same weight: both change {what} of instance type {:?}",
            self.with, self.instance_type
        )
    }
}

/// The outcome of [`apply_overlays`]: which overlays were left out, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Evaluation {
    /// Overlays left out, by name.
    pub conflicts: BTreeMap<String, Conflict>,
}

/// The price overlay taken for one offering, and the last (lowest-weight) overlay that matched it.
struct PriceEntry {
    change: PriceChange,
    lowest_weight: i32,
    lowest_name: String,
}

/// The resources set on one instance type, and the last (lowest-weight) overlay's resources.
struct CapacityEntry {
    merged: Resources,
    lowest_weight: i32,
    lowest_resources: BTreeSet<String>,
    lowest_name: String,
}

#[derive(Default)]
struct Entries {
    /// (instance type index, offering index) → price entry.
    prices: BTreeMap<(usize, usize), PriceEntry>,
    /// instance type index → capacity entry.
    capacity: BTreeMap<usize, CapacityEntry>,
}

/// The offerings of each instance type `overlay` matches (instance types with none are left
/// out). An offering is matched when its instance type's labels plus
/// `node.kubernetes.io/instance-type`, `topology.kubernetes.io/zone` and
/// `karpenter.sh/capacity-type` satisfy every requirement; a requirement on a label the
/// instance type does not carry matches only if it admits absence (`NotIn`, `DoesNotExist`).
/// `scope_labels` are the labels nodes get besides the instance type's own (a NodePool's name
/// and template labels; none for a catalog shared by every NodePool).
fn matches(
    catalog: &[InstanceType],
    scope_labels: &BTreeMap<String, String>,
    overlay: &Overlay,
) -> Vec<(usize, Vec<usize>)> {
    let mut out = Vec::new();
    for (i, it) in catalog.iter().enumerate() {
        let mut node_labels = if scope_labels.is_empty() {
            it.labels.clone()
        } else {
            let mut l = scope_labels.clone();
            l.extend(it.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            l
        };
        node_labels.insert(labels::INSTANCE_TYPE.to_owned(), it.name.clone());
        let offerings: Vec<usize> = it
            .offerings
            .iter()
            .enumerate()
            .filter(|(_, o)| {
                node_labels.insert(labels::ZONE.to_owned(), o.zone.clone());
                node_labels.insert(labels::CAPACITY_TYPE.to_owned(), o.capacity_type.clone());
                overlay.requirements.satisfied_by(&node_labels)
            })
            .map(|(j, _)| j)
            .collect();
        if !offerings.is_empty() {
            out.push((i, offerings));
        }
    }
    out
}

impl Entries {
    /// The conflict `overlay` would cause over `matched`, if any.
    fn conflict(
        &self,
        catalog: &[InstanceType],
        overlay: &Overlay,
        matched: &[(usize, Vec<usize>)],
    ) -> Option<Conflict> {
        for (i, offerings) in matched {
            let instance_type = || catalog[*i].name.clone();
            if overlay.price.is_some() {
                let taken = offerings
                    .iter()
                    .filter_map(|j| self.prices.get(&(*i, *j)))
                    .find(|e| e.lowest_weight == overlay.weight);
                if let Some(e) = taken {
                    return Some(Conflict {
                        with: e.lowest_name.clone(),
                        kind: ConflictKind::Price,
                        instance_type: instance_type(),
                    });
                }
            }
            if let Some(e) = self.capacity.get(i)
                && e.lowest_weight == overlay.weight
                && overlay
                    .capacity
                    .0
                    .keys()
                    .any(|r| e.lowest_resources.contains(r))
            {
                return Some(Conflict {
                    with: e.lowest_name.clone(),
                    kind: ConflictKind::Capacity,
                    instance_type: instance_type(),
                });
            }
        }
        None
    }

    /// Records `overlay` over `matched` (no conflict checked: see [`Entries::conflict`]).
    fn record(&mut self, overlay: &Overlay, matched: Vec<(usize, Vec<usize>)>) {
        for (i, offerings) in matched {
            if let Some(change) = overlay.price {
                for j in offerings {
                    let e = self.prices.entry((i, j)).or_insert(PriceEntry {
                        change,
                        lowest_weight: overlay.weight,
                        lowest_name: String::new(),
                    });
                    e.lowest_weight = overlay.weight;
                    e.lowest_name.clone_from(&overlay.name);
                }
            }
            if overlay.capacity.0.is_empty() {
                continue;
            }
            let e = self.capacity.entry(i).or_insert_with(|| CapacityEntry {
                merged: Resources::new(),
                lowest_weight: overlay.weight,
                lowest_resources: BTreeSet::new(),
                lowest_name: String::new(),
            });
            for (r, v) in &overlay.capacity.0 {
                e.merged.0.entry(r.clone()).or_insert(*v);
            }
            e.lowest_weight = overlay.weight;
            e.lowest_resources = overlay.capacity.0.keys().cloned().collect();
            e.lowest_name.clone_from(&overlay.name);
        }
    }
}

impl Entries {
    /// Writes the recorded changes into `catalog`.
    fn write(self, catalog: &mut [InstanceType]) {
        for ((i, j), e) in self.prices {
            let offering = &mut catalog[i].offerings[j];
            offering.price = e.change.apply(offering.price);
        }
        for (i, e) in self.capacity {
            for (r, v) in e.merged.0 {
                catalog[i].capacity.set(&r, v);
            }
        }
    }
}

/// A catalog overlays are judged on, with the labels its nodes get besides the instance
/// type's own (a NodePool's `karpenter.sh/nodepool` and template labels, or none).
pub(crate) struct Scope<'a> {
    pub catalog: &'a mut [InstanceType],
    pub labels: BTreeMap<String, String>,
}

/// Applies `overlays` to every scope, as upstream evaluates them per NodePool: overlays in
/// precedence order, each checked for conflicts in every scope and left out of all if it
/// conflicts in any, else recorded in all.
pub(crate) fn apply_scoped(scopes: &mut [Scope<'_>], overlays: &[Overlay]) -> Evaluation {
    let mut order: Vec<&Overlay> = overlays.iter().collect();
    order.sort_by(|a, b| b.weight.cmp(&a.weight).then_with(|| b.name.cmp(&a.name)));
    let mut entries: Vec<Entries> = scopes.iter().map(|_| Entries::default()).collect();
    let mut evaluation = Evaluation::default();
    for overlay in order {
        let matched: Vec<_> = scopes
            .iter()
            .map(|s| matches(s.catalog, &s.labels, overlay))
            .collect();
        let conflict = scopes
            .iter()
            .zip(&entries)
            .zip(&matched)
            .find_map(|((s, e), m)| e.conflict(s.catalog, overlay, m));
        if let Some(conflict) = conflict {
            evaluation.conflicts.insert(overlay.name.clone(), conflict);
            continue;
        }
        for (e, m) in entries.iter_mut().zip(matched) {
            e.record(overlay, m);
        }
    }
    for (scope, e) in scopes.iter_mut().zip(entries) {
        e.write(scope.catalog);
    }
    evaluation
}

/// Applies `overlays` to `catalog` in place (see the module docs for precedence and
/// conflicts) and reports the overlays left out. The catalog is taken as shared by every
/// NodePool: requirements on `karpenter.sh/nodepool` or NodePool labels see no such label
/// (see [`apply_overlays_per_pool`] and [`apply_overlays_to_problem`] for those).
pub fn apply_overlays(catalog: &mut [InstanceType], overlays: &[Overlay]) -> Evaluation {
    apply_scoped(
        &mut [Scope {
            catalog,
            labels: BTreeMap::new(),
        }],
        overlays,
    )
}
