//! Payout reports: the destination's signed record on the ledger that a
//! payout completed or was returned, and how both sides read them back from
//! certified blocks.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use remit_proto::v1::SubmitReportsRequest;
use remit_settlement::block::{Entry, TransferOutcome};
use remit_settlement::codec::Writer;
use remit_settlement::ids::{ParticipantId, Uetr};
use remit_settlement::replica::state_machine::lock as lock_chain;
use remit_settlement::{PayoutOutcome, PayoutReport, PayoutReportBatch, PayoutState, ReturnReason};
use tokio::sync::mpsc;
use tracing::{debug, info_span, warn, Instrument};

use super::engine::{retryable, Engine, SUBMIT_BATCH_AGE_MS, SUBMIT_BATCH_MAX};
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

/// Hands a journalled report to the reporter.
pub(crate) fn queue(engine: &Engine, report: PendingReport) {
    let _ = engine.report_sender().send(report);
}

/// Queues the completion report of a journalled payout (after a restart).
pub(crate) fn queue_completed(engine: &Engine, uetr: Uetr) {
    queue(engine, completed(uetr));
}

/// Queues a journalled return report (after a restart).
pub(crate) fn queue_returned(engine: &Engine, uetr: Uetr, reason_code: &str, reason: &str) {
    queue(engine, return_due(uetr, reason_code, reason).1);
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

/// How often the reporter looks up its unconfirmed reports on the chain.
const REPORT_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// A report submitted this long ago whose transfer is still open on the
/// chain is submitted again (the ledger refuses a second report, so a
/// resend never reports twice).
const REPORT_RESEND_AFTER: Duration = Duration::from_secs(10);

/// A report the reporter holds until the chain shows its transfer reported.
#[derive(Debug)]
struct Tracked {
    report: PendingReport,
    /// When it was last submitted, `None` before the first time.
    sent: Option<tokio::time::Instant>,
    /// A submit of it is running.
    in_flight: bool,
}

/// The reports journalled and not yet seen reported on the chain, one per
/// UETR (a report handed in twice, e.g. by a resume, is kept once).
#[derive(Debug, Default)]
pub(crate) struct ReportTracker {
    tracked: HashMap<Uetr, Tracked>,
}

impl ReportTracker {
    /// Holds `report` unless one for its UETR is held.
    pub(crate) fn add(&mut self, report: PendingReport) {
        self.tracked.entry(report.uetr).or_insert(Tracked { report, sent: None, in_flight: false });
    }

    /// Forgets the reports whose transfer `payout_state` no longer shows
    /// open: reported (by this or an earlier submit), or forgotten by the
    /// index, which forgets only reported transfers. Returns how many.
    pub(crate) fn prune(&mut self, payout_state: impl Fn(&Uetr) -> Option<PayoutState>) -> usize {
        let before = self.tracked.len();
        self.tracked.retain(|uetr, _| payout_state(uetr) == Some(PayoutState::Open));
        before - self.tracked.len()
    }

    /// The reports to submit now: never sent, or sent at least
    /// [`REPORT_RESEND_AFTER`] ago and not in flight; marks them sent.
    pub(crate) fn take_due(&mut self, now: tokio::time::Instant) -> Vec<PendingReport> {
        let mut due = Vec::new();
        for tracked in self.tracked.values_mut() {
            let stale = tracked.sent.is_none_or(|at| now >= at + REPORT_RESEND_AFTER);
            if stale && !tracked.in_flight {
                tracked.sent = Some(now);
                tracked.in_flight = true;
                due.push(tracked.report.clone());
            }
        }
        due
    }

    /// A submit of `uetrs` ended; `abandoned` are refused for good (not
    /// already reported) and are dropped.
    pub(crate) fn submitted(&mut self, uetrs: &[Uetr], abandoned: &[Uetr]) {
        for uetr in uetrs {
            if let Some(tracked) = self.tracked.get_mut(uetr) {
                tracked.in_flight = false;
            }
        }
        for uetr in abandoned {
            self.tracked.remove(uetr);
        }
    }

    /// How many are held.
    pub(crate) fn len(&self) -> usize {
        self.tracked.len()
    }
}

/// Groups reports into signed batches and submits them until the chain
/// shows each transfer reported: a report is journalled before it gets here,
/// held until then, and submitted again if the transfer is still open
/// [`REPORT_RESEND_AFTER`] later. A refusal as already reported (`DUPL`) or
/// unknown (`NOOR`: forgotten after its report) is success.
pub(crate) async fn run_reporter(engine: Engine, mut rx: mpsc::UnboundedReceiver<PendingReport>) {
    let tracker = Arc::new(Mutex::new(ReportTracker::default()));
    let mut next_check = tokio::time::Instant::now() + REPORT_CHECK_INTERVAL;
    loop {
        let mut fresh = Vec::new();
        tokio::select! {
            first = rx.recv() => match first {
                Some(report) => fresh.push(report),
                None => return,
            },
            () = tokio::time::sleep_until(next_check) => {}
        }
        if !fresh.is_empty() {
            let deadline = tokio::time::Instant::now() + Duration::from_millis(SUBMIT_BATCH_AGE_MS);
            while fresh.len() < SUBMIT_BATCH_MAX {
                tokio::select! {
                    next = rx.recv() => match next { Some(report) => fresh.push(report), None => break },
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        let now = tokio::time::Instant::now();
        let due = {
            // Every update is a single insert, remove or flag: a panic cannot tear it.
            let mut held = tracker.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for report in fresh {
                held.add(report);
            }
            if now >= next_check {
                next_check = now + REPORT_CHECK_INTERVAL;
                let chain = lock_chain(&engine.ledger().chain);
                let pruned = held.prune(|uetr| chain.state().payout_state(uetr));
                if pruned > 0 {
                    debug!(pruned, held = held.len(), "payout reports seen on the chain");
                }
            }
            held.take_due(now)
        };
        for chunk in due.chunks(SUBMIT_BATCH_MAX) {
            let (engine, tracker, chunk) = (engine.clone(), tracker.clone(), chunk.to_vec());
            tokio::spawn(async move {
                let abandoned = submit_reports(&engine, &chunk).await;
                let uetrs: Vec<Uetr> = chunk.iter().map(|report| report.uetr).collect();
                tracker.lock().unwrap_or_else(std::sync::PoisonError::into_inner).submitted(&uetrs, &abandoned);
            });
        }
    }
}

/// Submits one signed batch until the ledger answers; returns the reports
/// refused for good (anything but already reported or unknown).
async fn submit_reports(engine: &Engine, pending: &[PendingReport]) -> Vec<Uetr> {
    let config = engine.config();
    let reports: Vec<PayoutReport> =
        pending.iter().map(|p| PayoutReport { uetr: p.uetr, outcome: p.outcome }).collect();
    let count = reports.len();
    let batch = PayoutReportBatch::sign(&config.chain_id, config.me.clone(), reports, &config.signing_key);
    let mut w = Writer::with_capacity(64 + count * 24);
    batch.encode(&mut w);
    let bytes = w.into_bytes();
    let span = info_span!("remit.payout.report", reports = count);
    let mut backoff = Duration::from_millis(50);
    loop {
        let request = SubmitReportsRequest { batch: bytes.clone(), forwarded: false };
        match engine.ledger().intake.submit_reports(request).instrument(span.clone()).await {
            Ok(reply) => {
                if reply.batch_rejected {
                    warn!(reason = %reply.batch_reason, "payout report batch refused by the ledger");
                    return pending.iter().map(|report| report.uetr).collect();
                }
                let mut abandoned = Vec::new();
                for (report, result) in pending.iter().zip(&reply.results) {
                    if !result.accepted && !matches!(result.iso_code.as_str(), "DUPL" | "NOOR") {
                        warn!(uetr = %report.uetr, reason = %result.reason, "payout report refused by the ledger");
                        abandoned.push(report.uetr);
                    }
                }
                return abandoned;
            }
            Err(status) if retryable(&status) => {
                debug!(code = ?status.code(), "report submit failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(status) => {
                warn!(code = ?status.code(), message = status.message(), "payout reports refused");
                return pending.iter().map(|report| report.uetr).collect();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(uetr: Uetr) -> PendingReport {
        completed(uetr)
    }

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

    #[test]
    fn reports_are_held_once_and_resent_until_the_chain_shows_them() {
        let (a, b, c) = (Uetr::new_random(), Uetr::new_random(), Uetr::new_random());
        let mut tracker = ReportTracker::default();
        tracker.add(report(a));
        tracker.add(report(a)); // handed in again by a resume
        tracker.add(report(b));
        tracker.add(report(c));
        let t0 = tokio::time::Instant::now();
        let mut first: Vec<Uetr> = tracker.take_due(t0).iter().map(|r| r.uetr).collect();
        first.sort();
        let mut all = vec![a, b, c];
        all.sort();
        assert_eq!(first, all, "each report sent once");
        assert!(tracker.take_due(t0 + REPORT_RESEND_AFTER * 2).is_empty(), "nothing resent while in flight");
        // The ledger accepted a and b; c came back refused for good.
        tracker.submitted(&[a, b, c], &[c]);
        assert_eq!(tracker.len(), 2);
        assert!(tracker.take_due(t0 + Duration::from_secs(1)).is_empty(), "not resent early");
        // a is certified; b is not yet: only b is resent, a duplicate
        // refusal then counts as reported.
        let pruned = tracker.prune(|uetr| Some(if *uetr == a { PayoutState::Completed } else { PayoutState::Open }));
        assert_eq!((pruned, tracker.len()), (1, 1));
        let resent: Vec<Uetr> = tracker.take_due(t0 + REPORT_RESEND_AFTER).iter().map(|r| r.uetr).collect();
        assert_eq!(resent, vec![b]);
        tracker.submitted(&[b], &[]);
        // Forgotten by the index (only reported transfers are): done.
        assert_eq!(tracker.prune(|_| None), 1);
        assert_eq!(tracker.len(), 0);
    }
}
