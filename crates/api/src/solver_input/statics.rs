//! The NodeClaim a static NodePool (`spec.replicas`) launches: its template alone, no pods.
//! Shared by the controller's static loop and `simulate`, so both launch the same.

use std::collections::BTreeMap;

use karpenter_solver::{
    DaemonSetView, InstanceType, Options, PlannedNodeClaim, PodView, Resources, Toleration, solve,
};

use super::{Parts, min_values, node_pool_view, problem};
use crate::v1::NodePool;

/// The placeholder pod's namespace: it takes no resources and tolerates every taint, so the
/// scheduling simulation opens one NodeClaim from the pool's template alone.
const PLACEHOLDER_NAMESPACE: &str = "karpenter.sh/static";

/// The cheapest NodeClaim of `np`'s template among `instance_types` (the pool's catalog),
/// with room for the `daemon_sets` it would run, and up to `max_options` instance-type options
/// (cheapest first). `limits` are not checked here: the caller counts nodes against
/// `limits.nodes`, the only limit a static NodePool may have. `Err` says why none fits.
pub fn static_node_claim(
    np: &NodePool,
    instance_types: Vec<InstanceType>,
    daemon_sets: Vec<DaemonSetView>,
    max_options: usize,
) -> Result<PlannedNodeClaim, String> {
    let name = np.metadata.name.clone().unwrap_or_default();
    let mut view =
        node_pool_view(np, Resources::new(), &mut Vec::new()).map_err(|e| e.to_string())?;
    view.limits = None;
    let placeholder = PodView {
        namespace: PLACEHOLDER_NAMESPACE.to_owned(),
        name: name.clone(),
        tolerations: vec![Toleration::exists("")],
        ..PodView::default()
    };
    let min_values = match min_values(np) {
        m if m.is_empty() => BTreeMap::new(),
        m => BTreeMap::from([(name.clone(), m)]),
    };
    let assembled = problem(Parts {
        instance_types,
        node_pools: vec![view],
        pending: vec![placeholder],
        nodes: Vec::new(),
        bound: Vec::new(),
        daemon_sets,
        min_values,
    });
    let opts = Options {
        optimise: false,
        max_instance_type_options: max_options,
        lower_bound: false,
        ignore_preferences: true,
    };
    let plan = solve(&assembled.problem, &opts).map_err(|e| e.to_string())?;
    if let Some(u) = plan.unschedulable.first() {
        return Err(u.reason.clone());
    }
    let mut claim = plan
        .node_claims
        .into_iter()
        .next()
        .ok_or_else(|| format!("NodePool {name}: no NodeClaim planned"))?;
    // The placeholder was never a pod: it neither takes a pod slot nor rides on the claim.
    claim.pods.clear();
    let pods = claim.requests.get("pods");
    claim.requests.set("pods", (pods - 1).max(0));
    Ok(claim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1::{
        NodeClaimTemplate, NodeClaimTemplateSpec, NodePoolSpec,
        NodeSelectorRequirementWithMinValues, Operator, Taint, TaintEffect,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use karpenter_solver::{Offering, Overhead};

    fn it(name: &str, cpu: i64, price: f64, arch: &str) -> InstanceType {
        InstanceType {
            name: name.into(),
            capacity: Resources::from_pairs([
                ("cpu", cpu * 1000),
                ("memory", cpu << 32),
                ("pods", 110),
            ]),
            overhead: Overhead::default(),
            labels: BTreeMap::from([
                ("kubernetes.io/arch".to_string(), arch.to_string()),
                (
                    "node.kubernetes.io/instance-type".to_string(),
                    name.to_string(),
                ),
            ]),
            offerings: vec![Offering::new("z1", "on-demand", price)],
        }
    }

    #[test]
    fn the_cheapest_type_the_template_allows_with_room_for_daemon_sets() {
        let mut np = NodePool::new(
            "fixed",
            NodePoolSpec {
                template: NodeClaimTemplate {
                    metadata: Default::default(),
                    spec: NodeClaimTemplateSpec {
                        requirements: vec![NodeSelectorRequirementWithMinValues {
                            key: "kubernetes.io/arch".into(),
                            operator: Operator::In,
                            values: vec!["amd64".into()],
                            min_values: None,
                        }],
                        taints: vec![Taint {
                            key: "dedicated".into(),
                            value: None,
                            effect: TaintEffect::NoSchedule,
                        }],
                        ..Default::default()
                    },
                },
                disruption: Default::default(),
                limits: Default::default(),
                weight: None,
                replicas: Some(3),
            },
        );
        np.spec.limits.insert("nodes".into(), Quantity("0".into()));
        // arm is cheapest but excluded; small (1 cpu) is cheaper than big but a DaemonSet
        // asking 1.5 cpu that tolerates the taint does not fit on it.
        let catalog = vec![
            it("arm", 8, 0.01, "arm64"),
            it("small", 1, 0.05, "amd64"),
            it("medium", 2, 0.10, "amd64"),
            it("big", 8, 0.40, "amd64"),
        ];
        let ds = DaemonSetView {
            namespace: "kube-system".into(),
            name: "agent".into(),
            pod: PodView {
                requests: Resources::from_pairs([("cpu", 1500)]),
                tolerations: vec![Toleration::exists("")],
                ..PodView::default()
            },
        };
        let c = static_node_claim(&np, catalog.clone(), vec![ds], 60).expect("a claim");
        assert_eq!(c.node_pool, "fixed");
        assert_eq!(c.instance_type, "medium");
        assert_eq!(c.instance_type_options, vec!["medium", "big"]);
        assert!(c.pods.is_empty());
        // The DaemonSet's request, and no pod slot for the placeholder.
        assert_eq!(c.requests.get("cpu"), 1500);
        // Without DaemonSets the smallest amd64 type; limits.nodes 0 is the caller's business.
        let c = static_node_claim(&np, catalog, Vec::new(), 60).expect("a claim");
        assert_eq!(c.instance_type, "small");
        // Nothing fits: the reason.
        let err = static_node_claim(&np, vec![it("arm", 8, 0.01, "arm64")], Vec::new(), 60);
        assert!(err.is_err());
    }
}
