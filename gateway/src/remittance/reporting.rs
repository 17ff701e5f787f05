//! The reporter task: groups journalled payout reports into batches signed
//! by this gateway and submits them through the [`LedgerPort`] until the
//! certified chain ([`CertifiedBlocks`]) shows each transfer reported.
//!
//! [`LedgerPort`]: super::ports::LedgerPort
//! [`CertifiedBlocks`]: super::ports::CertifiedBlocks

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use remit_settlement::ids::Uetr;
use remit_settlement::{PayoutReport, PayoutReportBatch, PayoutState};
use tokio::sync::mpsc;
use tracing::{debug, info_span, warn, Instrument};

use super::engine::{Engine, SUBMIT_BATCH_AGE_MS, SUBMIT_BATCH_MAX};
use super::ports::{EntryOutcome, LedgerError, LedgerOutcome};
use super::reports::PendingReport;

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

    /// The UETRs held.
    pub(crate) fn uetrs(&self) -> Vec<Uetr> {
        self.tracked.keys().copied().collect()
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
                let uetrs = held.uetrs();
                let states: HashMap<Uetr, Option<PayoutState>> =
                    uetrs.iter().copied().zip(engine.ports().blocks.payout_states(&uetrs)).collect();
                let pruned = held.prune(|uetr| states.get(uetr).copied().flatten());
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
    let span = info_span!("remit.payout.report", reports = count);
    let mut backoff = Duration::from_millis(50);
    loop {
        match engine.ports().ledger.submit_reports(&batch).instrument(span.clone()).await {
            Ok(LedgerOutcome::BatchRejected { reason, .. }) => {
                warn!(%reason, "payout report batch refused by the ledger");
                return pending.iter().map(|report| report.uetr).collect();
            }
            Ok(LedgerOutcome::Applied { entries, .. }) => return abandoned(pending, &entries),
            Err(LedgerError::Unavailable(message)) => {
                debug!(%message, "report submit failed; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(LedgerError::Refused(message)) => {
                warn!(%message, "payout reports refused");
                return pending.iter().map(|report| report.uetr).collect();
            }
        }
    }
}

/// The reports of an applied batch refused for good: a refusal as already
/// reported (`DUPL`, or a duplicate) or unknown (`NOOR`) counts as reported.
fn abandoned(pending: &[PendingReport], entries: &[EntryOutcome]) -> Vec<Uetr> {
    let mut abandoned = Vec::new();
    for (report, entry) in pending.iter().zip(entries) {
        if let EntryOutcome::Rejected { iso_code, reason } = entry {
            if !matches!(iso_code.as_str(), "DUPL" | "NOOR") {
                warn!(uetr = %report.uetr, %reason, "payout report refused by the ledger");
                abandoned.push(report.uetr);
            }
        }
    }
    abandoned
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remittance::reports::completed;

    fn report(uetr: Uetr) -> PendingReport {
        completed(uetr)
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

    #[test]
    fn only_reports_refused_for_other_reasons_than_reported_or_unknown_are_abandoned() {
        let uetrs: Vec<Uetr> = (0..5).map(|_| Uetr::new_random()).collect();
        let pending: Vec<PendingReport> = uetrs.iter().map(|uetr| report(*uetr)).collect();
        let rejected = |code: &str| EntryOutcome::Rejected { iso_code: code.to_owned(), reason: "r".to_owned() };
        let entries =
            vec![EntryOutcome::Accepted, EntryOutcome::Duplicate, rejected("DUPL"), rejected("NOOR"), rejected("AC01")];
        assert_eq!(abandoned(&pending, &entries), vec![uetrs[4]]);
    }
}
