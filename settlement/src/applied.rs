//! The record the ledger keeps of each accepted transfer (its height,
//! parties, amount and payout state). The index of these records, bounded in
//! time and hashed, is [`crate::index`].
//!
//! Parties are kept as participant *slots*: the position of the participant in
//! registration order, which is the same on every replica (participants are
//! never removed and state snapshots keep registration order).

use iso_currency::Currency;

use crate::ids::{Height, ParticipantId};
use crate::money::Money;
use crate::payout::PayoutState;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_stay_compact() {
        assert!(std::mem::size_of::<AppliedTransfer>() <= 32);
    }
}
