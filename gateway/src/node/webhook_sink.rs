//! The engine's [`EventSink`] over the [`WebhookDispatcher`]: each status
//! change becomes one webhook event carrying that status and its time, with
//! the remittance rendered as the wallet API's JSON.

use uuid::Uuid;

use crate::api::convert::remittance_json;
use crate::remittance::ports::EventSink;
use crate::remittance::record::{Remittance, StatusChange};
use crate::webhook::{WebhookDispatcher, WebhookEvent};

/// Webhook delivery of the engine's status changes.
#[derive(Clone)]
pub struct WebhookSink {
    dispatcher: WebhookDispatcher,
}

impl std::fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSink")
    }
}

impl WebhookSink {
    /// Enqueues on `dispatcher`.
    pub fn new(dispatcher: WebhookDispatcher) -> Self {
        Self { dispatcher }
    }
}

impl EventSink for WebhookSink {
    fn has_endpoint(&self, client: &str) -> bool {
        self.dispatcher.has_endpoint(client)
    }

    fn publish(&self, record: &Remittance, changes: &[StatusChange]) {
        if changes.is_empty() {
            return;
        }
        let data = serde_json::to_value(remittance_json(record)).unwrap_or_default();
        for change in changes {
            self.dispatcher.enqueue(WebhookEvent {
                event_id: Uuid::new_v4().to_string(),
                client_id: record.client_id.clone(),
                uetr: record.uetr,
                status: change.status,
                created_at_ms: change.at_ms,
                data: data.clone(),
            });
        }
    }
}
