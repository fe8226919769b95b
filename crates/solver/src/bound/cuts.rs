//! Integrality cuts and combinatorial bounds: statements about whole nodes that the LP
//! relaxation, which lets pods buy fractions of nodes, does not know.
//!
//! Notation: a *column* is a (NodePool, instance type, offering); C_S = the columns able to host
//! at least one group of S; cap_g(o) = how many pods of group g fit on one node of column o
//! (min over requested resources of ⌊alloc/req⌋, and at most 1 when g has self anti-affinity on
//! hostname); cap_g = max_o cap_g(o); p_g = the cheapest column hosting g.
//!
//! Proofs (every fleet F that hosts the pods, counted as n_o nodes per column):
//! - **Cover cut** for one group g: each pod of g sits on a node of some column in C_{g}, and
//!   such a node holds at most cap_g pods of g, so Σ_{o∈C_{g}} n_o ≥ ⌈count_g / cap_g⌉.
//! - **Clique cut** for a set S of groups that pairwise cannot share a node (on every column
//!   able to host both: their requests together exceed the allocatable of some resource, or
//!   they are in the same self-anti-affinity group) and each with cap_g = 1: no node holds two
//!   of these pods, so Σ_{o∈C_S} n_o ≥ Σ_{g∈S} count_g.
//! - **Combinatorial**: the nodes of the cover cut each cost ≥ p_g, so price(F) ≥
//!   ⌈count_g / cap_g⌉ · p_g; the pods of a clique sit on distinct nodes, the one holding a
//!   pod of g costing ≥ p_g, so price(F) ≥ Σ_{g∈S} count_g · p_g. Any single pod needs a node,
//!   so the bound is never below the cheapest offering fitting the hardest pod.

use super::Group;
use super::lp::Col;

/// Seeds tried when growing cliques (largest weight first).
const MAX_CLIQUE_SEEDS: usize = 16;
/// Groups considered for cliques: pairwise checks cost (groups² × columns).
const MAX_CLIQUE_GROUPS: usize = 64;

/// A node-count cut: Σ over the columns hosting any of `groups` of n_o ≥ `rhs`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cut {
    /// Ascending group indices defining the column set.
    pub groups: Vec<usize>,
    /// Whole nodes needed.
    pub rhs: f64,
}

/// Per group: pods per node of its best column, and its cheapest column's price.
pub(crate) struct GroupFacts {
    pub cap: Vec<f64>,
    pub min_price: Vec<f64>,
}

/// Pods of group `g` that fit on one node of `col` (the `pods` resource keeps this finite).
pub(super) fn cap_on(g: &Group, col: &Col, requested: &[bool]) -> f64 {
    let mut cap = f64::INFINITY;
    for (r, req) in g.req.iter().enumerate() {
        if requested[r] && *req > 0.0 {
            cap = cap.min((col.alloc[r] / req).floor());
        }
    }
    if g.anti.is_some() {
        cap = cap.min(1.0);
    }
    cap
}

impl GroupFacts {
    /// Computed over *all* columns (before pruning): the cuts' right-hand sides must hold for
    /// every fleet, not only for the columns the LP keeps.
    pub fn new(cols: &[Col], compat: &[Vec<usize>], groups: &[Group], requested: &[bool]) -> Self {
        let mut cap = vec![0.0f64; groups.len()];
        let mut min_price = vec![f64::INFINITY; groups.len()];
        for (col, cg) in cols.iter().zip(compat) {
            for &g in cg {
                cap[g] = cap[g].max(cap_on(&groups[g], col, requested));
                min_price[g] = min_price[g].min(col.price);
            }
        }
        GroupFacts { cap, min_price }
    }

    fn hosted(&self, g: usize) -> bool {
        self.min_price[g].is_finite() && self.cap[g] >= 1.0 && self.cap[g].is_finite()
    }

    fn cover_rhs(&self, groups: &[Group], g: usize) -> f64 {
        (groups[g].count / self.cap[g] - 1e-9).ceil().max(1.0)
    }
}

/// Whether a pod of `g` and a pod of `h` can never share a node.
fn conflict(
    g: usize,
    h: usize,
    cols: &[Col],
    compat: &[Vec<usize>],
    groups: &[Group],
    requested: &[bool],
) -> bool {
    let (a, b) = (&groups[g], &groups[h]);
    if a.anti.is_some() && a.anti == b.anti {
        return true;
    }
    cols.iter().zip(compat).all(|(col, cg)| {
        !(cg.contains(&g) && cg.contains(&h))
            || (0..requested.len()).any(|r| requested[r] && a.req[r] + b.req[r] > col.alloc[r])
    })
}

/// Candidate cuts: a cover cut per hosted group, and greedy cliques among the groups no node
/// can hold two pods of.
pub(crate) fn candidates(
    cols: &[Col],
    compat: &[Vec<usize>],
    groups: &[Group],
    facts: &GroupFacts,
    requested: &[bool],
) -> Vec<Cut> {
    let mut out: Vec<Cut> = (0..groups.len())
        .filter(|g| facts.hosted(*g))
        .map(|g| Cut {
            groups: vec![g],
            rhs: facts.cover_rhs(groups, g),
        })
        .collect();
    let mut big: Vec<usize> = (0..groups.len())
        .filter(|g| facts.hosted(*g) && facts.cap[*g] <= 1.0)
        .collect();
    let weight = |g: usize| groups[g].count * facts.min_price[g];
    big.sort_by(|a, b| weight(*b).total_cmp(&weight(*a)).then(a.cmp(b)));
    big.truncate(MAX_CLIQUE_GROUPS);
    let n = big.len();
    let mut adj = vec![vec![false; n]; n];
    for i in 0..n {
        for j in i + 1..n {
            let c = conflict(big[i], big[j], cols, compat, groups, requested);
            adj[i][j] = c;
            adj[j][i] = c;
        }
    }
    for seed in 0..n.min(MAX_CLIQUE_SEEDS) {
        let mut members = vec![seed];
        for j in (0..n).filter(|j| *j != seed) {
            if members.iter().all(|m| adj[*m][j]) {
                members.push(j);
            }
        }
        if members.len() < 2 {
            continue;
        }
        let mut gs: Vec<usize> = members.iter().map(|m| big[*m]).collect();
        gs.sort_unstable();
        let rhs = gs.iter().map(|g| groups[*g].count).sum();
        let cut = Cut { groups: gs, rhs };
        if !out.contains(&cut) {
            out.push(cut);
        }
    }
    out
}

/// The best purely combinatorial bound over the candidate cuts (see the module docs).
pub(crate) fn combinatorial(groups: &[Group], facts: &GroupFacts, cuts: &[Cut]) -> f64 {
    let mut best = 0.0f64;
    for c in cuts {
        let v = match c.groups.as_slice() {
            [g] => facts.cover_rhs(groups, *g) * facts.min_price[*g],
            gs => gs
                .iter()
                .map(|g| groups[*g].count * facts.min_price[*g])
                .sum(),
        };
        best = best.max(v);
    }
    best
}
