//! The disruption planner's input and output: plain owned structs, additive to the provisioning
//! model ([`Problem`] carries the catalog, NodePools, DaemonSets and every node with its pods).
//! Times are plain seconds (e.g. Unix seconds): the planner has no clock.

use std::collections::BTreeSet;
use std::fmt;

use thiserror::Error;

use crate::error::SolveError;
use crate::model::{ExistingPlacement, PlannedNodeClaim, Problem};
use crate::selector::LabelSelector;

/// The well-known annotation that protects a pod or a node from voluntary disruption.
pub const DO_NOT_DISRUPT: &str = "karpenter.sh/do-not-disrupt";
/// The pod annotation that ranks pods for deletion (`controller.kubernetes.io/pod-deletion-cost`).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// The node annotation that vetoes node repair (upstream v1.15): `"true"` keeps an unhealthy
/// node from being repaired (do-not-disrupt does not: a broken node is not discretionary).
pub const DO_NOT_REPAIR: &str = "karpenter.sh/do-not-repair";
/// Karpenter's own pod annotation for the same ranking (upstream v1.15); it wins over
/// [`POD_DELETION_COST`] when both are set.
pub const DISRUPTION_COST: &str = "karpenter.sh/disruption-cost";

/// Why nodes are disrupted (budgets are per reason; expiration is forceful and has none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// No reschedulable pods for at least `consolidateAfter`.
    Empty,
    /// Consolidation: the pods fit elsewhere (plus at most one cheaper node).
    Underutilized,
    /// The node no longer matches its NodePool / NodeClass.
    Drifted,
    /// Older than `expireAfter`.
    Expired,
    /// Node repair: a condition matches a cloud provider repair policy past its toleration.
    Unhealthy,
}

impl Reason {
    /// The lower-case name used in `simulate` output (`empty`, `underutilized`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Empty => "empty",
            Reason::Underutilized => "underutilized",
            Reason::Drifted => "drifted",
            Reason::Expired => "expired",
            Reason::Unhealthy => "unhealthy",
        }
    }

    /// Parses a budget `reasons` entry (`Empty`, `Underutilized`, `Drifted`, `Unhealthy`; any
    /// case).
    pub fn from_budget_reason(s: &str) -> Option<Reason> {
        match s.to_ascii_lowercase().as_str() {
            "empty" => Some(Reason::Empty),
            "underutilized" => Some(Reason::Underutilized),
            "drifted" => Some(Reason::Drifted),
            "unhealthy" => Some(Reason::Unhealthy),
            _ => None,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `spec.disruption.consolidationPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsolidationPolicy {
    /// Only empty nodes are removed.
    WhenEmpty,
    /// Empty nodes are removed and underused ones consolidated (the default).
    #[default]
    WhenEmptyOrUnderutilized,
    /// Empty nodes are removed; a consolidation must also pass the balanced score
    /// ([`BALANCED_K`]): its share of the NodePool's cost saved, over its share of the NodePool's
    /// disruption cost, is at least `1 / BALANCED_K`.
    Balanced,
}

impl ConsolidationPolicy {
    /// Whether consolidation (not only emptiness) may act on the NodePool's nodes.
    pub fn consolidates_underutilized(self) -> bool {
        matches!(
            self,
            ConsolidationPolicy::WhenEmptyOrUnderutilized | ConsolidationPolicy::Balanced
        )
    }

    /// The NodePool field's value (`WhenEmpty`, `WhenEmptyOrUnderutilized`, `Balanced`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConsolidationPolicy::WhenEmpty => "WhenEmpty",
            ConsolidationPolicy::WhenEmptyOrUnderutilized => "WhenEmptyOrUnderutilized",
            ConsolidationPolicy::Balanced => "Balanced",
        }
    }
}

/// Upstream's `BalancedK`: a `Balanced` consolidation is approved when its score is at least
/// `1 / BALANCED_K` (0.5), i.e. it may disrupt up to twice its share of the savings.
pub const BALANCED_K: u32 = 2;

/// Whether a scored consolidation move went ahead (the `decision` label of upstream's
/// `karpenter_consolidation_moves_total` and `karpenter_consolidation_score`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveDecision {
    /// Every `Balanced` NodePool of the move approved it (or none was scored).
    Approved,
    /// A `Balanced` NodePool's score was below the threshold.
    Rejected,
}

impl MoveDecision {
    /// `approved` or `rejected`, as upstream labels it.
    pub fn as_str(self) -> &'static str {
        match self {
            MoveDecision::Approved => "approved",
            MoveDecision::Rejected => "rejected",
        }
    }
}

/// A `Balanced` NodePool's score of a consolidation move (upstream `ScoreResult`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MoveScore {
    /// The move's savings over the NodePool's cost (0 when the pool has no cost or no
    /// disruption to normalise against).
    pub savings_fraction: f64,
    /// The move's disruption cost over the NodePool's.
    pub disruption_fraction: f64,
}

impl MoveScore {
    /// `savings_fraction / disruption_fraction`: 0 when nothing is saved, infinite when
    /// nothing is disrupted.
    pub fn score(&self) -> f64 {
        if self.savings_fraction <= 0.0 {
            0.0
        } else if self.disruption_fraction == 0.0 {
            f64::INFINITY
        } else {
            self.savings_fraction / self.disruption_fraction
        }
    }

    /// The score a move needs, `1 / BALANCED_K`.
    pub fn threshold() -> f64 {
        1.0 / f64::from(BALANCED_K)
    }

    /// Whether the score reaches the threshold.
    pub fn approved(&self) -> bool {
        self.score() >= Self::threshold()
    }
}

/// One NodePool's part in a consolidation move the planner scored: upstream's balanced
/// evaluator counts every such move (`karpenter_consolidation_moves_total`), observes the
/// scores of `Balanced` NodePools (`karpenter_consolidation_score`) and announces approved
/// ones (`ConsolidationApproved` events).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredMove {
    /// The NodePool.
    pub node_pool: String,
    /// Its consolidation policy.
    pub policy: ConsolidationPolicy,
    /// Whether the whole move was approved.
    pub decision: MoveDecision,
    /// This NodePool's score; `None` unless its policy is `Balanced`.
    pub score: Option<MoveScore>,
    /// The move's candidates of this NodePool.
    pub nodes: Vec<String>,
    /// A multi-node move (its events go to the NodePool, not to its nodes).
    pub multi_node: bool,
}

/// One `spec.disruption.budgets[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    /// `nodes`: a count (`"3"`) or a percentage of the NodePool's nodes (`"10%"`, rounded up).
    /// An unparsable value allows nothing (fail closed, as upstream).
    pub nodes: String,
    /// Reasons the budget applies to; `None` = every reason.
    pub reasons: Option<Vec<Reason>>,
    /// Cron schedule (5 fields or `@daily`..., UTC) of the window start; `None` = always active.
    pub schedule: Option<String>,
    /// Window length in seconds (required with `schedule`).
    pub duration_seconds: Option<i64>,
}

impl Budget {
    /// An always-active budget for every reason.
    pub fn nodes(nodes: &str) -> Self {
        Self {
            nodes: nodes.to_string(),
            reasons: None,
            schedule: None,
            duration_seconds: None,
        }
    }
}

/// What the planner needs of a NodePool beyond the provisioning view ([`crate::NodePoolView`]).
#[derive(Debug, Clone, PartialEq)]
pub struct PoolPolicy {
    /// NodePool name.
    pub name: String,
    /// `consolidationPolicy`.
    pub consolidation_policy: ConsolidationPolicy,
    /// `consolidateAfter` in seconds; `None` = `Never` (no emptiness, no consolidation).
    pub consolidate_after: Option<i64>,
    /// `template.spec.expireAfter` in seconds; `None` = `Never`.
    pub expire_after: Option<i64>,
    /// `budgets`; the CRD default is one `10%` budget. An empty list limits nothing.
    pub budgets: Vec<Budget>,
    /// `template.spec.terminationGracePeriod` in seconds: when set, drift (an *eventual*
    /// disruption) is not blocked by do-not-disrupt pods or PDBs, as upstream.
    pub termination_grace_period: Option<i64>,
}

impl PoolPolicy {
    /// The CRD defaults: `WhenEmptyOrUnderutilized`, `consolidateAfter: 0s`,
    /// `expireAfter: 720h`, budgets `[{nodes: 10%}]`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            consolidation_policy: ConsolidationPolicy::WhenEmptyOrUnderutilized,
            consolidate_after: Some(0),
            expire_after: Some(720 * 3600),
            budgets: vec![Budget::nodes("10%")],
            termination_grace_period: None,
        }
    }
}

/// The value of a `karpenter.sh/do-not-disrupt` annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DoNotDisrupt {
    /// Absent, `"false"` (or invalid: upstream ignores it with an event).
    #[default]
    No,
    /// `"true"`.
    Always,
    /// A duration (`"5m"`): protects until the object is that many seconds old.
    For(i64),
}

impl DoNotDisrupt {
    /// Parses the annotation value: `"true"`, `"false"` or a Go duration (`5m`, `1h30m`).
    /// An invalid value is an error the caller reports and then ignores.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "true" => Ok(DoNotDisrupt::Always),
            "false" | "" => Ok(DoNotDisrupt::No),
            v => super::duration::parse_go_duration(v)
                .map(DoNotDisrupt::For)
                .ok_or_else(|| {
                    format!(
                        "invalid {DO_NOT_DISRUPT} value {v:?}: want \"true\", \"false\" or a duration like \"5m\""
                    )
                }),
        }
    }

    /// Whether it protects an object created at `created` at time `now`.
    pub fn active(self, created: i64, now: i64) -> bool {
        match self {
            DoNotDisrupt::No => false,
            DoNotDisrupt::Always => true,
            DoNotDisrupt::For(d) => now.saturating_sub(created) < d,
        }
    }
}

/// Drift facts of a node (detection — NodePool hash, requirements, provider — is the caller's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// Why (`NodePoolDrifted`, `RequirementsDrifted`, `InstanceTypeNotFound`, provider reason).
    pub reason: String,
    /// When the node was found drifted (oldest drift is replaced first).
    pub since: i64,
}

/// A node condition matching one of the cloud provider's repair policies (matching is the
/// caller's: the planner only reads when the policy's toleration ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhealthy {
    /// The condition type (`Ready`, `KWOKUnhealthy`, ...).
    pub condition: String,
    /// The condition's `lastTransitionTime` plus the policy's toleration: from then on the node
    /// is due for repair. `None` when the condition has no transition time: the node counts
    /// as unhealthy (against the 20% cap) but is never due.
    pub due: Option<i64>,
}

/// What the planner knows about one Karpenter-managed node (its [`crate::ExistingNode`] in
/// [`DisruptionProblem::problem`] has the same name and holds its pods). Nodes without a
/// `NodeState` are unmanaged: they receive pods but are never disrupted.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    /// Node name.
    pub name: String,
    /// `karpenter.sh/nodepool`.
    pub node_pool: String,
    /// `node.kubernetes.io/instance-type`.
    pub instance_type: String,
    /// `topology.kubernetes.io/zone`.
    pub zone: String,
    /// `karpenter.sh/capacity-type`.
    pub capacity_type: String,
    /// Price per hour of its offering; `None` when the catalog does not know it (the node can
    /// then only be disrupted for emptiness, drift or expiry).
    pub price: Option<f64>,
    /// Creation time.
    pub created: i64,
    /// Last pod scheduled/removed on it (`None`: none since creation).
    pub last_pod_event: Option<i64>,
    /// Initialized (registered, ready, startup taints gone).
    pub initialized: bool,
    /// Already being disrupted or deleted (marked for deletion, terminating, NotReady): counts
    /// against budgets, never a candidate, never a destination.
    pub disrupting: bool,
    /// Drifted, and since when.
    pub drifted: Option<Drift>,
    /// The node's `karpenter.sh/do-not-disrupt` (a duration counts from `created`).
    pub do_not_disrupt: DoNotDisrupt,
    /// Why emptiness and consolidation may not remove the node (e.g. its cloud node group is
    /// at its minimum size); drift and expiration still may (they replace it).
    pub scale_down_blocked: Option<String>,
    /// A condition matching a repair policy (node repair); `None` when healthy or when node
    /// repair does not run through the planner.
    pub unhealthy: Option<Unhealthy>,
    /// The node's [`DO_NOT_REPAIR`] is `"true"`.
    pub do_not_repair: bool,
}

/// What the planner knows about a bound pod, keyed by `namespace/name`; pods without one are
/// ordinary evictable pods (cost 1, priority 0, not protected).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodState {
    /// `namespace/name`.
    pub key: String,
    /// Owned by a DaemonSet: not rescheduled (it goes away with its node).
    pub daemon_set: bool,
    /// `karpenter.sh/do-not-disrupt` (a duration counts from `created`).
    pub do_not_disrupt: DoNotDisrupt,
    /// `karpenter.sh/disruption-cost`, else `controller.kubernetes.io/pod-deletion-cost`.
    pub deletion_cost: i64,
    /// `spec.priority`.
    pub priority: i32,
    /// Creation time.
    pub created: i64,
}

/// A PodDisruptionBudget, reduced to what candidacy needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdb {
    /// Namespace (it selects pods of this namespace only).
    pub namespace: String,
    /// `spec.selector` (an empty selector matches every pod of the namespace).
    pub selector: LabelSelector,
    /// `status.disruptionsAllowed`: 0 blocks eviction of the pods it selects.
    pub disruptions_allowed: i32,
}

/// Everything the planner looks at.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DisruptionProblem {
    /// Catalog, NodePools and DaemonSets (for replacements), and every node with its bound pods
    /// in `existing_nodes`. `pods` (pending pods) is ignored: plan provisioning first and bind
    /// its placements on existing nodes, so consolidation does not double-book their room.
    pub problem: Problem,
    /// Karpenter-managed nodes.
    pub nodes: Vec<NodeState>,
    /// Facts about bound pods.
    pub pods: Vec<PodState>,
    /// Per-NodePool disruption settings; a NodePool without one gets [`PoolPolicy::new`].
    pub policies: Vec<PoolPolicy>,
    /// PodDisruptionBudgets.
    pub pdbs: Vec<Pdb>,
    /// Node groups the provider keeps at a minimum size: emptiness and consolidation never take
    /// one below it (a node of a group with no room left is blocked; a command that would go
    /// past the room left is cut, or dropped for consolidation); drift and expiration are not
    /// limited (they replace their nodes).
    pub node_groups: Vec<NodeGroup>,
}

/// A group of managed nodes with a minimum size, e.g. a Cluster API MachineDeployment with
/// Cluster Autoscaler's `cluster-api-autoscaler-node-group-min-size` annotation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeGroup {
    /// How messages name the group.
    pub name: String,
    /// Its managed nodes (names), those already disrupting included.
    pub nodes: BTreeSet<String>,
    /// How many of `nodes` may go before the group is at its minimum; the planner subtracts
    /// the ones already disrupting.
    pub removable: usize,
}

/// Planner knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct DisruptionOptions {
    /// The current time, in the same unit and epoch as every timestamp of the input.
    pub now: i64,
    /// Allow replacing spot nodes with spot nodes (upstream's `SpotToSpotConsolidation`
    /// gate, off by default there); even then single-node needs [`Self::min_spot_options`]
    /// cheaper spot types, to avoid churn.
    pub spot_to_spot: bool,
    /// Cheaper spot instance types a single-node spot-to-spot replacement needs (upstream 15).
    pub min_spot_options: usize,
    /// Most candidates one multi-node command considers (upstream 100).
    pub max_parallel: usize,
    /// Cap on a replacement's `instance_type_options`.
    pub max_instance_type_options: usize,
}

impl Default for DisruptionOptions {
    fn default() -> Self {
        Self {
            now: 0,
            spot_to_spot: true,
            min_spot_options: 15,
            max_parallel: 100,
            max_instance_type_options: 60,
        }
    }
}

/// One disruption decision: delete `nodes`, launching `replacements` first.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    /// Why.
    pub reason: Reason,
    /// The nodes to remove.
    pub nodes: Vec<String>,
    /// New NodeClaims to launch first (0 or 1 for consolidation, any number for drift/expiry).
    pub replacements: Vec<PlannedNodeClaim>,
    /// Where the simulation put the nodes' pods that stay on existing nodes.
    pub placements: Vec<ExistingPlacement>,
    /// Pods that would find no place (only for expiration, which is forceful).
    pub unschedulable: Vec<String>,
    /// Σ removed node prices − Σ replacement prices (negative for a drift to a pricier type).
    pub savings_per_hour: f64,
}

/// How many nodes a NodePool may still disrupt for a reason when planning starts
/// (upstream gauge `karpenter_nodepools_allowed_disruptions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowed {
    /// NodePool.
    pub node_pool: String,
    /// Reason.
    pub reason: Reason,
    /// Nodes (saturated at `u32::MAX` when nothing limits).
    pub nodes: u32,
}

/// A managed node that is not a candidate, and why (for `simulate` and events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// Node.
    pub node: String,
    /// Why, in words.
    pub reason: String,
}

/// The planner's answer. Commands are budget-consistent with each other and were simulated in
/// order on the cluster left by the previous ones, so they may all run at once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DisruptionPlan {
    /// Commands, in decision order (expiration, emptiness, drift, multi-node, single-node).
    pub commands: Vec<Command>,
    /// Budgets at the start, per NodePool and reason.
    pub allowed: Vec<Allowed>,
    /// Managed nodes excluded from voluntary disruption, and why.
    pub blocked: Vec<Blocked>,
    /// Commands cut or dropped to keep node groups at their minimum size, a line each.
    pub notes: Vec<String>,
    /// Unhealthy nodes due for repair that this plan does not repair, and why.
    pub repair_blocked: Vec<RepairBlocked>,
    /// Consolidation moves scored while planning: every single-node move found valid, and per
    /// multi-node search the chosen move (or, when none was chosen, the last one a `Balanced`
    /// NodePool rejected), as upstream reports them.
    pub moves: Vec<ScoredMove>,
}

/// An unhealthy node due for repair that is not repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairBlocked {
    /// Node.
    pub node: String,
    /// Its NodePool.
    pub node_pool: String,
    /// Why.
    pub why: RepairBlock,
}

/// Why a node due for repair is not repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepairBlock {
    /// The node has [`DO_NOT_REPAIR`] (upstream: a `DisruptionBlocked` event).
    DoNotRepair,
    /// More than [`REPAIR_UNHEALTHY_PERCENT`] of the NodePool's nodes are unhealthy (a
    /// correlated failure: replacing them would not help; upstream `NodeRepairBlocked`).
    TooManyUnhealthy {
        /// Unhealthy nodes of the NodePool (due or not).
        unhealthy: u32,
        /// Nodes of the NodePool.
        nodes: u32,
    },
    /// Some of its pods would find no place, even on new nodes (upstream: a
    /// `DisruptionBlocked` event naming the scheduling errors).
    Unschedulable(Vec<String>),
}

/// Upstream `repairUnhealthyThreshold` (20%): a NodePool with more of its nodes unhealthy
/// (rounded up, so one unhealthy node of a small NodePool is still repaired) is not repaired.
pub const REPAIR_UNHEALTHY_PERCENT: u32 = 20;

impl DisruptionPlan {
    /// Σ savings of every command.
    pub fn savings_per_hour(&self) -> f64 {
        self.commands.iter().map(|c| c.savings_per_hour).sum()
    }
}

/// Input the planner refuses.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DisruptionError {
    /// The provisioning solver refused a simulation's input.
    #[error(transparent)]
    Solve(#[from] SolveError),
    /// A [`NodeState`] names a node that is not in `problem.existing_nodes`.
    #[error("node state for {0:?}, which is not among the existing nodes")]
    UnknownNode(String),
    /// Two nodes share a name.
    #[error("node {0:?} is listed twice")]
    DuplicateNode(String),
}
