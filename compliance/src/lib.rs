//! remit compliance: sanctions screening, AML rules and case management.
//!
//! The gateway screens every remittance through the [`Screening`] trait
//! before it reaches the ledger. Until the compliance issue lands the only
//! implementation is [`PassThrough`], which passes everything.

/// One party as screening sees it: plain text, since names are what
/// sanctions lists match on.
#[derive(Clone, PartialEq, Eq)]
pub struct ScreenedParty {
    /// Full name.
    pub name: String,
    /// ISO 3166 alpha-2 country of residence or registration.
    pub country: String,
    /// Account identifier.
    pub account: String,
}

impl std::fmt::Debug for ScreenedParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names and accounts are customer data: never in logs.
        write!(f, "ScreenedParty(***, {})", self.country)
    }
}

/// What is screened about one remittance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScreeningSubject {
    /// End-to-end reference (UETR).
    pub uetr: String,
    /// Who sends.
    pub originator: ScreenedParty,
    /// Who receives.
    pub beneficiary: ScreenedParty,
    /// Send amount as a decimal string, e.g. "100.00".
    pub amount: String,
    /// ISO 4217 currency of `amount`.
    pub currency: String,
    /// ISO 20022 purpose code.
    pub purpose: String,
}

/// Outcome of screening one remittance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScreeningDecision {
    /// No hit: the remittance may be submitted.
    Pass,
    /// Held for a compliance officer, with the reasons.
    Hold(Vec<String>),
    /// Refused outright, with an ISO 20022 reason code and text.
    Reject {
        /// ISO 20022 status reason code, e.g. "RR04".
        reason_code: String,
        /// Why.
        reason: String,
    },
}

/// Screens remittances before submission.
pub trait Screening: Send + Sync {
    /// Decides on one remittance.
    fn screen(&self, subject: &ScreeningSubject) -> ScreeningDecision;
}

/// Passes every remittance.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThrough;

impl Screening for PassThrough {
    fn screen(&self, _subject: &ScreeningSubject) -> ScreeningDecision {
        ScreeningDecision::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pass_through_passes_and_debug_hides_names() {
        let party = ScreenedParty { name: "Maria Santos".into(), country: "PH".into(), account: "123".into() };
        let subject = ScreeningSubject {
            uetr: "u".into(),
            originator: party.clone(),
            beneficiary: party,
            amount: "1.00".into(),
            currency: "USD".into(),
            purpose: "FAMI".into(),
        };
        assert_eq!(PassThrough.screen(&subject), ScreeningDecision::Pass);
        assert!(!format!("{subject:?}").contains("Maria"));
    }
}
