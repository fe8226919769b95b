//! The optimiser's view of the greedy state: which pods may move, the price ladder of each
//! claim, and single-pod moves that keep every constraint.
//!
//! A move keeps a pod's non-hostname topology domains (zone, capacity type, ...): the receiving
//! claim is pinned to the same values, so every spread/affinity/anti-affinity count outside the
//! hostname key is unchanged. Hostname counts do change, so a move is checked against the
//! receiving node exactly as a new placement would be, plus the spread constraints of the pods
//! already there (so no pod's constraint becomes violated). Pods involved in hostname
//! *affinity* never move: their partner must stay on the same node.

use std::cell::Cell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::requirements::{Requirement, Requirements};
use crate::scheduling::prepare::{it_conflict, offering_index};
use crate::scheduling::reqs_compatible;
use crate::scheduling::topology::Kind;
use crate::scheduling::{Place, Scheduler};

/// Instance types of a pool compatible with some requirements: (price, position in pool.its),
/// cheapest first (ties by name, as the plan chooses).
pub(crate) type Ladder = Rc<Vec<(f64, u32)>>;

/// A validated move's effect on the receiving claim.
pub(crate) struct MoveFit {
    /// Receiver requirements after the move.
    pub reqs: Requirements,
    /// Receiver price after the move.
    pub price: f64,
}

/// Optimiser bookkeeping over a [`Scheduler`].
pub(crate) struct Opt {
    ladders: HashMap<(usize, Requirements), Ladder>,
    /// Per claim: its ladder (parallel to `s.claims`).
    pub ladder: Vec<Ladder>,
    /// Per claim: cached price (NaN = stale, negative = empty or unlaunchable). Claims' `its`
    /// are only re-derived at the end; while moving pods only prices matter.
    prices: Vec<Cell<f64>>,
    /// Per pod: may the optimiser move it at all.
    pub movable: Vec<bool>,
    /// (hostname spread group, node) → pods on that node constrained by the group.
    spread_on: HashMap<(usize, u32), i64>,
    /// Work left (candidate checks); bounds the optimiser on huge inputs, deterministically.
    pub budget: i64,
    /// Per pod: its class (same requirements, pins, topology terms and ports). Pods of one
    /// class are interchangeable for every check but resources.
    pub class: Vec<u32>,
}

/// Whether the topology space of group `g` is the hostname.
fn host(s: &Scheduler<'_>, g: usize) -> bool {
    s.topo.spaces[s.topo.groups[g].space].hostname
}

impl Opt {
    /// Indexes the greedy result.
    pub fn new(s: &Scheduler<'_>, budget: i64) -> Self {
        let mut o = Opt {
            ladders: HashMap::new(),
            ladder: Vec::new(),
            prices: Vec::new(),
            movable: vec![false; s.prep.pods.len()],
            spread_on: HashMap::new(),
            budget,
            class: Vec::new(),
        };
        o.class = classes(s);
        for (x, m) in o.movable.iter_mut().enumerate() {
            *m = matches!(s.placement[x], Place::Claim(_)) && Self::may_move(s, x);
        }
        for c in 0..s.claims.len() {
            let l = o.ladder_for(s, s.claims[c].pool, &s.claims[c].reqs);
            o.ladder.push(l);
            o.prices.push(Cell::new(f64::NAN));
            for &x in &s.claims[c].pods {
                o.track_spread(s, x, s.claims[c].node, 1);
            }
        }
        o
    }

    fn may_move(s: &Scheduler<'_>, x: usize) -> bool {
        let pt = &s.topo.pods[x];
        let host_affinity = pt.affinity.iter().any(|(g, _)| host(s, *g))
            || pt
                .matches
                .iter()
                .any(|g| s.topo.groups[*g].kind == Kind::Affinity && host(s, *g));
        if host_affinity || s.placed_reqs[x].is_none() {
            return false;
        }
        // A move narrows the receiver's instance types; the moves do not re-check minValues,
        // so claims of pools with minValues keep the greedy result (which checked it).
        if let Place::Claim(c) = s.placement[x]
            && !s.prep.pools[s.claims[c].pool].min_values.is_empty()
        {
            return false;
        }
        // Every space the pod takes part in must have a recorded domain, or a move could
        // silently change what it is counted in.
        let involved = pt
            .spread
            .iter()
            .map(|(g, _)| *g)
            .chain(pt.affinity.iter().map(|(g, _)| *g))
            .chain(pt.anti.iter().map(|(g, _)| *g))
            .chain(pt.matches.iter().copied())
            .chain(s.owned[x].iter().copied());
        let mut ok = true;
        for g in involved {
            let sp = s.topo.groups[g].space;
            ok &= s.domains[x].iter().any(|(d, _)| *d == sp);
        }
        ok
    }

    fn track_spread(&mut self, s: &Scheduler<'_>, x: usize, node: u32, by: i64) {
        for (g, _) in &s.topo.pods[x].spread {
            if host(s, *g) {
                *self.spread_on.entry((*g, node)).or_default() += by;
            }
        }
    }

    /// The price ladder of pool `pool_i` under `reqs` (cached).
    pub fn ladder_for(&mut self, s: &Scheduler<'_>, pool_i: usize, reqs: &Requirements) -> Ladder {
        if let Some(l) = self.ladders.get(&(pool_i, reqs.clone())) {
            return l.clone();
        }
        let pool = &s.prep.pools[pool_i];
        let mut v: Vec<(f64, u32)> = Vec::new();
        for (j, &ci) in pool.its.iter().enumerate() {
            let offs = &s.p.instance_types[ci].offerings;
            if it_conflict(&s.prep.its[ci], offs, reqs, &pool.reqs).is_some() {
                continue;
            }
            if let Some(o) = offering_index(offs, reqs) {
                v.push((offs[o].price, j as u32));
            }
        }
        v.sort_by(|a, b| {
            a.0.total_cmp(&b.0).then_with(|| {
                let name = |j: u32| &s.p.instance_types[pool.its[j as usize]].name;
                name(a.1).cmp(name(b.1))
            })
        });
        let l = Rc::new(v);
        self.ladders.insert((pool_i, reqs.clone()), l.clone());
        l
    }

    /// Whether claim `c` with `used` requests and extra host ports fits type position `j`.
    pub fn fits(s: &Scheduler<'_>, c: usize, j: u32, used: &[i64]) -> bool {
        let claim = &s.claims[c];
        let pool = &s.prep.pools[claim.pool];
        let ju = j as usize;
        if !used.iter().zip(&pool.eff_alloc[ju]).all(|(u, a)| u <= a) {
            return false;
        }
        if pool.remaining.is_some()
            && !s.prep.its[pool.its[ju]]
                .capacity
                .iter()
                .zip(&s.claim_cap[c])
                .all(|(x, cap)| x <= cap)
        {
            return false;
        }
        claim.ports.is_empty()
            || !pool.ds_ports[ju]
                .iter()
                .any(|d| claim.ports.iter().any(|p| p.conflicts(d)))
    }

    /// Cheapest price of claim `c` as it stands (None when empty or unlaunchable).
    pub fn price(&self, s: &Scheduler<'_>, c: usize) -> Option<f64> {
        let cached = self.prices[c].get();
        if !cached.is_nan() {
            return (cached >= 0.0).then_some(cached);
        }
        let claim = &s.claims[c];
        let p = if claim.pods.is_empty() {
            None
        } else {
            self.ladder[c]
                .iter()
                .find(|(_, j)| Self::fits(s, c, *j, &claim.used))
                .map(|(p, _)| *p)
        };
        self.prices[c].set(p.unwrap_or(-1.0));
        p
    }

    fn touch(&self, c: usize) {
        self.prices[c].set(f64::NAN);
    }

    /// Price of a claim, 0 when empty (what it adds to the plan).
    pub fn cost(&self, s: &Scheduler<'_>, c: usize) -> f64 {
        self.price(s, c).unwrap_or(0.0)
    }

    /// Requirements of claim `c` rebuilt from its pods (pool ∩ placed requirements ∩ pins):
    /// wider than the greedy's once pods have left.
    pub fn rebuild_reqs(s: &Scheduler<'_>, c: usize) -> Requirements {
        let claim = &s.claims[c];
        let mut r = s.prep.pools[claim.pool].reqs.clone();
        for &x in &claim.pods {
            if let Some(pr) = &s.placed_reqs[x] {
                r.add_all(pr);
            }
            pin_domains(s, x, &mut r);
        }
        r
    }

    /// Re-derives claim `c`'s instance types after a change (every fitting type within its
    /// limit share, so the plan can pick the cheapest and list all options).
    pub fn refresh(&mut self, s: &mut Scheduler<'_>, c: usize, rebuild: bool) {
        if rebuild {
            let r = Self::rebuild_reqs(s, c);
            if r != s.claims[c].reqs {
                self.ladder[c] = self.ladder_for(s, s.claims[c].pool, &r);
                s.claims[c].reqs = r;
                self.touch(c);
            }
        }
        let its: Vec<u32> = if s.claims[c].pods.is_empty() {
            Vec::new()
        } else {
            let mut v: Vec<u32> = self.ladder[c]
                .iter()
                .filter(|(_, j)| Self::fits(s, c, *j, &s.claims[c].used))
                .map(|(_, j)| *j)
                .collect();
            v.sort_unstable();
            v
        };
        let pool = &s.prep.pools[s.claims[c].pool];
        if !s.claims[c].pods.is_empty() && !s.min_values_ok(pool, &its, &s.claims[c].reqs) {
            // Keep the options the greedy pass checked rather than lose minValues.
            return;
        }
        s.claims[c].max_eff = crate::scheduling::max_eff(pool, &its, s.prep.res.len());
        s.claims[c].its = its;
    }

    /// Checks moving pod `x` (on a claim) to claim `b`; returns the receiver's new state.
    pub fn can_move(&mut self, s: &Scheduler<'_>, x: usize, b: usize) -> Option<MoveFit> {
        self.budget -= 1;
        let Place::Claim(a) = s.placement[x] else {
            return None;
        };
        let cb = &s.claims[b];
        if a == b || !self.movable[x] || cb.pool != s.claims[a].pool {
            return None;
        }
        let info = &s.prep.pods[x];
        let total: Vec<i64> = cb
            .used
            .iter()
            .zip(&info.requests)
            .map(|(u, r)| u + r)
            .collect();
        let src = &s.p.pods[info.src];
        if src
            .host_ports
            .iter()
            .any(|h| cb.ports.iter().any(|q| q.conflicts(h)))
        {
            return None;
        }
        if !self.host_ok(s, x, cb.node) {
            return None;
        }
        let pool = &s.prep.pools[cb.pool];
        let pr = s.placed_reqs[x].as_ref()?;
        if !reqs_compatible(pool, &cb.reqs, pr) {
            return None;
        }
        let mut reqs = cb.reqs.intersect(pr);
        pin_domains(s, x, &mut reqs);
        if reqs.is_unsatisfiable() {
            return None;
        }
        let ladder = if reqs == cb.reqs {
            self.ladder[b].clone()
        } else {
            self.ladder_for(s, cb.pool, &reqs)
        };
        let ports = &src.host_ports;
        let price = ladder.iter().find(|(_, j)| {
            Self::fits(s, b, *j, &total)
                && (ports.is_empty()
                    || !pool.ds_ports[*j as usize]
                        .iter()
                        .any(|d| ports.iter().any(|p| p.conflicts(d))))
        })?;
        Some(MoveFit {
            reqs,
            price: price.0,
        })
    }

    /// Hostname-keyed topology for `x` landing on node `node` (x is elsewhere now).
    fn host_ok(&self, s: &Scheduler<'_>, x: usize, node: u32) -> bool {
        let pt = &s.topo.pods[x];
        for &g in &pt.matches {
            if !host(s, g) {
                continue;
            }
            let grp = &s.topo.groups[g];
            match grp.kind {
                Kind::Anti if grp.owner(node) > 0 => return false,
                Kind::Spread { max_skew, .. }
                    if self.spread_on.get(&(g, node)).is_some_and(|n| *n > 0)
                        && grp.count(node) + 1 > max_skew =>
                {
                    return false;
                }
                _ => {}
            }
        }
        for (g, _) in &pt.spread {
            let grp = &s.topo.groups[*g];
            if let Kind::Spread { max_skew, .. } = grp.kind
                && host(s, *g)
            {
                let me = i64::from(pt.matches.binary_search(g).is_ok());
                if grp.count(node) + me > max_skew {
                    return false;
                }
            }
        }
        let anti = pt
            .anti
            .iter()
            .map(|(g, _)| *g)
            .chain(s.owned[x].iter().copied());
        for g in anti {
            if host(s, g) && s.topo.groups[g].count(node) > 0 {
                return false;
            }
        }
        true
    }

    /// Moves pod `x` to claim `b` with receiver requirements `reqs` (already validated, or the
    /// exact inverse of a validated move).
    pub fn apply(&mut self, s: &mut Scheduler<'_>, x: usize, b: usize, reqs: Requirements) {
        let Place::Claim(a) = s.placement[x] else {
            return;
        };
        let (na, nb) = (s.claims[a].node, s.claims[b].node);
        self.track_spread(s, x, na, -1);
        self.track_spread(s, x, nb, 1);
        let host_spaces: Vec<usize> = s.domains[x]
            .iter()
            .filter(|(sp, _)| s.topo.spaces[*sp].hostname)
            .map(|(sp, _)| *sp)
            .collect();
        for sp in host_spaces {
            let owned = s.owned[x].clone();
            for g in s.topo.pods[x].matches.clone() {
                if s.topo.groups[g].space == sp {
                    s.topo.move_count(g, na, nb, false);
                }
            }
            for g in owned {
                if s.topo.groups[g].space == sp {
                    s.topo.move_count(g, na, nb, true);
                }
            }
            for d in s.domains[x].iter_mut().filter(|(q, _)| *q == sp) {
                d.1 = nb;
            }
        }
        let problem = s.p;
        let req = s.prep.pods[x].requests.clone();
        let ports = &problem.pods[s.prep.pods[x].src].host_ports;
        {
            let ca = &mut s.claims[a];
            ca.pods.retain(|p| *p != x);
            ca.used.iter_mut().zip(&req).for_each(|(u, r)| *u -= r);
            for h in ports {
                if let Some(i) = ca.ports.iter().position(|q| q == h) {
                    ca.ports.remove(i);
                }
            }
        }
        if s.claims[b].pods.is_empty() {
            reserve(s, b);
        }
        {
            let cb = &mut s.claims[b];
            cb.pods.push(x);
            cb.used.iter_mut().zip(&req).for_each(|(u, r)| *u += r);
            cb.ports.extend(ports.iter().cloned());
        }
        if reqs != s.claims[b].reqs {
            self.ladder[b] = self.ladder_for(s, s.claims[b].pool, &reqs);
            s.claims[b].reqs = reqs;
        }
        s.placement[x] = Place::Claim(b);
        self.touch(a);
        self.touch(b);
        // Rebuilding requirements is linear in the claim's pods: only worth it for small ones
        // (a donor that shrinks may then use offerings a departed pod excluded).
        if s.claims[a].pods.len() <= 16 {
            let r = Self::rebuild_reqs(s, a);
            if r != s.claims[a].reqs {
                self.ladder[a] = self.ladder_for(s, s.claims[a].pool, &r);
                s.claims[a].reqs = r;
            }
        }
        if s.claims[a].pods.is_empty() {
            release(s, a);
            let pool = s.claims[a].pool;
            self.ladder[a] = self.ladder_for(s, pool, &s.prep.pools[pool].reqs.clone());
        }
    }

    /// Moves `x` back to claim `a` without re-validating (undoing an earlier valid move).
    pub fn undo(&mut self, s: &mut Scheduler<'_>, x: usize, a: usize) {
        let mut reqs = s.claims[a].reqs.clone();
        if let Some(pr) = &s.placed_reqs[x] {
            reqs.add_all(pr);
        }
        pin_domains(s, x, &mut reqs);
        self.apply(s, x, a, reqs);
    }

    /// Opens an empty claim in `pool_i` (charged against limits once a pod moves in); `None`
    /// when the pool's limits leave no room.
    pub fn open_empty(&mut self, s: &mut Scheduler<'_>, pool_i: usize) -> Option<usize> {
        if !s.nodes_left(pool_i) {
            return None;
        }
        let its = s.its_within_limits(pool_i);
        if its.is_empty() {
            return None;
        }
        let pool = &s.prep.pools[pool_i];
        let r = s.prep.res.len();
        let node = s.node_id_of_claim(s.claims.len());
        s.claims.push(crate::scheduling::Claim {
            pool: pool_i,
            node,
            reqs: pool.reqs.clone(),
            its: Vec::new(),
            used: vec![0; r],
            ports: Vec::new(),
            pods: Vec::new(),
            max_eff: crate::scheduling::max_eff(pool, &its, r),
        });
        // Its limit share is the largest type the limits allow, as the greedy charges a new
        // claim; it is charged when the first pod arrives (see `apply`).
        let cap = crate::scheduling::max_capacity(s.prep, pool, &its);
        s.claim_cap.push(cap);
        let c = s.claims.len() - 1;
        let l = self.ladder_for(s, pool_i, &s.prep.pools[pool_i].reqs.clone());
        self.ladder.push(l);
        self.prices.push(Cell::new(f64::NAN));
        Some(c)
    }

    /// Drops claim `c` if it is the last one and empty (a reverted trial claim).
    pub fn drop_if_last(&mut self, s: &mut Scheduler<'_>, c: usize) {
        if c + 1 == s.claims.len() && s.claims[c].pods.is_empty() {
            s.claims.pop();
            s.claim_cap.pop();
            self.ladder.pop();
            self.prices.pop();
        }
    }
}

/// Class ids of pods (see [`Opt::class`]).
fn classes(s: &Scheduler<'_>) -> Vec<u32> {
    type Key<'k> = (
        Option<&'k Requirements>,
        Vec<(usize, u32)>,
        &'k crate::scheduling::topology::PodTopo,
        &'k [usize],
        &'k [crate::model::HostPort],
    );
    let mut ids: HashMap<Key<'_>, u32> = HashMap::new();
    (0..s.prep.pods.len())
        .map(|x| {
            let pins: Vec<(usize, u32)> = s.domains[x]
                .iter()
                .copied()
                .filter(|(sp, _)| !s.topo.spaces[*sp].hostname)
                .collect();
            let key: Key<'_> = (
                s.placed_reqs[x].as_ref(),
                pins,
                &s.topo.pods[x],
                &s.owned[x],
                &s.p.pods[s.prep.pods[x].src].host_ports,
            );
            let n = ids.len() as u32;
            *ids.entry(key).or_insert(n)
        })
        .collect()
}

/// Pins `x`'s recorded non-hostname domains into `reqs` (so its counts stay where they are).
fn pin_domains(s: &Scheduler<'_>, x: usize, reqs: &mut Requirements) {
    for (sp, d) in &s.domains[x] {
        let space = &s.topo.spaces[*sp];
        if space.hostname {
            continue;
        }
        let v = &space.values[*d as usize];
        if reqs.get(&space.key).and_then(Requirement::single_value) != Some(v.as_str()) {
            reqs.add(&space.key, &Requirement::in_values([v]));
        }
    }
}

/// An emptied claim gives back its node count and limit share.
fn release(s: &mut Scheduler<'_>, c: usize) {
    let pool = s.claims[c].pool;
    if s.prep.pools[pool].remaining.is_some() {
        for (k, v) in s.committed[pool].iter_mut().zip(&s.claim_cap[c]) {
            *k -= v;
        }
    }
    s.claim_count[pool] -= 1;
    s.claims[c].reqs = s.prep.pools[pool].reqs.clone();
}

/// Charges an empty claim that is about to receive its first pod.
fn reserve(s: &mut Scheduler<'_>, c: usize) {
    let pool = s.claims[c].pool;
    if s.prep.pools[pool].remaining.is_some() {
        for (k, v) in s.committed[pool].iter_mut().zip(&s.claim_cap[c]) {
            *k += v;
        }
    }
    s.claim_count[pool] += 1;
}
