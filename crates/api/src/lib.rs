//! Kubernetes API types for karpenter-rs: `karpenter.sh/v1` NodePool and NodeClaim, the legacy
//! `karpenter.sh/v1alpha5` Provisioner (converted on read), and the provider NodeClasses.
