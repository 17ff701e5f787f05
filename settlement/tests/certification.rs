//! Threshold certification with n = 4 (f = 1, quorum 3) and n = 7 (f = 2,
//! quorum 5): quorums certify, smaller sets do not, forged shares and shares
//! over other messages are detected and excluded, and certificates verify with
//! the group key alone.

mod common;

use common::*;
use rand07::{Rng as _, SeedableRng as _};
use remit_settlement::certify::{
    faulty_max, quorum, Certificate, CertificationMessage, CertifyError, Share, BLOCK_CERT_TAG,
};
use remit_settlement::hash::Digest32;
use remit_settlement::{ChainId, Height};
use threshold_crypto::{PublicKey, SignatureShare};

/// The message of the test network's genesis block.
fn genesis_message() -> CertificationMessage {
    let (_, genesis) = genesis_state();
    CertificationMessage::for_header(&genesis.header)
}

/// How a share in a test case is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The validator's own key over the right message.
    Honest,
    /// A random group element, not a signature at all.
    Random,
    /// The same index's key share from another key set.
    WrongKey,
    /// The validator's key over the message for another height.
    OtherHeight,
    /// ... for another block hash.
    OtherBlockHash,
    /// ... for another chain id.
    OtherChain,
    /// ... for another state root.
    OtherStateRoot,
}

fn share(validators: &Validators, impostors: &Validators, index: u32, kind: Kind) -> Share {
    let (_, genesis) = genesis_state();
    let h = &genesis.header;
    let hash = h.hash();
    let key = &validators.keys[index as usize];
    let other = |message: CertificationMessage| key.sign(&message);
    match kind {
        Kind::Honest => key.sign(&genesis_message()),
        Kind::Random => {
            let mut rng = rand07::rngs::StdRng::seed_from_u64(u64::from(index) + 1_000);
            Share { validator: index, share: rng.gen::<SignatureShare>() }
        }
        Kind::WrongKey => impostors.keys[index as usize].sign(&genesis_message()),
        Kind::OtherHeight => other(CertificationMessage::new(&h.chain_id, Height(1), &hash, &h.state_root)),
        Kind::OtherBlockHash => {
            other(CertificationMessage::new(&h.chain_id, h.height, &Digest32([7; 32]), &h.state_root))
        }
        Kind::OtherChain => other(CertificationMessage::new(
            &ChainId::new("remit-other").expect("valid"),
            h.height,
            &hash,
            &h.state_root,
        )),
        Kind::OtherStateRoot => other(CertificationMessage::new(&h.chain_id, h.height, &hash, &Digest32([9; 32]))),
    }
}

/// Expected outcome: a certificate, or `NotEnoughShares` with the valid count and rejected validators.
#[derive(Debug)]
enum Expected {
    Certified,
    NotEnough { valid: usize, rejected: Vec<u32> },
}

/// Certifies the genesis message with the given shares on a set of `n` and checks the outcome.
fn check(n: usize, shares: &[(u32, Kind)], expected: Expected) {
    let validators = validators(n, n as u64);
    let impostors = validators_for_impostors(n);
    let message = genesis_message();
    let shares: Vec<Share> = shares.iter().map(|(i, kind)| share(&validators, &impostors, *i, *kind)).collect();
    let got = validators.set.certify(&message, &shares);
    match (got, expected) {
        (Ok(certificate), Expected::Certified) => {
            assert!(certificate.verify(&validators.set.group_key(), &message));
            // A threshold signature is unique: any quorum of honest shares gives the same one.
            assert_eq!(certificate, validators.certify(&genesis_header()), "n={n} {shares:?}");
        }
        (
            Err(CertifyError::NotEnoughShares { valid, needed, rejected }),
            Expected::NotEnough { valid: v, rejected: r },
        ) => {
            assert_eq!((valid, needed, rejected), (v, quorum(n), r), "n={n} {shares:?}");
        }
        (got, expected) => panic!("n={n} {shares:?}: got {got:?}, expected {expected:?}"),
    }
}

fn validators_for_impostors(n: usize) -> Validators {
    validators(n, 1_000 + n as u64)
}

fn genesis_header() -> remit_settlement::BlockHeader {
    genesis_state().1.header
}

fn honest(indexes: impl IntoIterator<Item = u32>) -> Vec<(u32, Kind)> {
    indexes.into_iter().map(|i| (i, Kind::Honest)).collect()
}

const BAD_KINDS: [Kind; 6] =
    [Kind::Random, Kind::WrongKey, Kind::OtherHeight, Kind::OtherBlockHash, Kind::OtherChain, Kind::OtherStateRoot];

#[test]
fn quorum_sizes() {
    for (n, f, q) in [
        (1, 0, 1),
        (2, 0, 2),
        (3, 0, 2),
        (4, 1, 3),
        (5, 1, 4),
        (6, 1, 4),
        (7, 2, 5),
        (8, 2, 6),
        (9, 2, 6),
        (10, 3, 7),
        (64, 21, 43),
    ] {
        assert_eq!((faulty_max(n), quorum(n)), (f, q), "n={n}");
    }
    assert_eq!(validators(4, 1).set.quorum(), 3);
    assert_eq!(validators(7, 1).set.quorum(), 5);
}

#[test]
fn quorums_certify_and_smaller_sets_do_not() {
    // n = 4: any 3 of 4 certify, 2 do not.
    check(4, &honest([0, 1, 2]), Expected::Certified);
    check(4, &honest([1, 2, 3]), Expected::Certified);
    check(4, &honest([3, 0, 2]), Expected::Certified);
    check(4, &honest([0, 1, 2, 3]), Expected::Certified);
    check(4, &honest([0, 3]), Expected::NotEnough { valid: 2, rejected: vec![] });
    check(4, &honest([]), Expected::NotEnough { valid: 0, rejected: vec![] });
    // n = 7: any 5 of 7 certify, 4 do not.
    check(7, &honest([0, 1, 2, 3, 4]), Expected::Certified);
    check(7, &honest([2, 3, 4, 5, 6]), Expected::Certified);
    check(7, &honest(0..7), Expected::Certified);
    check(7, &honest([0, 2, 4, 6]), Expected::NotEnough { valid: 4, rejected: vec![] });
}

#[test]
fn a_repeated_share_counts_once() {
    check(4, &honest([1, 1, 2]), Expected::NotEnough { valid: 2, rejected: vec![] });
    check(7, &honest([0, 1, 1, 2, 3, 3]), Expected::NotEnough { valid: 4, rejected: vec![] });
}

#[test]
fn bad_shares_are_excluded_when_enough_honest_shares_remain() {
    for kind in BAD_KINDS {
        // n = 4, one bad share: in the optimistic first quorum (index 0) or after it (index 3).
        for bad in [0, 1, 3] {
            let mut shares = honest((0..4).filter(|i| *i != bad));
            shares.insert(0, (bad, kind));
            check(4, &shares, Expected::Certified);
        }
        // n = 7, f = 2 bad shares.
        let shares = vec![
            (0, kind),
            (1, Kind::Honest),
            (2, Kind::Honest),
            (3, Kind::Honest),
            (4, kind),
            (5, Kind::Honest),
            (6, Kind::Honest),
        ];
        check(7, &shares, Expected::Certified);
    }
}

#[test]
fn bad_shares_are_named_when_too_few_honest_shares_remain() {
    for kind in BAD_KINDS {
        check(
            4,
            &[(0, Kind::Honest), (1, kind), (2, Kind::Honest)],
            Expected::NotEnough { valid: 2, rejected: vec![1] },
        );
        check(
            7,
            &[(0, Kind::Honest), (1, kind), (2, Kind::Honest), (3, Kind::Honest), (4, Kind::Honest), (6, kind)],
            Expected::NotEnough { valid: 4, rejected: vec![1, 6] },
        );
        // f + 1 bad shares out of all 7: only 4 honest remain.
        let shares: Vec<(u32, Kind)> =
            (0..7).map(|i| (i, if i % 2 == 0 && i < 6 { kind } else { Kind::Honest })).collect();
        check(7, &shares, Expected::NotEnough { valid: 4, rejected: vec![0, 2, 4] });
    }
}

/// A forged share that claims an honest validator's index must not shadow
/// that validator's real share.
#[test]
fn a_forged_share_does_not_shadow_the_honest_share_of_its_index() {
    for kind in [Kind::Random, Kind::WrongKey, Kind::OtherHeight] {
        check(4, &[(0, kind), (0, Kind::Honest), (1, Kind::Honest), (2, Kind::Honest)], Expected::Certified);
        check(
            4,
            &[(0, kind), (1, Kind::Honest), (0, Kind::Honest)],
            Expected::NotEnough { valid: 2, rejected: vec![] },
        );
    }
}

#[test]
fn shares_verify_individually() {
    let validators = validators(4, 4);
    let impostors = validators_for_impostors(4);
    let message = genesis_message();
    for index in 0..4 {
        assert!(validators.set.verify_share(&share(&validators, &impostors, index, Kind::Honest), &message));
        for kind in BAD_KINDS {
            assert!(!validators.set.verify_share(&share(&validators, &impostors, index, kind), &message), "{kind:?}");
        }
    }
    // An honest share claimed by another index does not verify either.
    let mut moved = share(&validators, &impostors, 1, Kind::Honest);
    moved.validator = 2;
    assert!(!validators.set.verify_share(&moved, &message));
}

#[test]
fn shares_from_outside_the_set_are_refused() {
    let validators = validators(4, 4);
    let message = genesis_message();
    let mut shares: Vec<Share> = validators.keys.iter().map(|k| k.sign(&message)).collect();
    let mut outsider = shares[0].clone();
    outsider.validator = 4;
    shares.push(outsider);
    assert_eq!(validators.set.certify(&message, &shares), Err(CertifyError::UnknownValidator(4)));
}

#[test]
fn certificate_verifies_with_the_group_key_alone() {
    for n in [4, 7] {
        let validators = validators(n, n as u64);
        let header = genesis_header();
        let certificate = validators.certify(&header);

        // All an auditor has: the group key as hex (as in network.json) and the certificate bytes.
        let group_hex = hex::encode(validators.set.group_key().to_bytes());
        let mut bytes = [0u8; 48];
        hex::decode_to_slice(&group_hex, &mut bytes).expect("hex");
        let group_key = PublicKey::from_bytes(bytes).expect("valid group key");
        let certificate = Certificate::from_bytes(&certificate.to_bytes()).expect("valid signature bytes");

        let message = CertificationMessage::for_header(&header);
        assert!(message.as_bytes().starts_with(BLOCK_CERT_TAG));
        assert!(certificate.verify(&group_key, &message));
        // The prepared path of the validator set agrees with the plain one.
        assert!(validators.set.verify_certificate(&certificate, &message));
        let impostors = validators_for_impostors(n);
        assert!(!impostors.set.verify_certificate(&certificate, &message));
        assert!(!validators.set.verify_certificate(&impostors.certify(&header), &message));
        let hash = header.hash();
        for other in [
            CertificationMessage::new(&header.chain_id, Height(1), &hash, &header.state_root),
            CertificationMessage::new(&header.chain_id, header.height, &Digest32([1; 32]), &header.state_root),
            CertificationMessage::new(
                &ChainId::new("remit-other").expect("valid"),
                header.height,
                &hash,
                &header.state_root,
            ),
            CertificationMessage::new(&header.chain_id, header.height, &hash, &Digest32([2; 32])),
        ] {
            assert!(!certificate.verify(&group_key, &other));
            assert!(!validators.set.verify_certificate(&certificate, &other));
        }
        // Another network's group key does not verify it.
        assert!(!certificate.verify(&validators_for_impostors(n).set.group_key(), &message));
        // Bytes that are not a group element are refused on parsing.
        assert!(Certificate::from_bytes(&[0xff; 96]).is_none());
        assert!(Certificate::from_bytes(&certificate.to_bytes()[..95]).is_none());
    }
}

/// Safety and liveness of the quorum rule for every allowed validator count:
/// any two quorums share at least f + 1 validators (so at least one honest
/// validator, who never signs two blocks at one height, is in both), and the
/// n - f validators left when f are down still make a quorum. The smallest
/// two quorums can share is `2q - n` (when they overlap as little as
/// possible); the property test also draws actual pairs of quorums.
#[test]
fn quorums_intersect_in_an_honest_validator_for_every_n() {
    for n in 1..=remit_settlement::constants::VALIDATORS_MAX {
        let (f, q) = (faulty_max(n), quorum(n));
        assert!(3 * f < n, "n={n}: f={f} must satisfy n >= 3f + 1");
        assert!(2 * q > n + f, "n={n}: two quorums of {q} may share fewer than f + 1 = {}", f + 1);
        assert!(q + f <= n, "n={n}: quorum {q} unreachable with {f} validators down");
        // Minimal: one validator fewer would break the intersection.
        assert!(2 * (q - 1) < n + f + 1, "n={n}: quorum {q} is larger than needed");
    }
}

proptest::proptest! {
    #[test]
    fn any_two_drawn_quorums_share_f_plus_one(
        n in 1usize..=remit_settlement::constants::VALIDATORS_MAX,
        seed_a in proptest::prelude::any::<u64>(),
        seed_b in proptest::prelude::any::<u64>(),
    ) {
        use rand::seq::SliceRandom as _;
        use rand::SeedableRng as _;
        let q = quorum(n);
        let draw = |seed: u64| {
            let mut all: Vec<usize> = (0..n).collect();
            all.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
            all.truncate(q);
            all.into_iter().collect::<std::collections::BTreeSet<usize>>()
        };
        let (a, b) = (draw(seed_a), draw(seed_b));
        proptest::prop_assert!(a.intersection(&b).count() > faulty_max(n));
    }
}
