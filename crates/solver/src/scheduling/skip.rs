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

/// Per term, a superset of the claims that do not reject it yet, ascending. Valid only while
/// group counts never decrease (the greedy pass; the optimiser, which moves pods, does not use
/// it): a claim that rejects a term once rejects it for good, and a claim that left `open`
/// never returns, so either is dropped from a list for good when a scan meets it.
///
/// Lists are pruned lazily, only as far as a scan gets: first fit usually stops early, and
/// pruning or copying a whole list per pod was quadratic (at 100 000 pods, most claims are
/// still free of any one anti-affinity group).
#[derive(Debug, Default, Clone)]
pub(crate) struct Skips {
    terms: HashMap<Term, Free>,
}

#[derive(Debug, Default, Clone)]
struct Free {
    /// Claims looked at so far.
    seen: usize,
    /// Those of them not yet found to reject the term or to have left `open`.
    free: Vec<usize>,
}

/// The claims one scan visits: a term's list, taken out of [`Skips`] while the scheduler
/// mutates itself, and given back by [`Skips::give_back`].
#[derive(Debug)]
pub(crate) struct Candidates {
    term: Term,
    list: Vec<usize>,
    /// Entries `[..kept]` were visited and stay; `[next..]` were not visited yet.
    kept: usize,
    next: usize,
}

impl Candidates {
    /// The next claim that does not reject the term (ascending), or None at the end.
    pub fn next(&mut self, topo: &Topology, claims: &[Claim]) -> Option<usize> {
        while self.next < self.list.len() {
            let c = self.list[self.next];
            self.next += 1;
            if !self.term.rejects(topo, claims[c].node) {
                return Some(c);
            }
        }
        None
    }

    /// Keeps the claim [`Candidates::next`] returned last (it is still open).
    pub fn keep(&mut self) {
        self.list[self.kept] = self.list[self.next - 1];
        self.kept += 1;
    }
}

impl Skips {
    /// The scan over the claims that can take a pod with `terms`, or None when `terms` is
    /// empty (every claim can). The term with the shortest list is scanned: the others'
    /// rejections are [`Topology::quick_reject`]'s anyway, so any list gives the same first fit.
    pub fn candidates(
        &mut self,
        topo: &Topology,
        claims: &[Claim],
        terms: &[Term],
    ) -> Option<Candidates> {
        let unseen = |f: &Free| claims.len() - f.seen;
        let term = *terms.iter().min_by_key(|t| {
            self.terms
                .get(t)
                .map_or(claims.len(), |f| f.free.len() + unseen(f))
        })?;
        let f = self.terms.entry(term).or_default();
        let mut list = std::mem::take(&mut f.free);
        list.extend((f.seen..claims.len()).filter(|&c| !term.rejects(topo, claims[c].node)));
        f.seen = claims.len();
        Some(Candidates {
            term,
            list,
            kept: 0,
            next: 0,
        })
    }

    /// Stores a scan's list back: what it kept, then what it did not visit.
    pub fn give_back(&mut self, mut scan: Candidates) {
        scan.list.drain(scan.kept..scan.next);
        if let Some(f) = self.terms.get_mut(&scan.term) {
            f.free = scan.list;
        }
    }
}
