//! The destination's payout scheduler: which remittances are due, how a
//! payout that may already have reached the bank is settled without paying
//! twice, and the set that keeps one UETR from being queued twice.
//!
//! A payout goes `final` -> (`PayoutStarted` journalled, status
//! `payout_pending`) -> bank called with the UETR as idempotency key ->
//! outcome journalled (`PaidOut` or `ReturnDue`) -> report sent until the
//! ledger holds it. A crash can stop it anywhere; on restart
//! [`payout_step`] reads where it stopped:
//!
//! | journalled | step |
//! | --- | --- |
//! | `final` only | [`PayoutStep::Pay`]: the bank was never called |
//! | `payout_pending` (with `PayoutStarted`, or from an older journal whose `payout_pending` was also written before the bank call) | [`PayoutStep::AskBank`]: ask the bank by UETR; pay only if it never received it |
//! | `PaidOut` | [`PayoutStep::ReportCompleted`] |
//! | `ReturnDue` | [`PayoutStep::ReportReturned`] |
//! | `completed` / `returned` (certified) | [`PayoutStep::Nothing`] |
//!
//! **Invariant:** the bank is called for a UETR only after its
//! `PayoutStarted` is durable, and after a restart only once it answered
//! [`PayoutStatus::Unknown`] for it.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use remit_settlement::ids::Uetr;
use tracing::{debug, Instrument as _};

use super::ports::{PayoutAdapter, PayoutInstruction, PayoutResult, PayoutStatus};
use super::record::{Remittance, Role, Status};

/// What a destination record needs next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayoutStep {
    /// Nothing: not a destination awaiting payout, or already reported.
    Nothing,
    /// Pay it: the bank was never called for it.
    Pay,
    /// The bank may have been called: ask it for the outcome first.
    AskBank,
    /// Paid and journalled: the completion report is due.
    ReportCompleted,
    /// Refused and journalled: the return report is due.
    ReportReturned,
}

/// The next step of `record`; `return_due` tells whether a return report
/// for it is journalled.
pub fn payout_step(record: &Remittance, return_due: bool) -> PayoutStep {
    if record.role != Role::Destination || !matches!(record.status, Status::Final | Status::PayoutPending) {
        return PayoutStep::Nothing;
    }
    if record.payout_reference.is_some() {
        PayoutStep::ReportCompleted
    } else if return_due {
        PayoutStep::ReportReturned
    } else if record.status == Status::Final {
        PayoutStep::Pay
    } else {
        PayoutStep::AskBank
    }
}

/// The UETRs queued for payout or being paid. Push, fetch, the follower and
/// a resume can each hand in the same UETR; only the first is admitted until
/// its payout is settled and journalled.
#[derive(Clone, Debug, Default)]
pub struct PayoutQueue {
    queued: Arc<Mutex<HashSet<Uetr>>>,
}

impl PayoutQueue {
    fn lock(&self) -> MutexGuard<'_, HashSet<Uetr>> {
        // Every update is one insert or remove: a panic cannot leave it torn.
        self.queued.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Admits `uetr`; false if it is already queued or being paid.
    pub fn admit(&self, uetr: Uetr) -> bool {
        self.lock().insert(uetr)
    }

    /// Releases UETRs whose payout round ended.
    pub fn release(&self, uetrs: &[Uetr]) {
        let mut queued = self.lock();
        for uetr in uetrs {
            queued.remove(uetr);
        }
    }

    /// How many are queued or being paid.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Waits between attempts when the bank cannot tell or fails.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// First wait.
    pub first: Duration,
    /// Longest wait (doubling up to it).
    pub max: Duration,
}

impl RetryPolicy {
    /// What the engine uses.
    pub const DEFAULT: RetryPolicy = RetryPolicy { first: Duration::from_millis(500), max: Duration::from_secs(30) };
}

/// Settles the payout of `instruction` to `Paid` or `Refused`. With
/// `ask_first` (the bank may already hold it) the bank is asked by UETR and
/// paid only if it never received the payout; a bank that cannot tell is
/// asked again. A failed payment is retried with the same UETR.
pub async fn settle(
    adapter: &dyn PayoutAdapter,
    instruction: &PayoutInstruction,
    ask_first: bool,
    retry: RetryPolicy,
) -> PayoutResult {
    let span = tracing::info_span!("remit.payout", uetr = %instruction.uetr, adapter = adapter.name(), ask_first);
    async move {
        let mut backoff = retry.first;
        let wait = |backoff: &mut Duration| {
            let now = *backoff;
            *backoff = (*backoff * 2).min(retry.max);
            tokio::time::sleep(now)
        };
        if ask_first {
            loop {
                match adapter.status(instruction.uetr).await {
                    PayoutStatus::Paid { reference } => return PayoutResult::Paid { reference },
                    PayoutStatus::Refused { reason_code, reason } => {
                        return PayoutResult::Refused { reason_code, reason }
                    }
                    PayoutStatus::Unknown => break,
                    PayoutStatus::Failed { reason } => {
                        debug!(%reason, "payout status unknown for now; asking again");
                        wait(&mut backoff).await;
                    }
                }
            }
            backoff = retry.first;
        }
        loop {
            match adapter.pay(instruction).await {
                PayoutResult::Failed { reason } => {
                    debug!(%reason, "payout failed; retrying");
                    wait(&mut backoff).await;
                }
                other => return other,
            }
        }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::payout::test_support::instruction;

    /// A bank that answers from scripts and counts calls.
    #[derive(Default)]
    struct ScriptedBank {
        statuses: Mutex<VecDeque<PayoutStatus>>,
        pays: Mutex<VecDeque<PayoutResult>>,
        status_calls: AtomicUsize,
        pay_calls: AtomicUsize,
    }

    impl ScriptedBank {
        fn new(statuses: Vec<PayoutStatus>, pays: Vec<PayoutResult>) -> Self {
            Self { statuses: Mutex::new(statuses.into()), pays: Mutex::new(pays.into()), ..Self::default() }
        }

        fn calls(&self) -> (usize, usize) {
            (self.status_calls.load(Ordering::SeqCst), self.pay_calls.load(Ordering::SeqCst))
        }
    }

    #[async_trait::async_trait]
    impl PayoutAdapter for ScriptedBank {
        async fn pay(&self, _: &PayoutInstruction) -> PayoutResult {
            self.pay_calls.fetch_add(1, Ordering::SeqCst);
            self.pays.lock().expect("lock").pop_front().expect("an unexpected pay call")
        }

        async fn status(&self, _: Uetr) -> PayoutStatus {
            self.status_calls.fetch_add(1, Ordering::SeqCst);
            self.statuses.lock().expect("lock").pop_front().expect("an unexpected status call")
        }

        fn name(&self) -> &'static str {
            "scripted"
        }
    }

    const FAST: RetryPolicy = RetryPolicy { first: Duration::from_millis(1), max: Duration::from_millis(2) };

    fn paid(reference: &str) -> PayoutResult {
        PayoutResult::Paid { reference: reference.to_owned() }
    }

    fn refused() -> PayoutResult {
        PayoutResult::Refused { reason_code: "AC04".to_owned(), reason: "closed".to_owned() }
    }

    fn failed() -> PayoutResult {
        PayoutResult::Failed { reason: "timed out".to_owned() }
    }

    /// (in flight?, status answers, pay answers, expected result, expected (status calls, pay calls))
    type Case = (bool, Vec<PayoutStatus>, Vec<PayoutResult>, PayoutResult, (usize, usize));

    #[tokio::test]
    async fn an_in_flight_payout_is_asked_for_before_it_is_paid() {
        let status_failed = PayoutStatus::Failed { reason: "HTTP 503".to_owned() };
        let cases: Vec<(&str, Case)> = vec![
            ("final: paid without asking", (false, vec![], vec![paid("BK-1")], paid("BK-1"), (0, 1))),
            (
                "final: a failed pay is retried",
                (false, vec![], vec![failed(), failed(), paid("BK-2")], paid("BK-2"), (0, 3)),
            ),
            ("final: refused", (false, vec![], vec![refused()], refused(), (0, 1))),
            (
                "in flight, the bank paid it: not paid again",
                (true, vec![PayoutStatus::Paid { reference: "BK-3".to_owned() }], vec![], paid("BK-3"), (1, 0)),
            ),
            (
                "in flight, the bank refused it: not paid again",
                (
                    true,
                    vec![PayoutStatus::Refused { reason_code: "AC04".to_owned(), reason: "closed".to_owned() }],
                    vec![],
                    refused(),
                    (1, 0),
                ),
            ),
            (
                "in flight, the bank never got it: paid once",
                (true, vec![PayoutStatus::Unknown], vec![paid("BK-4")], paid("BK-4"), (1, 1)),
            ),
            (
                "in flight, the bank cannot tell: asked again, never paid blind",
                (
                    true,
                    vec![status_failed.clone(), status_failed, PayoutStatus::Paid { reference: "BK-5".to_owned() }],
                    vec![],
                    paid("BK-5"),
                    (3, 0),
                ),
            ),
        ];
        for (name, (ask_first, statuses, pays, expected, calls)) in cases {
            let bank = ScriptedBank::new(statuses, pays);
            let order = instruction("PH-ACC-1", "100.00 PHP");
            let result = settle(&bank, &order, ask_first, FAST).await;
            assert_eq!(result, expected, "{name}");
            assert_eq!(bank.calls(), calls, "{name}: (status calls, pay calls)");
        }
    }

    #[tokio::test]
    async fn one_uetr_is_queued_once_whoever_hands_it_in() {
        let queue = PayoutQueue::default();
        let uetr = Uetr::new_random();
        // The push path, the fetch path and a resume race to queue it.
        let racers: Vec<_> = (0..3)
            .map(|_| {
                let queue = queue.clone();
                tokio::spawn(async move { queue.admit(uetr) })
            })
            .collect();
        let mut admitted = 0;
        for racer in racers {
            admitted += usize::from(racer.await.expect("task"));
        }
        assert_eq!(admitted, 1, "exactly one of push, fetch and resume queues the payout");
        assert!(!queue.admit(uetr), "still queued while it is being paid");
        let other = Uetr::new_random();
        assert!(queue.admit(other));
        assert_eq!(queue.len(), 2);
        queue.release(&[uetr]);
        assert_eq!(queue.len(), 1);
        assert!(queue.admit(uetr), "after its round ends it can be queued again (pay_out then skips it)");
    }
}
