//! Governance: administrative actions (register a participant, set a net
//! debit cap, suspend or reactivate a participant) take effect only when
//! approved by `k` of the `m` governance keys listed in `network.json`.
//!
//! Each approval is an ed25519 signature over a domain-separated digest of
//! the chain id, the action and a nonce chosen by the proposer
//! ([`GovernanceProposal::signing_digest`]). The state machine counts the
//! distinct listed keys whose signature verifies, refuses the entry when
//! fewer than the threshold approve, and refuses a nonce already used, so a
//! signed action can neither be replayed on this chain nor on another.
//!
//! Genesis is the exception: the registrations of the genesis block are
//! derived from `network.json`, which every node and auditor holds, so they
//! carry no signatures. After genesis an unsigned administrative entry is
//! refused ([`crate::RejectReason::GovernanceRequired`]).

use std::collections::BTreeSet;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _};
use iso_currency::Currency;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::codec::{DecodeError, Reader, Writer};
use crate::constants::{GOVERNANCE_KEYS_MAX, PARTICIPANT_ID_LEN_MAX};
use crate::hash::{hash_with_domain, Digest32};
use crate::ids::{ChainId, ParticipantId};
use crate::money::{decimal_to_minor_units, minor_units_to_decimal};
use crate::participant::{OriginKey, Participant, ParticipantStatus};
use crate::transfer::BatchSignature;

/// Domain tag of the digest governance keys sign.
pub const GOVERNANCE_SIGNATURE_TAG: &[u8] = b"REMIT_GOVERNANCE_V1";

/// A governance public key: an ed25519 key, like a participant's origin key.
pub type GovernanceKey = OriginKey;

/// An administrative change to the registry.
// A registration carries a whole participant record; actions are rare and
// short-lived, so boxing it would only add an allocation and an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum GovernanceAction {
    /// Adds a participant (a member gateway, usually without a validator index).
    RegisterParticipant {
        /// The full record.
        participant: Participant,
    },
    /// Sets a participant's net debit cap in one currency.
    SetNetDebitCap {
        /// Whose cap.
        participant: ParticipantId,
        /// Which currency.
        currency: Currency,
        /// The new cap (non-negative, exact to minor units).
        #[serde(with = "rust_decimal::serde::str")]
        cap: Decimal,
    },
    /// Suspends or reactivates a participant.
    SetParticipantStatus {
        /// Whose status.
        participant: ParticipantId,
        /// The new status.
        status: ParticipantStatus,
    },
}

impl GovernanceAction {
    /// Canonical encoding (the same bodies as the genesis administrative entries).
    pub fn encode(&self, w: &mut Writer) {
        match self {
            GovernanceAction::RegisterParticipant { participant } => {
                w.u8(1);
                participant.encode(w);
            }
            GovernanceAction::SetNetDebitCap { participant, currency, cap } => {
                w.u8(2);
                encode_cap(w, participant, *currency, *cap);
            }
            GovernanceAction::SetParticipantStatus { participant, status } => {
                w.u8(3);
                w.str(participant.as_str());
                w.u8(status.code());
            }
        }
    }

    /// Decodes an action written by [`GovernanceAction::encode`].
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        match r.u8()? {
            1 => Ok(GovernanceAction::RegisterParticipant { participant: Participant::decode(r)? }),
            2 => {
                let (participant, currency, cap) = decode_cap(r)?;
                Ok(GovernanceAction::SetNetDebitCap { participant, currency, cap })
            }
            3 => {
                let participant = ParticipantId::new(r.str(PARTICIPANT_ID_LEN_MAX)?).map_err(|e| r.error(e))?;
                let status = ParticipantStatus::from_code(r.u8()?).ok_or_else(|| r.error("bad participant status"))?;
                Ok(GovernanceAction::SetParticipantStatus { participant, status })
            }
            other => Err(r.error(format!("unknown governance action {other}"))),
        }
    }

    /// A one-line description for operators.
    pub fn describe(&self) -> String {
        match self {
            GovernanceAction::RegisterParticipant { participant } => {
                let role = match participant.validator_index {
                    Some(index) => format!("validator {index}"),
                    None => "gateway".to_owned(),
                };
                format!(
                    "register participant {} ({}, {}, {role})",
                    participant.id, participant.name, participant.country
                )
            }
            GovernanceAction::SetNetDebitCap { participant, currency, cap } => {
                format!("set the net debit cap of {participant} in {} to {cap}", currency.code())
            }
            GovernanceAction::SetParticipantStatus { participant, status } => {
                format!("set the status of {participant} to {}", status.as_str())
            }
        }
    }
}

/// Encodes a participant id, currency and cap. A cap that is not exact to
/// minor units cannot be encoded; it is written as -1, which the state
/// machine refuses like any negative cap.
pub(crate) fn encode_cap(w: &mut Writer, participant: &ParticipantId, currency: Currency, cap: Decimal) {
    w.str(participant.as_str());
    w.currency(currency);
    w.i128(decimal_to_minor_units(cap, currency).unwrap_or(-1));
}

/// Decodes what [`encode_cap`] wrote.
pub(crate) fn decode_cap(r: &mut Reader<'_>) -> Result<(ParticipantId, Currency, Decimal), DecodeError> {
    let participant = ParticipantId::new(r.str(PARTICIPANT_ID_LEN_MAX)?).map_err(|e| r.error(e))?;
    let currency = r.currency()?;
    if currency.exponent().is_none() {
        return Err(r.error(format!("cap currency {} has no minor unit", currency.code())));
    }
    let cap = minor_units_to_decimal(r.i128()?, currency).ok_or_else(|| r.error("cap out of range"))?;
    Ok((participant, currency, cap))
}

/// What governance keys sign: an action and a nonce that makes it single-use.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernanceProposal {
    /// The change.
    pub action: GovernanceAction,
    /// Chosen by the proposer; the ledger accepts each nonce once.
    pub nonce: u64,
}

impl GovernanceProposal {
    /// The digest each approving key signs: domain tag, chain id, action, nonce.
    pub fn signing_digest(&self, chain_id: &ChainId) -> Digest32 {
        let mut w = Writer::with_capacity(256);
        w.str(chain_id.as_str());
        self.action.encode(&mut w);
        w.u64(self.nonce);
        hash_with_domain(GOVERNANCE_SIGNATURE_TAG, w.as_bytes())
    }

    /// One governance key's approval of this proposal on `chain_id`.
    pub fn approve(&self, chain_id: &ChainId, key: &SigningKey) -> Approval {
        let digest = self.signing_digest(chain_id);
        Approval {
            public_key: OriginKey::new(key.verifying_key()),
            signature: BatchSignature(key.sign(&digest.0).to_bytes()),
        }
    }

    /// Canonical encoding.
    pub fn encode(&self, w: &mut Writer) {
        self.action.encode(w);
        w.u64(self.nonce);
    }

    /// Decodes a proposal written by [`GovernanceProposal::encode`].
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let action = GovernanceAction::decode(r)?;
        Ok(Self { action, nonce: r.u64()? })
    }
}

/// One governance key's signature over a proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Approval {
    /// The approving key (must be one of the network's governance keys).
    pub public_key: GovernanceKey,
    /// Its signature over [`GovernanceProposal::signing_digest`].
    pub signature: BatchSignature,
}

impl Approval {
    /// Whether the signature is the key's over `digest`.
    pub fn verifies(&self, digest: &Digest32) -> bool {
        let signature = Signature::from_bytes(&self.signature.0);
        self.public_key.verifying_key().verify(&digest.0, &signature).is_ok()
    }
}

/// Encodes approvals: a count, then per approval the key and the signature.
pub(crate) fn encode_approvals(w: &mut Writer, approvals: &[Approval]) {
    w.len(approvals.len());
    for approval in approvals {
        w.raw(&approval.public_key.to_bytes());
        w.raw(&approval.signature.0);
    }
}

/// Decodes at most [`GOVERNANCE_KEYS_MAX`] approvals.
pub(crate) fn decode_approvals(r: &mut Reader<'_>) -> Result<Vec<Approval>, DecodeError> {
    let count = r.len(GOVERNANCE_KEYS_MAX)?;
    let mut approvals = Vec::with_capacity(count);
    for _ in 0..count {
        let public_key = OriginKey::from_bytes(&r.array()?).ok_or_else(|| r.error("invalid governance key"))?;
        approvals.push(Approval { public_key, signature: BatchSignature(r.array()?) });
    }
    Ok(approvals)
}

/// The governance keys and threshold, from `network.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernanceConfig {
    /// Approvals needed (k).
    pub threshold: u32,
    /// The keys (m), distinct.
    pub keys: Vec<GovernanceKey>,
}

impl GovernanceConfig {
    /// Checks 1 <= k <= m <= [`GOVERNANCE_KEYS_MAX`] and distinct keys.
    pub fn validate(&self) -> Result<(), String> {
        let m = self.keys.len();
        if m == 0 || m > GOVERNANCE_KEYS_MAX {
            return Err(format!("governance.keys: must list 1 to {GOVERNANCE_KEYS_MAX} keys, got {m}"));
        }
        if self.threshold == 0 || self.threshold as usize > m {
            return Err(format!("governance.threshold: must be 1 to {m} (the number of keys), got {}", self.threshold));
        }
        let distinct: BTreeSet<[u8; 32]> = self.keys.iter().map(OriginKey::to_bytes).collect();
        if distinct.len() != m {
            return Err("governance.keys: a key is listed twice".into());
        }
        Ok(())
    }

    /// Number of distinct listed keys among `approvals` whose signature over
    /// the proposal verifies. Unlisted keys, repeated keys and bad signatures
    /// do not count.
    pub fn approvals_counted(
        &self,
        chain_id: &ChainId,
        proposal: &GovernanceProposal,
        approvals: &[Approval],
    ) -> usize {
        let digest = proposal.signing_digest(chain_id);
        let mut counted = BTreeSet::new();
        for approval in approvals {
            let key = approval.public_key.to_bytes();
            if counted.contains(&key) || !self.keys.iter().any(|listed| listed.to_bytes() == key) {
                continue;
            }
            if approval.verifies(&digest) {
                counted.insert(key);
            }
        }
        counted.len()
    }

    /// Canonical encoding (for the state root and snapshots).
    pub fn encode(&self, w: &mut Writer) {
        w.u32(self.threshold);
        w.len(self.keys.len());
        for key in &self.keys {
            w.raw(&key.to_bytes());
        }
    }

    /// Decodes and validates what [`GovernanceConfig::encode`] wrote.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let threshold = r.u32()?;
        let count = r.len(GOVERNANCE_KEYS_MAX)?;
        let mut keys = Vec::with_capacity(count);
        for _ in 0..count {
            keys.push(OriginKey::from_bytes(&r.array()?).ok_or_else(|| r.error("invalid governance key"))?);
        }
        let config = Self { threshold, keys };
        config.validate().map_err(|e| r.error(e))?;
        Ok(config)
    }
}

/// A proposal with its approvals, as exchanged between the people who sign
/// it and submitted to a node (the JSON file of `remit governance`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedProposal {
    /// The chain the proposal is for (part of what is signed).
    pub chain_id: ChainId,
    /// The action and nonce.
    #[serde(flatten)]
    pub proposal: GovernanceProposal,
    /// Approvals gathered so far.
    #[serde(default)]
    pub approvals: Vec<Approval>,
}

impl SignedProposal {
    /// Adds `key`'s approval, replacing an earlier one by the same key.
    pub fn approve(&mut self, key: &SigningKey) {
        let approval = self.proposal.approve(&self.chain_id, key);
        self.approvals.retain(|a| a.public_key != approval.public_key);
        self.approvals.push(approval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn config(threshold: u32, seeds: &[u8]) -> GovernanceConfig {
        GovernanceConfig { threshold, keys: seeds.iter().map(|s| OriginKey::new(key(*s).verifying_key())).collect() }
    }

    fn proposal() -> GovernanceProposal {
        GovernanceProposal {
            action: GovernanceAction::SetParticipantStatus {
                participant: ParticipantId::new("gw-ph").expect("valid"),
                status: ParticipantStatus::Suspended,
            },
            nonce: 7,
        }
    }

    #[test]
    fn only_distinct_listed_valid_approvals_count() {
        let chain = ChainId::new("remit-test-1").expect("valid");
        let other_chain = ChainId::new("remit-test-2").expect("valid");
        let governance = config(2, &[1, 2, 3]);
        let p = proposal();
        let check = |approvals: Vec<Approval>, expected: usize| {
            assert_eq!(governance.approvals_counted(&chain, &p, &approvals), expected, "{approvals:?}");
        };
        check(vec![], 0);
        check(vec![p.approve(&chain, &key(1))], 1);
        check(vec![p.approve(&chain, &key(1)), p.approve(&chain, &key(1))], 1);
        check(vec![p.approve(&chain, &key(1)), p.approve(&chain, &key(3))], 2);
        // An unlisted key, a signature for another chain, another nonce.
        check(vec![p.approve(&chain, &key(9))], 0);
        check(vec![p.approve(&other_chain, &key(1))], 0);
        let other_nonce = GovernanceProposal { nonce: 8, ..p.clone() };
        check(vec![other_nonce.approve(&chain, &key(2))], 0);
        // A listed key with another key's signature.
        let mut forged = p.approve(&chain, &key(9));
        forged.public_key = OriginKey::new(key(2).verifying_key());
        check(vec![forged, p.approve(&chain, &key(1))], 1);
    }

    #[test]
    fn configs_validate() {
        assert!(config(1, &[1]).validate().is_ok());
        assert!(config(3, &[1, 2, 3]).validate().is_ok());
        assert!(config(0, &[1]).validate().expect_err("zero").contains("threshold"));
        assert!(config(2, &[1]).validate().expect_err("k > m").contains("threshold"));
        assert!(config(1, &[]).validate().expect_err("none").contains("keys"));
        assert!(config(1, &[1, 1]).validate().expect_err("twice").contains("twice"));
    }

    #[test]
    fn proposals_round_trip_and_approve_once_per_key() {
        let chain = ChainId::new("remit-test-1").expect("valid");
        let mut signed = SignedProposal { chain_id: chain.clone(), proposal: proposal(), approvals: vec![] };
        signed.approve(&key(1));
        signed.approve(&key(1));
        signed.approve(&key(2));
        assert_eq!(signed.approvals.len(), 2);
        let json = serde_json::to_string(&signed).expect("serializes");
        assert_eq!(serde_json::from_str::<SignedProposal>(&json).expect("parses"), signed);
        let mut w = Writer::default();
        signed.proposal.encode(&mut w);
        encode_approvals(&mut w, &signed.approvals);
        let mut r = Reader::new(w.as_bytes(), "proposal");
        assert_eq!(GovernanceProposal::decode(&mut r).expect("decodes"), signed.proposal);
        assert_eq!(decode_approvals(&mut r).expect("decodes"), signed.approvals);
        r.finish().expect("all read");
    }
}
