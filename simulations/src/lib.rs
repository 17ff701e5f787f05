//! Traffic generation, fault simulation and benchmark drivers for remit.
//! Nothing here is used by a production node.

pub mod traffic;
