//! Reading remittances: from memory, and from the archive for terminal ones
//! that left memory. A record archived is written to the archive before it
//! leaves memory, so a miss in memory followed by a look in the archive
//! never misses a record that exists.

use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::Arc;

use remit_settlement::ids::Uetr;
use tokio::sync::broadcast;
use tracing::warn;

use super::engine::Engine;
use super::errors::{ErrorKind, RequestError};
use super::record::{Remittance, Role};
use super::validate::ListFilter;

/// Archive keys read per step of a listing.
const ARCHIVE_PAGE: usize = 256;
/// Largest page of a listing.
pub const LIST_PAGE_MAX: usize = 500;

impl Engine {
    /// A client's remittance.
    pub fn get(&self, client: &str, uetr: &str) -> Result<Remittance, RequestError> {
        let uetr: Uetr =
            uetr.parse().map_err(|_| RequestError::invalid("uetr", None, "not a UETR (UUID version 4)"))?;
        let record = self.find(&uetr)?.ok_or_else(|| {
            RequestError::new(ErrorKind::NotFound, Some("uetr"), None, format!("no remittance {uetr}"))
        })?;
        if record.role != Role::Origin || record.client_id != client {
            return Err(RequestError::new(
                ErrorKind::PermissionDenied,
                Some("uetr"),
                None,
                format!("remittance {uetr} belongs to another client"),
            ));
        }
        Ok(record)
    }

    /// The record of `uetr`, in memory or archived.
    fn find(&self, uetr: &Uetr) -> Result<Option<Remittance>, RequestError> {
        if let Some(record) = self.state().remittances.get(uetr) {
            return Ok(Some((**record).clone()));
        }
        self.inner.archive.get(uetr).map_err(|e| RequestError::internal(e.to_string()))
    }

    /// The archived remittance created by a repeated request (same client
    /// and idempotency key, `uetr` found for it): the record when the request
    /// is the same, an error when it differs; `None` when not archived.
    pub(super) fn archived_repeat(
        &self,
        uetr: &Uetr,
        fingerprint: &str,
        key: &str,
    ) -> Option<Result<Remittance, RequestError>> {
        let record = match self.inner.archive.get(uetr) {
            Ok(record) => record?,
            Err(error) => return Some(Err(RequestError::internal(error.to_string()))),
        };
        if record.request_fingerprint != fingerprint {
            return Some(Err(RequestError::idempotency_key_reused(key)));
        }
        Some(Ok(record))
    }

    /// A page of a client's remittances, oldest first, in memory and
    /// archived.
    pub fn list(&self, client: &str, filter: &ListFilter) -> Result<(Vec<Remittance>, Option<String>), RequestError> {
        let after = match &filter.page_token {
            Some(token) if !token.is_empty() => {
                let parsed = token
                    .split_once('_')
                    .and_then(|(at, uetr)| Some((at.parse::<u64>().ok()?, uetr.parse::<Uetr>().ok()?)));
                Some(
                    parsed
                        .ok_or_else(|| RequestError::invalid("page_token", None, "not a token from a previous page"))?,
                )
            }
            _ => None,
        };
        let size = filter.page_size.clamp(1, LIST_PAGE_MAX);
        // Start at the page token or at `created_from_ms`, whichever is later.
        let from = filter.created_from_ms.map(|from| (from, Uetr::RANGE_MIN));
        let start = match (after, from) {
            (Some(after), Some(from)) if from > after => Bound::Included(from),
            (Some(after), _) => Bound::Excluded(after),
            (None, Some(from)) => Bound::Included(from),
            (None, None) => Bound::Unbounded,
        };
        let archive = &self.inner.archive;
        let internal = |e: super::archive::ArchiveError| RequestError::internal(e.to_string());
        let state = self.state();
        let mut memory = state
            .by_client
            .get(client)
            .into_iter()
            .flat_map(|index| index.range((start, Bound::Unbounded)))
            .copied()
            .peekable();
        let mut archived: VecDeque<(u64, Uetr)> = VecDeque::new();
        let mut archive_from = start;
        let mut archive_done = false;
        let mut page = Vec::new();
        let mut last = None;
        loop {
            if archived.is_empty() && !archive_done {
                let chunk = archive.client_page(client, archive_from, ARCHIVE_PAGE).map_err(internal)?;
                archive_done = chunk.len() < ARCHIVE_PAGE;
                if let Some(key) = chunk.last() {
                    archive_from = Bound::Excluded(*key);
                }
                archived.extend(chunk);
            }
            // Merge the two ordered key streams (a record archived by a
            // sweep cut short is in both: taken once).
            let key = match (memory.peek().copied(), archived.front().copied()) {
                (None, None) => break,
                (Some(m), None) => memory.next().map(|_| m),
                (None, Some(a)) => archived.pop_front().map(|_| a),
                (Some(m), Some(a)) => {
                    if m <= a {
                        memory.next();
                        if m == a {
                            archived.pop_front();
                        }
                        Some(m)
                    } else {
                        archived.pop_front().map(|_| a)
                    }
                }
            };
            let Some((at, uetr)) = key else { break };
            if filter.created_to_ms.is_some_and(|to| at >= to) {
                break;
            }
            last = Some((at, uetr));
            if filter.created_from_ms.is_some_and(|from| at < from) {
                continue;
            }
            let record = match state.remittances.get(&uetr) {
                Some(record) => Some((**record).clone()),
                None => archive.get(&uetr).map_err(internal)?,
            };
            let Some(record) = record else { continue };
            if !filter.statuses.is_empty() && !filter.statuses.contains(&record.status) {
                continue;
            }
            page.push(record);
            if page.len() == size {
                break;
            }
        }
        let more = page.len() == size
            && last.is_some_and(|key| {
                memory.peek().is_some()
                    || !archived.is_empty()
                    || (!archive_done
                        && archive
                            .client_page(client, Bound::Excluded(key), 1)
                            .map(|next| !next.is_empty())
                            .unwrap_or(false))
            });
        let token = if more { last.map(|(at, uetr)| format!("{at}_{uetr}")) } else { None };
        Ok((page, token))
    }

    /// The current state and a receiver of later changes (filter by uetr).
    /// An archived remittance is terminal: nothing more arrives for it.
    pub fn watch(
        &self,
        client: &str,
        uetr: &str,
    ) -> Result<(Remittance, broadcast::Receiver<Arc<Remittance>>), RequestError> {
        let receiver = self.inner.updates.subscribe();
        let record = self.get(client, uetr)?;
        Ok((record, receiver))
    }

    /// Any remittance this gateway holds, origin or destination side, in
    /// memory or archived.
    pub fn record(&self, uetr: &Uetr) -> Option<Remittance> {
        match self.find(uetr) {
            Ok(record) => record,
            Err(error) => {
                warn!(%uetr, %error, "archive read failed");
                None
            }
        }
    }
}
