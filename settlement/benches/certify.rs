//! Criterion benchmark of threshold certification with 4 validators (f = 1,
//! quorum 3): sign a share, verify a share, combine a quorum, verify the
//! combined certificate, and the whole optimistic certify path.
//!
//! Run: `cargo bench -p remit-settlement --bench certify`

use criterion::{criterion_group, criterion_main, Criterion};
use rand07::SeedableRng;
use remit_settlement::certify::{quorum, CertificationMessage, Share, ValidatorKey, ValidatorSet};
use remit_settlement::hash::Digest32;
use remit_settlement::ids::{ChainId, Height};
use threshold_crypto::SecretKeySet;

const VALIDATORS: usize = 4;

fn bench_certify(c: &mut Criterion) {
    let mut rng = rand07::rngs::StdRng::seed_from_u64(3);
    let secret = SecretKeySet::random(quorum(VALIDATORS) - 1, &mut rng);
    let set = ValidatorSet::new(secret.public_keys(), VALIDATORS).expect("valid set");
    let keys: Vec<ValidatorKey> =
        (0..VALIDATORS).map(|i| ValidatorKey::new(i as u32, secret.secret_key_share(i))).collect();
    let message = CertificationMessage::new(
        &ChainId::new("bench").expect("valid chain id"),
        Height(42),
        &Digest32([7; 32]),
        &Digest32([9; 32]),
    );
    let shares: Vec<_> = keys.iter().map(|k| k.sign(&message)).collect();
    let quorum_shares = &shares[..set.quorum()];
    let certificate = set.certify(&message, quorum_shares).expect("certifies");
    let group_key = set.group_key();

    let mut group = c.benchmark_group("certify");
    group.sample_size(20);
    group.bench_function("sign_share", |b| b.iter(|| keys[0].sign(&message)));
    group.bench_function("verify_share", |b| b.iter(|| assert!(set.verify_share(&shares[0], &message))));
    group.bench_function("combine_3_shares", |b| {
        b.iter(|| {
            set.public_key_set()
                .combine_signatures(quorum_shares.iter().map(|s| (s.validator as usize, &s.share)))
                .expect("combines")
        })
    });
    group.bench_function("verify_certificate", |b| b.iter(|| assert!(certificate.verify(&group_key, &message))));
    group.bench_function("verify_certificate_prepared", |b| {
        b.iter(|| assert!(set.verify_certificate(&certificate, &message)))
    });
    let share_bytes = shares[1].to_bytes();
    group.bench_function("decode_share", |b| b.iter(|| Share::from_bytes(1, &share_bytes).expect("decodes")));
    group
        .bench_function("certify_optimistic_3_of_4", |b| b.iter(|| set.certify(&message, &shares).expect("certifies")));
    group.finish();
}

criterion_group!(benches, bench_certify);
criterion_main!(benches);
