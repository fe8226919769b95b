//! Node control loops.

pub mod repair;
pub mod termination;
