//! The simulated bank: an account book for devnets and tests that pays by
//! crediting balances, kept on disk so that a restarted node still knows
//! every payout it made.
//!
//! The book is a JSON Lines file, `<data_dir>/simulated_bank.jsonl`
//! ([`SIMULATED_BANK_FILE`]), one [`BookEntry`] per line: `paid` (a credit,
//! with account, amount and currency), `refused` (with its ISO 20022 reason
//! code) or `duplicate` (a second payout asked for a UETR the book already
//! holds: nothing is credited, the first outcome is answered, and the request
//! is recorded so that a test can see it). An answer is given only once its
//! line is written and `fdatasync`ed; concurrent payouts share one write and
//! one sync (group commit). On open the file is replayed; a torn last line
//! (a crash during a write that was never answered) is cut, a damaged line
//! followed by good ones stops the open with the byte offset.
//!
//! Unbounded: the simulated book lives for a devnet or a test, not for
//! production.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use iso_currency::Currency;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use remit_settlement::Uetr;

use super::{
    traced_pay, traced_status, PayoutAdapter, PayoutConfigError, PayoutInstruction, PayoutResult, PayoutSection,
    PayoutStatus,
};

/// The book's file name inside the node's data directory.
pub const SIMULATED_BANK_FILE: &str = "simulated_bank.jsonl";

/// How a [`SimulatedBook`] treats accounts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimulatedPolicy {
    /// Accounts refused with `AC04`.
    pub closed_accounts: Vec<String>,
    /// Accounts refused with `AC06`.
    pub blocked_accounts: Vec<String>,
    /// Refuse unknown accounts with `AC01` instead of opening them.
    pub refuse_unknown: bool,
}

impl SimulatedPolicy {
    /// The simulated-book keys of a `[payout]` section; an account listed as
    /// both closed and blocked is refused.
    pub fn from_section(section: &PayoutSection) -> Result<Self, PayoutConfigError> {
        let closed: HashSet<&String> = section.closed_accounts.iter().collect();
        if let Some(both) = section.blocked_accounts.iter().find(|a| closed.contains(a)) {
            return Err(PayoutConfigError::new(
                "payout.blocked_accounts",
                format!("account {} is also in payout.closed_accounts", crate::remittance::party::mask_account(both)),
            ));
        }
        Ok(Self {
            closed_accounts: section.closed_accounts.clone(),
            blocked_accounts: section.blocked_accounts.clone(),
            refuse_unknown: section.refuse_unknown,
        })
    }
}

/// The standing of an account in a [`SimulatedBook`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccountState {
    /// Credits are accepted.
    Open,
    /// Refused with `AC04`.
    Closed,
    /// Refused with `AC06`.
    Blocked,
}

/// One line of the book file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum BookEntry {
    /// The beneficiary's account was credited.
    Paid {
        /// The payout's UETR (its idempotency key).
        uetr: Uetr,
        /// The book's reference of the credit.
        reference: String,
        /// The account credited.
        account: String,
        /// The amount credited (decimal string).
        amount: Decimal,
        /// ISO 4217 code of the amount.
        currency: Currency,
        /// When, in ms since the Unix epoch.
        at_ms: u64,
    },
    /// The payout was refused for good.
    Refused {
        /// The payout's UETR.
        uetr: Uetr,
        /// ISO 20022 return reason code.
        reason_code: String,
        /// Human-readable reason.
        reason: String,
        /// When, in ms since the Unix epoch.
        at_ms: u64,
    },
    /// A payout asked again for a UETR the book already held: refused to
    /// credit twice, answered with the first outcome.
    Duplicate {
        /// The payout's UETR.
        uetr: Uetr,
        /// When, in ms since the Unix epoch.
        at_ms: u64,
    },
}

impl BookEntry {
    /// The UETR of the entry.
    pub fn uetr(&self) -> Uetr {
        match self {
            BookEntry::Paid { uetr, .. } | BookEntry::Refused { uetr, .. } | BookEntry::Duplicate { uetr, .. } => *uetr,
        }
    }
}

/// A book file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum BookError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The book file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A line before the last does not decode.
    #[error("{path}: line at byte {offset}: {reason}")]
    Corrupt {
        /// The book file.
        path: PathBuf,
        /// Where the line starts.
        offset: u64,
        /// Why.
        reason: String,
    },
}

/// Reads the entries of a book file; also returns the length of its valid
/// part (a torn last line is not part of it).
pub fn read_entries(path: &Path) -> Result<(Vec<BookEntry>, u64), BookError> {
    let io = |source| BookError::Io { path: path.to_owned(), source };
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut file) => {
            file.read_to_end(&mut bytes).map_err(io)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(io(e)),
    }
    let mut entries = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let Some(end) = bytes[offset..].iter().position(|b| *b == b'\n').map(|at| offset + at) else {
            break; // a torn last line
        };
        match serde_json::from_slice::<BookEntry>(&bytes[offset..end]) {
            Ok(entry) => entries.push(entry),
            Err(e) => {
                let rest_is_torn =
                    bytes[end..].split(|b| *b == b'\n').all(|line| serde_json::from_slice::<BookEntry>(line).is_err());
                if rest_is_torn {
                    break;
                }
                return Err(BookError::Corrupt {
                    path: path.to_owned(),
                    offset: offset as u64,
                    reason: format!("{e}, and good lines follow"),
                });
            }
        }
        offset = end + 1;
    }
    Ok((entries, offset as u64))
}

#[derive(Debug)]
struct BookAccount {
    state: AccountState,
    balances: HashMap<Currency, Decimal>,
}

#[derive(Debug, Default)]
struct Book {
    accounts: HashMap<String, BookAccount>,
    /// The first outcome of every UETR paid or refused, with the sequence
    /// number of its line.
    outcomes: HashMap<Uetr, (PayoutResult, u64)>,
    paid: usize,
    duplicates: usize,
    /// Lines not yet written, and the sequence number of the last.
    unwritten: Vec<u8>,
    last_seq: u64,
    /// Why the file can no longer be written; every answer is then `Failed`.
    broken: Option<String>,
}

impl Book {
    fn apply(&mut self, entry: &BookEntry, seq: u64) {
        match entry {
            BookEntry::Paid { uetr, reference, account, amount, currency, .. } => {
                let balance = self
                    .accounts
                    .entry(account.clone())
                    .or_insert_with(|| BookAccount { state: AccountState::Open, balances: HashMap::new() })
                    .balances
                    .entry(*currency)
                    .or_insert(Decimal::ZERO);
                *balance = balance.checked_add(*amount).unwrap_or(*balance);
                self.paid += 1;
                self.outcomes.insert(*uetr, (PayoutResult::Paid { reference: reference.clone() }, seq));
            }
            BookEntry::Refused { uetr, reason_code, reason, .. } => {
                self.outcomes.insert(*uetr, (PayoutResult::refused(reason_code, reason), seq));
            }
            BookEntry::Duplicate { .. } => self.duplicates += 1,
        }
    }

    /// Queues `entry` for writing; returns its sequence number.
    fn append(&mut self, entry: &BookEntry) -> u64 {
        self.last_seq += 1;
        let seq = self.last_seq;
        match serde_json::to_vec(entry) {
            Ok(line) => {
                self.unwritten.extend_from_slice(&line);
                self.unwritten.push(b'\n');
            }
            Err(e) => self.broken = Some(format!("cannot encode a book entry: {e}")),
        }
        self.apply(entry, seq);
        seq
    }
}

/// The book file and how far it is durable.
struct Disk {
    path: PathBuf,
    file: Arc<File>,
    synced_seq: u64,
}

/// An account book that pays by crediting balances, kept in a file (or only
/// in memory, for unit tests). Accounts are keyed by the beneficiary's account
/// identifier (`beneficiary.account.value`).
pub struct SimulatedBook {
    refuse_unknown: bool,
    book: Mutex<Book>,
    disk: Option<tokio::sync::Mutex<Disk>>,
}

impl fmt::Debug for SimulatedBook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let book = self.lock();
        f.debug_struct("SimulatedBook")
            .field("refuse_unknown", &self.refuse_unknown)
            .field("accounts", &book.accounts.len())
            .field("payouts", &book.paid)
            .field("duplicates", &book.duplicates)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl SimulatedBook {
    /// An in-memory book holding the closed and blocked accounts of `policy`
    /// (forgotten when dropped: for unit tests).
    pub fn new(policy: &SimulatedPolicy) -> Self {
        let mut book = Book::default();
        let lists =
            [(&policy.closed_accounts, AccountState::Closed), (&policy.blocked_accounts, AccountState::Blocked)];
        for (accounts, state) in lists {
            for account in accounts {
                book.accounts.insert(account.clone(), BookAccount { state, balances: HashMap::new() });
            }
        }
        Self { refuse_unknown: policy.refuse_unknown, book: Mutex::new(book), disk: None }
    }

    /// The book kept in `path` (created if missing): replays it, cutting a
    /// torn last line.
    pub fn open(policy: &SimulatedPolicy, path: &Path) -> Result<Self, BookError> {
        let io = |source| BookError::Io { path: path.to_owned(), source };
        let (entries, valid) = read_entries(path)?;
        let existed = path.exists();
        let file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(path).map_err(io)?;
        let length = file.metadata().map_err(io)?.len();
        if length != valid {
            tracing::warn!(path = %path.display(), cut = length - valid, "simulated bank: torn last line cut");
            file.set_len(valid).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        if !existed {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
            }
        }
        // Appends go to the end whatever the cursor says.
        let file = OpenOptions::new().append(true).open(path).map_err(io)?;
        let mut this = Self::new(policy);
        {
            let book = this.book.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
            for (seq, entry) in entries.iter().enumerate() {
                book.apply(entry, seq as u64 + 1);
            }
            book.last_seq = entries.len() as u64;
        }
        let synced_seq = entries.len() as u64;
        this.disk = Some(tokio::sync::Mutex::new(Disk { path: path.to_owned(), file: Arc::new(file), synced_seq }));
        Ok(this)
    }

    /// Opens `account` (no effect if it exists), so that it is paid even when
    /// unknown accounts are refused. Not written to the file.
    pub fn open_account(&self, account: &str) {
        self.lock()
            .accounts
            .entry(account.to_owned())
            .or_insert_with(|| BookAccount { state: AccountState::Open, balances: HashMap::new() });
    }

    /// The standing of `account`, `None` if the book does not know it.
    pub fn account_state(&self, account: &str) -> Option<AccountState> {
        self.lock().accounts.get(account).map(|a| a.state)
    }

    /// The balance of `account` in `currency` (zero if unknown).
    pub fn balance(&self, account: &str, currency: Currency) -> Decimal {
        self.lock().accounts.get(account).and_then(|a| a.balances.get(&currency).copied()).unwrap_or(Decimal::ZERO)
    }

    /// The number of credits made (distinct UETRs paid).
    pub fn payouts(&self) -> usize {
        self.lock().paid
    }

    /// The number of payouts asked again for a UETR already held.
    pub fn duplicates(&self) -> usize {
        self.lock().duplicates
    }

    fn lock(&self) -> MutexGuard<'_, Book> {
        // A panic while holding the lock cannot leave the book half-updated:
        // every update below is a single insert after all checks.
        self.book.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides the outcome and queues its line; returns it with the line's
    /// sequence number.
    fn decide(&self, instruction: &PayoutInstruction) -> Result<(PayoutResult, u64), String> {
        let mut guard = self.lock();
        let book = &mut *guard;
        if let Some(reason) = &book.broken {
            return Err(reason.clone());
        }
        let at_ms = now_ms();
        if let Some((first, _)) = book.outcomes.get(&instruction.uetr) {
            tracing::warn!("uetr already held; refusing a second credit and answering the first outcome");
            let first = first.clone();
            let seq = book.append(&BookEntry::Duplicate { uetr: instruction.uetr, at_ms });
            return Ok((first, seq));
        }
        let account = instruction.beneficiary.account.value.as_str();
        let state = book.accounts.get(account).map(|a| a.state);
        let refusal = match state {
            Some(AccountState::Closed) => Some(("AC04", "account closed")),
            Some(AccountState::Blocked) => Some(("AC06", "account blocked")),
            None if self.refuse_unknown => Some(("AC01", "incorrect account number")),
            Some(AccountState::Open) | None => {
                let balance = book
                    .accounts
                    .get(account)
                    .and_then(|a| a.balances.get(&instruction.amount.currency()))
                    .copied()
                    .unwrap_or(Decimal::ZERO);
                balance.checked_add(instruction.amount.amount()).is_none().then_some(("AM09", "balance would overflow"))
            }
        };
        let entry = match refusal {
            Some((reason_code, reason)) => BookEntry::Refused {
                uetr: instruction.uetr,
                reason_code: reason_code.to_owned(),
                reason: reason.to_owned(),
                at_ms,
            },
            None => BookEntry::Paid {
                uetr: instruction.uetr,
                reference: simulated_reference(instruction.uetr),
                account: account.to_owned(),
                amount: instruction.amount.amount(),
                currency: instruction.amount.currency(),
                at_ms,
            },
        };
        let seq = book.append(&entry);
        let result = book.outcomes.get(&instruction.uetr).map(|(r, _)| r.clone()).expect("just recorded");
        Ok((result, seq))
    }

    /// Returns once the line `seq` is written and synced (group commit: the
    /// first waiter writes every line queued so far).
    async fn make_durable(&self, seq: u64) -> Result<(), String> {
        let Some(disk) = &self.disk else { return Ok(()) };
        let mut disk = disk.lock().await;
        if disk.synced_seq >= seq {
            return Ok(());
        }
        let (bytes, upto) = {
            let mut book = self.lock();
            if let Some(reason) = &book.broken {
                return Err(reason.clone());
            }
            (std::mem::take(&mut book.unwritten), book.last_seq)
        };
        let file = disk.file.clone();
        let written = tokio::task::spawn_blocking(move || (&*file).write_all(&bytes).and_then(|()| file.sync_data()))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match written {
            Ok(()) => {
                disk.synced_seq = upto;
                Ok(())
            }
            Err(e) => {
                let reason = format!("simulated bank {}: {e}", disk.path.display());
                tracing::error!(%reason, "simulated bank write failed; it answers failed until restarted");
                self.lock().broken = Some(reason.clone());
                Err(reason)
            }
        }
    }

    async fn pay_durably(&self, instruction: &PayoutInstruction) -> PayoutResult {
        let (result, seq) = match self.decide(instruction) {
            Ok(decided) => decided,
            Err(reason) => return PayoutResult::failed(reason),
        };
        match self.make_durable(seq).await {
            Ok(()) => result,
            Err(reason) => PayoutResult::failed(reason),
        }
    }

    async fn status_durably(&self, uetr: Uetr) -> PayoutStatus {
        let known = {
            let book = self.lock();
            if let Some(reason) = &book.broken {
                return PayoutStatus::Failed { reason: reason.clone() };
            }
            book.outcomes.get(&uetr).cloned()
        };
        let Some((result, seq)) = known else { return PayoutStatus::Unknown };
        match self.make_durable(seq).await {
            Ok(()) => result.into(),
            Err(reason) => PayoutStatus::Failed { reason },
        }
    }
}

/// `SIM-` and the first 8 hex digits of the UETR.
fn simulated_reference(uetr: Uetr) -> String {
    format!("SIM-{}", hex::encode(&uetr.as_bytes()[..4]))
}

#[async_trait::async_trait]
impl PayoutAdapter for SimulatedBook {
    async fn pay(&self, instruction: &PayoutInstruction) -> PayoutResult {
        traced_pay(self.name(), instruction, self.pay_durably(instruction)).await
    }

    async fn status(&self, uetr: Uetr) -> PayoutStatus {
        traced_status(self.name(), uetr, self.status_durably(uetr)).await
    }

    fn name(&self) -> &'static str {
        "simulated"
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[tokio::test]
    async fn simulated_book_applies_its_policy() {
        let open_book = SimulatedBook::new(&policy());
        let strict_book = SimulatedBook::new(&SimulatedPolicy { refuse_unknown: true, ..policy() });
        strict_book.open_account("KNOWN-1");
        let cases: [(&SimulatedBook, &str, Option<PayoutResult>); 6] = [
            (&open_book, "CLOSED-1", Some(refused("AC04", "account closed"))),
            (&open_book, "BLOCKED-1", Some(refused("AC06", "account blocked"))),
            (&open_book, "NEW-1", None),
            (&strict_book, "NEW-1", Some(refused("AC01", "incorrect account number"))),
            (&strict_book, "KNOWN-1", None),
            (&strict_book, "CLOSED-1", Some(refused("AC04", "account closed"))),
        ];
        for (book, account, expected) in cases {
            let order = instruction(account, "100.00 PHP");
            let result = book.pay(&order).await;
            match expected {
                Some(expected) => {
                    assert_eq!(result, expected, "{account}");
                    assert_eq!(book.balance(account, php()), Decimal::ZERO, "{account}");
                }
                None => {
                    let reference = format!("SIM-{}", &order.uetr.to_string()[..8]);
                    assert_eq!(result, PayoutResult::Paid { reference }, "{account}");
                    assert_eq!(book.balance(account, php()), dec("100.00"), "{account}");
                    assert_eq!(book.account_state(account), Some(AccountState::Open));
                }
            }
        }
        assert_eq!(open_book.payouts(), 1);
        assert_eq!(strict_book.payouts(), 1);
        assert_eq!(strict_book.account_state("NEW-1"), None, "a refused unknown account is not opened");
    }

    #[tokio::test]
    async fn simulated_book_pays_each_uetr_once() {
        let book = SimulatedBook::new(&policy());
        let order = instruction("PH-ACC-1", "5432.10 PHP");
        let first = book.pay(&order).await;
        let second = book.pay(&order).await;
        assert!(matches!(first, PayoutResult::Paid { .. }));
        assert_eq!(first, second);
        assert_eq!(book.balance("PH-ACC-1", php()), dec("5432.10"));
        assert_eq!(book.payouts(), 1);

        let other = instruction("PH-ACC-1", "5432.10 PHP");
        assert!(matches!(book.pay(&other).await, PayoutResult::Paid { .. }));
        assert_eq!(book.balance("PH-ACC-1", php()), dec("10864.20"));
        let usd = Currency::from_code("USD").expect("USD is ISO 4217");
        assert_eq!(book.balance("PH-ACC-1", usd), Decimal::ZERO);
        assert_eq!(book.payouts(), 2);

        let refused_order = instruction("CLOSED-1", "1.00 PHP");
        let first = book.pay(&refused_order).await;
        assert_eq!(book.pay(&refused_order).await, first);
        assert_eq!(book.payouts(), 2);
    }

    #[tokio::test]
    async fn the_book_survives_a_restart_and_refuses_a_second_credit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(SIMULATED_BANK_FILE);
        let paid = instruction("PH-ACC-1", "5432.10 PHP");
        let closed = instruction("CLOSED-1", "1.00 PHP");
        let never = Uetr::new_random();
        let first = {
            let book = SimulatedBook::open(&policy(), &path).expect("open a new book");
            assert_eq!(book.status(paid.uetr).await, PayoutStatus::Unknown);
            let first = book.pay(&paid).await;
            assert!(matches!(first, PayoutResult::Paid { .. }), "{first:?}");
            assert_eq!(book.pay(&closed).await, refused("AC04", "account closed"));
            first
        };
        let book = SimulatedBook::open(&policy(), &path).expect("reopen");
        assert_eq!(book.payouts(), 1);
        assert_eq!(book.balance("PH-ACC-1", php()), dec("5432.10"));
        assert_eq!(book.status(paid.uetr).await, PayoutStatus::from(first.clone()));
        assert_eq!(
            book.status(closed.uetr).await,
            PayoutStatus::Refused { reason_code: "AC04".to_owned(), reason: "account closed".to_owned() }
        );
        assert_eq!(book.status(never).await, PayoutStatus::Unknown);
        // Paid again after the restart: refused, recorded, answered as first.
        assert_eq!(book.pay(&paid).await, first);
        assert_eq!((book.payouts(), book.duplicates()), (1, 1));
        assert_eq!(book.balance("PH-ACC-1", php()), dec("5432.10"));
        drop(book);

        let (entries, _) = read_entries(&path).expect("read the book");
        let kinds: Vec<(&str, Uetr)> = entries
            .iter()
            .map(|e| match e {
                BookEntry::Paid { uetr, amount, currency, account, .. } => {
                    assert_eq!(
                        (amount.to_string().as_str(), currency.code(), account.as_str()),
                        ("5432.10", "PHP", "PH-ACC-1")
                    );
                    ("paid", *uetr)
                }
                BookEntry::Refused { uetr, reason_code, .. } => {
                    assert_eq!(reason_code, "AC04");
                    ("refused", *uetr)
                }
                BookEntry::Duplicate { uetr, .. } => ("duplicate", *uetr),
            })
            .collect();
        assert_eq!(kinds, vec![("paid", paid.uetr), ("refused", closed.uetr), ("duplicate", paid.uetr)]);
        let book = SimulatedBook::open(&policy(), &path).expect("reopen");
        assert_eq!((book.payouts(), book.duplicates()), (1, 1));
    }

    #[tokio::test]
    async fn a_torn_last_line_is_cut_and_a_damaged_middle_line_stops_the_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(SIMULATED_BANK_FILE);
        let (a, b) = (instruction("PH-ACC-1", "1.00 PHP"), instruction("PH-ACC-2", "2.00 PHP"));
        {
            let book = SimulatedBook::open(&policy(), &path).expect("open");
            book.pay(&a).await;
            book.pay(&b).await;
        }
        let good = std::fs::read(&path).expect("read");
        let mut torn = good.clone();
        torn.extend_from_slice(br#"{"entry":"paid","uetr":"#);
        std::fs::write(&path, &torn).expect("write");
        let book = SimulatedBook::open(&policy(), &path).expect("a torn tail is cut");
        assert_eq!(book.payouts(), 2);
        drop(book);
        assert_eq!(std::fs::read(&path).expect("read"), good, "exactly the torn line was cut");

        let mut damaged = good.clone();
        damaged[3] = b'#';
        std::fs::write(&path, &damaged).expect("write");
        match SimulatedBook::open(&policy(), &path) {
            Err(BookError::Corrupt { offset, .. }) => assert_eq!(offset, 0),
            other => panic!("expected a damaged book, got {other:?}"),
        }
        assert_eq!(std::fs::read(&path).expect("read"), damaged, "nothing was cut");
    }
}
