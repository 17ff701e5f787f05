//! The parties of a remittance, IVMS101-style: a natural or legal person,
//! the account that is debited or credited, and optional address and
//! identification. Parties are customer data: they travel gateway to gateway
//! and never reach the shared ledger. `Debug` and [`Party::masked`] show only
//! initials and the last four characters of the account.

use std::fmt;

use remit_settlement::ids::CountryCode;
use serde::{Deserialize, Serialize};

/// Longest name component accepted (IVMS101 allows 100 characters).
pub const NAME_LEN_MAX: usize = 100;
/// Longest account identifier accepted (an IBAN is at most 34).
pub const ACCOUNT_LEN_MAX: usize = 64;
/// Longest free-text field (address lines, identification numbers).
pub const TEXT_LEN_MAX: usize = 140;

/// A party field that fails validation, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PartyError {
    /// Dotted path of the field, e.g. `beneficiary.account.value`.
    pub field: String,
    /// Why it was refused.
    pub reason: String,
}

impl PartyError {
    fn new(field: String, reason: impl Into<String>) -> Self {
        Self { field, reason: reason.into() }
    }

    /// The ISO 20022 status reason code that fits: `AC01` for a malformed
    /// account identifier, `BE01`-family `RR03`/`RR04` otherwise (missing or
    /// invalid name and address data).
    pub fn reason_code(&self) -> &'static str {
        if self.field.contains(".account") {
            "AC01"
        } else if self.field.contains("address") || self.field.contains("country") {
            "RR03"
        } else {
            "RR04"
        }
    }
}

/// How an account is identified.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountScheme {
    /// An IBAN (checked with its mod-97 check digits).
    Iban,
    /// A mobile wallet number in E.164 form, e.g. `+639171234567`.
    Msisdn,
    /// A domestic bank account number.
    AccountNumber,
    /// A wallet provider's own account id.
    Wallet,
}

/// An account at the originating or paying institution.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// The identification scheme.
    pub scheme: AccountScheme,
    /// The identifier.
    pub value: String,
}

impl fmt::Debug for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Account({:?} {})", self.scheme, mask_account(&self.value))
    }
}

/// A natural person's name (IVMS101 `NaturalPersonName`, legal name).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NaturalPersonName {
    /// Family name (IVMS101 `primaryIdentifier`).
    pub primary_name: String,
    /// Given names (IVMS101 `secondaryIdentifier`); may be empty.
    #[serde(default)]
    pub secondary_name: String,
}

/// A postal address (IVMS101 `GeographicAddress`, reduced).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Address {
    /// Street and number.
    #[serde(default)]
    pub street: String,
    /// Town or city.
    pub town: String,
    /// Postal code.
    #[serde(default)]
    pub postal_code: String,
    /// ISO 3166 alpha-2 country.
    pub country: String,
}

/// Who a party is.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Person {
    /// A natural person.
    NaturalPerson(NaturalPersonName),
    /// A legal person, by its legal name.
    LegalPerson {
        /// Registered legal name.
        name: String,
    },
}

/// The originator or the beneficiary of a remittance.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Party {
    /// The person.
    pub person: Person,
    /// The account debited (originator) or credited (beneficiary).
    pub account: Account,
    /// ISO 3166 alpha-2 country of residence (or registration).
    pub country: String,
    /// Postal address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Address>,
    /// Date of birth of a natural person, `YYYY-MM-DD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_of_birth: Option<String>,
    /// National identification number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub national_id: Option<String>,
}

impl fmt::Debug for NaturalPersonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NaturalPersonName({} {})", mask_name(&self.secondary_name), mask_name(&self.primary_name))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address(***, {})", self.country)
    }
}

impl fmt::Debug for Person {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Person::NaturalPerson(name) => name.fmt(f),
            Person::LegalPerson { name } => write!(f, "LegalPerson({})", mask_name(name)),
        }
    }
}

impl fmt::Debug for Party {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Initials only: `"Maria Santos"` -> `"M. S."`.
pub fn mask_name(name: &str) -> String {
    let initials: Vec<String> =
        name.split_whitespace().filter_map(|word| word.chars().next()).map(|c| format!("{c}.")).collect();
    if initials.is_empty() {
        "?".to_owned()
    } else {
        initials.join(" ")
    }
}

/// All but the last four characters hidden: `"PH12345678"` -> `"******5678"`
/// (at most half the characters are shown).
pub fn mask_account(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    let shown = (chars.len() / 2).min(4);
    let hidden = chars.len() - shown;
    let mut masked = "*".repeat(hidden);
    masked.extend(&chars[hidden..]);
    masked
}

fn check_text(field: String, value: &str, required: bool, max: usize) -> Result<(), PartyError> {
    if value.trim().is_empty() {
        return if required { Err(PartyError::new(field, "is required")) } else { Ok(()) };
    }
    if value.chars().count() > max {
        return Err(PartyError::new(field, format!("longer than {max} characters")));
    }
    if value.chars().any(char::is_control) {
        return Err(PartyError::new(field, "contains control characters"));
    }
    if value.trim() != value {
        return Err(PartyError::new(field, "has leading or trailing spaces"));
    }
    Ok(())
}

fn check_country(field: String, value: &str) -> Result<CountryCode, PartyError> {
    CountryCode::new(value).map_err(|e| PartyError::new(field, e.reason))
}

/// Mod-97 check of an IBAN (ISO 13616), spaces not allowed.
fn iban_valid(value: &str) -> bool {
    let bytes = value.as_bytes();
    if !(15..=34).contains(&bytes.len())
        || !bytes[..2].iter().all(u8::is_ascii_uppercase)
        || !bytes[2..4].iter().all(u8::is_ascii_digit)
        || !bytes.iter().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return false;
    }
    let rearranged = bytes[4..].iter().chain(&bytes[..4]);
    let mut remainder: u32 = 0;
    for b in rearranged {
        let value = if b.is_ascii_digit() { u32::from(b - b'0') } else { u32::from(b - b'A') + 10 };
        remainder = if value >= 10 { (remainder * 100 + value) % 97 } else { (remainder * 10 + value) % 97 };
    }
    remainder == 1
}

impl Account {
    /// Checks the identifier against its scheme.
    pub fn validate(&self, prefix: &str) -> Result<(), PartyError> {
        let field = format!("{prefix}.account.value");
        check_text(field.clone(), &self.value, true, ACCOUNT_LEN_MAX)?;
        let ok = match self.scheme {
            AccountScheme::Iban => iban_valid(&self.value),
            AccountScheme::Msisdn => {
                let digits = self.value.strip_prefix('+').unwrap_or("");
                (8..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
            }
            AccountScheme::AccountNumber | AccountScheme::Wallet => {
                self.value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
            }
        };
        if ok {
            Ok(())
        } else {
            let reason = match self.scheme {
                AccountScheme::Iban => "not a valid IBAN (format or check digits)",
                AccountScheme::Msisdn => "not an E.164 number such as +639171234567",
                _ => "only letters, digits, '-', '_', '.' and '/' are allowed",
            };
            Err(PartyError::new(field, reason))
        }
    }
}

impl Party {
    /// Validates every field; `prefix` is `originator` or `beneficiary` and
    /// starts the field path of any error.
    pub fn validate(&self, prefix: &str) -> Result<(), PartyError> {
        match &self.person {
            Person::NaturalPerson(name) => {
                check_text(format!("{prefix}.natural_person.primary_name"), &name.primary_name, true, NAME_LEN_MAX)?;
                check_text(
                    format!("{prefix}.natural_person.secondary_name"),
                    &name.secondary_name,
                    false,
                    NAME_LEN_MAX,
                )?;
            }
            Person::LegalPerson { name } => {
                check_text(format!("{prefix}.legal_person.name"), name, true, NAME_LEN_MAX)?;
            }
        }
        self.account.validate(prefix)?;
        check_country(format!("{prefix}.country"), &self.country)?;
        if let Some(address) = &self.address {
            check_text(format!("{prefix}.address.street"), &address.street, false, TEXT_LEN_MAX)?;
            check_text(format!("{prefix}.address.town"), &address.town, true, TEXT_LEN_MAX)?;
            check_text(format!("{prefix}.address.postal_code"), &address.postal_code, false, 16)?;
            check_country(format!("{prefix}.address.country"), &address.country)?;
        }
        if let Some(date) = &self.date_of_birth {
            if !date_valid(date) {
                return Err(PartyError::new(format!("{prefix}.date_of_birth"), "must be a date YYYY-MM-DD"));
            }
            if matches!(self.person, Person::LegalPerson { .. }) {
                return Err(PartyError::new(format!("{prefix}.date_of_birth"), "only for a natural person"));
            }
        }
        if let Some(id) = &self.national_id {
            check_text(format!("{prefix}.national_id"), id, true, 35)?;
        }
        Ok(())
    }

    /// The full name as one string (given names first for a natural person).
    pub fn full_name(&self) -> String {
        match &self.person {
            Person::NaturalPerson(name) if name.secondary_name.is_empty() => name.primary_name.clone(),
            Person::NaturalPerson(name) => format!("{} {}", name.secondary_name, name.primary_name),
            Person::LegalPerson { name } => name.clone(),
        }
    }

    /// A log-safe rendering: initials, scheme and the account's last digits.
    pub fn masked(&self) -> String {
        format!("Party({}, {:?}, {})", mask_name(&self.full_name()), self.account, self.country)
    }
}

fn date_valid(text: &str) -> bool {
    let parts: Vec<&str> = text.split('-').collect();
    let [year, month, day] = parts.as_slice() else { return false };
    if year.len() != 4 || month.len() != 2 || day.len() != 2 {
        return false;
    }
    let (Ok(year), Ok(month), Ok(day)) = (year.parse::<u32>(), month.parse::<u32>(), day.parse::<u32>()) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1900..=2200).contains(&year) && (1..=days).contains(&day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maria() -> Party {
        Party {
            person: Person::NaturalPerson(NaturalPersonName {
                primary_name: "Santos".into(),
                secondary_name: "Maria Clara".into(),
            }),
            account: Account { scheme: AccountScheme::Msisdn, value: "+639171234567".into() },
            country: "PH".into(),
            address: None,
            date_of_birth: Some("1990-02-28".into()),
            national_id: None,
        }
    }

    #[test]
    fn debug_and_masked_hide_names_and_accounts() {
        let party = maria();
        let shown = format!("{party:?}");
        assert!(!shown.contains("Santos") && !shown.contains("Maria") && !shown.contains("9171234"), "{shown}");
        assert!(shown.contains("M. C. S.") && shown.contains("4567"), "{shown}");
        assert_eq!(mask_account("AB"), "*B");
        assert_eq!(mask_account("GB82WEST12345698765432"), "******************5432");
    }

    #[test]
    fn errors_name_the_field() {
        type Mutation = Box<dyn Fn(&mut Party)>;
        let cases: Vec<(Mutation, &str)> = vec![
            (
                Box::new(|p| p.person = Person::NaturalPerson(NaturalPersonName::default_empty())),
                "originator.natural_person.primary_name",
            ),
            (Box::new(|p| p.account.value = "+12".into()), "originator.account.value"),
            (
                Box::new(|p| {
                    p.account = Account { scheme: AccountScheme::Iban, value: "GB82WEST12345698765433".into() }
                }),
                "originator.account.value",
            ),
            (Box::new(|p| p.country = "XX1".into()), "originator.country"),
            (Box::new(|p| p.date_of_birth = Some("1990-02-30".into())), "originator.date_of_birth"),
            (Box::new(|p| p.person = Person::LegalPerson { name: " Acme".into() }), "originator.legal_person.name"),
        ];
        for (mutate, field) in cases {
            let mut party = maria();
            mutate(&mut party);
            let error = party.validate("originator").expect_err(field);
            assert_eq!(error.field, field);
        }
        maria().validate("originator").expect("valid");
        let iban = Account { scheme: AccountScheme::Iban, value: "GB82WEST12345698765432".into() };
        iban.validate("beneficiary").expect("valid IBAN");
    }

    impl NaturalPersonName {
        fn default_empty() -> Self {
            Self { primary_name: String::new(), secondary_name: String::new() }
        }
    }
}
