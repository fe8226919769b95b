//! Moving pods into the slack other claims already pay for.
//!
//! The greedy leaves rounding slack on most nodes (a node is bought in whole instance types),
//! and nodes forced apart by anti-affinity or hostname spread are often nearly empty. A donor
//! claim hands its pods, largest first, to receivers that can take them *without* a price
//! increase; the donor only ever gets cheaper (or disappears). Each donor keeps the prefix of
//! its moves up to its last price drop and undoes the rest, so every committed step strictly
//! lowers the total and churn that buys nothing is rolled back.

use std::collections::{BTreeSet, HashMap};

use crate::scheduling::{Place, Scheduler};

use super::EPS;
use super::state::{MoveFit, Opt};

/// How many receivers a pod is checked against (beyond the cheap headroom filter).
const TRIES_PER_POD: usize = 48;

/// Movable pods of claim `c`, largest first (cpu, memory, then key for determinism).
pub(crate) fn movable_pods(s: &Scheduler<'_>, o: &Opt, c: usize) -> Vec<usize> {
    let mut v: Vec<usize> = s.claims[c]
        .pods
        .iter()
        .copied()
        .filter(|x| o.movable[*x])
        .collect();
    v.sort_by(|a, b| {
        let (x, y) = (&s.prep.pods[*a], &s.prep.pods[*b]);
        y.requests[0]
            .cmp(&x.requests[0])
            .then_with(|| y.requests[1].cmp(&x.requests[1]))
            .then_with(|| x.key.cmp(&y.key))
    });
    v
}

/// Headroom of claim `c` within the types no dearer than its current price (an optimistic
/// filter: the exact check is [`Opt::can_move`]).
fn room(s: &Scheduler<'_>, o: &Opt, c: usize) -> Vec<i64> {
    let r = s.prep.res.len();
    let claim = &s.claims[c];
    let Some(p) = o.price(s, c) else {
        return vec![i64::MIN; r];
    };
    let pool = &s.prep.pools[claim.pool];
    let mut m = vec![i64::MIN; r];
    for (pr, j) in o.ladder[c].iter() {
        if *pr > p + EPS {
            break;
        }
        if Opt::fits(s, c, *j, &claim.used) {
            for (x, a) in m.iter_mut().zip(&pool.eff_alloc[*j as usize]) {
                *x = (*x).max(*a);
            }
        }
    }
    m.iter().zip(&claim.used).map(|(a, u)| a - u).collect()
}

fn fits(req: &[i64], room: &[i64]) -> bool {
    req.iter().zip(room).all(|(q, r)| q <= r)
}

/// Receivers and their headroom for one pass, per pool ordered by cpu headroom so a pod is
/// offered to the tightest receivers first (best fit on the first resource).
struct Receivers {
    by_pool: Vec<BTreeSet<(i64, usize)>>,
    room: Vec<Vec<i64>>,
    /// Element-wise smallest movable request: a receiver with less room is dropped.
    min_req: Vec<i64>,
    /// Per pod class: requests that found no receiver in this pass. A pod of the same class
    /// asking for at least as much is not tried again (receivers only fill up meanwhile, but
    /// for the donors; missing such a chance costs quality, never validity).
    failed: HashMap<u32, Vec<Vec<i64>>>,
}

impl Receivers {
    fn new(s: &Scheduler<'_>, o: &Opt, min_req: Vec<i64>) -> Self {
        let mut rc = Receivers {
            by_pool: vec![BTreeSet::new(); s.prep.pools.len()],
            room: Vec::new(),
            min_req,
            failed: HashMap::new(),
        };
        for c in 0..s.claims.len() {
            rc.update(s, o, c);
        }
        rc
    }

    /// Re-derives claim `c`'s headroom after a change.
    fn update(&mut self, s: &Scheduler<'_>, o: &Opt, c: usize) {
        while self.room.len() <= c {
            self.room.push(vec![i64::MIN; s.prep.res.len()]);
        }
        let set = &mut self.by_pool[s.claims[c].pool];
        set.remove(&(self.room[c][0], c));
        self.room[c] = room(s, o, c);
        if fits(&self.min_req, &self.room[c]) {
            set.insert((self.room[c][0], c));
        }
    }

    /// The first receiver (in headroom order) that takes pod `x` without a price increase.
    fn find(&self, s: &Scheduler<'_>, o: &mut Opt, x: usize, d: usize) -> Option<(usize, MoveFit)> {
        let req = &s.prep.pods[x].requests;
        let set = &self.by_pool[s.claims[d].pool];
        let mut tries = 0;
        for &(_, r) in set.range((req[0], 0)..) {
            o.budget -= 1;
            if r == d || !fits(req, &self.room[r]) {
                continue;
            }
            tries += 1;
            if tries > TRIES_PER_POD || o.budget <= 0 {
                return None;
            }
            if let Some(f) = o.can_move(s, x, r)
                && f.price <= o.cost(s, r) + EPS
            {
                return Some((r, f));
            }
        }
        None
    }
}

/// One donor: move its movable pods into receivers' slack, keep the moves up to the last
/// price drop. With `must_empty` (claims holding only movable pods), stop at the first pod
/// that finds no home.
fn evacuate(s: &mut Scheduler<'_>, o: &mut Opt, rc: &mut Receivers, d: usize, must_empty: bool) {
    let p0 = o.cost(s, d);
    let pods = movable_pods(s, o, d);
    if pods.is_empty() || (must_empty && pods.len() != s.claims[d].pods.len()) {
        return;
    }
    let mut journal: Vec<usize> = Vec::new();
    let mut best = (p0, 0usize);
    for x in pods {
        if o.budget <= 0 {
            break;
        }
        let req = &s.prep.pods[x].requests;
        let class = o.class[x];
        let known_bad = rc
            .failed
            .get(&class)
            .is_some_and(|v| v.iter().any(|f| fits(f, req)));
        let target = if known_bad { None } else { rc.find(s, o, x, d) };
        let Some((r, f)) = target else {
            if !known_bad {
                let v = rc.failed.entry(class).or_default();
                if v.len() < 8 {
                    v.push(req.clone());
                }
            }
            if must_empty {
                break;
            }
            continue;
        };
        o.apply(s, x, r, f.reqs);
        rc.update(s, o, r);
        rc.update(s, o, d);
        journal.push(x);
        let c = o.cost(s, d);
        if c < best.0 - EPS {
            best = (c, journal.len());
        }
    }
    for &x in journal[best.1..].iter().rev() {
        let Place::Claim(r) = s.placement[x] else {
            continue;
        };
        o.undo(s, x, d);
        rc.update(s, o, r);
        rc.update(s, o, d);
    }
}

/// Runs both evacuation passes: first the dearest claims shed pods into everyone's slack,
/// then claims are emptied, cheapest first (whole nodes go).
pub(crate) fn run(s: &mut Scheduler<'_>, o: &mut Opt) {
    let r = s.prep.res.len();
    let mut min_req = vec![i64::MAX; r];
    for (x, info) in s.prep.pods.iter().enumerate() {
        if o.movable[x] {
            for (m, q) in min_req.iter_mut().zip(&info.requests) {
                *m = (*m).min(*q);
            }
        }
    }
    let mut order: Vec<(f64, usize)> = (0..s.claims.len())
        .filter(|c| !s.claims[*c].pods.is_empty())
        .map(|c| (o.cost(s, c), c))
        .collect();
    order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut rc = Receivers::new(s, o, min_req.clone());
    for &(_, d) in order.iter().rev() {
        if o.budget <= 0 {
            return;
        }
        if !s.claims[d].pods.is_empty() {
            evacuate(s, o, &mut rc, d, false);
        }
    }
    let mut rc = Receivers::new(s, o, min_req);
    for &(_, d) in &order {
        if o.budget <= 0 {
            return;
        }
        if !s.claims[d].pods.is_empty() {
            evacuate(s, o, &mut rc, d, true);
        }
    }
}
