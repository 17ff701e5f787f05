//! A node's chain: the ledger state, its durable store and the validator set,
//! kept consistent. Opening re-checks the stored tip (hash chain, state root,
//! certificate) before anything is served.

use tracing::{info, info_span};

use crate::block::{Block, BlockProposal};
use crate::certify::{Certificate, CertificationMessage, ValidatorSet};
use crate::hash::Digest32;
use crate::ids::Height;
use crate::ledger::{BlockError, LedgerState, SignatureCheck};
use crate::network::NetworkConfig;
use crate::payout::PayoutState;
use crate::store::{LedgerStore, StoreError};

/// Why a chain could not be opened or extended.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// Storage failed; the node must stop.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The proposal cannot be applied.
    #[error("block rejected: {0}")]
    Block(#[from] BlockError),
    /// The stored chain fails its consistency checks.
    #[error("stored chain inconsistent at height {height}: {reason}")]
    Inconsistent {
        /// The height checked.
        height: Height,
        /// What failed.
        reason: String,
    },
    /// The network definition is missing or invalid.
    #[error("network definition: {0}")]
    Network(String),
    /// A certificate does not verify.
    #[error("certificate for height {0} does not verify against the group key")]
    BadCertificate(Height),
}

/// Ledger state plus durable store plus validator set.
#[derive(Debug)]
pub struct Chain<S: LedgerStore> {
    store: S,
    state: LedgerState,
    network: NetworkConfig,
    validators: ValidatorSet,
    certified_height: Option<Height>,
}

impl<S: LedgerStore> Chain<S> {
    /// Opens the chain in `store`, initialising it for `network` when empty.
    /// An existing store must belong to the same network.
    pub fn open(store: S, network: Option<&NetworkConfig>) -> Result<Self, ChainError> {
        let network = match (store.network_json()?, network) {
            (Some(stored), given) => {
                let stored = NetworkConfig::from_json(&stored).map_err(ChainError::Network)?;
                if let Some(given) = given {
                    if given.chain_id != stored.chain_id || given.validators != stored.validators {
                        return Err(ChainError::Network(format!(
                            "store belongs to chain {}, not {}",
                            stored.chain_id, given.chain_id
                        )));
                    }
                }
                stored
            }
            (None, Some(given)) => {
                given.validate().map_err(ChainError::Network)?;
                store.init_network(&given.to_json())?;
                given.clone()
            }
            (None, None) => return Err(ChainError::Network("store is empty and no network.json was given".into())),
        };
        let validators = network.validator_set().map_err(ChainError::Network)?;
        let state = match store.load_state()? {
            Some(state) => state,
            None => LedgerState::new(network.chain_id.clone()),
        };
        let mut chain = Self { store, state, network, validators, certified_height: None };
        chain.check_tip()?;
        Ok(chain)
    }

    /// Re-checks the stored tip: snapshot height, hash, state root and
    /// timestamp, the link to the previous block, and the newest certificate.
    fn check_tip(&mut self) -> Result<(), ChainError> {
        let applied = self.store.applied_height()?;
        if applied != self.state.tip().map(|(h, _)| h) {
            return Err(ChainError::Inconsistent {
                height: applied.unwrap_or(Height::GENESIS),
                reason: "applied height and state snapshot disagree".into(),
            });
        }
        let Some((height, hash)) = self.state.tip() else {
            return Ok(());
        };
        let inconsistent = |reason: &str| ChainError::Inconsistent { height, reason: reason.to_owned() };
        let tip = self.store.block(height)?.ok_or_else(|| inconsistent("tip block missing"))?;
        if tip.hash() != hash {
            return Err(inconsistent("tip block hash differs from the state snapshot"));
        }
        if tip.header.state_root != self.state.state_root() {
            return Err(inconsistent("state snapshot does not match the tip's state root"));
        }
        // The last timestamp is outside the state root, so it is checked on its
        // own: a wrong one would let the next block go back in time or refuse
        // every honest proposal.
        if tip.header.timestamp_ms != self.state.last_timestamp_ms() {
            return Err(inconsistent("state snapshot timestamp differs from the tip's"));
        }
        if self.state.applied_transfer_count() as u64 != self.state.transfers_accepted_total() {
            return Err(inconsistent("applied-UETR index does not match the accepted transfer count"));
        }
        let reported = self.state.applied_transfers().filter(|(_, record)| record.payout != PayoutState::Open).count();
        if reported as u64 != self.state.payout_reports_total() {
            return Err(inconsistent("payout states in the index do not match the accepted report count"));
        }
        if height > Height::GENESIS {
            let previous =
                self.store.block(Height(height.0 - 1))?.ok_or_else(|| inconsistent("previous block missing"))?;
            if previous.hash() != tip.header.prev_hash {
                return Err(inconsistent("tip does not link to the previous block"));
            }
        }
        let mut probe = Some(height);
        while let Some(h) = probe {
            if let Some(certificate) = self.store.certificate(h)? {
                let block = self.store.block(h)?.ok_or_else(|| inconsistent("certified block missing"))?;
                if !certificate.verify(&self.validators.group_key(), &CertificationMessage::for_header(&block.header)) {
                    return Err(ChainError::BadCertificate(h));
                }
                self.certified_height = Some(h);
                break;
            }
            probe = h.0.checked_sub(1).map(Height);
        }
        info!(height = height.0, certified = ?self.certified_height.map(|h| h.0), "chain opened");
        Ok(())
    }

    /// The network definition.
    pub fn network(&self) -> &NetworkConfig {
        &self.network
    }

    /// The validator set.
    pub fn validators(&self) -> &ValidatorSet {
        &self.validators
    }

    /// The state after the applied height.
    pub fn state(&self) -> &LedgerState {
        &self.state
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Height of the newest certified block.
    pub fn certified_height(&self) -> Option<Height> {
        self.certified_height
    }

    /// Height and hash of the tip.
    pub fn tip(&self) -> Option<(Height, Digest32)> {
        self.state.tip()
    }

    /// A proposal for the next height with the given timestamp (clamped so it
    /// never goes back) and entries.
    pub fn next_proposal(&self, timestamp_ms: u64, entries: Vec<crate::block::Entry>) -> BlockProposal {
        BlockProposal {
            height: self.state.next_height(),
            prev_hash: self.state.tip_hash(),
            timestamp_ms: timestamp_ms.max(self.state.last_timestamp_ms()),
            entries,
        }
    }

    /// Applies a proposal, lets `certify` produce a certificate for the
    /// resulting block (or none yet) — one already verified, as
    /// `ValidatorSet::certify` returns — and stores both durably. Returns only
    /// after the block is on disk. On a store error the in-memory state is
    /// ahead of the disk: the caller must stop and reopen.
    pub fn append(
        &mut self,
        proposal: BlockProposal,
        signatures: SignatureCheck,
        certify: impl FnOnce(&Block) -> Option<Certificate>,
    ) -> Result<(Block, Option<Certificate>), ChainError> {
        let span = info_span!("settlement.block.append", height = proposal.height.0);
        let _guard = span.enter();
        self.append_with_meta(proposal, signatures, certify, &[])
    }

    /// [`Chain::append`], writing `meta` key-values in the block's atomic batch.
    pub fn append_with_meta(
        &mut self,
        proposal: BlockProposal,
        signatures: SignatureCheck,
        certify: impl FnOnce(&Block) -> Option<Certificate>,
        meta: &[(&str, Vec<u8>)],
    ) -> Result<(Block, Option<Certificate>), ChainError> {
        let block = self.state.apply(proposal, signatures)?;
        // `certify` returns certificates from `ValidatorSet::certify`, which
        // verified the combined signature against the group key already;
        // checking again would double the cost of certification.
        let certificate = certify(&block);
        self.store.append_block_with_meta(&block, &self.state, certificate.as_ref(), meta)?;
        if certificate.is_some() {
            self.certified_height = Some(block.height());
        }
        Ok((block, certificate))
    }

    /// Verifies and durably stores a certificate for a stored block.
    pub fn put_certificate(&mut self, height: Height, certificate: &Certificate) -> Result<(), ChainError> {
        let block = self
            .store
            .block(height)?
            .ok_or(ChainError::Inconsistent { height, reason: "certificate for a block not stored".into() })?;
        if !certificate.verify(&self.validators.group_key(), &CertificationMessage::for_header(&block.header)) {
            return Err(ChainError::BadCertificate(height));
        }
        self.put_verified_certificate(height, certificate)
    }

    /// Durably stores a certificate the caller has already verified for the
    /// stored block at `height` (as `ValidatorSet::certify` does).
    pub fn put_verified_certificate(&mut self, height: Height, certificate: &Certificate) -> Result<(), ChainError> {
        self.store.put_certificate(height, certificate)?;
        if self.certified_height.is_none_or(|h| h < height) {
            self.certified_height = Some(height);
        }
        Ok(())
    }

    /// Replaces the state with a verified snapshot (Raft snapshot install).
    /// The tip block must match the snapshot state; its certificate, when
    /// given, must verify.
    pub fn install_snapshot(
        &mut self,
        state: LedgerState,
        tip: Block,
        certificate: Option<Certificate>,
        meta: &[(&str, Vec<u8>)],
    ) -> Result<(), ChainError> {
        let height = tip.height();
        if state.tip() != Some((height, tip.hash())) || tip.header.state_root != state.state_root() {
            return Err(ChainError::Inconsistent {
                height,
                reason: "snapshot state does not match its tip block".into(),
            });
        }
        if let Some(certificate) = &certificate {
            if !certificate.verify(&self.validators.group_key(), &CertificationMessage::for_header(&tip.header)) {
                return Err(ChainError::BadCertificate(height));
            }
        }
        self.store.install_snapshot(&tip, &state, certificate.as_ref(), meta)?;
        self.state = state;
        if certificate.is_some() {
            self.certified_height = Some(height);
        }
        Ok(())
    }

    /// Stores a block fetched from a peer into the history gap left by a
    /// snapshot install, after checking it links to the block above and its
    /// certificate (if any) verifies.
    pub fn backfill(&mut self, block: &Block, certificate: Option<&Certificate>) -> Result<(), ChainError> {
        if let Some(certificate) = certificate {
            if !certificate.verify(&self.validators.group_key(), &CertificationMessage::for_header(&block.header)) {
                return Err(ChainError::BadCertificate(block.height()));
            }
        }
        self.store.backfill_block(block, &self.state, certificate)?;
        Ok(())
    }
}
