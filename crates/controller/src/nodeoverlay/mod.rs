//! NodeOverlays (feature gate `NodeOverlay`, upstream `pkg/controllers/nodeoverlay` and
//! `pkg/cloudprovider/overlay`): the overlays of the cluster state applied to each NodePool's
//! catalog right after the provider lists it, for provisioning and disruption alike
//! ([`apply`]), and their status conditions written by the [`status`] loop.
//!
//! The overlays are read from the state at every round, so a change takes effect on the next
//! provisioning batch (and the change itself asks for one). Which overlays conflict is decided
//! by the same pure function in both places ([`evaluate`]), so the catalog never uses an overlay
//! whose status says it was left out.

pub mod launch;
pub mod status;

use std::collections::BTreeMap;

use karpenter_api::solver_input::{self, ConvertError};
use karpenter_solver::InstanceType;
use karpenter_solver::overlay::{Evaluation, apply_overlays_per_pool};

use crate::context::Context;
use launch::Prices;

/// What became of the overlays over a set of catalogs.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Overlays that could not be used (malformed), by name.
    pub invalid: BTreeMap<String, ConvertError>,
    /// Overlays left out for a conflict.
    pub evaluation: Evaluation,
}

/// Applies the cluster's NodeOverlays to `catalogs` (NodePool name → instance types) and says
/// which were left out. Pure given the overlays: no API calls.
pub fn evaluate(
    overlays: &[std::sync::Arc<karpenter_api::v1alpha1::NodeOverlay>],
    catalogs: &mut BTreeMap<String, Vec<InstanceType>>,
) -> Outcome {
    let (good, invalid) = solver_input::overlays(overlays.iter().map(AsRef::as_ref));
    let evaluation = if good.is_empty() {
        Evaluation::default()
    } else {
        apply_overlays_per_pool(catalogs, &good)
    };
    Outcome {
        invalid,
        evaluation,
    }
}

/// With the `NodeOverlay` gate on, applies the state's NodeOverlays to `catalogs`; otherwise
/// leaves them as the provider listed them. The resulting prices are kept for the NodeClaims
/// created from this round's plan ([`launch::LaunchPrices`]).
pub fn apply(ctx: &Context, catalogs: &mut BTreeMap<String, Vec<InstanceType>>) {
    if !ctx.options.node_overlay {
        return;
    }
    let overlays = ctx.state.node_overlays.state();
    if overlays.is_empty() {
        ctx.launch_prices.record(Prices::default());
        return;
    }
    let before = catalogs.clone();
    let outcome = evaluate(&overlays, catalogs);
    let (prices, capacity) =
        launch::overlaid(before.values().flatten(), catalogs.values().flatten());
    tracing::debug!(
        overlays = overlays.len(),
        invalid = outcome.invalid.len(),
        conflicting = outcome.evaluation.conflicts.len(),
        "applied nodeoverlays to the catalog"
    );
    ctx.launch_prices
        .record(Prices::new(catalogs.values().flatten(), prices, capacity));
}
