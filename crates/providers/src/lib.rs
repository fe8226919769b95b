//! Cloud providers behind one `CloudProvider` trait: `kwok` (simulated nodes) and `aws`.

pub mod kwok;
