//! The kwok provider: simulated instances (Node objects kwok keeps Ready), generated catalog.

pub mod catalog;
pub mod launch;
pub mod provider;
pub mod reservations;

pub use catalog::catalog;
pub use launch::{MANAGED_LABEL, PROVIDER_ID_PREFIX};
pub use provider::{KWOK_UNHEALTHY_CONDITION, KwokProvider, repair_policies};
pub use reservations::{KwokReservation, add_reservations, parse_reservations};
