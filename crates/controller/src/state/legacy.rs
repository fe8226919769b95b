//! Legacy `karpenter.sh/v1alpha5` Provisioners, served as NodePools.
//!
//! Clusters that still carry Provisioners keep working without a migration: every round sees
//! each Provisioner converted on read (`Provisioner::convert`, the mapping in
//! `karpenter_api::conversion`) next to the real NodePools. The converted view keeps the
//! Provisioner's UID and creation time and is marked with [`PROVISIONER_ORIGIN_ANNOTATION`], so
//! NodeClaims launched for it are owned by the Provisioner (an owner reference naming a
//! NodePool that does not exist would make the garbage collector delete them at once).
//!
//! A NodePool and a Provisioner with the same name would share NodeClaims through the
//! `karpenter.sh/nodepool` label; the NodePool wins and the Provisioner is left out.

use std::collections::BTreeSet;
use std::sync::Arc;

use karpenter_api::v1::NodePool;
use karpenter_api::v1alpha5::Provisioner;

/// Marks an in-memory NodePool converted from a Provisioner (never written to the API).
pub const PROVISIONER_ORIGIN_ANNOTATION: &str = "compatibility.karpenter.sh/v1alpha5-provisioner";

/// Whether this NodePool is the converted view of a legacy Provisioner.
pub fn is_from_provisioner(pool: &NodePool) -> bool {
    pool.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(PROVISIONER_ORIGIN_ANNOTATION))
}

/// The NodePools a round works with: the real ones, then each Provisioner converted (by
/// name). Provisioners that fail to convert or collide with a NodePool are skipped with a
/// warning naming why.
pub fn effective_node_pools(
    mut pools: Vec<Arc<NodePool>>,
    provisioners: &[Arc<Provisioner>],
) -> Vec<Arc<NodePool>> {
    if provisioners.is_empty() {
        return pools;
    }
    let names: BTreeSet<String> = pools
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let mut legacy: Vec<&Arc<Provisioner>> = provisioners.iter().collect();
    legacy.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    for p in legacy {
        let name = p.metadata.name.clone().unwrap_or_default();
        if p.metadata.deletion_timestamp.is_some() {
            continue;
        }
        if names.contains(&name) {
            tracing::warn!(Provisioner = %name, "a NodePool has the same name; the Provisioner is ignored");
            continue;
        }
        match p.convert() {
            Ok(converted) => {
                let mut pool = converted.node_pool;
                pool.metadata.uid = p.metadata.uid.clone();
                pool.metadata.creation_timestamp = p.metadata.creation_timestamp.clone();
                pool.metadata.resource_version = p.metadata.resource_version.clone();
                pool.metadata
                    .annotations
                    .get_or_insert_with(Default::default)
                    .insert(PROVISIONER_ORIGIN_ANNOTATION.to_owned(), name);
                pools.push(Arc::new(pool));
            }
            Err(e) => {
                tracing::warn!(Provisioner = %name, error = %e, "Provisioner cannot be served as a NodePool")
            }
        }
    }
    pools
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use karpenter_api::v1::{ConsolidationPolicy, NodePoolSpec};
    use karpenter_api::v1alpha5::{ProviderRef, ProvisionerSpec};

    fn provisioner(name: &str, ttl: Option<i64>) -> Arc<Provisioner> {
        let mut p = Provisioner::new(
            name,
            ProvisionerSpec {
                provider_ref: Some(ProviderRef {
                    api_version: Some("karpenter.kwok.sh/v1alpha1".into()),
                    kind: Some("KWOKNodeClass".into()),
                    name: "default".into(),
                }),
                ttl_seconds_after_empty: ttl,
                ..Default::default()
            },
        );
        p.metadata.uid = Some(format!("uid-{name}"));
        Arc::new(p)
    }

    fn node_pool(name: &str) -> Arc<NodePool> {
        Arc::new(NodePool::new(
            name,
            NodePoolSpec {
                template: Default::default(),
                disruption: Default::default(),
                limits: Default::default(),
                weight: None,
                replicas: None,
            },
        ))
    }

    #[test]
    fn provisioners_join_the_node_pools_marked_and_keeping_their_uid() {
        let np = node_pool("np");
        let pools = effective_node_pools(vec![np], &[provisioner("legacy", Some(30))]);
        assert_eq!(pools.len(), 2);
        let legacy = &pools[1];
        assert_eq!(legacy.metadata.name.as_deref(), Some("legacy"));
        assert_eq!(legacy.metadata.uid.as_deref(), Some("uid-legacy"));
        assert!(is_from_provisioner(legacy));
        assert!(!is_from_provisioner(&pools[0]));
        let d = &legacy.spec.disruption;
        assert_eq!(d.consolidation_policy, ConsolidationPolicy::WhenEmpty);
        assert_eq!(d.consolidate_after, "30s");
        let r = &legacy.spec.template.spec.node_class_ref;
        assert_eq!(
            (r.group.as_str(), r.kind.as_str()),
            ("karpenter.kwok.sh", "KWOKNodeClass")
        );
    }

    #[test]
    fn a_node_pool_of_the_same_name_wins() {
        let np = node_pool("same");
        let pools = effective_node_pools(vec![np], &[provisioner("same", None)]);
        assert_eq!(pools.len(), 1);
        assert!(!is_from_provisioner(&pools[0]));
    }

    #[test]
    fn an_invalid_provisioner_is_left_out() {
        let mut bad = (*provisioner("bad", None)).clone();
        bad.spec.provider_ref = None; // neither provider nor providerRef
        let pools = effective_node_pools(vec![], &[Arc::new(bad), provisioner("good", None)]);
        let names: Vec<_> = pools
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, vec!["good"]);
    }
}
