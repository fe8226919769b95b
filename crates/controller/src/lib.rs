//! kube-rs control loops: provisioning, NodeClaim lifecycle, termination, disruption, GC.
