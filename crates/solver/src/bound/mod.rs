//! A proven lower bound on the hourly price of new capacity for a set of pods.
//!
//! Relaxation: pods are divisible, topology (except hostname anti-affinity among a group's own
//! pods), host ports and limits are dropped, node counts are continuous. Primal:
//!
//! ```text
//! min Σ_o price_o n_o   s.t.  Σ_o y[g,o] ≥ count_g                     (u_g ≥ 0)
//!                             Σ_g req[g,r] y[g,o] ≤ alloc[o,r] n_o       (w[o,r] ≥ 0)
//!                             Σ_{g∈A} y[g,o] ≤ n_o  (A: self anti-affinity on hostname, t[A,o] ≥ 0)
//!                             Σ_{o∈C} n_o ≥ rhs_C   (node-count cuts, see [`cuts`], v_C ≥ 0)
//! ```
//!
//! The node-count cuts are what the plain LP misses most: it lets one GPU pod buy half a GPU
//! node. Every real fleet is an *integer* point of this primal, and each cut is a statement
//! about integer fleets ("these pods need at least `rhs` whole nodes among the columns that can
//! host them"), so adding cuts keeps the bound valid while the relaxation gets tighter. They are
//! added lazily: solve, read the primal node counts, add the cuts they violate, solve again
//! (at most [`MAX_ROUNDS`] solves), so large problems whose LP already buys enough nodes pay
//! nothing extra.
//!
//! We solve the *dual* (max Σ count_g u_g + Σ rhs_C v_C) with Clarabel and then **repair** its
//! answer into an exactly feasible dual point (see [`lp::evaluate`]). By weak duality any
//! feasible dual point bounds the primal, so the reported number is a bound even if the
//! interior-point solver stopped early or lost precision. If the LP fails, the single-resource
//! duals (w = price/alloc on one resource) give the classic "Σ requests × cheapest unit price"
//! bound. The result is the maximum of every proven bound computed, including the purely
//! combinatorial ones of [`cuts::combinatorial`].
//!
//! Columns are (NodePool, instance type, offering), merged when they are interchangeable and
//! pruned when another column dominates them; when hundreds are left, the LP is solved by
//! column generation ([`colgen`]) over the few it needs. Rows are pod *groups* (identical pods
//! aggregated, with a count): the LP over groups has the same optimum as the LP with one row per
//! pod (an optimal per-pod point averages into a group point of the same value and back), and
//! the cuts get stronger (a group's cover cut counts all its pods at once).

mod colgen;
mod cuts;
mod lp;
#[cfg(test)]
pub(crate) mod tests;

use std::collections::HashMap;

use crate::labels::HOSTNAME;
use crate::model::Problem;
use crate::requirements::Requirements;
use crate::taints::{TaintEffect, Toleration, TolerationOperator};

use crate::scheduling::prepare::{Prepared, it_conflict, pool_taint_block};

use cuts::Cut;
use lp::{Col, Reduced};

/// LP solves at most (the first without cuts, then one per round of violated cuts).
const MAX_ROUNDS: usize = 3;

/// Cut rounds are skipped when the cut-aware column set would make the LP larger than this
/// many (column, group) pairs: the cuts stay valid, the LP just gets too slow to be worth it.
const MAX_CUT_LP_PAIRS: usize = 400_000;

#[derive(Hash, PartialEq, Eq)]
struct GroupKey {
    alts: Vec<Requirements>,
    tolerations: Vec<Toleration>,
    requests: Vec<i64>,
    anti: Option<usize>,
}

/// Identical pods (same requirement alternatives, tolerations, requests, anti-affinity group).
pub(crate) struct Group {
    pub count: f64,
    pub req: Vec<f64>,
    alts: Vec<Requirements>,
    tolerations: Vec<Toleration>,
    pub anti: Option<usize>,
}

/// A proven lower bound on the hourly price of any set of new nodes hosting the pods
/// `pods` (indices into `problem.pods`). Pods that no NodePool can host are ignored.
pub fn lower_bound(problem: &Problem, pods: &[usize]) -> f64 {
    let Ok(prep) = Prepared::new(problem) else {
        return 0.0;
    };
    bound_prepared(problem, &prep, pods)
}

/// How the bound is computed; only tests change the defaults (to compare the variants).
#[derive(Clone, Copy, Debug)]
struct Settings {
    /// One row per pod instead of one per group of identical pods.
    per_pod: bool,
    /// Column generation above this many columns.
    colgen_min_cols: usize,
    /// Cuts and combinatorial bounds; without them the result is the plain LP relaxation.
    cuts: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            per_pod: false,
            colgen_min_cols: colgen::MIN_COLS,
            cuts: true,
        }
    }
}

/// Self anti-affinity on hostname: the id of the term (selector) shared by the group.
fn self_anti(problem: &Problem, pod: usize, ids: &mut Vec<String>) -> Option<usize> {
    let p = &problem.pods[pod];
    let t = p.pod_anti_affinity.iter().find(|t| {
        t.topology_key == HOSTNAME
            && (t.all_namespaces || t.namespaces.is_empty() || t.namespaces.contains(&p.namespace))
            && t.label_selector
                .as_ref()
                .is_some_and(|s| s.matches(&p.labels))
    })?;
    let key = format!(
        "{}|{:?}|{:?}|{}",
        p.namespace, t.namespaces, t.label_selector, t.all_namespaces
    );
    Some(ids.iter().position(|k| *k == key).unwrap_or_else(|| {
        ids.push(key);
        ids.len() - 1
    }))
}

/// Groups the pods (one group per pod when `per_pod`); returns the groups and the number of
/// anti-affinity ids.
fn group_pods(
    problem: &Problem,
    prep: &Prepared,
    pods: &[usize],
    per_pod: bool,
) -> (Vec<Group>, usize) {
    let by_src: HashMap<usize, usize> = prep
        .pods
        .iter()
        .enumerate()
        .map(|(i, p)| (p.src, i))
        .collect();
    let mut keys: HashMap<GroupKey, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut anti_ids = Vec::new();
    // The scheduler's last relaxation step tolerates PreferNoSchedule, so the bound must too.
    let relax_tol = Toleration {
        key: String::new(),
        operator: TolerationOperator::Exists,
        value: String::new(),
        effect: Some(TaintEffect::PreferNoSchedule),
    };
    for &src in pods {
        let Some(&pi) = by_src.get(&src) else {
            continue;
        };
        let info = &prep.pods[pi];
        let mut tolerations = problem.pods[src].tolerations.clone();
        tolerations.push(relax_tol.clone());
        let anti = self_anti(problem, src, &mut anti_ids);
        let key = GroupKey {
            alts: info.terms.clone(),
            tolerations: tolerations.clone(),
            requests: info.requests.clone(),
            anti,
        };
        let n = groups.len();
        let gi = if per_pod {
            n
        } else {
            *keys.entry(key).or_insert(n)
        };
        if gi == n {
            groups.push(Group {
                count: 0.0,
                req: info.requests.iter().map(|v| *v as f64).collect(),
                alts: info.terms.clone(),
                tolerations,
                anti,
            });
        }
        groups[gi].count += 1.0;
    }
    (groups, anti_ids.len())
}

/// Every (pool, instance type, available offering) column with the groups it can host;
/// identical (price, alloc, compat) columns merged.
fn columns(problem: &Problem, prep: &Prepared, groups: &[Group]) -> (Vec<Col>, Vec<Vec<usize>>) {
    let mut cols: Vec<Col> = Vec::new();
    let mut compat: Vec<Vec<usize>> = Vec::new();
    let mut seen: HashMap<(u64, Vec<i64>, Vec<usize>), ()> = HashMap::new();
    for pool in &prep.pools {
        let pool_groups: Vec<(usize, Vec<Requirements>)> = groups
            .iter()
            .enumerate()
            .filter(|(_, g)| pool_taint_block(pool, &g.tolerations).is_none())
            .map(|(gi, g)| {
                let alts = g
                    .alts
                    .iter()
                    .filter(|a| prep.pool_conflict(pool, a).is_none())
                    .map(|a| a.intersect(&pool.reqs))
                    .collect();
                (gi, alts)
            })
            .filter(|(_, a): &(usize, Vec<Requirements>)| !a.is_empty())
            .collect();
        for (j, &ci) in pool.its.iter().enumerate() {
            let it = &problem.instance_types[ci];
            for off in it.offerings.iter().filter(|o| o.usable()) {
                let one = std::slice::from_ref(off);
                if it_conflict(&prep.its[ci], one, &pool.reqs, &pool.reqs).is_some() {
                    continue;
                }
                let cg: Vec<usize> = pool_groups
                    .iter()
                    .filter(|(gi, alts)| {
                        let g = &groups[*gi];
                        g.req
                            .iter()
                            .zip(&pool.eff_alloc[j])
                            .all(|(r, a)| *r <= *a as f64)
                            && alts
                                .iter()
                                .any(|a| it_conflict(&prep.its[ci], one, a, &pool.reqs).is_none())
                    })
                    .map(|(gi, _)| *gi)
                    .collect();
                if cg.is_empty() {
                    continue;
                }
                let sig = (off.price.to_bits(), pool.eff_alloc[j].clone(), cg.clone());
                if seen.insert(sig, ()).is_some() {
                    continue;
                }
                cols.push(Col {
                    price: off.price,
                    alloc: pool.eff_alloc[j]
                        .iter()
                        .map(|v| (*v).max(0) as f64)
                        .collect(),
                });
                compat.push(cg);
            }
        }
    }
    (cols, compat)
}

/// [`lower_bound`] with the problem already prepared (the scheduler's own [`Prepared`]).
pub(crate) fn bound_prepared(problem: &Problem, prep: &Prepared, pods: &[usize]) -> f64 {
    bound_with(problem, prep, pods, Settings::default())
}

fn bound_with(problem: &Problem, prep: &Prepared, pods: &[usize], settings: Settings) -> f64 {
    let nres = prep.res.len();
    let (groups, n_anti) = group_pods(problem, prep, pods, settings.per_pod);
    if groups.is_empty() {
        return 0.0;
    }
    let (cols, compat) = columns(problem, prep, &groups);
    let requested: Vec<bool> = (0..nres)
        .map(|r| groups.iter().any(|g| g.req[r] > 0.0))
        .collect();
    let facts = cuts::GroupFacts::new(&cols, &compat, &groups, &requested);
    let candidates = if settings.cuts {
        cuts::candidates(&cols, &compat, &groups, &facts, &requested)
    } else {
        Vec::new()
    };
    let mut best = cuts::combinatorial(&groups, &facts, &candidates);

    let mut active: Vec<Cut> = Vec::new();
    for round in 0..MAX_ROUNDS {
        let red = Reduced::new(&cols, &compat, &groups, &requested, &active);
        if round > 0 && red.pairs() > MAX_CUT_LP_PAIRS {
            break;
        }
        if round == 0 && settings.cuts {
            best = best.max(red.single_resource_bound(&groups, &requested, n_anti));
        }
        let Some(sol) = red.solve(&groups, &requested, n_anti, settings.colgen_min_cols) else {
            break;
        };
        best = best.max(red.evaluate(&groups, &sol));
        // Cuts the LP's node counts violate; none left means more rounds cannot help.
        let violated: Vec<Cut> = candidates
            .iter()
            .filter(|c| !active.contains(c) && red.violates(c, &sol.n))
            .cloned()
            .collect();
        if violated.is_empty() {
            break;
        }
        active.extend(violated);
    }
    // Guard against float rounding in the evaluation itself.
    best * (1.0 - 1e-9)
}
