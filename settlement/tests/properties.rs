//! Property tests of the ledger state machine: conservation and agreement
//! with an independent model over random streams of valid and invalid
//! transfers and payout reports (completions and returns), determinism,
//! duplicate-UETR idempotency, the exact net debit cap boundary per currency,
//! and amount precision.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use iso_currency::Currency;
use proptest::prelude::*;
use proptest::sample::Index;
use remit_settlement::block::TransferOutcome;
use remit_settlement::constants::CREATED_AT_SKEW_MS_DEFAULT;
use remit_settlement::{
    Block, Entry, EntryResult, GovernanceAction, GovernanceProposal, Height, LedgerState, Money, MoneyError,
    ParticipantStatus, PayoutOutcome, PayoutReportBatch, PayoutState, RejectReason, SignatureCheck, Transfer,
    TransferBatch, Uetr,
};
use rust_decimal::Decimal;

/// Index 6 in generated streams stands for the unregistered [`UNKNOWN_ID`].
const IDS: [&str; 7] = ["gw-us", "gw-jp", "gw-kw", "gw-de", "gw-hub", "gw-ph", UNKNOWN_ID];

// ---------------------------------------------------------------------------
// Random operation streams.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignatureMode {
    Valid,
    /// One bit of a valid signature flipped.
    Corrupted,
    /// Signed by another participant's key.
    WrongKey,
}

#[derive(Debug, Clone)]
struct TransferSpec {
    destination: usize,
    currency: usize,
    /// Minor units; up to 60% of a typical cap, so caps are hit within a few transfers.
    amount_minor: u64,
    /// Reuse the UETR of an earlier generated transfer (accepted or not).
    reuse_uetr: Option<Index>,
    /// The transfer names another participant as its origin than the batch.
    wrong_origin: bool,
    /// `created_at_ms` beyond the allowed skew after the block timestamp.
    from_future: bool,
}

#[derive(Debug, Clone)]
struct ReportSpec {
    /// Which earlier generated transfer (accepted or not) is reported on.
    target: Index,
    /// A return (with one of [`RETURN_REASONS`]) rather than a completion.
    returned: Option<usize>,
}

/// Return reasons drawn by the generator.
const RETURN_REASONS: [&str; 3] = ["AC04", "AM09", "MS03"];

#[derive(Debug, Clone)]
enum Op {
    Batch {
        origin: usize,
        transfers: Vec<TransferSpec>,
        signature: SignatureMode,
    },
    SetStatus {
        participant: usize,
        suspended: bool,
    },
    /// Reports from `reporter`, or when `None` from the destination the first
    /// target was generated with (the later targets are then drawn among the
    /// transfers generated for that destination, so most reports are by the
    /// right participant).
    Reports {
        reporter: Option<usize>,
        reports: Vec<ReportSpec>,
        signature: SignatureMode,
    },
}

fn participant_index() -> impl Strategy<Value = usize> {
    // Mostly registered participants; now and then the unknown one.
    prop_oneof![12 => 0usize..6, 1 => Just(6usize)]
}

fn transfer_spec() -> impl Strategy<Value = TransferSpec> {
    (
        participant_index(),
        // USD is the one currency every participant settles in.
        prop_oneof![6 => Just(0usize), 1 => Just(1usize), 1 => Just(2usize), 1 => Just(3usize)],
        1u64..=60_000,
        prop::option::weighted(0.15, any::<Index>()),
        prop::bool::weighted(0.03),
        prop::bool::weighted(0.03),
    )
        .prop_map(|(destination, currency, amount_minor, reuse_uetr, wrong_origin, from_future)| TransferSpec {
            destination,
            currency,
            amount_minor,
            reuse_uetr,
            wrong_origin,
            from_future,
        })
}

fn signature_mode() -> impl Strategy<Value = SignatureMode> {
    prop_oneof![18 => Just(SignatureMode::Valid), 1 => Just(SignatureMode::Corrupted), 1 => Just(SignatureMode::WrongKey)]
}

fn report_spec() -> impl Strategy<Value = ReportSpec> {
    (any::<Index>(), prop::option::weighted(0.5, 0..RETURN_REASONS.len()))
        .prop_map(|(target, returned)| ReportSpec { target, returned })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (participant_index(), prop::collection::vec(transfer_spec(), 0..8), signature_mode())
            .prop_map(|(origin, transfers, signature)| Op::Batch { origin, transfers, signature }),
        1 => (participant_index(), prop::bool::weighted(0.5))
            .prop_map(|(participant, suspended)| Op::SetStatus { participant, suspended }),
        5 => (prop::option::weighted(0.2, participant_index()), prop::collection::vec(report_spec(), 0..6), signature_mode())
            .prop_map(|(reporter, reports, signature)| Op::Reports { reporter, reports, signature }),
    ]
}

fn blocks() -> impl Strategy<Value = Vec<Vec<Op>>> {
    prop::collection::vec(prop::collection::vec(op(), 0..6), 1..6)
}

/// Every generated transfer's UETR with the destination index it was generated with.
type Generated = Vec<(Uetr, usize)>;

/// Turns generated operations into concrete proposals, numbering UETRs in order.
fn build_proposals(blocks: &[Vec<Op>]) -> Vec<(u64, Vec<Entry>)> {
    let mut uetrs: Generated = Vec::new();
    let mut timestamp_ms = GENESIS_TIME_MS;
    let mut out = Vec::new();
    for ops in blocks {
        timestamp_ms += 1_000;
        let entries = ops.iter().map(|op| build_entry(op, timestamp_ms, &mut uetrs)).collect();
        out.push((timestamp_ms, entries));
    }
    out
}

fn build_entry(op: &Op, timestamp_ms: u64, uetrs: &mut Generated) -> Entry {
    match op {
        Op::Reports { reporter, reports, signature } => build_reports(*reporter, reports, *signature, uetrs),
        Op::SetStatus { participant, suspended } => admin(Entry::SetParticipantStatus {
            participant: pid(IDS[*participant]),
            status: if *suspended { ParticipantStatus::Suspended } else { ParticipantStatus::Active },
        }),
        Op::Batch { origin, transfers, signature } => {
            let origin_id = IDS[*origin];
            let transfers = transfers
                .iter()
                .map(|spec| {
                    let uetr = match &spec.reuse_uetr {
                        Some(index) if !uetrs.is_empty() => uetrs[index.index(uetrs.len())].0,
                        _ => uetr(uetrs.len() as u64),
                    };
                    uetrs.push((uetr, spec.destination));
                    let named_origin = if spec.wrong_origin { IDS[(*origin + 1) % IDS.len()] } else { origin_id };
                    let mut t = transfer(
                        uetr,
                        named_origin,
                        IDS[spec.destination],
                        money(spec.amount_minor, CURRENCIES[spec.currency]),
                    );
                    if spec.from_future {
                        t.created_at_ms = timestamp_ms + CREATED_AT_SKEW_MS_DEFAULT + 1;
                    }
                    t
                })
                .collect();
            let mut entry = match signature {
                SignatureMode::WrongKey => batch_signed_with(origin_id, transfers, &signing_key(200)),
                _ => batch(origin_id, transfers),
            };
            if *signature == SignatureMode::Corrupted {
                let Entry::TransferBatch { batch } = &mut entry else { unreachable!("built as a batch") };
                batch.signature.0[17] ^= 0x04;
            }
            entry
        }
    }
}

fn build_reports(reporter: Option<usize>, specs: &[ReportSpec], signature: SignatureMode, uetrs: &Generated) -> Entry {
    let first_destination = specs.first().filter(|_| !uetrs.is_empty()).map(|s| uetrs[s.target.index(uetrs.len())].1);
    let reporter = reporter.or(first_destination).unwrap_or(1);
    let same_destination: Vec<Uetr> = uetrs.iter().filter(|(_, d)| *d == reporter).map(|(u, _)| *u).collect();
    let reports = specs
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let uetr = if i > 0 && !same_destination.is_empty() {
                same_destination[spec.target.index(same_destination.len())]
            } else if uetrs.is_empty() {
                uetr(u64::MAX)
            } else {
                uetrs[spec.target.index(uetrs.len())].0
            };
            match spec.returned {
                Some(r) => returned(uetr, RETURN_REASONS[r]),
                None => completed(uetr),
            }
        })
        .collect();
    let reporter_id = IDS[reporter];
    let mut entry = match signature {
        SignatureMode::WrongKey => reports_signed_with(reporter_id, reports, &signing_key(200)),
        _ => common::reports(reporter_id, reports),
    };
    if signature == SignatureMode::Corrupted {
        let Entry::PayoutReports { batch } = &mut entry else { unreachable!("built as a report batch") };
        batch.signature.0[17] ^= 0x04;
    }
    entry
}

// ---------------------------------------------------------------------------
// An independent model of the ledger rules, in integer minor units.

#[derive(Debug, Clone)]
struct ModelParticipant {
    active: bool,
    caps: BTreeMap<Currency, i128>,
    positions: BTreeMap<Currency, i128>,
}

/// An accepted transfer as the model remembers it.
#[derive(Debug, Clone)]
struct ModelTransfer {
    height: Height,
    origin: String,
    destination: String,
    currency: Currency,
    amount: i128,
    payout: PayoutState,
}

#[derive(Debug, Clone)]
struct Model {
    participants: BTreeMap<String, ModelParticipant>,
    applied: BTreeMap<Uetr, ModelTransfer>,
    reports_accepted: u64,
}

impl Model {
    fn genesis() -> Self {
        let participants = SPECS
            .iter()
            .map(|spec| {
                let caps = spec.caps_minor.iter().map(|(c, cap)| (*c, i128::from(*cap))).collect();
                let positions = spec.caps_minor.iter().map(|(c, _)| (*c, 0i128)).collect();
                (spec.id.to_owned(), ModelParticipant { active: true, caps, positions })
            })
            .collect();
        Self { participants, applied: BTreeMap::new(), reports_accepted: 0 }
    }

    /// Predicts the results of `entries`, built from `ops`.
    fn apply(&mut self, ops: &[Op], entries: &[Entry], height: Height, timestamp_ms: u64) -> Vec<EntryResult> {
        assert_eq!(ops.len(), entries.len());
        ops.iter()
            .zip(entries)
            .map(|(op, entry)| match entry {
                Entry::Governance {
                    proposal:
                        GovernanceProposal {
                            action: GovernanceAction::SetParticipantStatus { participant, status }, ..
                        },
                    ..
                } => match self.participants.get_mut(participant.as_str()) {
                    None => EntryResult::Rejected { reason: RejectReason::UnknownParticipant },
                    Some(p) => {
                        p.active = *status == ParticipantStatus::Active;
                        EntryResult::Applied
                    }
                },
                Entry::TransferBatch { batch } => {
                    // Whether the origin's own key signed the batch as sent is
                    // known from how it was built, not asked of the library.
                    let signed_by_origin = matches!(op, Op::Batch { signature: SignatureMode::Valid, .. });
                    self.apply_batch(batch, signed_by_origin, height, timestamp_ms)
                }
                Entry::PayoutReports { batch } => {
                    let signed_by_reporter = matches!(op, Op::Reports { signature: SignatureMode::Valid, .. });
                    self.apply_reports(batch, signed_by_reporter)
                }
                other => panic!("the model does not generate {other:?}"),
            })
            .collect()
    }

    fn apply_batch(
        &mut self,
        batch: &TransferBatch,
        signed_by_origin: bool,
        height: Height,
        timestamp_ms: u64,
    ) -> EntryResult {
        let origin = batch.origin.as_str();
        let Some(origin_state) = self.participants.get(origin) else {
            return EntryResult::Rejected { reason: RejectReason::UnknownOrigin };
        };
        if !signed_by_origin {
            return EntryResult::Rejected { reason: RejectReason::BadSignature };
        }
        if !origin_state.active {
            return EntryResult::Rejected { reason: RejectReason::OriginSuspended };
        }
        if batch.transfers.is_empty() {
            return EntryResult::Rejected { reason: RejectReason::EmptyBatch };
        }
        let outcomes = batch
            .transfers
            .iter()
            .map(|t| match self.apply_transfer(origin, t, height, timestamp_ms) {
                Ok(()) => TransferOutcome::Accepted,
                Err(reason) => TransferOutcome::Rejected(reason),
            })
            .collect();
        EntryResult::Batch { outcomes }
    }

    fn apply_transfer(
        &mut self,
        origin: &str,
        t: &Transfer,
        height: Height,
        timestamp_ms: u64,
    ) -> Result<(), RejectReason> {
        use RejectReason::*;
        if t.origin.as_str() != origin {
            return Err(OriginMismatch);
        }
        if self.applied.contains_key(&t.uetr) {
            return Err(DuplicateUetr);
        }
        let destination = t.destination.as_str();
        let dest = self.participants.get(destination).ok_or(UnknownDestination)?;
        if destination == origin {
            return Err(SameOriginAndDestination);
        }
        if !dest.active {
            return Err(DestinationSuspended);
        }
        let currency = t.amount.currency();
        if !dest.positions.contains_key(&currency) {
            return Err(DestinationCurrencyNotSettled);
        }
        let orig = &self.participants[origin];
        let Some(origin_position) = orig.positions.get(&currency) else {
            return Err(OriginCurrencyNotSettled);
        };
        if t.created_at_ms > timestamp_ms + CREATED_AT_SKEW_MS_DEFAULT {
            return Err(CreatedInFuture);
        }
        let amount = i128::from(t.amount.minor_units());
        let after = origin_position - amount;
        if after < -orig.caps.get(&currency).copied().unwrap_or(0) {
            return Err(NetDebitCapExceeded);
        }
        self.applied.insert(
            t.uetr,
            ModelTransfer {
                height,
                origin: origin.to_owned(),
                destination: destination.to_owned(),
                currency,
                amount,
                payout: PayoutState::Open,
            },
        );
        self.shift(origin, currency, -amount);
        self.shift(destination, currency, amount);
        Ok(())
    }

    fn shift(&mut self, id: &str, currency: Currency, delta: i128) {
        *self.participants.get_mut(id).expect("registered").positions.get_mut(&currency).expect("settled") += delta;
    }

    fn apply_reports(&mut self, batch: &PayoutReportBatch, signed_by_reporter: bool) -> EntryResult {
        let reporter = batch.reporter.as_str();
        if !self.participants.contains_key(reporter) {
            return EntryResult::Rejected { reason: RejectReason::UnknownReporter };
        }
        if !signed_by_reporter {
            return EntryResult::Rejected { reason: RejectReason::BadSignature };
        }
        if batch.reports.is_empty() {
            return EntryResult::Rejected { reason: RejectReason::EmptyBatch };
        }
        let outcomes = batch
            .reports
            .iter()
            .map(|report| {
                let Some(t) = self.applied.get_mut(&report.uetr) else {
                    return TransferOutcome::Rejected(RejectReason::UnknownTransfer);
                };
                if t.destination != reporter {
                    return TransferOutcome::Rejected(RejectReason::NotDestination);
                }
                if t.payout != PayoutState::Open {
                    return TransferOutcome::Rejected(RejectReason::AlreadyReported);
                }
                self.reports_accepted += 1;
                match report.outcome {
                    PayoutOutcome::Completed => t.payout = PayoutState::Completed,
                    PayoutOutcome::Returned { reason } => {
                        t.payout = PayoutState::Returned(reason);
                        let (origin, destination, currency, amount) =
                            (t.origin.clone(), t.destination.clone(), t.currency, t.amount);
                        self.shift(&destination, currency, -amount);
                        self.shift(&origin, currency, amount);
                    }
                }
                TransferOutcome::Accepted
            })
            .collect();
        EntryResult::Batch { outcomes }
    }

    /// The same shape as [`all_positions`]: zero where a participant does not settle.
    fn positions(&self) -> BTreeMap<(String, String), i128> {
        let mut out = BTreeMap::new();
        for id in IDS {
            for currency in CURRENCIES {
                let value = self.participants.get(id).and_then(|p| p.positions.get(&currency)).copied().unwrap_or(0);
                out.insert((id.to_owned(), currency.code().to_owned()), value);
            }
        }
        out
    }
}

fn apply_all(proposals: &[(u64, Vec<Entry>)], precheck: bool) -> (Vec<Block>, LedgerState) {
    let (mut state, genesis) = genesis_state();
    let mut blocks = vec![genesis];
    for (timestamp_ms, entries) in proposals {
        let checks =
            if precheck { SignatureCheck::Prechecked(state.check_signatures(entries)) } else { SignatureCheck::Verify };
        let block = state.apply(proposal(&state, *timestamp_ms, entries.clone()), checks).expect("well-formed");
        blocks.push(block);
    }
    (blocks, state)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// (a) Every block conserves value in every currency, and the state machine
    /// agrees with the model on every outcome and every position.
    #[test]
    fn random_streams_conserve_and_match_the_model(ops in blocks()) {
        let (mut state, _) = genesis_state();
        let mut model = Model::genesis();
        let mut accepted_total = 0u64;
        for (block_ops, (timestamp_ms, entries)) in ops.iter().zip(build_proposals(&ops)) {
            let height = state.next_height();
            let expected = model.apply(block_ops, &entries, height, timestamp_ms);
            let block = state
                .apply(proposal(&state, timestamp_ms, entries), SignatureCheck::Verify)
                .expect("well-formed proposal");
            prop_assert_eq!(&block.results, &expected);
            // The header counts accepted transfers, not accepted reports.
            let accepted: usize = block
                .entries
                .iter()
                .zip(&expected)
                .filter(|(entry, _)| matches!(entry, Entry::TransferBatch { .. }))
                .map(|(_, result)| result.accepted_transfers())
                .sum();
            prop_assert_eq!(block.header.accepted_count as usize, accepted);
            accepted_total += accepted as u64;

            let sums = state.position_sums();
            prop_assert_eq!(sums.len(), 4, "four currencies are settled: {:?}", sums);
            for (currency, sum) in &sums {
                prop_assert!(sum.is_zero(), "{} sums to {} at height {}", currency.code(), sum, height);
            }
            prop_assert_eq!(all_positions(&state), model.positions());
            prop_assert_eq!(state.applied_transfer_count(), model.applied.len());
            prop_assert_eq!(state.transfers_accepted_total(), accepted_total);
            prop_assert_eq!(state.payout_reports_total(), model.reports_accepted);
            for (uetr, t) in &model.applied {
                prop_assert_eq!(state.transfer_height(uetr), Some(t.height));
                prop_assert_eq!(state.payout_state(uetr), Some(t.payout));
            }
        }
    }

    /// (b) Applying the same proposals from fresh states gives identical blocks,
    /// encodings and state roots, whether signatures are checked inline or beforehand.
    #[test]
    fn applying_twice_is_deterministic(ops in blocks()) {
        let proposals = build_proposals(&ops);
        let (first, first_state) = apply_all(&proposals, false);
        let (second, second_state) = apply_all(&proposals, false);
        let (prechecked, prechecked_state) = apply_all(&proposals, true);
        prop_assert_eq!(&first, &second);
        prop_assert_eq!(&first, &prechecked);
        for ((a, b), c) in first.iter().zip(&second).zip(&prechecked) {
            prop_assert_eq!(a.hash(), b.hash());
            prop_assert_eq!(a.encode(), c.encode());
        }
        prop_assert_eq!(first_state.state_root(), second_state.state_root());
        prop_assert_eq!(first_state.state_root(), prechecked_state.state_root());
        prop_assert_eq!(first_state.tip(), prechecked_state.tip());
        prop_assert_eq!(first.last().expect("genesis at least").header.state_root, first_state.state_root());
    }
}

// ---------------------------------------------------------------------------
// (c) Duplicate UETRs.

#[derive(Debug, Clone, Copy)]
enum Placement {
    SameBatch,
    OtherBatchSameBlock,
    LaterBlock,
}

/// Origins and destinations that settle in USD with room under their caps.
const USD_PARTIES: [&str; 5] = ["gw-us", "gw-jp", "gw-kw", "gw-de", "gw-hub"];

fn duplicate_case() -> impl Strategy<Value = (usize, usize, u64, usize, u64, Placement)> {
    (
        0usize..5,
        1usize..5,
        1u64..=100_000,
        0usize..6,
        1u64..=100_000,
        prop_oneof![Just(Placement::SameBatch), Just(Placement::OtherBatchSameBlock), Just(Placement::LaterBlock)],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// A UETR applied once is rejected as DUPL on every later use, within the
    /// same batch, in another batch of the same block, or in a later block; the
    /// duplicate changes nothing, even when it names another destination, amount
    /// or origin.
    #[test]
    fn duplicate_uetrs_are_rejected_and_change_nothing(
        (o, d_offset, amount, dup_origin, dup_amount, placement) in duplicate_case()
    ) {
        let origin = USD_PARTIES[o];
        let destination = USD_PARTIES[(o + d_offset) % 5];
        // The duplicate may come from any registered participant, including gw-ph
        // whose cap of zero would refuse it anyway: the duplicate check comes first.
        let dup_origin = IDS[dup_origin];
        let dup_destination = if dup_origin == "gw-us" { "gw-jp" } else { "gw-us" };
        let id = uetr(7);
        let first = transfer(id, origin, destination, money(amount, Currency::USD));
        let duplicate = transfer(id, dup_origin, dup_destination, money(dup_amount, Currency::USD));

        let (mut state, _) = genesis_state();
        let (mut reference, _) = genesis_state();
        let (block, first_height) = match placement {
            Placement::SameBatch if dup_origin == origin => {
                let dup = transfer(id, origin, destination, money(dup_amount, Currency::USD));
                apply(&mut reference, vec![batch(origin, vec![first.clone()])]);
                let block = apply(&mut state, vec![batch(origin, vec![first, dup])]);
                prop_assert_eq!(&block.results, &vec![EntryResult::Batch {
                    outcomes: vec![TransferOutcome::Accepted, TransferOutcome::Rejected(RejectReason::DuplicateUetr)],
                }]);
                (block, Height(1))
            }
            Placement::SameBatch | Placement::OtherBatchSameBlock => {
                apply(&mut reference, vec![batch(origin, vec![first.clone()])]);
                let block = apply(&mut state, vec![batch(origin, vec![first]), batch(dup_origin, vec![duplicate])]);
                prop_assert_eq!(&block.results[0], &EntryResult::Batch { outcomes: vec![TransferOutcome::Accepted] });
                (block, Height(1))
            }
            Placement::LaterBlock => {
                apply(&mut reference, vec![batch(origin, vec![first.clone()])]);
                apply(&mut reference, vec![]);
                let first_block = apply(&mut state, vec![batch(origin, vec![first])]);
                prop_assert_eq!(&first_block.results[0], &EntryResult::Batch { outcomes: vec![TransferOutcome::Accepted] });
                (apply(&mut state, vec![batch(dup_origin, vec![duplicate])]), Height(1))
            }
        };
        let dup_outcome = match block.results.last().expect("one result per entry") {
            EntryResult::Batch { outcomes } => *outcomes.last().expect("one outcome per transfer"),
            other => panic!("expected batch outcomes, got {other:?}"),
        };
        prop_assert_eq!(dup_outcome, TransferOutcome::Rejected(RejectReason::DuplicateUetr));
        prop_assert_eq!(RejectReason::DuplicateUetr.iso_code(), Some("DUPL"));
        prop_assert_eq!(block.header.accepted_count, if matches!(placement, Placement::LaterBlock) { 0 } else { 1 });
        // Nothing of the duplicate reached the state: the state equals one where
        // it was never proposed, and the UETR keeps the height it was first applied at.
        prop_assert_eq!(state.state_root(), reference.state_root());
        prop_assert_eq!(all_positions(&state), all_positions(&reference));
        prop_assert_eq!(position(&state, origin, Currency::USD), -i128::from(amount));
        prop_assert_eq!(position(&state, destination, Currency::USD), i128::from(amount));
        prop_assert_eq!(state.applied_transfer_count(), 1);
        prop_assert_eq!(state.transfer_height(&id), Some(first_height));
        assert_conserved(&state);
    }
}

/// Only accepted transfers claim their UETR: a transfer rejected for its
/// amount leaves the UETR free for a corrected resubmission.
#[test]
fn rejected_transfer_does_not_claim_its_uetr() {
    let (mut state, _) = genesis_state();
    let id = uetr(1);
    let too_much = transfer(id, "gw-us", "gw-jp", money(100_001, Currency::USD));
    let block = apply(&mut state, vec![batch("gw-us", vec![too_much])]);
    assert_eq!(
        block.results,
        vec![EntryResult::Batch { outcomes: vec![TransferOutcome::Rejected(RejectReason::NetDebitCapExceeded)] }]
    );
    assert_eq!(state.transfer_height(&id), None);
    let corrected = transfer(id, "gw-us", "gw-jp", money(100_000, Currency::USD));
    let block = apply(&mut state, vec![batch("gw-us", vec![corrected])]);
    assert_eq!(block.results, vec![EntryResult::Batch { outcomes: vec![TransferOutcome::Accepted] }]);
    assert_eq!(state.transfer_height(&id), Some(Height(2)));
    assert_eq!(position(&state, "gw-us", Currency::USD), -100_000);
}

// ---------------------------------------------------------------------------
// (d) The net debit cap boundary.

/// For each tested currency: a counterparty that settles in it.
fn counterparty(currency: Currency) -> &'static str {
    match currency {
        Currency::USD => "gw-us",
        Currency::JPY => "gw-jp",
        Currency::KWD => "gw-kw",
        Currency::EUR => "gw-de",
        other => panic!("untested currency {other:?}"),
    }
}

fn outcomes(block: &Block) -> Vec<TransferOutcome> {
    block
        .results
        .iter()
        .flat_map(|result| match result {
            EntryResult::Batch { outcomes } => outcomes.clone(),
            other => panic!("expected batch outcomes, got {other:?}"),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// `gw-hub` with cap C and a prior credit of K can send exactly C + K (in
    /// one or two transfers), landing exactly on -C; one minor unit more is
    /// refused with AM04 and changes nothing.
    #[test]
    fn net_debit_cap_is_exact_at_the_boundary(
        currency in prop_oneof![Just(Currency::USD), Just(Currency::JPY), Just(Currency::KWD), Just(Currency::EUR)],
        cap in 0i64..=1_000_000_000,
        credit in prop_oneof![Just(0i64), 1i64..=1_000_000],
        split in any::<Index>(),
        two_steps in any::<bool>(),
    ) {
        prop_assume!(cap + credit >= 1);
        let other = counterparty(currency);
        let (mut state, _) = genesis_state();
        let mut next_uetr = 0u64;
        let mut send = |from: &str, to: &str, minor: i64| {
            next_uetr += 1;
            transfer(uetr(next_uetr), from, to, money(u64::try_from(minor).expect("positive"), currency))
        };

        // Set the caps (the counterparty's large enough to fund the credit) and credit the hub.
        let mut setup = vec![
            admin(Entry::SetNetDebitCap { participant: pid("gw-hub"), currency, cap: decimal(cap, currency) }),
            admin(Entry::SetNetDebitCap { participant: pid(other), currency, cap: decimal(1_000_000, currency) }),
        ];
        if credit > 0 {
            setup.push(batch(other, vec![send(other, "gw-hub", credit)]));
        }
        apply(&mut state, setup);
        prop_assert_eq!(position(&state, "gw-hub", currency), i128::from(credit));
        let room = cap + credit;

        // One minor unit beyond the room: refused, nothing moves.
        let before = all_positions(&state);
        let block = apply(&mut state, vec![batch("gw-hub", vec![send("gw-hub", other, room + 1)])]);
        prop_assert_eq!(outcomes(&block), vec![TransferOutcome::Rejected(RejectReason::NetDebitCapExceeded)]);
        prop_assert_eq!(RejectReason::NetDebitCapExceeded.iso_code(), Some("AM04"));
        prop_assert_eq!(all_positions(&state), before.clone());

        // Exactly the room, in one or two transfers: accepted, the hub sits on -cap.
        let mut transfers = Vec::new();
        let first = if two_steps && room > 1 { 1 + split.index(usize::try_from(room - 1).expect("small")) as i64 } else { room };
        transfers.push(send("gw-hub", other, first));
        if first < room {
            transfers.push(send("gw-hub", other, room - first));
        }
        let count = transfers.len();
        // Then one more minor unit, in the same batch: refused.
        transfers.push(send("gw-hub", other, 1));
        let block = apply(&mut state, vec![batch("gw-hub", transfers)]);
        let mut expected = vec![TransferOutcome::Accepted; count];
        expected.push(TransferOutcome::Rejected(RejectReason::NetDebitCapExceeded));
        prop_assert_eq!(outcomes(&block), expected);
        prop_assert_eq!(position(&state, "gw-hub", currency), -i128::from(cap));
        prop_assert_eq!(state.position(&pid("gw-hub"), currency), -decimal(cap, currency));
        prop_assert_eq!(
            position(&state, other, currency),
            before[&(other.to_owned(), currency.code().to_owned())] + i128::from(room)
        );
        assert_conserved(&state);

        // At the cap, even the smallest amount is refused and changes nothing.
        let at_cap = all_positions(&state);
        let block = apply(&mut state, vec![batch("gw-hub", vec![send("gw-hub", other, 1)])]);
        prop_assert_eq!(outcomes(&block), vec![TransferOutcome::Rejected(RejectReason::NetDebitCapExceeded)]);
        prop_assert_eq!(all_positions(&state), at_cap);
    }
}

/// The boundary with the fixed caps of the test network, written out in
/// decimals: USD 1000.00, JPY 100000 and KWD 100.000.
#[test]
fn fixed_caps_in_decimal_notation() {
    for (origin, destination, currency, exact, over) in [
        ("gw-us", "gw-hub", Currency::USD, "1000.00", "0.01"),
        ("gw-jp", "gw-hub", Currency::JPY, "100000", "1"),
        ("gw-kw", "gw-hub", Currency::KWD, "100.000", "0.001"),
    ] {
        let (mut state, _) = genesis_state();
        let amount = |text: &str| Money::parse(&format!("{text} {}", currency.code()), "amount").expect("valid");
        let block = apply(
            &mut state,
            vec![batch(
                origin,
                vec![
                    transfer(uetr(1), origin, destination, amount(exact)),
                    transfer(uetr(2), origin, destination, amount(over)),
                ],
            )],
        );
        assert_eq!(
            outcomes(&block),
            vec![TransferOutcome::Accepted, TransferOutcome::Rejected(RejectReason::NetDebitCapExceeded)],
            "{currency:?}"
        );
        assert_eq!(state.position(&pid(origin), currency).to_string(), format!("-{exact}"));
        assert_eq!(state.position(&pid(destination), currency).to_string(), exact);
    }
}

// ---------------------------------------------------------------------------
// (e) Amounts with too many decimals.

fn currency_with_exponent() -> impl Strategy<Value = (Currency, u32)> {
    prop_oneof![
        Just((Currency::USD, 2)),
        Just((Currency::JPY, 0)),
        Just((Currency::KWD, 3)),
        Just((Currency::EUR, 2)),
        Just((Currency::BHD, 3)),
        Just((Currency::CLF, 4)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A positive amount with a non-zero digit beyond the currency's minor unit
    /// is refused (never rounded) with TooPrecise, naming the field, both from a
    /// decimal and from text.
    #[test]
    fn too_many_decimals_are_refused_naming_the_field(
        (currency, exponent) in currency_with_exponent(),
        digits in 0i64..1_000_000_000_000,
        last in 1i64..=9,
        extra_scale in 1u32..=6,
        field in "[a-z][a-z0-9_.]{0,24}",
    ) {
        let amount = Decimal::new(digits * 10 + last, exponent + extra_scale);
        let err = Money::new(amount, currency, &field).expect_err("too precise");
        prop_assert_eq!(
            &err,
            &MoneyError::TooPrecise { field: field.clone(), amount, currency, exponent: exponent as u16 }
        );
        prop_assert_eq!(err.field(), field.as_str());
        prop_assert_eq!(err.reason_code(), "AM12");
        let message = err.to_string();
        prop_assert!(message.starts_with(&format!("{field}: ")), "{}", message);

        let text = format!("{amount} {}", currency.code());
        let parsed = Money::parse(&text, &field).expect_err("too precise");
        prop_assert_eq!(parsed, err);
    }

    /// The same digits at or within the currency's scale are accepted exactly.
    #[test]
    fn amounts_within_the_minor_unit_are_exact(
        (currency, exponent) in currency_with_exponent(),
        mantissa in 1i64..1_000_000_000_000,
        scale_below in 0u32..=4,
    ) {
        let scale = exponent.saturating_sub(scale_below);
        let amount = Decimal::new(mantissa, scale);
        let money = Money::new(amount, currency, "amount").expect("exact and in range");
        prop_assert_eq!(money.amount(), amount);
        prop_assert_eq!(money.amount().scale(), exponent);
        let expected_minor = i128::from(mantissa) * 10i128.pow(exponent - scale);
        prop_assert_eq!(i128::from(money.minor_units()), expected_minor);
        prop_assert_eq!(Money::from_minor_units(money.minor_units(), currency, "amount").expect("valid"), money);
    }
}

/// The generated ids are the fixture's participants plus one unregistered id.
#[test]
fn generated_ids_cover_the_fixture() {
    let fixture: BTreeSet<&str> = SPECS.iter().map(|s| s.id).collect();
    let generated: BTreeSet<&str> = IDS[..6].iter().copied().collect();
    assert_eq!(fixture, generated);
    assert!(!fixture.contains(UNKNOWN_ID));
}
