//! Node groups' minimum sizes ([`NodeGroup`]) over a plan. Candidates of a group with no room
//! left are blocked up front (so the planner looks elsewhere); a group with some room can
//! still be asked for more nodes than it has by one command or by several, so after planning
//! emptiness commands lose the excess nodes (they are empty: the rest still stands) and
//! consolidation commands that would go past a minimum are dropped (their pods' places were
//! planned for all their nodes). Drift and expiration are not limited.

use std::collections::{BTreeMap, HashMap};

use super::model::{Command, DisruptionProblem, NodeGroup, Reason};

/// The groups of one planning call, with the room each has left.
pub(crate) struct Floors<'a> {
    groups: Vec<&'a NodeGroup>,
    /// Per group: how many more of its nodes emptiness and consolidation may remove.
    room: Vec<usize>,
    /// Node name -> group index.
    group_of: HashMap<&'a str, usize>,
    /// Node name -> price per hour (a cut emptiness command saves only what it keeps).
    price: HashMap<&'a str, f64>,
}

impl<'a> Floors<'a> {
    pub fn new(input: &'a DisruptionProblem) -> Self {
        let disrupting: HashMap<&str, bool> = input
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.disrupting))
            .collect();
        let mut group_of = HashMap::new();
        let mut room = Vec::new();
        for (g, group) in input.node_groups.iter().enumerate() {
            let leaving = group
                .nodes
                .iter()
                .filter(|n| disrupting.get(n.as_str()).copied().unwrap_or(false))
                .count();
            room.push(group.removable.saturating_sub(leaving));
            for n in &group.nodes {
                group_of.insert(n.as_str(), g);
            }
        }
        Self {
            groups: input.node_groups.iter().collect(),
            room,
            group_of,
            price: input
                .nodes
                .iter()
                .filter_map(|n| Some((n.name.as_str(), n.price?)))
                .collect(),
        }
    }

    /// Why emptiness and consolidation may not take `node`, when its group has no room left.
    pub fn blocked(&self, node: &str) -> Option<String> {
        let g = *self.group_of.get(node)?;
        (self.room[g] == 0).then(|| format!("{} is at its minimum size", self.groups[g].name))
    }

    /// The commands that keep every group at or above its minimum, in order (the room is
    /// shared by the commands of the plan), and a line per command cut or dropped.
    pub fn limit(mut self, commands: Vec<Command>) -> (Vec<Command>, Vec<String>) {
        let mut kept = Vec::new();
        let mut notes = Vec::new();
        for mut cmd in commands {
            if !matches!(cmd.reason, Reason::Empty | Reason::Underutilized) {
                kept.push(cmd);
                continue;
            }
            let mut wanted: BTreeMap<usize, usize> = BTreeMap::new();
            for n in &cmd.nodes {
                if let Some(&g) = self.group_of.get(n.as_str()) {
                    *wanted.entry(g).or_insert(0) += 1;
                }
            }
            let over: Vec<&str> = wanted
                .iter()
                .filter(|(g, w)| **w > self.room[**g])
                .map(|(g, _)| self.groups[*g].name.as_str())
                .collect();
            if over.is_empty() {
                for (g, w) in wanted {
                    self.room[g] -= w;
                }
                kept.push(cmd);
                continue;
            }
            let over = over.join(", ");
            if cmd.reason == Reason::Underutilized {
                notes.push(format!(
                    "consolidation of {:?} dropped: it would take {over} below its minimum size",
                    cmd.nodes
                ));
                continue;
            }
            let before = cmd.nodes.clone();
            let (group_of, room) = (&self.group_of, &mut self.room);
            cmd.nodes.retain(|n| match group_of.get(n.as_str()) {
                Some(&g) if room[g] > 0 => {
                    room[g] -= 1;
                    true
                }
                Some(_) => false,
                None => true,
            });
            cmd.savings_per_hour = cmd
                .nodes
                .iter()
                .filter_map(|n| self.price.get(n.as_str()))
                .sum();
            notes.push(format!(
                "emptiness of {before:?} cut to {:?}: {over} at its minimum size",
                cmd.nodes
            ));
            if !cmd.nodes.is_empty() {
                kept.push(cmd);
            }
        }
        (kept, notes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disruption::model::{DoNotDisrupt, NodeState};

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

    fn input(groups: &[(&str, &[&str], usize)], disrupting: &[&str]) -> DisruptionProblem {
        let node_groups = groups
            .iter()
            .map(|(name, nodes, removable)| NodeGroup {
                name: name.to_string(),
                nodes: nodes.iter().map(|n| n.to_string()).collect(),
                removable: *removable,
            })
            .collect();
        let nodes = disrupting
            .iter()
            .map(|n| NodeState {
                name: n.to_string(),
                node_pool: "default".into(),
                instance_type: String::new(),
                zone: String::new(),
                capacity_type: String::new(),
                price: None,
                created: 0,
                last_pod_event: None,
                initialized: true,
                disrupting: true,
                drifted: None,
                do_not_disrupt: DoNotDisrupt::No,
                scale_down_blocked: None,
                unhealthy: None,
                do_not_repair: false,
            })
            .collect();
        DisruptionProblem {
            node_groups,
            nodes,
            ..DisruptionProblem::default()
        }
    }

    fn nodes(cmds: &[Command]) -> Vec<Vec<String>> {
        cmds.iter().map(|c| c.nodes.clone()).collect()
    }

    #[test]
    fn emptiness_keeps_as_many_of_a_group_as_its_minimum_needs() {
        // md-a: 3 nodes, min 2 (1 removable); x is in no group.
        let input = input(&[("md-a", &["a1", "a2", "a3"], 1)], &[]);
        let (kept, notes) =
            Floors::new(&input).limit(vec![cmd(Reason::Empty, &["a1", "a2", "x", "a3"])]);
        assert_eq!(nodes(&kept), vec![vec!["a1", "x"]]);
        assert_eq!(notes.len(), 1);
    }

    #[test]
    fn room_is_shared_by_the_commands_of_a_plan() {
        let input = input(&[("md-a", &["a1", "a2", "a3"], 1)], &[]);
        let (kept, _) = Floors::new(&input).limit(vec![
            cmd(Reason::Underutilized, &["a1"]),
            cmd(Reason::Underutilized, &["a2"]),
            cmd(Reason::Empty, &["a3"]),
        ]);
        assert_eq!(nodes(&kept), vec![vec!["a1"]]);
    }

    #[test]
    fn consolidation_past_a_minimum_is_dropped_and_drift_is_not_limited() {
        let input = input(&[("md-a", &["a1", "a2"], 1), ("md-b", &["b1"], 1)], &[]);
        let (kept, notes) = Floors::new(&input).limit(vec![
            cmd(Reason::Underutilized, &["a1", "a2", "b1"]),
            cmd(Reason::Drifted, &["a1", "a2"]),
            cmd(Reason::Underutilized, &["b1"]),
        ]);
        assert_eq!(nodes(&kept), vec![vec!["a1", "a2"], vec!["b1"]]);
        assert_eq!(kept[0].reason, Reason::Drifted);
        assert!(notes[0].contains("md-a"), "{notes:?}");
    }

    #[test]
    fn nodes_already_leaving_use_up_the_room() {
        // 2 removable, a1 already disrupting: one more may go, so a2 and a3 are not blocked
        // yet, and once a command takes a2 the group is full.
        let input = input(&[("md-a", &["a1", "a2", "a3"], 2)], &["a1"]);
        let floors = Floors::new(&input);
        assert_eq!(floors.blocked("a2"), None);
        let (kept, _) = floors.limit(vec![
            cmd(Reason::Underutilized, &["a2"]),
            cmd(Reason::Empty, &["a3"]),
        ]);
        assert_eq!(nodes(&kept), vec![vec!["a2"]]);
        let full = self::input(&[("md-a", &["a1", "a2"], 1)], &["a1"]);
        assert_eq!(
            Floors::new(&full).blocked("a2").as_deref(),
            Some("md-a is at its minimum size")
        );
        assert_eq!(Floors::new(&full).blocked("x"), None);
    }
}
