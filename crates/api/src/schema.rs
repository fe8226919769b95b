//! Hand-written schema fragments for field shapes schemars cannot describe structurally on its
//! own (free-form maps, int-or-string quantities, raw embedded objects).

use schemars::{Schema, SchemaGenerator, json_schema};

/// Kubernetes quantity syntax (`100m`, `1.5Gi`, `1e3`), as in upstream's generated CRDs.
pub const QUANTITY_PATTERN: &str = r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$";

/// Upper bound on entries in label maps (upstream: 100).
pub const MAX_LABELS: u32 = 100;
/// Upper bound on entries in resource lists.
pub const MAX_RESOURCES: u32 = 100;

/// A quantity that accepts a YAML integer (`cpu: 1000`) as well as a string.
pub(crate) fn quantity() -> Schema {
    json_schema!({
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "pattern": QUANTITY_PATTERN,
        "x-kubernetes-int-or-string": true,
    })
}

/// `map[resource name]quantity` (a `ResourceList`).
pub(crate) fn resource_list(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": MAX_RESOURCES,
        "additionalProperties": quantity(),
    })
}

/// Label map: bounded entries and value length so CEL rules over keys stay cheap.
pub(crate) fn label_map(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "maxProperties": MAX_LABELS,
        "additionalProperties": {"type": "string", "maxLength": 63},
    })
}

/// Free-form string map (annotations, tags).
pub(crate) fn string_map(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": {"type": "string"},
    })
}

/// An embedded object kept verbatim (legacy `provider` blobs).
pub(crate) fn raw_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// A single optional quantity field.
pub(crate) fn optional_quantity(_: &mut SchemaGenerator) -> Schema {
    quantity()
}
