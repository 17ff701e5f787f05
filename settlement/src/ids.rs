//! Identifier newtypes: participants, transfers (UETR), heights, windows, countries.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::constants::{CHAIN_ID_LEN_MAX, PARTICIPANT_ID_LEN_MAX};

/// An identifier that failed validation: which kind and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: {reason}")]
pub struct IdError {
    /// What kind of identifier was being parsed.
    pub kind: &'static str,
    /// The rejected input (identifiers are not personal data).
    pub value: String,
    /// Why it was rejected.
    pub reason: &'static str,
}

/// A participant (bank or wallet operator) of the network: 1 to 32 ASCII
/// letters, digits, `-`, `_` or `.`, starting with a letter or digit.
///
/// Held inline (no allocation): every transfer names two participants, and
/// decoding, cloning and hashing them is on the hot path of every block.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ParticipantId {
    /// The id's bytes, zero-padded (valid ids contain no zero byte).
    bytes: [u8; PARTICIPANT_ID_LEN_MAX],
    len: u8,
}

impl ParticipantId {
    /// Validates and wraps a participant id.
    pub fn new(value: impl AsRef<str>) -> Result<Self, IdError> {
        let value = value.as_ref();
        let error = |reason| IdError { kind: "participant id", value: value.to_owned(), reason };
        if value.is_empty() {
            return Err(error("must not be empty"));
        }
        if value.len() > PARTICIPANT_ID_LEN_MAX {
            return Err(error("longer than 32 bytes"));
        }
        if !value.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(error("must start with a letter or digit"));
        }
        if !value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.') {
            return Err(error("only ASCII letters, digits, '-', '_' and '.' are allowed"));
        }
        let mut bytes = [0u8; PARTICIPANT_ID_LEN_MAX];
        bytes[..value.len()].copy_from_slice(value.as_bytes());
        Ok(Self { bytes, len: u8::try_from(value.len()).expect("at most 32 bytes") })
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).expect("validated as ASCII on construction")
    }
}

impl PartialOrd for ParticipantId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ParticipantId {
    /// The order of the ids as strings.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl fmt::Display for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ParticipantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ParticipantId({})", self.as_str())
    }
}

impl FromStr for ParticipantId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for ParticipantId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ParticipantId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        Self::new(value).map_err(serde::de::Error::custom)
    }
}

/// Unique End-to-end Transaction Reference (SWIFT gpi UETR): a UUID version 4.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Uetr(Uuid);

impl Uetr {
    /// The lowest value in sort order (all bits zero). Not a valid UETR: only
    /// a lower bound for ranges over ordered UETRs.
    pub const RANGE_MIN: Uetr = Uetr(Uuid::nil());

    /// A fresh random UETR.
    pub fn new_random() -> Self {
        Self(Uuid::new_v4())
    }

    /// Wraps a UUID, which must be an RFC 4122 version 4 UUID.
    pub fn from_uuid(uuid: Uuid) -> Result<Self, IdError> {
        if uuid.get_version_num() != 4 || uuid.get_variant() != uuid::Variant::RFC4122 {
            return Err(IdError {
                kind: "uetr",
                value: uuid.to_string(),
                reason: "must be an RFC 4122 version 4 UUID",
            });
        }
        Ok(Self(uuid))
    }

    /// Wraps 16 raw bytes, checking the version.
    pub fn from_bytes(bytes: [u8; 16]) -> Result<Self, IdError> {
        Self::from_uuid(Uuid::from_bytes(bytes))
    }

    /// The 16 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }

    /// The UUID.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for Uetr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl fmt::Debug for Uetr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uetr({})", self.0.hyphenated())
    }
}

impl FromStr for Uetr {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let uuid = Uuid::parse_str(s).map_err(|_| IdError {
            kind: "uetr",
            value: s.to_owned(),
            reason: "not a UUID (expected xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx)",
        })?;
        Self::from_uuid(uuid)
    }
}

impl Serialize for Uetr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Uetr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        value.parse().map_err(serde::de::Error::custom)
    }
}

/// Height of a block in the chain; the genesis block is height 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Height(pub u64);

impl Height {
    /// The genesis block's height.
    pub const GENESIS: Height = Height(0);

    /// The next height.
    pub fn next(self) -> Height {
        Height(self.0.checked_add(1).expect("heights never reach u64::MAX"))
    }
}

impl fmt::Display for Height {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A settlement window: positions accumulate in the open window until the
/// netting engine closes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WindowId(pub u64);

impl fmt::Display for WindowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An ISO 3166-1 alpha-2 country code such as `PH`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// Validates an upper-case ISO 3166-1 alpha-2 code.
    pub fn new(code: &str) -> Result<Self, IdError> {
        let error = |reason| IdError { kind: "country", value: code.to_owned(), reason };
        let bytes = code.as_bytes();
        if bytes.len() != 2 || !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err(error("must be two upper-case letters (ISO 3166-1 alpha-2)"));
        }
        if iso_country::Country::from_str(code).is_err() {
            return Err(error("not an ISO 3166-1 alpha-2 country code"));
        }
        Ok(Self([bytes[0], bytes[1]]))
    }

    /// The code as a string.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).expect("validated as ASCII on construction")
    }

    /// The two ASCII bytes.
    pub fn as_bytes(&self) -> [u8; 2] {
        self.0
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountryCode({})", self.as_str())
    }
}

impl Serialize for CountryCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CountryCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        Self::new(&value).map_err(serde::de::Error::custom)
    }
}

/// Identifies one network, so signatures made for one chain never verify on another.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ChainId(String);

impl ChainId {
    /// Validates a chain id: 1 to 64 ASCII graphic characters.
    pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
        let value = value.into();
        if value.is_empty() || value.len() > CHAIN_ID_LEN_MAX || !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(IdError {
                kind: "chain id",
                value,
                reason: "must be 1 to 64 printable ASCII characters without spaces",
            });
        }
        Ok(Self(value))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChainId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ChainId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = String::deserialize(deserializer)?;
        Self::new(value).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn participant_ids() {
        assert!(ParticipantId::new("gw-us").is_ok());
        assert!(ParticipantId::new("BANKUS33.NY_1").is_ok());
        for bad in ["", "-lead", "has space", "é", &"x".repeat(33)] {
            let err = ParticipantId::new(bad).expect_err(bad);
            assert_eq!(err.kind, "participant id");
        }
        let longest = "x".repeat(32);
        assert_eq!(ParticipantId::new(&longest).expect("32 bytes").as_str(), longest);
    }

    #[test]
    fn participant_ids_order_and_compare_as_strings() {
        let texts = ["gw-us", "gw-u", "gw-us2", "a", "Z9", "gw-ph", "0", "gw_us", "gw.us", &"z".repeat(32)];
        let mut ids: Vec<ParticipantId> = texts.iter().map(|t| ParticipantId::new(t).expect("valid")).collect();
        let mut strings: Vec<&str> = texts.to_vec();
        ids.sort();
        strings.sort();
        assert_eq!(ids.iter().map(ParticipantId::as_str).collect::<Vec<_>>(), strings);
        assert_ne!(ParticipantId::new("gw-u").expect("valid"), ParticipantId::new("gw-us").expect("valid"));
        assert_eq!(ParticipantId::new("gw-us").expect("valid"), "gw-us".parse().expect("valid"));
        assert_eq!(serde_json::to_string(&ParticipantId::new("gw-us").expect("valid")).expect("json"), "\"gw-us\"");
    }

    #[test]
    fn uetr_must_be_v4() {
        let good = "eb6305c9-1f7f-49de-aed0-16487c27b42d";
        assert_eq!(good.parse::<Uetr>().expect("v4").to_string(), good);
        let v1 = "c232ab00-9414-11ec-b3c8-9f6bdeced846";
        assert_eq!(v1.parse::<Uetr>().expect_err("v1").reason, "must be an RFC 4122 version 4 UUID");
        assert!("nope".parse::<Uetr>().is_err());
    }

    #[test]
    fn countries() {
        assert_eq!(CountryCode::new("PH").expect("PH").as_str(), "PH");
        for bad in ["ph", "XX", "PHL", ""] {
            assert!(CountryCode::new(bad).is_err(), "{bad}");
        }
    }
}
