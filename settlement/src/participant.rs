//! Participants: the banks and wallet operators that originate and receive
//! transfers, with their settlement currencies, caps and keys.

use std::collections::BTreeMap;
use std::fmt;

use ed25519_dalek::VerifyingKey;
use iso_currency::Currency;
use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{DecodeError, Reader, Writer};
use crate::constants::{
    AMOUNT_MAJOR_UNITS_MAX, PARTICIPANT_CURRENCIES_MAX, PARTICIPANT_ID_LEN_MAX, PARTICIPANT_NAME_LEN_MAX,
    VALIDATORS_MAX,
};
use crate::ids::{CountryCode, ParticipantId};
use crate::money::{decimal_to_minor_units, minor_unit_exponent, minor_units_to_decimal};

/// Whether a participant may send and receive transfers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParticipantStatus {
    /// May send and receive.
    Active,
    /// Transfers from or to it are rejected (AG01).
    Suspended,
}

impl ParticipantStatus {
    pub(crate) fn code(self) -> u8 {
        match self {
            ParticipantStatus::Active => 1,
            ParticipantStatus::Suspended => 2,
        }
    }

    /// `active` or `suspended`.
    pub fn as_str(self) -> &'static str {
        match self {
            ParticipantStatus::Active => "active",
            ParticipantStatus::Suspended => "suspended",
        }
    }

    pub(crate) fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(ParticipantStatus::Active),
            2 => Some(ParticipantStatus::Suspended),
            _ => None,
        }
    }
}

/// An ed25519 public key with which a participant signs the batches it originates.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OriginKey(VerifyingKey);

impl OriginKey {
    /// Wraps a verifying key.
    pub fn new(key: VerifyingKey) -> Self {
        Self(key)
    }

    /// Parses 32 bytes, refusing points that are not valid keys.
    pub fn from_bytes(bytes: &[u8; 32]) -> Option<Self> {
        VerifyingKey::from_bytes(bytes).ok().map(Self)
    }

    /// The key.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }

    /// The 32 key bytes.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }
}

impl fmt::Debug for OriginKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OriginKey({})", hex::encode(self.to_bytes()))
    }
}

impl Serialize for OriginKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&hex::encode(self.to_bytes()))
    }
}

impl<'de> Deserialize<'de> for OriginKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&text, &mut bytes)
            .map_err(|_| serde::de::Error::custom("origin key: expected 64 hex characters"))?;
        Self::from_bytes(&bytes).ok_or_else(|| serde::de::Error::custom("origin key: not a valid ed25519 public key"))
    }
}

/// A participant as registered on the ledger. Institution data only: no
/// personal data of any customer is ever part of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Participant {
    /// Network-wide id.
    pub id: ParticipantId,
    /// Display name of the institution.
    pub name: String,
    /// Home country (ISO 3166-1 alpha-2).
    pub country: CountryCode,
    /// Currencies it settles in, sorted and unique.
    pub settlement_currencies: Vec<Currency>,
    /// Key that signs the batches it originates.
    pub origin_key: OriginKey,
    /// Its index in the validator set, when it runs a validator.
    pub validator_index: Option<u32>,
    /// Largest net debit position allowed per currency; a currency with no cap
    /// has a cap of zero (the participant cannot be a net sender in it).
    pub net_debit_caps: BTreeMap<Currency, Decimal>,
    /// Active or suspended.
    pub status: ParticipantStatus,
}

/// Why a participant record or cap is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ParticipantError {
    /// The field at fault.
    pub field: String,
    /// Why.
    pub reason: String,
}

impl ParticipantError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { field: field.into(), reason: reason.into() }
    }
}

/// Checks a net debit cap: non-negative, bounded, exact to the currency's minor unit.
pub fn validate_cap(currency: Currency, cap: Decimal, field: &str) -> Result<(), ParticipantError> {
    minor_unit_exponent(currency, field).map_err(|e| ParticipantError::new(field, e.to_string()))?;
    if cap < Decimal::ZERO {
        return Err(ParticipantError::new(field, format!("cap must not be negative, got {cap}")));
    }
    if cap > Decimal::from(AMOUNT_MAJOR_UNITS_MAX) {
        return Err(ParticipantError::new(field, format!("cap {cap} exceeds {AMOUNT_MAJOR_UNITS_MAX}")));
    }
    if decimal_to_minor_units(cap, currency).is_none() {
        return Err(ParticipantError::new(
            field,
            format!("{cap} has more decimal places than {} allows", currency.code()),
        ));
    }
    Ok(())
}

impl Participant {
    /// Checks every field; the first problem found is reported with its field name.
    pub fn validate(&self) -> Result<(), ParticipantError> {
        if self.name.trim().is_empty() || self.name.len() > PARTICIPANT_NAME_LEN_MAX {
            return Err(ParticipantError::new("name", "must be 1 to 140 bytes and not blank"));
        }
        if self.settlement_currencies.is_empty() || self.settlement_currencies.len() > PARTICIPANT_CURRENCIES_MAX {
            return Err(ParticipantError::new("settlement_currencies", "must list 1 to 16 currencies"));
        }
        if !self.settlement_currencies.windows(2).all(|w| w[0] < w[1]) {
            return Err(ParticipantError::new("settlement_currencies", "must be sorted and unique"));
        }
        for currency in &self.settlement_currencies {
            minor_unit_exponent(*currency, "settlement_currencies")
                .map_err(|e| ParticipantError::new("settlement_currencies", e.to_string()))?;
        }
        if let Some(index) = self.validator_index {
            if index as usize >= VALIDATORS_MAX {
                return Err(ParticipantError::new("validator_index", format!("must be below {VALIDATORS_MAX}")));
            }
        }
        for (currency, cap) in &self.net_debit_caps {
            let field = format!("net_debit_caps.{}", currency.code());
            if !self.settles_in(*currency) {
                return Err(ParticipantError::new(field, "cap for a currency the participant does not settle in"));
            }
            validate_cap(*currency, *cap, &field)?;
        }
        Ok(())
    }

    /// Whether `currency` is one of its settlement currencies.
    pub fn settles_in(&self, currency: Currency) -> bool {
        self.settlement_currencies.contains(&currency)
    }

    /// The net debit cap in `currency` (zero when none is set).
    pub fn net_debit_cap(&self, currency: Currency) -> Decimal {
        self.net_debit_caps.get(&currency).copied().unwrap_or(Decimal::ZERO)
    }

    /// Canonical encoding. Never fails: an invalid record still encodes
    /// (and fails to decode), so hashing or signing one cannot stop a node.
    pub fn encode(&self, w: &mut Writer) {
        w.str(self.id.as_str());
        w.str(&self.name);
        w.raw(&self.country.as_bytes());
        w.len(self.settlement_currencies.len());
        for currency in &self.settlement_currencies {
            w.currency(*currency);
        }
        w.raw(&self.origin_key.to_bytes());
        w.option(self.validator_index.as_ref(), |w, index| w.u32(*index));
        w.len(self.net_debit_caps.len());
        for (currency, cap) in &self.net_debit_caps {
            w.currency(*currency);
            // A cap that is not exact to minor units (an invalid record a
            // client proposed) is written as -1: decoding refuses it, and the
            // state machine refuses the record before it reaches a block.
            w.i128(decimal_to_minor_units(*cap, *currency).unwrap_or(-1));
        }
        w.u8(self.status.code());
    }

    /// Decodes and validates a record written by [`Participant::encode`].
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let id = ParticipantId::new(r.str(PARTICIPANT_ID_LEN_MAX)?).map_err(|e| r.error(e))?;
        let name = r.str(PARTICIPANT_NAME_LEN_MAX)?.to_owned();
        let country = r.array::<2>()?;
        let country = std::str::from_utf8(&country)
            .map_err(|_| r.error("country is not ASCII"))
            .and_then(|c| CountryCode::new(c).map_err(|e| r.error(e)))?;
        let count = r.len(PARTICIPANT_CURRENCIES_MAX)?;
        let mut settlement_currencies = Vec::with_capacity(count);
        for _ in 0..count {
            settlement_currencies.push(r.currency()?);
        }
        let origin_key = OriginKey::from_bytes(&r.array()?).ok_or_else(|| r.error("invalid origin key"))?;
        let validator_index = r.option(|r| r.u32())?;
        let count = r.len(PARTICIPANT_CURRENCIES_MAX)?;
        let mut net_debit_caps = BTreeMap::new();
        for _ in 0..count {
            let currency = r.currency()?;
            if currency.exponent().is_none() {
                return Err(r.error(format!("cap currency {} has no minor unit", currency.code())));
            }
            let cap = minor_units_to_decimal(r.i128()?, currency).ok_or_else(|| r.error("cap out of range"))?;
            if net_debit_caps.last_key_value().is_some_and(|(last, _)| *last >= currency) {
                return Err(r.error("caps must be sorted by currency and unique"));
            }
            net_debit_caps.insert(currency, cap);
        }
        let status = ParticipantStatus::from_code(r.u8()?).ok_or_else(|| r.error("bad participant status"))?;
        let participant = Participant {
            id,
            name,
            country,
            settlement_currencies,
            origin_key,
            validator_index,
            net_debit_caps,
            status,
        };
        participant.validate().map_err(|e| r.error(e))?;
        Ok(participant)
    }
}
