//! Cluster API provider for karpenter-rs (`--cloud-provider clusterapi`).
//!
//! - **Catalog**: every MachineDeployment labelled [`shape::MEMBER_LABEL`] is one offering of
//!   one instance type, shaped by Cluster Autoscaler's scale-from-zero annotations
//!   (`capacity.cluster-autoscaler.kubernetes.io/*`), so a cluster set up for Cluster
//!   Autoscaler works unchanged; price and capacity type come from our annotations
//!   ([`shape::PRICE_ANNOTATION`], [`shape::CAPACITY_TYPE_ANNOTATION`]). A MachineDeployment at
//!   its max size (or paused) is unavailable; one with unreadable annotations is left out with
//!   an error naming it and the annotation. Both get a Kubernetes Event on the
//!   MachineDeployment ([`report`]).
//! - **Launch**: one Machine per NodeClaim, named after it (so a retry after a crash finds it
//!   instead of launching twice), from the chosen MachineDeployment's Machine template, with
//!   the infrastructure machine and bootstrap config cloned from its templates. The NodeClaim
//!   is launched once the infrastructure provider sets the Machine's providerID; a Machine
//!   without one after the launch timeout makes its offering unavailable for a while and the
//!   launch fails as insufficient capacity (the NodeClaim is replaced elsewhere).
//! - **Scale mode** (a MachineDeployment annotated [`shape::LAUNCH_MODE_ANNOTATION`]`: scale`):
//!   the MachineDeployment owns the Machines; a launch raises its `spec.replicas` and takes the
//!   Machine its MachineSet creates, a delete marks it `cluster.x-k8s.io/delete-machine` and
//!   lowers `spec.replicas`, each in writes conditioned on resourceVersions ([`scale`]).
//! - **Delete** deletes the Machine (CAPI drains and deletes the Node and the infrastructure);
//!   **get/list** find our Machines by label; **drift** is a change of the MachineDeployment's
//!   infrastructure or bootstrap template or Kubernetes version.
//! - **Reads**: one watch on the opted-in MachineDeployments and one on our Machines, started
//!   on first use; the catalog and the min-size floors come from memory, with our own latest
//!   writes counted before the watches show them (`provider::cache`).
//! - **Min size**: [`catalog::floors`] tells disruption how many of a MachineDeployment's
//!   Machines may go before it is at Cluster Autoscaler's min size
//!   ([`shape::MIN_SIZE_ANNOTATION`]); emptiness and consolidation keep the rest.

pub mod catalog;
pub mod machine;
pub mod provider;
pub mod report;
pub mod scale;
pub mod shape;

pub use provider::{ClusterApiProvider, PROVIDER_NAME};
pub use shape::{Shape, ShapeError};
