//! Bad input at the settlement boundary, table by table: amounts, unknown or
//! suspended participants, bad signatures, other rejected entries, and
//! malformed proposals. Every rejection leaves the state as it was.

mod common;

use common::*;
use iso_currency::Currency;
use remit_settlement::block::TransferOutcome;
use remit_settlement::constants::{BLOCK_ENTRIES_MAX, CREATED_AT_HORIZON_MS_DEFAULT, CREATED_AT_SKEW_MS_DEFAULT};
use remit_settlement::hash::Digest32;
use remit_settlement::{
    BlockError, BlockProposal, Entry, EntryResult, GovernanceAction, GovernanceProposal, Height, LedgerState, Money,
    MoneyError, Participant, ParticipantStatus, RejectReason, SignatureCheck, TransferBatch,
};
use rust_decimal::Decimal;

// ---------------------------------------------------------------------------
// Money::parse.

/// The variant of a [`MoneyError`], by name.
fn variant(err: &MoneyError) -> &'static str {
    match err {
        MoneyError::UnknownCurrency { .. } => "UnknownCurrency",
        MoneyError::CurrencyNotSettleable { .. } => "CurrencyNotSettleable",
        MoneyError::Malformed { .. } => "Malformed",
        MoneyError::NotPositive { .. } => "NotPositive",
        MoneyError::TooPrecise { .. } => "TooPrecise",
        MoneyError::TooLarge { .. } => "TooLarge",
        MoneyError::CurrencyMismatch { .. } => "CurrencyMismatch",
    }
}

/// `Ok(display)` or `Err((variant, ISO reason code, message after the field name))`.
type MoneyExpected = Result<&'static str, (&'static str, &'static str, &'static str)>;

fn check_money(input: &str, expected: MoneyExpected) {
    const FIELD: &str = "transfer.amount";
    match (Money::parse(input, FIELD), expected) {
        (Ok(money), Ok(display)) => assert_eq!(money.to_string(), display, "{input:?}"),
        (Err(err), Err((name, code, message))) => {
            assert_eq!(variant(&err), name, "{input:?}: {err}");
            assert_eq!(err.reason_code(), code, "{input:?}: {err}");
            assert_eq!(err.field(), FIELD, "{input:?}");
            assert_eq!(err.to_string(), format!("{FIELD}: {message}"), "{input:?}");
        }
        (got, want) => panic!("{input:?}: got {got:?}, expected {want:?}"),
    }
}

#[test]
fn money_parse_table() {
    check_money(
        "1 XYZ",
        Err(("UnknownCurrency", "AM03", "unknown currency \"XYZ\" (expected an ISO 4217 code such as USD)")),
    );
    check_money(
        "1 usd",
        Err(("UnknownCurrency", "AM03", "unknown currency \"usd\" (expected an ISO 4217 code such as USD)")),
    );
    check_money(
        "1 XAU",
        Err(("CurrencyNotSettleable", "AM03", "currency XAU has no minor unit and cannot be settled")),
    );
    check_money("-5 USD", Err(("NotPositive", "AM12", "amount must be positive, got -5")));
    check_money("0 USD", Err(("NotPositive", "AM01", "amount must be positive, got 0")));
    check_money("0.00 USD", Err(("NotPositive", "AM01", "amount must be positive, got 0.00")));
    check_money("1.001 USD", Err(("TooPrecise", "AM12", "1.001 has more decimal places than USD allows (2)")));
    check_money("1.5 JPY", Err(("TooPrecise", "AM12", "1.5 has more decimal places than JPY allows (0)")));
    check_money("0.0001 KWD", Err(("TooPrecise", "AM12", "0.0001 has more decimal places than KWD allows (3)")));
    check_money(
        "1000000000000.01 USD",
        Err(("TooLarge", "AM02", "amount 1000000000000.01 exceeds the maximum of 1000000000000")),
    );
    check_money(
        "1e3 USD",
        Err(("Malformed", "AM12", "\"1e3 USD\" is not a decimal amount (expected e.g. \"100.25 USD\")")),
    );
    check_money(
        "1,000 USD",
        Err(("Malformed", "AM12", "\"1,000 USD\" is not a decimal amount (expected e.g. \"100.25 USD\")")),
    );
    check_money(
        "USD 10",
        Err(("UnknownCurrency", "AM03", "unknown currency \"10\" (expected an ISO 4217 code such as USD)")),
    );
    check_money(
        "10 USD extra",
        Err(("Malformed", "AM12", "\"10 USD extra\" is not a decimal amount (expected e.g. \"100.25 USD\")")),
    );
    check_money("", Err(("Malformed", "AM12", "\"\" is not a decimal amount (expected e.g. \"100.25 USD\")")));
    // Trailing zeros beyond the minor unit are not extra precision.
    check_money("1.000 USD", Ok("1.00 USD"));
    check_money("1000000000000 USD", Ok("1000000000000.00 USD"));
    check_money("0.001 KWD", Ok("0.001 KWD"));
    check_money("1500 JPY", Ok("1500 JPY"));
}

#[test]
fn money_parts_name_the_currency_field() {
    let err = Money::parse_parts("10", "XYZ", "amount").expect_err("unknown currency");
    assert_eq!(err.field(), "amount.currency");
    assert_eq!(err.reason_code(), "AM03");
    let err = Money::parse_parts("10.5", "JPY", "amount").expect_err("too precise");
    assert_eq!(
        err,
        MoneyError::TooPrecise {
            field: "amount".into(),
            amount: Decimal::new(105, 1),
            currency: Currency::JPY,
            exponent: 0
        }
    );
}

// ---------------------------------------------------------------------------
// Rejected entries: each leaves the state exactly as an empty block would.

/// The observable state apart from the tip hash.
#[derive(Debug, PartialEq, Eq)]
struct Observed {
    state_root: Digest32,
    positions: std::collections::BTreeMap<(String, String), i128>,
    applied_uetrs: usize,
    accepted_total: u64,
    participants: Vec<Participant>,
}

fn observe(state: &LedgerState) -> Observed {
    Observed {
        state_root: state.state_root(),
        positions: all_positions(state),
        applied_uetrs: state.applied_transfer_count(),
        accepted_total: state.transfers_accepted_total(),
        participants: state.participants().into_iter().cloned().collect(),
    }
}

/// One table row: entries applied first (to both the tested and the reference
/// state), the entries under test, what the reference applies instead (the
/// entries under test that do take effect, usually none), and the results
/// expected with their ISO codes.
struct Case {
    name: &'static str,
    setup: Vec<Entry>,
    entries: Vec<Entry>,
    baseline: Vec<Entry>,
    expected: Vec<EntryResult>,
    codes: Vec<Option<&'static str>>,
}

/// Applies the case and checks the results, the ISO codes, and that the state
/// equals the one reached by the baseline block at the same height instead.
fn check_rejected(case: Case) {
    let (mut state, _) = genesis_state();
    apply(&mut state, case.setup);
    let mut reference = state.clone();
    let block = apply(&mut state, case.entries);
    apply(&mut reference, case.baseline);
    assert_eq!(block.results, case.expected, "{}", case.name);
    assert_eq!(block.header.accepted_count, 0, "{}", case.name);
    let codes: Vec<Option<&str>> = block
        .results
        .iter()
        .flat_map(|result| match result {
            EntryResult::Rejected { reason } => vec![reason.iso_code()],
            EntryResult::Batch { outcomes } => outcomes
                .iter()
                .map(|o| match o {
                    TransferOutcome::Rejected(reason) => reason.iso_code(),
                    TransferOutcome::Accepted => Some("ACCEPTED"),
                })
                .collect(),
            EntryResult::Applied => vec![Some("APPLIED")],
        })
        .collect();
    assert_eq!(codes, case.codes, "{}", case.name);
    assert_eq!(observe(&state), observe(&reference), "{}", case.name);
    assert_conserved(&state);
}

fn usd(minor: u64) -> Money {
    money(minor, Currency::USD)
}

fn rejected(reason: RejectReason) -> EntryResult {
    EntryResult::Rejected { reason }
}

fn outcomes(reasons: &[RejectReason]) -> EntryResult {
    EntryResult::Batch { outcomes: reasons.iter().map(|r| TransferOutcome::Rejected(*r)).collect() }
}

fn suspend_action(id: &str) -> GovernanceAction {
    GovernanceAction::SetParticipantStatus { participant: pid(id), status: ParticipantStatus::Suspended }
}

fn suspend(id: &str) -> Entry {
    admin(Entry::SetParticipantStatus { participant: pid(id), status: ParticipantStatus::Suspended })
}

/// Three transfers that are valid on their own.
fn three_valid() -> Vec<remit_settlement::Transfer> {
    vec![
        transfer(uetr(1), "gw-us", "gw-jp", usd(100)),
        transfer(uetr(2), "gw-us", "gw-hub", usd(200)),
        transfer(uetr(3), "gw-us", "gw-ph", usd(300)),
    ]
}

#[test]
fn unknown_participants_are_rejected() {
    use RejectReason::*;
    check_rejected(Case {
        name: "transfer to an unknown destination",
        setup: vec![],
        baseline: vec![],
        entries: vec![batch("gw-us", vec![transfer(uetr(1), "gw-us", UNKNOWN_ID, usd(100))])],
        expected: vec![outcomes(&[UnknownDestination])],
        codes: vec![Some("RC01")],
    });
    check_rejected(Case {
        name: "batch from an unknown origin",
        setup: vec![],
        baseline: vec![],
        entries: vec![batch(UNKNOWN_ID, vec![transfer(uetr(1), UNKNOWN_ID, "gw-us", usd(100))])],
        expected: vec![rejected(UnknownOrigin)],
        codes: vec![Some("RC01")],
    });
    check_rejected(Case {
        name: "admin entries for an unknown participant",
        setup: vec![],
        baseline: vec![],
        entries: vec![
            admin(Entry::SetNetDebitCap { participant: pid(UNKNOWN_ID), currency: Currency::USD, cap: Decimal::ONE }),
            suspend(UNKNOWN_ID),
        ],
        expected: vec![rejected(UnknownParticipant), rejected(UnknownParticipant)],
        codes: vec![Some("RC01"), Some("RC01")],
    });
}

#[test]
fn bad_signatures_reject_the_whole_batch() {
    // Positive control: with the right signature all three transfers apply.
    let (mut state, _) = genesis_state();
    let block = apply(&mut state, vec![batch("gw-us", three_valid())]);
    assert_eq!(block.results, vec![EntryResult::Batch { outcomes: vec![TransferOutcome::Accepted; 3] }]);
    assert_eq!(position(&state, "gw-us", Currency::USD), -600);

    let chain = chain_id();
    let good = TransferBatch::sign(&chain, pid("gw-us"), three_valid(), &signing_key(1));
    let mut flipped = good.clone();
    flipped.signature.0[63] ^= 0x01;
    let mut amended = good.clone();
    amended.transfers[2].amount = usd(301);
    let mut dropped = good.clone();
    dropped.transfers.pop();
    let other_chain = TransferBatch::sign(
        &remit_settlement::ChainId::new("remit-other").expect("valid"),
        pid("gw-us"),
        three_valid(),
        &signing_key(1),
    );
    let cases = [
        ("another participant's key", batch_signed_with("gw-us", three_valid(), &signing_key(2))),
        ("one bit of the signature flipped", Entry::TransferBatch { batch: flipped }),
        ("an amount changed after signing", Entry::TransferBatch { batch: amended }),
        ("a transfer removed after signing", Entry::TransferBatch { batch: dropped }),
        ("signed for another chain", Entry::TransferBatch { batch: other_chain }),
    ];
    for (name, entry) in cases {
        check_rejected(Case {
            name,
            setup: vec![],
            entries: vec![entry],
            baseline: vec![],
            expected: vec![rejected(RejectReason::BadSignature)],
            codes: vec![Some("DS0D")],
        });
    }
}

#[test]
fn suspended_participants_are_rejected() {
    use RejectReason::*;
    check_rejected(Case {
        name: "suspended origin",
        setup: vec![suspend("gw-us")],
        baseline: vec![],
        entries: vec![batch("gw-us", three_valid())],
        expected: vec![rejected(OriginSuspended)],
        codes: vec![Some("AG01")],
    });
    check_rejected(Case {
        name: "suspended destination",
        setup: vec![suspend("gw-jp")],
        baseline: vec![],
        entries: vec![batch("gw-us", vec![transfer(uetr(1), "gw-us", "gw-jp", usd(100))])],
        expected: vec![outcomes(&[DestinationSuspended])],
        codes: vec![Some("AG01")],
    });
    let suspension = suspend("gw-jp");
    check_rejected(Case {
        name: "suspended in the same block, before the batch",
        setup: vec![],
        baseline: vec![suspension.clone()],
        entries: vec![suspension, batch("gw-us", vec![transfer(uetr(1), "gw-us", "gw-jp", usd(100))])],
        expected: vec![EntryResult::Applied, outcomes(&[DestinationSuspended])],
        codes: vec![Some("APPLIED"), Some("AG01")],
    });
}

/// After reactivation the same transfer goes through.
#[test]
fn reactivated_participants_transact_again() {
    let (mut state, _) = genesis_state();
    apply(&mut state, vec![suspend("gw-us")]);
    let reactivate =
        admin(Entry::SetParticipantStatus { participant: pid("gw-us"), status: ParticipantStatus::Active });
    let block = apply(&mut state, vec![reactivate, batch("gw-us", three_valid())]);
    assert_eq!(block.results[1], EntryResult::Batch { outcomes: vec![TransferOutcome::Accepted; 3] });
}

#[test]
fn other_rejected_transfers_and_entries() {
    use RejectReason::*;
    let mut future = transfer(uetr(1), "gw-us", "gw-jp", usd(100));
    // The block under test is the second after genesis.
    future.created_at_ms = GENESIS_TIME_MS + 2_000 + CREATED_AT_SKEW_MS_DEFAULT + 1;
    let cases = [
        (
            "currencies one side does not settle in",
            vec![batch(
                "gw-us",
                vec![
                    transfer(uetr(1), "gw-us", "gw-jp", money(100, Currency::EUR)),
                    transfer(uetr(2), "gw-us", "gw-hub", money(100, Currency::JPY)),
                ],
            )],
            vec![outcomes(&[DestinationCurrencyNotSettled, OriginCurrencyNotSettled])],
            vec![Some("AM03"), Some("AM03")],
        ),
        (
            "same origin and destination, origin mismatch",
            vec![batch(
                "gw-us",
                vec![transfer(uetr(1), "gw-us", "gw-us", usd(100)), transfer(uetr(2), "gw-jp", "gw-hub", usd(100))],
            )],
            vec![outcomes(&[SameOriginAndDestination, OriginMismatch])],
            vec![Some("RC07"), Some("RC07")],
        ),
        ("empty batch", vec![batch("gw-us", vec![])], vec![rejected(EmptyBatch)], vec![Some("AM18")]),
        (
            "created too far in the future",
            vec![batch("gw-us", vec![future])],
            vec![outcomes(&[CreatedInFuture])],
            vec![Some("DT01")],
        ),
        (
            "over the cap, and a receive-only participant sending",
            vec![
                batch("gw-us", vec![transfer(uetr(1), "gw-us", "gw-jp", usd(100_001))]),
                batch("gw-ph", vec![transfer(uetr(2), "gw-ph", "gw-jp", usd(1))]),
            ],
            vec![outcomes(&[NetDebitCapExceeded]), outcomes(&[NetDebitCapExceeded])],
            vec![Some("AM04"), Some("AM04")],
        ),
        (
            "bad caps",
            vec![
                admin(Entry::SetNetDebitCap {
                    participant: pid("gw-us"),
                    currency: Currency::USD,
                    cap: Decimal::new(1001, 3),
                }),
                admin(Entry::SetNetDebitCap {
                    participant: pid("gw-us"),
                    currency: Currency::USD,
                    cap: Decimal::new(-1, 0),
                }),
                admin(Entry::SetNetDebitCap { participant: pid("gw-us"), currency: Currency::JPY, cap: Decimal::ONE }),
            ],
            vec![rejected(InvalidParticipantData), rejected(InvalidParticipantData), rejected(CapCurrencyNotSettled)],
            vec![Some("FF01"), Some("FF01"), Some("AM03")],
        ),
        (
            "registrations clashing with the registry",
            vec![
                admin(Entry::RegisterParticipant { participant: participant(&SPECS[0]) }),
                {
                    let mut clash = participant(&SPECS[0]);
                    clash.id = pid("gw-new");
                    admin(Entry::RegisterParticipant { participant: clash })
                },
                {
                    // The validator set is fixed by the key ceremony: index 4 of 4 names no validator.
                    let mut outside = participant(&SPECS[5]);
                    outside.id = pid("gw-new");
                    outside.validator_index = Some(4);
                    admin(Entry::RegisterParticipant { participant: outside })
                },
            ],
            vec![rejected(AlreadyRegistered), rejected(ValidatorIndexTaken), rejected(InvalidParticipantData)],
            vec![None, None, Some("FF01")],
        ),
        (
            "administration without governance approval",
            vec![
                Entry::SetParticipantStatus { participant: pid("gw-ph"), status: ParticipantStatus::Suspended },
                Entry::SetNetDebitCap { participant: pid("gw-us"), currency: Currency::USD, cap: Decimal::ZERO },
                {
                    let mut newcomer = participant(&SPECS[5]);
                    newcomer.id = pid("gw-new");
                    Entry::RegisterParticipant { participant: newcomer }
                },
                // One key where two are needed.
                governance_entry(suspend_action("gw-ph"), 9_001, &[2]),
                // The same key twice counts once.
                governance_entry(suspend_action("gw-ph"), 9_002, &[1, 1]),
                // Participants' keys are not governance keys.
                Entry::Governance {
                    proposal: GovernanceProposal { action: suspend_action("gw-ph"), nonce: 9_003 },
                    approvals: vec![
                        GovernanceProposal { action: suspend_action("gw-ph"), nonce: 9_003 }
                            .approve(&chain_id(), &signing_key(1)),
                        GovernanceProposal { action: suspend_action("gw-ph"), nonce: 9_003 }
                            .approve(&chain_id(), &signing_key(2)),
                    ],
                },
                // Approvals of another action do not carry over.
                {
                    let approved = governance_entry(suspend_action("gw-us"), 9_004, &[0, 1]);
                    let Entry::Governance { approvals, .. } = approved else { unreachable!("a governance entry") };
                    Entry::Governance {
                        proposal: GovernanceProposal { action: suspend_action("gw-ph"), nonce: 9_004 },
                        approvals,
                    }
                },
            ],
            vec![
                rejected(GovernanceRequired),
                rejected(GovernanceRequired),
                rejected(GovernanceRequired),
                rejected(GovernanceApprovalsInsufficient),
                rejected(GovernanceApprovalsInsufficient),
                rejected(GovernanceApprovalsInsufficient),
                rejected(GovernanceApprovalsInsufficient),
            ],
            vec![None; 7],
        ),
    ];
    for (name, entries, expected, codes) in cases {
        check_rejected(Case { name, setup: vec![], entries, baseline: vec![], expected, codes });
    }
    // A nonce is single-use: the second action signed with it is refused,
    // whoever approved it and whatever it does.
    let first = governance_entry(suspend_action("gw-ph"), 9_005, &[0, 2]);
    check_rejected(Case {
        name: "a governance nonce used twice",
        setup: vec![],
        entries: vec![first.clone(), governance_entry(suspend_action("gw-kw"), 9_005, &[1, 2])],
        baseline: vec![first],
        expected: vec![EntryResult::Applied, rejected(GovernanceNonceReused)],
        codes: vec![Some("APPLIED"), Some("DUPL")],
    });
}

/// `created_at_ms` may lie at most the future skew after the block
/// timestamp, and at most the horizon before it (both from network.json).
#[test]
fn created_at_window_boundaries() {
    let (mut state, _) = genesis_state();
    // Far enough after genesis that the horizon's lower edge is after it.
    let timestamp_ms = GENESIS_TIME_MS + CREATED_AT_HORIZON_MS_DEFAULT + 60_000;
    let at = |n: u64, created_at_ms: u64| {
        let mut t = transfer(uetr(n), "gw-us", "gw-jp", usd(100));
        t.created_at_ms = created_at_ms;
        t
    };
    let transfers = vec![
        at(1, timestamp_ms + CREATED_AT_SKEW_MS_DEFAULT),
        at(2, timestamp_ms + CREATED_AT_SKEW_MS_DEFAULT + 1),
        at(3, timestamp_ms - CREATED_AT_HORIZON_MS_DEFAULT),
        at(4, timestamp_ms - CREATED_AT_HORIZON_MS_DEFAULT - 1),
    ];
    let block = state
        .apply(proposal(&state, timestamp_ms, vec![batch("gw-us", transfers)]), SignatureCheck::Verify)
        .expect("applies");
    use TransferOutcome::*;
    assert_eq!(
        block.results,
        vec![EntryResult::Batch {
            outcomes: vec![
                Accepted,
                Rejected(RejectReason::CreatedInFuture),
                Accepted,
                Rejected(RejectReason::CreatedTooLongAgo)
            ]
        }]
    );
    assert_eq!(RejectReason::CreatedTooLongAgo.iso_code(), Some("DT01"));
}

// ---------------------------------------------------------------------------
// Malformed proposals: a BlockError, and the state exactly unchanged.

/// Everything a refused proposal must leave untouched, tip hash included.
fn snapshot(state: &LedgerState) -> (Digest32, Option<(Height, Digest32)>, u64, usize, Vec<u8>) {
    (
        state.state_root(),
        state.tip(),
        state.last_timestamp_ms(),
        state.applied_transfer_count(),
        state.encode_snapshot(),
    )
}

fn check_block_error(name: &str, make: impl Fn(&LedgerState) -> (BlockProposal, SignatureCheck), expected: BlockError) {
    let mut state = base_state();
    let before = snapshot(&state);
    let (proposal, checks) = make(&state);
    assert_eq!(state.apply(proposal, checks).expect_err(name), expected, "{name}");
    assert_eq!(snapshot(&state), before, "{name}");
    // The state still accepts the correct next block.
    let block = apply(&mut state, vec![batch("gw-jp", vec![transfer(uetr(9), "gw-jp", "gw-us", usd(50))])]);
    assert_eq!(block.header.height, Height(2), "{name}");
    assert_eq!(block.header.accepted_count, 1, "{name}");
}

/// Genesis and one block with accepted transfers, so the tip, positions and
/// UETR index are not trivial.
fn base_state() -> LedgerState {
    let (mut state, _) = genesis_state();
    apply(&mut state, vec![batch("gw-us", three_valid())]);
    state
}

fn with_valid_batch(state: &LedgerState) -> BlockProposal {
    proposal(
        state,
        state.last_timestamp_ms() + 1,
        vec![batch("gw-jp", vec![transfer(uetr(8), "gw-jp", "gw-us", usd(5))])],
    )
}

#[test]
fn malformed_proposals_leave_the_state_unchanged() {
    check_block_error(
        "height skips ahead",
        |s| (BlockProposal { height: Height(3), ..with_valid_batch(s) }, SignatureCheck::Verify),
        BlockError::WrongHeight { expected: Height(2), got: Height(3) },
    );
    check_block_error(
        "height repeats the tip",
        |s| (BlockProposal { height: Height(1), ..with_valid_batch(s) }, SignatureCheck::Verify),
        BlockError::WrongHeight { expected: Height(2), got: Height(1) },
    );
    check_block_error(
        "previous hash is not the tip",
        |s| (BlockProposal { prev_hash: Digest32([3; 32]), ..with_valid_batch(s) }, SignatureCheck::Verify),
        BlockError::WrongPrevHash { expected: base_state().tip_hash(), got: Digest32([3; 32]) },
    );
    let previous = GENESIS_TIME_MS + 1_000;
    check_block_error(
        "timestamp goes back",
        |s| (BlockProposal { timestamp_ms: previous - 1, ..with_valid_batch(s) }, SignatureCheck::Verify),
        BlockError::TimestampRegressed { previous, got: previous - 1 },
    );
    check_block_error(
        "too many entries",
        |s| {
            let entries = vec![suspend("gw-ph"); BLOCK_ENTRIES_MAX + 1];
            (proposal(s, s.last_timestamp_ms(), entries), SignatureCheck::Verify)
        },
        BlockError::TooLarge { what: "entries", got: BLOCK_ENTRIES_MAX + 1, max: BLOCK_ENTRIES_MAX },
    );
    check_block_error(
        "prechecked signatures for another number of entries",
        |s| (with_valid_batch(s), SignatureCheck::Prechecked(vec![true, true])),
        BlockError::SignatureCheckMismatch { expected: 1, got: 2 },
    );
}

/// Registrations that fail validation, and caps in currencies without a minor
/// unit, have no canonical encoding: the proposal is refused as a whole
/// rather than stopping the node or producing a block nobody can decode.
#[test]
fn unencodable_admin_entries_refuse_the_proposal() {
    let invalid = |edit: fn(&mut Participant)| {
        let mut p = participant(&SPECS[5]);
        p.id = pid("gw-new");
        edit(&mut p);
        Entry::RegisterParticipant { participant: p }
    };
    let cases: [(&str, Entry, &str); 5] = [
        (
            "cap with too many decimals",
            invalid(|p| {
                p.net_debit_caps.insert(Currency::USD, Decimal::new(1001, 3));
            }),
            "participant.net_debit_caps.USD: 1.001 has more decimal places than USD allows",
        ),
        ("blank name", invalid(|p| p.name = "  ".into()), "participant.name: must be 1 to 140 bytes and not blank"),
        (
            "name over 140 bytes",
            invalid(|p| p.name = "x".repeat(141)),
            "participant.name: must be 1 to 140 bytes and not blank",
        ),
        (
            "no settlement currency",
            invalid(|p| {
                p.settlement_currencies.clear();
                p.net_debit_caps.clear();
            }),
            "participant.settlement_currencies: must list 1 to 16 currencies",
        ),
        (
            "cap in a currency without minor unit",
            Entry::SetNetDebitCap { participant: pid("gw-us"), currency: Currency::XAU, cap: Decimal::ONE },
            "currency: XAU has no minor unit",
        ),
    ];
    // The same refusals when the entries come through governance.
    let cases: Vec<(&str, Entry, &str)> = cases
        .iter()
        .flat_map(|(name, entry, reason)| [(*name, entry.clone(), *reason), (*name, admin(entry.clone()), *reason)])
        .collect();
    for (name, entry, reason) in cases {
        check_block_error(
            name,
            |s| (proposal(s, s.last_timestamp_ms(), vec![suspend("gw-ph"), entry.clone()]), SignatureCheck::Verify),
            BlockError::InvalidEntry { index: 1, reason: reason.to_owned() },
        );
    }
}
