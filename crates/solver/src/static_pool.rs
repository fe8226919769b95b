//! Static NodePools (`spec.replicas`): how many NodeClaims to create and which to delete so a
//! pool keeps exactly `replicas` nodes. Pure; the controller's static loop and `simulate` act
//! on its answer.
//!
//! Upstream (`pkg/controllers/static/{provisioning,deprovisioning}`, `StaticDrift`) splits
//! this into three controllers; here one decision covers all three, so they cannot race:
//! - **Scale up**: NodeClaims not being deleted are counted; missing ones are created, never
//!   past `limits.nodes` (which counts every NodeClaim of the pool, deleting ones too, as
//!   upstream's `ReserveNodeCount`).
//! - **Replacement** of stale (drifted or expired) NodeClaims, new one first: up to the pool's
//!   `Drifted` budget of them get a replacement at once (deleting NodeClaims use the budget
//!   up), and a stale NodeClaim is deleted only once enough fresh nodes are initialized that
//!   the pool keeps `replicas` ready nodes without it.
//! - **Scale down**: the surplus goes, stale NodeClaims first (they would be replaced anyway),
//!   then upstream's order: not launched yet, then empty (no reschedulable pods and nothing
//!   `do-not-disrupt`), then the cheapest to disrupt, a `do-not-disrupt` pod last. Two
//!   differences, both to disrupt less: launched but not initialized NodeClaims (no pods can
//!   be there yet) come right after unlaunched ones, and ties in eviction cost go to the oldest
//!   node (least lifetime left, which upstream weighs in by multiplying the cost by it).

use std::cmp::Ordering;

use crate::disruption::{Budget, Reason, budget_allows};

/// One NodeClaim of a static NodePool.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StaticClaim {
    /// NodeClaim name.
    pub name: String,
    /// Being deleted (no longer counts toward `replicas`, still toward `limits.nodes`).
    pub deleting: bool,
    /// Has a providerID (an instance was launched).
    pub launched: bool,
    /// Initialized (registered, ready, startup taints gone).
    pub initialized: bool,
    /// Drifted or expired: to be replaced.
    pub stale: bool,
    /// Reschedulable (non-DaemonSet) pods on its node.
    pub pods: u32,
    /// Σ of those pods' eviction costs (upstream `EvictionCost`).
    pub eviction_cost: f64,
    /// A pod on it, or the node, is protected by an active `karpenter.sh/do-not-disrupt`.
    pub do_not_disrupt: bool,
    /// Creation time (seconds).
    pub created: i64,
}

/// A static NodePool's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticPool {
    /// `spec.replicas`.
    pub replicas: u64,
    /// `spec.limits.nodes`; `None` = unlimited.
    pub node_limit: Option<u64>,
    /// How many nodes the pool's `Drifted` budgets let be disrupted at once.
    pub drift_budget: u32,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StaticDecision {
    /// NodeClaims to create from the pool's template.
    pub create: u64,
    /// NodeClaims to delete, in order.
    pub delete: Vec<String>,
}

/// Decides how `pool` reaches `replicas` from its NodeClaims `claims` (see the module doc).
pub fn decide(pool: &StaticPool, claims: &[StaticClaim]) -> StaticDecision {
    let count = |f: &dyn Fn(&StaticClaim) -> bool| claims.iter().filter(|c| f(c)).count() as u64;
    let total = claims.len() as u64;
    let deleting = count(&|c| c.deleting);
    let active = total - deleting;
    let stale = count(&|c| !c.deleting && c.stale);
    let fresh = active - stale;
    let replicas = pool.replicas;

    // Replacements at once: the budget, less what is being deleted already.
    let surge = stale.min(u64::from(pool.drift_budget).saturating_sub(deleting));
    let room = pool
        .node_limit
        .map_or(u64::MAX, |l| l.saturating_sub(total));
    let create = replicas
        .saturating_sub(fresh)
        .min((replicas + surge).saturating_sub(active))
        .min(room);

    let surplus = active.saturating_sub(replicas);
    let mut delete = Vec::new();
    if surplus > 0 {
        // Stale ones first, each only while `replicas` ready nodes remain without it.
        let mut ready = count(&|c| !c.deleting && c.initialized);
        let mut stale_claims: Vec<&StaticClaim> =
            claims.iter().filter(|c| !c.deleting && c.stale).collect();
        stale_claims.sort_by(|a, b| victim_order(a, b));
        let reserved = surplus.min(stale);
        for c in stale_claims {
            if delete.len() as u64 == reserved {
                break;
            }
            let after = if c.initialized { ready - 1 } else { ready };
            if after >= replicas {
                ready = after;
                delete.push(c.name.clone());
            }
        }
        // The rest of the surplus is an over-provision (replicas lowered): upstream's order.
        let over = (surplus - reserved) as usize;
        let mut rest: Vec<&StaticClaim> =
            claims.iter().filter(|c| !c.deleting && !c.stale).collect();
        rest.sort_by(|a, b| victim_order(a, b));
        delete.extend(rest.into_iter().take(over).map(|c| c.name.clone()));
    }
    StaticDecision { create, delete }
}

/// How many of a pool's `num_nodes` nodes its budgets let be disrupted for drift at `now`:
/// the least of the active budgets that apply to `Drifted`; unlimited without one.
pub fn drift_budget(budgets: &[Budget], num_nodes: u32, now: i64) -> u32 {
    budgets
        .iter()
        .filter(|b| {
            b.reasons
                .as_ref()
                .is_none_or(|r| r.contains(&Reason::Drifted))
        })
        .filter_map(|b| budget_allows(b, num_nodes, now))
        .min()
        .unwrap_or(u32::MAX)
}

/// The order NodeClaims are given up in: unlaunched, then launched but not initialized, then
/// empty, then by `do-not-disrupt` (protected last), eviction cost, age (oldest first), name.
fn victim_order(a: &StaticClaim, b: &StaticClaim) -> Ordering {
    let rank = |c: &StaticClaim| {
        if !c.launched {
            0
        } else if !c.initialized {
            1
        } else if c.pods == 0 && !c.do_not_disrupt {
            2
        } else {
            3
        }
    };
    rank(a)
        .cmp(&rank(b))
        .then_with(|| a.do_not_disrupt.cmp(&b.do_not_disrupt))
        .then_with(|| a.eviction_cost.total_cmp(&b.eviction_cost))
        .then_with(|| a.created.cmp(&b.created))
        .then_with(|| a.name.cmp(&b.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str) -> StaticClaim {
        StaticClaim {
            name: name.into(),
            launched: true,
            initialized: true,
            created: 100,
            ..StaticClaim::default()
        }
    }

    fn pool(replicas: u64) -> StaticPool {
        StaticPool {
            replicas,
            node_limit: None,
            drift_budget: 1,
        }
    }

    fn names(d: &StaticDecision) -> Vec<&str> {
        d.delete.iter().map(String::as_str).collect()
    }

    #[test]
    fn the_drift_budget_is_the_least_active_one_for_drift() {
        let mut empty_only = Budget::nodes("0");
        empty_only.reasons = Some(vec![Reason::Empty]);
        // 10% of 5 rounds up to 1; the Empty-only budget does not apply.
        assert_eq!(
            drift_budget(&[Budget::nodes("10%"), empty_only.clone()], 5, 0),
            1
        );
        assert_eq!(
            drift_budget(&[Budget::nodes("3"), Budget::nodes("2")], 5, 0),
            2
        );
        assert_eq!(drift_budget(&[empty_only], 5, 0), u32::MAX);
        assert_eq!(drift_budget(&[], 5, 0), u32::MAX);
    }

    #[test]
    fn an_empty_pool_creates_all_its_replicas() {
        assert_eq!(
            decide(&pool(3), &[]),
            StaticDecision {
                create: 3,
                delete: vec![]
            }
        );
        assert_eq!(decide(&pool(0), &[]), StaticDecision::default());
    }

    #[test]
    fn deleting_claims_are_replaced_but_count_toward_the_node_limit() {
        let mut gone = claim("c");
        gone.deleting = true;
        let claims = [claim("a"), claim("b"), gone];
        // 2 of 3 remain: one more.
        assert_eq!(decide(&pool(3), &claims).create, 1);
        // limits.nodes 3 counts the deleting one: no room until it is gone.
        let limited = StaticPool {
            node_limit: Some(3),
            ..pool(3)
        };
        assert_eq!(decide(&limited, &claims).create, 0);
        // Never past the limit: replicas 5, limit 4, 2 active + 1 deleting → 1.
        let limited = StaticPool {
            node_limit: Some(4),
            ..pool(5)
        };
        assert_eq!(decide(&limited, &claims).create, 1);
    }

    #[test]
    fn at_size_nothing_happens() {
        let claims = [claim("a"), claim("b"), claim("c")];
        assert_eq!(decide(&pool(3), &claims), StaticDecision::default());
    }

    #[test]
    fn scale_down_takes_unlaunched_then_starting_then_empty_then_cheapest() {
        let mut unlaunched = claim("u");
        (unlaunched.launched, unlaunched.initialized) = (false, false);
        let mut starting = claim("s");
        starting.initialized = false;
        let empty = claim("e");
        let mut cheap = claim("cheap");
        (cheap.pods, cheap.eviction_cost) = (1, 1.0);
        let mut dear = claim("dear");
        (dear.pods, dear.eviction_cost) = (3, 3.0);
        let mut protected = claim("p");
        (
            protected.pods,
            protected.eviction_cost,
            protected.do_not_disrupt,
        ) = (1, 0.5, true);
        let claims = [
            protected,
            dear.clone(),
            cheap.clone(),
            empty,
            starting,
            unlaunched,
        ];
        // 6 → 1: all but the protected one, in order.
        let d = decide(&pool(1), &claims);
        assert_eq!(d.create, 0);
        assert_eq!(names(&d), vec!["u", "s", "e", "cheap", "dear"]);
        // 6 → 4: the two that disrupt nothing.
        assert_eq!(names(&decide(&pool(4), &claims)), vec!["u", "s"]);
        // Equal cost: the older node goes first.
        let mut old = cheap.clone();
        (old.name, old.created) = ("old".into(), 50);
        assert_eq!(names(&decide(&pool(1), &[cheap, old])), vec!["old"]);
    }

    #[test]
    fn a_stale_claim_is_replaced_first_then_deleted_once_the_replacement_is_ready() {
        let mut drifted = claim("d");
        drifted.stale = true;
        // Step 1: 3 of 3, one drifted, budget 1: one replacement, nothing deleted yet.
        let step1 = [claim("a"), claim("b"), drifted.clone()];
        assert_eq!(
            decide(&pool(3), &step1),
            StaticDecision {
                create: 1,
                delete: vec![]
            }
        );
        // Step 2: the replacement launched but is not ready: neither more nor a deletion
        // (ready nodes without the drifted one would be 2 < 3).
        let mut new = claim("n");
        new.initialized = false;
        let step2 = [claim("a"), claim("b"), drifted.clone(), new.clone()];
        assert_eq!(decide(&pool(3), &step2), StaticDecision::default());
        // Step 3: the replacement is ready: the drifted one goes (not the fresh surplus).
        new.initialized = true;
        let step3 = [claim("a"), claim("b"), drifted.clone(), new];
        assert_eq!(
            decide(&pool(3), &step3),
            StaticDecision {
                create: 0,
                delete: vec!["d".into()]
            }
        );
    }

    #[test]
    fn replacements_keep_within_the_drift_budget_and_the_node_limit() {
        let mut d1 = claim("d1");
        d1.stale = true;
        let mut d2 = claim("d2");
        d2.stale = true;
        let claims = [claim("a"), d1, d2];
        // Budget 1: one replacement at a time; budget 2: both; budget 0: none.
        assert_eq!(decide(&pool(3), &claims).create, 1);
        let two = StaticPool {
            drift_budget: 2,
            ..pool(3)
        };
        assert_eq!(decide(&two, &claims).create, 2);
        let none = StaticPool {
            drift_budget: 0,
            ..pool(3)
        };
        assert_eq!(decide(&none, &claims), StaticDecision::default());
        // A deleting NodeClaim uses the budget of 1 up.
        let mut gone = claim("g");
        gone.deleting = true;
        let mut with_gone = claims.to_vec();
        with_gone.push(gone);
        assert_eq!(decide(&pool(3), &with_gone).create, 0);
        // At limits.nodes 3 there is no room to replace first.
        let limited = StaticPool {
            node_limit: Some(3),
            drift_budget: 2,
            ..pool(3)
        };
        assert_eq!(decide(&limited, &claims).create, 0);
    }

    #[test]
    fn scaling_down_a_pool_with_a_stale_claim_gives_the_stale_one_up_first() {
        let mut drifted = claim("d");
        drifted.stale = true;
        let mut busy = claim("busy");
        (busy.pods, busy.eviction_cost) = (2, 2.0);
        // 3 → 1: the drifted one, then the empty fresh one; the busy one stays.
        let d = decide(&pool(1), &[busy, claim("e"), drifted]);
        assert_eq!(d.create, 0);
        assert_eq!(names(&d), vec!["d", "e"]);
    }

    #[test]
    fn a_lone_stale_node_is_kept_until_its_replacement_is_ready() {
        let mut drifted = claim("d");
        drifted.stale = true;
        assert_eq!(decide(&pool(1), std::slice::from_ref(&drifted)).create, 1);
        let mut new = claim("n");
        (new.launched, new.initialized) = (false, false);
        // The unlaunched replacement is surplus but never given up for the stale one.
        assert_eq!(
            decide(&pool(1), &[drifted.clone(), new.clone()]),
            StaticDecision::default()
        );
        new.launched = true;
        new.initialized = true;
        assert_eq!(names(&decide(&pool(1), &[drifted, new])), vec!["d"]);
    }
}
