//! Reading Karpenter objects from manifests: multi-document YAML in, typed and validated
//! objects out, with errors that name the document, the object and the field.
//!
//! Every reader of users' YAML goes through [`yaml_options`] / [`yaml_documents`]: any number of
//! documents and any size (a `kubectl get pods -A -o yaml` of a large cluster is one List
//! document of millions of nodes), one document in memory at a time, while YAML bombs (aliases
//! expanding into far more than the input) still fail fast.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::autoscaling::{self, CapacityBuffer};
use crate::ec2::EC2NodeClass;
use crate::kwok::KWOKNodeClass;
use crate::v1::{NodeClaim, NodePool};
use crate::v1alpha1::{self, NodeOverlay};
use crate::v1alpha5::Provisioner;
use crate::validation::{self, ValidationErrors};

/// A typed Karpenter object.
#[derive(Clone, Debug, PartialEq)]
pub enum KarpenterObject {
    /// `karpenter.sh/v1` NodePool.
    NodePool(Box<NodePool>),
    /// `karpenter.sh/v1` NodeClaim.
    NodeClaim(Box<NodeClaim>),
    /// `karpenter.k8s.aws/v1` EC2NodeClass.
    EC2NodeClass(Box<EC2NodeClass>),
    /// `karpenter.kwok.sh/v1alpha1` KWOKNodeClass.
    KWOKNodeClass(Box<KWOKNodeClass>),
    /// Legacy `karpenter.sh/v1alpha5` Provisioner.
    Provisioner(Box<Provisioner>),
    /// `karpenter.sh/v1alpha1` NodeOverlay.
    NodeOverlay(Box<NodeOverlay>),
    /// `autoscaling.x-k8s.io/v1beta1` CapacityBuffer.
    CapacityBuffer(Box<CapacityBuffer>),
}

impl KarpenterObject {
    /// The object's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NodePool(_) => "NodePool",
            Self::NodeClaim(_) => "NodeClaim",
            Self::EC2NodeClass(_) => "EC2NodeClass",
            Self::KWOKNodeClass(_) => "KWOKNodeClass",
            Self::Provisioner(_) => "Provisioner",
            Self::NodeOverlay(_) => "NodeOverlay",
            Self::CapacityBuffer(_) => "CapacityBuffer",
        }
    }

    /// The object's name ("" when unset).
    pub fn name(&self) -> &str {
        let meta = match self {
            Self::NodePool(o) => &o.metadata,
            Self::NodeClaim(o) => &o.metadata,
            Self::EC2NodeClass(o) => &o.metadata,
            Self::KWOKNodeClass(o) => &o.metadata,
            Self::Provisioner(o) => &o.metadata,
            Self::NodeOverlay(o) => &o.metadata,
            Self::CapacityBuffer(o) => &o.metadata,
        };
        meta.name.as_deref().unwrap_or("")
    }

    /// Runs the in-code validation for the object's kind.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        match self {
            Self::NodePool(o) => validation::validate_node_pool(o),
            Self::NodeClaim(o) => validation::validate_node_claim(o),
            Self::EC2NodeClass(o) => validation::validate_ec2_node_class(o),
            Self::KWOKNodeClass(o) => validation::validate_kwok_node_class(o),
            Self::Provisioner(o) => validation::validate_provisioner(o),
            Self::NodeOverlay(o) => v1alpha1::validate_node_overlay(o),
            Self::CapacityBuffer(o) => autoscaling::validate_capacity_buffer(o),
        }
    }

    /// The object as JSON (what would be sent to an apiserver).
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        match self {
            Self::NodePool(o) => serde_json::to_value(o),
            Self::NodeClaim(o) => serde_json::to_value(o),
            Self::EC2NodeClass(o) => serde_json::to_value(o),
            Self::KWOKNodeClass(o) => serde_json::to_value(o),
            Self::Provisioner(o) => serde_json::to_value(o),
            Self::NodeOverlay(o) => serde_json::to_value(o),
            Self::CapacityBuffer(o) => serde_json::to_value(o),
        }
    }
}

/// Why one object could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// The object does not match the type (wrong type, unknown enum value, missing field).
    #[error("{kind} \"{name}\": {path}: {message}")]
    Decode {
        /// Kind of the object.
        kind: String,
        /// Name of the object.
        name: String,
        /// Path of the offending field.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The object parsed but breaks a validation rule.
    #[error(transparent)]
    Invalid(#[from] ValidationErrors),
}

/// Why a manifest stream could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The text is not YAML.
    #[error("invalid YAML: {0}")]
    Yaml(String),
    /// One document is not a valid object.
    #[error("document {index}: {source}")]
    Object {
        /// 0-based index of the document among the non-empty documents.
        index: usize,
        /// The problem.
        #[source]
        source: ObjectError,
    },
}

/// One document of a manifest stream.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    /// 0-based index among the stream's non-empty documents.
    pub index: usize,
    /// The document as JSON.
    pub value: Value,
    /// The typed object, when the document is a Karpenter kind.
    pub object: Option<KarpenterObject>,
}

/// serde-saphyr options for users' manifests. serde-saphyr's default budget caps the number of
/// documents (1 024), parser events (1 M), nodes (250 k) and scalar bytes (64 MiB); those grow
/// linearly with the input, so here they are lifted and only memory bounds them. What stays:
/// the caps on aliases, anchors and replayed alias events (a "billion laughs" bomb expands a few
/// hundred bytes exponentially; those caps stop it), the nesting depth (64: it protects the
/// stack) and the merge-key cap, all per document.
pub fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: None,
            max_documents: usize::MAX,
            max_events: usize::MAX,
            max_nodes: usize::MAX,
            max_total_scalar_bytes: usize::MAX,
        },
    }
}

/// The non-empty documents of a multi-document YAML stream, read one at a time with
/// [`yaml_options`] and deserialized into `T`. Empty and `null` documents are skipped (they are
/// not counted by document indices either). Stop at the first error: after a syntax error the
/// stream ends anyway, after a bad document the reader would go on with the next one.
pub fn yaml_documents<'a, R, T>(
    reader: &'a mut R,
) -> impl Iterator<Item = Result<T, serde_saphyr::Error>> + 'a
where
    R: std::io::Read + 'a,
    T: DeserializeOwned + 'a,
{
    serde_saphyr::read_with_options(reader, yaml_options())
}

fn decode<T: DeserializeOwned>(value: Value, kind: &str, name: &str) -> Result<T, ObjectError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ObjectError::Decode {
            kind: kind.to_owned(),
            name: name.to_owned(),
            path,
            message: e.into_inner().to_string(),
        }
    })
}

/// Types and validates one document. `Ok(None)` for kinds that are not Karpenter's.
pub fn object_from_value(value: Value) -> Result<Option<KarpenterObject>, ObjectError> {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let name = value
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let object = match (api_version, kind.as_str()) {
        ("karpenter.sh/v1", "NodePool") => {
            KarpenterObject::NodePool(Box::new(decode(value, &kind, &name)?))
        }
        ("karpenter.sh/v1", "NodeClaim") => {
            KarpenterObject::NodeClaim(Box::new(decode(value, &kind, &name)?))
        }
        ("karpenter.k8s.aws/v1", "EC2NodeClass") => {
            KarpenterObject::EC2NodeClass(Box::new(decode(value, &kind, &name)?))
        }
        ("karpenter.kwok.sh/v1alpha1", "KWOKNodeClass") => {
            // Like upstream, spec may be left out (the CRD defaults it to `{}`; so does this).
            let mut value = value;
            if let Some(obj) = value.as_object_mut() {
                obj.entry("spec")
                    .or_insert_with(|| Value::Object(serde_json::Map::new()));
            }
            KarpenterObject::KWOKNodeClass(Box::new(decode(value, &kind, &name)?))
        }
        ("karpenter.sh/v1alpha5", "Provisioner") => {
            KarpenterObject::Provisioner(Box::new(decode(value, &kind, &name)?))
        }
        ("karpenter.sh/v1alpha1", "NodeOverlay") => {
            KarpenterObject::NodeOverlay(Box::new(decode(value, &kind, &name)?))
        }
        ("autoscaling.x-k8s.io/v1beta1", "CapacityBuffer") => {
            KarpenterObject::CapacityBuffer(Box::new(decode(value, &kind, &name)?))
        }
        (v, "NodePool" | "NodeClaim" | "Provisioner" | "Machine" | "AWSNodeTemplate")
            if v.starts_with("karpenter.sh/") || v.starts_with("karpenter.k8s.aws/") =>
        {
            return Err(ObjectError::Decode {
                kind,
                name,
                path: "apiVersion".to_owned(),
                message: format!(
                    "{v} is not supported; use karpenter.sh/v1 (or the legacy karpenter.sh/v1alpha5 Provisioner)"
                ),
            });
        }
        _ => return Ok(None),
    };
    object.validate()?;
    Ok(Some(object))
}

/// Reads a multi-document YAML stream; every Karpenter object is typed and validated, other
/// documents are passed through untyped. The first bad document fails the whole stream.
pub fn parse_karpenter_objects(yaml: &str) -> Result<Vec<Document>, ReadError> {
    let mut bytes = yaml.as_bytes();
    yaml_documents::<_, Value>(&mut bytes)
        .map(|value| value.map_err(|e| ReadError::Yaml(e.to_string())))
        .filter(|v| !matches!(v, Ok(Value::Null)))
        .enumerate()
        .map(|(index, value)| {
            let value = value?;
            let object = object_from_value(value.clone())
                .map_err(|source| ReadError::Object { index, source })?;
            Ok(Document {
                index,
                value,
                object,
            })
        })
        .collect()
}
