//! NodeClaim control loops.

pub mod lifecycle;
pub mod podevents;
