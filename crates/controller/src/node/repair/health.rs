//! Node health, pure: which repair policy a Node's conditions match, whether it has waited out
//! its toleration, and whether its NodePool (or, for a NodeClaim without one, the cluster) has
//! so many unhealthy Nodes that repairing more would be unsafe (upstream's `node.health`
//! controller, kept in v1.15 as `--legacy-node-repair`).

use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, NodeCondition};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use karpenter_api::labels::NODE_POOL_LABEL;
use karpenter_providers::RepairPolicy;
use kube::ResourceExt;

/// Upstream `allowedUnhealthyPercent`: a NodePool may have up to 20% of its Nodes unhealthy
/// (rounded up, as a PodDisruptionBudget's `maxUnavailable`) and still be repaired.
pub const ALLOWED_UNHEALTHY_PERCENT: usize = 20;

/// The policy a Node's condition matches, and when its toleration runs out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhealthy {
    /// The condition type (`Ready`, ...).
    pub condition: String,
    /// Its status (`False`, `Unknown`, ...).
    pub status: String,
    /// `lastTransitionTime` + the policy's toleration; `None` when the condition has no
    /// transition time (it counts as unhealthy, but is never known to be past toleration).
    pub repair_at: Option<Timestamp>,
}

/// Where the unhealthy Nodes are counted: the NodeClaim's NodePool, or the whole cluster for a
/// NodeClaim without one (upstream counts every Node then).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Nodes labelled `karpenter.sh/nodepool=<name>`.
    NodePool(String),
    /// Every Node.
    Cluster,
}

/// What to do with one Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// No policy matches.
    Healthy,
    /// Unhealthy, but within its toleration (or with no transition time to count from).
    Tolerated(Unhealthy),
    /// Replace it: delete its NodeClaim.
    Repair(Unhealthy),
    /// Past its toleration, but more than [`ALLOWED_UNHEALTHY_PERCENT`] of `scope` is unhealthy.
    Blocked {
        /// The condition that made it unhealthy.
        unhealthy: Unhealthy,
        /// Where the unhealthy Nodes were counted.
        scope: Scope,
        /// Unhealthy Nodes in `scope`.
        unhealthy_nodes: usize,
        /// Nodes in `scope`.
        nodes: usize,
    },
}

fn conditions(node: &Node) -> &[NodeCondition] {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default()
}

fn matches(policy: &RepairPolicy, c: &NodeCondition) -> bool {
    c.type_ == policy.condition_type && c.status == policy.condition_status
}

/// Whether any policy matches one of the Node's conditions (toleration aside): what the
/// unhealthy count counts.
pub fn is_unhealthy(node: &Node, policies: &[RepairPolicy]) -> bool {
    conditions(node)
        .iter()
        .any(|c| policies.iter().any(|p| matches(p, c)))
}

/// The matching policy whose toleration runs out first (upstream: the condition closest to its
/// deadline).
pub fn unhealthy(node: &Node, policies: &[RepairPolicy]) -> Option<Unhealthy> {
    let mut best: Option<Unhealthy> = None;
    for c in conditions(node) {
        for p in policies.iter().filter(|p| matches(p, c)) {
            let repair_at = c.last_transition_time.as_ref().and_then(|t| {
                let d = SignedDuration::try_from(p.toleration).ok()?;
                t.0.checked_add(d).ok()
            });
            let candidate = Unhealthy {
                condition: c.type_.clone(),
                status: c.status.clone(),
                repair_at,
            };
            let earlier = match (&best, repair_at) {
                (None, _) => true,
                (Some(b), Some(at)) => b.repair_at.is_none_or(|bt| at < bt),
                (Some(_), None) => false,
            };
            if earlier {
                best = Some(candidate);
            }
        }
    }
    best
}

/// How many of `total` Nodes may be unhealthy: 20%, rounded up.
pub fn allowed_unhealthy(total: usize) -> usize {
    (total * ALLOWED_UNHEALTHY_PERCENT).div_ceil(100)
}

/// Decides for `node`, whose NodeClaim is labelled with `node_pool` (if any), among `nodes`
/// (every Node of the cluster) at `now`.
pub fn decide(
    node: &Node,
    node_pool: Option<&str>,
    nodes: &[Arc<Node>],
    policies: &[RepairPolicy],
    now: Timestamp,
) -> Verdict {
    let Some(u) = unhealthy(node, policies) else {
        return Verdict::Healthy;
    };
    if u.repair_at.is_none_or(|at| now < at) {
        return Verdict::Tolerated(u);
    }
    let (scope, in_scope): (Scope, Vec<&Arc<Node>>) = match node_pool {
        Some(pool) => (
            Scope::NodePool(pool.to_string()),
            nodes
                .iter()
                .filter(|n| n.labels().get(NODE_POOL_LABEL).map(String::as_str) == Some(pool))
                .collect(),
        ),
        None => (Scope::Cluster, nodes.iter().collect()),
    };
    let unhealthy_nodes = in_scope
        .iter()
        .filter(|n| is_unhealthy(n, policies))
        .count();
    if unhealthy_nodes > allowed_unhealthy(in_scope.len()) {
        return Verdict::Blocked {
            unhealthy: u,
            scope,
            unhealthy_nodes,
            nodes: in_scope.len(),
        };
    }
    Verdict::Repair(u)
}

/// Upstream's metric label for a condition type (`pretty.ToSnakeCase`): `Ready` → `ready`,
/// `KWOKUnhealthy` → `kwok_unhealthy`.
pub fn snake_case(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_uppercase() && i > 0 {
            let prev_lower = chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit();
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev_lower || (chars[i - 1].is_uppercase() && next_lower) {
                out.push('_');
            }
        }
        out.extend(c.to_lowercase());
    }
    out
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
