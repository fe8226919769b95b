//! NodeClaim control loops.

pub mod lifecycle;
