//! Post-greedy improvement, deterministic and constraint-preserving.
//!
//! The greedy pass decides *which* pods can share and pins every topology domain; this pass
//! only rearranges pods between claims of the same NodePool through checked single-pod moves
//! (see [`state`]), so requirements, taints, host ports, limits and topology counts stay
//! valid by construction. Every committed step strictly lowers the plan's price:
//! 1. [`single`]: a claim whose pods are cheaper each on its own node is split per pod;
//! 2. [`repack`]: a pool's topology-free pods are re-packed onto nodes that balance cpu and
//!    memory;
//! 3. [`evacuate`]: claims shed pods into the slack other claims already pay for;
//! 4. [`split`]: a claim is split into cheaper types (a 16-vCPU node into 8 + 4).
//!
//! Rounds repeat while they gain, within a work budget proportional to the input, so a huge
//! input degrades to "less improved", never to "slow".

mod evacuate;
mod repack;
mod single;
mod split;
mod state;

use crate::scheduling::Scheduler;

use state::Opt;

/// Price differences below this are ties (prices are floats summed in different orders).
pub(crate) const EPS: f64 = 1e-9;

/// Rounds of evacuate + split at most.
const ROUNDS: usize = 3;

/// Total price of the claims.
fn total(s: &Scheduler<'_>, o: &Opt) -> f64 {
    (0..s.claims.len()).map(|c| o.cost(s, c)).sum()
}

/// Improves the greedy packing in place.
pub(crate) fn improve(s: &mut Scheduler<'_>) {
    single::split_claims(s);
    let work = 64 * (s.prep.pods.len() as i64 + s.claims.len() as i64) + 100_000;
    let mut o = Opt::new(s, work);
    let mut before = total(s, &o);
    for _ in 0..ROUNDS {
        repack::run(s, &mut o);
        evacuate::run(s, &mut o);
        split::run(s, &mut o);
        let after = total(s, &o);
        if after >= before - EPS || o.budget <= 0 {
            break;
        }
        before = after;
    }
    // Widest requirements each claim's pods allow: the plan then sees every offering.
    for c in 0..s.claims.len() {
        o.refresh(s, c, true);
    }
}
