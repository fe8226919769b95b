//! Splitting one claim into two cheaper ones.
//!
//! Instance types come in coarse steps (1, 2, 4, 8, 16, 32... vCPUs): a node that needs 11.6
//! vCPUs is bought as a 16, while an 8 plus a 4 holds the same pods for three quarters of the
//! price. For each claim we try the few largest types cheaper than its current one, fill that
//! type first-fit-decreasing with the claim's pods, and price the remainder on a new claim; the
//! best combination is applied only when it is strictly cheaper, pod by pod through the checked
//! moves, and undone if the checks made it no cheaper after all.

use crate::scheduling::Scheduler;

use super::EPS;
use super::evacuate::movable_pods;
use super::state::Opt;

/// How many cheaper types (distinct prices) are tried as the kept node's size.
const CANDIDATES: usize = 6;

/// How many times the remainder may be split again when pricing a split (a 96-vCPU node
/// holding 87 is 64 + 16 + 8: the first split alone, 64 + 32, gains nothing).
const DEPTH: u32 = 2;

/// Requests of `pods` summed onto `base`.
fn sum(s: &Scheduler<'_>, base: &[i64], pods: &[usize]) -> Vec<i64> {
    let mut v = base.to_vec();
    for &x in pods {
        v.iter_mut()
            .zip(&s.prep.pods[x].requests)
            .for_each(|(a, q)| *a += q);
    }
    v
}

/// First-fit-decreasing of `pods` into type `j` on top of `base`: (kept total, pods left out).
fn fill(s: &Scheduler<'_>, pool: usize, j: u32, base: &[i64], pods: &[usize]) -> Vec<usize> {
    let eff = &s.prep.pools[pool].eff_alloc[j as usize];
    let mut keep = base.to_vec();
    let mut out = Vec::new();
    for &x in pods {
        let q = &s.prep.pods[x].requests;
        if keep.iter().zip(q).zip(eff).all(|((k, q), e)| k + q <= *e) {
            keep.iter_mut().zip(q).for_each(|(k, q)| *k += q);
        } else {
            out.push(x);
        }
    }
    out
}

/// Estimated price of hosting `base` + `pods` on claims priced by `c`'s ladder, splitting up
/// to `depth` times: (price, pods the first node leaves out).
fn pack_cost(
    s: &Scheduler<'_>,
    o: &Opt,
    c: usize,
    base: &[i64],
    pods: &[usize],
    depth: u32,
) -> Option<(f64, Vec<usize>)> {
    let pool = s.claims[c].pool;
    let total = sum(s, base, pods);
    let ladder = &o.ladder[c];
    let single = ladder
        .iter()
        .find(|(_, j)| Opt::fits(s, c, *j, &total))
        .map(|(p, _)| *p);
    let mut best = single.map(|p| (p, Vec::new()));
    if depth == 0 || pods.is_empty() {
        return best;
    }
    let bound = single.unwrap_or(f64::INFINITY);
    let mut tried = 0;
    let mut last_price = f64::NAN;
    for &(price, j) in ladder.iter().rev() {
        if price >= bound - EPS || price == last_price || !Opt::fits(s, c, j, base) {
            continue;
        }
        last_price = price;
        tried += 1;
        if tried > CANDIDATES {
            break;
        }
        let out = fill(s, pool, j, base, pods);
        if out.is_empty() {
            continue;
        }
        let zero = vec![0; base.len()];
        let Some((rest, _)) = pack_cost(s, o, c, &zero, &out, depth - 1) else {
            continue;
        };
        let t = price + rest;
        if best.as_ref().is_none_or(|(b, _)| t < *b - EPS) {
            best = Some((t, out));
        }
    }
    best
}

/// The best (estimated total, pods to move out) split of claim `c`, if strictly cheaper.
fn best_split(s: &Scheduler<'_>, o: &Opt, c: usize, p0: f64) -> Option<(f64, Vec<usize>)> {
    let mv = movable_pods(s, o, c);
    if mv.is_empty() {
        return None;
    }
    let mut fixed = s.claims[c].used.clone();
    for &x in &mv {
        for (f, q) in fixed.iter_mut().zip(&s.prep.pods[x].requests) {
            *f -= q;
        }
    }
    let (t, out) = pack_cost(s, o, c, &fixed, &mv, DEPTH)?;
    (t < p0 - EPS && !out.is_empty()).then_some((t, out))
}

/// Tries to split claim `c`; true when it did.
fn split(s: &mut Scheduler<'_>, o: &mut Opt, c: usize) -> bool {
    let p0 = o.cost(s, c);
    if p0 <= 0.0 {
        return false;
    }
    let Some((_, out)) = best_split(s, o, c, p0) else {
        return false;
    };
    let pool = s.claims[c].pool;
    let Some(n) = o.open_empty(s, pool) else {
        return false;
    };
    let mut moved = Vec::new();
    for x in out {
        if let Some(f) = o.can_move(s, x, n) {
            o.apply(s, x, n, f.reqs);
            moved.push(x);
        }
    }
    if !moved.is_empty() && o.cost(s, c) + o.cost(s, n) < p0 - EPS {
        return true;
    }
    for &x in moved.iter().rev() {
        o.undo(s, x, c);
    }
    o.drop_if_last(s, n);
    false
}

/// Splits claims, dearest first; new claims are revisited too.
pub(crate) fn run(s: &mut Scheduler<'_>, o: &mut Opt) {
    let mut order: Vec<(f64, usize)> = (0..s.claims.len())
        .filter(|c| !s.claims[*c].pods.is_empty())
        .map(|c| (o.cost(s, c), c))
        .collect();
    order.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut work: Vec<usize> = order.into_iter().map(|(_, c)| c).collect();
    work.reverse();
    while let Some(c) = work.pop() {
        if o.budget <= 0 {
            return;
        }
        o.budget -= 1 + s.claims[c].pods.len() as i64;
        if split(s, o, c) {
            work.push(s.claims.len() - 1);
            work.push(c);
        }
    }
}
