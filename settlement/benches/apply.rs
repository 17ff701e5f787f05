//! Criterion benchmark of the ledger state machine: applying blocks of 8,192
//! transfers without signature checks (signatures are verified before apply,
//! in parallel, and benchmarked separately), including the entries and
//! results Merkle roots and the state root.
//!
//! Run: `cargo bench -p remit-settlement --bench apply`

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ed25519_dalek::SigningKey;
use iso_currency::Currency;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use remit_settlement::hash::Digest32;
use remit_settlement::ids::{ChainId, CountryCode, Height, ParticipantId, Uetr};
use remit_settlement::money::Money;
use remit_settlement::participant::{OriginKey, Participant, ParticipantStatus};
use remit_settlement::{
    BlockProposal, Entry, GovernanceConfig, LedgerParams, LedgerState, ReplayWindow, SignatureCheck, Transfer,
    TransferBatch,
};
use rust_decimal::Decimal;

const TRANSFERS_PER_BLOCK: usize = 8_192;
const PARTICIPANTS: u8 = 8;

fn participant(i: u8) -> (Participant, SigningKey) {
    let key = SigningKey::from_bytes(&[i + 1; 32]);
    let participant = Participant {
        id: ParticipantId::new(format!("bank-{i}")).expect("valid id"),
        name: format!("Bank {i}"),
        country: CountryCode::new("US").expect("valid country"),
        settlement_currencies: vec![Currency::USD],
        origin_key: OriginKey::new(key.verifying_key()),
        validator_index: None,
        net_debit_caps: BTreeMap::from([(Currency::USD, Decimal::from(1_000_000_000_000i64))]),
        status: ParticipantStatus::Active,
    };
    (participant, key)
}

fn genesis() -> (LedgerState, Vec<(ParticipantId, SigningKey)>) {
    let chain_id = ChainId::new("bench").expect("valid chain id");
    let governance = SigningKey::from_bytes(&[0xee; 32]);
    let mut state = LedgerState::new(LedgerParams {
        chain_id,
        validator_count: 1,
        replay: ReplayWindow::default(),
        governance: GovernanceConfig { threshold: 1, keys: vec![OriginKey::new(governance.verifying_key())] },
    });
    let mut keys = Vec::new();
    let mut entries = Vec::new();
    for i in 0..PARTICIPANTS {
        let (participant, key) = participant(i);
        keys.push((participant.id.clone(), key));
        entries.push(Entry::RegisterParticipant { participant });
    }
    let proposal = BlockProposal { height: Height::GENESIS, prev_hash: Digest32::ZERO, timestamp_ms: 1, entries };
    state.apply(proposal, SignatureCheck::Verify).expect("genesis applies");
    (state, keys)
}

fn proposal(state: &LedgerState, keys: &[(ParticipantId, SigningKey)], rng: &mut StdRng) -> BlockProposal {
    let chain_id = state.chain_id().clone();
    let per_batch = TRANSFERS_PER_BLOCK / keys.len();
    let entries = keys
        .iter()
        .enumerate()
        .map(|(o, (origin, key))| {
            let transfers = (0..per_batch)
                .map(|_| {
                    let mut d = rng.gen_range(0..keys.len());
                    if d == o {
                        d = (d + 1) % keys.len();
                    }
                    let uuid = uuid::Builder::from_random_bytes(rng.gen()).into_uuid();
                    Transfer {
                        uetr: Uetr::from_uuid(uuid).expect("v4"),
                        origin: origin.clone(),
                        destination: keys[d].0.clone(),
                        amount: Money::from_minor_units(rng.gen_range(1..100_000), Currency::USD, "amount")
                            .expect("valid amount"),
                        payload_commitment: Digest32(rng.gen()),
                        created_at_ms: 2,
                    }
                })
                .collect();
            Entry::TransferBatch { batch: TransferBatch::sign(&chain_id, origin.clone(), transfers, key) }
        })
        .collect();
    BlockProposal { height: state.next_height(), prev_hash: state.tip_hash(), timestamp_ms: 2, entries }
}

fn bench_apply(c: &mut Criterion) {
    let (state, keys) = genesis();
    let mut rng = StdRng::seed_from_u64(1);
    let mut group = c.benchmark_group("ledger");
    group.throughput(Throughput::Elements(TRANSFERS_PER_BLOCK as u64));
    group.sample_size(30);
    group.bench_function("apply_block_8192_transfers", |b| {
        b.iter_batched(
            || {
                let proposal = proposal(&state, &keys, &mut rng);
                let checks = SignatureCheck::Prechecked(vec![true; proposal.entries.len()]);
                (state.clone(), proposal, checks)
            },
            |(mut state, proposal, checks)| {
                let block = state.apply(proposal, checks).expect("applies");
                assert_eq!(block.header.accepted_count as usize, TRANSFERS_PER_BLOCK);
                (state, block)
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function("encode_block_8192_transfers", |b| {
        let mut applied = state.clone();
        let proposal = proposal(&state, &keys, &mut rng);
        let checks = SignatureCheck::Prechecked(vec![true; proposal.entries.len()]);
        let block = applied.apply(proposal, checks).expect("applies");
        b.iter(|| block.encode());
    });
    group.finish();
}

criterion_group!(benches, bench_apply);
criterion_main!(benches);
