//! The remittance life cycle as an explicit transition table: which status
//! may follow which. [`crate::remittance::record::Remittance::advance`]
//! applies a change only when the table allows it; anything else (a late,
//! repeated or contradictory event) is ignored, so replaying a journal in
//! any interleaving of its appends gives the same record.
//!
//! ```text
//!             +--> compliance_hold --+--> received (release)
//!             |                      +--> rejected | cancelled | expired
//! received ---+--> rejected | cancelled | expired
//!     |
//!     v    (forward skips allowed along this line)
//! submitted --> committed --> final --> payout_pending --> completed
//!     |                         |              |       \-> returned
//!     \--> rejected             \--> completed | returned
//! ```
//!
//! **Forward skips.** Along the ledger path `received -> submitted ->
//! committed -> final -> payout_pending -> completed | returned` a status
//! may be followed by any later one, not only the next. The engine needs
//! this: the submitter journals `submitted` in a task of its own, so the
//! submit reply's `committed` (or the follower's `final`, when the block is
//! certified before the reply arrives) can be durable first; a record then
//! goes e.g. `received -> committed` or `submitted -> final`, and the late
//! `submitted` is ignored. Skips never go back and never leave a terminal
//! status.
//!
//! **Off the path.** `compliance_hold` is entered from `received` only and
//! left only to `received` (released by an officer), `rejected`,
//! `cancelled` or `expired`: a held remittance is never submitted.
//! `rejected` (screening or the ledger) follows `received`,
//! `compliance_hold` or `submitted`; a remittance the ledger accepted is
//! never rejected afterwards. `cancelled` and `expired` follow `received`
//! or `compliance_hold` only (nothing submitted can be withdrawn).
//!
//! **Terminal:** `rejected`, `cancelled`, `expired`, `completed`, `returned`.

use super::record::Status;

/// The ledger path, in order; a status on it may be followed by any later one.
const LEDGER_PATH: [Status; 6] =
    [Status::Received, Status::Submitted, Status::Committed, Status::Final, Status::PayoutPending, Status::Completed];

/// Position on the ledger path; `returned` ends the path like `completed`.
fn path_position(status: Status) -> Option<usize> {
    match status {
        Status::Returned => Some(LEDGER_PATH.len() - 1),
        other => LEDGER_PATH.iter().position(|s| *s == other),
    }
}

/// Whether `to` may follow `from` (see the module docs). A status never
/// follows itself.
pub fn may_follow(from: Status, to: Status) -> bool {
    use Status::*;
    if from == to || from.is_terminal() {
        return false;
    }
    match (from, to) {
        (Received, ComplianceHold) => true,
        (ComplianceHold, Received | Rejected | Cancelled | Expired) => true,
        (ComplianceHold, _) => false,
        (Received | Submitted, Rejected) => true,
        (Received, Cancelled | Expired) => true,
        (_, Rejected | Cancelled | Expired | ComplianceHold) => false,
        // Returned reached from payout_pending or earlier on the path.
        (Returned, _) | (_, Received) => false,
        _ => match (path_position(from), path_position(to)) {
            (Some(a), Some(b)) => a < b,
            _ => false,
        },
    }
}

/// Every status that may follow `from`, in [`Status::ALL`] order.
pub fn successors(from: Status) -> Vec<Status> {
    Status::ALL.into_iter().filter(|to| may_follow(from, *to)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remittance::record::{Remittance, StatusChange};
    use Status::*;

    /// The whole table, written out: every status and what may follow it.
    const TABLE: [(Status, &[Status]); 11] = [
        (
            Received,
            &[
                ComplianceHold,
                Rejected,
                Submitted,
                Committed,
                Final,
                PayoutPending,
                Completed,
                Returned,
                Expired,
                Cancelled,
            ],
        ),
        (ComplianceHold, &[Received, Rejected, Expired, Cancelled]),
        (Rejected, &[]),
        (Submitted, &[Rejected, Committed, Final, PayoutPending, Completed, Returned]),
        (Committed, &[Final, PayoutPending, Completed, Returned]),
        (Final, &[PayoutPending, Completed, Returned]),
        (PayoutPending, &[Completed, Returned]),
        (Completed, &[]),
        (Returned, &[]),
        (Expired, &[]),
        (Cancelled, &[]),
    ];

    #[test]
    fn every_pair_of_statuses_is_decided_by_the_table() {
        assert_eq!(TABLE.len(), Status::ALL.len());
        for (from, allowed) in TABLE {
            for to in Status::ALL {
                assert_eq!(may_follow(from, to), allowed.contains(&to), "{} -> {}", from.as_str(), to.as_str());
            }
            assert_eq!(successors(from), allowed.to_vec(), "successors of {}", from.as_str());
        }
    }

    #[test]
    fn terminal_statuses_have_no_successor_and_others_do() {
        for status in Status::ALL {
            assert_eq!(successors(status).is_empty(), status.is_terminal(), "{}", status.as_str());
        }
    }

    #[test]
    fn no_transition_goes_back_along_the_ledger_path() {
        for (i, from) in LEDGER_PATH.iter().enumerate() {
            for to in &LEDGER_PATH[..=i] {
                assert!(!may_follow(*from, *to), "{} -> {}", from.as_str(), to.as_str());
            }
        }
    }

    fn record_through(statuses: &[Status]) -> (Remittance, Vec<bool>) {
        let mut record = crate::remittance::testkit::origin_record(remit_settlement::ids::Uetr::new_random());
        let applied = statuses
            .iter()
            .enumerate()
            .map(|(i, status)| record.advance(StatusChange::new(*status, 10 + i as u64, None, "")))
            .collect();
        (record, applied)
    }

    #[test]
    fn the_sequences_the_engine_produces_are_accepted() {
        let sequences: [&[Status]; 9] = [
            &[Submitted, Committed, Final, PayoutPending, Completed],
            &[Submitted, Committed, Final, Completed],
            &[Submitted, Committed, Final, PayoutPending, Returned],
            // The submit reply or the block came before `submitted` was durable.
            &[Committed, Final, Completed],
            &[Final, PayoutPending, Completed],
            &[Submitted, Final, Returned],
            &[Submitted, Rejected],
            &[ComplianceHold, Received, Submitted, Committed],
            &[ComplianceHold, Cancelled],
        ];
        for sequence in sequences {
            let (record, applied) = record_through(sequence);
            assert!(applied.iter().all(|a| *a), "{sequence:?}: {applied:?}");
            assert_eq!(record.status, *sequence.last().expect("not empty"));
            assert_eq!(record.history.len(), sequence.len() + 1);
        }
    }

    #[test]
    fn late_repeated_and_contradictory_changes_are_ignored() {
        // A late `submitted` after `committed`, a repeated `final`, a
        // rejection after the ledger accepted, a cancel after submission.
        let (record, applied) = record_through(&[Committed, Submitted, Final, Final, Rejected, Cancelled, Completed]);
        assert_eq!(applied, vec![true, false, true, false, false, false, true]);
        assert_eq!(record.status, Completed);
        let statuses: Vec<Status> = record.history.iter().map(|c| c.status).collect();
        assert_eq!(statuses, vec![Received, Committed, Final, Completed]);
        // Nothing leaves a terminal status.
        let (record, applied) = record_through(&[Rejected, Received, Submitted, Completed]);
        assert_eq!(applied, vec![true, false, false, false]);
        assert_eq!(record.status, Rejected);
    }

    #[test]
    fn a_held_remittance_is_released_or_refused_but_never_submitted() {
        let (record, applied) = record_through(&[ComplianceHold, Submitted, Committed]);
        assert_eq!(applied, vec![true, false, false]);
        assert_eq!(record.status, ComplianceHold);
        let (record, _) = record_through(&[ComplianceHold, Rejected]);
        assert_eq!(record.status, Rejected);
        let (record, _) = record_through(&[ComplianceHold, Expired]);
        assert_eq!(record.status, Expired);
    }
}
