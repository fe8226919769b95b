//! Consolidation: remove candidates whose pods fit on the other nodes plus at most one strictly
//! cheaper new node (upstream `computeConsolidation`, multi- and single-node).

use std::collections::BTreeMap;

use crate::labels::CAPACITY_TYPE;
use crate::model::PlannedNodeClaim;
use crate::requirements::{NodeSelectorRequirement, Operator};

use super::Planner;
use super::balanced::{self, Evaluation};
use super::candidates::rank;
use super::model::{DisruptionError, Reason};
use super::state::Sim;

const SPOT: &str = "spot";

/// Price differences below this are ties (sums of floats in different orders).
const EPS: f64 = 1e-9;

/// A valid consolidation: the simulation and its 0 or 1 replacement (options filtered).
type Valid = (Sim, Vec<PlannedNodeClaim>);

/// What checking a move found: the consolidation if it is valid and approved, and the
/// balanced evaluation when the move got as far as being scored.
pub(crate) struct Tried {
    pub valid: Option<Valid>,
    pub evaluation: Option<Evaluation>,
}

impl Tried {
    const INVALID: Tried = Tried {
        valid: None,
        evaluation: None,
    };

    fn scored(evaluation: Evaluation, valid: impl FnOnce() -> Valid) -> Tried {
        Tried {
            valid: evaluation.approved.then(valid),
            evaluation: Some(evaluation),
        }
    }
}

impl Planner<'_> {
    /// The most an offering of `it` with capacity type `ct` may cost at launch (upstream
    /// `WorstLaunchPrice`; zones are not known here, so every zone counts: conservative).
    /// The entry of NodePool `pool`'s catalog counts (NodeOverlays may price it per NodePool).
    fn worst_price(&self, pool: &str, it: &str, ct: &str) -> Option<f64> {
        let i = self.work.catalog.get(Some(pool), it)?;
        self.work.problem.instance_types[i]
            .offerings
            .iter()
            .filter(|o| o.usable() && o.capacity_type == ct)
            .map(|o| o.price)
            .max_by(f64::total_cmp)
    }

    /// The simulation again with every NodePool limited to spot capacity.
    fn simulate_spot(&mut self, ids: &[usize]) -> Result<Option<Sim>, DisruptionError> {
        let spot = NodeSelectorRequirement::new(CAPACITY_TYPE, Operator::In, &[SPOT]);
        for np in &mut self.work.problem.node_pools {
            np.requirements.push(spot.clone());
        }
        let sim = self.simulate(ids, true);
        for np in &mut self.work.problem.node_pools {
            np.requirements.pop();
        }
        let sim = sim?;
        let ok = sim.plan.unschedulable.is_empty() && sim.plan.node_claims.len() == 1;
        Ok(ok.then_some(sim))
    }

    /// Checks removing candidates `idx` (indices into `cands`): all their pods must be placed,
    /// with no new node (delete) or one whose launch price is strictly below theirs (replace),
    /// and every `Balanced` NodePool among them must approve the move's score.
    pub(crate) fn consolidate(
        &mut self,
        idx: &[usize],
        single: bool,
    ) -> Result<Tried, DisruptionError> {
        let ids: Vec<usize> = idx.iter().map(|&i| self.cands[i].id).collect();
        let total: f64 = idx.iter().filter_map(|&i| self.cands[i].price).sum();
        let mut sim = self.simulate(&ids, true)?;
        if !sim.plan.unschedulable.is_empty() {
            return Ok(Tried::INVALID);
        }
        match sim.plan.node_claims.len() {
            0 => {
                let evaluation = balanced::evaluate_move(&self.cands, idx, total, &self.totals);
                return Ok(Tried::scored(evaluation, || (sim, Vec::new())));
            }
            1 => {}
            _ => return Ok(Tried::INVALID),
        }
        let all_spot = idx.iter().all(|&i| self.cands[i].capacity_type == SPOT);
        if all_spot && sim.plan.node_claims[0].capacity_type != SPOT {
            // Upstream pins a spot candidate's replacement to spot when the NodePool allows
            // it, rather than trading spot for pricier on-demand; if nothing spot can take the
            // pods, the ordinary path decides.
            if let Some(spot) = self.simulate_spot(&ids)? {
                sim = spot;
            }
        }
        let mut claim = sim.plan.node_claims[0].clone();
        let spot_to_spot = all_spot && claim.capacity_type == SPOT;
        if spot_to_spot && !self.opts.spot_to_spot {
            return Ok(Tried::INVALID);
        }
        if claim.price >= total - EPS {
            return Ok(Tried::INVALID);
        }
        let mut limit = total;
        if !single {
            // Upstream `filterOutSameInstanceType`: replacing several nodes with one of a type
            // among them must beat the cheapest of those, or deleting some would do better.
            for &i in idx {
                let c = &self.cands[i];
                if claim.instance_type_options.contains(&c.instance_type) {
                    limit = limit.min(c.price.unwrap_or(f64::INFINITY));
                }
            }
        }
        let mut options: Vec<(f64, String)> = claim
            .instance_type_options
            .iter()
            .filter_map(|it| {
                let price = self.worst_price(&claim.node_pool, it, &claim.capacity_type)?;
                Some((price, it.clone()))
            })
            .filter(|(p, _)| *p < limit - EPS)
            .collect();
        options.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        if spot_to_spot && single {
            // Enough cheaper spot types, or the new node would soon be consolidated again.
            if options.len() < self.opts.min_spot_options {
                return Ok(Tried::INVALID);
            }
            options.truncate(self.opts.min_spot_options.max(1));
        }
        if !options.iter().any(|(_, it)| *it == claim.instance_type) {
            return Ok(Tried::INVALID);
        }
        let evaluation =
            balanced::evaluate_move(&self.cands, idx, total - claim.price, &self.totals);
        Ok(Tried::scored(evaluation, || {
            claim.instance_type_options = options.into_iter().map(|(_, it)| it).collect();
            (sim, vec![claim])
        }))
    }

    /// Candidates for consolidation, best first, that are still available.
    fn ranked(&self, skip_failed: bool) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.cands.len())
            .filter(|&i| {
                let c = &self.cands[i];
                c.consolidation_ok()
                    && self.available(c)
                    && !(skip_failed && self.failed.contains(&c.id))
            })
            .collect();
        rank(&self.cands, &mut order);
        order
    }

    /// Multi-node: binary search for the longest prefix (≥ 2 nodes) of the ranked candidates,
    /// within budget and `max_parallel`, that consolidates.
    pub(crate) fn multi_node(&mut self) -> Result<bool, DisruptionError> {
        let mut list = Vec::new();
        let mut used: BTreeMap<&str, u32> = BTreeMap::new();
        for i in self.ranked(false) {
            let pool = self.cands[i].pool.as_str();
            let n = used.entry(pool).or_insert(0);
            if self.budgets.allowed(pool, Reason::Underutilized) > *n {
                *n += 1;
                list.push(i);
                if list.len() >= self.opts.max_parallel {
                    break;
                }
            }
        }
        if list.len() < 2 {
            return Ok(false);
        }
        let (mut lo, mut hi) = (1usize, list.len() - 1);
        let mut best: Option<(usize, Valid, Evaluation)> = None;
        // Upstream reports a rejection once per search, the last (smallest) one.
        let mut rejected: Option<Evaluation> = None;
        while lo <= hi {
            let mid = lo + (hi - lo) / 2;
            let tried = self.consolidate(&list[..=mid], false)?;
            match (tried.valid, tried.evaluation) {
                (Some(v), Some(evaluation)) => {
                    best = Some((mid, v, evaluation));
                    lo = mid + 1;
                }
                (_, evaluation) => {
                    if evaluation.is_some() {
                        rejected = evaluation;
                    }
                    hi = mid - 1;
                }
            }
        }
        let Some((mid, (sim, claims), evaluation)) = best else {
            if let Some(evaluation) = rejected {
                self.moves.extend(evaluation.report(true));
            }
            return Ok(false);
        };
        self.moves.extend(evaluation.report(true));
        let replacements = self.replacements(&claims);
        self.decide(Reason::Underutilized, &list[..=mid], &sim, replacements);
        Ok(true)
    }

    /// Single-node: the first candidate (ranked, round-robin across NodePools) within budget
    /// that consolidates alone.
    pub(crate) fn single_node(&mut self) -> Result<bool, DisruptionError> {
        let order = interleave(&self.cands, self.ranked(true));
        for i in order {
            if self
                .budgets
                .allowed(&self.cands[i].pool, Reason::Underutilized)
                == 0
            {
                continue;
            }
            // Not even deleting it outright would pass its NodePool's balanced score.
            if !balanced::can_pass(&self.cands[i], &self.totals) {
                self.failed.insert(self.cands[i].id);
                continue;
            }
            let tried = self.consolidate(&[i], true)?;
            if let Some(evaluation) = tried.evaluation {
                self.moves.extend(evaluation.report(false));
            }
            match tried.valid {
                Some((sim, claims)) => {
                    let replacements = self.replacements(&claims);
                    self.decide(Reason::Underutilized, &[i], &sim, replacements);
                    return Ok(true);
                }
                None => {
                    self.failed.insert(self.cands[i].id);
                }
            }
        }
        Ok(false)
    }
}

/// Round-robin across NodePools (in order of their best candidate), keeping each pool's order,
/// so one large NodePool does not starve the others.
fn interleave(cands: &[super::candidates::Cand], order: Vec<usize>) -> Vec<usize> {
    let mut pools: Vec<(&str, Vec<usize>)> = Vec::new();
    for i in order {
        let p = cands[i].pool.as_str();
        match pools.iter_mut().find(|(name, _)| *name == p) {
            Some((_, v)) => v.push(i),
            None => pools.push((p, vec![i])),
        }
    }
    let mut out = Vec::new();
    let longest = pools.iter().map(|(_, v)| v.len()).max().unwrap_or(0);
    for k in 0..longest {
        out.extend(pools.iter().filter_map(|(_, v)| v.get(k).copied()));
    }
    out
}
