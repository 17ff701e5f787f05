//! Payment messages between gateways over the peer API: [`PeerExchange`] is
//! the engine's [`MessageExchange`] over [`Peers`], and the conversions
//! between the wire's `PaymentMessageEnvelope` and the domain's
//! [`InboxMessage`] live here, as does the mapping of a [`ReceiveError`] to
//! its gRPC status.

use remit_proto::v1::{FetchPaymentMessagesRequest, PaymentMessageEnvelope};
use remit_settlement::ids::{ParticipantId, Uetr};
use tonic::Status;

use super::peers::Peers;
use crate::remittance::journal::InboxMessage;
use crate::remittance::messages::{inbox_message, uetr_from_bytes, ReceiveError};
use crate::remittance::ports::{ExchangeError, FetchedMessages, MessageExchange, OutgoingMessage};

/// The wire form of a message.
pub fn envelope(message: &OutgoingMessage) -> PaymentMessageEnvelope {
    PaymentMessageEnvelope {
        uetr: message.uetr.as_bytes().to_vec(),
        origin: message.origin.to_string(),
        salt: message.salt.clone(),
        message: message.message.clone(),
    }
}

/// Checks an envelope from a peer and turns it into an inbox message; the
/// error names the field.
pub fn from_envelope(envelope: PaymentMessageEnvelope) -> Result<InboxMessage, String> {
    inbox_message(&envelope.uetr, envelope.origin, envelope.salt, envelope.message)
}

/// The gRPC status of a refused delivery or fetch.
pub fn receive_status(error: ReceiveError) -> Status {
    match error {
        ReceiveError::PermissionDenied(message) => Status::permission_denied(message),
        ReceiveError::InvalidArgument(message) => Status::invalid_argument(message),
        ReceiveError::Unavailable(message) => Status::unavailable(message),
    }
}

fn failed(status: &Status) -> ExchangeError {
    ExchangeError::Failed(format!("{:?}: {}", status.code(), status.message()))
}

/// The [`MessageExchange`] over signed peer calls.
#[derive(Clone, Debug)]
pub struct PeerExchange {
    peers: Peers,
    me: ParticipantId,
}

impl PeerExchange {
    /// Calls through `peers` as participant `me`.
    pub fn new(peers: Peers, me: ParticipantId) -> Self {
        Self { peers, me }
    }
}

#[async_trait::async_trait]
impl MessageExchange for PeerExchange {
    fn knows(&self, peer: &ParticipantId) -> bool {
        self.peers.participant(peer).is_some()
    }

    async fn push(&self, destination: &ParticipantId, messages: &[OutgoingMessage]) -> Result<u64, ExchangeError> {
        if !self.knows(destination) {
            return Err(ExchangeError::NoAddress(destination.clone()));
        }
        let envelopes: Vec<PaymentMessageEnvelope> = messages.iter().map(envelope).collect();
        self.peers.deliver_payment_messages(destination, envelopes).await.map_err(|s| failed(&s))
    }

    async fn fetch(&self, origin: &ParticipantId, uetrs: &[Uetr]) -> Result<FetchedMessages, ExchangeError> {
        if !self.knows(origin) {
            return Err(ExchangeError::NoAddress(origin.clone()));
        }
        let request = FetchPaymentMessagesRequest {
            uetrs: uetrs.iter().map(|uetr| uetr.as_bytes().to_vec()).collect(),
            destination: self.me.to_string(),
        };
        let reply = self.peers.fetch_payment_messages(origin, request).await.map_err(|s| failed(&s))?;
        Ok(FetchedMessages {
            // A malformed envelope is left out: the transfer is asked for again.
            messages: reply.messages.into_iter().filter_map(|e| from_envelope(e).ok()).collect(),
            unknown: reply.unknown.iter().filter_map(|bytes| uetr_from_bytes(bytes)).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_round_trips_and_a_bad_one_names_its_field() {
        let message = InboxMessage {
            uetr: Uetr::new_random(),
            origin: ParticipantId::new("gw-us").expect("id"),
            salt: vec![7; 32],
            message: b"{}".to_vec(),
            received_at_ms: 0,
        };
        assert_eq!(from_envelope(envelope(&message)), Ok(message.clone()));
        let mut bad = envelope(&message);
        bad.salt = vec![1; 3];
        assert_eq!(from_envelope(bad), Err("salt: expected 32 bytes".to_owned()));
        let mut bad = envelope(&message);
        bad.uetr = vec![0; 4];
        assert_eq!(from_envelope(bad), Err("uetr: expected a 16-byte UUID v4".to_owned()));
        let mut bad = envelope(&message);
        bad.message = vec![0xff, 0xfe];
        assert_eq!(from_envelope(bad), Err("message: must be UTF-8 JSON".to_owned()));
    }

    #[test]
    fn receive_errors_map_to_their_statuses() {
        let code = |e| receive_status(e).code();
        assert_eq!(code(ReceiveError::PermissionDenied("x".into())), tonic::Code::PermissionDenied);
        assert_eq!(code(ReceiveError::InvalidArgument("x".into())), tonic::Code::InvalidArgument);
        assert_eq!(code(ReceiveError::Unavailable("x".into())), tonic::Code::Unavailable);
    }
}
