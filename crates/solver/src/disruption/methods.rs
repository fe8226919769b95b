//! Expiration, emptiness and drift: the methods that do not look for savings.

use super::Planner;
use super::candidates::rank;
use super::model::{DisruptionError, Reason};
use super::state::Sim;

impl Planner<'_> {
    /// Expiration is forceful: every expired node goes, whatever its budgets, annotations or
    /// PDBs (draining still honours PDBs). Pods that find no place are listed on the command
    /// (the provisioner will keep trying).
    pub(crate) fn expiration(&mut self) -> Result<(), DisruptionError> {
        let mut idx: Vec<usize> = (0..self.cands.len())
            .filter(|&i| self.cands[i].expired)
            .collect();
        idx.sort_by(|&a, &b| {
            let (x, y) = (&self.cands[a], &self.cands[b]);
            x.created.cmp(&y.created).then_with(|| x.name.cmp(&y.name))
        });
        for i in idx {
            // Forceful: a node that received pods from an earlier expiry still expires.
            if self.work.meta[self.cands[i].id].removed {
                continue;
            }
            let sim = self.simulate(&[self.cands[i].id], false)?;
            let replacements = self.replacements(&sim.plan.node_claims);
            self.decide(Reason::Expired, &[i], &sim, replacements);
        }
        Ok(())
    }

    /// Every empty candidate within budget, best savings first, in one delete command.
    pub(crate) fn emptiness(&mut self) -> bool {
        let mut order: Vec<usize> = (0..self.cands.len())
            .filter(|&i| self.cands[i].emptiness_ok() && self.available(&self.cands[i]))
            .collect();
        rank(&self.cands, &mut order);
        let mut chosen = Vec::new();
        let mut taken: std::collections::BTreeMap<String, u32> = Default::default();
        for i in order {
            let pool = &self.cands[i].pool;
            let used = taken.get(pool).copied().unwrap_or(0);
            if self.budgets.allowed(pool, Reason::Empty) > used {
                taken.insert(pool.clone(), used + 1);
                chosen.push(i);
            }
        }
        if chosen.is_empty() {
            return false;
        }
        // Empty nodes' remaining pods (DaemonSets, pods with a non-positive eviction cost) are
        // not moved: nothing to simulate.
        let sim = Sim::nothing_moved();
        self.decide(Reason::Empty, &chosen, &sim, Vec::new());
        true
    }

    /// Drifted nodes, empty ones first then oldest drift, one command each, within budget;
    /// a node whose pods cannot all be placed is skipped.
    pub(crate) fn drift(&mut self) -> Result<bool, DisruptionError> {
        let mut idx: Vec<usize> = (0..self.cands.len())
            .filter(|&i| {
                let c = &self.cands[i];
                c.drift.is_some()
                    && c.eventual.is_ok()
                    && self.available(c)
                    && !self.drift_failed.contains(&c.id)
            })
            .collect();
        idx.sort_by(|&a, &b| {
            let (x, y) = (&self.cands[a], &self.cands[b]);
            let since = |c: &super::candidates::Cand| c.drift.as_ref().map_or(0, |d| d.since);
            y.empty
                .cmp(&x.empty)
                .then_with(|| since(x).cmp(&since(y)))
                .then_with(|| x.name.cmp(&y.name))
        });
        let mut any = false;
        for i in idx {
            if self.budgets.allowed(&self.cands[i].pool, Reason::Drifted) == 0 {
                continue;
            }
            let sim = self.simulate(&[self.cands[i].id], false)?;
            if !sim.plan.unschedulable.is_empty() {
                self.drift_failed.insert(self.cands[i].id);
                continue;
            }
            let replacements = self.replacements(&sim.plan.node_claims);
            self.decide(Reason::Drifted, &[i], &sim, replacements);
            any = true;
        }
        Ok(any)
    }
}
