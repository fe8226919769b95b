//! The cluster as the planner changes it: each decided command is applied (nodes removed, their
//! pods moved, replacements added) so the next command is simulated on what would be left.
//!
//! A simulation is one provisioning [`solve`] on the live nodes minus the candidates, with the
//! candidates' reschedulable pods pending. Nothing is deep-copied per simulation: the
//! candidates are moved out of the node list and back, and nodes that must not receive pods
//! are *closed* by setting their allocatable to what their pods already use (every pod needs a
//! `pods` slot, so nothing else fits) while they still count for topology.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::error::SolveError;
use crate::instance_type::CatalogIndex;
use crate::model::{ExistingNode, Options, Plan, PlannedNodeClaim, PodView, Problem};
use crate::resources::{NODES, PODS, Resources};
use crate::scheduling::solve;

use super::model::DisruptionProblem;

/// Per-node bookkeeping, by stable id (ids only grow; removed nodes keep theirs).
#[derive(Debug, Clone)]
pub(crate) struct NodeMeta {
    pub name: String,
    /// NodePool, for managed nodes and replacements.
    pub pool: Option<String>,
    /// Capacity counted against the NodePool's limits.
    pub capacity: Resources,
    /// Never a destination (uninitialized, already disrupting, or a replacement being launched).
    pub closed: bool,
    /// Not a destination for consolidation (had pod events within its `consolidateAfter`).
    pub recent: bool,
    /// Received pods in this planning call: not a candidate any more (upstream "nominated").
    pub nominated: bool,
    /// Removed by a decided command.
    pub removed: bool,
}

/// The outcome of one simulation.
pub(crate) struct Sim {
    pub plan: Plan,
    /// The pods that were rescheduled, by key.
    pub pods: BTreeMap<String, PodView>,
}

impl Sim {
    /// The outcome of removing nodes whose pods all leave with them (emptiness): nothing moves.
    pub fn nothing_moved() -> Self {
        Sim {
            plan: Plan {
                node_claims: Vec::new(),
                existing_nodes: Vec::new(),
                unschedulable: Vec::new(),
                total_price: 0.0,
                lower_bound: 0.0,
            },
            pods: BTreeMap::new(),
        }
    }
}

/// The working cluster.
pub(crate) struct Work {
    /// Catalog, pools, DaemonSets; `existing_nodes` = live nodes in stable-id order; `pods`
    /// empty between simulations.
    pub problem: Problem,
    /// Stable id of each entry of `problem.existing_nodes` (ascending).
    ids: Vec<usize>,
    pub meta: Vec<NodeMeta>,
    by_name: HashMap<String, usize>,
    /// Catalog positions by NodePool and instance-type name.
    pub catalog: CatalogIndex,
    /// Replacements launched so far (for unique names).
    replacements: usize,
    /// Simulations run (for benchmarks and tests of pruning).
    pub simulations: usize,
}

impl Work {
    /// Builds the working cluster from `problem` (`input.problem` or a copy of it; `input`'s
    /// own `problem` is not read); `closed`/`recent` are set by the caller per node afterwards.
    pub fn new(input: &DisruptionProblem, mut problem: Problem) -> Self {
        problem.pods.clear();
        let catalog = CatalogIndex::new(&problem.instance_types);
        let pool_of: HashMap<&str, &str> = input
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.node_pool.as_str()))
            .collect();
        let it_of: HashMap<&str, &str> = input
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.instance_type.as_str()))
            .collect();
        let meta: Vec<NodeMeta> = problem
            .existing_nodes
            .iter()
            .map(|n| NodeMeta {
                name: n.name.clone(),
                pool: pool_of.get(n.name.as_str()).map(|p| p.to_string()),
                capacity: it_of
                    .get(n.name.as_str())
                    .and_then(|it| catalog.get(pool_of.get(n.name.as_str()).copied(), it))
                    .map(|i| problem.instance_types[i].capacity.clone())
                    .unwrap_or_else(|| n.allocatable.clone()),
                closed: false,
                recent: false,
                nominated: false,
                removed: false,
            })
            .collect();
        let by_name = meta
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.clone(), i))
            .collect();
        Work {
            ids: (0..problem.existing_nodes.len()).collect(),
            problem,
            meta,
            by_name,
            catalog,
            replacements: 0,
            simulations: 0,
        }
    }

    /// Stable id of a node by name.
    pub fn id(&self, name: &str) -> Option<usize> {
        self.by_name.get(name).copied()
    }

    /// The live node with stable id `id`.
    pub fn node(&self, id: usize) -> Option<&ExistingNode> {
        let pos = self.ids.binary_search(&id).ok()?;
        self.problem.existing_nodes.get(pos)
    }

    /// Adds `delta` × the node's capacity (and one node) to its NodePool's usage.
    fn charge(&mut self, id: usize, sign: i64) {
        let m = &self.meta[id];
        let Some(pool) = &m.pool else { return };
        if let Some(np) = self.problem.node_pools.iter_mut().find(|p| &p.name == pool) {
            for (k, v) in &m.capacity.0 {
                np.usage.add_one(k, sign * v);
            }
            np.usage.add_one(NODES, sign);
        }
    }

    /// Simulates removing `cands` (stable ids): their pods that `reschedule` keeps become
    /// pending against every other live node (closed ones refuse them; `recent` ones too when
    /// `consolidation`) and new NodeClaims.
    pub fn simulate(
        &mut self,
        cands: &[usize],
        consolidation: bool,
        reschedule: &dyn Fn(&PodView) -> bool,
    ) -> Result<Sim, SolveError> {
        self.simulations += 1;
        let taken_set: HashSet<usize> = cands.iter().copied().collect();
        let all = std::mem::take(&mut self.problem.existing_nodes);
        let total = all.len();
        let mut kept = Vec::with_capacity(total);
        let mut taken: Vec<(usize, ExistingNode)> = Vec::with_capacity(cands.len());
        let mut closed: Vec<(usize, Resources)> = Vec::new();
        let mut pods = BTreeMap::new();
        for (i, mut n) in all.into_iter().enumerate() {
            let id = self.ids[i];
            if taken_set.contains(&id) {
                for p in n.pods.iter().filter(|p| reschedule(p)) {
                    pods.insert(p.key(), p.clone());
                }
                taken.push((i, n));
                continue;
            }
            let m = &self.meta[id];
            if m.closed || (consolidation && m.recent) {
                let full = used(&n.pods);
                closed.push((kept.len(), std::mem::replace(&mut n.allocatable, full)));
            }
            kept.push(n);
        }
        for &id in cands {
            self.charge(id, -1);
        }
        self.problem.existing_nodes = kept;
        self.problem.pods = pods.values().cloned().collect();
        let opts = Options {
            optimise: false,
            max_instance_type_options: usize::MAX,
            lower_bound: false,
            ignore_preferences: false,
        };
        let result = solve(&self.problem, &opts);

        // Restore, whatever the outcome.
        self.problem.pods.clear();
        for &id in cands {
            self.charge(id, 1);
        }
        let mut kept = std::mem::take(&mut self.problem.existing_nodes);
        for (k, alloc) in closed {
            kept[k].allocatable = alloc;
        }
        let mut merged = Vec::with_capacity(total);
        let mut kept = kept.into_iter();
        let mut taken = taken.into_iter().peekable();
        for i in 0..total {
            match taken.peek() {
                Some((t, _)) if *t == i => merged.extend(taken.next().map(|(_, n)| n)),
                _ => merged.extend(kept.next()),
            }
        }
        self.problem.existing_nodes = merged;
        Ok(Sim {
            plan: result?,
            pods,
        })
    }

    /// A unique name for the next replacement of `pool`.
    pub fn replacement_name(&mut self, pool: &str) -> String {
        self.replacements += 1;
        format!("{pool}-replacement-{}", self.replacements)
    }

    /// Applies the rescheduling of pods leaving nodes `from` (already disrupting): the pods go
    /// to their destinations (which stay candidates: the room is only reserved) and onto new
    /// closed nodes for the rest; the leaving nodes stay, closed, with only the pods that
    /// leave with them, so they still count for budgets and show as blocked.
    pub fn commit_displaced(&mut self, from: &[usize], sim: &Sim) {
        for &id in from {
            if let Ok(pos) = self.ids.binary_search(&id) {
                self.problem.existing_nodes[pos]
                    .pods
                    .retain(|p| !sim.pods.contains_key(&p.key()));
            }
        }
        for placement in &sim.plan.existing_nodes {
            let Some(pos) = self
                .id(&placement.node)
                .and_then(|id| self.ids.binary_search(&id).ok())
            else {
                continue;
            };
            let node = &mut self.problem.existing_nodes[pos];
            node.pods.extend(
                placement
                    .pods
                    .iter()
                    .filter_map(|k| sim.pods.get(k).cloned()),
            );
        }
        for (k, claim) in sim.plan.node_claims.iter().enumerate() {
            let mut claim = claim.clone();
            claim.name = format!("{}-displaced-{}", claim.node_pool, k + 1);
            self.add_closed_claim(&claim, sim);
        }
    }

    /// Adds a planned NodeClaim as a closed node holding its pods (capacity being launched).
    fn add_closed_claim(&mut self, claim: &PlannedNodeClaim, sim: &Sim) {
        let capacity = self
            .catalog
            .get(Some(&claim.node_pool), &claim.instance_type)
            .map(|i| self.problem.instance_types[i].capacity.clone())
            .unwrap_or_default();
        let mut labels = claim.labels.clone();
        labels.insert(crate::labels::HOSTNAME.to_string(), claim.name.clone());
        let pods: Vec<PodView> = claim
            .pods
            .iter()
            .filter_map(|k| sim.pods.get(k).cloned())
            .collect();
        let id = self.meta.len();
        self.meta.push(NodeMeta {
            name: claim.name.clone(),
            pool: Some(claim.node_pool.clone()),
            capacity,
            closed: true,
            recent: false,
            nominated: true,
            removed: false,
        });
        self.by_name.insert(claim.name.clone(), id);
        self.ids.push(id);
        self.problem.existing_nodes.push(ExistingNode {
            name: claim.name.clone(),
            labels,
            taints: claim.taints.clone(),
            allocatable: used(&pods),
            pods,
        });
        self.charge(id, 1);
    }

    /// Applies a decided command: removes `cands`, moves the pods onto their destinations
    /// (which become nominated) and adds the replacements as closed nodes.
    pub fn commit(&mut self, cands: &[usize], sim: &Sim, claims: &[PlannedNodeClaim]) {
        let gone: HashSet<usize> = cands.iter().copied().collect();
        for &id in cands {
            self.charge(id, -1);
            self.meta[id].removed = true;
        }
        let mut ids = Vec::with_capacity(self.ids.len());
        let mut nodes = Vec::with_capacity(self.ids.len());
        for (id, n) in self
            .ids
            .drain(..)
            .zip(self.problem.existing_nodes.drain(..))
        {
            if !gone.contains(&id) {
                ids.push(id);
                nodes.push(n);
            }
        }
        self.ids = ids;
        self.problem.existing_nodes = nodes;
        for placement in &sim.plan.existing_nodes {
            let Some(id) = self.id(&placement.node) else {
                continue;
            };
            self.meta[id].nominated = true;
            if let Ok(pos) = self.ids.binary_search(&id) {
                let node = &mut self.problem.existing_nodes[pos];
                node.pods.extend(
                    placement
                        .pods
                        .iter()
                        .filter_map(|k| sim.pods.get(k).cloned()),
                );
            }
        }
        for claim in claims {
            self.add_closed_claim(claim, sim);
        }
    }
}

/// What `pods` use, each taking at least one `pods` slot: as allocatable, a node with nothing
/// left.
fn used(pods: &[PodView]) -> Resources {
    let mut r = Resources::new();
    for p in pods {
        r.add(&p.requests);
        if p.requests.get(PODS) < 1 {
            r.add_one(PODS, 1 - p.requests.get(PODS));
        }
    }
    r
}
