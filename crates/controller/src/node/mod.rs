//! Node control loops.

pub mod termination;
