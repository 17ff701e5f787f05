//! The applied-transfer index: one compact record per accepted transfer (its
//! height, parties, amount and payout state), and the encodings the store and
//! Raft snapshots persist it in.
//!
//! Parties are kept as participant *slots*: the position of the participant in
//! registration order, which is the same on every replica (participants are
//! never removed and state snapshots keep registration order).

use std::collections::HashMap;

use iso_currency::Currency;

use crate::codec::{DecodeError, Reader, Writer};
use crate::constants::BLOCK_TRANSFERS_MAX;
use crate::ids::{Height, ParticipantId, Uetr};
use crate::money::Money;
use crate::payout::PayoutState;

/// Domain tag of a block's accepted transfers (store key `uetr/<height>`).
pub const APPLIED_BLOCK_TAG: &[u8] = b"REMIT_APPLIED_TRANSFERS_V1";
/// Domain tag of a block's payout-state changes (store key `payout/<height>`).
pub const PAYOUT_BLOCK_TAG: &[u8] = b"REMIT_PAYOUT_STATES_V1";
/// Domain tag of the whole index (store key `state/uetr_snapshot`, Raft snapshots).
pub const APPLIED_INDEX_TAG: &[u8] = b"REMIT_APPLIED_INDEX_V1";

/// Encoded size of a record in a block value: UETR, two slots, currency, amount.
const BLOCK_RECORD_BYTES: usize = 16 + 4 + 4 + 3 + 8;
/// Smallest encoded record of the whole index: a block record plus height and
/// a one-byte (open) payout state.
const INDEX_RECORD_BYTES_MIN: usize = BLOCK_RECORD_BYTES + 8 + 1;

/// An accepted transfer as the ledger state remembers it: enough to refuse a
/// duplicate UETR, check a payout report and reverse a return, in 32 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppliedTransfer {
    /// Height of the block that accepted it.
    pub height: Height,
    /// The origin's slot (registration order).
    pub origin_slot: u32,
    /// The destination's slot (registration order).
    pub destination_slot: u32,
    /// The transfer's currency.
    pub currency: Currency,
    /// The transfer's amount in minor units of `currency`.
    pub amount_minor_units: u64,
    /// Where its payout stands.
    pub payout: PayoutState,
}

impl AppliedTransfer {
    /// Whether both records describe the same accepted transfer, whatever
    /// their payout states.
    pub fn same_transfer(&self, other: &AppliedTransfer) -> bool {
        AppliedTransfer { payout: other.payout, ..*self } == *other
    }

    fn encode_transfer(&self, w: &mut Writer) {
        w.u32(self.origin_slot);
        w.u32(self.destination_slot);
        w.currency(self.currency);
        w.u64(self.amount_minor_units);
    }

    fn decode_transfer(r: &mut Reader<'_>, height: Height) -> Result<Self, DecodeError> {
        Ok(Self {
            height,
            origin_slot: r.u32()?,
            destination_slot: r.u32()?,
            currency: r.currency()?,
            amount_minor_units: r.u64()?,
            payout: PayoutState::Open,
        })
    }
}

/// An accepted transfer with its parties by id, for callers outside the ledger.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedTransferView {
    /// Height of the block that accepted it.
    pub height: Height,
    /// The participant that owes the amount.
    pub origin: ParticipantId,
    /// The participant that is owed it and pays the beneficiary.
    pub destination: ParticipantId,
    /// The amount.
    pub amount: Money,
    /// Where its payout stands.
    pub payout: PayoutState,
}

/// Encodes a block's accepted transfers (heights and payout states are not
/// written: the height is the store key, and payouts are kept per block apart).
pub fn encode_block_transfers<'a>(records: impl ExactSizeIterator<Item = (&'a Uetr, &'a AppliedTransfer)>) -> Vec<u8> {
    let mut w = Writer::with_capacity(APPLIED_BLOCK_TAG.len() + 4 + records.len() * BLOCK_RECORD_BYTES);
    w.raw(APPLIED_BLOCK_TAG);
    w.len(records.len());
    for (uetr, record) in records {
        w.raw(uetr.as_bytes());
        record.encode_transfer(&mut w);
    }
    w.into_bytes()
}

/// Decodes a value written by [`encode_block_transfers`]: the records of the
/// block at `height`, with open payouts.
pub fn decode_block_transfers(bytes: &[u8], height: Height) -> Result<Vec<(Uetr, AppliedTransfer)>, DecodeError> {
    let mut r = Reader::new(bytes, "block's applied transfers");
    r.tag(APPLIED_BLOCK_TAG)?;
    let count = r.len(BLOCK_TRANSFERS_MAX)?;
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let uetr = Uetr::from_bytes(r.array()?).map_err(|e| r.error(e))?;
        records.push((uetr, AppliedTransfer::decode_transfer(&mut r, height)?));
    }
    r.finish()?;
    Ok(records)
}

/// Encodes the payout states a block set (never [`PayoutState::Open`]).
pub fn encode_block_payouts(changes: &[(Uetr, PayoutState)]) -> Vec<u8> {
    let mut w = Writer::with_capacity(PAYOUT_BLOCK_TAG.len() + 4 + changes.len() * 21);
    w.raw(PAYOUT_BLOCK_TAG);
    w.len(changes.len());
    for (uetr, state) in changes {
        debug_assert_ne!(*state, PayoutState::Open, "a report never reopens a payout");
        w.raw(uetr.as_bytes());
        state.encode(&mut w);
    }
    w.into_bytes()
}

/// Decodes a value written by [`encode_block_payouts`].
pub fn decode_block_payouts(bytes: &[u8]) -> Result<Vec<(Uetr, PayoutState)>, DecodeError> {
    let mut r = Reader::new(bytes, "block's payout states");
    r.tag(PAYOUT_BLOCK_TAG)?;
    let count = r.len(BLOCK_TRANSFERS_MAX)?;
    let mut changes = Vec::with_capacity(count);
    for _ in 0..count {
        let uetr = Uetr::from_bytes(r.array()?).map_err(|e| r.error(e))?;
        let state = PayoutState::decode(&mut r)?;
        if state == PayoutState::Open {
            return Err(r.error(format!("uetr {uetr}: a payout change to open")));
        }
        changes.push((uetr, state));
    }
    r.finish()?;
    Ok(changes)
}

/// Encodes the whole index: every record with its height and payout state,
/// sorted by UETR so that equal indexes have equal encodings whatever the
/// hash-map order they come from.
pub fn encode_index<'a>(records: impl ExactSizeIterator<Item = (&'a Uetr, &'a AppliedTransfer)>) -> Vec<u8> {
    let mut sorted: Vec<(&Uetr, &AppliedTransfer)> = records.collect();
    sorted.sort_unstable_by_key(|(uetr, _)| **uetr);
    let mut w = Writer::with_capacity(APPLIED_INDEX_TAG.len() + 8 + sorted.len() * (INDEX_RECORD_BYTES_MIN + 4));
    w.raw(APPLIED_INDEX_TAG);
    w.u64(sorted.len() as u64);
    for (uetr, record) in sorted {
        w.raw(uetr.as_bytes());
        w.u64(record.height.0);
        record.encode_transfer(&mut w);
        record.payout.encode(&mut w);
    }
    w.into_bytes()
}

/// Decodes a value written by [`encode_index`], refusing a UETR listed twice.
pub fn decode_index(bytes: &[u8]) -> Result<HashMap<Uetr, AppliedTransfer>, DecodeError> {
    let mut r = Reader::new(bytes, "applied-transfer index");
    r.tag(APPLIED_INDEX_TAG)?;
    let count = r.u64()?;
    // Guards the allocation below against a corrupt count.
    let remaining = bytes.len() - APPLIED_INDEX_TAG.len() - 8;
    if count > (remaining / INDEX_RECORD_BYTES_MIN) as u64 {
        return Err(r.error(format!("count {count} does not fit in {remaining} bytes")));
    }
    let mut index = HashMap::with_capacity(usize::try_from(count).expect("bounded by the value's length"));
    for _ in 0..count {
        let uetr = Uetr::from_bytes(r.array()?).map_err(|e| r.error(e))?;
        let height = Height(r.u64()?);
        let mut record = AppliedTransfer::decode_transfer(&mut r, height)?;
        record.payout = PayoutState::decode(&mut r)?;
        if index.insert(uetr, record).is_some() {
            return Err(r.error(format!("uetr {uetr} listed twice")));
        }
    }
    r.finish()?;
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payout::ReturnReason;

    fn uetr(n: u8) -> Uetr {
        let mut bytes = [n; 16];
        bytes[6] = 0x40;
        bytes[8] = 0x80;
        Uetr::from_bytes(bytes).expect("v4")
    }

    fn record(height: u64, payout: PayoutState) -> AppliedTransfer {
        AppliedTransfer {
            height: Height(height),
            origin_slot: 3,
            destination_slot: 1,
            currency: Currency::KWD,
            amount_minor_units: 12_345,
            payout,
        }
    }

    #[test]
    fn block_values_round_trip() {
        let records = [(uetr(1), record(7, PayoutState::Open)), (uetr(2), record(7, PayoutState::Open))];
        let bytes = encode_block_transfers(records.iter().map(|(u, r)| (u, r)));
        assert_eq!(bytes.len(), APPLIED_BLOCK_TAG.len() + 4 + 2 * BLOCK_RECORD_BYTES);
        assert_eq!(decode_block_transfers(&bytes, Height(7)).expect("decodes"), records);

        let changes = [
            (uetr(1), PayoutState::Completed),
            (uetr(2), PayoutState::Returned(ReturnReason::new("AC04").expect("valid"))),
        ];
        assert_eq!(decode_block_payouts(&encode_block_payouts(&changes)).expect("decodes"), changes);
    }

    #[test]
    fn index_round_trips_and_refuses_bad_values() {
        let reason = ReturnReason::new("MS03").expect("valid");
        let index: HashMap<Uetr, AppliedTransfer> = [
            (uetr(1), record(1, PayoutState::Open)),
            (uetr(2), record(2, PayoutState::Completed)),
            (uetr(3), record(3, PayoutState::Returned(reason))),
        ]
        .into_iter()
        .collect();
        let bytes = encode_index(index.iter());
        assert_eq!(decode_index(&bytes).expect("decodes"), index);

        let mut huge_count = bytes.clone();
        let at = APPLIED_INDEX_TAG.len();
        huge_count[at..at + 8].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(decode_index(&huge_count).is_err());
        assert!(decode_index(&bytes[..bytes.len() - 1]).is_err());

        let twice = [(uetr(1), record(1, PayoutState::Open)), (uetr(1), record(1, PayoutState::Open))];
        let err = decode_index(&encode_index(twice.iter().map(|(u, r)| (u, r)))).expect_err("listed twice");
        assert!(err.reason.contains("listed twice"), "{err}");
    }

    #[test]
    fn records_stay_compact() {
        assert!(std::mem::size_of::<AppliedTransfer>() <= 32);
    }
}
