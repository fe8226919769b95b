//! Legacy `karpenter.sh/v1alpha5`: the Provisioner, converted to v1 on read.

pub mod provisioner;

pub use provisioner::{
    Consolidation, LegacyKubeletConfiguration, Limits, ProviderRef, Provisioner, ProvisionerSpec,
    ProvisionerStatus,
};
