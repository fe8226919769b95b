//! Provisioning simulation: queue, placement, relaxation, improvement and plan assembly.

mod claim;
mod explain;
mod plan;
mod preferences;
pub(crate) mod prepare;
mod scheduler;
mod skip;

pub(crate) use claim::{Claim, max_capacity, max_eff};
pub(crate) use plan::claim_price;
pub(crate) use scheduler::{Place, Scheduler, reqs_compatible};
pub(crate) mod topology;

use crate::error::SolveError;
use crate::model::{Options, Plan, Problem};

use preferences::Attempt;
use prepare::Prepared;
use scheduler::Ctx;
use topology::Topology;

/// Pods in upstream order: cpu desc, memory desc, then key (deterministic tie-break).
fn queue_order(prep: &Prepared) -> Vec<usize> {
    let mut order: Vec<usize> = (0..prep.pods.len())
        .filter(|i| prep.pods[*i].invalid.is_none())
        .collect();
    order.sort_by(|a, b| {
        let (x, y) = (&prep.pods[*a], &prep.pods[*b]);
        y.requests[0]
            .cmp(&x.requests[0])
            .then_with(|| y.requests[1].cmp(&x.requests[1]))
            .then_with(|| x.key.cmp(&y.key))
    });
    order
}

/// Places one pod, relaxing preferences one step at a time until it fits or nothing is left.
fn schedule_one(s: &mut Scheduler<'_>, pod: usize) -> bool {
    let mut attempt = Attempt::new(&s.prep.pods[pod], &s.topo.pods[pod]);
    loop {
        let ctx = Ctx::new(s.p, s.prep, pod, attempt.clone());
        if s.place(pod, &ctx) {
            return true;
        }
        if !attempt.relax(&s.prep.pods[pod], s.prep.any_prefer_no_schedule) {
            return false;
        }
    }
}

/// Runs the greedy simulation to a fixed point (failed pods are retried while others progress,
/// e.g. a pod whose affinity target is placed later).
pub(crate) fn run_greedy<'a>(p: &'a Problem, prep: &'a Prepared, opts: &Options) -> Scheduler<'a> {
    let topo = Topology::new(p, prep, opts.ignore_preferences);
    let mut s = Scheduler::new(p, prep, topo);
    let mut pending = queue_order(prep);
    loop {
        let before = pending.len();
        pending.retain(|&pod| !schedule_one(&mut s, pod));
        if pending.is_empty() || pending.len() == before {
            break;
        }
    }
    s
}

/// Runs the optimiser. It prices each claim on its own, as if every reservation had room for
/// it; when the catalog has reservations the plan's real price (reservations counted across
/// claims) can then be higher than the greedy packing's, so the cheaper of the two is kept.
fn improve(s: &mut Scheduler<'_>) {
    let reserved =
        s.p.instance_types
            .iter()
            .any(|it| it.offerings.iter().any(|o| o.reservation.is_some()));
    if !reserved {
        crate::optimise::improve(s);
        return;
    }
    let greedy = s.clone();
    crate::optimise::improve(s);
    if plan::assigned_total(&greedy) < plan::assigned_total(s) - crate::optimise::EPS {
        *s = greedy;
    }
}

/// Solves a provisioning round: every pending pod is placed on an existing node, on a new
/// NodeClaim, or reported unschedulable with a reason.
pub fn solve(p: &Problem, opts: &Options) -> Result<Plan, SolveError> {
    let prep = Prepared::new(p)?;
    let mut s = run_greedy(p, &prep, opts);
    if opts.optimise {
        improve(&mut s);
    }
    Ok(plan::build(&s, opts))
}

/// The full why-not of pod `pod_key` (`namespace/name`) against the problem's existing nodes,
/// NodePools and instance types, followed by where the solver placed it.
pub fn explain(p: &Problem, pod_key: &str, opts: &Options) -> Result<Vec<String>, SolveError> {
    let prep = Prepared::new(p)?;
    let pod = prep
        .pods
        .iter()
        .position(|x| x.key == pod_key)
        .ok_or_else(|| SolveError::UnknownPod(pod_key.to_string()))?;
    let mut s = run_greedy(p, &prep, opts);
    if opts.optimise {
        improve(&mut s);
    }
    let mut lines = explain::explain_lines(&s, pod);
    lines.push(match s.placement[pod] {
        Place::None => format!(
            "result: unschedulable: {}",
            explain::reason(&s, pod, &mut explain::CompatibleTypes::default())
        ),
        Place::Existing(n) => format!(
            "result: placed on existing node {:?}",
            p.existing_nodes[n].name
        ),
        Place::Claim(c) => format!(
            "result: placed on a new NodeClaim of nodePool {:?}",
            prep.pools[s.claims[c].pool].name
        ),
    });
    Ok(lines)
}
