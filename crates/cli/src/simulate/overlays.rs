//! NodeOverlays in the input: applied to the catalog before solving. simulate has no feature
//! gates: the user gave the overlays, so they apply (the controller needs `NodeOverlay=true`).
//! An overlay left out for a conflict is a warning naming the overlay it conflicts with.
//! Overlays naming `karpenter.sh/nodepool` or a NodePool template label apply per NodePool
//! (the catalog then lists a type once per NodePool that sees it differently).

use karpenter_api::read::{KarpenterObject, object_from_value};
use karpenter_api::solver_input;
use karpenter_solver::Problem;
use karpenter_solver::overlay::apply_overlays_to_problem;

use super::convert::ConvertError;
use super::manifests::Manifests;

/// Applies every NodeOverlay of `manifests` to `problem`'s catalog; a malformed overlay is an
/// error naming its document and field.
pub fn apply(
    manifests: &Manifests,
    problem: &mut Problem,
    warnings: &mut Vec<String>,
) -> Result<(), ConvertError> {
    let mut overlays = Vec::new();
    for doc in manifests
        .karpenter
        .iter()
        .filter(|d| d.kind == "NodeOverlay")
    {
        let object = object_from_value(doc.value.clone()).map_err(|e| ConvertError::Object {
            source_doc: doc.source.clone(),
            message: e.to_string(),
        })?;
        let Some(KarpenterObject::NodeOverlay(o)) = object else {
            continue;
        };
        let overlay = solver_input::overlay(&o).map_err(|e| ConvertError::Object {
            source_doc: doc.source.clone(),
            message: e.to_string(),
        })?;
        overlays.push(overlay);
    }
    if overlays.is_empty() {
        return Ok(());
    }
    let evaluation = apply_overlays_to_problem(problem, &overlays);
    for (name, conflict) in &evaluation.conflicts {
        warnings.push(format!(
            "warning: NodeOverlay {name}: not applied: {conflict}"
        ));
    }
    Ok(())
}
