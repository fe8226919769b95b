//! Turns the public [`Problem`] into index-based tables the hot loop can use without string
//! lookups: dense resource vectors, per-NodePool instance-type lists with DaemonSet overhead
//! already subtracted, and per-pod requirement alternatives.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::error::SolveError;
use crate::labels::{self, CAPACITY_TYPE, INSTANCE_TYPE, NODEPOOL, ZONE};
use crate::model::{HostPort, Labels, NodePoolView, PodView, Problem};
use crate::requirements::{NodeSelectorTerm, Requirement, Requirements};
use crate::resources::{NODES, PODS, Resources};
use crate::taints::{Taint, TaintEffect, Toleration, first_untolerated};

/// Dense resource-name index.
#[derive(Debug, Clone, Default)]
pub(crate) struct ResIndex {
    pub names: Vec<String>,
    index: BTreeMap<String, usize>,
}

impl ResIndex {
    fn intern(&mut self, name: &str) {
        if !self.index.contains_key(name) {
            self.index.insert(name.to_string(), self.names.len());
            self.names.push(name.to_string());
        }
    }
    /// Dense vector for `r` (names must have been interned).
    pub fn dense(&self, r: &Resources) -> Vec<i64> {
        let mut v = vec![0; self.names.len()];
        for (k, amt) in &r.0 {
            if let Some(i) = self.index.get(k) {
                v[*i] = *amt;
            }
        }
        v
    }
    pub fn len(&self) -> usize {
        self.names.len()
    }
}

/// Whether `a + b ≤ cap` element-wise.
pub(crate) fn fits_sum(a: &[i64], b: &[i64], cap: &[i64]) -> bool {
    a.iter().zip(b).zip(cap).all(|((x, y), c)| x + y <= *c)
}

/// Catalog entry with dense vectors and its labels (instance-type label included).
#[derive(Debug, Clone)]
pub(crate) struct ItInfo {
    pub alloc: Vec<i64>,
    pub capacity: Vec<i64>,
    pub labels: Labels,
}

/// A DaemonSet pod template, prepared.
#[derive(Debug, Clone)]
pub(crate) struct DsInfo {
    pub requests: Vec<i64>,
    pub alternatives: Vec<Requirements>,
    pub tolerations: Vec<Toleration>,
    pub ports: Vec<HostPort>,
}

/// A NodePool, prepared.
#[derive(Debug, Clone)]
pub(crate) struct PoolInfo {
    pub src: usize,
    pub name: String,
    /// requirements ∩ template labels ∩ `karpenter.sh/nodepool In [name]`.
    pub reqs: Requirements,
    pub taints: Vec<Taint>,
    /// Catalog indices of instance types the pool can launch (compatible, some offering available).
    pub its: Vec<usize>,
    /// Allocatable minus DaemonSet overhead, parallel to `its`.
    pub eff_alloc: Vec<Vec<i64>>,
    /// DaemonSet overhead, parallel to `its`.
    pub ds_overhead: Vec<Vec<i64>>,
    /// DaemonSet host ports, parallel to `its`.
    pub ds_ports: Vec<Vec<HostPort>>,
    /// Remaining limit per dense resource (None = unlimited), after existing usage.
    pub remaining: Option<Vec<Option<i64>>>,
    /// Remaining `nodes` limit.
    pub remaining_nodes: Option<i64>,
    /// Label keys the pool's nodes will define (pool requirements, labels, instance-type labels).
    pub defined: BTreeSet<String>,
    /// `minValues` per requirement key ([`Problem::min_values`]), ascending by key.
    pub min_values: Vec<(String, usize)>,
    /// Positions into `its` by their cheapest usable offering (ties by name): a claim's
    /// options are read in this order and the scan stops once no cheaper one can come.
    pub by_price: Vec<u32>,
}

/// A pending pod, prepared.
#[derive(Debug, Clone)]
pub(crate) struct PodInfo {
    pub src: usize,
    pub key: String,
    pub requests: Vec<i64>,
    /// nodeSelector ∩ volume requirements.
    pub base: Requirements,
    /// Required node-affinity terms (ORed), each already intersected with `base`.
    pub terms: Vec<Requirements>,
    /// Preferred node-affinity terms sorted by weight desc (stable).
    pub preferred: Vec<Requirements>,
    /// Why the pod is ignored outright (restricted label, opt-out), if it is.
    pub invalid: Option<String>,
}

/// All prepared tables.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub res: ResIndex,
    pub pods_res: usize,
    pub its: Vec<ItInfo>,
    pub pools: Vec<PoolInfo>,
    pub pods: Vec<PodInfo>,
    pub any_prefer_no_schedule: bool,
    pub places: Places,
    /// Per instance type (index in `Problem::instance_types`): its position in name order, so
    /// price ties are broken by name without comparing strings.
    pub name_rank: Vec<u32>,
    /// Per instance type: the price of its cheapest usable offering (infinite without one), a
    /// lower bound on what any claim pays for it.
    pub floor_price: Vec<f64>,
    /// Whether any offering is on a capacity reservation (a claim's options then depend on
    /// the reservation its choice lands on, so they are not read in price order).
    pub reservations: bool,
}

/// Each instance type's position in name order (ties, which a valid catalog does not have, by
/// catalog position).
fn name_rank(its: &[crate::instance_type::InstanceType]) -> Vec<u32> {
    let mut order: Vec<usize> = (0..its.len()).collect();
    order.sort_by(|a, b| its[*a].name.cmp(&its[*b].name).then(a.cmp(b)));
    let mut rank = vec![0; its.len()];
    for (r, i) in order.into_iter().enumerate() {
        rank[i] = r as u32;
    }
    rank
}

/// The catalog's distinct (zone, capacity type) pairs, and the pair of every offering: which
/// offerings a claim's requirements admit is then decided once per pair instead of once per
/// offering and instance type (choosing the offerings of 4 000 claims over 400 types compared
/// zone strings ~10 M times).
#[derive(Debug, Clone, Default)]
pub(crate) struct Places {
    pairs: Vec<(String, String)>,
    /// Per instance type (index in `Problem::instance_types`), per offering: its pair.
    of: Vec<Vec<usize>>,
}

impl Places {
    fn new(its: &[crate::instance_type::InstanceType]) -> Self {
        let mut index: HashMap<(&str, &str), usize> = HashMap::new();
        let mut pairs = Vec::new();
        let of = its
            .iter()
            .map(|it| {
                it.offerings
                    .iter()
                    .map(|o| {
                        *index
                            .entry((o.zone.as_str(), o.capacity_type.as_str()))
                            .or_insert_with(|| {
                                pairs.push((o.zone.clone(), o.capacity_type.clone()));
                                pairs.len() - 1
                            })
                    })
                    .collect()
            })
            .collect();
        Self { pairs, of }
    }

    /// Per pair, whether `reqs` admits it (zone and capacity type).
    pub fn admitted(&self, reqs: &Requirements) -> Vec<bool> {
        let zr = reqs.get(ZONE);
        let cr = reqs.get(CAPACITY_TYPE);
        self.pairs
            .iter()
            .map(|(z, c)| zr.is_none_or(|r| r.has(z)) && cr.is_none_or(|r| r.has(c)))
            .collect()
    }

    /// [`offering_index`] of instance type `ci` for requirements whose [`Self::admitted`] is
    /// `admitted`, among the offerings `also` lets through.
    pub fn offering_index(
        &self,
        offerings: &[crate::instance_type::Offering],
        ci: usize,
        admitted: &[bool],
        also: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let pair_of = &self.of[ci];
        cheapest(offerings, |i| admitted[pair_of[i]] && also(i))
    }

    /// Whether offering `i` of instance type `ci` is in a pair `admitted` lets through.
    pub fn admits(&self, ci: usize, i: usize, admitted: &[bool]) -> bool {
        admitted[self.of[ci][i]]
    }
}

fn term_reqs(base: &Requirements, t: &NodeSelectorTerm) -> Result<Requirements, SolveError> {
    Ok(base.intersect(&Requirements::from_selectors(&t.match_expressions)?))
}

/// Requirement alternatives of a pod template (nodeSelector ∩ each required term).
fn alternatives(pod: &PodView, base: &Requirements) -> Result<Vec<Requirements>, SolveError> {
    if pod.required_node_affinity.is_empty() {
        return Ok(vec![base.clone()]);
    }
    pod.required_node_affinity
        .iter()
        .map(|t| term_reqs(base, t))
        .collect()
}

/// Why a pod must be ignored (upstream `Validate`), if it must.
fn invalid_reason(alts: &[Requirements]) -> Option<String> {
    for r in alts {
        for (k, req) in &r.0 {
            if k == labels::HOSTNAME {
                return Some(format!(
                    "the pod's node selector/affinity uses the restricted label {k}; Karpenter ignores such pods"
                ));
            }
            if k == NODEPOOL && req.matches(None) && !req.any_value() {
                return Some(
                    "the pod requires karpenter.sh/nodepool DoesNotExist (opts out of Karpenter)"
                        .into(),
                );
            }
            if k.starts_with("karpenter.sh/") && k != NODEPOOL && k != CAPACITY_TYPE {
                return Some(format!(
                    "the pod's node selector/affinity uses the restricted label {k} (karpenter.sh domain)"
                ));
            }
        }
    }
    None
}

/// The node label value an instance type + offering + pool gives `key`, if determined.
pub(crate) fn it_label<'a>(it: &'a ItInfo, key: &str) -> Option<&'a str> {
    it.labels.get(key).map(String::as_str)
}

/// Whether instance type `it` (with at least one available offering) satisfies `reqs`, given
/// the keys the pool defines. Returns the first failing key.
pub(crate) fn it_conflict<'a>(
    it: &ItInfo,
    offerings: &[crate::instance_type::Offering],
    reqs: &'a Requirements,
    pool_defined: &Requirements,
) -> Option<&'a str> {
    for (k, r) in &reqs.0 {
        if k == ZONE || k == CAPACITY_TYPE {
            continue;
        }
        match it_label(it, k) {
            Some(v) => {
                if !r.has(v) {
                    return Some(k);
                }
            }
            None => {
                if !r.allow_absent && !pool_defined.0.contains_key(k) {
                    return Some(k);
                }
            }
        }
    }
    if offering_index(offerings, reqs).is_none() {
        return Some(ZONE);
    }
    None
}

/// The cheapest available offering compatible with `reqs` (zone, capacity type).
pub(crate) fn offering_index(
    offerings: &[crate::instance_type::Offering],
    reqs: &Requirements,
) -> Option<usize> {
    let zr = reqs.get(ZONE);
    let cr = reqs.get(CAPACITY_TYPE);
    cheapest(offerings, |i| {
        let o = &offerings[i];
        zr.is_none_or(|r| r.has(&o.zone)) && cr.is_none_or(|r| r.has(&o.capacity_type))
    })
}

/// The cheapest available offering `admits` lets through (ties: zone, then capacity type).
fn cheapest(
    offerings: &[crate::instance_type::Offering],
    admits: impl Fn(usize) -> bool,
) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, o) in offerings.iter().enumerate() {
        if !o.usable() || !admits(i) {
            continue;
        }
        let better = match best {
            None => true,
            Some(b) => {
                let ob = &offerings[b];
                o.price
                    .total_cmp(&ob.price)
                    .then_with(|| o.zone.cmp(&ob.zone))
                    .then_with(|| o.capacity_type.cmp(&ob.capacity_type))
                    .is_lt()
            }
        };
        if better {
            best = Some(i);
        }
    }
    best
}

/// Whether the instance types `its` (positions in `pool.its`) keep at least `minValues`
/// distinct values for every key the pool sets one on. Zone and capacity type take their values
/// from the available offerings that `reqs` admits; other keys from the instance-type labels.
pub(crate) fn satisfies_min_values(
    prep: &Prepared,
    problem: &Problem,
    pool: &PoolInfo,
    its: &[u32],
    reqs: &Requirements,
) -> bool {
    pool.min_values.iter().all(|(key, min)| {
        let mut values: BTreeSet<&str> = BTreeSet::new();
        let allowed = reqs.get(key);
        for &j in its {
            let ci = pool.its[j as usize];
            if key == ZONE || key == CAPACITY_TYPE {
                for o in problem.instance_types[ci].offerings.iter() {
                    let v = if key == ZONE {
                        &o.zone
                    } else {
                        &o.capacity_type
                    };
                    if o.usable()
                        && allowed.is_none_or(|r| r.has(v))
                        && offering_index(std::slice::from_ref(o), reqs).is_some()
                    {
                        values.insert(v);
                    }
                }
            } else if let Some(v) = it_label(&prep.its[ci], key) {
                values.insert(v);
            }
            if values.len() >= *min {
                break;
            }
        }
        values.len() >= *min
    })
}

/// Pool requirements: requirements ∩ labels ∩ nodepool name.
pub(crate) fn pool_requirements(np: &NodePoolView) -> Result<Requirements, SolveError> {
    let mut r = Requirements::from_selectors(&np.requirements)?;
    r.add_all(&Requirements::from_labels(&np.labels));
    r.add(NODEPOOL, &Requirement::in_values([&np.name]));
    Ok(r)
}

/// Whether a DaemonSet pod would run on nodes of `pool` with instance type `it`.
fn ds_runs_on(
    ds: &DsInfo,
    pool: &PoolInfo,
    it: &ItInfo,
    off: &[crate::instance_type::Offering],
) -> bool {
    if first_untolerated(&pool.taints, &ds.tolerations, false).is_some() {
        return false;
    }
    ds.alternatives.iter().any(|alt| {
        let merged = pool.reqs.intersect(alt);
        !merged.is_unsatisfiable()
            && alt.0.iter().all(|(k, r)| {
                pool.reqs.0.contains_key(k)
                    || it.labels.contains_key(k)
                    || k == ZONE
                    || k == CAPACITY_TYPE
                    || r.allow_absent
            })
            && it_conflict(it, off, &merged, &pool.reqs).is_none()
    })
}

impl Prepared {
    pub fn new(p: &Problem) -> Result<Self, SolveError> {
        let mut res = ResIndex::default();
        for name in ["cpu", "memory", PODS] {
            res.intern(name);
        }
        for it in &p.instance_types {
            for k in it.capacity.0.keys() {
                res.intern(k);
            }
        }
        for pod in &p.pods {
            for k in pod.requests.0.keys() {
                res.intern(k);
            }
        }
        for d in &p.daemon_sets {
            for k in d.pod.requests.0.keys() {
                res.intern(k);
            }
        }
        for np in &p.node_pools {
            if let Some(l) = &np.limits {
                for k in l.0.keys().filter(|k| *k != NODES) {
                    res.intern(k);
                }
            }
        }
        let pods_res = res.index[PODS];
        let with_slot = |r: &Resources| {
            let mut v = res.dense(r);
            v[pods_res] = v[pods_res].max(1);
            v
        };

        let its: Vec<ItInfo> = p
            .instance_types
            .iter()
            .map(|it| {
                let mut labels = it.labels.clone();
                labels.insert(INSTANCE_TYPE.to_string(), it.name.clone());
                ItInfo {
                    alloc: res.dense(&it.allocatable()),
                    capacity: res.dense(&it.capacity),
                    labels,
                }
            })
            .collect();

        let mut ds = Vec::new();
        for d in &p.daemon_sets {
            let base = Requirements::from_labels(&d.pod.node_selector);
            ds.push(DsInfo {
                requests: with_slot(&d.pod.requests),
                alternatives: alternatives(&d.pod, &base)?,
                tolerations: d.pod.tolerations.clone(),
                ports: d.pod.host_ports.clone(),
            });
        }

        let name_rank = name_rank(&p.instance_types);
        let floor_price: Vec<f64> = p
            .instance_types
            .iter()
            .map(|it| {
                it.offerings
                    .iter()
                    .filter(|o| o.usable())
                    .map(|o| o.price)
                    .min_by(f64::total_cmp)
                    .unwrap_or(f64::INFINITY)
            })
            .collect();
        let reservations = p
            .instance_types
            .iter()
            .any(|it| it.offerings.iter().any(|o| o.reservation.is_some()));
        let mut order: Vec<usize> = (0..p.node_pools.len()).collect();
        order.sort_by(|a, b| {
            let (x, y) = (&p.node_pools[*a], &p.node_pools[*b]);
            y.weight.cmp(&x.weight).then_with(|| x.name.cmp(&y.name))
        });
        let mut pools = Vec::new();
        let mut any_prefer_no_schedule = false;
        for src in order {
            let np = &p.node_pools[src];
            any_prefer_no_schedule |= np
                .taints
                .iter()
                .any(|t| t.effect == TaintEffect::PreferNoSchedule);
            let reqs = pool_requirements(np)?;
            let allowed: Option<BTreeSet<&str>> = np
                .instance_types
                .as_ref()
                .map(|v| v.iter().map(String::as_str).collect());
            let mut pool = PoolInfo {
                src,
                name: np.name.clone(),
                reqs,
                taints: np.taints.clone(),
                its: Vec::new(),
                eff_alloc: Vec::new(),
                ds_overhead: Vec::new(),
                ds_ports: Vec::new(),
                remaining: None,
                remaining_nodes: None,
                defined: BTreeSet::new(),
                min_values: p
                    .min_values
                    .get(&np.name)
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), (*v).max(0) as usize))
                    .collect(),
                by_price: Vec::new(),
            };
            for (i, it) in p.instance_types.iter().enumerate() {
                if allowed
                    .as_ref()
                    .is_some_and(|a| !a.contains(it.name.as_str()))
                {
                    continue;
                }
                if it_conflict(&its[i], &it.offerings, &pool.reqs, &pool.reqs).is_some() {
                    continue;
                }
                let mut overhead = vec![0; res.len()];
                let mut ports = Vec::new();
                for d in &ds {
                    if ds_runs_on(d, &pool, &its[i], &it.offerings) {
                        overhead
                            .iter_mut()
                            .zip(&d.requests)
                            .for_each(|(o, r)| *o += r);
                        ports.extend(d.ports.iter().cloned());
                    }
                }
                let eff: Vec<i64> = its[i]
                    .alloc
                    .iter()
                    .zip(&overhead)
                    .map(|(a, o)| a - o)
                    .collect();
                pool.its.push(i);
                pool.eff_alloc.push(eff);
                pool.ds_overhead.push(overhead);
                pool.ds_ports.push(ports);
            }
            pool.defined.extend(pool.reqs.0.keys().cloned());
            for &i in &pool.its {
                pool.defined.extend(its[i].labels.keys().cloned());
            }
            pool.defined.insert(ZONE.to_string());
            pool.defined.insert(CAPACITY_TYPE.to_string());
            pool.by_price = (0..pool.its.len() as u32).collect();
            pool.by_price.sort_by(|a, b| {
                let (x, y) = (pool.its[*a as usize], pool.its[*b as usize]);
                floor_price[x]
                    .total_cmp(&floor_price[y])
                    .then_with(|| name_rank[x].cmp(&name_rank[y]))
            });
            if let Some(l) = &np.limits {
                let mut rem = vec![None; res.len()];
                for (k, v) in &l.0 {
                    if k == NODES {
                        pool.remaining_nodes = Some(v - np.usage.get(NODES));
                    } else if let Some(i) = res.index.get(k) {
                        rem[*i] = Some(v - np.usage.get(k));
                    }
                }
                pool.remaining = Some(rem);
            }
            pools.push(pool);
        }

        let mut seen = BTreeSet::new();
        let mut pods = Vec::new();
        for (src, pod) in p.pods.iter().enumerate() {
            let key = pod.key();
            if !seen.insert(key.clone()) {
                return Err(SolveError::DuplicatePod(key));
            }
            for t in &pod.topology_spread {
                if t.max_skew < 1 {
                    return Err(SolveError::InvalidMaxSkew {
                        pod: key,
                        key: t.topology_key.clone(),
                        max_skew: t.max_skew,
                    });
                }
            }
            let mut base = Requirements::from_labels(&pod.node_selector);
            base.add_all(&Requirements::from_selectors(&pod.volume_requirements)?);
            let terms = alternatives(pod, &base)?;
            let mut pref: Vec<(i32, Requirements)> = Vec::new();
            for w in &pod.preferred_node_affinity {
                pref.push((
                    w.weight,
                    Requirements::from_selectors(&w.term.match_expressions)?,
                ));
            }
            pref.sort_by_key(|p| std::cmp::Reverse(p.0));
            let invalid = invalid_reason(&terms);
            pods.push(PodInfo {
                src,
                key,
                requests: with_slot(&pod.requests),
                base,
                terms,
                preferred: pref.into_iter().map(|(_, r)| r).collect(),
                invalid,
            });
        }
        Ok(Prepared {
            res,
            pods_res,
            its,
            pools,
            pods,
            any_prefer_no_schedule,
            places: Places::new(&p.instance_types),
            name_rank,
            floor_price,
            reservations,
        })
    }

    /// Whether pod requirements are compatible with a pool template: shared keys intersect, and
    /// every custom key the pod needs present is defined by the pool (well-known keys may be
    /// undefined, as upstream). Returns a description of the first conflict.
    pub fn pool_conflict(&self, pool: &PoolInfo, reqs: &Requirements) -> Option<String> {
        for (k, r) in &reqs.0 {
            match pool.reqs.get(k) {
                Some(pr) => {
                    if !pr.intersects(r) {
                        return Some(format!(
                            "requirement {k} {} conflicts with the NodePool's {k} {}",
                            r.describe(),
                            pr.describe()
                        ));
                    }
                }
                None => {
                    if !r.allow_absent && !labels::is_well_known(k) && !pool.defined.contains(k) {
                        return Some(format!(
                            "label {k} is not defined by the NodePool (add it to its labels or requirements)"
                        ));
                    }
                }
            }
        }
        None
    }
}

/// The pod's taint check against a pool. PreferNoSchedule blocks too, as upstream: the last
/// relaxation step adds a toleration for it, so such pools are used only when nothing else fits.
pub(crate) fn pool_taint_block<'a>(
    pool: &'a PoolInfo,
    tolerations: &[Toleration],
) -> Option<&'a Taint> {
    first_untolerated(&pool.taints, tolerations, true)
}
