//! Disruption budgets (upstream `GetAllowedDisruptionsByReason` and
//! `BuildDisruptionBudgetMapping`): per NodePool and reason, the minimum over the active
//! budgets that name the reason, minus the nodes already disrupting.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds};

use super::model::{Budget, Reason};

/// Nodes `budget` allows for a NodePool of `num_nodes` nodes at `now` (Unix seconds), or
/// `None` when the budget is outside its schedule window (it then limits nothing).
/// Unparsable `nodes` or `schedule` allow 0: fail closed, as upstream.
pub fn budget_allows(budget: &Budget, num_nodes: u32, now: i64) -> Option<u32> {
    if let Some(schedule) = &budget.schedule {
        match window_active(schedule, budget.duration_seconds.unwrap_or(0), now) {
            Some(true) => {}
            Some(false) => return None,
            None => return Some(0),
        }
    }
    Some(parse_nodes(&budget.nodes, num_nodes).unwrap_or(0))
}

/// `"10%"` of `num_nodes` rounded up, or a plain count.
pub fn parse_nodes(nodes: &str, num_nodes: u32) -> Option<u32> {
    let nodes = nodes.trim();
    if let Some(pct) = nodes.strip_suffix('%') {
        let pct: u64 = pct.parse().ok().filter(|p| *p <= 100)?;
        // Rounded up, as upstream (`GetScaledValueFromIntOrPercent(..., roundUp=true)`).
        return Some((pct * u64::from(num_nodes)).div_ceil(100) as u32);
    }
    nodes.parse().ok()
}

/// Whether the window of `schedule` (cron, UTC) lasting `duration` seconds contains `now`:
/// upstream's `schedule.Next(now - duration) <= now`. `None` when the schedule is invalid.
pub fn window_active(schedule: &str, duration: i64, now: i64) -> Option<bool> {
    let cron = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .build()
        .parse(schedule.trim())
        .ok()?;
    let start: DateTime<Utc> = DateTime::from_timestamp(now.saturating_sub(duration), 0)?;
    match cron.find_next_occurrence(&start, false) {
        Ok(next) => Some(next.timestamp() <= now),
        // No occurrence at all (e.g. 30 February): never active.
        Err(_) => Some(false),
    }
}

/// Budgets for one planning call: what each NodePool may disrupt per reason, and the nodes it
/// is disrupting already (including those this call decided).
#[derive(Debug, Clone, Default)]
pub(crate) struct Budgets {
    /// (pool, reason) → min over active budgets (`None` = unlimited).
    limit: BTreeMap<(String, Reason), Option<u32>>,
    disrupting: BTreeMap<String, u32>,
}

impl Budgets {
    /// Evaluates every pool's budgets at `now`. `pools` is (name, budgets, nodes, disrupting).
    pub fn new<'a>(
        pools: impl IntoIterator<Item = (&'a str, &'a [Budget], u32, u32)>,
        now: i64,
    ) -> Self {
        let mut out = Budgets::default();
        for (name, budgets, num_nodes, disrupting) in pools {
            for reason in [
                Reason::Empty,
                Reason::Underutilized,
                Reason::Drifted,
                Reason::Unhealthy,
            ] {
                let limit = budgets
                    .iter()
                    .filter(|b| b.reasons.as_ref().is_none_or(|r| r.contains(&reason)))
                    .filter_map(|b| budget_allows(b, num_nodes, now))
                    .min();
                out.limit.insert((name.to_string(), reason), limit);
            }
            out.disrupting.insert(name.to_string(), disrupting);
        }
        out
    }

    /// Nodes `pool` may still disrupt for `reason` (expiration is never limited).
    pub fn allowed(&self, pool: &str, reason: Reason) -> u32 {
        if reason == Reason::Expired {
            return u32::MAX;
        }
        match self.limit.get(&(pool.to_string(), reason)) {
            Some(Some(limit)) => {
                limit.saturating_sub(self.disrupting.get(pool).copied().unwrap_or(0))
            }
            // Unknown pools have no budgets (nothing limits them) — callers only ask for
            // pools they evaluated.
            Some(None) | None => u32::MAX,
        }
    }

    /// Records that `pool` now disrupts one more node (for every reason: upstream subtracts
    /// all disrupting nodes from each reason's budget).
    pub fn take(&mut self, pool: &str) {
        *self.disrupting.entry(pool.to_string()).or_insert(0) += 1;
    }

    /// (pool, reason, allowed) for every evaluated pool, sorted.
    pub fn snapshot(&self) -> Vec<(String, Reason, u32)> {
        self.limit
            .keys()
            .map(|(p, r)| (p.clone(), *r, self.allowed(p, *r)))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_up() {
        assert_eq!(parse_nodes("10%", 10), Some(1));
        assert_eq!(parse_nodes("5%", 10), Some(1));
        assert_eq!(parse_nodes("30%", 10), Some(3));
        assert_eq!(parse_nodes("0%", 10), Some(0));
        assert_eq!(parse_nodes("100%", 7), Some(7));
        assert_eq!(parse_nodes("3", 10), Some(3));
        assert_eq!(parse_nodes("101%", 10), None);
        assert_eq!(parse_nodes("x", 10), None);
    }

    #[test]
    fn windows_follow_the_schedule() {
        // 2024-01-01T00:00:00Z is a Monday.
        let midnight = 1_704_067_200;
        // Daily at 00:00 for 1h: active at 00:30, not at 01:30.
        assert_eq!(
            window_active("0 0 * * *", 3600, midnight + 1800),
            Some(true)
        );
        assert_eq!(
            window_active("0 0 * * *", 3600, midnight + 5400),
            Some(false)
        );
        assert_eq!(window_active("@daily", 3600, midnight), Some(true));
        assert_eq!(window_active("not a cron", 3600, midnight), None);
    }

    #[test]
    fn invalid_budgets_fail_closed_and_inactive_ones_do_not_limit() {
        let midnight = 1_704_067_200;
        let mut b = Budget::nodes("0");
        b.schedule = Some("0 12 * * *".into());
        b.duration_seconds = Some(3600);
        assert_eq!(budget_allows(&b, 10, midnight), None);
        b.schedule = Some("bogus".into());
        assert_eq!(budget_allows(&b, 10, midnight), Some(0));
        assert_eq!(budget_allows(&Budget::nodes("ten"), 10, midnight), Some(0));
    }

    #[test]
    fn disrupting_nodes_use_up_every_reason() {
        let budgets = [Budget::nodes("3")];
        let mut b = Budgets::new([("p", &budgets[..], 10, 1)], 0);
        assert_eq!(b.allowed("p", Reason::Empty), 2);
        b.take("p");
        b.take("p");
        assert_eq!(b.allowed("p", Reason::Drifted), 0);
        assert_eq!(b.allowed("p", Reason::Expired), u32::MAX);
    }
}
