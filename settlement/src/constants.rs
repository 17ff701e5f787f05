//! Every limit of the settlement core, in one place. Relations between them are
//! checked at compile time.

/// Largest amount of a single transfer or cap, in major units of its currency.
/// Positions may grow beyond it (they are sums), but stay far inside `Decimal`'s range.
pub const AMOUNT_MAJOR_UNITS_MAX: i64 = 1_000_000_000_000;

/// Largest number of transfers in one origin-signed batch (and of reports in
/// one destination-signed payout report batch).
pub const BATCH_TRANSFERS_MAX: usize = 16_384;

/// Largest number of entries (batches, registrations, caps) in one block.
pub const BLOCK_ENTRIES_MAX: usize = 4_096;

/// Largest number of transfers plus payout reports in one block, over all its batches.
pub const BLOCK_TRANSFERS_MAX: usize = 65_536;

/// Largest number of registered participants.
pub const PARTICIPANTS_MAX: usize = 4_096;

/// Largest number of settlement currencies one participant may hold.
pub const PARTICIPANT_CURRENCIES_MAX: usize = 16;

/// Longest participant id, in bytes.
pub const PARTICIPANT_ID_LEN_MAX: usize = 32;

/// Longest participant display name, in bytes (ISO 20022 Max140Text).
pub const PARTICIPANT_NAME_LEN_MAX: usize = 140;

/// Longest chain id, in bytes.
pub const CHAIN_ID_LEN_MAX: usize = 64;

/// Default of `replay.future_skew_ms` in `network.json`: how far a
/// transfer's `created_at` may lie after its block's timestamp.
pub const CREATED_AT_SKEW_MS_DEFAULT: u64 = 5 * 60 * 1000;

/// Default of `replay.horizon_ms` in `network.json`: how far a transfer's
/// `created_at` may lie before its block's timestamp. The duplicate index
/// remembers a UETR only while a transfer carrying it could still be accepted.
pub const CREATED_AT_HORIZON_MS_DEFAULT: u64 = 24 * 60 * 60 * 1000;

/// Bounds of `replay.horizon_ms`: at least a minute (retries must land
/// inside it), at most 30 days (the index holds every transfer inside it).
pub const CREATED_AT_HORIZON_MS_MIN: u64 = 60 * 1000;
/// See [`CREATED_AT_HORIZON_MS_MIN`].
pub const CREATED_AT_HORIZON_MS_MAX: u64 = 30 * 24 * 60 * 60 * 1000;

/// Upper bound of `replay.future_skew_ms` (clocks are kept within seconds).
pub const CREATED_AT_SKEW_MS_MAX: u64 = 60 * 60 * 1000;

/// Block heights per chapter of the duplicate index's hash tree: a block's
/// accepted transfers form a segment, segments are hashed into chapters, and
/// chapters into the index root, so a block rehashes only the segments and
/// chapters it touched.
pub const INDEX_CHAPTER_HEIGHTS: u64 = 1_024;

/// Largest number of governance keys.
pub const GOVERNANCE_KEYS_MAX: usize = 16;

/// Largest number of governance nonces the ledger remembers (one per
/// accepted governance action; actions are rare).
pub const GOVERNANCE_NONCES_MAX: usize = 1_000_000;

/// Largest validator set: threshold signing and share gossip cost grows with n.
pub const VALIDATORS_MAX: usize = 64;

/// Largest encoded block accepted by the decoder (guards allocation on bad input).
pub const BLOCK_ENCODED_BYTES_MAX: usize = 64 * 1024 * 1024;

const _: () = assert!(BATCH_TRANSFERS_MAX <= BLOCK_TRANSFERS_MAX);
const _: () = assert!(CREATED_AT_HORIZON_MS_MIN <= CREATED_AT_HORIZON_MS_DEFAULT);
const _: () = assert!(CREATED_AT_HORIZON_MS_DEFAULT <= CREATED_AT_HORIZON_MS_MAX);
const _: () = assert!(CREATED_AT_SKEW_MS_DEFAULT <= CREATED_AT_SKEW_MS_MAX);
const _: () = assert!(INDEX_CHAPTER_HEIGHTS > 0);
const _: () = assert!(BLOCK_TRANSFERS_MAX <= u32::MAX as usize);
const _: () = assert!(VALIDATORS_MAX <= PARTICIPANTS_MAX);
// The applied-transfer index names participants by u32 slot.
const _: () = assert!(PARTICIPANTS_MAX <= u32::MAX as usize);
// Amounts in minor units (up to 3 decimals used by any ISO currency we accept,
// and at most 4 in ISO 4217) must fit a u64 for the canonical encoding.
const _: () = assert!((AMOUNT_MAJOR_UNITS_MAX as u64).checked_mul(10_000).is_some());
