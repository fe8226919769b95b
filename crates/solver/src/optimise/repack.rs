//! Re-packing a NodePool's topology-free pods from scratch, balancing resources.
//!
//! The greedy takes pods cpu-first, so cpu-heavy pods fill the first nodes and memory-heavy
//! ones the last: each node then wastes one resource (a 256-vCPU memory-optimised node holding
//! memory-bound pods at half its cpu). Here the pool's free pods (no topology term, no pinned
//! domain) are moved onto fresh claims, each sized for the remaining pods' aggregate mix and
//! filled by alternately taking the most cpu-heavy or the most memory-heavy pod that fits,
//! whichever keeps the node's two fill ratios level. The result is kept only if the pool got
//! strictly cheaper; otherwise every move is undone.

use crate::scheduling::{Place, Scheduler};

use super::EPS;
use super::state::Opt;

/// Pods that fail to fit (or to move) before a side of the ratio order is given up for a node.
const MISSES: usize = 32;

/// Whether pod `x` takes part in nothing topological and carries no pinned domain.
fn free(s: &Scheduler<'_>, o: &Opt, x: usize) -> bool {
    o.movable[x] && !s.topo.pods[x].is_constrained() && s.topo.pods[x].matches.is_empty() && {
        s.owned[x].is_empty() && s.domains[x].is_empty()
    }
}

/// Total price of pool `pool`'s claims.
fn pool_cost(s: &Scheduler<'_>, o: &Opt, pool: usize) -> f64 {
    (0..s.claims.len())
        .filter(|c| s.claims[*c].pool == pool)
        .map(|c| o.cost(s, c))
        .sum()
}

/// The type position for a new claim `n` given the pods still to place: cheapest per copy of
/// the remaining aggregate demand (the cheapest type holding all of it, if one does).
fn target_type(s: &Scheduler<'_>, o: &Opt, n: usize, demand: &[i64]) -> Option<u32> {
    let eff = &s.prep.pools[s.claims[n].pool].eff_alloc;
    let zero = vec![0; demand.len()];
    if let Some(&(_, j)) = o.ladder[n]
        .iter()
        .find(|(_, j)| Opt::fits(s, n, *j, demand))
    {
        return Some(j);
    }
    let mut best: Option<(f64, u32)> = None;
    for &(price, j) in o.ladder[n].iter() {
        if !Opt::fits(s, n, j, &zero) {
            continue;
        }
        let copies = demand
            .iter()
            .zip(&eff[j as usize])
            .filter(|(d, _)| **d > 0)
            .map(|(d, e)| *e as f64 / *d as f64)
            .fold(f64::INFINITY, f64::min);
        if copies <= 0.0 || !copies.is_finite() {
            continue;
        }
        let unit = price / copies;
        if best.is_none_or(|(b, _)| unit < b - EPS) {
            best = Some((unit, j));
        }
    }
    best.map(|(_, j)| j)
}

/// Re-packs pool `pool`; true when it kept the result.
fn repack_pool(s: &mut Scheduler<'_>, o: &mut Opt, pool: usize) -> bool {
    let mut pods: Vec<usize> = (0..s.prep.pods.len())
        .filter(|x| matches!(s.placement[*x], Place::Claim(c) if s.claims[c].pool == pool))
        .filter(|x| free(s, o, *x))
        .collect();
    if pods.len() < 2 {
        return false;
    }
    // Memory per cpu, ascending: cpu-heavy pods at the front, memory-heavy at the back.
    let ratio = |x: usize| {
        let q = &s.prep.pods[x].requests;
        q[1] as f64 / (q[0].max(1)) as f64
    };
    pods.sort_by(|a, b| {
        ratio(*a)
            .total_cmp(&ratio(*b))
            .then_with(|| s.prep.pods[*a].key.cmp(&s.prep.pods[*b].key))
    });
    let before = pool_cost(s, o, pool);
    let mut demand = vec![0i64; s.prep.res.len()];
    for &x in &pods {
        demand
            .iter_mut()
            .zip(&s.prep.pods[x].requests)
            .for_each(|(d, q)| *d += q);
    }
    let mut taken = vec![false; pods.len()];
    let mut left = pods.len();
    let mut journal: Vec<(usize, usize)> = Vec::new();
    let mut opened: Vec<usize> = Vec::new();
    while left > 0 && o.budget > 0 {
        let Some(n) = o.open_empty(s, pool) else {
            break;
        };
        opened.push(n);
        let Some(j) = target_type(s, o, n, &demand) else {
            break;
        };
        let eff = s.prep.pools[pool].eff_alloc[j as usize].clone();
        let mut used = vec![0i64; eff.len()];
        let mut placed_any = false;
        loop {
            let want_memory = (used[1] as f64) / (eff[1].max(1) as f64)
                < (used[0] as f64) / (eff[0].max(1) as f64);
            let mut moved = false;
            for side in [want_memory, !want_memory] {
                let mut misses = 0;
                let order: Box<dyn Iterator<Item = usize>> = if side {
                    Box::new((0..pods.len()).rev())
                } else {
                    Box::new(0..pods.len())
                };
                for i in order {
                    if taken[i] {
                        continue;
                    }
                    let x = pods[i];
                    let q = &s.prep.pods[x].requests;
                    let fits = used.iter().zip(q).zip(&eff).all(|((u, q), e)| u + q <= *e);
                    let fit = if fits { o.can_move(s, x, n) } else { None };
                    let Some(f) = fit else {
                        misses += 1;
                        if misses > MISSES {
                            break;
                        }
                        continue;
                    };
                    let Place::Claim(from) = s.placement[x] else {
                        continue;
                    };
                    used.iter_mut().zip(q).for_each(|(u, q)| *u += q);
                    demand.iter_mut().zip(q).for_each(|(d, q)| *d -= q);
                    o.apply(s, x, n, f.reqs);
                    journal.push((x, from));
                    taken[i] = true;
                    left -= 1;
                    moved = true;
                    break;
                }
                if moved {
                    break;
                }
            }
            if !moved {
                break;
            }
            placed_any = true;
        }
        if !placed_any {
            break;
        }
    }
    if pool_cost(s, o, pool) < before - EPS {
        if let Some(&n) = opened.last() {
            o.drop_if_last(s, n);
        }
        return true;
    }
    for &(x, from) in journal.iter().rev() {
        o.undo(s, x, from);
    }
    for &n in opened.iter().rev() {
        o.drop_if_last(s, n);
    }
    false
}

/// Re-packs every pool's free pods, keeping only strict improvements.
pub(crate) fn run(s: &mut Scheduler<'_>, o: &mut Opt) {
    for pool in 0..s.prep.pools.len() {
        repack_pool(s, o, pool);
    }
}
