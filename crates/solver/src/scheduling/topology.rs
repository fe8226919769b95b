//! Topology spread and pod (anti-)affinity bookkeeping (upstream `topology.go`).
//!
//! Identical terms share one [`Group`] (so 1 000 replicas cost one group, not 1 000). Each group
//! counts matching pods per domain; anti-affinity groups also count their *owners* per domain so
//! that a later pod matching the selector stays away (the inverse direction).

use std::collections::{BTreeMap, BTreeSet};

use crate::labels::{CAPACITY_TYPE, HOSTNAME, ZONE};
use crate::model::{Labels, PodAffinityTerm, PodView, Problem, WhenUnsatisfiable};
use crate::requirements::Requirements;
use crate::selector::LabelSelector;

use super::prepare::Prepared;

/// What a group constrains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Kind {
    Spread {
        max_skew: i64,
        min_domains: i64,
        ignore_affinity: bool,
    },
    Affinity,
    Anti,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct GroupKey {
    kind: Kind,
    key: String,
    namespaces: Option<BTreeSet<String>>,
    selector: Option<LabelSelector>,
}

/// One shared topology term.
#[derive(Debug, Clone)]
pub(crate) struct Group {
    pub kind: Kind,
    pub space: usize,
    namespaces: Option<BTreeSet<String>>,
    selector: Option<LabelSelector>,
    pub counts: Vec<i64>,
    pub owners: Vec<i64>,
    pub total: i64,
}

impl Group {
    fn selects(&self, ns: &str, labels: &Labels) -> bool {
        self.namespaces.as_ref().is_none_or(|n| n.contains(ns))
            && self.selector.as_ref().is_some_and(|s| s.matches(labels))
    }
    pub fn count(&self, d: u32) -> i64 {
        self.counts.get(d as usize).copied().unwrap_or(0)
    }
    pub fn owner(&self, d: u32) -> i64 {
        self.owners.get(d as usize).copied().unwrap_or(0)
    }
}

fn bump(v: &mut Vec<i64>, d: u32, by: i64) {
    let i = d as usize;
    if v.len() <= i {
        v.resize(i + 1, 0);
    }
    v[i] += by;
}

/// Domains of one topology key.
#[derive(Debug, Clone)]
pub(crate) struct Space {
    pub key: String,
    pub hostname: bool,
    pub values: Vec<String>,
    index: BTreeMap<String, u32>,
    /// Domains new capacity or existing nodes can provide (sorted ids).
    pub universe: Vec<u32>,
}

impl Space {
    pub fn id(&self, v: &str) -> Option<u32> {
        self.index.get(v).copied()
    }
}

/// A pod's topology terms, by group id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct PodTopo {
    /// (group, hard).
    pub spread: Vec<(usize, bool)>,
    /// (group, weight; None = required), preferred sorted heaviest first.
    pub affinity: Vec<(usize, Option<i32>)>,
    /// Same for anti-affinity.
    pub anti: Vec<(usize, Option<i32>)>,
    /// Groups that count this pod (sorted).
    pub matches: Vec<usize>,
}

impl PodTopo {
    pub fn is_constrained(&self) -> bool {
        !self.spread.is_empty() || !self.affinity.is_empty() || !self.anti.is_empty()
    }
}

/// Where a pod is being placed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    Existing { node: u32, labels: &'a Labels },
    Claim { node: u32, reqs: &'a Requirements },
}

/// All groups and counts.
#[derive(Debug, Clone)]
pub(crate) struct Topology {
    pub groups: Vec<Group>,
    pub spaces: Vec<Space>,
    pub pods: Vec<PodTopo>,
}

/// The terms active in one placement attempt (after relaxation).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Active<'a> {
    pub spread: &'a [usize],
    pub affinity: &'a [usize],
    pub anti: &'a [usize],
    /// Strict node requirements (for eligible spread domains).
    pub strict: &'a Requirements,
}

fn universe_values(p: &Problem, prep: &Prepared, key: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for pool in &prep.pools {
        let np_req = pool.reqs.get(key);
        for &i in &pool.its {
            let it = &p.instance_types[i];
            let mut vals: Vec<String> = Vec::new();
            if key == ZONE || key == CAPACITY_TYPE {
                for o in it.offerings.iter().filter(|o| o.usable()) {
                    let zr = pool.reqs.get(ZONE);
                    let cr = pool.reqs.get(CAPACITY_TYPE);
                    if zr.is_some_and(|r| !r.has(&o.zone))
                        || cr.is_some_and(|r| !r.has(&o.capacity_type))
                    {
                        continue;
                    }
                    vals.push(if key == ZONE {
                        o.zone.clone()
                    } else {
                        o.capacity_type.clone()
                    });
                }
            } else if let Some(v) = prep.its[i].labels.get(key) {
                vals.push(v.clone());
            } else if let Some(r) = np_req
                && !r.complement
            {
                vals.extend(r.values.iter().cloned());
            }
            for v in vals {
                if np_req.is_none_or(|r| r.has(&v)) {
                    out.insert(v);
                }
            }
        }
    }
    for n in &p.existing_nodes {
        if let Some(v) = n.labels.get(key) {
            out.insert(v.clone());
        }
    }
    out
}

impl Topology {
    pub fn new(p: &Problem, prep: &Prepared, ignore_preferences: bool) -> Self {
        let mut t = Topology {
            groups: Vec::new(),
            spaces: Vec::new(),
            pods: Vec::new(),
        };
        let mut by_key: BTreeMap<GroupKey, usize> = BTreeMap::new();
        let mut space_of: BTreeMap<String, usize> = BTreeMap::new();
        let mut intern = |t: &mut Topology, k: GroupKey| -> usize {
            if let Some(g) = by_key.get(&k) {
                return *g;
            }
            let space = *space_of.entry(k.key.clone()).or_insert_with(|| {
                let hostname = k.key == HOSTNAME;
                let values: Vec<String> = if hostname {
                    Vec::new()
                } else {
                    universe_values(p, prep, &k.key).into_iter().collect()
                };
                let index = values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (v.clone(), i as u32))
                    .collect();
                let universe = (0..values.len() as u32).collect();
                t.spaces.push(Space {
                    key: k.key.clone(),
                    hostname,
                    values,
                    index,
                    universe,
                });
                t.spaces.len() - 1
            });
            t.groups.push(Group {
                kind: k.kind,
                space,
                namespaces: k.namespaces.clone(),
                selector: k.selector.clone(),
                counts: Vec::new(),
                owners: Vec::new(),
                total: 0,
            });
            by_key.insert(k, t.groups.len() - 1);
            t.groups.len() - 1
        };
        let term_key = |pod: &PodView, term: &PodAffinityTerm, kind: Kind| GroupKey {
            kind,
            key: term.topology_key.clone(),
            namespaces: if term.all_namespaces {
                None
            } else if term.namespaces.is_empty() {
                Some(BTreeSet::from([pod.namespace.clone()]))
            } else {
                Some(term.namespaces.iter().cloned().collect())
            },
            selector: term.label_selector.clone(),
        };
        for pod in &p.pods {
            let mut pt = PodTopo::default();
            for c in &pod.topology_spread {
                let hard = c.when_unsatisfiable == WhenUnsatisfiable::DoNotSchedule;
                if ignore_preferences && !hard {
                    continue;
                }
                let Some(sel) = &c.label_selector else {
                    continue;
                };
                let k = GroupKey {
                    kind: Kind::Spread {
                        max_skew: i64::from(c.max_skew),
                        min_domains: i64::from(c.min_domains.unwrap_or(1)),
                        ignore_affinity: c.ignore_node_affinity,
                    },
                    key: c.topology_key.clone(),
                    namespaces: Some(BTreeSet::from([pod.namespace.clone()])),
                    selector: Some(sel.with_match_label_keys(&c.match_label_keys, &pod.labels)),
                };
                pt.spread.push((intern(&mut t, k), hard));
            }
            for term in &pod.pod_affinity {
                pt.affinity
                    .push((intern(&mut t, term_key(pod, term, Kind::Affinity)), None));
            }
            for term in &pod.pod_anti_affinity {
                pt.anti
                    .push((intern(&mut t, term_key(pod, term, Kind::Anti)), None));
            }
            if !ignore_preferences {
                let mut pa: Vec<_> = pod.preferred_pod_affinity.iter().collect();
                pa.sort_by_key(|w| std::cmp::Reverse(w.weight));
                for w in pa {
                    pt.affinity.push((
                        intern(&mut t, term_key(pod, &w.term, Kind::Affinity)),
                        Some(w.weight),
                    ));
                }
                let mut pa: Vec<_> = pod.preferred_pod_anti_affinity.iter().collect();
                pa.sort_by_key(|w| std::cmp::Reverse(w.weight));
                for w in pa {
                    pt.anti.push((
                        intern(&mut t, term_key(pod, &w.term, Kind::Anti)),
                        Some(w.weight),
                    ));
                }
            }
            t.pods.push(pt);
        }
        // Required anti-affinity of running pods repels pending pods (inverse direction).
        let mut existing_owned: Vec<Vec<usize>> = Vec::new();
        for n in &p.existing_nodes {
            for bp in &n.pods {
                let owned = bp
                    .pod_anti_affinity
                    .iter()
                    .map(|term| intern(&mut t, term_key(bp, term, Kind::Anti)))
                    .collect();
                existing_owned.push(owned);
            }
        }
        for (i, pod) in p.pods.iter().enumerate() {
            t.pods[i].matches = (0..t.groups.len())
                .filter(|g| t.groups[*g].selects(&pod.namespace, &pod.labels))
                .collect();
        }
        // Count running pods.
        let mut owned_iter = existing_owned.into_iter();
        for (ni, n) in p.existing_nodes.iter().enumerate() {
            for bp in &n.pods {
                let owned = owned_iter.next().unwrap_or_default();
                for g in 0..t.groups.len() {
                    let Some(d) = t.existing_domain(ni as u32, &n.labels, t.groups[g].space) else {
                        continue;
                    };
                    if t.groups[g].selects(&bp.namespace, &bp.labels) {
                        bump(&mut t.groups[g].counts, d, 1);
                        t.groups[g].total += 1;
                    }
                    if owned.contains(&g) {
                        bump(&mut t.groups[g].owners, d, 1);
                    }
                }
            }
        }
        t
    }

    fn existing_domain(&self, node: u32, labels: &Labels, space: usize) -> Option<u32> {
        let s = &self.spaces[space];
        if s.hostname {
            Some(node)
        } else {
            labels.get(&s.key).and_then(|v| s.id(v))
        }
    }

    /// Candidate domains of `target` for `space`: `None` = the node lacks the key.
    fn candidates(&self, space: usize, target: Target<'_>) -> Option<Vec<u32>> {
        let s = &self.spaces[space];
        match target {
            Target::Existing { node, labels } => {
                self.existing_domain(node, labels, space).map(|d| vec![d])
            }
            Target::Claim { node, reqs } => {
                if s.hostname {
                    return Some(vec![node]);
                }
                Some(match reqs.get(&s.key) {
                    None => s.universe.clone(),
                    Some(r) => s
                        .universe
                        .iter()
                        .copied()
                        .filter(|d| r.has(&s.values[*d as usize]))
                        .collect(),
                })
            }
        }
    }

    fn spread_min(&self, g: &Group, strict: &Requirements) -> i64 {
        let s = &self.spaces[g.space];
        let Kind::Spread {
            min_domains,
            ignore_affinity,
            ..
        } = g.kind
        else {
            return 0;
        };
        if s.hostname {
            return 0;
        }
        let req = if ignore_affinity {
            None
        } else {
            strict.get(&s.key)
        };
        let mut n = 0i64;
        let mut min = i64::MAX;
        for d in &s.universe {
            if req.is_some_and(|r| !r.has(&s.values[*d as usize])) {
                continue;
            }
            n += 1;
            min = min.min(g.count(*d));
        }
        if n < min_domains || min == i64::MAX {
            0
        } else {
            min
        }
    }

    /// Allowed domains per topology space for placing `pod` on `target`, or why none.
    /// Spaces the pod is counted in are included so the claim can be pinned to one domain.
    pub fn allowed(
        &self,
        pod: usize,
        active: &Active<'_>,
        target: Target<'_>,
    ) -> Result<Vec<(usize, Vec<u32>)>, String> {
        let pt = &self.pods[pod];
        let mut spaces: Vec<usize> = Vec::new();
        let mut push = |s: usize| {
            if !spaces.contains(&s) {
                spaces.push(s);
            }
        };
        for g in active
            .spread
            .iter()
            .chain(active.affinity)
            .chain(active.anti)
            .chain(&pt.matches)
        {
            push(self.groups[*g].space);
        }
        let selfsel = |g: usize| pt.matches.binary_search(&g).is_ok();
        let mut out = Vec::with_capacity(spaces.len());
        for s in spaces {
            let space = &self.spaces[s];
            let cands = self.candidates(s, target);
            let mut allowed = match &cands {
                Some(c) => c.clone(),
                None => Vec::new(),
            };
            for &g in active.spread.iter().filter(|g| self.groups[**g].space == s) {
                let grp = &self.groups[g];
                let Kind::Spread { max_skew, .. } = grp.kind else {
                    continue;
                };
                if cands.is_none() {
                    return Err(format!(
                        "node has no {} label for topology spread",
                        space.key
                    ));
                }
                let min = self.spread_min(grp, active.strict);
                let me = i64::from(selfsel(g));
                allowed.retain(|d| grp.count(*d) + me - min <= max_skew);
                if allowed.is_empty() {
                    return Err(format!(
                        "topology spread on {} (maxSkew {max_skew}) would be violated",
                        space.key
                    ));
                }
            }
            for &g in active
                .affinity
                .iter()
                .filter(|g| self.groups[**g].space == s)
            {
                let grp = &self.groups[g];
                if cands.is_none() {
                    return Err(format!("node has no {} label for pod affinity", space.key));
                }
                if grp.total > 0 {
                    allowed.retain(|d| grp.count(*d) > 0);
                } else if !selfsel(g) {
                    return Err(format!(
                        "no pod matching the pod affinity on {} exists yet",
                        space.key
                    ));
                }
                if allowed.is_empty() {
                    return Err(format!(
                        "pod affinity on {}: no matching pods in this domain",
                        space.key
                    ));
                }
            }
            if cands.as_ref().is_none_or(Vec::is_empty) {
                // No known domain: anti-affinity and counting never need the label.
                out.push((s, Vec::new()));
                continue;
            }
            for &g in active.anti.iter().filter(|g| self.groups[**g].space == s) {
                let grp = &self.groups[g];
                allowed.retain(|d| grp.count(*d) == 0);
                if allowed.is_empty() {
                    return Err(format!(
                        "pod anti-affinity on {}: matching pods already there",
                        space.key
                    ));
                }
            }
            for &g in pt.matches.iter().filter(|g| self.groups[**g].space == s) {
                let grp = &self.groups[g];
                if grp.kind == Kind::Anti {
                    allowed.retain(|d| grp.owner(*d) == 0);
                    if allowed.is_empty() {
                        return Err(format!(
                            "another pod's anti-affinity on {} excludes this pod",
                            space.key
                        ));
                    }
                }
            }
            // Prefer the emptiest domain of the pod's spread groups, else of any counting group.
            let rank_groups: Vec<usize> = {
                let sp: Vec<usize> = active
                    .spread
                    .iter()
                    .copied()
                    .filter(|g| self.groups[*g].space == s)
                    .collect();
                if sp.is_empty() {
                    pt.matches
                        .iter()
                        .copied()
                        .filter(|g| self.groups[*g].space == s)
                        .take(1)
                        .collect()
                } else {
                    sp
                }
            };
            allowed.sort_by_key(|d| {
                (
                    rank_groups
                        .iter()
                        .map(|g| self.groups[*g].count(*d))
                        .sum::<i64>(),
                    *d,
                )
            });
            out.push((s, allowed));
        }
        Ok(out)
    }

    /// Cheap, allocation-free rejection of a claim/node for hostname-keyed terms and for terms
    /// whose domain the claim already pins (`pinned(space)` gives it). `false` means "maybe".
    pub fn quick_reject(
        &self,
        pod: usize,
        active: &Active<'_>,
        node: u32,
        pinned: impl Fn(&Space) -> Option<u32>,
    ) -> bool {
        let dom = |g: &Group| {
            let s = &self.spaces[g.space];
            if s.hostname { Some(node) } else { pinned(s) }
        };
        let pt = &self.pods[pod];
        for &g in active.anti {
            let grp = &self.groups[g];
            if let Some(d) = dom(grp)
                && grp.count(d) > 0
            {
                return true;
            }
        }
        for &g in &pt.matches {
            let grp = &self.groups[g];
            if grp.kind == Kind::Anti
                && let Some(d) = dom(grp)
                && grp.owner(d) > 0
            {
                return true;
            }
        }
        for &g in active.spread {
            let grp = &self.groups[g];
            if let Kind::Spread { max_skew, .. } = grp.kind
                && self.spaces[grp.space].hostname
            {
                let me = i64::from(pt.matches.binary_search(&g).is_ok());
                if grp.count(node) + me > max_skew {
                    return true;
                }
            }
        }
        false
    }

    /// Moves one counted pod (or, with `owner`, one anti-affinity owner) of group `g` from
    /// domain `from` to domain `to` (the optimiser moving a pod between nodes).
    pub fn move_count(&mut self, g: usize, from: u32, to: u32, owner: bool) {
        let grp = &mut self.groups[g];
        let v = if owner {
            &mut grp.owners
        } else {
            &mut grp.counts
        };
        bump(v, from, -1);
        bump(v, to, 1);
    }

    /// Records `pod` placed into `domains` (one domain per space; missing = not counted).
    pub fn record(&mut self, pod: usize, owned: &[usize], domains: &[(usize, u32)]) {
        let dom = |s: usize| domains.iter().find(|(sp, _)| *sp == s).map(|(_, d)| *d);
        for i in 0..self.pods[pod].matches.len() {
            let g = self.pods[pod].matches[i];
            if let Some(d) = dom(self.groups[g].space) {
                bump(&mut self.groups[g].counts, d, 1);
                self.groups[g].total += 1;
            }
        }
        for &g in owned {
            if let Some(d) = dom(self.groups[g].space) {
                bump(&mut self.groups[g].owners, d, 1);
            }
        }
    }
}
