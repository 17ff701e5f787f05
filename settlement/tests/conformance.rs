//! Conformance of the canonical encoding: hashes of fixed sample blocks built
//! from fully deterministic inputs (fixed keys, UETRs, timestamps, chain id).
//!
//! CHANGING ANY PINNED VALUE BELOW IS A DELIBERATE FORMAT CHANGE. Block hashes,
//! Merkle roots, state roots and batch signatures are persisted, signed by the
//! validators and checked by auditors; a different value means every existing
//! chain stops verifying. If a pin fails, either fix the change that broke it,
//! or bump the relevant version tag (`BLOCK_FORMAT_VERSION`, the `*_V1` domain
//! tags), update the pins in the same reviewed commit and note it in CHANGELOG.md.
//! The failure message of `pinned_hashes` lists every current value.
//!
//! The fixture is self-contained on purpose: it does not use `common`, so
//! editing the shared test network cannot move these pins.

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use iso_currency::Currency;
use remit_settlement::block::{BLOCK_ENCODING_TAG, BLOCK_FORMAT_VERSION};
use remit_settlement::certify::CertificationMessage;
use remit_settlement::hash::{hash_with_domain, Digest32};
use remit_settlement::{
    Block, BlockProposal, ChainId, CountryCode, Entry, EntryResult, GovernanceAction, GovernanceConfig,
    GovernanceProposal, Height, LedgerParams, LedgerState, Money, OriginKey, Participant, ParticipantId,
    ParticipantStatus, PayoutOutcome, PayoutReport, PayoutReportBatch, PayoutState, RejectReason, ReplayWindow,
    ReturnReason, SignatureCheck, Transfer, TransferBatch, TransferOutcome, Uetr,
};
use rust_decimal::Decimal;

// Pinned values. See the module comment before changing any of them.
const GENESIS_HASH: &str = "865b43220a64ec4933ed8b3c06f922b7e93afe177b3d84d3e9f9465e412113c2";
const GENESIS_STATE_ROOT: &str = "a51417de34dc6e6bd5a5f4f5ecefd4f381f1c6527ca4ac2d3c0af9898a911f91";
const GENESIS_ENCODED_LEN: usize = 586;
const BLOCK1_HASH: &str = "ea7a63cae658b17db36c1b28142f788698cd80353ab10ea9ebb1f1e006fb0692";
const BLOCK1_ENTRIES_ROOT: &str = "38046eddcddd5a0ab0ed4370ccf3f6fd0b359ec3af7ed372107f2135f837fa9f";
const BLOCK1_RESULTS_ROOT: &str = "636ea2807e6cedf55b1c11138dc3f8ca4e5808e7495b9a30e1e4f21d13f499d0";
const BLOCK1_STATE_ROOT: &str = "210f1770865921c6e4d97bbfa1f83cbb5f924f734d042c6e93472cae3e8d492a";
const BLOCK1_ENCODED_LEN: usize = 1824;
/// SHA-256 of the whole canonical encoding of block 1.
const BLOCK1_ENCODING_SHA256: &str = "c22e918fa1542ccc06f163381661a88fc4a6b59d891c0bfe1ef2958dc990dae6";
/// The digest `bank-a` signs for its batch in block 1.
const BATCH_SIGNING_DIGEST: &str = "e3bbe22b91bc15d8699a21e2c31db904793367665c2f5188ea9ad92267810298";
/// SHA-256 of the certification message validators sign for block 1.
const BLOCK1_CERT_MESSAGE_SHA256: &str = "06f17c97ee684d629d0cfc94f739bd2d0f22c60394e9c64df2d0508bd7d20429";

/// Block 2: payout reports (completions, returns and every report rejection).
const BLOCK2_HASH: &str = "67bcd6992b4d29c89b5ea955347998234fafcff1609b56defa264be97211d5a1";
/// SHA-256 of the whole canonical encoding of block 2.
const BLOCK2_ENCODING_SHA256: &str = "b75ab90636538a8cfc1685027e062862dd4092f261ed98b4ca682197779587f5";
/// The digest `bank-c` signs for its report batch in block 2.
const REPORTS_SIGNING_DIGEST: &str = "4c490d19362e6f3b81a6a0e611be8bc103ff40d352027bd3abd2540f01e990a0";
/// SHA-256 of the state snapshot (`REMIT_STATE_SNAPSHOT_V3`) after block 2.
const BLOCK2_STATE_SNAPSHOT_SHA256: &str = "821983fad56656347d08d15ad8263031eef4d1be0899a96f94cb3eb6c3ddede6";
/// SHA-256 of the duplicate index encoding (`REMIT_INDEX_V2`) after block 2.
const BLOCK2_INDEX_SHA256: &str = "649259a58605f84e9dcea83e4577d980d6b584eac0bfc65c8c8fb180a7c90d27";
/// The digest governance keys sign for the cap change in block 1.
const GOVERNANCE_SIGNING_DIGEST: &str = "d403c5c6846d5a4910652b02407df4c6eb528ff3efbaf6bdcdbf683012982b0a";

const GENESIS_TIME_MS: u64 = 1_735_689_600_000; // 2025-01-01T00:00:00Z
const BLOCK1_TIME_MS: u64 = GENESIS_TIME_MS + 60_000;
const BLOCK2_TIME_MS: u64 = BLOCK1_TIME_MS + 60_000;

fn chain_id() -> ChainId {
    ChainId::new("remit-conformance-v1").expect("valid")
}

fn id(text: &str) -> ParticipantId {
    ParticipantId::new(text).expect("valid")
}

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// Seeds of the three governance keys; two must approve.
const GOVERNANCE_SEEDS: [u8; 3] = [0x71, 0x72, 0x73];

fn params() -> LedgerParams {
    LedgerParams {
        chain_id: chain_id(),
        validator_count: 2,
        replay: ReplayWindow { horizon_ms: 86_400_000, future_skew_ms: 300_000 },
        governance: GovernanceConfig {
            threshold: 2,
            keys: GOVERNANCE_SEEDS.iter().map(|s| OriginKey::new(key(*s).verifying_key())).collect(),
        },
    }
}

fn cap_proposal() -> GovernanceProposal {
    GovernanceProposal {
        action: GovernanceAction::SetNetDebitCap {
            participant: id("bank-c"),
            currency: Currency::KWD,
            cap: Decimal::new(250_500, 3),
        },
        nonce: 1,
    }
}

/// A governance entry approved by the keys of the given seeds.
fn governance(proposal: GovernanceProposal, approvers: &[u8]) -> Entry {
    let approvals = approvers.iter().map(|seed| proposal.approve(&chain_id(), &key(*seed))).collect();
    Entry::Governance { proposal, approvals }
}

fn bank(name: &str, country: &str, seed: u8, caps: &[(Currency, Decimal)], validator: Option<u32>) -> Participant {
    let caps: BTreeMap<Currency, Decimal> = caps.iter().copied().collect();
    Participant {
        id: id(name),
        name: format!("Conformance {name}"),
        country: CountryCode::new(country).expect("valid"),
        settlement_currencies: caps.keys().copied().collect(),
        origin_key: OriginKey::new(key(seed).verifying_key()),
        validator_index: validator,
        net_debit_caps: caps,
        status: ParticipantStatus::Active,
    }
}

fn genesis_proposal() -> BlockProposal {
    let participants = [
        bank(
            "bank-a",
            "US",
            0x11,
            &[(Currency::USD, Decimal::new(500_000, 2)), (Currency::EUR, Decimal::new(100_000, 2))],
            Some(0),
        ),
        bank(
            "bank-b",
            "JP",
            0x22,
            &[(Currency::JPY, Decimal::new(1_000_000, 0)), (Currency::USD, Decimal::new(500_000, 2))],
            Some(1),
        ),
        bank(
            "bank-c",
            "KW",
            0x33,
            &[(Currency::KWD, Decimal::new(1_000_000, 3)), (Currency::USD, Decimal::ZERO)],
            None,
        ),
    ];
    BlockProposal {
        height: Height::GENESIS,
        prev_hash: Digest32::ZERO,
        timestamp_ms: GENESIS_TIME_MS,
        entries: participants.into_iter().map(|participant| Entry::RegisterParticipant { participant }).collect(),
    }
}

fn transfer(uetr: &str, origin: &str, destination: &str, amount: &str, commitment: u8) -> Transfer {
    Transfer {
        uetr: uetr.parse::<Uetr>().expect("v4 uuid"),
        origin: id(origin),
        destination: id(destination),
        amount: Money::parse(amount, "amount").expect("valid"),
        payload_commitment: Digest32([commitment; 32]),
        created_at_ms: GENESIS_TIME_MS + 30_000,
    }
}

fn batch_a() -> TransferBatch {
    TransferBatch::sign(
        &chain_id(),
        id("bank-a"),
        vec![
            transfer("0b8a6f1e-2c3d-4e5f-8a6b-7c8d9e0f1a01", "bank-a", "bank-b", "1234.56 USD", 0xa1),
            transfer("0b8a6f1e-2c3d-4e5f-8a6b-7c8d9e0f1a02", "bank-a", "bank-c", "10.00 EUR", 0xa2),
        ],
        &key(0x11),
    )
}

/// Block 1 covers every entry type and every result type.
fn block1_entries() -> Vec<Entry> {
    vec![
        Entry::TransferBatch { batch: batch_a() },
        Entry::TransferBatch {
            batch: TransferBatch::sign(
                &chain_id(),
                id("bank-b"),
                vec![
                    transfer("0b8a6f1e-2c3d-4e5f-9a6b-7c8d9e0f1b01", "bank-b", "bank-c", "99.99 USD", 0xb1),
                    transfer("0b8a6f1e-2c3d-4e5f-8a6b-7c8d9e0f1a01", "bank-b", "bank-a", "5.00 USD", 0xb2),
                ],
                &key(0x22),
            ),
        },
        governance(cap_proposal(), &[0x71, 0x73]),
        governance(
            GovernanceProposal {
                action: GovernanceAction::SetParticipantStatus {
                    participant: id("bank-b"),
                    status: ParticipantStatus::Suspended,
                },
                nonce: 2,
            },
            &[0x72, 0x71],
        ),
        // Signed with the wrong key: rejected whole.
        Entry::TransferBatch {
            batch: TransferBatch::sign(
                &chain_id(),
                id("bank-c"),
                vec![transfer("0b8a6f1e-2c3d-4e5f-aa6b-7c8d9e0f1c01", "bank-c", "bank-a", "1.000 KWD", 0xc1)],
                &key(0x44),
            ),
        },
        // Unsigned administration after genesis: refused.
        Entry::SetParticipantStatus { participant: id("bank-a"), status: ParticipantStatus::Suspended },
        // One approval where two are needed (the other is an unlisted key): refused.
        governance(
            GovernanceProposal {
                action: GovernanceAction::SetParticipantStatus {
                    participant: id("bank-a"),
                    status: ParticipantStatus::Suspended,
                },
                nonce: 3,
            },
            &[0x73, 0x44],
        ),
        // The cap change again with its nonce: refused.
        governance(cap_proposal(), &[0x71, 0x72]),
    ]
}

fn build() -> (Block, Block, LedgerState) {
    let mut state = LedgerState::new(params());
    let genesis = state.apply(genesis_proposal(), SignatureCheck::Verify).expect("genesis applies");
    let proposal = BlockProposal {
        height: Height(1),
        prev_hash: genesis.hash(),
        timestamp_ms: BLOCK1_TIME_MS,
        entries: block1_entries(),
    };
    let block1 = state.apply(proposal, SignatureCheck::Verify).expect("block 1 applies");
    (genesis, block1, state)
}

fn sha256(bytes: &[u8]) -> String {
    hash_with_domain(b"", bytes).to_hex()
}

#[test]
fn sample_outcomes_are_as_designed() {
    // Guards the fixture itself: the pins below cover every entry and result type.
    let (genesis, block1, state) = build();
    assert_eq!(genesis.results, vec![EntryResult::Applied; 3]);
    use TransferOutcome::*;
    assert_eq!(
        block1.results,
        vec![
            EntryResult::Batch { outcomes: vec![Accepted, Rejected(RejectReason::DestinationCurrencyNotSettled)] },
            EntryResult::Batch { outcomes: vec![Accepted, Rejected(RejectReason::DuplicateUetr)] },
            EntryResult::Applied,
            EntryResult::Applied,
            EntryResult::Rejected { reason: RejectReason::BadSignature },
            EntryResult::Rejected { reason: RejectReason::GovernanceRequired },
            EntryResult::Rejected { reason: RejectReason::GovernanceApprovalsInsufficient },
            EntryResult::Rejected { reason: RejectReason::GovernanceNonceReused },
        ]
    );
    let h = &block1.header;
    assert_eq!((h.version, h.height, h.prev_hash), (BLOCK_FORMAT_VERSION, Height(1), genesis.hash()));
    assert_eq!((h.entry_count, h.transfer_count, h.accepted_count), (8, 5, 2));
    assert_eq!(
        state.participant(&id("bank-c")).map(|p| p.net_debit_cap(Currency::KWD).to_string()),
        Some("250.500".into())
    );
    assert_eq!(state.participant(&id("bank-a")).map(|p| p.status), Some(ParticipantStatus::Active));
    assert_eq!(state.governance_nonces().iter().copied().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(state.position(&id("bank-a"), Currency::USD).to_string(), "-1234.56");
    assert_eq!(state.position(&id("bank-b"), Currency::USD).to_string(), "1134.57");
    assert_eq!(state.position(&id("bank-c"), Currency::USD).to_string(), "99.99");
}

/// Checks every pin and, on any mismatch, lists all of them with their
/// current values so a deliberate format change updates them in one go.
#[test]
fn pinned_hashes() {
    let (genesis, block1, _) = build();
    let message = CertificationMessage::for_header(&block1.header);
    let pins: [(&str, String, String); 12] = [
        ("GENESIS_HASH", genesis.hash().to_hex(), GENESIS_HASH.into()),
        ("GENESIS_STATE_ROOT", genesis.header.state_root.to_hex(), GENESIS_STATE_ROOT.into()),
        ("GENESIS_ENCODED_LEN", genesis.encode().len().to_string(), GENESIS_ENCODED_LEN.to_string()),
        ("BLOCK1_HASH", block1.hash().to_hex(), BLOCK1_HASH.into()),
        ("BLOCK1_ENTRIES_ROOT", block1.header.entries_root.to_hex(), BLOCK1_ENTRIES_ROOT.into()),
        ("BLOCK1_RESULTS_ROOT", block1.header.results_root.to_hex(), BLOCK1_RESULTS_ROOT.into()),
        ("BLOCK1_STATE_ROOT", block1.header.state_root.to_hex(), BLOCK1_STATE_ROOT.into()),
        ("BLOCK1_ENCODED_LEN", block1.encode().len().to_string(), BLOCK1_ENCODED_LEN.to_string()),
        ("BLOCK1_ENCODING_SHA256", sha256(&block1.encode()), BLOCK1_ENCODING_SHA256.into()),
        ("BATCH_SIGNING_DIGEST", batch_a().signing_digest(&chain_id()).to_hex(), BATCH_SIGNING_DIGEST.into()),
        ("BLOCK1_CERT_MESSAGE_SHA256", sha256(message.as_bytes()), BLOCK1_CERT_MESSAGE_SHA256.into()),
        (
            "GOVERNANCE_SIGNING_DIGEST",
            cap_proposal().signing_digest(&chain_id()).to_hex(),
            GOVERNANCE_SIGNING_DIGEST.into(),
        ),
    ];
    let mismatched: Vec<&str> = pins.iter().filter(|(_, got, want)| got != want).map(|(name, _, _)| *name).collect();
    let current: Vec<String> = pins.iter().map(|(name, got, _)| format!("{name} = {got}")).collect();
    assert!(
        mismatched.is_empty(),
        "encoding changed ({mismatched:?}); if deliberate, see the module comment. Current values:\n{}",
        current.join("\n")
    );
}

#[test]
fn encoding_starts_with_the_versioned_tag() {
    let (_, block1, _) = build();
    let bytes = block1.encode();
    assert!(bytes.starts_with(BLOCK_ENCODING_TAG));
    assert_eq!(&bytes[BLOCK_ENCODING_TAG.len()..][..2], &BLOCK_FORMAT_VERSION.to_be_bytes());
}

#[test]
fn decode_inverts_encode() {
    let (genesis, block1, _) = build();
    for block in [genesis, block1] {
        let bytes = block.encode();
        let decoded = Block::decode(&bytes).expect("round trip");
        assert_eq!(decoded, block);
        assert_eq!(decoded.hash(), block.hash());
        assert_eq!(decoded.encode(), bytes);
    }
}

#[test]
fn truncated_or_padded_encodings_fail() {
    let (genesis, block1, _) = build();
    for block in [genesis, block1] {
        let bytes = block.encode();
        // Every proper prefix fails to decode.
        for len in 0..bytes.len() {
            let err = Block::decode(&bytes[..len]).expect_err("truncated block must not decode");
            assert_eq!(err.what, "block", "prefix of {len} bytes");
        }
        // Trailing bytes fail, however few.
        for garbage in [&[0u8][..], &[0xff, 0xee], &bytes[..16]] {
            let mut padded = bytes.clone();
            padded.extend_from_slice(garbage);
            let err = Block::decode(&padded).expect_err("trailing bytes must not decode");
            assert_eq!(err.reason, format!("{} trailing bytes", garbage.len()));
        }
        // A different tag or format version fails.
        let mut retagged = bytes.clone();
        retagged[BLOCK_ENCODING_TAG.len() - 1] ^= 0x01;
        assert!(Block::decode(&retagged).expect_err("wrong tag").reason.starts_with("expected tag"));
        let mut versioned = bytes.clone();
        versioned[BLOCK_ENCODING_TAG.len() + 1] = 2;
        assert_eq!(Block::decode(&versioned).expect_err("wrong version").reason, "unsupported block format version 2");
    }
}

// ---------------------------------------------------------------------------
// Payout reports (block 2), pinned apart so that block 1's pins stay as they were.

const A1: &str = "0b8a6f1e-2c3d-4e5f-8a6b-7c8d9e0f1a01";
const A2: &str = "0b8a6f1e-2c3d-4e5f-8a6b-7c8d9e0f1a02";
const B1: &str = "0b8a6f1e-2c3d-4e5f-9a6b-7c8d9e0f1b01";

fn report(uetr: &str, returned: Option<&str>) -> PayoutReport {
    let outcome = match returned {
        Some(code) => PayoutOutcome::Returned { reason: ReturnReason::new(code).expect("valid") },
        None => PayoutOutcome::Completed,
    };
    PayoutReport { uetr: uetr.parse().expect("v4 uuid"), outcome }
}

fn reports_c() -> PayoutReportBatch {
    PayoutReportBatch::sign(
        &chain_id(),
        id("bank-c"),
        vec![report(B1, Some("AC04")), report(A1, None), report(A2, None)],
        &key(0x33),
    )
}

fn build2() -> (Block, LedgerState) {
    let (_, block1, mut state) = build();
    let entries = vec![
        // bank-b is suspended since block 1, and still reports.
        Entry::PayoutReports {
            batch: PayoutReportBatch::sign(
                &chain_id(),
                id("bank-b"),
                vec![report(A1, None), report(A1, Some("AC04"))],
                &key(0x22),
            ),
        },
        Entry::PayoutReports { batch: reports_c() },
        Entry::PayoutReports {
            batch: PayoutReportBatch::sign(&chain_id(), id("bank-z"), vec![report(B1, None)], &key(0x44)),
        },
    ];
    let proposal = BlockProposal { height: Height(2), prev_hash: block1.hash(), timestamp_ms: BLOCK2_TIME_MS, entries };
    let block2 = state.apply(proposal, SignatureCheck::Verify).expect("block 2 applies");
    (block2, state)
}

#[test]
fn sample_report_outcomes_are_as_designed() {
    let (block2, state) = build2();
    use RejectReason::*;
    use TransferOutcome::*;
    assert_eq!(
        block2.results,
        vec![
            EntryResult::Batch { outcomes: vec![Accepted, Rejected(AlreadyReported)] },
            EntryResult::Batch { outcomes: vec![Accepted, Rejected(NotDestination), Rejected(UnknownTransfer)] },
            EntryResult::Rejected { reason: UnknownReporter },
        ]
    );
    let h = &block2.header;
    assert_eq!((h.entry_count, h.transfer_count, h.accepted_count), (3, 0, 0));
    let payout = |uetr: &str| state.payout_state(&uetr.parse().expect("v4 uuid"));
    assert_eq!(payout(A1), Some(PayoutState::Completed));
    assert_eq!(payout(B1), Some(PayoutState::Returned(ReturnReason::new("AC04").expect("valid"))));
    assert_eq!(state.position(&id("bank-b"), Currency::USD).to_string(), "1234.56");
    assert_eq!(state.position(&id("bank-c"), Currency::USD).to_string(), "0.00");
}

#[test]
fn pinned_report_hashes() {
    let (block2, state) = build2();
    let pins: [(&str, String, String); 5] = [
        ("BLOCK2_HASH", block2.hash().to_hex(), BLOCK2_HASH.into()),
        ("BLOCK2_ENCODING_SHA256", sha256(&block2.encode()), BLOCK2_ENCODING_SHA256.into()),
        ("REPORTS_SIGNING_DIGEST", reports_c().signing_digest(&chain_id()).to_hex(), REPORTS_SIGNING_DIGEST.into()),
        ("BLOCK2_STATE_SNAPSHOT_SHA256", sha256(&state.encode_snapshot()), BLOCK2_STATE_SNAPSHOT_SHA256.into()),
        ("BLOCK2_INDEX_SHA256", sha256(&state.index().encode_snapshot()), BLOCK2_INDEX_SHA256.into()),
    ];
    let mismatched: Vec<&str> = pins.iter().filter(|(_, got, want)| got != want).map(|(name, _, _)| *name).collect();
    let current: Vec<String> = pins.iter().map(|(name, got, _)| format!("{name} = {got}")).collect();
    assert!(
        mismatched.is_empty(),
        "encoding changed ({mismatched:?}); if deliberate, see the module comment. Current values:\n{}",
        current.join("\n")
    );
    let decoded = Block::decode(&block2.encode()).expect("round trip");
    assert_eq!(decoded, block2);
}
