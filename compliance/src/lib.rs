//! remit compliance: sanctions screening, AML rules and case management.
//!
//! This crate is a placeholder until the compliance issue lands: the gateway
//! screens through a `Screening` trait whose first implementation passes
//! every transfer. Nothing here is used yet.

/// Outcome of screening one remittance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScreeningDecision {
    /// No hit: the remittance may be submitted.
    Pass,
    /// Held for a compliance officer, with the reasons.
    Hold(Vec<String>),
}
