//! Which pods the provisioner considers. The predicates live in [`crate::pods`] (the cluster
//! state indexes by them too); these re-exports keep the paths the disruption loop imports.

pub use crate::pods::{is_daemon_set_pod, is_mirror_pod, is_provisionable, is_terminal, pod_key};
