//! Which open claims the first-fit scan needs to look at for one pod.
//!
//! A pod with hostname anti-affinity (or hostname spread) is rejected by every claim that
//! already holds a pod of its group; at 100 000 pods that is thousands of claims scanned per
//! pod, quadratic overall. During the greedy pass group counts only grow, so once a claim
//! rejects such a term it rejects it for good: per term, the claims that do not reject it yet
//! are kept, and the scan visits only those. The rejections skipped are exactly
//! [`Topology::quick_reject`]'s hostname tests, so placements do not change.

use std::collections::HashMap;

use super::claim::Claim;
use super::topology::{Active, Kind, Topology};

/// A hostname term that rejects a claim whose node has `value >= at` (value: the group's
/// count, or with `owner` its anti-affinity owners, on that node).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Term {
    group: usize,
    owner: bool,
    at: i64,
}

impl Term {
    fn rejects(&self, topo: &Topology, node: u32) -> bool {
        let g = &topo.groups[self.group];
        let v = if self.owner {
            g.owner(node)
        } else {
            g.count(node)
        };
        v >= self.at
    }
}

/// The hostname terms of `pod`'s attempt, as [`Topology::quick_reject`] tests them.
pub(crate) fn hostname_terms(topo: &Topology, pod: usize, active: &Active<'_>) -> Vec<Term> {
    let hostname = |g: usize| topo.spaces[topo.groups[g].space].hostname;
    let pt = &topo.pods[pod];
    let mut out = Vec::new();
    for &g in active.anti {
        if hostname(g) {
            out.push(Term {
                group: g,
                owner: false,
                at: 1,
            });
        }
    }
    for &g in &pt.matches {
        if topo.groups[g].kind == Kind::Anti && hostname(g) {
            out.push(Term {
                group: g,
                owner: true,
                at: 1,
            });
        }
    }
    for &g in active.spread {
        if let Kind::Spread { max_skew, .. } = topo.groups[g].kind
            && hostname(g)
        {
            let me = i64::from(pt.matches.binary_search(&g).is_ok());
            out.push(Term {
                group: g,
                owner: false,
                at: max_skew - me + 1,
            });
        }
    }
    out
}

/// Per term, the claims that do not reject it yet, ascending. Valid only while group counts
/// never decrease (the greedy pass; the optimiser, which moves pods, does not use it): a claim
/// that rejects a term once rejects it for good, so each claim is dropped at most once.
#[derive(Debug, Default, Clone)]
pub(crate) struct Skips {
    terms: HashMap<Term, Free>,
}

#[derive(Debug, Default, Clone)]
struct Free {
    /// Claims looked at so far.
    seen: usize,
    /// Those of them that do not reject the term.
    free: Vec<usize>,
}

impl Skips {
    /// The only claims that can take a pod with `terms` (ascending), or None when `terms` is
    /// empty (every claim can).
    pub fn candidates(
        &mut self,
        topo: &Topology,
        claims: &[Claim],
        terms: &[Term],
    ) -> Option<Vec<usize>> {
        let mut best: Option<&Vec<usize>> = None;
        for t in terms {
            let f = self.terms.entry(*t).or_default();
            f.free.retain(|&c| !t.rejects(topo, claims[c].node));
            f.free
                .extend((f.seen..claims.len()).filter(|&c| !t.rejects(topo, claims[c].node)));
            f.seen = claims.len();
        }
        for t in terms {
            let f = &self.terms[t].free;
            if best.is_none_or(|b| f.len() < b.len()) {
                best = Some(f);
            }
        }
        best.cloned()
    }
}
