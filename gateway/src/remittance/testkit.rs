//! Fixtures shared by the remittance unit tests: parties, payment messages
//! and records with fixed, readable values.

use remit_settlement::ids::{ParticipantId, Uetr};
use remit_settlement::money::Money;

use super::journal::InboxMessage;
use super::party::{Account, AccountScheme, NaturalPersonName, Party, Person};
use super::record::{commitment, PaymentMessage, Remittance, Role, Status, StatusChange};

/// A natural person in the Philippines with an IBAN account.
pub(crate) fn party(primary: &str, account: &str) -> Party {
    Party {
        person: Person::NaturalPerson(NaturalPersonName { primary_name: primary.into(), secondary_name: "Ana".into() }),
        account: Account { scheme: AccountScheme::Iban, value: account.into() },
        country: "PH".into(),
        address: None,
        date_of_birth: None,
        national_id: None,
    }
}

/// A participant id.
pub(crate) fn participant(id: &str) -> ParticipantId {
    ParticipantId::new(id).expect("a valid participant id")
}

/// An amount in `currency`.
pub(crate) fn money(amount: &str, currency: &str) -> Money {
    Money::parse_parts(amount, currency, "amount").expect("a valid amount")
}

/// The payment message of a USD 100.00 settlement from `gw-us` to `gw-ph`.
pub(crate) fn payment_message(uetr: Uetr) -> PaymentMessage {
    PaymentMessage {
        uetr,
        origin: participant("gw-us"),
        destination: participant("gw-ph"),
        originator: party("Reyes", "US000111"),
        beneficiary: party("Santos", "PH000222"),
        purpose: "FAMI".into(),
        remittance_information: String::new(),
        send_amount: money("102.00", "USD"),
        receive_amount: money("5600.00", "PHP"),
        settlement_amount: money("100.00", "USD"),
        created_at_ms: 1_000,
    }
}

/// The message of `uetr` as it would sit in the destination's inbox (salt 9s).
pub(crate) fn incoming_message(uetr: Uetr) -> (InboxMessage, PaymentMessage) {
    let message = payment_message(uetr);
    let inbox = InboxMessage {
        uetr,
        origin: message.origin.clone(),
        salt: vec![9; 32],
        message: message.to_bytes(),
        received_at_ms: 1_000,
    };
    (inbox, message)
}

/// An origin remittance of client `c1`, received at 1,000 ms (salt 9s).
pub(crate) fn origin_record(uetr: Uetr) -> Remittance {
    let message = payment_message(uetr);
    let salt = [9; 32];
    Remittance {
        uetr,
        role: Role::Origin,
        client_id: "c1".into(),
        idempotency_key: format!("key-{uetr}"),
        request_fingerprint: "fp".into(),
        quote_id: None,
        terms: None,
        commitment: commitment(&salt, &message.to_bytes()),
        message,
        salt,
        status: Status::Received,
        history: vec![StatusChange::new(Status::Received, 1_000, None, "")],
        ledger: None,
        payout_reference: None,
        message_delivered: false,
    }
}
