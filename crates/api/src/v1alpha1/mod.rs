//! `karpenter.sh/v1alpha1`: NodeOverlay (alpha), price and capacity overrides applied to the
//! instance-type catalog before scheduling.

pub mod nodeoverlay;
mod validation;

pub use nodeoverlay::{
    CAPACITY_OVERLAY_APPLIED_ANNOTATION, CONDITION_READY, CONDITION_VALIDATION_SUCCEEDED,
    NodeOverlay, NodeOverlaySpec, NodeOverlayStatus, OverlayRequirement,
    PRICE_OVERLAY_APPLIED_ANNOTATION,
};
pub use validation::validate_node_overlay;
