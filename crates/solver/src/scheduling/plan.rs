//! Turns the simulation state into the public [`Plan`]: cheapest offering per claim, labels,
//! instance-type options, reasons, totals and the lower bound.

use std::collections::{BinaryHeap, HashMap};

use crate::instance_type::Offering;
use crate::labels::{CAPACITY_TYPE, ZONE};
use crate::model::{ExistingPlacement, Options, Plan, PlannedNodeClaim, Unschedulable};
use crate::resources::Resources;

use super::explain;
use super::scheduler::{Place, Scheduler};

/// (position in pool.its, offering index, price) of the choice, and (price, position) options.
type Choice = ((u32, usize, f64), Vec<(f64, u32)>);

/// New nodes the plan has put on each reservation so far (by reservation ID): one map lookup
/// per check, whatever the plan's size.
pub(crate) type Ledger = HashMap<String, i64>;

/// Whether the ledger still has room on offering `o`'s reservation (always true off one).
fn has_room(o: &Offering, ledger: &Ledger) -> bool {
    o.reservation
        .as_ref()
        .is_none_or(|r| ledger.get(&r.id).copied().unwrap_or(0) < r.capacity)
}

/// Claim `c`'s cheapest launchable offering per fitting instance type, cheapest first (ties
/// by name), at most `keep` of them (at least the choice). With a `ledger`, offerings of
/// reservations it has filled are skipped (the claim falls back to the next cheapest, usually
/// on-demand or spot); without one, each claim is priced on its own.
pub(crate) fn choose(
    s: &Scheduler<'_>,
    c: usize,
    ledger: Option<&Ledger>,
    keep: usize,
) -> Option<Choice> {
    let claim = &s.claims[c];
    let pool = &s.prep.pools[claim.pool];
    let mut opts: Vec<(f64, u32, usize)> = Vec::new();
    let admitted = s.prep.places.admitted(&claim.reqs);
    let option = |j: u32| -> Option<(f64, u32, usize)> {
        if !claim
            .used
            .iter()
            .zip(&pool.eff_alloc[j as usize])
            .all(|(u, a)| u <= a)
        {
            return None;
        }
        let ci = pool.its[j as usize];
        let offerings = &s.p.instance_types[ci].offerings;
        let room = |o: usize| ledger.is_none_or(|l| has_room(&offerings[o], l));
        let o = s
            .prep
            .places
            .offering_index(offerings, ci, &admitted, room)?;
        Some((offerings[o].price, j, o))
    };
    let rank = |j: u32| s.prep.name_rank[pool.its[j as usize]];
    let order = |a: &(f64, u32, usize), b: &(f64, u32, usize)| {
        a.0.total_cmp(&b.0).then_with(|| rank(a.1).cmp(&rank(b.1)))
    };
    if s.prep.reservations {
        opts.extend(claim.its.iter().filter_map(|&j| option(j)));
    } else {
        cheapest_options(s, pool, &claim.its, keep.max(1), option, &mut opts);
    }
    let first = *opts.iter().min_by(|a, b| order(a, b))?;
    let chosen = &s.p.instance_types[pool.its[first.1 as usize]].offerings[first.2];
    if let Some(id) = chosen.reservation_id() {
        // A claim on a reservation is pinned to it (upstream `Finalize`): only the types the
        // reservation offers, in a zone the claim admits, remain options.
        opts.retain(|(_, j, _)| {
            let ci = pool.its[*j as usize];
            let offerings = &s.p.instance_types[ci].offerings;
            offerings.iter().enumerate().any(|(i, o)| {
                o.usable()
                    && o.reservation_id() == Some(id)
                    && s.prep.places.admits(ci, i, &admitted)
            })
        });
    }
    // Only the `keep` cheapest are ordered: a claim fits hundreds of types, the plan lists 60.
    let keep = keep.max(1);
    if opts.len() > keep {
        opts.select_nth_unstable_by(keep - 1, order);
        opts.truncate(keep);
    }
    opts.sort_unstable_by(order);
    let options = opts.iter().map(|(p, j, _)| (*p, *j)).collect();
    Some(((first.1, first.2, first.0), options))
}

/// The options among `its` (positions into `pool.its`) that can be among the `keep` cheapest,
/// read in the pool's price order: a type whose cheapest offering already costs more than the
/// `keep`-th cheapest option found cannot be one, nor can any type after it. Types a claim
/// fits are most of the catalog (~400) and a plan lists ~60 per claim, so most are never
/// priced.
fn cheapest_options(
    s: &Scheduler<'_>,
    pool: &crate::scheduling::prepare::PoolInfo,
    its: &[u32],
    keep: usize,
    option: impl Fn(u32) -> Option<(f64, u32, usize)>,
    opts: &mut Vec<(f64, u32, usize)>,
) {
    let mut member = vec![false; pool.its.len()];
    for &j in its {
        member[j as usize] = true;
    }
    // The `keep` cheapest prices so far, most expensive on top (`keep` may be `usize::MAX`:
    // every option, as disruption asks).
    let mut kept: BinaryHeap<Price> = BinaryHeap::with_capacity(keep.min(its.len()) + 1);
    for &j in &pool.by_price {
        if !member[j as usize] {
            continue;
        }
        let floor = s.prep.floor_price[pool.its[j as usize]];
        // Equal is not enough to stop: a type at the same price may still win on its name.
        if kept.len() == keep && kept.peek().is_some_and(|top| floor > top.0) {
            break;
        }
        let Some(found) = option(j) else {
            continue;
        };
        kept.push(Price(found.0));
        if kept.len() > keep {
            kept.pop();
        }
        opts.push(found);
    }
}

/// A price ordered by [`f64::total_cmp`].
#[derive(PartialEq)]
struct Price(f64);

impl Eq for Price {}

impl PartialOrd for Price {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Price {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Price of claim `c` with its cheapest fitting offering (None if it cannot be launched),
/// ignoring what other claims take from reservations (the optimiser's per-claim view).
pub fn claim_price(s: &Scheduler<'_>, c: usize) -> Option<f64> {
    choose(s, c, None, 1).map(|((_, _, p), _)| p)
}

/// Every non-empty claim's choice in creation order, with at most `keep` options ([`choose`]),
/// reservations counted across the plan so none is over-committed: `None` for a claim nothing
/// can launch any more.
pub(crate) fn assign(s: &Scheduler<'_>, keep: usize) -> Vec<Option<Choice>> {
    let mut ledger = Ledger::new();
    (0..s.claims.len())
        .map(|c| {
            if s.claims[c].pods.is_empty() {
                return None;
            }
            let choice = choose(s, c, Some(&ledger), keep)?;
            let ((j, o, _), _) = &choice;
            let ci = s.prep.pools[s.claims[c].pool].its[*j as usize];
            if let Some(id) = s.p.instance_types[ci].offerings[*o].reservation_id() {
                *ledger.entry(id.to_string()).or_insert(0) += 1;
            }
            Some(choice)
        })
        .collect()
}

/// Σ launch prices of the claims under [`assign`] (claims nothing can launch count as
/// infinitely expensive, so a packing that strands pods never wins a comparison).
pub(crate) fn assigned_total(s: &Scheduler<'_>) -> f64 {
    assign(s, 1)
        .iter()
        .enumerate()
        .filter(|(c, _)| !s.claims[*c].pods.is_empty())
        .map(|(_, a)| a.as_ref().map_or(f64::INFINITY, |((_, _, p), _)| *p))
        .sum()
}

pub(crate) fn build(s: &Scheduler<'_>, opts: &Options) -> Plan {
    let mut node_claims = Vec::new();
    let mut total = 0.0;
    // Per pod: on a claim nothing can launch (a bitmap: a full reservation can strand many).
    let mut unschedulable_extra: Vec<bool> = vec![false; s.prep.pods.len()];
    let keep = opts.max_instance_type_options.max(1);
    for (c, choice) in assign(s, keep).into_iter().enumerate() {
        let claim = &s.claims[c];
        if claim.pods.is_empty() {
            continue;
        }
        let pool = &s.prep.pools[claim.pool];
        let np = &s.p.node_pools[pool.src];
        let Some(((j, o, price), options)) = choice else {
            // Only when every offering left is on a reservation earlier claims filled (e.g.
            // pods that require `reserved`): surface the pods rather than over-commit.
            for &p in &claim.pods {
                unschedulable_extra[p] = true;
            }
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
            reservation_id: off.reservation_id().map(str::to_string),
            price,
            instance_type_options: options
                .iter()
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
    let mut types = explain::CompatibleTypes::default();
    let unschedulable: Vec<Unschedulable> = (0..s.prep.pods.len())
        .filter(|p| s.placement[*p] == Place::None || unschedulable_extra[*p])
        .map(|p| Unschedulable {
            pod: s.prep.pods[p].key.clone(),
            reason: explain::reason(s, p, &mut types),
        })
        .collect();
    let placed: Vec<usize> = (0..s.prep.pods.len())
        .filter(|p| matches!(s.placement[*p], Place::Claim(_)) && !unschedulable_extra[*p])
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

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
