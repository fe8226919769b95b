//! The greedy placement simulation: existing nodes first, then open NodeClaims (first fit),
//! then a new NodeClaim from the highest-weight NodePool that admits the pod.

use crate::labels;
use crate::model::{HostPort, Problem};
use crate::requirements::{Requirement, Requirements};
use crate::taints::{Toleration, first_untolerated};

use super::claim::{Claim, filter_its, max_capacity, max_eff};
use super::preferences::Attempt;
use super::prepare::{PoolInfo, Prepared, fits_sum, pool_taint_block, satisfies_min_values};
use super::skip::{Skips, hostname_terms};
use super::topology::{Active, Target, Topology};

/// What one step of the first-fit scan over open claims did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// The claim was full and left the open list.
    Dropped,
    /// The claim took the pod.
    Placed,
    /// The pod does not fit the claim.
    NoFit,
}

/// Where a pod ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    None,
    Existing(usize),
    Claim(usize),
}

/// Remaining room on an existing node.
#[derive(Debug, Clone)]
pub(crate) struct ExistingState {
    pub remaining: Vec<i64>,
    pub ports: Vec<HostPort>,
    pub pods: Vec<usize>,
}

/// The attempt-derived data the inner loops need, computed once per attempt.
pub(crate) struct Ctx {
    pub attempt: Attempt,
    pub tolerations: Vec<Toleration>,
    spread: Vec<usize>,
    affinity: Vec<usize>,
    anti: Vec<usize>,
}

impl Ctx {
    pub fn new(p: &Problem, prep: &Prepared, pod: usize, attempt: Attempt) -> Self {
        let mut tolerations = p.pods[prep.pods[pod].src].tolerations.clone();
        tolerations.extend(attempt.extra_tolerations());
        Ctx {
            spread: attempt.all_spread(),
            affinity: attempt.all_affinity(),
            anti: attempt.all_anti(),
            tolerations,
            attempt,
        }
    }
    /// The active topology terms.
    pub(crate) fn active(&self) -> Active<'_> {
        Active {
            spread: &self.spread,
            affinity: &self.affinity,
            anti: &self.anti,
            strict: &self.attempt.strict,
        }
    }
}

/// A successful claim placement, ready to commit.
pub(crate) struct Fit {
    reqs: Requirements,
    its: Vec<u32>,
    domains: Vec<(usize, u32)>,
}

/// Whether a pod's requirements are compatible with a claim's: shared keys intersect, and a
/// key the claim leaves open is either well known, defined by the pool, or may be absent.
pub(crate) fn reqs_compatible(pool: &PoolInfo, claim: &Requirements, pod: &Requirements) -> bool {
    pod.0.iter().all(|(k, r)| match claim.get(k) {
        Some(c) => c.intersects(r),
        None => r.allow_absent || labels::is_well_known(k) || pool.defined.contains(k),
    })
}

/// Simulation state.
#[derive(Clone)]
pub(crate) struct Scheduler<'a> {
    pub p: &'a Problem,
    pub prep: &'a Prepared,
    pub topo: Topology,
    pub claims: Vec<Claim>,
    pub existing: Vec<ExistingState>,
    pub placement: Vec<Place>,
    pub domains: Vec<Vec<(usize, u32)>>,
    pub owned: Vec<Vec<usize>>,
    /// Per pool: Σ max capacity of its claims (charged against limits).
    pub committed: Vec<Vec<i64>>,
    pub claim_count: Vec<i64>,
    pub claim_cap: Vec<Vec<i64>>,
    /// Requirements each placed pod was placed with (after relaxation).
    pub placed_reqs: Vec<Option<Requirements>>,
    /// Claims that may still accept a pod, in creation order (first fit scans these).
    pub open: Vec<usize>,
    /// Element-wise minimum request over all pending pods: a claim with less headroom is full.
    min_req: Vec<i64>,
    /// Per hostname term, the claims that do not reject it yet (see [`Skips`]).
    skips: Skips,
}

impl<'a> Scheduler<'a> {
    pub fn new(p: &'a Problem, prep: &'a Prepared, topo: Topology) -> Self {
        let existing = p
            .existing_nodes
            .iter()
            .map(|n| {
                let mut remaining = prep.res.dense(&n.allocatable);
                let mut ports = Vec::new();
                for bp in &n.pods {
                    let mut req = prep.res.dense(&bp.requests);
                    req[prep.pods_res] = req[prep.pods_res].max(1);
                    remaining.iter_mut().zip(&req).for_each(|(a, r)| *a -= r);
                    ports.extend(bp.host_ports.iter().cloned());
                }
                ExistingState {
                    remaining,
                    ports,
                    pods: Vec::new(),
                }
            })
            .collect();
        Scheduler {
            p,
            prep,
            topo,
            claims: Vec::new(),
            existing,
            placement: vec![Place::None; prep.pods.len()],
            domains: vec![Vec::new(); prep.pods.len()],
            owned: vec![Vec::new(); prep.pods.len()],
            committed: vec![vec![0; prep.res.len()]; prep.pools.len()],
            claim_count: vec![0; prep.pools.len()],
            claim_cap: Vec::new(),
            placed_reqs: vec![None; prep.pods.len()],
            open: Vec::new(),
            min_req: (0..prep.res.len())
                .map(|r| prep.pods.iter().map(|p| p.requests[r]).min().unwrap_or(0))
                .collect(),
            skips: Skips::default(),
        }
    }

    /// The node requirements `pod` was placed with.
    pub fn attempt_reqs(&self, pod: usize) -> Option<&Requirements> {
        self.placed_reqs[pod].as_ref()
    }

    /// Empties claim `c` (its pods become unplaced). Only for pods outside every topology
    /// group, whose removal changes no counts.
    pub fn reset_claim(&mut self, c: usize) {
        for p in std::mem::take(&mut self.claims[c].pods) {
            self.placement[p] = Place::None;
        }
        let r = self.prep.res.len();
        self.claims[c].used = vec![0; r];
        self.claims[c].ports.clear();
        self.claims[c].its.clear();
        self.claims[c].max_eff = vec![i64::MIN; r];
    }

    /// Opens a claim holding only `pod` on instance type position `j` of pool `pool_i`,
    /// narrowed to the pod's requirements. Used by the optimiser after it checked the fit.
    pub fn open_single(&mut self, pod: usize, pool_i: usize, j: u32) {
        let pool = &self.prep.pools[pool_i];
        let reqs = match &self.placed_reqs[pod] {
            Some(r) => pool.reqs.intersect(r),
            None => pool.reqs.clone(),
        };
        let info = &self.prep.pods[pod];
        let node = self.node_id_of_claim(self.claims.len());
        self.claims.push(Claim {
            pool: pool_i,
            node,
            reqs,
            its: vec![j],
            used: info.requests.clone(),
            ports: self.p.pods[info.src].host_ports.clone(),
            pods: vec![pod],
            max_eff: pool.eff_alloc[j as usize].clone(),
        });
        self.claim_cap.push(vec![0; self.prep.res.len()]);
        self.claim_count[pool_i] += 1;
        self.placement[pod] = Place::Claim(self.claims.len() - 1);
    }

    /// True when no pending pod could fit in the claim's largest remaining instance type.
    pub fn is_full(&self, c: usize) -> bool {
        let cl = &self.claims[c];
        cl.used
            .iter()
            .zip(&self.min_req)
            .zip(&cl.max_eff)
            .any(|((u, m), a)| u + m > *a)
    }

    pub fn node_id_of_claim(&self, c: usize) -> u32 {
        (self.existing.len() + c) as u32
    }

    /// Tries every target in order; places the pod and returns true on success.
    pub fn place(&mut self, pod: usize, ctx: &Ctx) -> bool {
        if let Some((n, domains)) = self.try_existing_all(pod, ctx) {
            self.commit_existing(pod, n, domains, ctx);
            return true;
        }
        // With hostname terms only the claims that do not reject them yet are worth a look;
        // the rest would fail `quick_reject`, so first fit picks the same claim.
        let terms = hostname_terms(&self.topo, pod, &ctx.active());
        if let Some(mut scan) = self.skips.candidates(&self.topo, &self.claims, &terms) {
            let mut placed = false;
            while let Some(c) = scan.next(&self.topo, &self.claims) {
                let Ok(i) = self.open.binary_search(&c) else {
                    continue; // left `open` for good
                };
                match self.try_open(pod, ctx, i) {
                    Scan::Dropped => {}
                    Scan::NoFit => scan.keep(),
                    Scan::Placed => {
                        scan.keep();
                        placed = true;
                        break;
                    }
                }
            }
            self.skips.give_back(scan);
            if placed {
                return true;
            }
        } else {
            let mut i = 0;
            while i < self.open.len() {
                match self.try_open(pod, ctx, i) {
                    Scan::Placed => return true,
                    Scan::Dropped => {}
                    Scan::NoFit => i += 1,
                }
            }
        }
        for pi in 0..self.prep.pools.len() {
            if self.open_claim(pod, ctx, pi) {
                return true;
            }
        }
        false
    }

    /// First fit's step over `open[i]`: a full claim leaves `open` (nothing can ever join it
    /// again), a claim that takes the pod gets it.
    fn try_open(&mut self, pod: usize, ctx: &Ctx, i: usize) -> Scan {
        let c = self.open[i];
        if self.is_full(c) {
            self.open.remove(i);
            return Scan::Dropped;
        }
        match self.try_claim(pod, ctx, c) {
            Some(fit) => {
                self.commit_claim(pod, c, fit, ctx);
                Scan::Placed
            }
            None => Scan::NoFit,
        }
    }

    fn try_existing_all(&self, pod: usize, ctx: &Ctx) -> Option<(usize, Vec<(usize, u32)>)> {
        (0..self.existing.len()).find_map(|n| self.try_existing(pod, ctx, n).map(|d| (n, d)))
    }

    /// Checks an existing node; returns the topology domains to record.
    pub fn try_existing(&self, pod: usize, ctx: &Ctx, n: usize) -> Option<Vec<(usize, u32)>> {
        let info = &self.prep.pods[pod];
        let node = &self.p.existing_nodes[n];
        let st = &self.existing[n];
        if !info.requests.iter().zip(&st.remaining).all(|(r, a)| r <= a) {
            return None;
        }
        let src = &self.p.pods[info.src];
        if src
            .host_ports
            .iter()
            .any(|h| st.ports.iter().any(|q| q.conflicts(h)))
        {
            return None;
        }
        if first_untolerated(&node.taints, &ctx.tolerations, true).is_some() {
            return None;
        }
        if !ctx.attempt.reqs.satisfied_by(&node.labels) {
            return None;
        }
        let allowed = self
            .topo
            .allowed(
                pod,
                &ctx.active(),
                Target::Existing {
                    node: n as u32,
                    labels: &node.labels,
                },
            )
            .ok()?;
        Some(
            allowed
                .into_iter()
                .filter_map(|(s, d)| d.first().map(|d| (s, *d)))
                .collect(),
        )
    }

    fn commit_existing(&mut self, pod: usize, n: usize, domains: Vec<(usize, u32)>, ctx: &Ctx) {
        let info = &self.prep.pods[pod];
        let st = &mut self.existing[n];
        st.remaining
            .iter_mut()
            .zip(&info.requests)
            .for_each(|(a, r)| *a -= r);
        st.ports
            .extend(self.p.pods[info.src].host_ports.iter().cloned());
        st.pods.push(pod);
        self.topo.record(pod, &ctx.attempt.owned, &domains);
        self.placement[pod] = Place::Existing(n);
        self.domains[pod] = domains;
        self.owned[pod] = ctx.attempt.owned.clone();
    }

    /// Checks whether `pod` can join claim `c`.
    pub fn try_claim(&self, pod: usize, ctx: &Ctx, c: usize) -> Option<Fit> {
        let claim = &self.claims[c];
        self.fit_on(
            pod,
            ctx,
            claim.pool,
            claim.node,
            &claim.reqs,
            &claim.its,
            &claim.used,
            &claim.ports,
            &claim.max_eff,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn fit_on(
        &self,
        pod: usize,
        ctx: &Ctx,
        pool_i: usize,
        node: u32,
        reqs: &Requirements,
        its: &[u32],
        used: &[i64],
        ports: &[HostPort],
        max_eff: &[i64],
    ) -> Option<Fit> {
        let info = &self.prep.pods[pod];
        if !fits_sum(used, &info.requests, max_eff) {
            return None;
        }
        let src = &self.p.pods[info.src];
        if src
            .host_ports
            .iter()
            .any(|h| ports.iter().any(|q| q.conflicts(h)))
        {
            return None;
        }
        let pool = &self.prep.pools[pool_i];
        if pool_taint_block(pool, &ctx.tolerations).is_some() {
            return None;
        }
        let topo = &self.topo;
        if topo.quick_reject(pod, &ctx.active(), node, |s| {
            reqs.get(&s.key)
                .and_then(Requirement::single_value)
                .and_then(|v| s.id(v))
        }) {
            return None;
        }
        let pod_reqs = &ctx.attempt.reqs;
        if !reqs_compatible(pool, reqs, pod_reqs) {
            return None;
        }
        let mut merged = if pod_reqs.0.is_empty() {
            reqs.clone()
        } else {
            reqs.intersect(pod_reqs)
        };
        let mut changed = !pod_reqs.0.is_empty() && merged != *reqs;
        let total: Vec<i64> = used
            .iter()
            .zip(&info.requests)
            .map(|(a, b)| a + b)
            .collect();
        let mut all_ports: Vec<HostPort> = ports.to_vec();
        all_ports.extend(src.host_ports.iter().cloned());
        let allowed =
            if self.topo.pods[pod].is_constrained() || !self.topo.pods[pod].matches.is_empty() {
                self.topo
                    .allowed(
                        pod,
                        &ctx.active(),
                        Target::Claim {
                            node,
                            reqs: &merged,
                        },
                    )
                    .ok()?
            } else {
                Vec::new()
            };
        let mut domains = Vec::with_capacity(allowed.len());
        let mut cur_its: Option<Vec<u32>> = None;
        for (s, doms) in allowed {
            let space = &self.topo.spaces[s];
            if space.hostname {
                domains.push((s, node));
                continue;
            }
            if doms.is_empty() {
                continue;
            }
            if let Some(v) = merged.get(&space.key).and_then(Requirement::single_value)
                && let Some(d) = space.id(v)
                && doms.contains(&d)
            {
                domains.push((s, d));
                continue;
            }
            // Pin the claim to the best-ranked domain that still has instance types.
            let base_its = cur_its.as_deref().unwrap_or(its);
            let mut pinned = None;
            for d in doms {
                let mut r2 = merged.clone();
                r2.add(
                    &space.key,
                    &Requirement::in_values([&space.values[d as usize]]),
                );
                let f = filter_its(
                    self.prep, self.p, pool, base_its, &r2, true, &total, &all_ports,
                );
                if !f.is_empty() && self.min_values_ok(pool, &f, &r2) {
                    pinned = Some((d, r2, f));
                    break;
                }
            }
            let (d, r2, f) = pinned?;
            domains.push((s, d));
            merged = r2;
            cur_its = Some(f);
            changed = false;
        }
        let new_its = match cur_its {
            Some(f) if !changed => f,
            Some(f) => filter_its(
                self.prep, self.p, pool, &f, &merged, true, &total, &all_ports,
            ),
            None => filter_its(
                self.prep, self.p, pool, its, &merged, changed, &total, &all_ports,
            ),
        };
        if new_its.is_empty() || !self.min_values_ok(pool, &new_its, &merged) {
            return None;
        }
        Some(Fit {
            reqs: merged,
            its: new_its,
            domains,
        })
    }

    /// Whether a claim of `pool` narrowed to `its` under `reqs` keeps its minValues.
    pub fn min_values_ok(&self, pool: &PoolInfo, its: &[u32], reqs: &Requirements) -> bool {
        pool.min_values.is_empty() || satisfies_min_values(self.prep, self.p, pool, its, reqs)
    }

    pub fn set_claim_its(&mut self, c: usize, its: Vec<u32>) {
        let pool_i = self.claims[c].pool;
        let pool = &self.prep.pools[pool_i];
        if pool.remaining.is_some() {
            let cap = max_capacity(self.prep, pool, &its);
            for (k, (old, new)) in self.committed[pool_i]
                .iter_mut()
                .zip(self.claim_cap[c].iter().zip(&cap))
            {
                *k += new - old;
            }
            self.claim_cap[c] = cap;
        }
        self.claims[c].max_eff = max_eff(pool, &its, self.prep.res.len());
        self.claims[c].its = its;
    }

    fn commit_claim(&mut self, pod: usize, c: usize, fit: Fit, ctx: &Ctx) {
        let info = &self.prep.pods[pod];
        {
            let claim = &mut self.claims[c];
            claim.reqs = fit.reqs;
            claim
                .used
                .iter_mut()
                .zip(&info.requests)
                .for_each(|(a, r)| *a += r);
            claim
                .ports
                .extend(self.p.pods[info.src].host_ports.iter().cloned());
            claim.pods.push(pod);
        }
        self.set_claim_its(c, fit.its);
        self.topo.record(pod, &ctx.attempt.owned, &fit.domains);
        self.placement[pod] = Place::Claim(c);
        self.placed_reqs[pod] = Some(ctx.attempt.reqs.clone());
        self.domains[pod] = fit.domains;
        self.owned[pod] = ctx.attempt.owned.clone();
    }

    /// Positions of `pool.its` whose capacity fits the pool's remaining limits.
    pub fn its_within_limits(&self, pool_i: usize) -> Vec<u32> {
        let pool = &self.prep.pools[pool_i];
        let all = 0..pool.its.len() as u32;
        let Some(rem) = &pool.remaining else {
            return all.collect();
        };
        all.filter(|j| {
            let cap = &self.prep.its[pool.its[*j as usize]].capacity;
            rem.iter()
                .zip(cap)
                .zip(&self.committed[pool_i])
                .all(|((r, c), used)| r.is_none_or(|r| *c <= r - used))
        })
        .collect()
    }

    /// Whether the pool may open another claim (`nodes` limit).
    pub fn nodes_left(&self, pool_i: usize) -> bool {
        self.prep.pools[pool_i]
            .remaining_nodes
            .is_none_or(|n| self.claim_count[pool_i] < n)
    }

    /// Opens a new claim in pool `pi` for `pod` if it admits it.
    pub fn open_claim(&mut self, pod: usize, ctx: &Ctx, pi: usize) -> bool {
        let pool = &self.prep.pools[pi];
        if pool.its.is_empty()
            || !self.nodes_left(pi)
            || pool_taint_block(pool, &ctx.tolerations).is_some()
        {
            return false;
        }
        if self.prep.pool_conflict(pool, &ctx.attempt.reqs).is_some() {
            return false;
        }
        let its = self.its_within_limits(pi);
        if its.is_empty() {
            return false;
        }
        let r = self.prep.res.len();
        let node = self.node_id_of_claim(self.claims.len());
        let me = max_eff(pool, &its, r);
        let used = vec![0; r];
        let Some(fit) = self.fit_on(pod, ctx, pi, node, &pool.reqs, &its, &used, &[], &me) else {
            return false;
        };
        self.claims.push(Claim {
            pool: pi,
            node,
            reqs: pool.reqs.clone(),
            its: Vec::new(),
            used,
            ports: Vec::new(),
            pods: Vec::new(),
            max_eff: me,
        });
        self.claim_cap.push(vec![0; r]);
        self.claim_count[pi] += 1;
        let c = self.claims.len() - 1;
        self.open.push(c);
        self.commit_claim(pod, c, fit, ctx);
        true
    }
}
