//! Node health, pure: which repair policy a Node's conditions match, whether it has waited out
//! its toleration, and whether its NodePool (or, for a NodeClaim without one, the cluster) has
//! so many unhealthy Nodes that repairing more would be unsafe (upstream's `node.health`
//! controller, kept in v1.15 as `--legacy-node-repair`).

use std::collections::HashMap;
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

/// How many Nodes there are, and how many of them are unhealthy, per NodePool (by the Node's
/// label) and in the whole cluster. Counted once per scan, so each decision is a lookup: counting
/// per due Node was O(unhealthy × nodes), ~300 k condition checks a scan when a zone of a
/// 1 000-node cluster goes down.
#[derive(Debug, Default)]
pub struct Census {
    cluster: Count,
    node_pools: HashMap<String, Count>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Count {
    nodes: usize,
    unhealthy: usize,
}

impl Count {
    fn add(&mut self, unhealthy: bool) {
        self.nodes += 1;
        self.unhealthy += usize::from(unhealthy);
    }
}

impl Census {
    /// Counts `nodes` (every Node of the cluster) under `policies`.
    pub fn new(nodes: &[Arc<Node>], policies: &[RepairPolicy]) -> Self {
        let mut census = Census::default();
        for n in nodes {
            let bad = is_unhealthy(n, policies);
            census.cluster.add(bad);
            if let Some(pool) = n.labels().get(NODE_POOL_LABEL) {
                census.node_pools.entry(pool.clone()).or_default().add(bad);
            }
        }
        census
    }

    fn count(&self, node_pool: Option<&str>) -> Count {
        match node_pool {
            Some(pool) => self.node_pools.get(pool).copied().unwrap_or_default(),
            None => self.cluster,
        }
    }
}

/// Decides for `node`, whose NodeClaim is labelled with `node_pool` (if any), at `now`, with
/// the cluster's Nodes counted in `census`.
pub fn decide(
    node: &Node,
    node_pool: Option<&str>,
    census: &Census,
    policies: &[RepairPolicy],
    now: Timestamp,
) -> Verdict {
    let Some(u) = unhealthy(node, policies) else {
        return Verdict::Healthy;
    };
    if u.repair_at.is_none_or(|at| now < at) {
        return Verdict::Tolerated(u);
    }
    let scope = match node_pool {
        Some(pool) => Scope::NodePool(pool.to_string()),
        None => Scope::Cluster,
    };
    let count = census.count(node_pool);
    if count.unhealthy > allowed_unhealthy(count.nodes) {
        return Verdict::Blocked {
            unhealthy: u,
            scope,
            unhealthy_nodes: count.unhealthy,
            nodes: count.nodes,
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
