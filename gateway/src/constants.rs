//! Limits and timings of the gateway node, in one place.

/// Transfers pending at the leader before it cuts a block.
pub const BLOCK_TRANSFERS_TARGET: usize = 8_192;
/// Age of the oldest pending batch at which the leader cuts a block anyway.
/// Every block costs each validator about 8 ms of BLS work (sign a share,
/// decode peers' shares, combine, verify), whatever its size: at 50 ms that
/// was a third of two cores under remittance load (20,000/s), at 100 ms a
/// sixth, for about 50 ms more latency (BENCHMARKS.md).
pub const BLOCK_AGE_MS_MAX: u64 = 100;
/// Shortest time between two blocks cut early because the pipeline went
/// idle. At idle the previous cut is long past and a lone batch waits only
/// for [`crate::node::proposer::BLOCK_GATHER_MS`]; under load certification
/// finishes every 40 ms or so and, without this bound, every round would
/// cut a block of its own and pay its BLS work again.
pub const BLOCK_INTERVAL_MS_MIN: u64 = 50;
/// Transfers the leader holds pending before refusing more (backpressure).
pub const PENDING_TRANSFERS_MAX: usize = 262_144;
/// Proposals in flight (submitted to Raft, not yet applied) at once.
pub const PROPOSALS_IN_FLIGHT_MAX: usize = 4;
/// Largest gRPC message (a Raft append can carry several full blocks).
pub const GRPC_MESSAGE_BYTES_MAX: usize = 256 * 1024 * 1024;
/// HTTP/2 stream and connection flow-control window of the peer API (both
/// ends): a Raft append of several blocks flows without waiting for window
/// updates.
pub const HTTP2_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// Raft log entries (blocks) per append message.
pub const RAFT_APPEND_ENTRIES_MAX: u64 = 8;
/// Blocks returned by one GetBlocks call.
pub const GET_BLOCKS_LIMIT_MAX: u32 = 64;
/// Heights ahead of the local tip for which early shares are buffered.
pub const EARLY_SHARE_HEIGHTS_MAX: u64 = 1_024;
/// Heights below the newest certificate searched for a missing one after a
/// restart (certificates complete out of order, so a crash can leave holes).
pub const UNCERTIFIED_HOLE_HEIGHTS_MAX: u64 = 1_024;
/// How often uncertified blocks are re-announced and certificates fetched.
pub const CATCH_UP_INTERVAL_MS: u64 = 500;
/// Age of an uncertified block before its certificate is fetched from peers.
pub const CERTIFICATE_FETCH_AFTER_MS: u64 = 1_000;
/// Timeout of one peer RPC.
pub const PEER_RPC_TIMEOUT_MS: u64 = 10_000;
/// How long a gateway's long poll for the next certified block waits at a
/// validator before it is answered empty (below the RPC timeout).
pub const FOLLOW_WAIT_MS: u64 = 2_000;
/// Longest pause of a gateway between failed polls of the validators.
pub const FOLLOW_RETRY_MS_MAX: u64 = 1_000;
/// How often a gateway asks a validator who leads (to send it submissions first).
pub const FOLLOW_TIP_EVERY_MS: u64 = 1_000;
/// Payment-message envelopes one `DeliverPaymentMessages` call may carry
/// (larger deliveries are cut into calls of this size).
pub const PEER_DELIVER_MESSAGES_MAX: usize = 1_000;
/// Longest time the governance endpoint waits for its entry to be certified.
pub const GOVERNANCE_CERTIFY_WAIT_MS: u64 = 30_000;

const _: () = assert!(BLOCK_TRANSFERS_TARGET <= remit_settlement::constants::BLOCK_TRANSFERS_MAX);
const _: () = assert!(BLOCK_INTERVAL_MS_MIN <= BLOCK_AGE_MS_MAX);
const _: () = assert!(PENDING_TRANSFERS_MAX >= 2 * BLOCK_TRANSFERS_TARGET);
const _: () = assert!(FOLLOW_WAIT_MS < PEER_RPC_TIMEOUT_MS);
