//! Where a provisioning round put each buffer's virtual pods, for upstream's `Provisioning`
//! condition: on existing capacity (`FitsExistingCapacity`), on NodeClaims the round creates
//! or nowhere (`RequiresNewCapacity`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use karpenter_api::autoscaling::{BUFFER_NAME_ANNOTATION, BUFFER_NAMESPACE_ANNOTATION};
use karpenter_solver::Plan;

use super::is_virtual;
use crate::state::{BufferRound, StoredPod};

/// The buffer (`namespace/name`) a virtual pod stands for.
fn buffer_of(pod: &StoredPod) -> Option<String> {
    let annotations = pod.metadata.annotations.as_ref()?;
    let namespace = annotations.get(BUFFER_NAMESPACE_ANNOTATION)?;
    let name = annotations.get(BUFFER_NAME_ANNOTATION)?;
    Some(format!("{namespace}/{name}"))
}

/// Per buffer, how its virtual pods among `pending` (keyed `namespace/name`) fared in `plan`;
/// `invalid` are pods the round could not convert (they count as placed nowhere).
pub fn summarise(
    pending: &BTreeMap<String, Arc<StoredPod>>,
    invalid: &[(Arc<StoredPod>, String)],
    plan: Option<&Plan>,
) -> HashMap<String, BufferRound> {
    let mut rounds: HashMap<String, BufferRound> = HashMap::new();
    let mut count = |pod: &StoredPod, field: fn(&mut BufferRound) -> &mut u32| {
        if !is_virtual(pod) {
            return;
        }
        if let Some(buffer) = buffer_of(pod) {
            *field(rounds.entry(buffer).or_default()) += 1;
        }
    };
    for (pod, _) in invalid {
        count(pod, |r| &mut r.failed);
    }
    let Some(plan) = plan else {
        return rounds;
    };
    for claim in &plan.node_claims {
        for pod in claim.pods.iter().filter_map(|k| pending.get(k)) {
            count(pod, |r| &mut r.new_capacity);
        }
    }
    for node in &plan.existing_nodes {
        for pod in node.pods.iter().filter_map(|k| pending.get(k)) {
            count(pod, |r| &mut r.existing);
        }
    }
    for u in &plan.unschedulable {
        if let Some(pod) = pending.get(&u.pod) {
            count(pod, |r| &mut r.failed);
        }
    }
    rounds
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use k8s_openapi::api::core::v1::PodTemplateSpec;
    use karpenter_api::autoscaling::{CapacityBuffer, CapacityBufferSpec, virtual_pods};
    use karpenter_solver::{ExistingPlacement, PlannedNodeClaim, Unschedulable};

    use super::*;
    use crate::pods::pod_key;

    fn pods(buffer: &str, n: i32) -> Vec<Arc<StoredPod>> {
        let mut b = CapacityBuffer::new(buffer, CapacityBufferSpec::default());
        b.metadata.namespace = Some("team".into());
        virtual_pods(&b, &PodTemplateSpec::default(), n)
            .into_iter()
            .map(|p| Arc::new(StoredPod::from(p)))
            .collect()
    }

    #[test]
    fn each_virtual_pod_counts_where_the_plan_put_it() {
        // Buffer a: 2 on an existing node, 1 on a new claim; buffer b: 1 unschedulable, 1 that
        // did not convert. A real pod on the new claim counts for no buffer.
        let a = pods("a", 3);
        let b = pods("b", 2);
        let mut real = StoredPod::clone(&a[0]);
        real.metadata.name = Some("web".into());
        real.metadata.annotations = None;
        let real = Arc::new(real);
        let pending: BTreeMap<String, Arc<StoredPod>> = a
            .iter()
            .chain(&b[..1])
            .chain([&real])
            .map(|p| (pod_key(p), p.clone()))
            .collect();
        let claim = PlannedNodeClaim {
            name: "p-1".into(),
            node_pool: "p".into(),
            instance_type: "t".into(),
            zone: "z".into(),
            capacity_type: "on-demand".into(),
            reservation_id: None,
            price: 1.0,
            instance_type_options: vec!["t".into()],
            labels: Default::default(),
            taints: vec![],
            pods: vec![pod_key(&a[2]), pod_key(&real)],
            requests: Default::default(),
        };
        let plan = Plan {
            node_claims: vec![claim],
            existing_nodes: vec![ExistingPlacement {
                node: "n".into(),
                pods: vec![pod_key(&a[0]), pod_key(&a[1])],
            }],
            unschedulable: vec![Unschedulable {
                pod: pod_key(&b[0]),
                reason: "too big".into(),
            }],
            total_price: 1.0,
            lower_bound: 1.0,
        };
        let invalid = vec![(b[1].clone(), "bad".to_string())];
        let rounds = summarise(&pending, &invalid, Some(&plan));
        assert_eq!(rounds.len(), 2, "{rounds:?}");
        assert_eq!(
            rounds["team/a"],
            BufferRound {
                existing: 2,
                new_capacity: 1,
                failed: 0
            }
        );
        assert_eq!(
            rounds["team/b"],
            BufferRound {
                existing: 0,
                new_capacity: 0,
                failed: 2
            }
        );
        // No plan (nothing to solve): only the invalid ones.
        let rounds = summarise(&pending, &invalid, None);
        assert_eq!(rounds["team/b"].failed, 1);
        assert!(!rounds.contains_key("team/a"));
    }
}
