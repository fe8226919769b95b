//! NodeClaim control loops.

pub mod deadline;
pub mod lifecycle;
pub mod podevents;
pub mod superseded;
