//! Offline audit: re-check every hash link, Merkle root and certificate of a
//! chain, replay the state machine from genesis and compare state roots.
//! Needs only the blocks and the network definition (for the group key).

use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::block::{entries_root, Block, BlockHeader, BlockProposal, EntryResult};
use crate::certify::{Certificate, CertificationMessage};
use crate::hash::Digest32;
use crate::ids::Height;
use crate::ledger::{LedgerState, SignatureCheck};
use crate::network::NetworkConfig;
use crate::store::{LedgerStore, StoreError};

/// The first thing found wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("height {height}: {what}")]
pub struct AuditFailure {
    /// The first bad height (or the line's position when the height is unreadable).
    pub height: Height,
    /// What failed.
    pub what: String,
}

/// A chain that passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// Certified blocks verified.
    pub blocks: u64,
    /// Accepted transfers in those blocks.
    pub transfers: u64,
    /// Height and hash of the last certified block.
    pub tip: Option<(Height, Digest32)>,
    /// Blocks after the last certificate: hash-checked and replayed, but not
    /// yet final, so not counted.
    pub uncertified_tail: u64,
}

impl std::fmt::Display for AuditReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.tip {
            Some((height, hash)) => {
                write!(f, "verified {} blocks, {} transfers, tip {} {}", self.blocks, self.transfers, height, hash)
            }
            None => write!(f, "verified 0 blocks, 0 transfers, tip none"),
        }
    }
}

/// One block of an export (a line of the JSON Lines file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportedBlock {
    /// Block height.
    pub height: Height,
    /// Block hash, hex.
    pub hash: Digest32,
    /// The hashed header.
    pub header: BlockHeader,
    /// Entries.
    pub entries: Vec<crate::block::Entry>,
    /// Results.
    pub results: Vec<EntryResult>,
    /// Threshold certificate, hex, or null while not certified.
    pub certificate: Option<Certificate>,
}

impl ExportedBlock {
    /// Wraps a stored block.
    pub fn new(block: Block, certificate: Option<Certificate>) -> Self {
        Self {
            height: block.height(),
            hash: block.hash(),
            header: block.header,
            entries: block.entries,
            results: block.results,
            certificate,
        }
    }
}

/// Verifies a chain given in order from genesis. Every block except a trailing
/// uncertified run must carry a valid certificate.
pub fn verify_chain(
    network: &NetworkConfig,
    blocks: impl IntoIterator<Item = Result<ExportedBlock, AuditFailure>>,
) -> Result<AuditReport, AuditFailure> {
    let validators = network
        .validator_set()
        .map_err(|what| AuditFailure { height: Height::GENESIS, what: format!("network definition: {what}") })?;
    let group_key = validators.group_key();
    let mut state = LedgerState::new(network.ledger_params());
    let mut report = AuditReport { blocks: 0, transfers: 0, tip: None, uncertified_tail: 0 };
    let mut pending_transfers = 0u64;
    for item in blocks {
        let exported = item?;
        let expected_height = state.next_height();
        let fail = |what: String| AuditFailure { height: expected_height, what };
        if exported.height != expected_height || exported.header.height != expected_height {
            return Err(fail(format!("expected block {expected_height}, found block {}", exported.header.height)));
        }
        let header = &exported.header;
        if header.chain_id != network.chain_id {
            return Err(fail(format!("chain id {} is not the network's {}", header.chain_id, network.chain_id)));
        }
        let hash = header.hash();
        if hash != exported.hash {
            return Err(fail(format!("block hash {} does not match its header (recomputed {hash})", exported.hash)));
        }
        if header.prev_hash != state.tip_hash() {
            return Err(fail(format!(
                "previous hash {} does not link to block {} ({})",
                header.prev_hash,
                expected_height.0.saturating_sub(1),
                state.tip_hash()
            )));
        }
        let recomputed_entries_root = entries_root(&exported.entries);
        if recomputed_entries_root != header.entries_root {
            return Err(fail(format!(
                "entries root {} does not match the entries (recomputed {recomputed_entries_root})",
                header.entries_root
            )));
        }
        if expected_height == Height::GENESIS {
            let genesis = network.genesis_proposal();
            if genesis.entries != exported.entries || genesis.timestamp_ms != header.timestamp_ms {
                return Err(fail("genesis block does not match the network definition".into()));
            }
        }
        let proposal = BlockProposal {
            height: header.height,
            prev_hash: header.prev_hash,
            timestamp_ms: header.timestamp_ms,
            entries: exported.entries.clone(),
        };
        let replayed = state
            .apply(proposal, SignatureCheck::Verify)
            .map_err(|e| fail(format!("replay refused the block: {e}")))?;
        compare_replay(header, &exported.results, &replayed).map_err(fail)?;
        pending_transfers += u64::from(header.accepted_count);
        match &exported.certificate {
            Some(certificate) => {
                if report.uncertified_tail > 0 {
                    return Err(fail(format!(
                        "block {} has no certificate but a later block does",
                        expected_height.0 - report.uncertified_tail
                    )));
                }
                if !certificate.verify(&group_key, &CertificationMessage::for_header(header)) {
                    return Err(fail("certificate does not verify against the group public key".into()));
                }
                report.blocks = expected_height.0 + 1;
                report.transfers += pending_transfers;
                pending_transfers = 0;
                report.tip = Some((expected_height, hash));
            }
            None => report.uncertified_tail += 1,
        }
    }
    if report.tip.is_none() && report.uncertified_tail == 0 {
        return Err(AuditFailure { height: Height::GENESIS, what: "the chain is empty: no genesis block".into() });
    }
    if report.uncertified_tail > 0 && report.tip.is_none() && report.blocks == 0 {
        // Blocks exist but none is certified: nothing is final.
        return Err(AuditFailure { height: Height::GENESIS, what: "no block is certified".into() });
    }
    Ok(report)
}

fn compare_replay(header: &BlockHeader, results: &[EntryResult], replayed: &Block) -> Result<(), String> {
    let got = &replayed.header;
    let checks: [(&str, String, String); 6] = [
        ("timestamp", header.timestamp_ms.to_string(), got.timestamp_ms.to_string()),
        ("entry count", header.entry_count.to_string(), got.entry_count.to_string()),
        ("transfer count", header.transfer_count.to_string(), got.transfer_count.to_string()),
        ("accepted count", header.accepted_count.to_string(), got.accepted_count.to_string()),
        ("results root", header.results_root.to_hex(), got.results_root.to_hex()),
        ("state root", header.state_root.to_hex(), got.state_root.to_hex()),
    ];
    for (what, stored, replay) in checks {
        if stored != replay {
            return Err(format!("{what} mismatch: block says {stored}, replay gives {replay}"));
        }
    }
    if results != replayed.results.as_slice() {
        return Err("results differ from the replay".into());
    }
    if header.window != got.window || header.version != got.version {
        return Err("header fields differ from the replay".into());
    }
    Ok(())
}

/// Reads every stored block with its certificate, in height order.
pub fn stored_blocks<S: LedgerStore>(store: &S) -> Result<Vec<Result<ExportedBlock, AuditFailure>>, StoreError> {
    let Some(applied) = store.applied_height()? else {
        return Ok(Vec::new());
    };
    let mut blocks = Vec::with_capacity(applied.0 as usize + 1);
    for height in 0..=applied.0 {
        let height = Height(height);
        let item = match store.block_bytes(height)? {
            None => Err(AuditFailure { height, what: "block missing from the store".into() }),
            Some(bytes) => match Block::decode(&bytes) {
                Ok(block) => Ok(ExportedBlock::new(block, store.certificate(height)?)),
                Err(e) => Err(AuditFailure { height, what: e.to_string() }),
            },
        };
        blocks.push(item);
    }
    Ok(blocks)
}

/// Writes the stored chain as JSON Lines, one block per line. Returns the
/// number of blocks written.
pub fn export_chain<S: LedgerStore>(store: &S, out: &mut impl Write) -> Result<u64, StoreError> {
    let mut count = 0;
    let Some(applied) = store.applied_height()? else {
        return Ok(0);
    };
    for height in 0..=applied.0 {
        let height = Height(height);
        let block = store.block(height)?.ok_or_else(|| StoreError::Corrupt(format!("block {height} missing")))?;
        let line = serde_json::to_string(&ExportedBlock::new(block, store.certificate(height)?))
            .expect("blocks always serialize");
        writeln!(out, "{line}").map_err(|e| StoreError::Corrupt(format!("writing export: {e}")))?;
        count += 1;
    }
    Ok(count)
}

/// Parses a JSON Lines export lazily; a line that does not parse is reported
/// at the height it should have had.
pub fn read_export(input: impl BufRead) -> impl Iterator<Item = Result<ExportedBlock, AuditFailure>> {
    input.lines().enumerate().filter_map(|(i, line)| {
        let height = Height(i as u64);
        match line {
            Err(e) => Some(Err(AuditFailure { height, what: format!("cannot read line {}: {e}", i + 1) })),
            Ok(line) if line.trim().is_empty() => None,
            Ok(line) => Some(
                serde_json::from_str::<ExportedBlock>(&line)
                    .map_err(|e| AuditFailure { height, what: format!("line {} is not a valid block: {e}", i + 1) }),
            ),
        }
    })
}
