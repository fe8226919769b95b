//! Launching what the plan chose when prices were overlaid. Providers pick the cheapest of a
//! NodeClaim's instance-type options by *their own* prices, which know nothing of NodeOverlays:
//! an overlay making a type expensive would be planned around and then launched anyway. So a
//! claim whose options include a type with an overlaid price keeps only the options no more
//! expensive, after overlays, than the offering the plan chose (its zone and capacity type are
//! pinned already). Pure.
//!
//! Upstream instead marks such claims `karpenter.sh/price-overlay-applied` and leaves the
//! choice to the provider (AWS then launches by the plan's order; upstream's kwok provider
//! ignores overlays at launch). A NodePool with `minValues` on instance types keeps every
//! option: cutting them could break its minimum.
//!
//! Everything is kept per NodePool: overlays may price a type differently per NodePool.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use karpenter_api::labels::INSTANCE_TYPE_LABEL;
use karpenter_api::v1::NodePool;
use karpenter_api::v1alpha1::{
    CAPACITY_OVERLAY_APPLIED_ANNOTATION, PRICE_OVERLAY_APPLIED_ANNOTATION,
};
use karpenter_solver::{InstanceType, PlannedNodeClaim};

/// Prices are floats computed the same way on both sides; this only absorbs rounding.
const EPSILON: f64 = 1e-9;

/// (NodePool, instance type) pairs an overlay changed: the price of some offering, or the
/// capacity.
pub type Overlaid = BTreeSet<(String, String)>;

/// NodePool name → instance types.
pub type Catalogs = BTreeMap<String, Vec<InstanceType>>;

/// The (NodePool, instance type) pairs whose offerings' prices, and those whose capacity,
/// differ between `before` and `after` (the same catalogs without and with overlays).
pub fn overlaid(before: &Catalogs, after: &Catalogs) -> (Overlaid, Overlaid) {
    let mut prices = BTreeSet::new();
    let mut capacity = BTreeSet::new();
    for (pool, after) in after {
        let Some(before) = before.get(pool) else {
            continue;
        };
        for (b, a) in before.iter().zip(after).filter(|(b, a)| b.name == a.name) {
            let key = || (pool.clone(), a.name.clone());
            if b.offerings
                .iter()
                .zip(&a.offerings)
                .any(|(x, y)| x.price != y.price)
            {
                prices.insert(key());
            }
            if b.capacity != a.capacity {
                capacity.insert(key());
            }
        }
    }
    (prices, capacity)
}

/// The overlaid prices of the last catalog listed (provisioning or disruption), kept for the
/// NodeClaims created from its plans. Shared by every loop through the context.
#[derive(Default)]
pub struct LaunchPrices(RwLock<Arc<Prices>>);

/// Overlaid prices: per NodePool, instance type, zone and capacity type, the cheapest
/// available offering.
#[derive(Default)]
pub struct Prices {
    overlaid: Overlaid,
    capacity_overlaid: Overlaid,
    prices: HashMap<(String, String, String, String), f64>,
}

impl Prices {
    /// The prices of `catalogs` (overlays applied); `overlaid` names the (NodePool, type)
    /// pairs whose prices they changed, `capacity_overlaid` those whose capacity.
    pub fn new(catalogs: &Catalogs, overlaid: Overlaid, capacity_overlaid: Overlaid) -> Self {
        let mut prices: HashMap<(String, String, String, String), f64> = HashMap::new();
        if !overlaid.is_empty() {
            for (pool, it) in catalogs
                .iter()
                .flat_map(|(p, c)| c.iter().map(move |it| (p, it)))
            {
                for o in it.offerings.iter().filter(|o| o.available) {
                    let key = (
                        pool.clone(),
                        it.name.clone(),
                        o.zone.clone(),
                        o.capacity_type.clone(),
                    );
                    let p = prices.entry(key).or_insert(o.price);
                    *p = p.min(o.price);
                }
            }
        }
        Self {
            overlaid,
            capacity_overlaid,
            prices,
        }
    }
}

impl LaunchPrices {
    /// Keeps the prices of the catalog just listed.
    pub fn record(&self, prices: Prices) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(prices);
    }

    /// `planned` as it should launch (see the module docs): options narrowed when a price
    /// overlay touches them and `pool` has no `minValues` on instance types.
    pub fn narrow(&self, pool: &NodePool, planned: &PlannedNodeClaim) -> PlannedNodeClaim {
        let prices = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut out = planned.clone();
        let min_values = pool
            .spec
            .template
            .spec
            .requirements
            .iter()
            .any(|r| r.key == INSTANCE_TYPE_LABEL && r.min_values.is_some());
        if !min_values {
            out.instance_type_options = narrowed_options(planned, &prices);
        }
        out
    }
}

impl LaunchPrices {
    /// Upstream's annotations for a NodeClaim of NodePool `pool` launched with these
    /// instance-type options: whether an overlay changed the price, or the capacity, of any of
    /// them in that NodePool.
    pub fn annotations(&self, pool: &str, options: &[String]) -> Vec<(String, String)> {
        let prices = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let key = |o: &String| (pool.to_owned(), o.clone());
        let mut out = Vec::new();
        if options.iter().any(|o| prices.overlaid.contains(&key(o))) {
            out.push((
                PRICE_OVERLAY_APPLIED_ANNOTATION.to_owned(),
                "true".to_owned(),
            ));
        }
        if options
            .iter()
            .any(|o| prices.capacity_overlaid.contains(&key(o)))
        {
            out.push((
                CAPACITY_OVERLAY_APPLIED_ANNOTATION.to_owned(),
                "true".to_owned(),
            ));
        }
        out
    }
}

/// The options of `planned` no dearer than its chosen offering, when a price overlay touches
/// any of them; all of them otherwise.
pub fn narrowed_options(planned: &PlannedNodeClaim, prices: &Prices) -> Vec<String> {
    let pool = &planned.node_pool;
    let touched = planned
        .instance_type_options
        .iter()
        .chain([&planned.instance_type])
        .any(|o| prices.overlaid.contains(&(pool.clone(), o.clone())));
    if !touched {
        return planned.instance_type_options.clone();
    }
    let limit = planned.price + EPSILON;
    planned
        .instance_type_options
        .iter()
        .filter(|o| {
            **o == planned.instance_type
                || prices
                    .prices
                    .get(&(
                        pool.clone(),
                        (*o).clone(),
                        planned.zone.clone(),
                        planned.capacity_type.clone(),
                    ))
                    .is_some_and(|p| *p <= limit)
        })
        .cloned()
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use karpenter_solver::{Offering, Overhead, Resources};

    use super::*;

    fn it(name: &str, price: f64) -> InstanceType {
        InstanceType {
            name: name.into(),
            capacity: Resources::new(),
            overhead: Overhead::default(),
            labels: BTreeMap::new(),
            offerings: vec![
                Offering::new("a", "on-demand", price),
                Offering::new("b", "on-demand", price / 2.0),
            ],
        }
    }

    fn claim(chosen: &str, price: f64, options: &[&str]) -> PlannedNodeClaim {
        PlannedNodeClaim {
            name: "p-1".into(),
            node_pool: "p".into(),
            instance_type: chosen.into(),
            zone: "a".into(),
            capacity_type: "on-demand".into(),
            reservation_id: None,
            price,
            instance_type_options: options.iter().map(|s| s.to_string()).collect(),
            labels: BTreeMap::new(),
            taints: vec![],
            pods: vec![],
            requests: Resources::new(),
        }
    }

    #[test]
    fn only_changed_prices_and_capacity_count_as_overlaid() {
        let before = catalogs(&[it("x", 1.0), it("y", 2.0)]);
        let mut after = before.clone();
        let p = after.get_mut("p").unwrap();
        p[1].offerings[0].price = 9.0;
        p[0].capacity.set("example.com/dongle", 1);
        // Pool q sees the types unchanged.
        after.insert("q".into(), before["p"].clone());
        let mut before = before;
        before.insert("q".into(), after["q"].clone());
        assert_eq!(
            overlaid(&before, &after),
            (
                BTreeSet::from([pair("p", "y")]),
                BTreeSet::from([pair("p", "x")])
            )
        );
    }

    fn catalogs(its: &[InstanceType]) -> Catalogs {
        BTreeMap::from([("p".to_string(), its.to_vec())])
    }

    fn pair(pool: &str, name: &str) -> (String, String) {
        (pool.to_string(), name.to_string())
    }

    #[test]
    fn touched_claims_keep_options_no_dearer_than_the_choice() {
        // After overlays, zone a: raw-cheap "x" costs 5 (overlaid), "y" 0.3, "z" 0.3, "w" 0.4.
        let mut catalog = catalogs(&[it("x", 5.0), it("y", 0.3), it("z", 0.3), it("w", 0.4)]);
        // Pool q has its own prices (a per-NodePool overlay): w costs 0.1 there, not in p.
        catalog.insert("q".into(), vec![it("w", 0.1)]);
        let prices = Prices::new(&catalog, BTreeSet::from([pair("p", "x")]), BTreeSet::new());
        let c = claim("y", 0.3, &["y", "z", "w", "x"]);
        // y (chosen) and z (same price) stay; w (0.4 in p) and x (5) go.
        assert_eq!(narrowed_options(&c, &prices), ["y", "z"]);
    }

    #[test]
    fn untouched_claims_and_min_values_pools_keep_every_option() {
        let catalog = catalogs(&[it("x", 5.0), it("y", 0.3), it("w", 0.4)]);
        let launch = LaunchPrices::default();
        launch.record(Prices::new(
            &catalog,
            BTreeSet::from([pair("p", "x")]),
            BTreeSet::from([pair("p", "w")]),
        ));
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            launch.annotations("p", &names(&["y", "x"])),
            [(
                PRICE_OVERLAY_APPLIED_ANNOTATION.to_string(),
                "true".to_string()
            )]
        );
        assert_eq!(
            launch.annotations("p", &names(&["w"])),
            [(
                CAPACITY_OVERLAY_APPLIED_ANNOTATION.to_string(),
                "true".to_string()
            )]
        );
        assert!(launch.annotations("p", &names(&["y"])).is_empty());
        // Overlaid in p only: a NodeClaim of NodePool q is not marked.
        assert!(launch.annotations("q", &names(&["x", "w"])).is_empty());
        let mut pool: NodePool = serde_json::from_value(serde_json::json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": {"name": "p"},
            "spec": {"template": {"spec": {
                "nodeClassRef": {"group": "g", "kind": "K", "name": "n"},
                "requirements": []}}}
        }))
        .unwrap();
        let untouched = claim("y", 0.3, &["y", "w"]);
        assert_eq!(
            launch.narrow(&pool, &untouched).instance_type_options,
            ["y", "w"]
        );
        let touched = claim("y", 0.3, &["y", "w", "x"]);
        assert_eq!(launch.narrow(&pool, &touched).instance_type_options, ["y"]);

        pool.spec.template.spec.requirements = serde_json::from_value(serde_json::json!([
            {"key": INSTANCE_TYPE_LABEL, "operator": "Exists", "minValues": 2}
        ]))
        .unwrap();
        assert_eq!(
            launch.narrow(&pool, &touched).instance_type_options,
            ["y", "w", "x"]
        );
    }
}
