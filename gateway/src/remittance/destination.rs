//! The destination side: the ledger follower (both sides read certified
//! blocks through it), fetching payment messages that were not pushed,
//! accepting checked incoming transfers, and paying them out.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use remit_settlement::ids::{ParticipantId, Uetr};
use remit_settlement::{PayoutState, UetrMap};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;
use tracing::{info, info_span, warn, Instrument};

use super::engine::{
    Engine, FETCH_MESSAGES_MAX, MESSAGE_FETCH_ATTEMPTS_MAX, MESSAGE_FETCH_FIRST_WAIT, MESSAGE_FETCH_GIVE_UP,
    MESSAGE_FETCH_TICK, MESSAGE_FETCH_WAIT_MAX, PAYOUT_BATCHES_IN_FLIGHT_MAX, PAYOUT_BATCH_MAX,
};
use super::journal::{InboxMessage, IncomingTransfer, JournalEvent};
use super::payouts::{payout_step, settle, PayoutStep, RetryPolicy};
use super::ports::{PayoutInstruction, PayoutResult};
use super::record::Remittance;
use super::scanner;
use super::state::{accepted_event, verify_message};

/// A certified incoming transfer whose message is being fetched.
pub(super) struct Awaited {
    incoming: IncomingTransfer,
    attempts: u32,
    backoff: Duration,
    /// When the transfer was first seen without its message.
    since: Instant,
}
/// When each awaited transfer's next fetch is due, on a grid of
/// [`MESSAGE_FETCH_TICK`] steps, so that a round serves a whole step.
pub(super) struct FetchSchedule {
    start: Instant,
    due: BTreeSet<(Instant, Uetr)>,
}

impl FetchSchedule {
    fn new(start: Instant) -> Self {
        Self { start, due: BTreeSet::new() }
    }

    /// Schedules `uetr` at the first grid step at or after `at`.
    fn insert(&mut self, at: Instant, uetr: Uetr) {
        let tick = MESSAGE_FETCH_TICK.as_nanos();
        let offset = at.saturating_duration_since(self.start).as_nanos();
        let steps = u32::try_from(offset.div_ceil(tick)).unwrap_or(u32::MAX);
        self.due.insert((self.start + MESSAGE_FETCH_TICK * steps, uetr));
    }

    /// The next due time, if any.
    fn first(&self) -> Option<Instant> {
        self.due.first().map(|(at, _)| *at)
    }

    /// Takes every transfer due at or before `now`.
    fn take_due(&mut self, now: Instant) -> Vec<Uetr> {
        let mut ready = Vec::new();
        while let Some(&(at, uetr)) = self.due.first() {
            if at > now {
                break;
            }
            self.due.pop_first();
            ready.push(uetr);
        }
        ready
    }
}

impl Engine {
    // ---- both sides: the ledger follower ----

    pub(super) async fn run_follower(self) {
        loop {
            let (cursor, certified) = {
                let cursor = self.state().cursor;
                let certified = self.ports().blocks.certified_height();
                (cursor, certified)
            };
            if certified <= cursor {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            // Every certified block available, recorded in one journal append.
            let mut scan = scanner::BlockScan::default();
            let mut reached = cursor;
            for height in cursor + 1..=certified.min(cursor + 64) {
                // A block still missing after a snapshot install: wait for backfill.
                let Some(block) = self.ports().blocks.block(height).await else { break };
                scan.extend(scanner::scan_block(&block, &self.inner.config.me, &self.state(), self.now_ms()));
                reached = height;
            }
            if reached == cursor {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let scanner::BlockScan { mut events, waiting, accepted: prepared, payable } = scan;
            events.push(JournalEvent::Cursor { height: reached });
            let span = info_span!("remit.remittance.follow", from = cursor + 1, to = reached);
            if let Err(error) = self.commit_accepting(events, prepared).instrument(span).await {
                warn!(%error, reached, "cannot record ledger progress; retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            for uetr in payable {
                let _ = self.inner.payout_tx.send(uetr);
            }
            for waiting in waiting {
                let _ = self.inner.fetch_tx.send(waiting);
            }
        }
    }

    /// The destination record for an incoming transfer if `message` is its
    /// payment message (see [`verify_message`]).
    pub(super) fn verify_message(&self, incoming: &IncomingTransfer, message: &InboxMessage) -> Option<Remittance> {
        verify_message(&self.inner.config.me, incoming, message, self.now_ms())
    }

    /// Records incoming transfers whose messages checked out (journalling
    /// a message first when it was fetched rather than pushed) and queues
    /// their payouts.
    pub(super) async fn accept_incoming(&self, accepted: Vec<(Remittance, Option<InboxMessage>)>) {
        if accepted.is_empty() {
            return;
        }
        let mut events = Vec::with_capacity(accepted.len() * 2);
        let mut records = Vec::with_capacity(accepted.len());
        for (record, fetched) in accepted {
            if let Some(message) = fetched {
                events.push(JournalEvent::Inbox { message });
            }
            events.push(accepted_event(&record));
            records.push(record);
        }
        let uetrs: Vec<Uetr> = records.iter().map(|record| record.uetr).collect();
        if let Err(error) = self.commit_accepting(events, records).await {
            warn!(%error, count = uetrs.len(), "journal append failed; the transfers will be accepted again on restart");
            return;
        }
        for uetr in uetrs {
            let _ = self.inner.payout_tx.send(uetr);
        }
    }

    /// Obtains the payment messages of certified transfers that arrived
    /// without one: checks the inbox (the push may come late), then asks
    /// each origin for all of its missing messages in one call, retrying
    /// with backoff; after [`MESSAGE_FETCH_ATTEMPTS_MAX`] rounds without a
    /// valid message a transfer is returned (MS03).
    pub(super) async fn run_fetcher(self, mut rx: mpsc::UnboundedReceiver<(Uetr, IncomingTransfer)>) {
        let mut awaited: UetrMap<Awaited> = UetrMap::new();
        let mut due = FetchSchedule::new(Instant::now());
        loop {
            let next = due.first();
            tokio::select! {
                arrived = rx.recv() => {
                    let Some(first) = arrived else { return };
                    // Everything waiting at once: one wake (and one timer)
                    // per burst, not per transfer.
                    let now = Instant::now();
                    let mut next = Some(first);
                    while let Some((uetr, incoming)) = next {
                        if !awaited.contains_key(&uetr) {
                            due.insert(now + MESSAGE_FETCH_FIRST_WAIT, uetr);
                            awaited.insert(uetr, Awaited { incoming, attempts: 0, backoff: MESSAGE_FETCH_FIRST_WAIT, since: now });
                        }
                        next = rx.try_recv().ok();
                    }
                    continue;
                }
                () = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            let ready = due.take_due(Instant::now());
            self.fetch_round(ready, &mut awaited, &mut due).await;
        }
    }

    async fn fetch_round(&self, ready: Vec<Uetr>, awaited: &mut UetrMap<Awaited>, due: &mut FetchSchedule) {
        let mut accepted = Vec::new();
        let mut by_origin: HashMap<ParticipantId, Vec<Uetr>> = HashMap::new();
        {
            let state = self.state();
            for uetr in ready {
                let Some(entry) = awaited.get(&uetr) else { continue };
                if state.remittances.contains_key(&uetr) {
                    awaited.remove(&uetr);
                    continue;
                }
                match state.inbox.get(&uetr).and_then(|m| self.verify_message(&entry.incoming, m)) {
                    Some(record) => {
                        accepted.push((record, None));
                        awaited.remove(&uetr);
                    }
                    None => by_origin.entry(entry.incoming.origin.clone()).or_default().push(uetr),
                }
            }
        }
        for (origin, uetrs) in by_origin {
            let exchange = &self.ports().exchange;
            for chunk in uetrs.chunks(FETCH_MESSAGES_MAX) {
                let mut found: HashMap<Uetr, InboxMessage> = HashMap::new();
                let mut unknown: HashSet<Uetr> = HashSet::new();
                if exchange.knows(&origin) {
                    let span = info_span!("remit.remittance.fetch_messages", %origin, count = chunk.len());
                    if let Ok(reply) = exchange.fetch(&origin, chunk).instrument(span).await {
                        unknown.extend(reply.unknown);
                        let received_at_ms = self.now_ms();
                        found.extend(
                            reply
                                .messages
                                .into_iter()
                                .map(|message| (message.uetr, InboxMessage { received_at_ms, ..message })),
                        );
                    }
                }
                let now = Instant::now();
                let mut returned = Vec::new();
                for uetr in chunk {
                    let Some(entry) = awaited.get_mut(uetr) else { continue };
                    let checked = found
                        .remove(uetr)
                        .and_then(|message| self.verify_message(&entry.incoming, &message).map(|r| (r, message)));
                    if let Some((record, message)) = checked {
                        accepted.push((record, Some(message)));
                        awaited.remove(uetr);
                        continue;
                    }
                    entry.attempts += 1;
                    if entry.attempts >= MESSAGE_FETCH_ATTEMPTS_MAX || now >= entry.since + MESSAGE_FETCH_GIVE_UP {
                        awaited.remove(uetr);
                        returned.push(*uetr);
                    } else {
                        // An origin that holds no remittance for it will not
                        // have one in a moment either: ask again only slowly.
                        entry.backoff = if unknown.contains(uetr) {
                            MESSAGE_FETCH_WAIT_MAX
                        } else {
                            (entry.backoff * 2).min(MESSAGE_FETCH_WAIT_MAX)
                        };
                        due.insert(now + entry.backoff, *uetr);
                    }
                }
                if let Some(first) = returned.first() {
                    warn!(%origin, count = returned.len(), first = %first, "no valid payment message; returning the transfers");
                    // Journalled before the reports are sent.
                    let (events, reports): (Vec<_>, Vec<_>) =
                        returned.iter().map(|uetr| super::reports::return_without_message(*uetr)).unzip();
                    if let Err(error) = self.commit(events).await {
                        warn!(%error, "cannot journal the returns; they are fetched again after a restart");
                    } else {
                        reports.into_iter().for_each(|report| self.queue_report(report));
                    }
                }
            }
        }
        self.accept_incoming(accepted).await;
    }

    // ---- destination: payout ----

    /// Pays out in batches: one journal append marks a batch in flight
    /// (`PayoutStarted`, durable before the bank is called), the payouts run
    /// concurrently, and one append records their outcomes before the
    /// reports are queued. A UETR already queued or being paid is dropped
    /// here, whoever handed it in again (push, fetch, follower, resume).
    pub(super) async fn run_payouts(self, mut rx: mpsc::UnboundedReceiver<Uetr>) {
        let limit = Arc::new(Semaphore::new(PAYOUT_BATCHES_IN_FLIGHT_MAX));
        let queue = self.inner.payout_queue.clone();
        loop {
            let Some(first) = rx.recv().await else { return };
            let mut uetrs = Vec::new();
            let mut next = Some(first);
            while let Some(uetr) = next.take() {
                if queue.admit(uetr) {
                    uetrs.push(uetr);
                }
                if uetrs.len() < PAYOUT_BATCH_MAX {
                    next = rx.try_recv().ok();
                }
            }
            if uetrs.is_empty() {
                continue;
            }
            let Ok(permit) = limit.clone().acquire_owned().await else { return };
            let engine = self.clone();
            let queue = queue.clone();
            tokio::spawn(async move {
                engine.pay_out(&uetrs).await;
                queue.release(&uetrs);
                drop(permit);
            });
        }
    }

    async fn pay_out(&self, uetrs: &[Uetr]) {
        // Destination remittances that are due, with whether the bank may
        // already hold them (then it is asked before it is paid).
        let mut due: Vec<(PayoutInstruction, bool)> = Vec::with_capacity(uetrs.len());
        {
            let state = self.state();
            for uetr in uetrs {
                let Some(record) = state.remittances.get(uetr) else { continue };
                let ask_first = match payout_step(record, state.returns_due.contains_key(uetr)) {
                    PayoutStep::Pay => false,
                    PayoutStep::AskBank => true,
                    PayoutStep::Nothing | PayoutStep::ReportCompleted | PayoutStep::ReportReturned => continue,
                };
                let instruction = PayoutInstruction {
                    uetr: *uetr,
                    origin: record.message.origin.clone(),
                    beneficiary: record.message.beneficiary.clone(),
                    amount: record.message.receive_amount,
                    purpose: record.message.purpose.clone(),
                    remittance_information: record.message.remittance_information.clone(),
                };
                due.push((instruction, ask_first));
            }
        }
        if !due.is_empty() {
            let uetrs: Vec<Uetr> = due.iter().map(|(instruction, _)| instruction.uetr).collect();
            let states = self.ports().blocks.payout_states(&uetrs);
            let mut states = states.into_iter();
            // A transfer already reported on the ledger is not paid again.
            due.retain(|_| states.next().flatten().is_none_or(|state| state == PayoutState::Open));
        }
        let starting: Vec<Uetr> = due.iter().filter(|(_, ask_first)| !ask_first).map(|(i, _)| i.uetr).collect();
        if !starting.is_empty() {
            // No bank call before this is durable: a payout the journal does
            // not show in flight is never asked for after a restart.
            let event = JournalEvent::PayoutStarted { uetrs: starting, at_ms: self.now_ms() };
            if let Err(error) = self.commit(vec![event]).await {
                warn!(%error, "cannot journal payouts as started; not paying them");
                due.retain(|(_, ask_first)| *ask_first);
            }
        }
        let mut payouts = tokio::task::JoinSet::new();
        for (instruction, ask_first) in due {
            let adapter = self.ports().payout.clone();
            payouts.spawn(async move {
                let outcome = settle(adapter.as_ref(), &instruction, ask_first, RetryPolicy::DEFAULT).await;
                (instruction.uetr, outcome)
            });
        }
        let (mut events, mut reports) = (Vec::new(), Vec::new());
        while let Some(joined) = payouts.join_next().await {
            let Ok((uetr, outcome)) = joined else { continue };
            match outcome {
                PayoutResult::Paid { reference } => {
                    events.push(JournalEvent::PaidOut { uetr, reference });
                    reports.push(super::reports::completed(uetr));
                }
                PayoutResult::Refused { reason_code, reason } => {
                    info!(%uetr, %reason_code, "payout refused; returning");
                    let (event, report) = super::reports::return_due(uetr, &reason_code, &reason);
                    events.push(event);
                    reports.push(report);
                }
                PayoutResult::Failed { .. } => {}
            }
        }
        if events.is_empty() {
            return;
        }
        // The reports are sent only once the outcomes are durable; if the
        // append fails, a restart asks the bank again.
        if let Err(error) = self.commit(events).await {
            warn!(%error, "cannot journal payout outcomes; the bank is asked for them after a restart");
            return;
        }
        for report in reports {
            self.queue_report(report);
        }
    }
}
