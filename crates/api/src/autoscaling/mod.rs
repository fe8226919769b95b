//! `autoscaling.x-k8s.io/v1beta1`: CapacityBuffer (alpha, feature gate `CapacityBuffer`), the
//! API Karpenter shares with Cluster Autoscaler to keep spare capacity: each buffer stands for
//! N placeholder ("virtual") pods shaped by a PodTemplate, which get room on nodes but never
//! run.

pub mod capacitybuffer;
pub mod replicas;
pub mod virtual_pods;

pub use capacitybuffer::{
    ACTIVE_PROVISIONING_STRATEGY, BUFFER_NAME_ANNOTATION, BUFFER_NAMESPACE_ANNOTATION,
    CONDITION_PROVISIONING, CONDITION_READY_FOR_PROVISIONING, CapacityBuffer, CapacityBufferSpec,
    CapacityBufferStatus, FAKE_POD_ANNOTATION, LocalObjectRef, ScalableRef,
    validate_capacity_buffer,
};
pub use replicas::{desired_replicas, limit_replicas, percentage_replicas};
pub use virtual_pods::{is_virtual_pod, virtual_pods};
