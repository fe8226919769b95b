//! Node repair as a disruption method (upstream v1.15 `Repair`, which replaced the standalone
//! `node.health` controller): an unhealthy node due for repair is replaced like a drifted one,
//! but
//! - it is due when a condition matching a cloud provider repair policy has lasted past the
//!   policy's toleration ([`Unhealthy::due`]; matching is the caller's);
//! - do-not-disrupt, PDBs and initialization do not hold it back (a broken node is not
//!   discretionary; the node is terminated forcefully): only the node's `do-not-repair` does;
//! - a NodePool with more than [`REPAIR_UNHEALTHY_PERCENT`] of its nodes unhealthy is not
//!   repaired at all (a correlated failure replacements would not fix);
//! - an initialized node needs the NodePool's `Unhealthy` budget; an uninitialized one neither
//!   needs nor takes it (it runs nothing to protect);
//! - a node whose pods would not all find a place, even on new nodes, is skipped;
//! - the node due longest goes first (upstream's score, rank + age / 30 min, with every policy
//!   at one rank as here), then the cheapest to disrupt, then by name; one command per call,
//!   as upstream.
//!
//! [`Unhealthy::due`]: super::Unhealthy::due

use std::collections::BTreeMap;

use super::Planner;
use super::model::{
    DisruptionError, DisruptionProblem, REPAIR_UNHEALTHY_PERCENT, Reason, RepairBlock,
    RepairBlocked,
};

/// How many of a NodePool's `nodes` may be unhealthy and it still be repaired: 20%, rounded up.
pub(crate) fn allowed_unhealthy(nodes: u32) -> u32 {
    (u64::from(nodes) * u64::from(REPAIR_UNHEALTHY_PERCENT)).div_ceil(100) as u32
}

/// The NodePools over the cap, with their (unhealthy, nodes). Counted over the managed nodes
/// that are initialized or unhealthy: a launch that has no Node yet is not a node of the
/// NodePool (upstream counts Nodes).
pub(crate) fn tripped_pools(input: &DisruptionProblem) -> BTreeMap<String, (u32, u32)> {
    let mut counts: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    for n in &input.nodes {
        if n.node_pool.is_empty() || !(n.initialized || n.unhealthy.is_some()) {
            continue;
        }
        let e = counts.entry(n.node_pool.as_str()).or_default();
        e.0 += u32::from(n.unhealthy.is_some());
        e.1 += 1;
    }
    counts
        .into_iter()
        .filter(|(_, (bad, all))| *bad > allowed_unhealthy(*all))
        .map(|(pool, c)| (pool.to_string(), c))
        .collect()
}

impl Planner<'_> {
    /// At most one repair command: the first due node, in repair order, that passes the cap,
    /// its budget and a simulation. Nodes passed over are listed in `repair_blocked`.
    pub(crate) fn repair(&mut self) -> Result<bool, DisruptionError> {
        let now = self.opts.now;
        let mut idx: Vec<usize> = (0..self.cands.len())
            .filter(|&i| {
                let c = &self.cands[i];
                c.repairable.is_ok()
                    && self.available(c)
                    && c.unhealthy
                        .as_ref()
                        .and_then(|u| u.due)
                        .is_some_and(|due| due <= now)
            })
            .collect();
        let due = |i: usize| {
            self.cands[i]
                .unhealthy
                .as_ref()
                .and_then(|u| u.due)
                .unwrap_or(now)
        };
        idx.sort_by(|&a, &b| {
            let (x, y) = (&self.cands[a], &self.cands[b]);
            due(a)
                .cmp(&due(b))
                .then_with(|| x.reschedule_cost.total_cmp(&y.reschedule_cost))
                .then_with(|| x.name.cmp(&y.name))
        });
        // do-not-repair is reported for every due node, whatever the order.
        let (vetoed, idx): (Vec<usize>, Vec<usize>) =
            idx.into_iter().partition(|&i| self.cands[i].do_not_repair);
        for i in vetoed {
            self.block_repair(i, RepairBlock::DoNotRepair);
        }
        for i in idx {
            let pool = self.cands[i].pool.clone();
            if let Some(&(unhealthy, nodes)) = self.repair_tripped.get(&pool) {
                self.block_repair(i, RepairBlock::TooManyUnhealthy { unhealthy, nodes });
                continue;
            }
            if self.cands[i].initialized && self.budgets.allowed(&pool, Reason::Unhealthy) == 0 {
                continue;
            }
            let sim = self.simulate(&[self.cands[i].id], false)?;
            if !sim.plan.unschedulable.is_empty() {
                let why = sim
                    .plan
                    .unschedulable
                    .iter()
                    .map(|u| format!("{}: {}", u.pod, u.reason))
                    .collect();
                self.block_repair(i, RepairBlock::Unschedulable(why));
                continue;
            }
            let replacements = self.replacements(&sim.plan.node_claims);
            self.decide(Reason::Unhealthy, &[i], &sim, replacements);
            return Ok(true);
        }
        Ok(false)
    }

    fn block_repair(&mut self, i: usize, why: RepairBlock) {
        let c = &self.cands[i];
        self.repair_blocked.push(RepairBlocked {
            node: c.name.clone(),
            node_pool: c.pool.clone(),
            why,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::allowed_unhealthy;

    #[test]
    fn the_cap_is_a_fifth_rounded_up() {
        // ceil(0.2 × n): 1 → 1, 3 → 1, 5 → 1, 6 → 2, 10 → 2, 11 → 3.
        for (nodes, allowed) in [(0, 0), (1, 1), (3, 1), (5, 1), (6, 2), (10, 2), (11, 3)] {
            assert_eq!(allowed_unhealthy(nodes), allowed, "{nodes} nodes");
        }
    }
}
