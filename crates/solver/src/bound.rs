//! A proven lower bound on the hourly price of new capacity for a set of pods.
//!
//! Relaxation: pods are divisible, topology (except hostname anti-affinity among a group's own
//! pods), host ports and limits are dropped, node counts are continuous. Primal:
//!
//! ```text
//! min Σ_o price_o n_o   s.t.  Σ_o y[g,o] ≥ count_g                     (u_g ≥ 0)
//!                             Σ_g req[g,r] y[g,o] ≤ alloc[o,r] n_o       (w[o,r] ≥ 0)
//!                             Σ_{g∈A} y[g,o] ≤ n_o  (A: self anti-affinity on hostname, t[A,o] ≥ 0)
//! ```
//!
//! We solve the *dual* (max Σ count_g u_g) with Clarabel and then **repair** its answer into an
//! exactly feasible dual point: scale each column's (w, t) so Σ alloc·w + Σ t ≤ price, and set
//! u_g = min over compatible columns of (req_g·w + t). By weak duality any feasible dual point
//! bounds the primal, so the reported number is a bound even if the interior-point solver
//! stopped early or lost precision. If the LP fails, the single-resource duals
//! (w = price/alloc on one resource) give the classic "Σ requests × cheapest unit price" bound.
//! Columns are (NodePool, instance type, offering), merged when they are interchangeable and
//! pruned when another column dominates them.

use std::collections::HashMap;

use good_lp::{Expression, ProblemVariables, Solution, SolverModel, Variable, clarabel, variable};

use crate::labels::HOSTNAME;
use crate::model::Problem;
use crate::requirements::Requirements;
use crate::taints::{TaintEffect, Toleration, TolerationOperator};

use crate::scheduling::prepare::{Prepared, it_conflict, pool_taint_block};

/// Dual values (w per column per resource, t per column per anti group).
type Duals = (Vec<Vec<f64>>, Vec<Vec<f64>>);

struct Col {
    price: f64,
    alloc: Vec<f64>,
}

#[derive(Hash, PartialEq, Eq)]
struct GroupKey {
    alts: Vec<Requirements>,
    tolerations: Vec<Toleration>,
    requests: Vec<i64>,
    anti: Option<usize>,
}

struct Group {
    count: f64,
    req: Vec<f64>,
    alts: Vec<Requirements>,
    tolerations: Vec<Toleration>,
    anti: Option<usize>,
}

/// A proven lower bound on the hourly price of any set of new nodes hosting the pods
/// `pods` (indices into `problem.pods`). Pods that no NodePool can host are ignored.
pub fn lower_bound(problem: &Problem, pods: &[usize]) -> f64 {
    let Ok(prep) = Prepared::new(problem) else {
        return 0.0;
    };
    bound_prepared(problem, &prep, pods)
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

pub(crate) fn bound_prepared(problem: &Problem, prep: &Prepared, pods: &[usize]) -> f64 {
    let nres = prep.res.len();
    // Group pods.
    let by_src: HashMap<usize, usize> = prep
        .pods
        .iter()
        .enumerate()
        .map(|(i, p)| (p.src, i))
        .collect();
    let mut keys: HashMap<GroupKey, usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut anti_ids = Vec::new();
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
        let key = GroupKey {
            alts: info.terms.clone(),
            tolerations,
            requests: info.requests.clone(),
            anti: self_anti(problem, src, &mut anti_ids),
        };
        let n = groups.len();
        let gi = *keys.entry(key).or_insert(n);
        if gi == n {
            groups.push(Group {
                count: 0.0,
                req: info.requests.iter().map(|v| *v as f64).collect(),
                alts: info.terms.clone(),
                tolerations: problem.pods[src]
                    .tolerations
                    .iter()
                    .cloned()
                    .chain([relax_tol.clone()])
                    .collect(),
                anti: self_anti(problem, src, &mut anti_ids),
            });
        }
        groups[gi].count += 1.0;
    }
    if groups.is_empty() {
        return 0.0;
    }
    // Columns with their compatible groups; identical (price, alloc, compat) merged.
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
            for off in it.offerings.iter().filter(|o| o.available) {
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
    let requested: Vec<bool> = (0..nres)
        .map(|r| groups.iter().any(|g| g.req[r] > 0.0))
        .collect();
    let keep = prune(&cols, &compat, &groups, &requested);
    let cols: Vec<Col> = cols
        .into_iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(c, _)| c)
        .collect();
    let compat: Vec<Vec<usize>> = compat
        .into_iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(c, _)| c)
        .collect();
    // Groups no column can host cannot be in any plan; leave them out.
    let hosted: Vec<bool> = (0..groups.len())
        .map(|g| compat.iter().any(|c| c.contains(&g)))
        .collect();
    let scale: Vec<f64> = (0..nres)
        .map(|r| cols.iter().map(|c| c.alloc[r]).fold(1.0, f64::max))
        .collect();
    let mut best = 0.0f64;
    // Single-resource duals: always feasible, the fallback.
    for r in (0..nres).filter(|r| requested[*r]) {
        let w: Vec<Vec<f64>> = cols
            .iter()
            .map(|c| {
                let mut v = vec![0.0; nres];
                if c.alloc[r] > 0.0 {
                    v[r] = c.price / c.alloc[r];
                }
                v
            })
            .collect();
        let t = vec![vec![0.0; anti_ids.len()]; cols.len()];
        best = best.max(evaluate(&cols, &compat, &groups, &hosted, w, t));
    }
    if let Some((w, t)) = solve_dual(
        &cols,
        &compat,
        &groups,
        &hosted,
        &requested,
        &scale,
        anti_ids.len(),
    ) {
        best = best.max(evaluate(&cols, &compat, &groups, &hosted, w, t));
    }
    // Guard against float rounding in the evaluation itself.
    best * (1.0 - 1e-9)
}

/// Column `a` is dominated by `b` when `b` hosts every group `a` hosts and `k` copies of `b`
/// (k = max resource ratio, ≥ 1 if an anti-affinity group may use `a`) cost no more than `a`.
fn prune(cols: &[Col], compat: &[Vec<usize>], groups: &[Group], requested: &[bool]) -> Vec<bool> {
    let mut keep = vec![true; cols.len()];
    for a in 0..cols.len() {
        let has_anti = compat[a].iter().any(|g| groups[*g].anti.is_some());
        for b in 0..cols.len() {
            if a == b || !keep[b] || !compat[a].iter().all(|g| compat[b].contains(g)) {
                continue;
            }
            let mut k: f64 = if has_anti { 1.0 } else { 0.0 };
            let mut ok = true;
            for r in (0..requested.len()).filter(|r| requested[*r]) {
                if cols[a].alloc[r] <= 0.0 {
                    continue;
                }
                if cols[b].alloc[r] <= 0.0 {
                    ok = false;
                    break;
                }
                k = k.max(cols[a].alloc[r] / cols[b].alloc[r]);
            }
            let strictly =
                cols[b].price * k < cols[a].price || (cols[b].price * k == cols[a].price && b < a);
            if ok && k > 0.0 && strictly {
                keep[a] = false;
                break;
            }
        }
    }
    keep
}

/// Repairs (w, t) into a feasible dual point and returns its objective.
fn evaluate(
    cols: &[Col],
    compat: &[Vec<usize>],
    groups: &[Group],
    hosted: &[bool],
    mut w: Vec<Vec<f64>>,
    mut t: Vec<Vec<f64>>,
) -> f64 {
    for (o, c) in cols.iter().enumerate() {
        w[o].iter_mut().for_each(|x| *x = x.max(0.0));
        t[o].iter_mut().for_each(|x| *x = x.max(0.0));
        let s: f64 =
            c.alloc.iter().zip(&w[o]).map(|(a, x)| a * x).sum::<f64>() + t[o].iter().sum::<f64>();
        if s > c.price {
            let f = c.price / s;
            w[o].iter_mut().for_each(|x| *x *= f);
            t[o].iter_mut().for_each(|x| *x *= f);
        }
    }
    let mut u = vec![f64::INFINITY; groups.len()];
    for (o, cg) in compat.iter().enumerate() {
        for &g in cg {
            let v = groups[g]
                .req
                .iter()
                .zip(&w[o])
                .map(|(r, x)| r * x)
                .sum::<f64>()
                + groups[g].anti.map_or(0.0, |a| t[o][a]);
            u[g] = u[g].min(v);
        }
    }
    groups
        .iter()
        .enumerate()
        .filter(|(g, _)| hosted[*g] && u[*g].is_finite())
        .map(|(g, grp)| grp.count * u[g].max(0.0))
        .sum()
}

/// Solves the dual LP with Clarabel; returns (w, t) in original units.
fn solve_dual(
    cols: &[Col],
    compat: &[Vec<usize>],
    groups: &[Group],
    hosted: &[bool],
    requested: &[bool],
    scale: &[f64],
    n_anti: usize,
) -> Option<Duals> {
    let nres = requested.len();
    let mut vars = ProblemVariables::new();
    let u: Vec<Variable> = groups
        .iter()
        .map(|_| vars.add(variable().min(0.0)))
        .collect();
    // w in scaled units: w_scaled = w · scale.
    let w: Vec<Vec<Option<Variable>>> = cols
        .iter()
        .map(|_| {
            (0..nres)
                .map(|r| requested[r].then(|| vars.add(variable().min(0.0))))
                .collect()
        })
        .collect();
    let used_anti: Vec<bool> = (0..n_anti)
        .map(|a| groups.iter().any(|g| g.anti == Some(a)))
        .collect();
    let t: Vec<Vec<Option<Variable>>> = compat
        .iter()
        .map(|cg| {
            (0..n_anti)
                .map(|a| {
                    (used_anti[a] && cg.iter().any(|g| groups[*g].anti == Some(a)))
                        .then(|| vars.add(variable().min(0.0)))
                })
                .collect()
        })
        .collect();
    let price_scale = cols.iter().map(|c| c.price).fold(0.0, f64::max).max(1e-12);
    let mut objective = Expression::from(0.0);
    for (g, v) in u.iter().enumerate() {
        if hosted[g] {
            objective += (groups[g].count / price_scale) * *v;
        }
    }
    let mut model = vars.maximise(objective).using(clarabel);
    for (o, c) in cols.iter().enumerate() {
        let mut e = Expression::from(0.0);
        for r in 0..nres {
            if let Some(x) = w[o][r] {
                e += (c.alloc[r] / scale[r]) * x;
            }
        }
        for x in t[o].iter().flatten() {
            e += *x;
        }
        model = model.with(e.leq(c.price / price_scale));
        for &g in &compat[o] {
            let mut e = Expression::from(0.0);
            e += u[g];
            for r in 0..nres {
                if let Some(x) = w[o][r] {
                    e -= (groups[g].req[r] / scale[r]) * x;
                }
            }
            if let Some(a) = groups[g].anti
                && let Some(x) = t[o][a]
            {
                e -= x;
            }
            model = model.with(e.leq(0.0));
        }
    }
    let sol = model.solve().ok()?;
    let wv = w
        .iter()
        .map(|row| {
            row.iter()
                .enumerate()
                .map(|(r, x)| x.map_or(0.0, |x| sol.value(x) * price_scale / scale[r]))
                .collect()
        })
        .collect();
    let tv = t
        .iter()
        .map(|row| {
            row.iter()
                .map(|x| x.map_or(0.0, |x| sol.value(x) * price_scale))
                .collect()
        })
        .collect();
    Some((wv, tv))
}
