//! Node groups' minimum sizes over a round's plan (pure). The planner already leaves alone the
//! nodes of a group with nothing left to remove ([`super::input`] blocks them); a group with
//! some room can still be asked for more nodes than it has room for, by one command or by
//! several. Here emptiness commands lose the excess nodes (they are empty: the rest still
//! stands) and consolidation commands that would go past a minimum are dropped (their pods'
//! places were planned for all their nodes). Drift and expiration are not limited.

use std::collections::BTreeMap;

use karpenter_solver::disruption::{Command, Reason};

use super::input::Floor;

/// The commands that keep every group at or above its minimum, and a line per command changed
/// or dropped (for the log).
pub fn limit(commands: Vec<Command>, floors: &[Floor]) -> (Vec<Command>, Vec<String>) {
    let mut room: BTreeMap<&str, usize> = floors
        .iter()
        .map(|f| (f.group.as_str(), f.removable))
        .collect();
    let group_of = |node: &str| {
        floors
            .iter()
            .find(|f| f.nodes.contains(node))
            .map(|f| f.group.as_str())
    };
    let mut kept = Vec::new();
    let mut notes = Vec::new();
    for mut cmd in commands {
        if !matches!(cmd.reason, Reason::Empty | Reason::Underutilized) {
            kept.push(cmd);
            continue;
        }
        let mut wanted: BTreeMap<&str, usize> = BTreeMap::new();
        for n in &cmd.nodes {
            if let Some(g) = group_of(n) {
                *wanted.entry(g).or_insert(0) += 1;
            }
        }
        let over: Vec<&str> = wanted
            .iter()
            .filter(|(g, w)| **w > room.get(**g).copied().unwrap_or(0))
            .map(|(g, _)| *g)
            .collect();
        if over.is_empty() {
            for (g, w) in wanted {
                if let Some(r) = room.get_mut(g) {
                    *r -= w;
                }
            }
            kept.push(cmd);
            continue;
        }
        if cmd.reason == Reason::Underutilized {
            notes.push(format!(
                "consolidation of {:?} dropped: it would take {} below its minimum size",
                cmd.nodes,
                over.join(", ")
            ));
            continue;
        }
        let before = cmd.nodes.clone();
        cmd.nodes.retain(|n| match group_of(n) {
            Some(g) => match room.get_mut(g) {
                Some(r) if *r > 0 => {
                    *r -= 1;
                    true
                }
                _ => false,
            },
            None => true,
        });
        notes.push(format!(
            "emptiness of {before:?} cut to {:?}: {} at its minimum size",
            cmd.nodes,
            over.join(", ")
        ));
        if !cmd.nodes.is_empty() {
            kept.push(cmd);
        }
    }
    (kept, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(reason: Reason, nodes: &[&str]) -> Command {
        Command {
            reason,
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            replacements: vec![],
            placements: vec![],
            unschedulable: vec![],
            savings_per_hour: 0.0,
        }
    }

    fn floor(group: &str, nodes: &[&str], removable: usize) -> Floor {
        Floor {
            group: group.into(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            removable,
        }
    }

    fn nodes(cmds: &[Command]) -> Vec<Vec<String>> {
        cmds.iter().map(|c| c.nodes.clone()).collect()
    }

    #[test]
    fn emptiness_keeps_as_many_of_a_group_as_its_minimum_needs() {
        // md-a: 3 nodes, min 2 (1 removable); x is in no group.
        let floors = [floor("md-a", &["a1", "a2", "a3"], 1)];
        let (kept, notes) = limit(vec![cmd(Reason::Empty, &["a1", "a2", "x", "a3"])], &floors);
        assert_eq!(nodes(&kept), vec![vec!["a1", "x"]]);
        assert_eq!(notes.len(), 1);
    }

    #[test]
    fn room_is_shared_by_the_commands_of_a_round() {
        let floors = [floor("md-a", &["a1", "a2", "a3"], 1)];
        let (kept, _) = limit(
            vec![
                cmd(Reason::Underutilized, &["a1"]),
                cmd(Reason::Underutilized, &["a2"]),
                cmd(Reason::Empty, &["a3"]),
            ],
            &floors,
        );
        assert_eq!(nodes(&kept), vec![vec!["a1"]]);
    }

    #[test]
    fn consolidation_past_a_minimum_is_dropped_and_drift_is_not_limited() {
        let floors = [floor("md-a", &["a1", "a2"], 1), floor("md-b", &["b1"], 1)];
        let (kept, notes) = limit(
            vec![
                cmd(Reason::Underutilized, &["a1", "a2", "b1"]),
                cmd(Reason::Drifted, &["a1", "a2"]),
                cmd(Reason::Underutilized, &["b1"]),
            ],
            &floors,
        );
        assert_eq!(nodes(&kept), vec![vec!["a1", "a2"], vec!["b1"]]);
        assert_eq!(kept[0].reason, Reason::Drifted);
        assert!(notes[0].contains("md-a"), "{notes:?}");
    }
}
