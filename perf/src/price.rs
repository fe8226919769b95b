//! The price of a kwok instance: the kwok provider's catalog entry for the instance type,
//! zone and capacity type a NodeClaim (or Node) carries in its labels, the same catalog
//! `karpenter simulate --catalog kwok` prices its plan with.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use karpenter_api::labels::INSTANCE_TYPE_LABEL;

const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const CAPACITY_TYPE_LABEL: &str = "karpenter.sh/capacity-type";

/// (instance type, zone, capacity type) -> $/h.
fn table() -> &'static BTreeMap<(String, String, String), f64> {
    static TABLE: OnceLock<BTreeMap<(String, String, String), f64>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = BTreeMap::new();
        for it in karpenter_providers::kwok::catalog() {
            for o in &it.offerings {
                t.insert(
                    (it.name.clone(), o.zone.clone(), o.capacity_type.clone()),
                    o.price,
                );
            }
        }
        t
    })
}

/// `None` until the labels name a launched offering (a NodeClaim before launch has none).
pub fn of_labels(labels: &BTreeMap<String, String>) -> Option<f64> {
    let key = (
        labels.get(INSTANCE_TYPE_LABEL)?.clone(),
        labels.get(ZONE_LABEL)?.clone(),
        labels.get(CAPACITY_TYPE_LABEL)?.clone(),
    );
    table().get(&key).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_a_catalog_offering() {
        let it = &karpenter_providers::kwok::catalog()[0];
        let o = &it.offerings[0];
        let labels = BTreeMap::from([
            (INSTANCE_TYPE_LABEL.to_string(), it.name.clone()),
            (ZONE_LABEL.to_string(), o.zone.clone()),
            (CAPACITY_TYPE_LABEL.to_string(), o.capacity_type.clone()),
        ]);
        assert_eq!(of_labels(&labels), Some(o.price));
        assert_eq!(of_labels(&BTreeMap::new()), None);
    }
}
