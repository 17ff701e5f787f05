//! Shared fixtures for the settlement integration tests: a small, fully
//! deterministic network (ed25519 keys from fixed seeds, BLS key sets from
//! seeded RNGs, fixed chain id and timestamps) and helpers to sign batches,
//! build proposals and apply them.
//!
//! Every test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::collections::BTreeMap;

use ed25519_dalek::SigningKey;
use iso_currency::Currency;
use rand07::SeedableRng as _;
use remit_settlement::certify::{quorum, Certificate, CertificationMessage, ValidatorKey, ValidatorSet};
use remit_settlement::hash::{hash_with_domain, Digest32};
use remit_settlement::money::decimal_to_minor_units;
use remit_settlement::network::{NetworkConfig, ValidatorMember, ValidatorsConfig, NETWORK_FORMAT_VERSION};
use remit_settlement::{
    Block, BlockHeader, BlockProposal, ChainId, CountryCode, Entry, GovernanceAction, GovernanceConfig,
    GovernanceProposal, Height, LedgerParams, LedgerState, Money, OriginKey, Participant, ParticipantId,
    ParticipantStatus, PayoutOutcome, PayoutReport, PayoutReportBatch, ReplayWindow, ReturnReason, SignatureCheck,
    Transfer, TransferBatch, Uetr,
};
use rust_decimal::Decimal;
use threshold_crypto::SecretKeySet;

/// Chain id of the test network.
pub const CHAIN_ID: &str = "remit-test-1";
/// Timestamp of the genesis block.
pub const GENESIS_TIME_MS: u64 = 1_700_000_000_000;
/// Default `created_at_ms` of test transfers: at the genesis time, so valid in every later block.
pub const CREATED_AT_MS: u64 = GENESIS_TIME_MS;
/// The four settlement currencies of the test network: 2, 0, 3 and 2 decimals.
pub const CURRENCIES: [Currency; 4] = [Currency::USD, Currency::JPY, Currency::KWD, Currency::EUR];
/// An id no test registers.
pub const UNKNOWN_ID: &str = "gw-zz";

/// One participant of the test network: its id, country, key seed, caps in
/// minor units per settlement currency, and validator index.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Participant id.
    pub id: &'static str,
    /// ISO 3166-1 alpha-2 country.
    pub country: &'static str,
    /// The ed25519 key is `SigningKey::from_bytes(&[seed; 32])`.
    pub seed: u8,
    /// Settlement currencies with their net debit cap in minor units.
    pub caps_minor: &'static [(Currency, i64)],
    /// Validator index, for the first four.
    pub validator_index: Option<u32>,
}

/// The test network. `gw-hub` settles in all four currencies; `gw-ph` settles
/// only in USD with a cap of zero (it can receive but not be a net sender).
pub const SPECS: [Spec; 6] = [
    Spec {
        id: "gw-us",
        country: "US",
        seed: 1,
        caps_minor: &[(Currency::USD, 100_000), (Currency::EUR, 50_000)],
        validator_index: Some(0),
    },
    Spec {
        id: "gw-jp",
        country: "JP",
        seed: 2,
        caps_minor: &[(Currency::JPY, 100_000), (Currency::USD, 100_000)],
        validator_index: Some(1),
    },
    Spec {
        id: "gw-kw",
        country: "KW",
        seed: 3,
        caps_minor: &[(Currency::KWD, 100_000), (Currency::USD, 100_000)],
        validator_index: Some(2),
    },
    Spec {
        id: "gw-de",
        country: "DE",
        seed: 4,
        caps_minor: &[(Currency::EUR, 50_000), (Currency::USD, 100_000)],
        validator_index: Some(3),
    },
    Spec {
        id: "gw-hub",
        country: "GB",
        seed: 5,
        caps_minor: &[
            (Currency::USD, 100_000),
            (Currency::JPY, 100_000),
            (Currency::KWD, 100_000),
            (Currency::EUR, 50_000),
        ],
        validator_index: None,
    },
    Spec { id: "gw-ph", country: "PH", seed: 6, caps_minor: &[(Currency::USD, 0)], validator_index: None },
];

/// A participant id.
pub fn pid(id: &str) -> ParticipantId {
    ParticipantId::new(id).expect("test ids are valid")
}

/// The chain id of the test network.
pub fn chain_id() -> ChainId {
    ChainId::new(CHAIN_ID).expect("valid chain id")
}

/// The ed25519 key derived from a fixed seed byte.
pub fn signing_key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

/// A decimal with `minor` minor units of `currency` (exactly the currency's scale).
pub fn decimal(minor: i64, currency: Currency) -> Decimal {
    Decimal::new(minor, u32::from(currency.exponent().expect("settleable currency")))
}

/// A positive amount of `minor` minor units.
pub fn money(minor: u64, currency: Currency) -> Money {
    Money::from_minor_units(minor, currency, "amount").expect("valid test amount")
}

/// A signed decimal amount as minor units.
pub fn minor_units(amount: Decimal, currency: Currency) -> i128 {
    decimal_to_minor_units(amount, currency).expect("exact to minor units")
}

/// The participant record of a spec.
pub fn participant(spec: &Spec) -> Participant {
    let mut currencies: Vec<Currency> = spec.caps_minor.iter().map(|(c, _)| *c).collect();
    currencies.sort();
    Participant {
        id: pid(spec.id),
        name: format!("Test gateway {}", spec.id),
        country: CountryCode::new(spec.country).expect("valid country"),
        settlement_currencies: currencies,
        origin_key: OriginKey::new(signing_key(spec.seed).verifying_key()),
        validator_index: spec.validator_index,
        net_debit_caps: spec.caps_minor.iter().map(|(c, cap)| (*c, decimal(*cap, *c))).collect(),
        status: ParticipantStatus::Active,
    }
}

/// Every participant of the test network, in [`SPECS`] order.
pub fn participants() -> Vec<Participant> {
    SPECS.iter().map(participant).collect()
}

/// The spec of a participant by id.
pub fn spec(id: &str) -> &'static Spec {
    SPECS.iter().find(|s| s.id == id).expect("participant of the test network")
}

/// A deterministic version-4 UETR numbered `n`.
pub fn uetr(n: u64) -> Uetr {
    let mut bytes = [0x5a; 16];
    bytes[8..].copy_from_slice(&n.to_be_bytes());
    Uetr::from_uuid(uuid::Builder::from_random_bytes(bytes).into_uuid()).expect("builder sets version 4")
}

/// A transfer with a deterministic payload commitment and `created_at_ms` of [`CREATED_AT_MS`].
pub fn transfer(uetr: Uetr, origin: &str, destination: &str, amount: Money) -> Transfer {
    Transfer {
        uetr,
        origin: pid(origin),
        destination: pid(destination),
        amount,
        payload_commitment: hash_with_domain(b"REMIT_TEST_PAYLOAD", uetr.as_bytes()),
        created_at_ms: CREATED_AT_MS,
    }
}

/// A batch entry from `origin`, signed with its own key (or, for an unknown
/// origin, with a key from seed 99).
pub fn batch(origin: &str, transfers: Vec<Transfer>) -> Entry {
    let key = SPECS.iter().find(|s| s.id == origin).map_or_else(|| signing_key(99), |s| signing_key(s.seed));
    batch_signed_with(origin, transfers, &key)
}

/// A batch entry signed with an explicit key.
pub fn batch_signed_with(origin: &str, transfers: Vec<Transfer>, key: &SigningKey) -> Entry {
    Entry::TransferBatch { batch: TransferBatch::sign(&chain_id(), pid(origin), transfers, key) }
}

/// A report that the payout of `uetr` completed.
pub fn completed(uetr: Uetr) -> PayoutReport {
    PayoutReport { uetr, outcome: PayoutOutcome::Completed }
}

/// A report that the payout of `uetr` was returned with ISO reason `code`.
pub fn returned(uetr: Uetr, code: &str) -> PayoutReport {
    PayoutReport { uetr, outcome: PayoutOutcome::Returned { reason: reason(code) } }
}

/// A valid return reason.
pub fn reason(code: &str) -> ReturnReason {
    ReturnReason::new(code).expect("valid test return reason")
}

/// A payout report entry from `reporter`, signed with its own key (or, for an
/// unknown reporter, with a key from seed 99).
pub fn reports(reporter: &str, reports: Vec<PayoutReport>) -> Entry {
    let key = SPECS.iter().find(|s| s.id == reporter).map_or_else(|| signing_key(99), |s| signing_key(s.seed));
    reports_signed_with(reporter, reports, &key)
}

/// A payout report entry signed with an explicit key.
pub fn reports_signed_with(reporter: &str, reports: Vec<PayoutReport>, key: &SigningKey) -> Entry {
    Entry::PayoutReports { batch: PayoutReportBatch::sign(&chain_id(), pid(reporter), reports, key) }
}

/// Seeds of the test network's three governance keys (two must approve).
pub const GOVERNANCE_SEEDS: [u8; 3] = [201, 202, 203];

/// Governance key `i` of the test network.
pub fn governance_key(i: usize) -> SigningKey {
    signing_key(GOVERNANCE_SEEDS[i])
}

/// The test network's governance: 2 of the 3 keys.
pub fn governance() -> GovernanceConfig {
    GovernanceConfig {
        threshold: 2,
        keys: (0..GOVERNANCE_SEEDS.len()).map(|i| OriginKey::new(governance_key(i).verifying_key())).collect(),
    }
}

/// The ledger parameters of the test network (4 validators, the default
/// replay window, 2-of-3 governance).
pub fn params() -> LedgerParams {
    LedgerParams { chain_id: chain_id(), validator_count: 4, replay: ReplayWindow::default(), governance: governance() }
}

/// A governance entry for `action` with `nonce`, approved by the given
/// governance keys (indexes into [`GOVERNANCE_SEEDS`]).
pub fn governance_entry(action: GovernanceAction, nonce: u64, approvers: &[usize]) -> Entry {
    let proposal = GovernanceProposal { action, nonce };
    let approvals = approvers.iter().map(|i| proposal.approve(&chain_id(), &governance_key(*i))).collect();
    Entry::Governance { proposal, approvals }
}

/// The genesis-style administrative `entry` (registration, cap or status) as
/// a governance entry approved by keys 0 and 1, with a fresh nonce: what
/// administration looks like after genesis. Other entries are returned as is.
pub fn admin(entry: Entry) -> Entry {
    static NONCE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let action = match entry {
        Entry::RegisterParticipant { participant } => GovernanceAction::RegisterParticipant { participant },
        Entry::SetNetDebitCap { participant, currency, cap } => {
            GovernanceAction::SetNetDebitCap { participant, currency, cap }
        }
        Entry::SetParticipantStatus { participant, status } => {
            GovernanceAction::SetParticipantStatus { participant, status }
        }
        other => return other,
    };
    let nonce = NONCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    governance_entry(action, nonce, &[0, 1])
}

/// The genesis proposal registering every participant.
pub fn genesis_proposal() -> BlockProposal {
    BlockProposal {
        height: Height::GENESIS,
        prev_hash: Digest32::ZERO,
        timestamp_ms: GENESIS_TIME_MS,
        entries: participants().into_iter().map(|participant| Entry::RegisterParticipant { participant }).collect(),
    }
}

/// A fresh state with the genesis block applied.
pub fn genesis_state() -> (LedgerState, Block) {
    let mut state = LedgerState::new(params());
    let block = state.apply(genesis_proposal(), SignatureCheck::Verify).expect("genesis applies");
    (state, block)
}

/// A proposal for the next height of `state`, at `timestamp_ms`.
pub fn proposal(state: &LedgerState, timestamp_ms: u64, entries: Vec<Entry>) -> BlockProposal {
    BlockProposal { height: state.next_height(), prev_hash: state.tip_hash(), timestamp_ms, entries }
}

/// Applies `entries` as the next block, one second after the previous one.
pub fn apply(state: &mut LedgerState, entries: Vec<Entry>) -> Block {
    let timestamp_ms = state.last_timestamp_ms() + 1_000;
    state.apply(proposal(state, timestamp_ms, entries), SignatureCheck::Verify).expect("well-formed proposal applies")
}

/// Position of `id` in `currency`, in minor units.
pub fn position(state: &LedgerState, id: &str, currency: Currency) -> i128 {
    minor_units(state.position(&pid(id), currency), currency)
}

/// Every position of every test participant (and the unknown id) in every
/// test currency, in minor units.
pub fn all_positions(state: &LedgerState) -> BTreeMap<(String, String), i128> {
    let mut ids: Vec<&str> = SPECS.iter().map(|s| s.id).collect();
    ids.push(UNKNOWN_ID);
    let mut positions = BTreeMap::new();
    for id in ids {
        for currency in CURRENCIES {
            positions.insert((id.to_owned(), currency.code().to_owned()), position(state, id, currency));
        }
    }
    positions
}

/// Asserts every currency's positions sum to exactly zero.
pub fn assert_conserved(state: &LedgerState) {
    for (currency, sum) in state.position_sums() {
        assert!(sum.is_zero(), "{} positions sum to {sum}", currency.code());
    }
}

/// A validator set of `n` validators with BLS keys from a seeded RNG, and
/// every validator's key share.
#[derive(Debug)]
pub struct Validators {
    /// The public side.
    pub set: ValidatorSet,
    /// Every validator's key, by index.
    pub keys: Vec<ValidatorKey>,
}

/// Deterministic validators: the key set's threshold is 2f, so 2f + 1 shares certify.
pub fn validators(n: usize, seed: u64) -> Validators {
    let mut rng = rand07::rngs::StdRng::seed_from_u64(seed);
    let secret = SecretKeySet::random(quorum(n) - 1, &mut rng);
    let set = ValidatorSet::new(secret.public_keys(), n).expect("consistent validator set");
    let keys =
        (0..n).map(|i| ValidatorKey::new(u32::try_from(i).expect("small"), secret.secret_key_share(i))).collect();
    Validators { set, keys }
}

impl Validators {
    /// Every validator signs the header's certification message and a quorum is combined.
    pub fn certify(&self, header: &BlockHeader) -> Certificate {
        let message = CertificationMessage::for_header(header);
        let shares: Vec<_> = self.keys.iter().map(|key| key.sign(&message)).collect();
        self.set.certify(&message, &shares).expect("honest shares certify")
    }
}

/// The `network.json` of the test network with the first four participants
/// as validators 0 to 3 (`validators` must have n = 4).
pub fn network_config(validators: &Validators) -> NetworkConfig {
    let keys = validators.set.public_key_set();
    let participants = participants();
    let members = participants
        .iter()
        .filter_map(|p| p.validator_index.map(|index| (p, index)))
        .map(|(p, index)| ValidatorMember {
            index,
            participant: p.id.clone(),
            public_key_share: hex::encode(keys.public_key_share(index as usize).to_bytes()),
        })
        .collect();
    let n = validators.set.len();
    let config = NetworkConfig {
        version: NETWORK_FORMAT_VERSION,
        chain_id: chain_id(),
        genesis_time_ms: GENESIS_TIME_MS,
        validators: ValidatorsConfig {
            count: u32::try_from(n).expect("small"),
            faulty_max: u32::try_from((n - 1) / 3).expect("small"),
            quorum: u32::try_from(validators.set.quorum()).expect("small"),
            group_public_key: hex::encode(validators.set.group_key().to_bytes()),
            public_key_set: keys.clone(),
            members,
        },
        governance: governance(),
        replay: ReplayWindow::default(),
        participants,
    };
    config.validate().expect("test network is consistent");
    config
}
