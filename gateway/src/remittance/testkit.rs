//! Fixtures shared by the remittance unit tests: parties, payment messages
//! and records with fixed, readable values.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use remit_settlement::hash::Digest32;
use remit_settlement::ids::{ChainId, CountryCode, Height, ParticipantId, Uetr};
use remit_settlement::money::Money;
use remit_settlement::{PayoutOutcome, PayoutState};

use super::corridor::{CorridorKey, Corridors};
use super::engine::{Engine, EngineConfig};
use super::fx::StaticRates;
use super::journal::{InboxMessage, IncomingTransfer, JournalError, JournalEvent};
use super::party::{Account, AccountScheme, NaturalPersonName, Party, Person};
use super::ports::{
    EnginePorts, EntryOutcome, ExchangeError, FetchedMessages, LedgerError, LedgerOutcome, MockCertifiedBlocks,
    MockClock, MockEventSink, MockJournalPort, MockLedgerPort, MockMessageExchange, MockPayoutAdapter, PayoutResult,
    PayoutStatus,
};
use super::quote::{FixedAmount, QuoteRequest};
use super::record::{commitment, LedgerPosition, PaymentMessage, Remittance, Role, Status, StatusChange};
use super::validate::CreateInput;

/// A natural person in the Philippines with an IBAN account.
pub(crate) fn party(primary: &str, account: &str) -> Party {
    Party {
        person: Person::NaturalPerson(NaturalPersonName { primary_name: primary.into(), secondary_name: "Ana".into() }),
        account: Account { scheme: AccountScheme::Iban, value: account.into() },
        country: "PH".into(),
        address: None,
        date_of_birth: None,
        national_id: None,
    }
}

/// A participant id.
pub(crate) fn participant(id: &str) -> ParticipantId {
    ParticipantId::new(id).expect("a valid participant id")
}

/// An amount in `currency`.
pub(crate) fn money(amount: &str, currency: &str) -> Money {
    Money::parse_parts(amount, currency, "amount").expect("a valid amount")
}

/// The payment message of a USD 100.00 settlement from `gw-us` to `gw-ph`.
pub(crate) fn payment_message(uetr: Uetr) -> PaymentMessage {
    PaymentMessage {
        uetr,
        origin: participant("gw-us"),
        destination: participant("gw-ph"),
        originator: party("Reyes", "US000111"),
        beneficiary: party("Santos", "PH000222"),
        purpose: "FAMI".into(),
        remittance_information: String::new(),
        send_amount: money("102.00", "USD"),
        receive_amount: money("5600.00", "PHP"),
        settlement_amount: money("100.00", "USD"),
        created_at_ms: 1_000,
    }
}

/// The message of `uetr` as it would sit in the destination's inbox (salt 9s).
pub(crate) fn incoming_message(uetr: Uetr) -> (InboxMessage, PaymentMessage) {
    let message = payment_message(uetr);
    let inbox = InboxMessage {
        uetr,
        origin: message.origin.clone(),
        salt: vec![9; 32],
        message: message.to_bytes(),
        received_at_ms: 1_000,
    };
    (inbox, message)
}

/// An origin remittance of client `c1`, received at 1,000 ms (salt 9s).
pub(crate) fn origin_record(uetr: Uetr) -> Remittance {
    let message = payment_message(uetr);
    let salt = [9; 32];
    Remittance {
        uetr,
        role: Role::Origin,
        client_id: "c1".into(),
        idempotency_key: format!("key-{uetr}"),
        request_fingerprint: "fp".into(),
        quote_id: None,
        terms: None,
        commitment: commitment(&salt, &message.to_bytes()),
        message,
        salt,
        status: Status::Received,
        history: vec![StatusChange::new(Status::Received, 1_000, None, "")],
        ledger: None,
        payout_reference: None,
        message_delivered: false,
    }
}

// ---------------------------------------------------------------------------
// An engine on mocked ports
// ---------------------------------------------------------------------------

/// A corridor US -> PH paid by `gw-ph`, at 56.25 PHP per USD.
const CORRIDOR: &str = r#"
    [[corridor]]
    source_country = "US"
    source_currency = "USD"
    destination_country = "PH"
    destination_currency = "PHP"
    settlement_currency = "USD"
    send_amount_min = "10.00"
    send_amount_max = "5000.00"
    fixed_fee = "2.00"
    fee_percent = "0"
    fx_margin_percent = "0"
    destination_participant = "gw-ph"
"#;

/// The configuration of participant `me` (`gw-us` sends, `gw-ph` pays).
pub(crate) fn engine_config(me: &str) -> EngineConfig {
    EngineConfig {
        me: participant(me),
        chain_id: ChainId::new("remit-test").expect("a valid chain id"),
        signing_key: SigningKey::from_bytes(&[7; 32]),
        corridors: Corridors::from_toml(CORRIDOR).expect("a valid corridor"),
        rates: Arc::new(
            StaticRates::from_pairs(iso_currency::Currency::USD, &[("USD", "PHP", "56.25")]).expect("valid rates"),
        ),
        quote_ttl_ms: 60_000,
        push_messages: true,
        store: crate::remittance::engine::StoreOptions::default(),
    }
}

/// A create request priced at the current rate: USD 102.00 sent.
pub(crate) fn create_input(key: &str) -> CreateInput {
    CreateInput {
        quote_id: String::new(),
        price: Some(QuoteRequest {
            corridor: CorridorKey {
                source_country: CountryCode::new("US").expect("country"),
                source_currency: iso_currency::Currency::USD,
                destination_country: CountryCode::new("PH").expect("country"),
                destination_currency: iso_currency::Currency::PHP,
            },
            amount: FixedAmount::Send(money("102.00", "USD")),
        }),
        originator: with_account_number(party("Reyes", "US000111")),
        beneficiary: with_account_number(party("Santos", "PH000222")),
        purpose: "FAMI".into(),
        idempotency_key: key.into(),
        remittance_information: String::new(),
    }
}

fn with_account_number(mut party: Party) -> Party {
    party.account.scheme = AccountScheme::AccountNumber;
    party
}

/// The certified transfer of [`payment_message`]`(uetr)` at height 5, its
/// message salted with 9s, as the destination `gw-ph` sees it.
pub(crate) fn incoming_transfer(uetr: Uetr) -> IncomingTransfer {
    let (inbox, message) = incoming_message(uetr);
    let salt: [u8; 32] = inbox.salt.as_slice().try_into().expect("32 bytes");
    IncomingTransfer {
        uetr,
        origin: message.origin,
        amount: message.settlement_amount,
        commitment: commitment(&salt, &inbox.message),
        ledger: position(5),
    }
}

/// A ledger position at `height`.
pub(crate) fn position(height: u64) -> LedgerPosition {
    LedgerPosition { height: Height(height), block_hash: Digest32([height as u8; 32]) }
}

/// What the mocked ports answer; an empty script gives the happy answer.
#[derive(Default)]
pub(crate) struct Script {
    /// Answers to transfer submissions, in order; then all accepted.
    pub submits: VecDeque<Result<LedgerOutcome, LedgerError>>,
    /// Per-UETR entry outcomes of an applied batch (default accepted).
    pub entries: HashMap<Uetr, EntryOutcome>,
    /// Answers to pushes; then all stored.
    pub pushes: VecDeque<Result<u64, ExchangeError>>,
    /// Every push fails.
    pub push_fails: bool,
    /// Answers to fetches; then nothing found.
    pub fetches: VecDeque<FetchedMessages>,
    /// Answers to payments; then paid `BK-<uetr>`.
    pub pays: VecDeque<PayoutResult>,
    /// Answers to status questions; then unknown.
    pub statuses: VecDeque<PayoutStatus>,
    /// Payout states on the chain (default open).
    pub chain: HashMap<Uetr, PayoutState>,
    /// Journal appends to fail before they succeed again.
    pub journal_failures: usize,
}

/// What the mocked ports were asked, in order.
#[derive(Default)]
pub(crate) struct Seen {
    /// Every event journalled after the start.
    pub journal: Vec<JournalEvent>,
    /// The UETRs of each transfer batch submitted.
    pub batches: Vec<Vec<Uetr>>,
    /// The commitments of each transfer batch submitted.
    pub commitments: Vec<Vec<Digest32>>,
    /// Each report batch submitted.
    pub reports: Vec<Vec<(Uetr, PayoutOutcome)>>,
    /// Each push: destination and UETRs.
    pub pushes: Vec<(ParticipantId, Vec<Uetr>)>,
    /// Each fetch: origin and UETRs.
    pub fetches: Vec<(ParticipantId, Vec<Uetr>)>,
    /// Each payment, with how many journal events were durable before it.
    pub pays: Vec<(Uetr, usize)>,
    /// Each status question.
    pub asked: Vec<Uetr>,
    /// Each webhook announcement.
    pub announced: Vec<(Uetr, Status)>,
}

/// The shared state of the mocks.
#[derive(Default)]
pub(crate) struct World {
    pub script: Mutex<Script>,
    pub seen: Mutex<Seen>,
}

impl World {
    pub(crate) fn new(script: Script) -> Arc<Self> {
        Arc::new(Self { script: Mutex::new(script), seen: Mutex::default() })
    }

    pub(crate) fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().expect("seen lock")
    }

    pub(crate) fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().expect("script lock")
    }

    /// The journalled events matching `pick`.
    pub(crate) fn journalled(&self, pick: impl Fn(&JournalEvent) -> bool) -> usize {
        self.seen().journal.iter().filter(|event| pick(event)).count()
    }
}

/// The mocked ports over `world`.
pub(crate) fn mocked_ports(world: &Arc<World>) -> EnginePorts {
    let mut ledger = MockLedgerPort::new();
    let w = world.clone();
    ledger.expect_submit_transfers().returning(move |batch| {
        let uetrs: Vec<Uetr> = batch.transfers.iter().map(|t| t.uetr).collect();
        let mut seen = w.seen();
        seen.batches.push(uetrs.clone());
        seen.commitments.push(batch.transfers.iter().map(|t| t.payload_commitment).collect());
        drop(seen);
        let mut script = w.script();
        script.submits.pop_front().unwrap_or_else(|| {
            let entries =
                uetrs.iter().map(|u| script.entries.get(u).cloned().unwrap_or(EntryOutcome::Accepted)).collect();
            Ok(LedgerOutcome::Applied { position: Some(position(3)), entries })
        })
    });
    let w = world.clone();
    ledger.expect_submit_reports().returning(move |batch| {
        let reports: Vec<(Uetr, PayoutOutcome)> = batch.reports.iter().map(|r| (r.uetr, r.outcome)).collect();
        let mut script = w.script();
        // Certified at once: the chain shows them reported.
        for (uetr, outcome) in &reports {
            let state = match outcome {
                PayoutOutcome::Completed => PayoutState::Completed,
                PayoutOutcome::Returned { reason } => PayoutState::Returned(*reason),
            };
            script.chain.insert(*uetr, state);
        }
        w.seen().reports.push(reports.clone());
        Ok(LedgerOutcome::Applied { position: Some(position(4)), entries: vec![EntryOutcome::Accepted; reports.len()] })
    });
    let mut blocks = MockCertifiedBlocks::new();
    blocks.expect_certified_height().returning(|| 0);
    blocks.expect_block().returning(|_| None);
    let w = world.clone();
    blocks.expect_payout_states().returning(move |uetrs| {
        let script = w.script();
        uetrs.iter().map(|u| Some(script.chain.get(u).copied().unwrap_or(PayoutState::Open))).collect()
    });
    let mut exchange = MockMessageExchange::new();
    exchange.expect_knows().returning(|_| true);
    let w = world.clone();
    exchange.expect_push().returning(move |destination, messages| {
        w.seen().pushes.push((destination.clone(), messages.iter().map(|m| m.uetr).collect()));
        let mut script = w.script();
        if script.push_fails {
            return Err(ExchangeError::Failed("unreachable".into()));
        }
        script.pushes.pop_front().unwrap_or(Ok(messages.len() as u64))
    });
    let w = world.clone();
    exchange.expect_fetch().returning(move |origin, uetrs| {
        w.seen().fetches.push((origin.clone(), uetrs.to_vec()));
        Ok(w.script().fetches.pop_front().unwrap_or_default())
    });
    let mut payout = MockPayoutAdapter::new();
    let w = world.clone();
    payout.expect_pay().returning(move |instruction| {
        let durable = w.seen().journal.len();
        w.seen().pays.push((instruction.uetr, durable));
        let reference = format!("BK-{}", instruction.uetr);
        w.script().pays.pop_front().unwrap_or(PayoutResult::Paid { reference })
    });
    let w = world.clone();
    payout.expect_status().returning(move |uetr| {
        w.seen().asked.push(uetr);
        w.script().statuses.pop_front().unwrap_or(PayoutStatus::Unknown)
    });
    payout.expect_name().return_const("mock");
    let mut clock = MockClock::new();
    clock.expect_now_ms().return_const(1_000_000u64);
    let mut events = MockEventSink::new();
    events.expect_has_endpoint().returning(|client| client == "c1");
    let w = world.clone();
    events.expect_publish().returning(move |record, changes| {
        w.seen().announced.extend(changes.iter().map(|c| (record.uetr, c.status)));
    });
    EnginePorts {
        ledger: Arc::new(ledger),
        blocks: Arc::new(blocks),
        exchange: Arc::new(exchange),
        payout: Arc::new(payout),
        screening: Arc::new(remit_compliance::PassThrough),
        clock: Arc::new(clock),
        events: Some(Arc::new(events)),
    }
}

/// A journal that records appends in `world` (failing as scripted).
pub(crate) fn mocked_journal(world: &Arc<World>) -> Arc<MockJournalPort> {
    let mut journal = MockJournalPort::new();
    let w = world.clone();
    journal.expect_append().returning(move |events| {
        let mut script = w.script();
        if script.journal_failures > 0 {
            script.journal_failures -= 1;
            return Err(JournalError::Write("disk full".into()));
        }
        w.seen().journal.extend(events.iter().cloned());
        Ok(())
    });
    Arc::new(journal)
}

/// Participant `me`'s engine on the mocks of `world`, its state replayed
/// from `events`.
pub(crate) fn start_engine(me: &str, events: Vec<JournalEvent>, world: &Arc<World>) -> Engine {
    Engine::start_with_journal(engine_config(me), mocked_journal(world), events, mocked_ports(world))
        .expect("the engine starts")
}

/// Waits (in paused test time) until `done` holds; fails naming `what`.
pub(crate) async fn until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..100_000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

/// Lets every task run to quiescence (paused test time: two minutes pass).
pub(crate) async fn settle() {
    tokio::time::sleep(Duration::from_secs(120)).await;
}

/// The status of `uetr` at `engine`.
pub(crate) fn status_of(engine: &Engine, uetr: &Uetr) -> Option<Status> {
    engine.record(uetr).map(|record| record.status)
}
