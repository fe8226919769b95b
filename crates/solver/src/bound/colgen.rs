//! Column generation for the LP of [`super`]: with hundreds of instance types × offerings the
//! dual LP has one block of constraints per column, yet its optimum uses a handful of them.
//!
//! The LP is solved over a small subset S of the columns (per pod group: the cheapest column
//! hosting it, the cheapest per pod slot and the cheapest per unit of each resource it asks
//! for). Its answer gives every group a value u_g and every active cut a dual v_C. Each column
//! o outside S is then *priced*: a (w, t) for o is sought that offers every group o can host
//! at least u_g (Σ_r req[g,r]·w_r + t[anti_g] ≥ u_g) and costs no more than its budget
//! (Σ_r alloc[o,r]·w_r + Σ_A t_A ≤ price_o − Σ_{C∋o} v_C). Candidates are the (w, t) of the
//! columns of S, scaled just enough to cover every group. Columns no candidate covers are
//! added to S and the LP is solved again.
//!
//! The answer is always proven: the (w, t) of every column, solved or borrowed, goes through
//! [`super::lp::Reduced::evaluate`], which repairs any point into an exactly feasible dual point
//! over *all* columns. When no column is left to add, the point is already feasible, so the
//! bound equals the LP over all columns (the restricted dual is a relaxation of the full one,
//! and its optimum is feasible for the full one); if the iteration cap stops the loop first,
//! the repair only makes the bound weaker, never invalid.

use super::Group;
use super::cuts::cap_on;
use super::lp::{Part, Reduced, Sol};

/// Column sets up to this size go to the LP whole (small problems are solved as before).
pub(super) const MIN_COLS: usize = 48;
/// LP solves per bound LP at most.
const MAX_ITERS: usize = 8;
/// Columns added per iteration at most, the most violated first.
const MAX_ADD: usize = 32;
/// Relative excess over its budget below which a column counts as priced out.
const TOL: f64 = 1e-7;

/// Solves the LP of `red` by column generation; the point covers every column of `red`.
pub(super) fn solve(
    red: &Reduced<'_>,
    groups: &[Group],
    requested: &[bool],
    n_anti: usize,
) -> Option<Sol> {
    let ncols = red.cols.len();
    let mut in_lp = vec![false; ncols];
    for o in initial(red, groups, requested) {
        in_lp[o] = true;
    }
    let mut last = None;
    for _ in 0..MAX_ITERS {
        let subset: Vec<usize> = (0..ncols).filter(|o| in_lp[*o]).collect();
        let Some(part) = red.solve_subset(&subset, groups, requested, n_anti) else {
            break;
        };
        let (sol, mut violated) = extend(red, groups, &subset, &part, n_anti);
        last = Some(sol);
        if violated.is_empty() {
            break;
        }
        violated.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        for (o, _) in violated.into_iter().take(MAX_ADD) {
            in_lp[o] = true;
        }
    }
    last
}

/// Keeps `(value, column)` with the smallest value (the first column on ties).
fn consider(best: &mut Option<(f64, usize)>, value: f64, o: usize) {
    if value.is_finite() && best.is_none_or(|(v, _)| value < v) {
        *best = Some((value, o));
    }
}

/// The starting columns: per group, the cheapest column hosting it, the cheapest per pod slot
/// and the cheapest per unit of each resource it requests. Every hosted group (hence every cut
/// over hosted groups) has a column among them, so the restricted LP is bounded.
fn initial(red: &Reduced<'_>, groups: &[Group], requested: &[bool]) -> Vec<usize> {
    let nres = requested.len();
    let mut cheapest = vec![None; groups.len()];
    let mut per_slot = vec![None; groups.len()];
    let mut per_unit = vec![vec![None; nres]; groups.len()];
    for (o, (col, cg)) in red.cols.iter().zip(&red.compat).enumerate() {
        for &g in *cg {
            consider(&mut cheapest[g], col.price, o);
            let cap = cap_on(&groups[g], col, requested);
            if cap >= 1.0 {
                consider(&mut per_slot[g], col.price / cap, o);
            }
            for r in (0..nres).filter(|r| requested[*r] && groups[g].req[*r] > 0.0) {
                if col.alloc[r] > 0.0 {
                    consider(&mut per_unit[g][r], col.price / col.alloc[r], o);
                }
            }
        }
    }
    let mut out: Vec<usize> = cheapest
        .iter()
        .chain(&per_slot)
        .chain(per_unit.iter().flatten())
        .filter_map(|b| b.map(|(_, o)| o))
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The LP point over `subset` extended to every column of `red` (borrowed (w, t) outside the
/// subset, node count 0), and the columns whose borrowed point costs more than their budget,
/// with cost / budget.
fn extend(
    red: &Reduced<'_>,
    groups: &[Group],
    subset: &[usize],
    part: &Part,
    n_anti: usize,
) -> (Sol, Vec<(usize, f64)>) {
    let ncols = red.cols.len();
    let mut col_v = vec![0.0; ncols];
    for ((members, _), x) in red.cuts.iter().zip(&part.v) {
        for &o in members {
            col_v[o] += x.max(0.0);
        }
    }
    let mut w = vec![Vec::new(); ncols];
    let mut t = vec![Vec::new(); ncols];
    let mut n = vec![0.0; ncols];
    let mut solved = vec![false; ncols];
    for (i, &o) in subset.iter().enumerate() {
        w[o] = part.w[i].clone();
        t[o] = part.t[i].clone();
        n[o] = part.n[i];
        solved[o] = true;
    }
    let nres = part.w.first().map_or(0, Vec::len);
    let mut violated = Vec::new();
    for o in (0..ncols).filter(|o| !solved[*o]) {
        let budget = red.cols[o].price - col_v[o];
        let (bw, bt, cost) = borrow(red, groups, o, part, nres, n_anti);
        w[o] = bw;
        t[o] = bt;
        if cost > budget.max(0.0) * (1.0 + TOL) + 1e-12 {
            violated.push((o, cost / budget.max(1e-300)));
        }
    }
    let sol = Sol {
        w,
        t,
        v: part.v.clone(),
        n,
    };
    (sol, violated)
}

/// The cheapest (w, t) offering every group column `o` hosts at least its value u_g, among the
/// subset columns' points scaled up, with its cost Σ alloc·w + Σ t (infinite, with a zero
/// point, when none covers the groups).
fn borrow(
    red: &Reduced<'_>,
    groups: &[Group],
    o: usize,
    part: &Part,
    nres: usize,
    n_anti: usize,
) -> (Vec<f64>, Vec<f64>, f64) {
    let col = red.cols[o];
    let cg = red.compat[o];
    let u = |g: usize| part.u[g].max(0.0);
    let mut best = (vec![0.0; nres], vec![0.0; n_anti], f64::INFINITY);
    let mut used = vec![false; n_anti];
    for &g in cg {
        if let Some(a) = groups[g].anti {
            used[a] = true;
        }
    }
    for (w, t0) in part.w.iter().zip(&part.t) {
        // (a) Scale w to cover the groups without anti-affinity, t then covers the rest.
        let mut lam = 0.0f64;
        let mut ok = true;
        for &g in cg
            .iter()
            .filter(|g| groups[**g].anti.is_none() && u(**g) > 0.0)
        {
            let rw = dot(&groups[g].req, w);
            if rw <= 0.0 {
                ok = false;
                break;
            }
            lam = lam.max(u(g) / rw);
        }
        if ok {
            let mut t = vec![0.0; n_anti];
            for &g in cg {
                if let Some(a) = groups[g].anti {
                    t[a] = f64::max(t[a], u(g) - lam * dot(&groups[g].req, w));
                }
            }
            let cost = lam * dot(&col.alloc, w) + t.iter().sum::<f64>();
            if cost < best.2 {
                best = (w.iter().map(|x| x * lam).collect(), t, cost);
            }
        }
        // (b) Scale (w, t) together.
        let mut lam = 0.0f64;
        let mut ok = true;
        for &g in cg.iter().filter(|g| u(**g) > 0.0) {
            let offer = dot(&groups[g].req, w) + groups[g].anti.map_or(0.0, |a| t0[a]);
            if offer <= 0.0 {
                ok = false;
                break;
            }
            lam = lam.max(u(g) / offer);
        }
        if ok {
            let t: Vec<f64> = (0..n_anti)
                .map(|a| if used[a] { t0[a] * lam } else { 0.0 })
                .collect();
            let cost = lam * dot(&col.alloc, w) + t.iter().sum::<f64>();
            if cost < best.2 {
                best = (w.iter().map(|x| x * lam).collect(), t, cost);
            }
        }
    }
    best
}
