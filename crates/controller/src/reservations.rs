//! Reserved capacity in the catalogs the loops solve with: the `ReservedCapacity` feature gate,
//! and, for providers whose reservations report their whole size (kwok), the capacity the
//! cluster's NodeClaims already use.

use std::collections::{BTreeMap, HashMap};

use karpenter_api::v1::{NodeClaim, Operator};
use karpenter_solver::InstanceType;
use karpenter_solver::labels::CAPACITY_TYPE_RESERVED;

use crate::context::Context;
use crate::state::Snapshot;

/// Adjusts `catalogs` (NodePool → instance types) in place: without the gate, reserved
/// offerings are dropped; with it, reservations the provider reports by size lose one
/// instance per NodeClaim on them (so a reservation's capacity is what is left for new nodes).
pub fn apply(
    ctx: &Context,
    snapshot: &Snapshot,
    catalogs: &mut BTreeMap<String, Vec<InstanceType>>,
) {
    if !ctx.options.reserved_capacity {
        for its in catalogs.values_mut() {
            drop_reserved(its);
        }
        return;
    }
    let Some(label) = ctx.provider.reservations() else {
        return;
    };
    if !label.capacity_is_total {
        return;
    }
    let in_use = in_use(snapshot.node_claims.iter().map(|c| c.as_ref()), label.key);
    if in_use.is_empty() {
        return;
    }
    for its in catalogs.values_mut() {
        subtract(its, &in_use);
    }
}

/// Removes every `reserved` offering (feature gate `ReservedCapacity=false`).
pub fn drop_reserved(its: &mut [InstanceType]) {
    for it in its {
        it.offerings
            .retain(|o| o.capacity_type != CAPACITY_TYPE_RESERVED && o.reservation.is_none());
    }
}

/// NodeClaims per reservation ID: a claim holds the one its `key` label names (launched), or
/// the single value its `key` requirement pins (in flight, not launched yet). Claims being
/// deleted still count: their instance runs until termination finishes.
pub fn in_use<'a>(claims: impl Iterator<Item = &'a NodeClaim>, key: &str) -> HashMap<String, i64> {
    let mut out: HashMap<String, i64> = HashMap::new();
    for c in claims {
        let labelled = c.metadata.labels.as_ref().and_then(|l| l.get(key));
        let pinned = || {
            c.spec
                .requirements
                .iter()
                .find(|r| r.key == key && r.operator == Operator::In && r.values.len() == 1)
                .map(|r| &r.values[0])
        };
        if let Some(id) = labelled.or_else(pinned) {
            *out.entry(id.clone()).or_insert(0) += 1;
        }
    }
    out
}

/// Lowers each reserved offering's capacity by the instances `in_use` counts on it.
pub fn subtract(its: &mut [InstanceType], in_use: &HashMap<String, i64>) {
    for o in its.iter_mut().flat_map(|it| it.offerings.iter_mut()) {
        if let Some(r) = o.reservation.as_mut()
            && let Some(n) = in_use.get(&r.id)
        {
            r.capacity -= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use karpenter_api::v1::NodeSelectorRequirementWithMinValues;
    use karpenter_solver::{Offering, Resources};

    const KEY: &str = "example.com/reservation-id";

    fn claim(label: Option<&str>, pinned: &[&str]) -> NodeClaim {
        let mut c = NodeClaim::for_instance("c", None);
        if let Some(id) = label {
            c.metadata.labels = Some([(KEY.to_string(), id.to_string())].into());
        }
        if !pinned.is_empty() {
            c.spec
                .requirements
                .push(NodeSelectorRequirementWithMinValues {
                    key: KEY.into(),
                    operator: Operator::In,
                    values: pinned.iter().map(|s| s.to_string()).collect(),
                    min_values: None,
                });
        }
        c
    }

    #[test]
    fn claims_are_counted_by_label_or_single_pinned_value() {
        let claims = [
            claim(Some("a"), &[]),
            claim(None, &["a"]),
            claim(Some("b"), &["b"]),
            claim(None, &["a", "b"]), // not pinned to one reservation
            claim(None, &[]),
        ];
        let got = in_use(claims.iter(), KEY);
        assert_eq!(got, HashMap::from([("a".into(), 2), ("b".into(), 1)]));
    }

    fn it() -> InstanceType {
        InstanceType {
            name: "t".into(),
            capacity: Resources::new(),
            overhead: Default::default(),
            labels: Default::default(),
            offerings: vec![
                Offering::new("z", "on-demand", 1.0),
                Offering::reserved("z", 0.0, "a", 3),
                Offering::reserved("z", 0.0, "c", 1),
            ],
        }
    }

    #[test]
    fn in_use_is_subtracted_per_reservation() {
        let mut its = vec![it()];
        subtract(&mut its, &HashMap::from([("a".into(), 2), ("b".into(), 5)]));
        let caps: Vec<Option<i64>> = its[0]
            .offerings
            .iter()
            .map(|o| o.reservation.as_ref().map(|r| r.capacity))
            .collect();
        assert_eq!(caps, vec![None, Some(1), Some(1)]);
    }

    #[test]
    fn the_gate_off_drops_reserved_offerings() {
        let mut its = vec![it()];
        drop_reserved(&mut its);
        assert_eq!(its[0].offerings, vec![Offering::new("z", "on-demand", 1.0)]);
    }
}
