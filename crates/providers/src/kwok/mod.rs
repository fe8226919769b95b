//! The kwok provider: simulated instances (Node objects kwok keeps Ready), generated catalog.

pub mod catalog;
pub mod launch;
pub mod provider;

pub use catalog::catalog;
pub use launch::{MANAGED_LABEL, PROVIDER_ID_PREFIX};
pub use provider::{KWOK_UNHEALTHY_CONDITION, KwokProvider, repair_policies};
