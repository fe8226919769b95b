//! Why-not reasons: what ruled a pod out of each NodePool, instance type and existing node.

use std::collections::HashMap;

use crate::requirements::Requirements;
use crate::resources::format_amount;
use crate::taints::first_untolerated;

use super::preferences::Attempt;
use super::prepare::{it_conflict, pool_taint_block};
use super::scheduler::{Ctx, Scheduler};
use super::topology::Target;

/// The most permissive context for a pod (every preference relaxed).
pub(crate) fn relaxed_ctx(s: &Scheduler<'_>, pod: usize) -> Ctx {
    let a = Attempt::fully_relaxed(
        &s.prep.pods[pod],
        &s.topo.pods[pod],
        s.prep.any_prefer_no_schedule,
    );
    Ctx::new(s.p, s.prep, pod, a)
}

/// Per NodePool and requirements: the positions of the pool's instance types that satisfy
/// them, and the first conflict of the others. A plan's unschedulable pods are often thousands
/// of replicas asking the same question (7 503 at 100 000 pods of upstream's benchmark shape),
/// and answering it scans the catalog.
#[derive(Debug, Default)]
pub(crate) struct CompatibleTypes(HashMap<(usize, Requirements), (Vec<u32>, Option<String>)>);

impl CompatibleTypes {
    fn compatible(
        &mut self,
        s: &Scheduler<'_>,
        pi: usize,
        merged: &Requirements,
    ) -> &(Vec<u32>, Option<String>) {
        self.0
            .entry((pi, merged.clone()))
            .or_insert_with(|| scan_types(s, pi, merged))
    }
}

fn scan_types(s: &Scheduler<'_>, pi: usize, merged: &Requirements) -> (Vec<u32>, Option<String>) {
    let pool = &s.prep.pools[pi];
    let mut compatible = Vec::new();
    let mut first_conflict: Option<String> = None;
    for (j, &ci) in pool.its.iter().enumerate() {
        let it = &s.prep.its[ci];
        match it_conflict(it, &s.p.instance_types[ci].offerings, merged, &pool.reqs) {
            None => compatible.push(j as u32),
            Some(k) => {
                if first_conflict.is_none() {
                    let r = merged.get(k).map(|r| r.describe()).unwrap_or_default();
                    first_conflict = Some(if k == crate::labels::ZONE {
                        "no available offering matches the zone/capacity-type requirements"
                            .to_string()
                    } else {
                        format!("no instance type satisfies {k} {r}")
                    });
                }
            }
        }
    }
    (compatible, first_conflict)
}

/// Why NodePool `pi` cannot take `pod` on a new NodeClaim, or None if it could.
pub(crate) fn pool_reason(
    s: &Scheduler<'_>,
    pod: usize,
    ctx: &Ctx,
    pi: usize,
    types: &mut CompatibleTypes,
) -> Option<String> {
    let pool = &s.prep.pools[pi];
    let info = &s.prep.pods[pod];
    let name = &pool.name;
    if let Some(t) = pool_taint_block(pool, &ctx.tolerations) {
        return Some(format!("nodePool {name:?}: taint {t} not tolerated"));
    }
    if let Some(c) = s.prep.pool_conflict(pool, &ctx.attempt.reqs) {
        return Some(format!("nodePool {name:?}: {c}"));
    }
    if pool.its.is_empty() {
        return Some(format!(
            "nodePool {name:?}: no instance type matches its requirements with an available offering"
        ));
    }
    if !s.nodes_left(pi) {
        return Some(format!("nodePool {name:?}: limit on nodes reached"));
    }
    let merged = pool.reqs.intersect(&ctx.attempt.reqs);
    let (compatible, first_conflict) = types.compatible(s, pi, &merged);
    if compatible.is_empty() {
        return Some(format!(
            "nodePool {name:?}: {}",
            first_conflict.as_deref().unwrap_or_default()
        ));
    }
    // Resources: compare with the largest compatible type per resource.
    let mut missing = Vec::new();
    for (r, rname) in s.prep.res.names.iter().enumerate() {
        let need = info.requests[r];
        if need <= 0 {
            continue;
        }
        let best = compatible
            .iter()
            .max_by_key(|j| (pool.eff_alloc[**j as usize][r], std::cmp::Reverse(**j)));
        // A resource no compatible type offers at all (a GPU on a CPU-only pool) needs a
        // different pool or catalog, not a bigger type: say so rather than naming a "largest".
        let offered = compatible
            .iter()
            .any(|j| s.prep.its[pool.its[*j as usize]].alloc[r] > 0);
        if !offered {
            missing.push(format!("no instance type offers {rname}"));
            continue;
        }
        if let Some(&j) = best {
            let have = pool.eff_alloc[j as usize][r];
            if have < need {
                let itn = &s.p.instance_types[pool.its[j as usize]].name;
                missing.push(format!(
                    "no instance type has {} (largest: {itn}, {} allocatable{})",
                    format_amount(rname, need),
                    format_amount(rname, have.max(0)),
                    if pool.ds_overhead[j as usize][r] > 0 {
                        " after DaemonSet overhead"
                    } else {
                        ""
                    },
                ));
            }
        }
    }
    if !missing.is_empty() {
        return Some(format!("nodePool {name:?}: {}", missing.join("; ")));
    }
    let fitting: Vec<u32> = compatible
        .iter()
        .copied()
        .filter(|j| {
            info.requests
                .iter()
                .zip(&pool.eff_alloc[*j as usize])
                .all(|(a, b)| a <= b)
        })
        .collect();
    if fitting.is_empty() {
        return Some(format!(
            "nodePool {name:?}: no single instance type fits all requests together ({})",
            describe_requests(s, pod)
        ));
    }
    let src = &s.p.pods[info.src];
    if !src.host_ports.is_empty()
        && fitting.iter().all(|j| {
            pool.ds_ports[*j as usize]
                .iter()
                .any(|d| src.host_ports.iter().any(|h| h.conflicts(d)))
        })
    {
        return Some(format!(
            "nodePool {name:?}: host port conflicts with a DaemonSet"
        ));
    }
    if !s.min_values_ok(pool, &fitting, &merged) {
        let keys: Vec<String> = pool
            .min_values
            .iter()
            .map(|(k, n)| format!("{k} minValues {n}"))
            .collect();
        return Some(format!(
            "nodePool {name:?}: the instance types that fit the pod do not keep {}",
            keys.join(", ")
        ));
    }
    let within = s.its_within_limits(pi);
    if !fitting.iter().any(|j| within.contains(j)) {
        return Some(format!(
            "nodePool {name:?}: limits would be exceeded by every fitting instance type"
        ));
    }
    let node = (s.existing.len() + s.claims.len()) as u32;
    if let Err(e) = s.topo.allowed(
        pod,
        &ctx.active(),
        Target::Claim {
            node,
            reqs: &merged,
        },
    ) {
        return Some(format!("nodePool {name:?}: {e}"));
    }
    None
}

fn describe_requests(s: &Scheduler<'_>, pod: usize) -> String {
    let info = &s.prep.pods[pod];
    s.prep
        .res
        .names
        .iter()
        .zip(&info.requests)
        .filter(|(_, v)| **v > 0)
        .map(|(n, v)| format_amount(n, *v))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The one-line reason reported for an unschedulable pod.
pub(crate) fn reason(s: &Scheduler<'_>, pod: usize, types: &mut CompatibleTypes) -> String {
    if let Some(r) = &s.prep.pods[pod].invalid {
        return r.clone();
    }
    let ctx = relaxed_ctx(s, pod);
    let mut parts: Vec<String> = Vec::new();
    if s.prep.pools.is_empty() {
        parts.push("no NodePool exists".to_string());
    }
    for pi in 0..s.prep.pools.len() {
        match pool_reason(s, pod, &ctx, pi, types) {
            Some(r) => parts.push(r),
            None => parts.push(format!(
                "nodePool {:?}: could not be combined with the other pods' constraints (topology or limits)",
                s.prep.pools[pi].name
            )),
        }
    }
    parts.join("; ")
}

/// Full why-not for `pod`: existing nodes, NodePools, and each instance type.
pub(crate) fn explain_lines(s: &Scheduler<'_>, pod: usize) -> Vec<String> {
    let mut out = Vec::new();
    let info = &s.prep.pods[pod];
    out.push(format!(
        "pod {} requests {}",
        info.key,
        describe_requests(s, pod)
    ));
    if let Some(r) = &info.invalid {
        out.push(r.clone());
        return out;
    }
    let ctx = relaxed_ctx(s, pod);
    for (n, node) in s.p.existing_nodes.iter().enumerate() {
        let st = &s.existing[n];
        let why = if let Some(t) = first_untolerated(&node.taints, &ctx.tolerations, true) {
            format!("taint {t} not tolerated")
        } else if let Some(k) = ctx.attempt.reqs.first_unsatisfied(&node.labels) {
            format!(
                "label {k} does not satisfy {}",
                ctx.attempt
                    .reqs
                    .get(k)
                    .map(|r| r.describe())
                    .unwrap_or_default()
            )
        } else if let Some((r, _)) = info
            .requests
            .iter()
            .zip(&st.remaining)
            .enumerate()
            .find(|(_, (a, b))| a > b)
        {
            format!(
                "not enough {} (needs {}, {} free)",
                s.prep.res.names[r],
                format_amount(&s.prep.res.names[r], info.requests[r]),
                format_amount(&s.prep.res.names[r], st.remaining[r])
            )
        } else if s.try_existing(pod, &ctx, n).is_none() {
            "host port or topology constraint".to_string()
        } else {
            "fits".to_string()
        };
        out.push(format!("existing node {:?}: {why}", node.name));
    }
    for pi in 0..s.prep.pools.len() {
        let pool = &s.prep.pools[pi];
        out.push(
            match pool_reason(s, pod, &ctx, pi, &mut CompatibleTypes::default()) {
                Some(r) => r,
                None => format!("nodePool {:?}: can launch a node for this pod", pool.name),
            },
        );
        let merged = pool.reqs.intersect(&ctx.attempt.reqs);
        for (j, &ci) in pool.its.iter().enumerate() {
            let it = &s.p.instance_types[ci];
            let why =
                if let Some(k) = it_conflict(&s.prep.its[ci], &it.offerings, &merged, &pool.reqs) {
                    format!("requirement {k} not satisfied")
                } else if let Some(r) = info
                    .requests
                    .iter()
                    .zip(&pool.eff_alloc[j])
                    .position(|(a, b)| a > b)
                {
                    format!(
                        "{} needed, {} allocatable",
                        format_amount(&s.prep.res.names[r], info.requests[r]),
                        format_amount(&s.prep.res.names[r], pool.eff_alloc[j][r].max(0))
                    )
                } else {
                    "fits".to_string()
                };
            out.push(format!("  instance type {}: {why}", it.name));
        }
    }
    out
}
