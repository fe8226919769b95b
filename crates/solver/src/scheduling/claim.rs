//! An in-flight NodeClaim of the simulation: the set of instance types that could still hold
//! every pod placed on it, narrowed as pods join.

use crate::model::HostPort;
use crate::requirements::Requirements;

use super::prepare::{PoolInfo, Prepared, it_conflict};

/// A NodeClaim being filled.
#[derive(Debug, Clone)]
pub(crate) struct Claim {
    /// Index into `Prepared::pools`.
    pub pool: usize,
    /// Hostname domain id.
    pub node: u32,
    /// Requirements the Node must satisfy (pool template ∩ pods ∩ topology pins).
    pub reqs: Requirements,
    /// Positions into `pool.its` that still fit.
    pub its: Vec<u32>,
    /// Σ pod requests (DaemonSet overhead is per instance type, in `pool.eff_alloc`).
    pub used: Vec<i64>,
    /// Host ports of placed pods.
    pub ports: Vec<HostPort>,
    /// Placed pods (prepared indices).
    pub pods: Vec<usize>,
    /// Element-wise max of `eff_alloc` over `its`: a cheap upper bound for quick rejects.
    pub max_eff: Vec<i64>,
}

/// Element-wise max of effective allocatable over `its`.
pub(crate) fn max_eff(pool: &PoolInfo, its: &[u32], r: usize) -> Vec<i64> {
    let mut m = vec![i64::MIN; r];
    for &j in its {
        for (x, a) in m.iter_mut().zip(&pool.eff_alloc[j as usize]) {
            *x = (*x).max(*a);
        }
    }
    m
}

/// Element-wise max of capacity over `its` (what limits are charged, pessimistically).
pub(crate) fn max_capacity(prep: &Prepared, pool: &PoolInfo, its: &[u32]) -> Vec<i64> {
    let mut m = vec![0; prep.res.len()];
    for &j in its {
        for (x, a) in m.iter_mut().zip(&prep.its[pool.its[j as usize]].capacity) {
            *x = (*x).max(*a);
        }
    }
    m
}

/// Keeps the instance types (positions in `pool.its`) that satisfy `reqs` (only re-checked
/// when `reqs_changed`), fit `total` pod requests next to the DaemonSets, and whose
/// DaemonSets' host ports do not collide with `ports`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn filter_its(
    prep: &Prepared,
    problem: &crate::model::Problem,
    pool: &PoolInfo,
    its: &[u32],
    reqs: &Requirements,
    reqs_changed: bool,
    total: &[i64],
    ports: &[HostPort],
) -> Vec<u32> {
    let mut out = Vec::with_capacity(its.len());
    for &j in its {
        let ju = j as usize;
        if !total.iter().zip(&pool.eff_alloc[ju]).all(|(t, a)| t <= a) {
            continue;
        }
        if !ports.is_empty()
            && pool.ds_ports[ju]
                .iter()
                .any(|d| ports.iter().any(|p| p.conflicts(d)))
        {
            continue;
        }
        if reqs_changed {
            let ci = pool.its[ju];
            if it_conflict(
                &prep.its[ci],
                &problem.instance_types[ci].offerings,
                reqs,
                &pool.reqs,
            )
            .is_some()
            {
                continue;
            }
        }
        out.push(j);
    }
    out
}
