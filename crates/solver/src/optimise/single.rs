//! Splitting a claim into one claim per pod.
//!
//! First-fit packs pods into one claim as long as *some* instance type can hold them; with a
//! coarse catalog the type that fits the sum can cost more than separate small nodes (two
//! 0.5-cpu pods need a 4-cpu type when the 1-cpu type has 0.9 allocatable). This pass splits such
//! claims into one claim per pod when that is strictly cheaper, for claims whose pods take part
//! in no topology term (so counts and domains are unaffected) in pools without limits (so no
//! limit can be crossed). It guarantees a plan never costs more than "each pod alone on its
//! cheapest fitting offering" for such pods.

use crate::scheduling::prepare::{fits_sum, it_conflict, offering_index};
use crate::scheduling::{Place, Scheduler};

/// Cheapest (position in pool.its, price) hosting pod `pod` alone on a node of `pool_i`.
fn single_price(s: &Scheduler<'_>, pool_i: usize, pod: usize) -> Option<(u32, f64)> {
    let pool = &s.prep.pools[pool_i];
    let info = &s.prep.pods[pod];
    let reqs = pool.reqs.intersect(s.attempt_reqs(pod)?);
    let zero = vec![0; s.prep.res.len()];
    let ports = &s.p.pods[info.src].host_ports;
    let mut best: Option<(u32, f64)> = None;
    for (j, &ci) in pool.its.iter().enumerate() {
        if !fits_sum(&zero, &info.requests, &pool.eff_alloc[j]) {
            continue;
        }
        if pool.ds_ports[j]
            .iter()
            .any(|d| ports.iter().any(|p| p.conflicts(d)))
        {
            continue;
        }
        let offs = &s.p.instance_types[ci].offerings;
        if it_conflict(&s.prep.its[ci], offs, &reqs, &pool.reqs).is_some() {
            continue;
        }
        let Some(o) = offering_index(offs, &reqs) else {
            continue;
        };
        let price = offs[o].price;
        if best.is_none_or(|(_, b)| price < b) {
            best = Some((j as u32, price));
        }
    }
    best
}

/// Splits claims whose pods are cheaper on separate nodes.
pub(crate) fn split_claims(s: &mut Scheduler<'_>) {
    let n = s.claims.len();
    for c in 0..n {
        let claim = &s.claims[c];
        if claim.pods.len() < 2 {
            continue;
        }
        let pool_i = claim.pool;
        if s.prep.pools[pool_i].remaining.is_some()
            || s.prep.pools[pool_i].remaining_nodes.is_some()
            || !s.prep.pools[pool_i].min_values.is_empty()
        {
            continue;
        }
        if claim
            .pods
            .iter()
            .any(|p| s.topo.pods[*p].is_constrained() || !s.topo.pods[*p].matches.is_empty())
        {
            continue;
        }
        let Some(current) = crate::scheduling::claim_price(s, c) else {
            continue;
        };
        let singles: Option<Vec<(usize, u32, f64)>> = claim
            .pods
            .iter()
            .map(|p| single_price(s, pool_i, *p).map(|(j, pr)| (*p, j, pr)))
            .collect();
        let Some(singles) = singles else { continue };
        let total: f64 = singles.iter().map(|x| x.2).sum();
        if total + 1e-9 >= current {
            continue;
        }
        let pods: Vec<usize> = s.claims[c].pods.clone();
        s.reset_claim(c);
        for (p, j, _) in singles {
            s.open_single(p, pool_i, j);
        }
        debug_assert!(pods.iter().all(|p| s.placement[*p] != Place::None));
    }
}
