//! Payout reports: the destination's signed record on the ledger that a
//! payout completed or was returned, and how both sides read them back from
//! certified blocks. Pure: the task that submits them is in
//! [`super::reporting`].

use remit_settlement::block::{Entry, TransferOutcome};
use remit_settlement::ids::{ParticipantId, Uetr};
use remit_settlement::{PayoutOutcome, ReturnReason};

use super::journal::JournalEvent;
use super::record::{LedgerPosition, Role, Status, StatusChange};

/// A report waiting to be signed and submitted.
#[derive(Clone, Debug)]
pub struct PendingReport {
    /// The transfer.
    pub uetr: Uetr,
    /// Completed or returned.
    pub outcome: PayoutOutcome,
    /// Text kept with a return (the ledger holds only the code).
    pub reason: String,
}

/// The completion report of a payout whose `PaidOut` is journalled.
pub(crate) fn completed(uetr: Uetr) -> PendingReport {
    PendingReport { uetr, outcome: PayoutOutcome::Completed, reason: String::new() }
}

/// The journal event and the return report for a return with an ISO 20022
/// reason; an invalid code from an adapter becomes `NARR` (narrative) with
/// the code in the text. The event is journalled before the report is sent.
pub(crate) fn return_due(uetr: Uetr, reason_code: &str, reason: &str) -> (JournalEvent, PendingReport) {
    let (code, text) = match ReturnReason::new(reason_code) {
        Ok(code) => (code, reason.to_owned()),
        Err(_) => (ReturnReason::new("NARR").expect("NARR is a valid code"), format!("{reason_code}: {reason}")),
    };
    let event = JournalEvent::ReturnDue { uetr, reason_code: code.as_str().to_owned(), reason: text.clone() };
    (event, PendingReport { uetr, outcome: PayoutOutcome::Returned { reason: code }, reason: text })
}

/// [`return_due`] for a certified transfer for which no valid payment
/// message could be obtained (MS03: reason not specified).
pub(crate) fn return_without_message(uetr: Uetr) -> (JournalEvent, PendingReport) {
    return_due(uetr, "MS03", "no valid payment message from the origin gateway")
}

/// Status events for the reports of a certified `entry` that concern this
/// gateway, as origin (its customer's remittance completed or came back) or
/// as reporter (its own payout is now final on the ledger).
pub(crate) fn scan_reports(
    entry: &Entry,
    outcomes: &[TransferOutcome],
    me: &ParticipantId,
    role_of: &dyn Fn(&Uetr) -> Option<Role>,
    now: u64,
    position: LedgerPosition,
    events: &mut Vec<JournalEvent>,
) {
    let Entry::PayoutReports { batch } = entry else { return };
    for (report, outcome) in batch.reports.iter().zip(outcomes) {
        if *outcome != TransferOutcome::Accepted {
            continue;
        }
        let concerns_me = match role_of(&report.uetr) {
            Some(Role::Origin) => true,
            Some(Role::Destination) => &batch.reporter == me,
            None => false,
        };
        if !concerns_me {
            continue;
        }
        let change = match report.outcome {
            PayoutOutcome::Completed => StatusChange::new(Status::Completed, now, None, ""),
            PayoutOutcome::Returned { reason } => StatusChange::new(
                Status::Returned,
                now,
                Some(reason.as_str()),
                format!("returned by {}: {}", batch.reporter, return_reason_text(reason.as_str())),
            ),
        };
        events.push(JournalEvent::Status { uetr: report.uetr, change, ledger: Some(position), payout_reference: None });
    }
}

/// A short description of common ISO 20022 return reasons.
pub fn return_reason_text(code: &str) -> &'static str {
    match code {
        "AC01" => "incorrect account number",
        "AC04" => "closed account number",
        "AC06" => "blocked account",
        "AG01" => "transaction forbidden",
        "AM05" => "duplication",
        "BE04" => "missing creditor address",
        "MD07" => "end customer deceased",
        "MS02" => "not specified reason customer generated",
        "MS03" => "not specified reason agent generated",
        "RC01" => "bank identifier incorrect",
        "RR04" => "regulatory reason",
        "NARR" => "narrative",
        _ => "see the return reason code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_return_due_keeps_a_valid_code_and_narrates_an_invalid_one() {
        let uetr = Uetr::new_random();
        let (event, report) = return_due(uetr, "AC04", "closed");
        assert!(
            matches!(&event, JournalEvent::ReturnDue { reason_code, reason, .. } if reason_code == "AC04" && reason == "closed")
        );
        assert_eq!(report.outcome, PayoutOutcome::Returned { reason: ReturnReason::new("AC04").expect("code") });
        let (event, report) = return_due(uetr, "ac-4", "odd");
        assert!(
            matches!(&event, JournalEvent::ReturnDue { reason_code, reason, .. } if reason_code == "NARR" && reason == "ac-4: odd")
        );
        assert_eq!(report.reason, "ac-4: odd");
        let (_, report) = return_without_message(uetr);
        assert_eq!(report.outcome, PayoutOutcome::Returned { reason: ReturnReason::new("MS03").expect("code") });
    }
}
