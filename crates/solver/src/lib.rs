//! The scheduling solver: a pure, synchronous library that turns pending pods, NodePools and an
//! instance-type catalog into NodeClaim decisions. No Kubernetes client, no async, no clock.
