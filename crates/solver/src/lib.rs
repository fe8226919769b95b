//! The scheduling solver: a pure, synchronous library that turns pending pods, NodePools and an
//! instance-type catalog into NodeClaim decisions. No Kubernetes client, no async, no clock.
//!
//! Entry points:
//! - [`solve`]`(&Problem, &Options) -> Result<Plan, SolveError>`: place every pending pod on an
//!   existing node or a new NodeClaim (cheapest offering), or report why it cannot be placed,
//!   plus a proven cost lower bound.
//! - [`explain`]`(&Problem, "ns/name", &Options) -> Result<Vec<String>, SolveError>`: the full
//!   why-not for one pod, per NodePool and instance type (`simulate --explain`).
//! - [`lower_bound`]`(&Problem, &[pod indices]) -> f64`: the LP bound on its own.
//! - [`effective_pod_requests`]: pod requests from per-container requests (init/sidecar rules).
//! - [`disruption::plan`]`(&DisruptionProblem, &DisruptionOptions) -> Result<DisruptionPlan, _>`:
//!   emptiness, drift, expiration and consolidation commands within budgets.
//! - [`overlay::apply_overlays`]`(&mut [InstanceType], &[Overlay]) -> Evaluation`: NodeOverlay
//!   price and capacity changes applied to a catalog before solving.
//! - [`quantity::parse_milli`] / [`quantity::parse_base`] / [`Resources::parse`]: exact quantities.
//!
//! Model types live in [`model`]; the algebra in [`requirements`], [`taints`], [`selector`].

pub mod bound;
pub mod disruption;
pub mod error;
pub mod instance_type;
pub mod labels;
pub mod model;
mod optimise;
pub mod overlay;
pub mod quantity;
pub mod requirements;
pub mod resources;
pub mod scheduling;
pub mod selector;
pub mod static_pool;
pub mod taints;

pub use bound::lower_bound;
pub use error::SolveError;
pub use instance_type::{InstanceType, Offering, Overhead, Reservation};
pub use model::{
    DaemonSetView, ExistingNode, ExistingPlacement, HostPort, Labels, NodePoolView, Options, Plan,
    PlannedNodeClaim, PodAffinityTerm, PodView, Problem, TopologySpreadConstraint, Unschedulable,
    WeightedNodeSelectorTerm, WeightedPodAffinityTerm, WhenUnsatisfiable,
};
pub use quantity::QuantityError;
pub use requirements::{
    NodeSelectorRequirement, NodeSelectorTerm, Operator, Requirement, Requirements,
};
pub use resources::{ContainerRequests, Resources, effective_pod_requests};
pub use scheduling::{explain, solve};
pub use selector::{LabelSelector, SelectorOperator, SelectorRequirement};
pub use taints::{Taint, TaintEffect, Toleration, TolerationOperator};
