//! Drift detection (pure): the NodePool hash stamped on NodePools and NodeClaims, and why a
//! NodeClaim no longer matches its NodePool.
//!
//! Like upstream, the hash covers `spec.template` except the fields that do not make an
//! existing node wrong: `requirements` (checked label by label instead, as
//! `RequirementsDrifted`), `expireAfter` and `terminationGracePeriod` (they apply to existing
//! nodes as they are). It is our own function (FNV-1a over a canonical rendering, taints as
//! sets), so it carries its own version: a NodeClaim stamped by another implementation or an
//! older version is never compared, only ones with [`HASH_VERSION`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use karpenter_api::labels::{NODE_POOL_HASH_ANNOTATION, NODE_POOL_HASH_VERSION_ANNOTATION};
use karpenter_api::solver_input::disruption::requirements_drifted;
use karpenter_api::v1::{NodeClaim, NodePool, Taint};

/// Version of [`pool_hash`]; bump it whenever the function changes.
pub const HASH_VERSION: &str = "rs1";
/// Drift reason: the NodePool's template changed since the NodeClaim was made.
pub const NODE_POOL_DRIFTED: &str = "NodePoolDrifted";
/// Drift reason: the NodeClaim's labels no longer satisfy the NodePool's requirements.
pub const REQUIREMENTS_DRIFTED: &str = "RequirementsDrifted";

fn taints(out: &mut String, name: &str, ts: &[Taint]) {
    let mut v: Vec<String> = ts
        .iter()
        .map(|t| {
            format!(
                "{}={}:{:?}",
                t.key,
                t.value.as_deref().unwrap_or_default(),
                t.effect
            )
        })
        .collect();
    v.sort();
    v.dedup();
    let _ = write!(out, "{name}{v:?};");
}

fn map(out: &mut String, name: &str, m: &BTreeMap<String, String>) {
    let _ = write!(out, "{name}{m:?};");
}

/// The hash of the NodePool's template fields that make an existing node out of date.
pub fn pool_hash(pool: &NodePool) -> String {
    let t = &pool.spec.template;
    let mut canon = String::new();
    map(&mut canon, "labels", &t.metadata.labels);
    map(&mut canon, "annotations", &t.metadata.annotations);
    taints(&mut canon, "taints", &t.spec.taints);
    taints(&mut canon, "startupTaints", &t.spec.startup_taints);
    let r = &t.spec.node_class_ref;
    let _ = write!(canon, "nodeClassRef{}/{}/{};", r.group, r.kind, r.name);
    // FNV-1a, 64 bit: stable across builds and platforms (std's hashers are not).
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in canon.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h.to_string()
}

/// The annotations that stamp `pool`'s hash on a NodeClaim or NodePool.
pub fn hash_annotations(pool: &NodePool) -> [(String, String); 2] {
    [
        (NODE_POOL_HASH_ANNOTATION.to_string(), pool_hash(pool)),
        (
            NODE_POOL_HASH_VERSION_ANNOTATION.to_string(),
            HASH_VERSION.to_string(),
        ),
    ]
}

/// Whether the NodePool's own annotations already carry its current hash.
pub fn pool_stamped(pool: &NodePool) -> bool {
    let a = pool.metadata.annotations.as_ref();
    let get = |k: &str| a.and_then(|a| a.get(k)).map(String::as_str);
    get(NODE_POOL_HASH_ANNOTATION) == Some(pool_hash(pool).as_str())
        && get(NODE_POOL_HASH_VERSION_ANNOTATION) == Some(HASH_VERSION)
}

/// Why `claim` (whose Node carries `node_labels`) drifted from `pool`, as `(reason, message)`,
/// or `None`. A claim without our hash version is only checked against the requirements.
pub fn drifted(
    claim: &NodeClaim,
    pool: &NodePool,
    node_labels: &BTreeMap<String, String>,
) -> Option<(String, String)> {
    let a = claim.metadata.annotations.as_ref();
    let get = |k: &str| a.and_then(|a| a.get(k)).map(String::as_str);
    if get(NODE_POOL_HASH_VERSION_ANNOTATION) == Some(HASH_VERSION)
        && let Some(hash) = get(NODE_POOL_HASH_ANNOTATION)
        && hash != pool_hash(pool)
    {
        return Some((
            NODE_POOL_DRIFTED.to_string(),
            "the NodePool's template changed".to_string(),
        ));
    }
    requirements_drifted(pool, node_labels).map(|m| (REQUIREMENTS_DRIFTED.to_string(), m))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use karpenter_api::v1::{NodeSelectorRequirementWithMinValues, Operator};

    fn pool() -> NodePool {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
            "metadata": {"name": "np"},
            "spec": {"template": {
                "metadata": {"labels": {"team": "a"}},
                "spec": {"requirements": [], "expireAfter": "720h",
                         "nodeClassRef": {"group": "g", "kind": "K", "name": "c"}}}}
        }))
        .unwrap()
    }

    fn stamped_claim(p: &NodePool) -> NodeClaim {
        let mut c = NodeClaim::for_instance("c1", None);
        c.metadata.annotations = Some(hash_annotations(p).into_iter().collect());
        c
    }

    #[test]
    fn template_label_change_drifts_but_expiry_and_requirements_do_not_rehash() {
        let p = pool();
        let c = stamped_claim(&p);
        assert_eq!(drifted(&c, &p, &BTreeMap::new()), None);

        let mut longer = p.clone();
        longer.spec.template.spec.expire_after = "Never".into();
        longer
            .spec
            .template
            .spec
            .requirements
            .push(NodeSelectorRequirementWithMinValues {
                key: "zone".into(),
                operator: Operator::In,
                values: vec!["z1".into()],
                min_values: None,
            });
        assert_eq!(pool_hash(&longer), pool_hash(&p));

        let mut relabelled = p.clone();
        relabelled
            .spec
            .template
            .metadata
            .labels
            .insert("team".into(), "b".into());
        let (reason, _) = drifted(&c, &relabelled, &BTreeMap::new()).unwrap();
        assert_eq!(reason, NODE_POOL_DRIFTED);
    }

    #[test]
    fn requirements_and_hash_versions() {
        let mut p = pool();
        p.spec
            .template
            .spec
            .requirements
            .push(NodeSelectorRequirementWithMinValues {
                key: "zone".into(),
                operator: Operator::In,
                values: vec!["z1".into()],
                min_values: None,
            });
        let c = stamped_claim(&p);
        let labels = BTreeMap::from([("zone".to_string(), "z2".to_string())]);
        let (reason, msg) = drifted(&c, &p, &labels).unwrap();
        assert_eq!(reason, REQUIREMENTS_DRIFTED);
        assert!(msg.contains("zone"), "{msg}");

        // Another implementation's hash is never compared.
        let mut foreign = c.clone();
        foreign.metadata.annotations = Some(BTreeMap::from([
            (NODE_POOL_HASH_ANNOTATION.to_string(), "123".to_string()),
            (
                NODE_POOL_HASH_VERSION_ANNOTATION.to_string(),
                "v3".to_string(),
            ),
        ]));
        assert_eq!(drifted(&foreign, &p, &BTreeMap::new()), None);
        assert!(!pool_stamped(&p));
        p.metadata.annotations = Some(hash_annotations(&p).into_iter().collect());
        assert!(pool_stamped(&p));
    }
}
