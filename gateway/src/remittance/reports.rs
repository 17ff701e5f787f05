//! Payout reports: the destination's signed record on the ledger that a
//! payout completed or was returned, and how both sides read them back from
//! certified blocks.

use std::time::Duration;

use remit_proto::v1::SubmitReportsRequest;
use remit_settlement::block::{Entry, TransferOutcome};
use remit_settlement::codec::Writer;
use remit_settlement::ids::{ParticipantId, Uetr};
use remit_settlement::{PayoutOutcome, PayoutReport, PayoutReportBatch, ReturnReason};
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

/// Queues a completion report.
pub(crate) fn queue_completed(engine: &Engine, uetr: Uetr) {
    let _ =
        engine.report_sender().send(PendingReport { uetr, outcome: PayoutOutcome::Completed, reason: String::new() });
}

/// Queues a return report with an ISO 20022 return reason; an invalid code
/// from an adapter becomes `NARR` (narrative) with the code in the text.
pub(crate) fn queue_returned(engine: &Engine, uetr: Uetr, reason_code: &str, reason: &str) {
    let (code, text) = match ReturnReason::new(reason_code) {
        Ok(code) => (code, reason.to_owned()),
        Err(_) => (ReturnReason::new("NARR").expect("NARR is a valid code"), format!("{reason_code}: {reason}")),
    };
    let _ = engine.report_sender().send(PendingReport {
        uetr,
        outcome: PayoutOutcome::Returned { reason: code },
        reason: text,
    });
}

/// Returns a certified transfer for which no valid payment message could be
/// obtained (MS03: reason not specified).
pub(crate) fn queue_return_without_message(engine: &Engine, uetr: Uetr) {
    queue_returned(engine, uetr, "MS03", "no valid payment message from the origin gateway");
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

/// Groups reports into signed batches and submits them until the ledger
/// answers; a report the ledger already holds comes back as already
/// reported, which is success.
pub(crate) async fn run_reporter(engine: Engine, mut rx: mpsc::UnboundedReceiver<PendingReport>) {
    loop {
        let Some(first) = rx.recv().await else { return };
        let mut reports = vec![first];
        let deadline = tokio::time::Instant::now() + Duration::from_millis(SUBMIT_BATCH_AGE_MS);
        while reports.len() < SUBMIT_BATCH_MAX {
            tokio::select! {
                next = rx.recv() => match next { Some(report) => reports.push(report), None => break },
                () = tokio::time::sleep_until(deadline) => break,
            }
        }
        let engine = engine.clone();
        tokio::spawn(async move { submit_reports(&engine, reports).await });
    }
}

async fn submit_reports(engine: &Engine, pending: Vec<PendingReport>) {
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
                for (report, result) in pending.iter().zip(&reply.results) {
                    if !result.accepted && result.iso_code != "DUPL" {
                        warn!(uetr = %report.uetr, reason = %result.reason, "payout report refused by the ledger");
                    }
                }
                if reply.batch_rejected {
                    warn!(reason = %reply.batch_reason, "payout report batch refused by the ledger");
                }
                return;
            }
            Err(status) if retryable(&status) => {
                debug!(code = ?status.code(), "report submit failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(status) => {
                warn!(code = ?status.code(), message = status.message(), "payout reports refused");
                return;
            }
        }
    }
}
