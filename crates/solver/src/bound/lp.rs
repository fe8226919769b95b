//! The LP of [`super`]: column pruning, the dual solved with Clarabel, and the repair that turns
//! any (w, t, v) into an exactly feasible dual point.

use good_lp::{DualValues, constraint::ConstraintReference};
use good_lp::{
    Expression, ProblemVariables, Solution, SolutionWithDual, SolverModel, Variable, clarabel,
    variable,
};

use super::Group;
use super::cuts::Cut;

/// One column: an offering's price and the effective allocatable of its instance type.
pub(crate) struct Col {
    pub price: f64,
    pub alloc: Vec<f64>,
}

/// A dual point (w per column per resource, t per column per anti group, v per active cut) and
/// the primal node counts the solver reported (a hint for which cuts to add, never trusted).
pub(crate) struct Sol {
    pub(super) w: Vec<Vec<f64>>,
    pub(super) t: Vec<Vec<f64>>,
    pub(super) v: Vec<f64>,
    pub n: Vec<f64>,
}

/// The LP's answer over a subset of the columns (rows in subset order), in original units.
pub(crate) struct Part {
    /// Value of one pod of each group.
    pub u: Vec<f64>,
    /// Resource prices per subset column.
    pub w: Vec<Vec<f64>>,
    /// Anti-affinity slot prices per subset column.
    pub t: Vec<Vec<f64>>,
    /// Cut duals.
    pub v: Vec<f64>,
    /// Primal node counts per subset column.
    pub n: Vec<f64>,
}

/// The columns left after pruning, with the active cuts expressed over them.
pub(crate) struct Reduced<'a> {
    pub(super) cols: Vec<&'a Col>,
    /// Groups each column hosts, ascending.
    pub(super) compat: Vec<&'a [usize]>,
    pub(super) hosted: Vec<bool>,
    /// Active cuts: (reduced column indices, rhs).
    pub(super) cuts: Vec<(Vec<usize>, f64)>,
}

/// Whether column `compat` (the groups it hosts, ascending) belongs to cut `c`'s column set.
pub(crate) fn in_cut(c: &Cut, compat: &[usize]) -> bool {
    compat.iter().any(|g| c.groups.binary_search(g).is_ok())
}

impl<'a> Reduced<'a> {
    pub fn new(
        cols: &'a [Col],
        compat: &'a [Vec<usize>],
        groups: &[Group],
        requested: &[bool],
        active: &[Cut],
    ) -> Self {
        let cut_member: Vec<bool> = compat
            .iter()
            .map(|cg| active.iter().any(|c| in_cut(c, cg)))
            .collect();
        let keep = prune(cols, compat, groups, requested, &cut_member);
        let idx: Vec<usize> = (0..cols.len()).filter(|o| keep[*o]).collect();
        let cols: Vec<&Col> = idx.iter().map(|o| &cols[*o]).collect();
        let compat: Vec<&[usize]> = idx.iter().map(|o| compat[*o].as_slice()).collect();
        // Groups no column can host cannot be in any plan; leave them out.
        let hosted = (0..groups.len())
            .map(|g| compat.iter().any(|c| c.contains(&g)))
            .collect();
        let cuts = active
            .iter()
            .map(|c| {
                let members = (0..compat.len())
                    .filter(|o| in_cut(c, compat[*o]))
                    .collect();
                (members, c.rhs)
            })
            .collect();
        Reduced {
            cols,
            compat,
            hosted,
            cuts,
        }
    }

    /// LP size: (column, group) compatibility pairs, one dual constraint each.
    pub fn pairs(&self) -> usize {
        self.compat.iter().map(|c| c.len()).sum()
    }

    /// Whether the node counts `n` violate cut `c` (with a small tolerance).
    pub fn violates(&self, c: &Cut, n: &[f64]) -> bool {
        let lhs: f64 = (0..self.compat.len())
            .filter(|o| in_cut(c, self.compat[*o]))
            .map(|o| n[o].max(0.0))
            .sum();
        lhs < c.rhs * (1.0 - 1e-6) - 1e-9
    }

    /// Single-resource duals (w = price/alloc on one resource): always feasible.
    pub fn single_resource_bound(
        &self,
        groups: &[Group],
        requested: &[bool],
        n_anti: usize,
    ) -> f64 {
        let nres = requested.len();
        let mut best = 0.0f64;
        for r in (0..nres).filter(|r| requested[*r]) {
            let w: Vec<Vec<f64>> = self
                .cols
                .iter()
                .map(|c| {
                    let mut v = vec![0.0; nres];
                    if c.alloc[r] > 0.0 {
                        v[r] = c.price / c.alloc[r];
                    }
                    v
                })
                .collect();
            let sol = Sol {
                w,
                t: vec![vec![0.0; n_anti]; self.cols.len()],
                v: vec![0.0; self.cuts.len()],
                n: Vec::new(),
            };
            best = best.max(self.evaluate(groups, &sol));
        }
        best
    }

    /// Repairs the dual point into a feasible one and returns its objective. Feasibility:
    /// per column, Σ_r alloc·w + Σ_A t + Σ_{cuts ∋ o} v ≤ price, and u_g ≤ req_g·w + t for
    /// every compatible column; all variables ≥ 0. The cut duals are shared by columns, so
    /// they are scaled down together first; each column's (w, t) then gets what is left.
    pub fn evaluate(&self, groups: &[Group], sol: &Sol) -> f64 {
        let mut v: Vec<f64> = sol.v.iter().map(|x| x.max(0.0)).collect();
        let mut col_v = vec![0.0; self.cols.len()];
        for ((members, _), x) in self.cuts.iter().zip(&v) {
            for &o in members {
                col_v[o] += x;
            }
        }
        let mut f: f64 = 1.0;
        for (c, s) in self.cols.iter().zip(&col_v) {
            if *s > c.price {
                f = f.min(c.price / s);
            }
        }
        v.iter_mut().for_each(|x| *x *= f);
        col_v.iter_mut().for_each(|x| *x *= f);
        let mut w = sol.w.clone();
        let mut t = sol.t.clone();
        for (o, c) in self.cols.iter().enumerate() {
            w[o].iter_mut().for_each(|x| *x = x.max(0.0));
            t[o].iter_mut().for_each(|x| *x = x.max(0.0));
            let budget = (c.price - col_v[o]).max(0.0);
            let s: f64 = c.alloc.iter().zip(&w[o]).map(|(a, x)| a * x).sum::<f64>()
                + t[o].iter().sum::<f64>();
            if s > budget {
                let f = if s > 0.0 { budget / s } else { 0.0 };
                w[o].iter_mut().for_each(|x| *x *= f);
                t[o].iter_mut().for_each(|x| *x *= f);
            }
        }
        let mut u = vec![f64::INFINITY; groups.len()];
        for (o, cg) in self.compat.iter().enumerate() {
            for &g in *cg {
                let val = groups[g]
                    .req
                    .iter()
                    .zip(&w[o])
                    .map(|(r, x)| r * x)
                    .sum::<f64>()
                    + groups[g].anti.map_or(0.0, |a| t[o][a]);
                u[g] = u[g].min(val);
            }
        }
        let pods: f64 = groups
            .iter()
            .enumerate()
            .filter(|(g, _)| self.hosted[*g] && u[*g].is_finite())
            .map(|(g, grp)| grp.count * u[g].max(0.0))
            .sum();
        let cut: f64 = self.cuts.iter().zip(&v).map(|((_, rhs), x)| rhs * x).sum();
        pods + cut
    }

    /// Solves the dual LP with Clarabel; returns the point in original units and the primal
    /// node counts (the duals of the column constraints). More than `colgen_min_cols` columns
    /// go through [`super::colgen`]: the LP then holds only the columns its solution needs.
    pub fn solve(
        &self,
        groups: &[Group],
        requested: &[bool],
        n_anti: usize,
        colgen_min_cols: usize,
    ) -> Option<Sol> {
        if self.cols.len() > colgen_min_cols {
            return super::colgen::solve(self, groups, requested, n_anti);
        }
        let all: Vec<usize> = (0..self.cols.len()).collect();
        let part = self.solve_subset(&all, groups, requested, n_anti)?;
        Some(Sol {
            w: part.w,
            t: part.t,
            v: part.v,
            n: part.n,
        })
    }

    /// Solves the dual LP restricted to the columns `subset` (the primal may only buy those).
    /// Every group hosted by some column must be hosted by one of `subset`, and every active
    /// cut must contain one of them, or the restricted LP is unbounded.
    pub fn solve_subset(
        &self,
        subset: &[usize],
        groups: &[Group],
        requested: &[bool],
        n_anti: usize,
    ) -> Option<Part> {
        let nres = requested.len();
        let cols: Vec<&Col> = subset.iter().map(|o| self.cols[*o]).collect();
        let compat: Vec<&[usize]> = subset.iter().map(|o| self.compat[*o]).collect();
        // Resource units differ by orders of magnitude (bytes vs millicores): scale each.
        let scale: Vec<f64> = (0..nres)
            .map(|r| cols.iter().map(|c| c.alloc[r]).fold(1.0, f64::max))
            .collect();
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
        let t: Vec<Vec<Option<Variable>>> = compat
            .iter()
            .map(|cg| {
                (0..n_anti)
                    .map(|a| {
                        cg.iter()
                            .any(|g| groups[*g].anti == Some(a))
                            .then(|| vars.add(variable().min(0.0)))
                    })
                    .collect()
            })
            .collect();
        let v: Vec<Variable> = self
            .cuts
            .iter()
            .map(|_| vars.add(variable().min(0.0)))
            .collect();
        let price_scale = cols.iter().map(|c| c.price).fold(0.0, f64::max).max(1e-12);
        let mut objective = Expression::from(0.0);
        for (g, x) in u.iter().enumerate() {
            if self.hosted[g] {
                objective += (groups[g].count / price_scale) * *x;
            }
        }
        for ((_, rhs), x) in self.cuts.iter().zip(&v) {
            objective += (rhs / price_scale) * *x;
        }
        // Position of each reduced column in `subset`.
        let mut pos = vec![usize::MAX; self.cols.len()];
        for (i, o) in subset.iter().enumerate() {
            pos[*o] = i;
        }
        let mut col_cuts: Vec<Vec<Variable>> = vec![Vec::new(); cols.len()];
        for ((members, _), x) in self.cuts.iter().zip(&v) {
            for &o in members {
                if pos[o] != usize::MAX {
                    col_cuts[pos[o]].push(*x);
                }
            }
        }
        let mut model = vars.maximise(objective).using(clarabel);
        let mut col_refs: Vec<ConstraintReference> = Vec::with_capacity(cols.len());
        for (o, c) in cols.iter().enumerate() {
            let mut e = Expression::from(0.0);
            for r in 0..nres {
                if let Some(x) = w[o][r] {
                    e += (c.alloc[r] / scale[r]) * x;
                }
            }
            for x in t[o].iter().flatten().chain(&col_cuts[o]) {
                e += *x;
            }
            col_refs.push(model.add_constraint(e.leq(c.price / price_scale)));
            for &g in compat[o] {
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
                model.add_constraint(e.leq(0.0));
            }
        }
        let mut sol = model.solve().ok()?;
        let uv = u.iter().map(|x| sol.value(*x) * price_scale).collect();
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
        let vv = v.iter().map(|x| sol.value(*x) * price_scale).collect();
        let duals = sol.compute_dual();
        // The column constraints' duals are the node counts divided by price_scale (the
        // objective is scaled by 1/price_scale); the sign depends on the solver's convention.
        let n = col_refs
            .iter()
            .map(|c| duals.dual(c.clone()).abs() * price_scale)
            .collect();
        Some(Part {
            u: uv,
            w: wv,
            t: tv,
            v: vv,
            n,
        })
    }
}

/// Column `a` is dominated by `b` when `b` hosts every group `a` hosts and `k` copies of `b`
/// cost no more than `a`, where k = the largest resource ratio alloc_a/alloc_b. Replacing each
/// `a` node by k `b` nodes keeps every resource row feasible. Anti-affinity rows and node-count
/// cuts count nodes, so when `a` is in one (`in_cut`, or an anti group may use it) we also need
/// k ≥ 1; `b` is then in the same cuts because it hosts a superset of `a`'s groups.
fn prune(
    cols: &[Col],
    compat: &[Vec<usize>],
    groups: &[Group],
    requested: &[bool],
    in_cut: &[bool],
) -> Vec<bool> {
    let mut keep = vec![true; cols.len()];
    for a in 0..cols.len() {
        let has_anti = compat[a].iter().any(|g| groups[*g].anti.is_some());
        for b in 0..cols.len() {
            if a == b || !keep[b] || !is_subset(&compat[a], &compat[b]) {
                continue;
            }
            let mut k: f64 = if has_anti || in_cut[a] { 1.0 } else { 0.0 };
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

/// Whether ascending `a` ⊆ ascending `b` (one merge pass).
fn is_subset(a: &[usize], b: &[usize]) -> bool {
    if a.len() > b.len() {
        return false;
    }
    let mut j = 0;
    for x in a {
        while j < b.len() && b[j] < *x {
            j += 1;
        }
        if j == b.len() || b[j] != *x {
            return false;
        }
        j += 1;
    }
    true
}
