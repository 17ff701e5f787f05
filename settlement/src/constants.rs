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

/// How far a transfer's `created_at` may lie after its block's timestamp.
pub const CREATED_AT_SKEW_MS_MAX: u64 = 5 * 60 * 1000;

/// Largest validator set: threshold signing and share gossip cost grows with n.
pub const VALIDATORS_MAX: usize = 64;

/// Largest encoded block accepted by the decoder (guards allocation on bad input).
pub const BLOCK_ENCODED_BYTES_MAX: usize = 64 * 1024 * 1024;

const _: () = assert!(BATCH_TRANSFERS_MAX <= BLOCK_TRANSFERS_MAX);
const _: () = assert!(BLOCK_TRANSFERS_MAX <= u32::MAX as usize);
const _: () = assert!(VALIDATORS_MAX <= PARTICIPANTS_MAX);
// The applied-transfer index names participants by u32 slot.
const _: () = assert!(PARTICIPANTS_MAX <= u32::MAX as usize);
// Amounts in minor units (up to 3 decimals used by any ISO currency we accept,
// and at most 4 in ISO 4217) must fit a u64 for the canonical encoding.
const _: () = assert!((AMOUNT_MAJOR_UNITS_MAX as u64).checked_mul(10_000).is_some());
