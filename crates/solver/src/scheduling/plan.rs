//! Turns the simulation state into the public [`Plan`]: cheapest offering per claim, labels,
//! instance-type options, reasons, totals and the lower bound.

use crate::labels::{CAPACITY_TYPE, ZONE};
use crate::model::{ExistingPlacement, Options, Plan, PlannedNodeClaim, Unschedulable};
use crate::resources::Resources;

use super::explain;
use super::scheduler::{Place, Scheduler};

/// Chosen (position in pool.its, offering index, price) and the price-ordered options.
/// (position in pool.its, offering index, price) of the choice, and (price, position) options.
type Choice = ((u32, usize, f64), Vec<(f64, u32)>);

pub(crate) fn choose(s: &Scheduler<'_>, c: usize) -> Option<Choice> {
    let claim = &s.claims[c];
    let pool = &s.prep.pools[claim.pool];
    let mut opts: Vec<(f64, u32, usize)> = Vec::new();
    let admitted = s.prep.places.admitted(&claim.reqs);
    for &j in &claim.its {
        if !claim
            .used
            .iter()
            .zip(&pool.eff_alloc[j as usize])
            .all(|(u, a)| u <= a)
        {
            continue;
        }
        let ci = pool.its[j as usize];
        let offerings = &s.p.instance_types[ci].offerings;
        if let Some(o) = s.prep.places.offering_index(offerings, ci, &admitted) {
            opts.push((s.p.instance_types[ci].offerings[o].price, j, o));
        }
    }
    opts.sort_by(|a, b| {
        a.0.total_cmp(&b.0).then_with(|| {
            s.p.instance_types[pool.its[a.1 as usize]]
                .name
                .cmp(&s.p.instance_types[pool.its[b.1 as usize]].name)
        })
    });
    let first = *opts.first()?;
    Some((
        (first.1, first.2, first.0),
        opts.iter().map(|(p, j, _)| (*p, *j)).collect(),
    ))
}

/// Price of claim `c` with its cheapest fitting offering (None if it cannot be launched).
pub fn claim_price(s: &Scheduler<'_>, c: usize) -> Option<f64> {
    choose(s, c).map(|((_, _, p), _)| p)
}

pub(crate) fn build(s: &Scheduler<'_>, opts: &Options) -> Plan {
    let mut node_claims = Vec::new();
    let mut total = 0.0;
    let mut unschedulable_extra: Vec<usize> = Vec::new();
    for c in 0..s.claims.len() {
        let claim = &s.claims[c];
        if claim.pods.is_empty() {
            continue;
        }
        let pool = &s.prep.pools[claim.pool];
        let np = &s.p.node_pools[pool.src];
        let Some(((j, o, price), options)) = choose(s, c) else {
            // Cannot happen while the claim invariant holds; surface the pods rather than panic.
            unschedulable_extra.extend(claim.pods.iter().copied());
            continue;
        };
        let ci = pool.its[j as usize];
        let it = &s.p.instance_types[ci];
        let off = &it.offerings[o];
        let mut labels = claim.reqs.single_values();
        labels.extend(np.labels.clone());
        labels.extend(s.prep.its[ci].labels.clone());
        labels.insert(ZONE.to_string(), off.zone.clone());
        labels.insert(CAPACITY_TYPE.to_string(), off.capacity_type.clone());
        let mut requests = Resources::new();
        for (r, name) in s.prep.res.names.iter().enumerate() {
            requests.set(name, claim.used[r] + pool.ds_overhead[j as usize][r]);
        }
        total += price;
        node_claims.push(PlannedNodeClaim {
            name: format!("{}-{}", pool.name, node_claims.len() + 1),
            node_pool: pool.name.clone(),
            instance_type: it.name.clone(),
            zone: off.zone.clone(),
            capacity_type: off.capacity_type.clone(),
            price,
            instance_type_options: options
                .iter()
                .take(opts.max_instance_type_options.max(1))
                .map(|(_, j)| s.p.instance_types[pool.its[*j as usize]].name.clone())
                .collect(),
            labels,
            taints: np.taints.clone(),
            pods: claim
                .pods
                .iter()
                .map(|p| s.prep.pods[*p].key.clone())
                .collect(),
            requests,
        });
    }
    let mut existing_nodes: Vec<ExistingPlacement> = s
        .existing
        .iter()
        .enumerate()
        .filter(|(_, e)| !e.pods.is_empty())
        .map(|(n, e)| ExistingPlacement {
            node: s.p.existing_nodes[n].name.clone(),
            pods: e.pods.iter().map(|p| s.prep.pods[*p].key.clone()).collect(),
        })
        .collect();
    existing_nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let unschedulable: Vec<Unschedulable> = (0..s.prep.pods.len())
        .filter(|p| s.placement[*p] == Place::None || unschedulable_extra.contains(p))
        .map(|p| Unschedulable {
            pod: s.prep.pods[p].key.clone(),
            reason: explain::reason(s, p),
        })
        .collect();
    let placed: Vec<usize> = (0..s.prep.pods.len())
        .filter(|p| matches!(s.placement[*p], Place::Claim(_)) && !unschedulable_extra.contains(p))
        .map(|p| s.prep.pods[p].src)
        .collect();
    let lower_bound = if opts.lower_bound {
        crate::bound::bound_prepared(s.p, s.prep, &placed)
    } else {
        0.0
    };
    Plan {
        node_claims,
        existing_nodes,
        unschedulable,
        total_price: total,
        lower_bound,
    }
}
