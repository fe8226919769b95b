//! Validating one planned command on a fresh view of the cluster (upstream's validation
//! pause, done per command rather than per plan).
//!
//! After the pause the cluster has moved on (pods terminated, other nodes emptied, other
//! commands started), so a fresh plan would often pick a different or larger set of nodes. That
//! does not make the planned command wrong: what matters is whether *this* command is still
//! safe and still saves money. Each candidate is checked again (still a candidate, still empty
//! for emptiness, still within budget); those that fail are dropped and the rest may still go.
//! A consolidation is simulated again with exactly its remaining candidates and must still
//! place every pod with no new node or one strictly cheaper one; if it does not, the longest
//! prefix of its candidates (they are in the planner's ranking order) that does is kept.

use std::collections::{BTreeMap, HashMap};

use super::Planner;
use super::candidates::Cand;
use super::model::{Blocked, Command, DisruptionError, Reason};
use super::state::Sim;

/// What validation made of a command.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Validation {
    /// The command that may go: the planned one, or a smaller one with the still-valid
    /// candidates and fresh replacements; `None` when nothing of it is valid any more.
    pub command: Option<Command>,
    /// Candidates dropped from the command, and why.
    pub dropped: Vec<Blocked>,
}

impl Planner<'_> {
    /// Why candidate `c` may no longer be disrupted for `reason` (budgets aside).
    fn ineligible(c: &Cand, reason: Reason) -> Option<String> {
        if let Err(why) = &c.graceful {
            return Some(why.clone());
        }
        if !c.consolidatable {
            return Some(
                "pods were scheduled or removed on it within consolidateAfter".to_string(),
            );
        }
        match reason {
            Reason::Empty if !c.empty => Some("it is no longer empty".to_string()),
            Reason::Underutilized
                if !c.policy.consolidation_policy.consolidates_underutilized() =>
            {
                Some("its NodePool no longer consolidates underutilized nodes".to_string())
            }
            Reason::Underutilized if c.price.is_none() => {
                Some("its price is no longer known".to_string())
            }
            _ => None,
        }
    }

    /// Re-checks `cmd` on this planner's (fresh) view; see the module docs.
    pub(crate) fn validate(&mut self, cmd: &Command) -> Result<Validation, DisruptionError> {
        if matches!(
            cmd.reason,
            Reason::Drifted | Reason::Expired | Reason::Unhealthy
        ) {
            // Not graceful: they act at once and are never held for validation.
            return Ok(Validation {
                command: Some(cmd.clone()),
                dropped: Vec::new(),
            });
        }
        let by_name: HashMap<&str, usize> = self
            .cands
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_str(), i))
            .collect();
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        let mut taken: BTreeMap<String, u32> = BTreeMap::new();
        for name in &cmd.nodes {
            let Some(&i) = by_name.get(name.as_str()) else {
                dropped.push(Blocked {
                    node: name.clone(),
                    reason: "it is no longer a managed node".to_string(),
                });
                continue;
            };
            let c = &self.cands[i];
            if let Some(reason) = Self::ineligible(c, cmd.reason) {
                dropped.push(Blocked {
                    node: name.clone(),
                    reason,
                });
                continue;
            }
            let used = taken.entry(c.pool.clone()).or_insert(0);
            if self.budgets.allowed(&c.pool, cmd.reason) <= *used {
                dropped.push(Blocked {
                    node: name.clone(),
                    reason: format!(
                        "the disruption budget of NodePool {:?} no longer allows it",
                        c.pool
                    ),
                });
                continue;
            }
            *used += 1;
            kept.push(i);
        }
        if kept.is_empty() {
            return Ok(Validation {
                command: None,
                dropped,
            });
        }
        let decided = match cmd.reason {
            Reason::Empty => {
                let sim = Sim::nothing_moved();
                self.decide(Reason::Empty, &kept, &sim, Vec::new());
                true
            }
            _ => self.longest_valid_prefix(&kept, &mut dropped)?,
        };
        Ok(Validation {
            command: decided.then(|| self.commands.pop()).flatten(),
            dropped,
        })
    }

    /// Decides the longest prefix of `kept` that still consolidates; the candidates past it
    /// are reported in `dropped`. Returns whether anything was decided.
    fn longest_valid_prefix(
        &mut self,
        kept: &[usize],
        dropped: &mut Vec<Blocked>,
    ) -> Result<bool, DisruptionError> {
        // The whole command first: on an unchanged cluster it is the answer at once.
        let mut best = self
            .consolidate(kept, kept.len() == 1)?
            .valid
            .map(|v| (kept.len(), v));
        if best.is_none() && kept.len() > 1 {
            let (mut lo, mut hi) = (1usize, kept.len() - 1);
            while lo <= hi {
                let mid = lo + (hi - lo) / 2;
                match self.consolidate(&kept[..mid], mid == 1)?.valid {
                    Some(v) => {
                        best = Some((mid, v));
                        lo = mid + 1;
                    }
                    None => hi = mid - 1,
                }
            }
        }
        let len = best.as_ref().map_or(0, |(n, _)| *n);
        for &i in &kept[len..] {
            dropped.push(Blocked {
                node: self.cands[i].name.clone(),
                reason: "its pods no longer fit on the other nodes plus at most one cheaper node"
                    .to_string(),
            });
        }
        let Some((n, (sim, claims))) = best else {
            return Ok(false);
        };
        let replacements = self.replacements(&claims);
        self.decide(Reason::Underutilized, &kept[..n], &sim, replacements);
        Ok(true)
    }
}
