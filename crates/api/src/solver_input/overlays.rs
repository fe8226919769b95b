//! NodeOverlays → the solver's [`Overlay`]s, for the controller and `simulate` alike.

use std::collections::BTreeMap;

use karpenter_solver::overlay::{Overlay, PriceChange};

use super::{ConvertError, describe, parse_resources, requirement_of};
use crate::v1alpha1::{NodeOverlay, validate_node_overlay};

/// One NodeOverlay as the solver's overlay. The CRD's rules are checked again (objects from
/// files never met an apiserver), so a bad overlay is an error naming its field.
pub fn overlay(o: &NodeOverlay) -> Result<Overlay, ConvertError> {
    let name = o.metadata.name.as_deref().unwrap_or("");
    let object = describe("NodeOverlay", None, o.metadata.name.as_deref());
    let err = |path: &str, message: String| ConvertError {
        object: object.clone(),
        path: path.to_owned(),
        message,
    };
    if let Err(e) = validate_node_overlay(o) {
        let first = e.errors.into_iter().next();
        let (path, message) = first.map_or((String::new(), String::new()), |f| (f.path, f.message));
        return Err(err(&path, message));
    }
    let price = match (&o.spec.price, &o.spec.price_adjustment) {
        (Some(p), _) => Some(PriceChange::price(p).map_err(|e| err("spec.price", e.to_string()))?),
        (None, Some(a)) => Some(
            PriceChange::adjustment(a).map_err(|e| err("spec.priceAdjustment", e.to_string()))?,
        ),
        (None, None) => None,
    };
    let capacity = parse_resources(&object, "spec.capacity", &o.spec.capacity)?;
    let requirements: Vec<_> = o.spec.requirements.iter().map(requirement_of).collect();
    Overlay::new(name, o.weight(), &requirements, price, capacity)
        .map_err(|e| err("spec.requirements", e.to_string()))
}

/// Every overlay converted; the ones that cannot be are returned apart, by name, with why
/// (upstream marks them `ValidationSucceeded=False`, reason `RuntimeValidation`, and goes on
/// without them).
pub fn overlays<'a>(
    all: impl IntoIterator<Item = &'a NodeOverlay>,
) -> (Vec<Overlay>, BTreeMap<String, ConvertError>) {
    let mut good = Vec::new();
    let mut bad = BTreeMap::new();
    for o in all {
        match overlay(o) {
            Ok(v) => good.push(v),
            Err(e) => {
                bad.insert(o.metadata.name.clone().unwrap_or_default(), e);
            }
        }
    }
    (good, bad)
}
