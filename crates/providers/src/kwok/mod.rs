//! The kwok provider: simulated instances, generated catalog.

pub mod catalog;

pub use catalog::catalog;
