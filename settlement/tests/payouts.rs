//! Payout reports on the ledger: a destination records that a payout
//! completed (nothing moves) or was returned (the obligation is reversed in
//! the open window). Per-report and whole-entry rejections leave the state as
//! it was; the wire and JSON forms round-trip.

mod common;

use std::collections::BTreeMap;

use common::*;
use iso_currency::Currency;
use remit_settlement::audit::ExportedBlock;
use remit_settlement::block::TransferOutcome;
use remit_settlement::codec::Writer;
use remit_settlement::constants::{BATCH_TRANSFERS_MAX, BLOCK_TRANSFERS_MAX};
use remit_settlement::{
    AppliedTransferView, Block, BlockError, Entry, EntryResult, Height, LedgerState, Money, PayoutReport,
    PayoutReportBatch, PayoutState, RejectReason, SignatureCheck, Uetr,
};
use rust_decimal::Decimal;

fn usd(minor: u64) -> Money {
    money(minor, Currency::USD)
}

/// Genesis, then block 1: gw-us pays gw-jp 123.45 USD (UETR 1) and gw-kw pays
/// gw-hub 1.234 KWD (UETR 2); gw-jp pays gw-de 7.00 USD (UETR 3).
fn with_transfers() -> LedgerState {
    let (mut state, _) = genesis_state();
    let block = apply(
        &mut state,
        vec![
            batch("gw-us", vec![transfer(uetr(1), "gw-us", "gw-jp", usd(12_345))]),
            batch("gw-kw", vec![transfer(uetr(2), "gw-kw", "gw-hub", money(1_234, Currency::KWD))]),
            batch("gw-jp", vec![transfer(uetr(3), "gw-jp", "gw-de", usd(700))]),
        ],
    );
    assert_eq!(block.header.accepted_count, 3);
    state
}

/// Everything observable about the state apart from the tip: root,
/// positions, index (with payout states) and counters.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    positions: BTreeMap<(String, String), i128>,
    payouts: BTreeMap<Uetr, (Height, PayoutState)>,
    accepted_total: u64,
    reports_total: u64,
}

fn observe(state: &LedgerState) -> Observed {
    Observed {
        positions: all_positions(state),
        payouts: state.applied_transfers().map(|(uetr, record)| (*uetr, (record.height, record.payout))).collect(),
        accepted_total: state.transfers_accepted_total(),
        reports_total: state.payout_reports_total(),
    }
}

fn only_outcomes(block: &Block) -> Vec<TransferOutcome> {
    block
        .results
        .iter()
        .flat_map(|result| match result {
            EntryResult::Batch { outcomes } => outcomes.clone(),
            other => panic!("expected batch outcomes, got {other:?}"),
        })
        .collect()
}

fn pos(id: &str, currency: Currency) -> (String, String) {
    (id.to_owned(), currency.code().to_owned())
}

#[test]
fn completion_moves_nothing_and_sets_completed() {
    let mut state = with_transfers();
    let before = observe(&state);
    assert_eq!(state.payout_state(&uetr(1)), Some(PayoutState::Open));

    let block = apply(&mut state, vec![reports("gw-jp", vec![completed(uetr(1))])]);
    assert_eq!(block.results, vec![EntryResult::Batch { outcomes: vec![TransferOutcome::Accepted] }]);
    assert_eq!((block.header.transfer_count, block.header.accepted_count), (0, 0), "reports are not transfers");

    let after = observe(&state);
    assert_eq!(after.positions, before.positions, "a completion moves no money");
    assert_eq!(state.payout_state(&uetr(1)), Some(PayoutState::Completed));
    assert_eq!(state.payout_state(&uetr(2)), Some(PayoutState::Open), "other transfers are untouched");
    assert_eq!((after.accepted_total, after.reports_total), (3, 1));
    assert_eq!(
        state.applied_transfer(&uetr(1)),
        Some(AppliedTransferView {
            height: Height(1),
            origin: pid("gw-us"),
            destination: pid("gw-jp"),
            amount: usd(12_345),
            payout: PayoutState::Completed,
        })
    );
    assert_conserved(&state);
}

#[test]
fn return_reverses_the_exact_amount() {
    let mut state = with_transfers();
    let before = observe(&state).positions;
    assert_eq!(state.position(&pid("gw-us"), Currency::USD).to_string(), "-123.45");
    assert_eq!(state.position(&pid("gw-jp"), Currency::USD).to_string(), "116.45");

    let block = apply(&mut state, vec![reports("gw-jp", vec![returned(uetr(1), "AC04")])]);
    assert_eq!(block.results, vec![EntryResult::Batch { outcomes: vec![TransferOutcome::Accepted] }]);

    // Both sides move by exactly 123.45 USD, to the minor unit; nothing else moves.
    assert_eq!(state.position(&pid("gw-us"), Currency::USD).to_string(), "0.00");
    assert_eq!(state.position(&pid("gw-jp"), Currency::USD).to_string(), "-7.00");
    let mut expected = before.clone();
    *expected.get_mut(&pos("gw-us", Currency::USD)).expect("listed") += 12_345;
    *expected.get_mut(&pos("gw-jp", Currency::USD)).expect("listed") -= 12_345;
    assert_eq!(all_positions(&state), expected);
    assert_eq!(state.payout_state(&uetr(1)), Some(PayoutState::Returned(reason("AC04"))));
    assert_eq!(state.payout_reports_total(), 1);
    assert_eq!(state.transfer_height(&uetr(1)), Some(Height(1)), "a returned transfer keeps its UETR");
    assert_conserved(&state);

    // Three decimals: 1.234 KWD back from gw-hub to gw-kw.
    apply(&mut state, vec![reports("gw-hub", vec![returned(uetr(2), "MS03")])]);
    assert_eq!(state.position(&pid("gw-kw"), Currency::KWD).to_string(), "0.000");
    assert_eq!(state.position(&pid("gw-hub"), Currency::KWD).to_string(), "0.000");
    assert_eq!(state.payout_state(&uetr(2)), Some(PayoutState::Returned(reason("MS03"))));
    assert_conserved(&state);
}

#[test]
fn returned_uetr_is_still_a_duplicate() {
    let mut state = with_transfers();
    apply(&mut state, vec![reports("gw-jp", vec![returned(uetr(1), "AC04")])]);
    let block = apply(&mut state, vec![batch("gw-us", vec![transfer(uetr(1), "gw-us", "gw-jp", usd(12_345))])]);
    assert_eq!(only_outcomes(&block), vec![TransferOutcome::Rejected(RejectReason::DuplicateUetr)]);
}

/// A return cannot be refused: it takes the destination below its net debit
/// cap if need be, and needs neither party to be active.
#[test]
fn return_ignores_caps_and_suspension() {
    let (mut state, _) = genesis_state();
    // gw-us sends gw-jp its whole USD cap (1000.00); gw-jp passes it on twice,
    // landing on its own cap of -1000.00.
    apply(
        &mut state,
        vec![
            batch("gw-us", vec![transfer(uetr(1), "gw-us", "gw-jp", usd(100_000))]),
            batch(
                "gw-jp",
                vec![
                    transfer(uetr(2), "gw-jp", "gw-de", usd(100_000)),
                    transfer(uetr(3), "gw-jp", "gw-de", usd(100_000)),
                ],
            ),
        ],
    );
    assert_eq!(position(&state, "gw-jp", Currency::USD), -100_000);
    let block = apply(
        &mut state,
        vec![
            suspend("gw-jp"),
            suspend("gw-us"),
            reports("gw-jp", vec![returned(uetr(1), "AC04")]),
            // A transfer from gw-de back to gw-us is refused: gw-us is suspended.
            batch("gw-de", vec![transfer(uetr(4), "gw-de", "gw-us", usd(1))]),
        ],
    );
    assert_eq!(block.results[2], EntryResult::Batch { outcomes: vec![TransferOutcome::Accepted] });
    assert_eq!(
        block.results[3],
        EntryResult::Batch { outcomes: vec![TransferOutcome::Rejected(RejectReason::DestinationSuspended)] }
    );
    assert_eq!(position(&state, "gw-jp", Currency::USD), -200_000, "twice its cap, after the return");
    assert_eq!(position(&state, "gw-us", Currency::USD), 0);
    assert_conserved(&state);
}

fn suspend(id: &str) -> Entry {
    admin(Entry::SetParticipantStatus { participant: pid(id), status: remit_settlement::ParticipantStatus::Suspended })
}

/// One row: reports applied after [`with_transfers`] and a setup block, the
/// outcomes expected per report, and the ISO codes of the rejections.
fn check_reports(name: &str, setup: Vec<Entry>, entries: Vec<Entry>, expected: Vec<TransferOutcome>) {
    let mut state = with_transfers();
    apply(&mut state, setup);
    let before = observe(&state);
    let block = apply(&mut state, entries);
    assert_eq!(only_outcomes(&block), expected, "{name}");
    // Rejected reports change nothing: with every report of the row rejected,
    // the observable state is as before.
    if expected.iter().all(|o| *o != TransferOutcome::Accepted) {
        assert_eq!(observe(&state), before, "{name}");
    }
    assert_conserved(&state);
}

#[test]
fn rejected_reports() {
    use RejectReason::*;
    use TransferOutcome::{Accepted, Rejected};
    check_reports(
        "completed, then returned in a later block",
        vec![reports("gw-jp", vec![completed(uetr(1))])],
        vec![reports("gw-jp", vec![returned(uetr(1), "AC04")])],
        vec![Rejected(AlreadyReported)],
    );
    check_reports(
        "returned, then completed or returned again",
        vec![reports("gw-jp", vec![returned(uetr(1), "AC04")])],
        vec![reports("gw-jp", vec![completed(uetr(1)), returned(uetr(1), "AC04")])],
        vec![Rejected(AlreadyReported), Rejected(AlreadyReported)],
    );
    check_reports(
        "twice in one batch, then a transfer the reporter originated",
        vec![],
        vec![reports("gw-jp", vec![returned(uetr(1), "AC04"), returned(uetr(1), "AC04"), completed(uetr(3))])],
        vec![Accepted, Rejected(AlreadyReported), Rejected(NotDestination)],
    );
    check_reports(
        "by the origin, and by a third participant",
        vec![],
        vec![reports("gw-us", vec![returned(uetr(1), "AC04")]), reports("gw-hub", vec![completed(uetr(1))])],
        vec![Rejected(NotDestination), Rejected(NotDestination)],
    );
    check_reports(
        "a UETR never proposed, and one whose transfer was rejected",
        vec![batch("gw-ph", vec![transfer(uetr(9), "gw-ph", "gw-us", usd(1))])],
        vec![reports("gw-jp", vec![completed(uetr(8))]), reports("gw-us", vec![returned(uetr(9), "AC04")])],
        vec![Rejected(UnknownTransfer), Rejected(UnknownTransfer)],
    );
    assert_eq!(AlreadyReported.iso_code(), Some("DUPL"));
    assert_eq!(NotDestination.iso_code(), Some("RC07"));
    assert_eq!(UnknownTransfer.iso_code(), Some("NOOR"));
    assert_eq!(UnknownReporter.iso_code(), Some("RC01"));
}

#[test]
fn bad_report_batches_are_rejected_whole() {
    let chain = chain_id();
    let good = PayoutReportBatch::sign(
        &chain,
        pid("gw-jp"),
        vec![returned(uetr(1), "AC04")],
        &signing_key(spec("gw-jp").seed),
    );
    let mut flipped = good.clone();
    flipped.signature.0[5] ^= 0x80;
    let mut changed = good.clone();
    changed.reports[0] = completed(uetr(1));
    let mut reason_changed = good.clone();
    reason_changed.reports[0] = returned(uetr(1), "AC06");
    let other_chain = PayoutReportBatch::sign(
        &remit_settlement::ChainId::new("remit-other").expect("valid"),
        pid("gw-jp"),
        good.reports.clone(),
        &signing_key(spec("gw-jp").seed),
    );
    let cases: Vec<(&str, Entry, RejectReason)> = vec![
        (
            "the origin's key",
            reports_signed_with("gw-jp", good.reports.clone(), &signing_key(spec("gw-us").seed)),
            RejectReason::BadSignature,
        ),
        ("one bit of the signature flipped", Entry::PayoutReports { batch: flipped }, RejectReason::BadSignature),
        ("an outcome changed after signing", Entry::PayoutReports { batch: changed }, RejectReason::BadSignature),
        ("a reason changed after signing", Entry::PayoutReports { batch: reason_changed }, RejectReason::BadSignature),
        ("signed for another chain", Entry::PayoutReports { batch: other_chain }, RejectReason::BadSignature),
        ("an unknown reporter", reports(UNKNOWN_ID, vec![completed(uetr(1))]), RejectReason::UnknownReporter),
        ("no reports", reports("gw-jp", vec![]), RejectReason::EmptyBatch),
    ];
    for (name, entry, reason) in cases {
        for precheck in [false, true] {
            let mut state = with_transfers();
            let before = observe(&state);
            let entries = vec![entry.clone()];
            let checks = if precheck {
                SignatureCheck::Prechecked(state.check_signatures(&entries))
            } else {
                SignatureCheck::Verify
            };
            let timestamp_ms = state.last_timestamp_ms() + 1_000;
            let block = state.apply(proposal(&state, timestamp_ms, entries), checks).expect("applies");
            assert_eq!(block.results, vec![EntryResult::Rejected { reason }], "{name}");
            assert_eq!(observe(&state), before, "{name}: nothing changes");
        }
    }
    // Positive control: the untouched batch applies.
    let mut state = with_transfers();
    let block = apply(&mut state, vec![Entry::PayoutReports { batch: good }]);
    assert_eq!(only_outcomes(&block), vec![TransferOutcome::Accepted]);
}

/// A signature over a transfer batch's digest does not verify as a report
/// batch's: the two are domain-separated even for identical bodies.
#[test]
fn report_signatures_are_domain_separated() {
    let chain = chain_id();
    let key = signing_key(spec("gw-jp").seed);
    let batch = PayoutReportBatch::sign(&chain, pid("gw-jp"), vec![], &key);
    let transfers = remit_settlement::TransferBatch::sign(&chain, pid("gw-jp"), vec![], &key);
    assert_ne!(batch.signing_digest(&chain), transfers.signing_digest(&chain));
    let mut swapped = batch.clone();
    swapped.signature = transfers.signature;
    let origin_key = remit_settlement::OriginKey::new(key.verifying_key());
    assert!(batch.verify_signature(&chain, &origin_key));
    assert!(!swapped.verify_signature(&chain, &origin_key));
}

#[test]
fn report_in_the_same_block_as_its_transfer() {
    let (mut state, _) = genesis_state();
    let block = apply(
        &mut state,
        vec![
            // Before the transfer: not yet known.
            reports("gw-jp", vec![completed(uetr(1))]),
            batch("gw-us", vec![transfer(uetr(1), "gw-us", "gw-jp", usd(12_345))]),
            reports("gw-jp", vec![returned(uetr(1), "AC04")]),
        ],
    );
    assert_eq!(
        block.results,
        vec![
            EntryResult::Batch { outcomes: vec![TransferOutcome::Rejected(RejectReason::UnknownTransfer)] },
            EntryResult::Batch { outcomes: vec![TransferOutcome::Accepted] },
            EntryResult::Batch { outcomes: vec![TransferOutcome::Accepted] },
        ]
    );
    assert_eq!((block.header.transfer_count, block.header.accepted_count), (1, 1));
    assert_eq!(position(&state, "gw-us", Currency::USD), 0);
    assert_eq!(position(&state, "gw-jp", Currency::USD), 0);
    assert_eq!(state.payout_state(&uetr(1)), Some(PayoutState::Returned(reason("AC04"))));
    assert_conserved(&state);
}

#[test]
fn prechecked_signatures_cover_report_batches() {
    let state = with_transfers();
    let entries = vec![
        reports("gw-jp", vec![returned(uetr(1), "AC04")]),
        reports_signed_with("gw-hub", vec![completed(uetr(2))], &signing_key(spec("gw-jp").seed)),
        reports(UNKNOWN_ID, vec![completed(uetr(2))]),
    ];
    assert_eq!(state.check_signatures(&entries), vec![true, false, false]);
    let timestamp_ms = state.last_timestamp_ms() + 1_000;
    let mut verified = state.clone();
    let mut prechecked = state.clone();
    let a = verified.apply(proposal(&state, timestamp_ms, entries.clone()), SignatureCheck::Verify).expect("applies");
    let checks = SignatureCheck::Prechecked(state.check_signatures(&entries));
    let b = prechecked.apply(proposal(&state, timestamp_ms, entries), checks).expect("applies");
    assert_eq!(a, b);
    assert_eq!(verified, prechecked);
    assert_eq!(a.results[1], EntryResult::Rejected { reason: RejectReason::BadSignature });
}

/// A report weighs as much as a transfer: batches and blocks are bounded by
/// the transfer limits counted over both.
#[test]
fn reports_count_against_the_size_limits() {
    let state = with_transfers();
    let many = |n: usize, first: u64| (first..first + n as u64).map(|i| completed(uetr(i))).collect::<Vec<_>>();
    let unsigned = |reports: Vec<PayoutReport>| {
        // Limits are checked before signatures, so a dummy signature will do.
        Entry::PayoutReports {
            batch: PayoutReportBatch {
                reporter: pid("gw-jp"),
                reports,
                signature: remit_settlement::BatchSignature([0; 64]),
            },
        }
    };
    let too_big = unsigned(many(BATCH_TRANSFERS_MAX + 1, 100));
    let mut s = state.clone();
    let err = s.apply(proposal(&state, state.last_timestamp_ms(), vec![too_big]), SignatureCheck::Verify);
    assert_eq!(
        err.expect_err("over the batch limit"),
        BlockError::TooLarge { what: "batch reports", got: BATCH_TRANSFERS_MAX + 1, max: BATCH_TRANSFERS_MAX }
    );

    let full_batches = BLOCK_TRANSFERS_MAX / BATCH_TRANSFERS_MAX;
    let mut entries: Vec<Entry> = (0..full_batches)
        .map(|i| unsigned(many(BATCH_TRANSFERS_MAX, (i * BATCH_TRANSFERS_MAX) as u64 + 100)))
        .collect();
    entries.push(batch("gw-us", vec![transfer(uetr(1_000_000), "gw-us", "gw-jp", usd(1))]));
    let err = s.apply(proposal(&state, state.last_timestamp_ms(), entries), SignatureCheck::Verify);
    assert_eq!(
        err.expect_err("over the block limit"),
        BlockError::TooLarge {
            what: "block transfers and reports",
            got: BLOCK_TRANSFERS_MAX + 1,
            max: BLOCK_TRANSFERS_MAX
        }
    );
    assert_eq!(s, state, "a refused proposal changes nothing");
}

// ---------------------------------------------------------------------------
// Wire and JSON forms.

/// A block with every kind of report outcome, accepted and rejected.
fn block_with_reports() -> (Block, LedgerState) {
    let mut state = with_transfers();
    let block = apply(
        &mut state,
        vec![
            reports("gw-jp", vec![returned(uetr(1), "AC04"), completed(uetr(1)), completed(uetr(7))]),
            reports("gw-de", vec![completed(uetr(3))]),
            reports("gw-us", vec![completed(uetr(2))]),
            reports(UNKNOWN_ID, vec![completed(uetr(2))]),
        ],
    );
    (block, state)
}

#[test]
fn blocks_with_reports_round_trip_through_the_canonical_encoding() {
    let (block, _) = block_with_reports();
    let bytes = block.encode();
    let decoded = Block::decode(&bytes).expect("decodes");
    assert_eq!(decoded, block);
    assert_eq!(decoded.hash(), block.hash());

    // The entry's wire code is 5, and the new reasons are appended after the
    // 19 existing ones, whose codes do not move.
    let mut w = Writer::default();
    block.entries[0].encode(&mut w);
    assert_eq!(w.as_bytes()[0], 5);
    let code = |reason| {
        let mut w = Writer::default();
        EntryResult::Rejected { reason }.encode(&mut w);
        w.as_bytes()[1]
    };
    assert_eq!(code(RejectReason::DuplicateUetr), 1);
    assert_eq!(code(RejectReason::CapCurrencyNotSettled), 19);
    assert_eq!(
        [
            RejectReason::UnknownReporter,
            RejectReason::UnknownTransfer,
            RejectReason::NotDestination,
            RejectReason::AlreadyReported
        ]
        .map(code),
        [20, 21, 22, 23]
    );

    // A report with a lower-case return reason does not decode.
    let at = bytes.windows(4).position(|w| w == b"AC04").expect("the reason is in the encoding");
    let mut bad = bytes.clone();
    bad[at] = b'a';
    assert!(Block::decode(&bad).is_err());
}

#[test]
fn json_export_of_reports_round_trips() {
    let (block, _) = block_with_reports();
    let exported = ExportedBlock::new(block.clone(), None);
    let json = serde_json::to_string(&exported).expect("serializes");
    assert!(json.contains(r#""type":"payout_reports","batch":{"reporter":"gw-jp","reports":[{"uetr":"#), "{json}");
    assert!(json.contains(r#""outcome":"returned","reason":"AC04"}"#), "{json}");
    assert!(json.contains(r#""outcome":"completed"}"#), "{json}");
    assert!(json.contains(r#"{"status":"rejected","reason":"already_reported"}"#), "{json}");
    assert!(json.contains(r#"{"status":"rejected","reason":"not_destination"}"#), "{json}");
    assert!(json.contains(r#"{"status":"rejected","reason":"unknown_transfer"}"#), "{json}");
    let parsed: ExportedBlock = serde_json::from_str(&json).expect("parses");
    assert_eq!(parsed, exported);
    assert_eq!(parsed.header.hash(), block.hash());
}

#[test]
fn block_with_reports_outcomes() {
    use RejectReason::*;
    use TransferOutcome::{Accepted, Rejected};
    let (block, state) = block_with_reports();
    assert_eq!(
        block.results,
        vec![
            EntryResult::Batch { outcomes: vec![Accepted, Rejected(AlreadyReported), Rejected(UnknownTransfer)] },
            EntryResult::Batch { outcomes: vec![Accepted] },
            EntryResult::Batch { outcomes: vec![Rejected(NotDestination)] },
            EntryResult::Rejected { reason: UnknownReporter },
        ]
    );
    assert_eq!(state.payout_state(&uetr(3)), Some(PayoutState::Completed));
    assert_eq!(state.position(&pid("gw-us"), Currency::USD), Decimal::ZERO);
}
