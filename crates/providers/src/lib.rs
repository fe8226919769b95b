//! Cloud providers behind one [`CloudProvider`] trait: `kwok` (simulated nodes) and, later,
//! `aws`.

pub mod cloudprovider;
pub mod kwok;

pub use cloudprovider::{
    CloudProvider, CloudProviderError, NodeGroupFloor, OfferingKey, RepairPolicy,
    UnavailableOfferings,
};
