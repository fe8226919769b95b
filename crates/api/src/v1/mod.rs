//! `karpenter.sh/v1`: NodePool and NodeClaim.

pub mod common;
pub mod nodeclaim;
pub mod nodepool;

pub use common::{
    Condition, NodeClassReference, NodeSelectorRequirementWithMinValues, Operator, Taint,
    TaintEffect, find_condition, parse_duration, parse_nillable_duration,
};
pub use nodeclaim::{NodeClaim, NodeClaimSpec, NodeClaimStatus, ResourceRequirements};
pub use nodepool::{
    Budget, ConsolidationPolicy, Disruption, DisruptionReason, NodeClaimTemplate,
    NodeClaimTemplateSpec, NodePool, NodePoolSpec, NodePoolStatus, TemplateMetadata,
};
