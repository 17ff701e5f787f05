//! Transfers and the origin-signed batches that carry them onto the ledger.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{DecodeError, Reader, Writer};
use crate::constants::{BATCH_TRANSFERS_MAX, PARTICIPANT_ID_LEN_MAX};
use crate::hash::{hash_with_domain, Digest32};
use crate::ids::{ChainId, ParticipantId, Uetr};
use crate::money::Money;
use crate::participant::OriginKey;

/// Domain tag of the message an origin signs for a batch.
pub const BATCH_SIGNATURE_TAG: &[u8] = b"REMIT_TRANSFER_BATCH_V1";

/// One settlement obligation from `origin` to `destination`. The payment
/// message with the parties' data stays off the ledger; only its salted hash
/// (`payload_commitment`) is recorded here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// End-to-end reference, unique across the ledger's history.
    pub uetr: Uetr,
    /// Participant that owes the amount (must equal the batch origin).
    pub origin: ParticipantId,
    /// Participant that is owed the amount.
    pub destination: ParticipantId,
    /// Settlement amount.
    pub amount: Money,
    /// SHA-256 commitment to the off-ledger payment message.
    pub payload_commitment: Digest32,
    /// When the origin created it, in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

impl Transfer {
    /// Canonical encoding.
    pub fn encode(&self, w: &mut Writer) {
        w.raw(self.uetr.as_bytes());
        w.str(self.origin.as_str());
        w.str(self.destination.as_str());
        w.currency(self.amount.currency());
        w.u64(self.amount.minor_units());
        w.digest(&self.payload_commitment);
        w.u64(self.created_at_ms);
    }

    /// Decodes and validates a transfer.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let uetr = Uetr::from_bytes(r.array()?).map_err(|e| r.error(e))?;
        let origin = ParticipantId::new(r.str(PARTICIPANT_ID_LEN_MAX)?).map_err(|e| r.error(e))?;
        let destination = ParticipantId::new(r.str(PARTICIPANT_ID_LEN_MAX)?).map_err(|e| r.error(e))?;
        let currency = r.currency()?;
        let amount = Money::from_minor_units(r.u64()?, currency, "amount").map_err(|e| r.error(e))?;
        Ok(Transfer { uetr, origin, destination, amount, payload_commitment: r.digest()?, created_at_ms: r.u64()? })
    }
}

/// An ed25519 signature over a batch.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BatchSignature(pub [u8; 64]);

impl std::fmt::Debug for BatchSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BatchSignature({}..)", hex::encode(&self.0[..8]))
    }
}

impl Serialize for BatchSignature {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(self.0))
    }
}

impl<'de> Deserialize<'de> for BatchSignature {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut bytes = [0u8; 64];
        hex::decode_to_slice(&text, &mut bytes)
            .map_err(|_| serde::de::Error::custom("signature: expected 128 hex characters"))?;
        Ok(Self(bytes))
    }
}

/// Transfers from one origin, signed once with the origin's key over the
/// canonical encoding. A bad signature rejects the whole batch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferBatch {
    /// The originating participant.
    pub origin: ParticipantId,
    /// The transfers, all with `origin` as their origin.
    pub transfers: Vec<Transfer>,
    /// The origin's signature over [`TransferBatch::signing_digest`].
    pub signature: BatchSignature,
}

impl TransferBatch {
    /// Builds and signs a batch.
    pub fn sign(chain_id: &ChainId, origin: ParticipantId, transfers: Vec<Transfer>, key: &SigningKey) -> Self {
        let digest = Self::digest_of(chain_id, &origin, &transfers);
        let signature = BatchSignature(key.sign(&digest.0).to_bytes());
        Self { origin, transfers, signature }
    }

    /// The digest the origin signs: domain tag, chain id, origin and transfers.
    pub fn signing_digest(&self, chain_id: &ChainId) -> Digest32 {
        Self::digest_of(chain_id, &self.origin, &self.transfers)
    }

    fn digest_of(chain_id: &ChainId, origin: &ParticipantId, transfers: &[Transfer]) -> Digest32 {
        let mut w = Writer::with_capacity(64 + transfers.len() * 96);
        w.str(chain_id.as_str());
        encode_body(&mut w, origin, transfers);
        hash_with_domain(BATCH_SIGNATURE_TAG, w.as_bytes())
    }

    /// Whether the signature is the origin key's over this batch on this chain.
    pub fn verify_signature(&self, chain_id: &ChainId, key: &OriginKey) -> bool {
        let digest = self.signing_digest(chain_id);
        let signature = Signature::from_bytes(&self.signature.0);
        key.verifying_key().verify(&digest.0, &signature).is_ok()
    }

    /// Canonical encoding (body then signature).
    pub fn encode(&self, w: &mut Writer) {
        encode_body(w, &self.origin, &self.transfers);
        w.raw(&self.signature.0);
    }

    /// Decodes a batch written by [`TransferBatch::encode`].
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let origin = ParticipantId::new(r.str(PARTICIPANT_ID_LEN_MAX)?).map_err(|e| r.error(e))?;
        let count = r.len(BATCH_TRANSFERS_MAX)?;
        let mut transfers = Vec::with_capacity(count);
        for _ in 0..count {
            transfers.push(Transfer::decode(r)?);
        }
        Ok(Self { origin, transfers, signature: BatchSignature(r.array()?) })
    }
}

fn encode_body(w: &mut Writer, origin: &ParticipantId, transfers: &[Transfer]) {
    w.str(origin.as_str());
    w.len(transfers.len());
    for transfer in transfers {
        transfer.encode(w);
    }
}
