//! The AWS provider for karpenter-rs.
//!
//! - Always available, no AWS SDK: the embedded static catalog ([`catalog()`]) of us-east-1
//!   instance types and prices, and the upstream allocatable/label computation
//!   ([`InstanceTypeInfo`]) it shares with the live provider, with an EC2NodeClass's kubelet
//!   overrides ([`KubeletOverrides`]), the node bootstrap user data per image family
//!   ([`userdata`]), and the node repair policies ([`repair`]).
//! - Feature `sdk`: the EC2 provider (NodeClass resolution, instance types, launch via
//!   CreateFleet, terminate, list) on the official AWS SDK for Rust, the `CloudProvider` impl
//!   with drift, the EC2NodeClass status controller (IAM checks) and the SQS interruption
//!   controller.

pub mod catalog;
pub mod instance_type;
pub mod kubelet;
pub mod repair;
pub mod userdata;

pub use catalog::{StaticCatalog, catalog};
pub use instance_type::{InstanceTypeInfo, SPOT_PRICE_RATIO};
pub use kubelet::{KubeletError, KubeletOverrides, KubeletSpec};

#[cfg(feature = "sdk")]
pub mod sdk;
