//! Names of the ledger's rejection reasons as they appear in submit replies
//! (`SubmitBatchReply.results[].reason`). A leaf module: the proposer
//! writes these names and the remittance engine reads them, without either
//! importing the other.

use remit_settlement::RejectReason;

/// The snake_case name of a rejection reason, e.g. `duplicate_uetr`.
pub fn reason_name(reason: RejectReason) -> String {
    serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_serde_names() {
        assert_eq!(reason_name(RejectReason::DuplicateUetr), "duplicate_uetr");
    }
}
