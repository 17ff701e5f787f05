//! Threshold certification of blocks with BLS (threshold_crypto).
//!
//! n validators each hold a secret key share; any `q = ceil((n + f + 1) / 2)`
//! signature shares (with `f = floor((n - 1) / 3)`) over a block's
//! certification message combine into one signature that verifies against
//! the single group public key. Auditors need nothing else to check a
//! certificate.
//!
//! Why that quorum: two quorums overlap in at least `2q - n >= f + 1`
//! validators, so at least one honest validator is in both, and an honest
//! validator never signs two blocks at one height. Two different blocks can
//! therefore never both be certified at one height, whatever n is. With
//! n = 3f + 1 it is the familiar 2f + 1; with n = 5 or 6 it is 4 (2f + 1 = 3
//! would let two quorums of 5 share only the one faulty validator, and two
//! of 6 share none). Liveness holds while at most f validators are down:
//! `q <= n - f` for every n.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use threshold_crypto::ff::Field as _;
use threshold_crypto::group::{CurveAffine, CurveProjective, EncodedPoint};
use threshold_crypto::pairing::{Engine as _, PairingCurveAffine};
use threshold_crypto::{
    G1Affine, G2Affine, PEngine, PublicKey, PublicKeySet, SecretKeyShare, Signature, SignatureShare,
};

use crate::codec::Writer;
use crate::constants::VALIDATORS_MAX;
use crate::hash::Digest32;
use crate::ids::{ChainId, Height};

/// Domain tag of the message validators sign for a block.
pub const BLOCK_CERT_TAG: &[u8] = b"REMIT_BLOCK_CERT_V1";

/// Size of an encoded signature or signature share.
pub const SIGNATURE_BYTES: usize = 96;

/// Largest number of faulty validators `f` tolerated by `n` validators (n >= 3f + 1).
pub fn faulty_max(validators: usize) -> usize {
    validators.saturating_sub(1) / 3
}

/// Number of shares needed to certify: `ceil((n + f + 1) / 2)`, so that any
/// two quorums share at least f + 1 validators (at least one honest). Equal
/// to 2f + 1 when n = 3f + 1; larger for other n.
pub fn quorum(validators: usize) -> usize {
    (validators + faulty_max(validators) + 1).div_ceil(2)
}

/// The message a validator signs for a block: domain tag, chain id, height,
/// block hash and state root.
///
/// The message's hash to the curve (G2) is computed once and shared by its
/// clones: a validator signs and then verifies the combined signature over
/// the same message, and hashing to G2 costs about a third of a signature.
#[derive(Clone, Debug)]
pub struct CertificationMessage {
    bytes: Vec<u8>,
    point: Arc<OnceLock<G2Affine>>,
}

impl PartialEq for CertificationMessage {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for CertificationMessage {}

impl CertificationMessage {
    /// Builds the message for a block.
    pub fn new(chain_id: &ChainId, height: Height, block_hash: &Digest32, state_root: &Digest32) -> Self {
        let mut w = Writer::with_capacity(BLOCK_CERT_TAG.len() + 128);
        w.raw(BLOCK_CERT_TAG);
        w.str(chain_id.as_str());
        w.u64(height.0);
        w.digest(block_hash);
        w.digest(state_root);
        Self { bytes: w.into_bytes(), point: Arc::default() }
    }

    /// The message for a block header.
    pub fn for_header(header: &crate::block::BlockHeader) -> Self {
        Self::new(&header.chain_id, header.height, &header.hash(), &header.state_root)
    }

    /// The bytes signed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The message hashed to G2 (what is actually signed), computed once.
    fn point(&self) -> G2Affine {
        *self.point.get_or_init(|| threshold_crypto::hash_g2(&self.bytes).into_affine())
    }
}

/// A combined threshold signature over a block's certification message.
#[derive(Clone, PartialEq, Eq)]
pub struct Certificate(Signature);

impl Certificate {
    /// The 96 signature bytes.
    pub fn to_bytes(&self) -> [u8; SIGNATURE_BYTES] {
        self.0.to_bytes()
    }

    /// Parses 96 bytes; `None` when they are not a valid group element.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let bytes: [u8; SIGNATURE_BYTES] = bytes.try_into().ok()?;
        Signature::from_bytes(bytes).ok().map(Self)
    }

    /// Whether it is the group's signature over `message`.
    pub fn verify(&self, group_key: &PublicKey, message: &CertificationMessage) -> bool {
        group_key.verify_g2(&self.0, message.point())
    }

    /// [`Certificate::verify`] with the group key already prepared: one
    /// Miller loop over both pairs and one final exponentiation, instead of
    /// two full pairings (`e(pk, H(m)) · e(-g1, σ) == 1`).
    fn verify_prepared(&self, key: &PreparedGroupKey, message: &CertificationMessage) -> bool {
        // The point was checked to be in the subgroup when the certificate
        // was decoded (or combined from checked shares): no second check.
        let mut compressed = <G2Affine as CurveAffine>::Compressed::empty();
        compressed.as_mut().copy_from_slice(&self.to_bytes());
        let Ok(signature) = compressed.into_affine_unchecked() else { return false };
        let hash = message.point().prepare();
        let signature = signature.prepare();
        let pairs = [(&key.key, &hash), (&key.minus_generator, &signature)];
        PEngine::final_exponentiation(&PEngine::miller_loop(pairs.iter()))
            .is_some_and(|result| result == <PEngine as threshold_crypto::pairing::Engine>::Fqk::one())
    }
}

/// The group public key and the negated G1 generator, prepared for pairings once.
#[derive(Clone)]
struct PreparedGroupKey {
    key: <G1Affine as PairingCurveAffine>::Prepared,
    minus_generator: <G1Affine as PairingCurveAffine>::Prepared,
}

impl PreparedGroupKey {
    fn new(group_key: &PublicKey) -> Self {
        let mut compressed = <G1Affine as CurveAffine>::Compressed::empty();
        compressed.as_mut().copy_from_slice(&group_key.to_bytes());
        let key = compressed.into_affine().expect("a public key set's key is a valid G1 point");
        let mut minus_generator = G1Affine::one();
        minus_generator.negate();
        Self { key: key.prepare(), minus_generator: minus_generator.prepare() }
    }
}

impl fmt::Debug for PreparedGroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PreparedGroupKey")
    }
}

impl fmt::Debug for Certificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Certificate({}..)", hex::encode(&self.to_bytes()[..8]))
    }
}

impl Serialize for Certificate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(self.to_bytes()))
    }
}

impl<'de> Deserialize<'de> for Certificate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let bytes = hex::decode(&text).map_err(|_| serde::de::Error::custom("certificate: expected hex"))?;
        Self::from_bytes(&bytes).ok_or_else(|| serde::de::Error::custom("certificate: not a valid BLS signature"))
    }
}

/// One validator's signature share over a certification message.
#[derive(Clone, PartialEq, Eq)]
pub struct Share {
    /// The signer's validator index.
    pub validator: u32,
    /// The share.
    pub share: SignatureShare,
}

impl Share {
    /// Encodes the share as 96 bytes.
    pub fn to_bytes(&self) -> [u8; SIGNATURE_BYTES] {
        self.share.to_bytes()
    }

    /// Parses a share sent by `validator`.
    pub fn from_bytes(validator: u32, bytes: &[u8]) -> Option<Self> {
        let bytes: [u8; SIGNATURE_BYTES] = bytes.try_into().ok()?;
        SignatureShare::from_bytes(bytes).ok().map(|share| Self { validator, share })
    }
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Share(validator {}, {}..)", self.validator, hex::encode(&self.to_bytes()[..8]))
    }
}

/// A validator's secret key share. Never logged: `Debug` prints only the index.
pub struct ValidatorKey {
    index: u32,
    share: SecretKeyShare,
}

impl ValidatorKey {
    /// Wraps a key share for validator `index`.
    pub fn new(index: u32, share: SecretKeyShare) -> Self {
        Self { index, share }
    }

    /// The validator's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Signs the certification message of a block.
    pub fn sign(&self, message: &CertificationMessage) -> Share {
        Share { validator: self.index, share: self.share.sign_g2(message.point()) }
    }
}

impl fmt::Debug for ValidatorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ValidatorKey(index {}, secret redacted)", self.index)
    }
}

/// Why shares could not be turned into a certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertifyError {
    /// Fewer valid shares than the quorum.
    #[error("{valid} valid shares, {needed} needed (rejected validators: {rejected:?})")]
    NotEnoughShares {
        /// Valid shares held.
        valid: usize,
        /// Shares needed (the quorum).
        needed: usize,
        /// Validators whose shares all failed verification.
        rejected: Vec<u32>,
    },
    /// A share from an index outside the validator set.
    #[error("validator index {0} is outside the validator set")]
    UnknownValidator(u32),
}

/// The public side of the validator set: group key and key shares.
#[derive(Clone, Debug)]
pub struct ValidatorSet {
    keys: PublicKeySet,
    validators: usize,
    prepared: Arc<PreparedGroupKey>,
}

impl PartialEq for ValidatorSet {
    fn eq(&self, other: &Self) -> bool {
        self.keys == other.keys && self.validators == other.validators
    }
}

impl Eq for ValidatorSet {}

impl ValidatorSet {
    /// A set of `validators` validators with the given public key set. The
    /// key set's threshold must be `quorum(n) - 1` (a quorum of shares combines).
    pub fn new(keys: PublicKeySet, validators: usize) -> Result<Self, String> {
        if validators == 0 || validators > VALIDATORS_MAX {
            return Err(format!("validator count must be 1 to {VALIDATORS_MAX}, got {validators}"));
        }
        if keys.threshold() + 1 != quorum(validators) {
            return Err(format!(
                "key set needs {} shares but {validators} validators need a quorum of {}",
                keys.threshold() + 1,
                quorum(validators)
            ));
        }
        let prepared = Arc::new(PreparedGroupKey::new(&keys.public_key()));
        Ok(Self { keys, validators, prepared })
    }

    /// Number of validators.
    pub fn len(&self) -> usize {
        self.validators
    }

    /// Always false: a set has at least one validator.
    pub fn is_empty(&self) -> bool {
        self.validators == 0
    }

    /// Shares needed to certify.
    pub fn quorum(&self) -> usize {
        quorum(self.validators)
    }

    /// The group public key that verifies certificates.
    pub fn group_key(&self) -> PublicKey {
        self.keys.public_key()
    }

    /// The public key set.
    pub fn public_key_set(&self) -> &PublicKeySet {
        &self.keys
    }

    /// Whether `certificate` is the group's signature over `message`
    /// (the same answer as [`Certificate::verify`] with the group key, at
    /// about two thirds of its cost).
    pub fn verify_certificate(&self, certificate: &Certificate, message: &CertificationMessage) -> bool {
        certificate.verify_prepared(&self.prepared, message)
    }

    /// Whether `share` is the validator's valid share over `message`.
    pub fn verify_share(&self, share: &Share, message: &CertificationMessage) -> bool {
        (share.validator as usize) < self.validators
            && self.keys.public_key_share(share.validator as usize).verify_g2(&share.share, message.point())
    }

    /// Combines shares into a certificate. Optimistic: the first quorum is
    /// combined and the result checked once against the group key (one
    /// pairing check instead of one per share); only when that fails is each
    /// share verified and the bad ones excluded.
    pub fn certify(&self, message: &CertificationMessage, shares: &[Share]) -> Result<Certificate, CertifyError> {
        let mut unique: BTreeMap<u32, &Share> = BTreeMap::new();
        for share in shares {
            if share.validator as usize >= self.validators {
                return Err(CertifyError::UnknownValidator(share.validator));
            }
            unique.entry(share.validator).or_insert(share);
        }
        let needed = self.quorum();
        if unique.len() >= needed {
            if let Some(certificate) = self.combine_verified(message, unique.values().take(needed).copied()) {
                return Ok(certificate);
            }
        }
        // A validator counts with its first share that verifies, not merely its
        // first share: a forged share claiming an honest validator's index,
        // seen before the real one, must not shadow it.
        let mut valid: BTreeMap<u32, &Share> = BTreeMap::new();
        let mut failed = BTreeSet::new();
        for share in shares {
            if valid.contains_key(&share.validator) {
                continue;
            }
            if self.verify_share(share, message) {
                valid.insert(share.validator, share);
            } else {
                failed.insert(share.validator);
            }
        }
        let rejected: Vec<u32> = failed.into_iter().filter(|validator| !valid.contains_key(validator)).collect();
        if valid.len() < needed {
            return Err(CertifyError::NotEnoughShares { valid: valid.len(), needed, rejected });
        }
        self.combine_verified(message, valid.into_values().take(needed)).ok_or(CertifyError::NotEnoughShares {
            valid: 0,
            needed,
            rejected,
        })
    }

    fn combine_verified<'a>(
        &self,
        message: &CertificationMessage,
        shares: impl Iterator<Item = &'a Share>,
    ) -> Option<Certificate> {
        let signature = self.keys.combine_signatures(shares.map(|s| (s.validator as usize, &s.share))).ok()?;
        let certificate = Certificate(signature);
        self.verify_certificate(&certificate, message).then_some(certificate)
    }
}

impl ValidatorKey {
    /// The secret share, for writing the key file. Handle with care.
    pub(crate) fn secret_share(&self) -> &SecretKeyShare {
        &self.share
    }
}
