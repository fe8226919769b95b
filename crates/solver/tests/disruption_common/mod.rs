//! Builders and independent checks for the disruption tests.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use karpenter_solver::disruption::*;
use karpenter_solver::*;

/// A cluster under construction: nodes are built from catalog entries like the provider would.
pub struct Fleet {
    pub dp: DisruptionProblem,
}

impl Fleet {
    /// Pools get the default policy with a `100%` budget (karpenter-core §10.6 convention).
    pub fn new(its: Vec<InstanceType>, pools: Vec<NodePoolView>) -> Self {
        let policies = pools
            .iter()
            .map(|p| {
                let mut pol = PoolPolicy::new(&p.name);
                pol.budgets = vec![Budget::nodes("100%")];
                pol
            })
            .collect();
        Fleet {
            dp: DisruptionProblem {
                problem: Problem {
                    instance_types: its,
                    node_pools: pools,
                    ..Default::default()
                },
                policies,
                ..Default::default()
            },
        }
    }

    /// Adds a managed, initialized node of `it` bought at (`zone`, `ct`), created at 0.
    pub fn node(
        &mut self,
        name: &str,
        it: &str,
        zone: &str,
        ct: &str,
        pool: &str,
        pods: Vec<PodView>,
    ) -> &mut NodeState {
        let t = self
            .dp
            .problem
            .instance_types
            .iter()
            .find(|t| t.name == it)
            .expect("instance type in catalog")
            .clone();
        let price = t
            .offerings
            .iter()
            .find(|o| o.zone == zone && o.capacity_type == ct)
            .map(|o| o.price);
        let mut labels = t.labels.clone();
        for (k, v) in [
            ("node.kubernetes.io/instance-type", it),
            ("topology.kubernetes.io/zone", zone),
            ("karpenter.sh/capacity-type", ct),
            ("karpenter.sh/nodepool", pool),
            ("kubernetes.io/hostname", name),
        ] {
            labels.insert(k.into(), v.into());
        }
        self.dp.problem.existing_nodes.push(ExistingNode {
            name: name.into(),
            labels,
            taints: vec![],
            allocatable: t.allocatable(),
            pods,
        });
        self.dp.nodes.push(NodeState {
            name: name.into(),
            node_pool: pool.into(),
            instance_type: it.into(),
            zone: zone.into(),
            capacity_type: ct.into(),
            price,
            created: 0,
            last_pod_event: None,
            initialized: true,
            disrupting: false,
            drifted: None,
            do_not_disrupt: DoNotDisrupt::No,
            scale_down_blocked: None,
            unhealthy: None,
            do_not_repair: false,
        });
        self.dp.nodes.last_mut().expect("just pushed")
    }

    pub fn policy(&mut self, pool: &str) -> &mut PoolPolicy {
        self.dp
            .policies
            .iter_mut()
            .find(|p| p.name == pool)
            .expect("pool policy")
    }

    pub fn pod_state(&mut self, key: &str) -> &mut PodState {
        if let Some(i) = self.dp.pods.iter().position(|p| p.key == key) {
            return &mut self.dp.pods[i];
        }
        self.dp.pods.push(PodState {
            key: key.into(),
            ..Default::default()
        });
        self.dp.pods.last_mut().expect("just pushed")
    }

    pub fn plan(&self, now: i64) -> DisruptionPlan {
        plan(
            &self.dp,
            &DisruptionOptions {
                now,
                ..Default::default()
            },
        )
        .expect("plan")
    }
}

/// `(reason, sorted nodes, replacement instance types)` of each command, for compact asserts.
pub fn summary(p: &DisruptionPlan) -> Vec<(Reason, Vec<String>, Vec<String>)> {
    p.commands
        .iter()
        .map(|c| {
            let mut nodes = c.nodes.clone();
            nodes.sort();
            (
                c.reason,
                nodes,
                c.replacements
                    .iter()
                    .map(|r| r.instance_type.clone())
                    .collect(),
            )
        })
        .collect()
}

/// Replays the commands on the input with plain arithmetic, independently of the planner:
/// every rescheduled pod lands exactly once, on a node that still exists and has room (pods
/// counted cumulatively across commands), or on a replacement whose instance type holds all
/// of its pods; removed nodes are never destinations; consolidation never raises the price.
/// Returns an error message describing the first violation.
pub fn check_commands(dp: &DisruptionProblem, plan: &DisruptionPlan) -> Result<(), String> {
    let daemon: BTreeSet<&str> = dp
        .pods
        .iter()
        .filter(|p| p.daemon_set)
        .map(|p| p.key.as_str())
        .collect();
    let mut nodes: BTreeMap<String, (Resources, Vec<PodView>)> = dp
        .problem
        .existing_nodes
        .iter()
        .map(|n| (n.name.clone(), (n.allocatable.clone(), n.pods.clone())))
        .collect();
    let price: BTreeMap<&str, f64> = dp
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.price.unwrap_or(0.0)))
        .collect();
    let catalog: BTreeMap<&str, &InstanceType> = dp
        .problem
        .instance_types
        .iter()
        .map(|t| (t.name.as_str(), t))
        .collect();
    for (ci, c) in plan.commands.iter().enumerate() {
        let mut moving: BTreeMap<String, PodView> = BTreeMap::new();
        let mut removed = 0.0;
        for n in &c.nodes {
            let (_, pods) = nodes
                .remove(n)
                .ok_or_else(|| format!("command {ci}: node {n} is gone or unknown"))?;
            removed += price.get(n.as_str()).copied().unwrap_or(0.0);
            for p in pods {
                if !daemon.contains(p.key().as_str()) {
                    moving.insert(p.key(), p);
                }
            }
        }
        let mut landed: BTreeSet<String> = BTreeSet::new();
        for pl in &c.placements {
            let (alloc, pods) = nodes
                .get_mut(&pl.node)
                .ok_or_else(|| format!("command {ci}: destination {} is gone", pl.node))?;
            for k in &pl.pods {
                let p = moving
                    .get(k)
                    .ok_or_else(|| format!("command {ci}: {k} is not a moving pod"))?;
                if !landed.insert(k.clone()) {
                    return Err(format!("command {ci}: {k} placed twice"));
                }
                pods.push(p.clone());
            }
            let mut used = Resources::new();
            for p in pods.iter() {
                used.add(&p.requests);
            }
            used.set("pods", pods.len() as i64);
            if !used.fits_in(alloc) {
                return Err(format!("command {ci}: node {} over capacity", pl.node));
            }
        }
        let mut added = 0.0;
        for r in &c.replacements {
            let t = catalog
                .get(r.instance_type.as_str())
                .ok_or_else(|| format!("command {ci}: unknown type {}", r.instance_type))?;
            let offer = t
                .offerings
                .iter()
                .find(|o| o.zone == r.zone && o.capacity_type == r.capacity_type && o.available)
                .ok_or_else(|| format!("command {ci}: no such offering for {}", r.name))?;
            if (offer.price - r.price).abs() > 1e-9 {
                return Err(format!(
                    "command {ci}: price of {} is not its offering's",
                    r.name
                ));
            }
            added += r.price;
            let mut used = Resources::new();
            let mut pods = Vec::new();
            for k in &r.pods {
                let p = moving
                    .get(k)
                    .ok_or_else(|| format!("command {ci}: {k} is not a moving pod"))?;
                if !landed.insert(k.clone()) {
                    return Err(format!("command {ci}: {k} placed twice"));
                }
                used.add(&p.requests);
                pods.push(p.clone());
            }
            used.set("pods", r.pods.len() as i64);
            if !used.fits_in(&t.allocatable()) {
                return Err(format!(
                    "command {ci}: replacement {} over capacity",
                    r.name
                ));
            }
            nodes.insert(r.name.clone(), (Resources::new(), pods));
        }
        let unplaced: Vec<&String> = moving.keys().filter(|k| !landed.contains(*k)).collect();
        if c.reason != Reason::Expired && !unplaced.is_empty() {
            return Err(format!(
                "command {ci}: pods left without a place: {unplaced:?}"
            ));
        }
        if c.reason == Reason::Underutilized {
            if c.replacements.len() > 1 {
                return Err(format!("command {ci}: consolidation buys several nodes"));
            }
            if added >= removed - 1e-9 {
                return Err(format!(
                    "command {ci}: consolidation does not save ({added} >= {removed})"
                ));
            }
        }
        if (c.savings_per_hour - (removed - added)).abs() > 1e-6 {
            return Err(format!(
                "command {ci}: savings {} != {}",
                c.savings_per_hour,
                removed - added
            ));
        }
    }
    Ok(())
}

/// Nodes disrupted per (pool, reason) by voluntary commands, and in total per pool.
pub fn disrupted_per_pool(dp: &DisruptionProblem, plan: &DisruptionPlan) -> BTreeMap<String, u32> {
    let pool_of: BTreeMap<&str, &str> = dp
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.node_pool.as_str()))
        .collect();
    let mut out = BTreeMap::new();
    for c in &plan.commands {
        for n in &c.nodes {
            if let Some(p) = pool_of.get(n.as_str()) {
                *out.entry(p.to_string()).or_insert(0) += 1;
            }
        }
    }
    out
}
