//! The payment-message exchange as a peer sees it: messages pushed to this
//! gateway as destination, and messages of this gateway's remittances
//! fetched by their destination. The peer service (an adapter in
//! `crate::node`) converts the wire envelopes to [`InboxMessage`]s with
//! [`inbox_message`] and maps a [`ReceiveError`] to its transport status.

use remit_settlement::ids::{ParticipantId, Uetr};

use super::engine::{Engine, FETCH_MESSAGES_MAX, PAYMENT_MESSAGE_BYTES_MAX};
use super::journal::{InboxMessage, IncomingTransfer, JournalEvent};
use super::ports::OutgoingMessage;
use super::record::Role;

/// Why a peer's delivery or fetch was refused; the message names the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReceiveError {
    /// The caller may not do this (e.g. delivers a message of another origin).
    #[error("{0}")]
    PermissionDenied(String),
    /// The request is malformed or too large.
    #[error("{0}")]
    InvalidArgument(String),
    /// The messages could not be recorded; the caller should retry.
    #[error("{0}")]
    Unavailable(String),
}

impl Engine {
    /// Stores payment messages pushed by the origin gateway `caller` (the
    /// authenticated caller; a message naming another origin refuses the
    /// whole call), durable before the reply, and pays out any certified
    /// transfer that was waiting.
    pub async fn receive_messages(
        &self,
        caller: &ParticipantId,
        mut messages: Vec<InboxMessage>,
    ) -> Result<usize, ReceiveError> {
        if let Some((i, _)) = messages.iter().enumerate().find(|(_, m)| m.origin != *caller) {
            return Err(ReceiveError::PermissionDenied(format!("messages[{i}].origin: not the caller {caller}")));
        }
        let now = self.now_ms();
        for message in &mut messages {
            message.received_at_ms = now;
        }
        let count = messages.len();
        let events: Vec<JournalEvent> =
            messages.iter().cloned().map(|message| JournalEvent::Inbox { message }).collect();
        self.commit(events).await.map_err(|e| ReceiveError::Unavailable(e.to_string()))?;
        // Transfers certified before their message arrived.
        let waiting: Vec<(InboxMessage, IncomingTransfer)> = {
            let state = self.state();
            messages.into_iter().filter_map(|m| state.incoming.get(&m.uetr).cloned().map(|t| (m, t))).collect()
        };
        let accepted = waiting
            .into_iter()
            .filter_map(|(message, incoming)| self.verify_message(&incoming, &message).map(|record| (record, None)))
            .collect();
        self.accept_incoming(accepted).await;
        Ok(count)
    }

    /// The payment messages of this gateway's remittances among `uetrs`
    /// that go to `caller` (the authenticated caller, already checked to be
    /// the certified destination of each), and the UETRs left out.
    pub fn messages_for(
        &self,
        uetrs: &[Uetr],
        caller: &ParticipantId,
    ) -> Result<(Vec<OutgoingMessage>, Vec<Uetr>), ReceiveError> {
        if uetrs.len() > FETCH_MESSAGES_MAX {
            return Err(ReceiveError::InvalidArgument(format!("uetrs: at most {FETCH_MESSAGES_MAX}")));
        }
        let state = self.state();
        let mut messages = Vec::new();
        let mut unknown = Vec::new();
        for uetr in uetrs {
            match state.remittances.get(uetr) {
                Some(record) if record.role == Role::Origin && record.message.destination == *caller => {
                    messages.push(outgoing(record, None));
                }
                _ => unknown.push(*uetr),
            }
        }
        Ok((messages, unknown))
    }
}

/// The message of an origin record as sent to its destination (`bytes`:
/// the serialisation kept from creation, if any).
pub(super) fn outgoing(record: &super::record::Remittance, bytes: Option<Vec<u8>>) -> OutgoingMessage {
    InboxMessage {
        uetr: record.uetr,
        origin: record.message.origin.clone(),
        salt: record.salt.to_vec(),
        message: bytes.unwrap_or_else(|| record.message.to_bytes()),
        // Not on the wire: the receiver stamps its own time of receipt.
        received_at_ms: 0,
    }
}

/// A UETR from its 16 bytes on the wire.
pub fn uetr_from_bytes(bytes: &[u8]) -> Option<Uetr> {
    Uetr::from_bytes(bytes.try_into().ok()?).ok()
}

/// Checks the parts of a message from a peer and makes an inbox message of
/// them; the error names the field.
pub fn inbox_message(uetr: &[u8], origin: String, salt: Vec<u8>, message: Vec<u8>) -> Result<InboxMessage, String> {
    let uetr = uetr_from_bytes(uetr).ok_or("uetr: expected a 16-byte UUID v4")?;
    let origin = ParticipantId::new(origin).map_err(|e| format!("origin: {e}"))?;
    if salt.len() != 32 {
        return Err("salt: expected 32 bytes".into());
    }
    if message.is_empty() || message.len() > PAYMENT_MESSAGE_BYTES_MAX {
        return Err(format!("message: 1 to {PAYMENT_MESSAGE_BYTES_MAX} bytes"));
    }
    if std::str::from_utf8(&message).is_err() {
        return Err("message: must be UTF-8 JSON".into());
    }
    // Stamped with the time of receipt when the engine journals it.
    Ok(InboxMessage { uetr, origin, salt, message, received_at_ms: 0 })
}
