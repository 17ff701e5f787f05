//! The archive: terminal remittances that left memory, in their own sled
//! database (`<gateway dir>/archive`), still readable by UETR, by client
//! and by idempotency key.
//!
//! Trees (keys and values; see docs/database.md):
//! - `archive/remittances`: UETR (16 bytes) -> the record (JSON, the
//!   journal's encoding of a `Remittance`).
//! - `archive/idempotency`: client id, `0x00`, idempotency key -> UETR
//!   (origin records only; kept forever, so that a retry with the key
//!   returns the archived remittance and never creates a second one).
//! - `archive/by_client`: client id, `0x00`, created-at ms (`u64` BE), UETR
//!   -> empty (a client's remittances in creation order).
//!
//! Records are written and flushed before the journal says `archived`:
//! a crash in between leaves the record in both places, and the next sweep
//! writes it again (the same bytes).

use std::path::{Path, PathBuf};

use remit_settlement::ids::Uetr;

use super::record::{Remittance, Role};

/// The archive's directory inside the gateway directory.
pub const GATEWAY_ARCHIVE_SUBDIR: &str = "archive";

/// An archive fault.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// sled failed.
    #[error("archive {path}: {source}")]
    Store {
        /// The archive directory.
        path: PathBuf,
        /// What failed.
        source: sled::Error,
    },
    /// A stored record does not decode.
    #[error("archive {path}: record {uetr}: {reason}")]
    Corrupt {
        /// The archive directory.
        path: PathBuf,
        /// Which record.
        uetr: String,
        /// Why.
        reason: String,
    },
}

/// Handle to the archive (cheap to clone).
#[derive(Clone)]
pub struct Archive {
    path: PathBuf,
    db: sled::Db,
    records: sled::Tree,
    idempotency: sled::Tree,
    by_client: sled::Tree,
}

impl std::fmt::Debug for Archive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Archive({})", self.path.display())
    }
}

impl Archive {
    /// Opens (or creates) the archive at `path`.
    pub fn open(path: &Path) -> Result<Self, ArchiveError> {
        let store = |source| ArchiveError::Store { path: path.to_owned(), source };
        let db = sled::Config::new().path(path).open().map_err(store)?;
        let records = db.open_tree("archive/remittances").map_err(store)?;
        let idempotency = db.open_tree("archive/idempotency").map_err(store)?;
        let by_client = db.open_tree("archive/by_client").map_err(store)?;
        Ok(Self { path: path.to_owned(), db, records, idempotency, by_client })
    }

    /// An archive that lives only as long as this handle (for an engine on
    /// a mock journal, whose state does not outlive the process either).
    pub fn temporary() -> Result<Self, ArchiveError> {
        let path = PathBuf::from("(temporary archive)");
        let store = |source| ArchiveError::Store { path: path.clone(), source };
        let db = sled::Config::new().temporary(true).open().map_err(store)?;
        let records = db.open_tree("archive/remittances").map_err(store)?;
        let idempotency = db.open_tree("archive/idempotency").map_err(store)?;
        let by_client = db.open_tree("archive/by_client").map_err(store)?;
        Ok(Self { path, db, records, idempotency, by_client })
    }

    fn store_error(&self, source: sled::Error) -> ArchiveError {
        ArchiveError::Store { path: self.path.clone(), source }
    }

    /// Writes `records` and makes them durable (blocking: call off the
    /// async workers).
    pub fn store(&self, records: &[Remittance]) -> Result<(), ArchiveError> {
        let mut rows = sled::Batch::default();
        let mut keys = sled::Batch::default();
        let mut index = sled::Batch::default();
        for record in records {
            let json = serde_json::to_vec(record).map_err(|e| ArchiveError::Corrupt {
                path: self.path.clone(),
                uetr: record.uetr.to_string(),
                reason: e.to_string(),
            })?;
            rows.insert(record.uetr.as_bytes().as_slice(), json);
            if record.role == Role::Origin {
                keys.insert(
                    idempotency_key(&record.client_id, &record.idempotency_key),
                    record.uetr.as_bytes().as_slice(),
                );
                index.insert(client_key(&record.client_id, record.created_at_ms(), &record.uetr), &[][..]);
            }
        }
        self.records.apply_batch(rows).map_err(|e| self.store_error(e))?;
        self.idempotency.apply_batch(keys).map_err(|e| self.store_error(e))?;
        self.by_client.apply_batch(index).map_err(|e| self.store_error(e))?;
        self.db.flush().map_err(|e| self.store_error(e))?;
        Ok(())
    }

    /// The archived record of `uetr`.
    pub fn get(&self, uetr: &Uetr) -> Result<Option<Remittance>, ArchiveError> {
        let Some(bytes) = self.records.get(uetr.as_bytes()).map_err(|e| self.store_error(e))? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| ArchiveError::Corrupt {
            path: self.path.clone(),
            uetr: uetr.to_string(),
            reason: e.to_string(),
        })
    }

    /// The UETR an archived remittance of `client` was created with
    /// idempotency key `key`.
    pub fn by_idempotency_key(&self, client: &str, key: &str) -> Result<Option<Uetr>, ArchiveError> {
        let Some(bytes) = self.idempotency.get(idempotency_key(client, key)).map_err(|e| self.store_error(e))? else {
            return Ok(None);
        };
        Ok(uetr_of(&bytes))
    }

    /// Up to `limit` (created-at ms, UETR) keys of `client`'s archived
    /// remittances from `from` (inclusive or not), in order.
    pub fn client_page(
        &self,
        client: &str,
        from: std::ops::Bound<(u64, Uetr)>,
        limit: usize,
    ) -> Result<Vec<(u64, Uetr)>, ArchiveError> {
        let prefix = client_prefix(client);
        let mut end = prefix.clone();
        // 0x01 sorts after every key with the 0x00 separator.
        *end.last_mut().expect("the prefix ends in its separator") = 0x01;
        let start = match from {
            std::ops::Bound::Included((at, uetr)) => std::ops::Bound::Included(client_key(client, at, &uetr)),
            std::ops::Bound::Excluded((at, uetr)) => std::ops::Bound::Excluded(client_key(client, at, &uetr)),
            std::ops::Bound::Unbounded => std::ops::Bound::Included(prefix.clone()),
        };
        let mut page = Vec::new();
        for entry in self.by_client.range::<Vec<u8>, _>((start, std::ops::Bound::Excluded(end))) {
            let (key, _) = entry.map_err(|e| self.store_error(e))?;
            let rest = &key[prefix.len()..];
            if rest.len() != 24 {
                continue;
            }
            let at = u64::from_be_bytes(rest[..8].try_into().expect("8 bytes"));
            let Some(uetr) = uetr_of(&rest[8..]) else { continue };
            page.push((at, uetr));
            if page.len() == limit {
                break;
            }
        }
        Ok(page)
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether it holds no record.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }
}

fn uetr_of(bytes: &[u8]) -> Option<Uetr> {
    Uetr::from_bytes(bytes.try_into().ok()?).ok()
}

fn idempotency_key(client: &str, key: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(client.len() + 1 + key.len());
    bytes.extend_from_slice(client.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(key.as_bytes());
    bytes
}

fn client_prefix(client: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(client.len() + 25);
    bytes.extend_from_slice(client.as_bytes());
    bytes.push(0);
    bytes
}

fn client_key(client: &str, at_ms: u64, uetr: &Uetr) -> Vec<u8> {
    let mut bytes = client_prefix(client);
    bytes.extend_from_slice(&at_ms.to_be_bytes());
    bytes.extend_from_slice(uetr.as_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remittance::record::Status;
    use crate::remittance::testkit::origin_record;

    #[test]
    fn archived_records_are_found_by_uetr_key_and_client_after_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(GATEWAY_ARCHIVE_SUBDIR);
        let (a, b) = (Uetr::new_random(), Uetr::new_random());
        let mut first = origin_record(a);
        first.status = Status::Completed;
        let mut second = origin_record(b);
        second.history[0].at_ms = 2_000;
        {
            let archive = Archive::open(&path).expect("open");
            archive.store(&[first.clone(), second.clone()]).expect("store");
        }
        let archive = Archive::open(&path).expect("reopen");
        assert_eq!(archive.get(&a).expect("get"), Some(first.clone()));
        assert_eq!(archive.get(&Uetr::new_random()).expect("get"), None);
        assert_eq!(archive.by_idempotency_key("c1", &first.idempotency_key).expect("key"), Some(a));
        assert_eq!(archive.by_idempotency_key("c2", &first.idempotency_key).expect("key"), None);
        let all = archive.client_page("c1", std::ops::Bound::Unbounded, 10).expect("page");
        assert_eq!(all, vec![(1_000, a), (2_000, b)]);
        let after = archive.client_page("c1", std::ops::Bound::Excluded((1_000, a)), 10).expect("page");
        assert_eq!(after, vec![(2_000, b)]);
        assert!(archive.client_page("c", std::ops::Bound::Unbounded, 10).expect("page").is_empty(), "a prefix of c1");
        assert_eq!(archive.len(), 2);
    }
}
