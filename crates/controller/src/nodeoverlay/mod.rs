//! NodeOverlays (feature gate `NodeOverlay`, upstream `pkg/controllers/nodeoverlay` and
//! `pkg/cloudprovider/overlay`): the overlays of the cluster state applied to each NodePool's
//! catalog right after the provider lists it, for provisioning and disruption alike
//! ([`apply`]), and their status conditions written by the [`status`] loop.
//!
//! The overlays are read from the state at every round, so a change takes effect on the next
//! provisioning batch (and the change itself asks for one). Which overlays conflict is decided
//! by the same pure function in both places ([`evaluate`]), so the catalog never uses an overlay
//! whose status says it was left out. Overlays naming `karpenter.sh/nodepool` or a NodePool
//! template label key apply per NodePool (the round's merged catalog then lists a type once
//! per NodePool that sees it differently, [`karpenter_solver::overlay::merge_catalogs`]).

pub mod launch;
pub mod status;

use std::collections::BTreeMap;
use std::sync::Arc;

use karpenter_api::solver_input::{self, ConvertError};
use karpenter_api::v1::NodePool;
use karpenter_solver::InstanceType;
use karpenter_solver::overlay::{Evaluation, PoolLabels, apply_overlays_per_pool};

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

/// NodePool name → template labels (what per-NodePool overlays may require).
fn pool_labels(pools: &[Arc<NodePool>]) -> PoolLabels {
    pools
        .iter()
        .map(|np| {
            let name = np.metadata.name.clone().unwrap_or_default();
            (name, np.spec.template.metadata.labels.clone())
        })
        .collect()
}

/// Applies the cluster's NodeOverlays to `catalogs` (NodePool name → instance types; `pools`
/// gives their template labels) and says which were left out. Pure given the overlays: no
/// API calls.
pub fn evaluate(
    overlays: &[Arc<karpenter_api::v1alpha1::NodeOverlay>],
    pools: &[Arc<NodePool>],
    catalogs: &mut BTreeMap<String, Vec<InstanceType>>,
) -> Outcome {
    let (good, invalid) = solver_input::overlays(overlays.iter().map(AsRef::as_ref));
    let evaluation = if good.is_empty() {
        Evaluation::default()
    } else {
        apply_overlays_per_pool(catalogs, &pool_labels(pools), &good)
    };
    Outcome {
        invalid,
        evaluation,
    }
}

/// With the `NodeOverlay` gate on, applies the state's NodeOverlays to `catalogs`; otherwise
/// leaves them as the provider listed them (`pools`: the NodePools, for their template
/// labels). The resulting prices are kept for the NodeClaims created from this round's plan
/// ([`launch::LaunchPrices`]).
pub fn apply(
    ctx: &Context,
    pools: &[Arc<NodePool>],
    catalogs: &mut BTreeMap<String, Vec<InstanceType>>,
) {
    if !ctx.options.node_overlay {
        return;
    }
    let overlays = ctx.state.node_overlays.state();
    if overlays.is_empty() {
        ctx.launch_prices.record(Prices::default());
        return;
    }
    let before = catalogs.clone();
    let outcome = evaluate(&overlays, pools, catalogs);
    let (prices, capacity) = launch::overlaid(&before, catalogs);
    tracing::debug!(
        overlays = overlays.len(),
        invalid = outcome.invalid.len(),
        conflicting = outcome.evaluation.conflicts.len(),
        "applied nodeoverlays to the catalog"
    );
    ctx.launch_prices
        .record(Prices::new(catalogs, prices, capacity));
}
