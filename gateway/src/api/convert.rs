//! Conversions between the wire messages of `remit.v1.Remittances` (also the
//! REST/JSON bodies) and the domain types. Every parse error names the field.

use iso_currency::Currency;
use remit_proto::v1 as pb;
use remit_settlement::ids::CountryCode;
use remit_settlement::money::{minor_unit_exponent, Money};
use remit_settlement::ParticipantId;
use rust_decimal::Decimal;

use crate::remittance::engine::{CreateInput, ErrorKind, ListFilter, RequestError};
use crate::remittance::party::{Account, AccountScheme, Address, NaturalPersonName, Party, Person};
use crate::remittance::quote::{FixedAmount, FixedSide, Quote, QuoteRequest};
use crate::remittance::record::{Remittance, Status, StatusChange};
use crate::remittance::CorridorKey;

/// An amount on the wire, with the currency's number of decimals.
pub fn amount(value: Decimal, currency: Currency) -> pb::Amount {
    let mut value = value;
    if let Ok(exponent) = minor_unit_exponent(currency, "amount") {
        value.rescale(u32::from(exponent));
    }
    pb::Amount { value: value.to_string(), currency: currency.code().to_owned() }
}

fn money(m: &Money) -> pb::Amount {
    amount(m.amount(), m.currency())
}

fn parse_money(value: Option<&pb::Amount>, field: &str) -> Result<Option<Money>, RequestError> {
    let Some(value) = value else { return Ok(None) };
    if value.value.is_empty() && value.currency.is_empty() {
        return Ok(None);
    }
    Money::parse_parts(&value.value, &value.currency, field)
        .map(Some)
        .map_err(|e| RequestError::invalid(e.field(), Some(e.reason_code()), strip_field(&e.to_string(), e.field())))
}

fn strip_field(message: &str, field: &str) -> String {
    message.strip_prefix(field).and_then(|m| m.strip_prefix(": ")).unwrap_or(message).to_owned()
}

fn country(text: &str, field: &str) -> Result<CountryCode, RequestError> {
    CountryCode::new(text).map_err(|e| RequestError::invalid(field, Some("RR03"), e.reason))
}

fn currency(text: &str, field: &str) -> Result<Currency, RequestError> {
    remit_settlement::money::parse_currency(text, field)
        .map_err(|e| RequestError::invalid(field, Some(e.reason_code()), strip_field(&e.to_string(), field)))
}

/// Parses a quote request.
pub fn quote_request(request: &pb::CreateQuoteRequest) -> Result<QuoteRequest, RequestError> {
    let corridor = CorridorKey {
        source_country: country(&request.source_country, "source_country")?,
        source_currency: currency(&request.source_currency, "source_currency")?,
        destination_country: country(&request.destination_country, "destination_country")?,
        destination_currency: currency(&request.destination_currency, "destination_currency")?,
    };
    let send = parse_money(request.send_amount.as_ref(), "send_amount")?;
    let receive = parse_money(request.receive_amount.as_ref(), "receive_amount")?;
    let amount = match (send, receive) {
        (Some(send), None) => FixedAmount::Send(send),
        (None, Some(receive)) => FixedAmount::Receive(receive),
        (Some(_), Some(_)) => {
            return Err(RequestError::invalid("send_amount", None, "give send_amount or receive_amount, not both"))
        }
        (None, None) => {
            return Err(RequestError::invalid("send_amount", Some("AM12"), "send_amount or receive_amount is required"))
        }
    };
    Ok(QuoteRequest { corridor, amount })
}

/// A quote on the wire.
pub fn quote(quote: &Quote, destination: Option<&ParticipantId>) -> pb::Quote {
    let terms = &quote.terms;
    let fees = &terms.fees;
    pb::Quote {
        quote_id: quote.id.to_string(),
        source_country: terms.corridor.source_country.to_string(),
        destination_country: terms.corridor.destination_country.to_string(),
        fixed_side: match terms.fixed_side {
            FixedSide::Send => "send".into(),
            FixedSide::Receive => "receive".into(),
        },
        send_amount: Some(money(&terms.send_amount)),
        principal: Some(money(&terms.principal)),
        fees: Some(pb::Fees {
            fixed: Some(amount(fees.fixed, fees.currency)),
            percent: Some(amount(fees.percent, fees.currency)),
            fx_margin: Some(amount(fees.fx_margin, fees.currency)),
            total: Some(amount(fees.total(), fees.currency)),
        }),
        mid_rate: terms.mid_rate.normalize().to_string(),
        customer_rate: terms.customer_rate.normalize().to_string(),
        receive_amount: Some(money(&terms.receive_amount)),
        settlement_amount: Some(money(&terms.settlement_amount)),
        destination_participant: destination.map(ToString::to_string).unwrap_or_default(),
        issued_at_ms: quote.issued_at_unix_ms,
        expires_at_ms: quote.expires_at_unix_ms,
    }
}

fn optional(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// Parses a party; `prefix` is `originator` or `beneficiary`.
pub fn party(value: Option<&pb::Party>, prefix: &str) -> Result<Party, RequestError> {
    let value = value.ok_or_else(|| RequestError::invalid(prefix, Some("RR04"), "is required"))?;
    let person = match (&value.natural_person, &value.legal_person) {
        (Some(name), None) => Person::NaturalPerson(NaturalPersonName {
            primary_name: name.primary_name.clone(),
            secondary_name: name.secondary_name.clone(),
        }),
        (None, Some(legal)) => Person::LegalPerson { name: legal.name.clone() },
        (Some(_), Some(_)) => {
            return Err(RequestError::invalid(
                &format!("{prefix}.natural_person"),
                Some("RR04"),
                "give natural_person or legal_person, not both",
            ))
        }
        (None, None) => {
            return Err(RequestError::invalid(
                &format!("{prefix}.natural_person"),
                Some("RR04"),
                "natural_person or legal_person is required",
            ))
        }
    };
    let account = value
        .account
        .as_ref()
        .ok_or_else(|| RequestError::invalid(&format!("{prefix}.account"), Some("AC01"), "is required"))?;
    let scheme = match account.scheme.as_str() {
        "iban" => AccountScheme::Iban,
        "msisdn" => AccountScheme::Msisdn,
        "account_number" => AccountScheme::AccountNumber,
        "wallet" => AccountScheme::Wallet,
        _ => {
            return Err(RequestError::invalid(
                &format!("{prefix}.account.scheme"),
                Some("AC01"),
                "must be iban, msisdn, account_number or wallet",
            ))
        }
    };
    Ok(Party {
        person,
        account: Account { scheme, value: account.value.clone() },
        country: value.country.clone(),
        address: value.address.as_ref().map(|a| Address {
            street: a.street.clone(),
            town: a.town.clone(),
            postal_code: a.postal_code.clone(),
            country: a.country.clone(),
        }),
        date_of_birth: optional(&value.date_of_birth),
        national_id: optional(&value.national_id),
    })
}

/// A party on the wire (for clients and tests building requests).
pub fn party_pb(party: &Party) -> pb::Party {
    let (natural_person, legal_person) = match &party.person {
        Person::NaturalPerson(name) => (
            Some(pb::NaturalPersonName {
                primary_name: name.primary_name.clone(),
                secondary_name: name.secondary_name.clone(),
            }),
            None,
        ),
        Person::LegalPerson { name } => (None, Some(pb::LegalPerson { name: name.clone() })),
    };
    let scheme = match party.account.scheme {
        AccountScheme::Iban => "iban",
        AccountScheme::Msisdn => "msisdn",
        AccountScheme::AccountNumber => "account_number",
        AccountScheme::Wallet => "wallet",
    };
    pb::Party {
        natural_person,
        legal_person,
        account: Some(pb::Account { scheme: scheme.into(), value: party.account.value.clone() }),
        country: party.country.clone(),
        address: party.address.as_ref().map(|a| pb::Address {
            street: a.street.clone(),
            town: a.town.clone(),
            postal_code: a.postal_code.clone(),
            country: a.country.clone(),
        }),
        date_of_birth: party.date_of_birth.clone().unwrap_or_default(),
        national_id: party.national_id.clone().unwrap_or_default(),
    }
}

/// Parses a create request.
pub fn create_input(request: &pb::CreateRemittanceRequest) -> Result<CreateInput, RequestError> {
    let price = match &request.quote {
        Some(quote) => Some(quote_request(quote).map_err(|mut e| {
            e.field = e.field.map(|f| format!("quote.{f}"));
            e.message = format!("quote.{}", e.message);
            e
        })?),
        None => None,
    };
    if request.quote_id.is_empty() && price.is_none() {
        return Err(RequestError::invalid("quote_id", None, "is required (or give quote)"));
    }
    Ok(CreateInput {
        quote_id: request.quote_id.clone(),
        price,
        originator: party(request.originator.as_ref(), "originator")?,
        beneficiary: party(request.beneficiary.as_ref(), "beneficiary")?,
        purpose: request.purpose.clone(),
        idempotency_key: request.idempotency_key.clone(),
        remittance_information: request.remittance_information.clone(),
    })
}

fn status_change(change: &StatusChange) -> pb::StatusChange {
    pb::StatusChange {
        status: change.status.as_str().to_owned(),
        iso_status: change.iso_status.clone(),
        reason_code: change.reason_code.clone().unwrap_or_default(),
        reason: change.reason.clone(),
        at_ms: change.at_ms,
    }
}

/// A remittance on the wire (and in webhook bodies). Parties are masked.
pub fn remittance_json(record: &Remittance) -> pb::Remittance {
    let last = record.last_change();
    let message = &record.message;
    let terms = record.terms.as_ref();
    pb::Remittance {
        uetr: record.uetr.to_string(),
        status: record.status.as_str().to_owned(),
        iso_status: record.status.iso_status().to_owned(),
        reason_code: last.reason_code.clone().unwrap_or_default(),
        reason: last.reason.clone(),
        quote_id: record.quote_id.clone().unwrap_or_default(),
        idempotency_key: record.idempotency_key.clone(),
        origin: message.origin.to_string(),
        destination: message.destination.to_string(),
        send_amount: Some(money(&message.send_amount)),
        receive_amount: Some(money(&message.receive_amount)),
        settlement_amount: Some(money(&message.settlement_amount)),
        fees: terms.map(|t| pb::Fees {
            fixed: Some(amount(t.fees.fixed, t.fees.currency)),
            percent: Some(amount(t.fees.percent, t.fees.currency)),
            fx_margin: Some(amount(t.fees.fx_margin, t.fees.currency)),
            total: Some(amount(t.fees.total(), t.fees.currency)),
        }),
        customer_rate: terms.map(|t| t.customer_rate.normalize().to_string()).unwrap_or_default(),
        mid_rate: terms.map(|t| t.mid_rate.normalize().to_string()).unwrap_or_default(),
        purpose: message.purpose.clone(),
        originator_masked: message.originator.masked(),
        beneficiary_masked: message.beneficiary.masked(),
        created_at_ms: record.created_at_ms(),
        updated_at_ms: last.at_ms,
        ledger_height: record.ledger.map_or(0, |l| l.height.0),
        payout_reference: record.payout_reference.clone().unwrap_or_default(),
        history: record.history.iter().map(status_change).collect(),
    }
}

/// Parses a list request.
pub fn list_filter(request: &pb::ListRemittancesRequest) -> Result<ListFilter, RequestError> {
    let mut statuses = Vec::new();
    for (i, name) in request.status.iter().enumerate() {
        for part in name.split(',').filter(|p| !p.is_empty()) {
            statuses.push(Status::parse(part).ok_or_else(|| {
                RequestError::invalid(
                    &format!("status[{i}]"),
                    None,
                    format!("unknown status {part:?}; one of {}", Status::ALL.map(Status::as_str).join(", ")),
                )
            })?);
        }
    }
    if request.page_size > 500 {
        return Err(RequestError::invalid("page_size", None, "at most 500"));
    }
    Ok(ListFilter {
        statuses,
        created_from_ms: (request.created_from_ms > 0).then_some(request.created_from_ms),
        created_to_ms: (request.created_to_ms > 0).then_some(request.created_to_ms),
        page_size: if request.page_size == 0 { 50 } else { request.page_size as usize },
        page_token: optional(&request.page_token),
    })
}

/// A refused item of a batch submit.
pub fn submit_error(error: &RequestError) -> pb::SubmitResult {
    pb::SubmitResult {
        remittance: None,
        error_code: error.kind.code_name().to_owned(),
        error_field: error.field.clone().unwrap_or_default(),
        error_reason_code: error.reason_code.clone().unwrap_or_default(),
        error_message: error.message.clone(),
    }
}

/// The gRPC status of a request error; the field and reason code travel in
/// the `remit-field` and `remit-reason-code` metadata.
pub fn grpc_status(error: &RequestError) -> tonic::Status {
    let code = match error.kind {
        ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorKind::NotFound => tonic::Code::NotFound,
        ErrorKind::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorKind::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorKind::PermissionDenied => tonic::Code::PermissionDenied,
        ErrorKind::ResourceExhausted => tonic::Code::ResourceExhausted,
        ErrorKind::Unavailable => tonic::Code::Unavailable,
        ErrorKind::Internal => tonic::Code::Internal,
    };
    let mut status = tonic::Status::new(code, error.message.clone());
    if let Some(field) = error.field.as_deref().and_then(|f| f.parse().ok()) {
        status.metadata_mut().insert("remit-field", field);
    }
    if let Some(reason) = error.reason_code.as_deref().and_then(|r| r.parse().ok()) {
        status.metadata_mut().insert("remit-reason-code", reason);
    }
    status
}

/// The HTTP status of a request error.
pub fn http_status(kind: ErrorKind) -> axum::http::StatusCode {
    use axum::http::StatusCode;
    match kind {
        ErrorKind::InvalidArgument => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::FailedPrecondition | ErrorKind::AlreadyExists => StatusCode::CONFLICT,
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        ErrorKind::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
