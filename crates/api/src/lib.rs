//! Kubernetes API types for karpenter-rs: `karpenter.sh/v1` NodePool and NodeClaim, the legacy
//! `karpenter.sh/v1alpha5` Provisioner (converted on read, [`conversion`]), the provider
//! NodeClasses ([`kwok::KWOKNodeClass`], [`ec2::EC2NodeClass`]), the CRD manifests
//! ([`all_crds`], [`crds_yaml`]), the `autoscaling.x-k8s.io` CapacityBuffer ([`autoscaling`]) and validation ([`validation`]) that mirrors the CRDs' CEL
//! rules for objects that never reach an apiserver.

pub mod autoscaling;
pub mod conversion;
pub mod crds;
pub mod ec2;
pub mod kwok;
pub mod labels;
pub mod read;
pub mod rules;
mod schema;
pub mod solver_input;
pub mod v1;
pub mod v1alpha1;
pub mod v1alpha5;
pub mod validation;

pub use conversion::Converted;
pub use crds::{all_crds, crds_yaml};
pub use read::{Document, KarpenterObject, ObjectError, ReadError, parse_karpenter_objects};
pub use validation::{FieldError, ValidationErrors};
