//! The payment-message exchange as a peer sees it: messages pushed to this
//! gateway as destination, and messages of this gateway's remittances
//! fetched by their destination.

use remit_proto::v1::PaymentMessageEnvelope;
use remit_settlement::ids::{ParticipantId, Uetr};
use tonic::Status as GrpcStatus;

use super::engine::{now_ms, Engine, FETCH_MESSAGES_MAX, PAYMENT_MESSAGE_BYTES_MAX};
use super::journal::{InboxMessage, IncomingTransfer, JournalEvent};
use super::record::Role;

impl Engine {
    /// Stores payment messages pushed by the origin gateway `caller` (the
    /// authenticated caller; an envelope naming another origin refuses the
    /// whole call), durable before the reply, and pays out any certified
    /// transfer that was waiting.
    pub async fn receive_messages(
        &self,
        caller: &ParticipantId,
        envelopes: Vec<PaymentMessageEnvelope>,
    ) -> Result<usize, GrpcStatus> {
        let mut messages = Vec::with_capacity(envelopes.len());
        for (i, envelope) in envelopes.into_iter().enumerate() {
            if envelope.origin != caller.as_str() {
                return Err(GrpcStatus::permission_denied(format!("messages[{i}].origin: not the caller {caller}")));
            }
            messages.push(
                inbox_message(envelope, now_ms())
                    .map_err(|e| GrpcStatus::invalid_argument(format!("messages[{i}].{e}")))?,
            );
        }
        let count = messages.len();
        let events: Vec<JournalEvent> =
            messages.iter().cloned().map(|message| JournalEvent::Inbox { message }).collect();
        self.commit(events).await.map_err(|e| GrpcStatus::unavailable(e.to_string()))?;
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
    /// the certified destination of each); the others are left out.
    pub fn messages_for(
        &self,
        uetrs: &[Vec<u8>],
        caller: &ParticipantId,
    ) -> Result<(Vec<PaymentMessageEnvelope>, Vec<Vec<u8>>), GrpcStatus> {
        if uetrs.len() > FETCH_MESSAGES_MAX {
            return Err(GrpcStatus::invalid_argument(format!("uetrs: at most {FETCH_MESSAGES_MAX}")));
        }
        let mut parsed = Vec::with_capacity(uetrs.len());
        for (i, bytes) in uetrs.iter().enumerate() {
            parsed.push(
                uetr_from_bytes(bytes)
                    .ok_or_else(|| GrpcStatus::invalid_argument(format!("uetrs[{i}]: expected a 16-byte UUID v4")))?,
            );
        }
        let state = self.state();
        let mut messages = Vec::new();
        let mut unknown = Vec::new();
        for uetr in parsed {
            match state.remittances.get(&uetr) {
                Some(record) if record.role == Role::Origin && record.message.destination == *caller => {
                    messages.push(PaymentMessageEnvelope {
                        uetr: uetr.as_bytes().to_vec(),
                        origin: record.message.origin.to_string(),
                        salt: record.salt.to_vec(),
                        message: record.message.to_bytes(),
                    });
                }
                _ => unknown.push(uetr.as_bytes().to_vec()),
            }
        }
        Ok((messages, unknown))
    }
}

/// A UETR from its 16 bytes on the wire.
pub(super) fn uetr_from_bytes(bytes: &[u8]) -> Option<Uetr> {
    Uetr::from_bytes(bytes.try_into().ok()?).ok()
}

/// Checks an envelope from a peer and turns it into an inbox message
/// received at `now_ms`; the error names the field.
pub(super) fn inbox_message(envelope: PaymentMessageEnvelope, now_ms: u64) -> Result<InboxMessage, String> {
    let uetr = uetr_from_bytes(&envelope.uetr).ok_or("uetr: expected a 16-byte UUID v4")?;
    let origin = ParticipantId::new(envelope.origin).map_err(|e| format!("origin: {e}"))?;
    if envelope.salt.len() != 32 {
        return Err("salt: expected 32 bytes".into());
    }
    if envelope.message.is_empty() || envelope.message.len() > PAYMENT_MESSAGE_BYTES_MAX {
        return Err(format!("message: 1 to {PAYMENT_MESSAGE_BYTES_MAX} bytes"));
    }
    if std::str::from_utf8(&envelope.message).is_err() {
        return Err("message: must be UTF-8 JSON".into());
    }
    Ok(InboxMessage { uetr, origin, salt: envelope.salt, message: envelope.message, received_at_ms: now_ms })
}
