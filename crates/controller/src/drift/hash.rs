//! Drift detection (pure): the NodePool hash stamped on NodePools and NodeClaims, and why a
//! NodeClaim no longer matches its NodePool.
//!
//! Like upstream, the hash covers `spec.template` except the fields that do not make an
//! existing node wrong: `requirements` (checked label by label instead, as
//! `RequirementsDrifted`), `expireAfter` and `terminationGracePeriod` (they apply to existing
//! nodes as they are). It is our own function: FNV-1a (64 bit) over a canonical JSON rendering
//! ([`canonical`]: sorted maps, taints as sorted, de-duplicated `key=value:Effect` strings),
//! which depends on nothing but the API's field values (not on Rust's `Debug` output or
//! hashers), so it carries its own version: a NodeClaim stamped with another version is
//! re-stamped rather than compared (see [`super`]).

use std::collections::BTreeMap;

use karpenter_api::labels::{NODE_POOL_HASH_ANNOTATION, NODE_POOL_HASH_VERSION_ANNOTATION};
use karpenter_api::solver_input::disruption::requirements_drifted;
use karpenter_api::v1::nodeclaim::CONDITION_DRIFTED;
use karpenter_api::v1::{NodeClaim, NodePool, Taint, find_condition};
use serde_json::json;

/// Version of [`pool_hash`]; bump it whenever [`canonical`] or the hash function changes.
pub const HASH_VERSION: &str = "rs2";
/// Drift reason: the NodePool's template changed since the NodeClaim was made.
pub const NODE_POOL_DRIFTED: &str = "NodePoolDrifted";
/// Drift reason: the NodeClaim's labels no longer satisfy the NodePool's requirements.
pub const REQUIREMENTS_DRIFTED: &str = "RequirementsDrifted";

/// Taints as a set: `key=value:Effect`, sorted, without repeats.
fn taint_set(ts: &[Taint]) -> Vec<String> {
    let mut v: Vec<String> = ts
        .iter()
        .map(|t| {
            // The effect as the API spells it (its serde form), never its Rust Debug name.
            let effect = serde_json::to_value(t.effect)
                .ok()
                .and_then(|e| e.as_str().map(str::to_owned))
                .unwrap_or_default();
            format!(
                "{}={}:{effect}",
                t.key,
                t.value.as_deref().unwrap_or_default()
            )
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

/// The canonical rendering the hash is taken of: compact JSON with keys in a fixed order
/// (serde_json's maps are sorted), so equal templates always render to equal bytes.
pub fn canonical(pool: &NodePool) -> String {
    let t = &pool.spec.template;
    let r = &t.spec.node_class_ref;
    json!({
        "annotations": t.metadata.annotations,
        "labels": t.metadata.labels,
        "nodeClassRef": {"group": r.group, "kind": r.kind, "name": r.name},
        "startupTaints": taint_set(&t.spec.startup_taints),
        "taints": taint_set(&t.spec.taints),
    })
    .to_string()
}

/// FNV-1a, 64 bit: stable across builds and platforms (std's hashers are not).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The hash of the NodePool's template fields that make an existing node out of date.
pub fn pool_hash(pool: &NodePool) -> String {
    fnv1a(canonical(pool).as_bytes()).to_string()
}

/// Whether the NodeClaim carries a NodePool hash of an older (or another implementation's)
/// version: it must be re-stamped with the current one, never compared.
pub fn needs_restamp(claim: &NodeClaim) -> bool {
    let a = claim.metadata.annotations.as_ref();
    a.and_then(|a| a.get(NODE_POOL_HASH_VERSION_ANNOTATION))
        .is_some_and(|v| v != HASH_VERSION)
}

/// The annotations that re-stamp a NodeClaim carrying another hash version (see
/// [`needs_restamp`]) for `pool`. Like upstream on a hash-version change, a NodeClaim already
/// marked `Drifted` only gets the new version and keeps its old hash: hashes of different
/// versions cannot be compared, so whether it is still out of date is unknown, and it stays
/// drifted (its old hash differs from the new one) rather than being silently forgiven. Every
/// other NodeClaim takes the NodePool's current hash.
pub fn restamp_annotations(claim: &NodeClaim, pool: &NodePool) -> Vec<(String, String)> {
    let drifted = claim
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, CONDITION_DRIFTED))
        .is_some_and(|c| c.is_true());
    let [hash, version] = hash_annotations(pool);
    if drifted {
        vec![version]
    } else {
        vec![hash, version]
    }
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
    fn fnv1a_matches_the_published_test_vectors() {
        // From the FNV reference (Fowler/Noll/Vo): FNV-1a 64 of "" and "a".
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn the_canonical_form_of_a_fixed_node_pool_is_pinned() {
        let p: NodePool = serde_json::from_value(serde_json::json!({
            "apiVersion": "karpenter.sh/v1", "kind": "NodePool",
            "metadata": {"name": "np"},
            "spec": {"template": {
                "metadata": {"labels": {"team": "a", "env": "prod"},
                             "annotations": {"note": "x\"y"}},
                "spec": {"requirements": [], "expireAfter": "720h",
                         "taints": [{"key": "k2", "effect": "NoExecute"},
                                    {"key": "k1", "value": "v", "effect": "NoSchedule"},
                                    {"key": "k2", "effect": "NoExecute"}],
                         "startupTaints": [{"key": "s", "effect": "PreferNoSchedule"}],
                         "nodeClassRef": {"group": "karpenter.k8s.aws", "kind": "EC2NodeClass",
                                          "name": "default"}}}}
        }))
        .unwrap();
        // Written by hand from the rules above: keys sorted, taints as a sorted set.
        let want = concat!(
            r#"{"annotations":{"note":"x\"y"},"labels":{"env":"prod","team":"a"},"#,
            r#""nodeClassRef":{"group":"karpenter.k8s.aws","kind":"EC2NodeClass","name":"default"},"#,
            r#""startupTaints":["s=:PreferNoSchedule"],"taints":["k1=v:NoSchedule","k2=:NoExecute"]}"#
        );
        assert_eq!(canonical(&p), want);
        assert_eq!(pool_hash(&p), fnv1a(want.as_bytes()).to_string());
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

        // Another implementation's (or an older version's) hash is never compared; it is
        // re-stamped instead.
        let mut foreign = c.clone();
        foreign.metadata.annotations = Some(BTreeMap::from([
            (NODE_POOL_HASH_ANNOTATION.to_string(), "123".to_string()),
            (
                NODE_POOL_HASH_VERSION_ANNOTATION.to_string(),
                "v3".to_string(),
            ),
        ]));
        assert_eq!(drifted(&foreign, &p, &BTreeMap::new()), None);
        assert!(needs_restamp(&foreign));
        assert!(!needs_restamp(&c));

        // Re-stamped: the current hash and version; a claim already Drifted keeps its old
        // hash, so it is still found drifted by the new version's comparison.
        let stamp: BTreeMap<String, String> =
            restamp_annotations(&foreign, &p).into_iter().collect();
        assert_eq!(stamp, hash_annotations(&p).into_iter().collect());
        let mut drifted_foreign = foreign.clone();
        let mut status = karpenter_api::v1::NodeClaimStatus::default();
        crate::nodeclaim::lifecycle::logic::set_condition(
            &mut status.conditions,
            CONDITION_DRIFTED,
            "True",
            NODE_POOL_DRIFTED,
            "",
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        );
        drifted_foreign.status = Some(status);
        let stamp = restamp_annotations(&drifted_foreign, &p);
        assert_eq!(
            stamp,
            vec![(
                NODE_POOL_HASH_VERSION_ANNOTATION.to_string(),
                HASH_VERSION.to_string()
            )]
        );
        let annotations = drifted_foreign.metadata.annotations.get_or_insert_default();
        annotations.extend(stamp);
        let (reason, _) = drifted(&drifted_foreign, &p, &BTreeMap::new()).unwrap();
        assert_eq!(reason, NODE_POOL_DRIFTED);
        assert!(!pool_stamped(&p));
        p.metadata.annotations = Some(hash_annotations(&p).into_iter().collect());
        assert!(pool_stamped(&p));
    }
}
