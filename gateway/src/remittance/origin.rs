//! The origin side: create (validate, take the quote, screen, journal
//! durably before answering), cancel, and the submitter that batches
//! accepted remittances, signs each batch, pushes the payment messages to
//! their destinations and submits to the ledger with retries.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::RngCore;
use remit_compliance::{ScreeningDecision, ScreeningSubject};
use remit_settlement::ids::{ParticipantId, Uetr};
use remit_settlement::{Transfer, TransferBatch};
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info_span, warn, Instrument};
use uuid::Uuid;

use super::engine::{non_empty, Engine, SUBMITS_IN_FLIGHT_MAX, SUBMIT_BATCH_AGE_MS, SUBMIT_BATCH_MAX};
use super::errors::{ErrorKind, RequestError};
use super::journal::JournalEvent;
use super::messages::outgoing;
use super::ports::{EntryOutcome, LedgerError, LedgerOutcome, OutgoingMessage};
use super::quote::{self, Quote, QuoteId, QuoteRequest};
use super::record::{commitment, LedgerPosition, PaymentMessage, Remittance, Role, Status, StatusChange};
use super::state::payout_pending;
use super::validate::{fingerprint, screened, validate_input, CreateInput};

enum Prepared {
    /// A new remittance and its payment message bytes (as committed to).
    New(Box<Remittance>, Vec<u8>),
    Existing(Uetr, String),
}

impl Engine {
    /// Prices a quote and issues it.
    pub fn create_quote(
        &self,
        client: &str,
        request: &QuoteRequest,
    ) -> Result<(Quote, Option<ParticipantId>), RequestError> {
        let terms = quote::quote(&self.inner.config.corridors, self.inner.config.rates.as_ref(), request)?;
        let destination = self
            .inner
            .config
            .corridors
            .get(&request.corridor, "corridor")
            .ok()
            .and_then(|c| c.destination_participant().cloned());
        let quote = self.inner.quotes.issue(client, terms, self.now_ms())?;
        Ok((quote, destination))
    }

    /// Creates one remittance (see [`Engine::create_many`]).
    pub async fn create(&self, client: &str, input: CreateInput) -> Result<Remittance, RequestError> {
        self.create_or_repeat(client, input).await.map(|(remittance, _)| remittance)
    }

    /// [`Engine::create`], also saying whether the call was a repeat: `true`
    /// when the idempotency key had already created the remittance.
    pub async fn create_or_repeat(&self, client: &str, input: CreateInput) -> Result<(Remittance, bool), RequestError> {
        self.create_many_flagged(client, vec![input])
            .await
            .pop()
            .unwrap_or_else(|| Err(RequestError::internal("no result")))
    }

    /// Creates remittances, each judged on its own; answered once every new
    /// one is durable. A repeated idempotency key returns the remittance it
    /// created (waiting for it to be durable if it is in flight).
    pub async fn create_many(&self, client: &str, inputs: Vec<CreateInput>) -> Vec<Result<Remittance, RequestError>> {
        let results = self.create_many_flagged(client, inputs).await;
        results.into_iter().map(|result| result.map(|(remittance, _)| remittance)).collect()
    }

    /// [`Engine::create_many`], each result flagged `true` for a repeat.
    pub(super) async fn create_many_flagged(
        &self,
        client: &str,
        inputs: Vec<CreateInput>,
    ) -> Vec<Result<(Remittance, bool), RequestError>> {
        let now = self.now_ms();
        let span = info_span!("remit.remittance.create", client, count = inputs.len());
        let mut results: Vec<Option<Result<Remittance, RequestError>>> = vec![None; inputs.len()];
        let mut fresh: Vec<(usize, Box<Remittance>, Vec<u8>)> = Vec::new();
        let mut existing: Vec<(usize, Uetr, String, String)> = Vec::new();
        for (index, input) in inputs.into_iter().enumerate() {
            let key = input.idempotency_key.clone();
            match self.prepare(client, input, now) {
                Ok(Prepared::New(record, message_bytes)) => fresh.push((index, record, message_bytes)),
                Ok(Prepared::Existing(uetr, fingerprint)) => existing.push((index, uetr, fingerprint, key)),
                Err(error) => results[index] = Some(Err(error)),
            }
        }
        if !fresh.is_empty() {
            let mut slots = Vec::with_capacity(fresh.len());
            let mut events = Vec::with_capacity(fresh.len());
            for (index, remittance, message_bytes) in fresh {
                slots.push((index, message_bytes));
                events.push(JournalEvent::Created { remittance });
            }
            let durable = self.inner.journal.append(&events).instrument(span.clone()).await;
            let mut state = self.state();
            for ((index, message_bytes), event) in slots.into_iter().zip(events) {
                let JournalEvent::Created { remittance: record } = event else { unreachable!("built as created") };
                let uetr = record.uetr;
                match &durable {
                    Ok(()) => {
                        let submit = record.status == Status::Received;
                        results[index] = Some(Ok((*record).clone()));
                        state.apply(JournalEvent::Created { remittance: record });
                        if submit {
                            // Kept for the submitter, which pushes the message.
                            state.message_bytes.insert(uetr, message_bytes);
                            let _ = self.inner.submit_tx.send(uetr);
                        }
                    }
                    Err(error) => {
                        state.idempotency.retain(|_, reserved| *reserved != uetr);
                        results[index] = Some(Err(RequestError::internal(format!("not recorded, retry: {error}"))));
                    }
                }
            }
            drop(state);
            self.inner.created.notify_waiters();
            if self.has_listeners(client) {
                for result in results.iter().flatten().flatten() {
                    self.publish(result.clone());
                }
            }
        }
        let mut repeats = vec![false; results.len()];
        for (index, uetr, fingerprint, key) in existing {
            results[index] = Some(self.wait_created(client, uetr, &fingerprint, &key).await);
            repeats[index] = true;
        }
        results
            .into_iter()
            .zip(repeats)
            .map(|(result, repeat)| {
                result
                    .unwrap_or_else(|| Err(RequestError::internal("no result")))
                    .map(|remittance| (remittance, repeat))
            })
            .collect()
    }

    fn prepare(&self, client: &str, input: CreateInput, now: u64) -> Result<Prepared, RequestError> {
        let quote_id = validate_input(&input)?;
        let fingerprint = fingerprint(&input);
        let uetr = Uetr::new_random();
        let slot = (client.to_owned(), input.idempotency_key.clone());
        if let Some(existing) = self.state().idempotency.get(&slot) {
            return Ok(Prepared::Existing(*existing, fingerprint));
        }
        // The archive (a sled read, perhaps from disk) is asked outside the
        // engine's state lock. A record enters the archive before it leaves
        // memory and never leaves the archive, so a key found in neither
        // was free when memory was checked; the check is repeated under the
        // lock that takes the key, for a create racing this one.
        let archived = self
            .inner
            .archive
            .by_idempotency_key(client, &input.idempotency_key)
            .map_err(|e| RequestError::internal(e.to_string()))?;
        if let Some(existing) = archived {
            return Ok(Prepared::Existing(existing, fingerprint));
        }
        {
            let mut state = self.state();
            if let Some(existing) = state.idempotency.get(&slot) {
                return Ok(Prepared::Existing(*existing, fingerprint));
            }
            state.idempotency.insert(slot, uetr);
        }
        let release = |engine: &Engine| {
            engine.state().idempotency.remove(&(client.to_owned(), input.idempotency_key.clone()));
            engine.inner.created.notify_waiters();
        };
        match self.build(client, &input, quote_id, uetr, fingerprint, now) {
            Ok((record, message_bytes)) => Ok(Prepared::New(Box::new(record), message_bytes)),
            Err(error) => {
                release(self);
                Err(error)
            }
        }
    }

    fn build(
        &self,
        client: &str,
        input: &CreateInput,
        quote_id: Option<QuoteId>,
        uetr: Uetr,
        fingerprint: String,
        now: u64,
    ) -> Result<(Remittance, Vec<u8>), RequestError> {
        let config = &self.inner.config;
        // Check the corridor before consuming the quote.
        let quote = match (quote_id, &input.price) {
            (Some(id), _) => self.inner.quotes.peek(client, id, now)?,
            (None, Some(request)) => {
                let terms = quote::quote(&config.corridors, config.rates.as_ref(), request).map_err(|e| {
                    let mut error = RequestError::from(e);
                    if let Some(field) = &error.field {
                        error.field = Some(format!("quote.{field}"));
                        error.message = format!("quote.{}", error.message);
                    }
                    error
                })?;
                Quote { id: QuoteId::from_uuid(Uuid::new_v4()), terms, issued_at_unix_ms: now, expires_at_unix_ms: now }
            }
            (None, None) => return Err(RequestError::invalid("quote_id", None, "is required")),
        };
        let corridor = config.corridors.get(&quote.terms.corridor, "quote_id")?;
        let destination = corridor.destination_participant().cloned().ok_or_else(|| {
            RequestError::new(
                ErrorKind::FailedPrecondition,
                Some("quote_id"),
                Some("AG03"),
                format!("quote_id: corridor {} has no paying gateway configured", quote.terms.corridor),
            )
        })?;
        if destination == config.me {
            return Err(RequestError::new(
                ErrorKind::FailedPrecondition,
                Some("quote_id"),
                Some("AG03"),
                "quote_id: this gateway pays out the corridor itself; on-us payments are not remittances",
            ));
        }
        let quote = match quote_id {
            Some(id) => self.inner.quotes.take(client, id, now)?,
            None => quote,
        };
        let terms = quote.terms;
        let message = PaymentMessage {
            uetr,
            origin: config.me.clone(),
            destination,
            originator: input.originator.clone(),
            beneficiary: input.beneficiary.clone(),
            purpose: input.purpose.clone(),
            remittance_information: input.remittance_information.clone(),
            send_amount: terms.send_amount,
            receive_amount: terms.receive_amount,
            settlement_amount: terms.settlement_amount,
            created_at_ms: now,
        };
        let mut salt = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut salt);
        let message_bytes = message.to_bytes();
        let commitment = commitment(&salt, &message_bytes);
        let subject = ScreeningSubject {
            uetr: uetr.to_string(),
            originator: screened(&input.originator),
            beneficiary: screened(&input.beneficiary),
            amount: terms.send_amount.amount().to_string(),
            currency: terms.send_amount.currency().code().to_owned(),
            purpose: input.purpose.clone(),
        };
        let mut history = vec![StatusChange::new(Status::Received, now, None, "")];
        match self.inner.ports.screening.screen(&subject) {
            ScreeningDecision::Pass => {}
            ScreeningDecision::Hold(reasons) => {
                history.push(StatusChange::new(Status::ComplianceHold, now, Some("NARR"), reasons.join("; ")));
            }
            ScreeningDecision::Reject { reason_code, reason } => {
                history.push(StatusChange::new(Status::Rejected, now, Some(&reason_code), reason));
            }
        }
        let status = history.last().map_or(Status::Received, |c| c.status);
        let record = Remittance {
            uetr,
            role: Role::Origin,
            client_id: client.to_owned(),
            idempotency_key: input.idempotency_key.clone(),
            request_fingerprint: fingerprint,
            quote_id: Some(quote.id.to_string()),
            terms: Some(terms),
            message,
            salt,
            commitment,
            status,
            history,
            ledger: None,
            payout_reference: None,
            message_delivered: false,
        };
        Ok((record, message_bytes))
    }

    async fn wait_created(
        &self,
        client: &str,
        uetr: Uetr,
        fingerprint: &str,
        key: &str,
    ) -> Result<Remittance, RequestError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let notified = self.inner.created.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.state();
                if let Some(record) = state.remittances.get(&uetr) {
                    if record.request_fingerprint != fingerprint {
                        return Err(RequestError::idempotency_key_reused(key));
                    }
                    return Ok((**record).clone());
                }
                if let Some(repeat) = self.archived_repeat(&uetr, fingerprint, key) {
                    return repeat;
                }
                if state.idempotency.get(&(client.to_owned(), key.to_owned())) != Some(&uetr) {
                    return Err(RequestError::new(
                        ErrorKind::Unavailable,
                        None,
                        None,
                        "the first request with this idempotency key failed; retry",
                    ));
                }
            }
            if tokio::time::timeout_at(deadline.into(), notified).await.is_err() {
                return Err(RequestError::new(ErrorKind::Unavailable, None, None, "still being recorded; retry"));
            }
        }
    }

    /// Cancels a remittance that has not been submitted.
    pub async fn cancel(&self, client: &str, uetr: &str, reason: &str) -> Result<Remittance, RequestError> {
        let record = self.get(client, uetr)?;
        let change = StatusChange::new(
            Status::Cancelled,
            self.now_ms(),
            Some("DS02"),
            if reason.is_empty() { "cancelled by the client".to_owned() } else { reason.chars().take(140).collect() },
        );
        let event = JournalEvent::Status { uetr: record.uetr, change, ledger: None, payout_reference: None };
        {
            let mut state = self.state();
            let current = state.remittances.get(&record.uetr).map(|r| r.status);
            if !matches!(current, Some(Status::Received | Status::ComplianceHold)) {
                return Err(RequestError::new(
                    ErrorKind::FailedPrecondition,
                    Some("uetr"),
                    None,
                    format!(
                        "remittance {} is {}; only received or held remittances can be cancelled",
                        record.uetr,
                        current.map_or("unknown", Status::as_str)
                    ),
                ));
            }
            // Applied under the lock so the submitter cannot take it meanwhile.
            state.apply(event.clone());
            state.message_bytes.remove(&record.uetr);
        }
        self.inner.journal.append(std::slice::from_ref(&event)).await?;
        let record = self.get(client, uetr)?;
        self.publish(record.clone());
        Ok(record)
    }

    // ---- origin: submission ----

    pub(super) async fn run_submitter(self, mut rx: mpsc::UnboundedReceiver<Uetr>) {
        let in_flight = Arc::new(Semaphore::new(SUBMITS_IN_FLIGHT_MAX));
        loop {
            let Some(first) = rx.recv().await else { return };
            let mut uetrs = vec![first];
            let deadline = tokio::time::Instant::now() + Duration::from_millis(SUBMIT_BATCH_AGE_MS);
            while uetrs.len() < SUBMIT_BATCH_MAX {
                tokio::select! {
                    next = rx.recv() => match next { Some(uetr) => uetrs.push(uetr), None => break },
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
            let Ok(permit) = in_flight.clone().acquire_owned().await else { return };
            let engine = self.clone();
            tokio::spawn(async move {
                engine.submit(uetrs).await;
                drop(permit);
            });
        }
    }

    async fn submit(&self, uetrs: Vec<Uetr>) {
        let now = self.now_ms();
        let mut transfers = Vec::with_capacity(uetrs.len());
        let mut envelopes: HashMap<ParticipantId, Vec<OutgoingMessage>> = HashMap::new();
        let mut submitted = Vec::new();
        {
            let mut state = self.state();
            for uetr in uetrs {
                // Serialised once, at creation (after a restart: again here).
                let cached_bytes = state.message_bytes.remove(&uetr);
                let Some(record) = state.remittances.get(&uetr) else { continue };
                if !matches!(record.status, Status::Received | Status::Submitted) || record.role != Role::Origin {
                    continue;
                }
                transfers.push(Transfer {
                    uetr,
                    origin: record.message.origin.clone(),
                    destination: record.message.destination.clone(),
                    amount: record.message.settlement_amount,
                    payload_commitment: record.commitment,
                    created_at_ms: record.message.created_at_ms,
                });
                if !record.message_delivered && self.inner.config.push_messages {
                    envelopes
                        .entry(record.message.destination.clone())
                        .or_default()
                        .push(outgoing(record, cached_bytes));
                }
                let event = JournalEvent::Status {
                    uetr,
                    change: StatusChange::new(Status::Submitted, now, None, ""),
                    ledger: None,
                    payout_reference: None,
                };
                // In memory first, under the lock: a cancel can no longer win.
                state.apply(event.clone());
                submitted.push(event);
            }
        }
        if transfers.is_empty() {
            return;
        }
        let span = info_span!("remit.remittance.submit", transfers = transfers.len());
        let uetrs: Vec<Uetr> = transfers.iter().map(|t| t.uetr).collect();
        let journal = self.clone();
        tokio::spawn(async move { journal.commit_or_log(submitted).await });
        for (destination, batch) in envelopes {
            let engine = self.clone();
            tokio::spawn(async move { engine.deliver_messages(destination, batch).await });
        }
        let config = &self.inner.config;
        let batch = TransferBatch::sign(&config.chain_id, config.me.clone(), transfers, &config.signing_key);
        let events = self.submit_with_retry(&batch, &uetrs).instrument(span).await;
        self.commit_or_log(events).await;
    }

    /// Submits `batch` until the ledger answers; a ledger that is
    /// unavailable is asked again with the same batch (same UETRs), one that
    /// refuses the submission for good rejects every remittance in it.
    async fn submit_with_retry(&self, batch: &TransferBatch, uetrs: &[Uetr]) -> Vec<JournalEvent> {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.ports().ledger.submit_transfers(batch).await {
                Ok(outcome) => return self.outcome_events(&outcome, uetrs),
                Err(LedgerError::Unavailable(message)) => {
                    debug!(%message, "batch submit failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(LedgerError::Refused(message)) => {
                    warn!(%message, "batch refused");
                    let now = self.now_ms();
                    return uetrs
                        .iter()
                        .map(|uetr| JournalEvent::Status {
                            uetr: *uetr,
                            change: StatusChange::new(Status::Rejected, now, Some("NARR"), &message),
                            ledger: None,
                            payout_reference: None,
                        })
                        .collect();
                }
            }
        }
    }

    fn outcome_events(&self, outcome: &LedgerOutcome, uetrs: &[Uetr]) -> Vec<JournalEvent> {
        let now = self.now_ms();
        let status_event = |uetr: Uetr, change: StatusChange, ledger: Option<LedgerPosition>| JournalEvent::Status {
            uetr,
            change,
            ledger,
            payout_reference: None,
        };
        let (position, entries) = match outcome {
            LedgerOutcome::BatchRejected { iso_code, reason } => {
                let code = non_empty(iso_code).unwrap_or("NARR");
                return uetrs
                    .iter()
                    .map(|uetr| status_event(*uetr, StatusChange::new(Status::Rejected, now, Some(code), reason), None))
                    .collect();
            }
            LedgerOutcome::Applied { position, entries } => (*position, entries),
        };
        let mut events = Vec::with_capacity(uetrs.len());
        for (uetr, entry) in uetrs.iter().zip(entries) {
            match entry {
                EntryOutcome::Accepted => {
                    events.push(status_event(*uetr, StatusChange::new(Status::Committed, now, None, ""), position));
                }
                // An earlier attempt landed: the follower sets the position.
                EntryOutcome::Duplicate => {
                    events.push(status_event(*uetr, StatusChange::new(Status::Committed, now, None, ""), None));
                }
                EntryOutcome::Rejected { iso_code, reason } => {
                    let code = non_empty(iso_code).unwrap_or("NARR");
                    let change = StatusChange::new(Status::Rejected, now, Some(code), format!("ledger: {reason}"));
                    events.push(status_event(*uetr, change, position));
                }
            }
        }
        events
    }

    async fn deliver_messages(&self, destination: ParticipantId, envelopes: Vec<OutgoingMessage>) {
        let exchange = &self.ports().exchange;
        if !exchange.knows(&destination) {
            warn!(%destination, "no address for the destination gateway; it will have to fetch the messages");
            return;
        }
        let uetrs: Vec<Uetr> = envelopes.iter().map(|e| e.uetr).collect();
        let mut backoff = Duration::from_millis(100);
        for _ in 0..8 {
            match exchange.push(&destination, &envelopes).await {
                Ok(_) => {
                    let now = self.now_ms();
                    let mut events: Vec<JournalEvent> =
                        uetrs.iter().map(|uetr| JournalEvent::MessageDelivered { uetr: *uetr }).collect();
                    // A remittance already final moves on to payout_pending.
                    {
                        let state = self.state();
                        for uetr in &uetrs {
                            if state.remittances.get(uetr).is_some_and(|r| r.status == Status::Final) {
                                events.push(payout_pending(*uetr, now));
                            }
                        }
                    }
                    self.commit_or_log(events).await;
                    return;
                }
                Err(error) => {
                    debug!(%destination, %error, "payment message delivery failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        warn!(%destination, count = uetrs.len(), "payment messages not delivered; the destination will fetch them");
    }
}
