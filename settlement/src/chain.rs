//! A node's chain: the ledger state, its durable store and the validator set,
//! kept consistent. Opening re-checks the stored tip (hash chain, state root,
//! certificate) before anything is served.

use tracing::{info, info_span};

use crate::block::{entries_root, results_root, Block, BlockProposal};
use crate::certify::{Certificate, CertificationMessage, ValidatorSet};
use crate::hash::Digest32;
use crate::ids::Height;
use crate::ledger::{BlockError, LedgerState, SignatureCheck};
use crate::network::NetworkConfig;
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
    /// A block received from a peer does not match what it claims (its
    /// header, its link, its replay). Nothing was stored; ask another peer.
    #[error("block {height} from a peer refused: {reason}")]
    BadBlock {
        /// The block's height.
        height: Height,
        /// What did not match.
        reason: String,
    },
    /// An earlier durable write failed; the chain takes no more writes and
    /// the node must stop (its memory was rewound to what is on disk).
    #[error("the chain stopped after a failed durable write: {0}")]
    Stopped(String),
}

/// Ledger state plus durable store plus validator set.
#[derive(Debug)]
pub struct Chain<S: LedgerStore> {
    store: S,
    state: LedgerState,
    network: NetworkConfig,
    validators: ValidatorSet,
    certified_height: Option<Height>,
    /// Set when a durable write failed: no more writes are taken.
    stopped: Option<String>,
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
        let params = network.ledger_params();
        let state = match store.load_state()? {
            Some(state) => state,
            None => LedgerState::new(params.clone()),
        };
        if *state.params() != params {
            return Err(ChainError::Network(
                "the stored state was made with other ledger parameters than network.json's".into(),
            ));
        }
        let mut chain = Self { store, state, network, validators, certified_height: None, stopped: None };
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
        // The state root covers everything that decides a future result
        // (counters, timestamp, registry, governance, the duplicate index
        // with payout states), so one comparison checks the whole snapshot.
        if tip.header.state_root != self.state.state_root() {
            return Err(inconsistent(
                "stored state (snapshot and duplicate index) does not match the tip's state root",
            ));
        }
        if tip.header.timestamp_ms != self.state.last_timestamp_ms() {
            return Err(inconsistent("state snapshot timestamp differs from the tip's"));
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
                if !self.validators.verify_certificate(&certificate, &CertificationMessage::for_header(&block.header)) {
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
        self.check_running()?;
        let block = self.state.apply(proposal, signatures)?;
        // `certify` returns certificates from `ValidatorSet::certify`, which
        // verified the combined signature against the group key already;
        // checking again would double the cost of certification.
        let certificate = certify(&block);
        if let Err(error) = self.store.append_block_with_meta(&block, &self.state, certificate.as_ref(), meta) {
            self.stop_after(&error);
            return Err(error.into());
        }
        if certificate.is_some() {
            self.certified_height = Some(block.height());
        }
        Ok((block, certificate))
    }

    /// Appends a certified block received from a validator (a gateway
    /// following the chain): the certificate must verify, and replaying the
    /// block's entries on the local state must give exactly the block
    /// (results, state root, hash). Nothing is stored otherwise.
    pub fn append_certified(&mut self, block: &Block, certificate: &Certificate) -> Result<(), ChainError> {
        self.check_running()?;
        let height = block.height();
        let refuse = |reason: String| ChainError::BadBlock { height, reason };
        if height != self.state.next_height() {
            return Err(refuse(format!("expected height {}", self.state.next_height())));
        }
        if !self.validators.verify_certificate(certificate, &CertificationMessage::for_header(&block.header)) {
            return Err(ChainError::BadCertificate(height));
        }
        let proposal = BlockProposal {
            height,
            prev_hash: block.header.prev_hash,
            timestamp_ms: block.header.timestamp_ms,
            entries: block.entries.clone(),
        };
        // Applied in place and compared; a mismatch rewinds to the store.
        let replayed = self.state.apply(proposal, SignatureCheck::Verify).map_err(|e| refuse(e.to_string()))?;
        if replayed != *block {
            // The certificate verified, so the validators certified this
            // header: a different replay means this node's state or code is
            // wrong, not the peer. Rewind and refuse.
            self.rewind_to_store();
            return Err(refuse("replaying the certified block gives a different block".into()));
        }
        if let Err(error) = self.store.append_block(block, &self.state, Some(certificate)) {
            self.stop_after(&error);
            return Err(error.into());
        }
        self.certified_height = Some(height);
        Ok(())
    }

    fn check_running(&self) -> Result<(), ChainError> {
        match &self.stopped {
            Some(reason) => Err(ChainError::Stopped(reason.clone())),
            None => Ok(()),
        }
    }

    /// A durable write failed after the state was updated in memory: rewind
    /// the state to what is on disk (so no reader sees a block that was
    /// never stored) and take no more writes. The caller stops the node.
    fn stop_after(&mut self, error: &StoreError) {
        tracing::error!(%error, "durable write failed: rewinding to the stored state and stopping");
        self.stopped = Some(error.to_string());
        self.rewind_to_store();
    }

    /// Reloads the state from the store. If even that fails, the process
    /// cannot know what is durable: it stops rather than serve a guess.
    fn rewind_to_store(&mut self) {
        match self.store.load_state() {
            Ok(Some(state)) => self.state = state,
            Ok(None) => self.state = LedgerState::new(self.network.ledger_params()),
            Err(error) => panic!("the stored ledger state cannot be reloaded after a failed write ({error}); stopping"),
        }
    }

    /// Whether a durable write failed (the node must stop).
    pub fn stopped(&self) -> Option<&str> {
        self.stopped.as_deref()
    }

    /// Verifies and durably stores a certificate for a stored block.
    pub fn put_certificate(&mut self, height: Height, certificate: &Certificate) -> Result<(), ChainError> {
        let block = self
            .store
            .block(height)?
            .ok_or(ChainError::Inconsistent { height, reason: "certificate for a block not stored".into() })?;
        if !self.validators.verify_certificate(certificate, &CertificationMessage::for_header(&block.header)) {
            return Err(ChainError::BadCertificate(height));
        }
        self.put_verified_certificate(height, certificate)
    }

    /// Durably stores a certificate the caller has already verified for the
    /// stored block at `height` (as `ValidatorSet::certify` does).
    pub fn put_verified_certificate(&mut self, height: Height, certificate: &Certificate) -> Result<(), ChainError> {
        self.check_running()?;
        if let Err(error) = self.store.put_certificate(height, certificate) {
            self.stop_after(&error);
            return Err(error.into());
        }
        if self.certified_height.is_none_or(|h| h < height) {
            self.certified_height = Some(height);
        }
        Ok(())
    }

    /// Replaces the state with a verified snapshot (Raft snapshot install).
    /// The snapshot's state (registry, counters, governance, the whole
    /// duplicate index) must hash to the tip block's state root, with this
    /// network's parameters; the tip's certificate, when given, must verify.
    pub fn install_snapshot(
        &mut self,
        state: LedgerState,
        tip: Block,
        certificate: Option<Certificate>,
        meta: &[(&str, Vec<u8>)],
    ) -> Result<(), ChainError> {
        self.check_running()?;
        let height = tip.height();
        let inconsistent = |reason: &str| ChainError::Inconsistent { height, reason: reason.into() };
        if state.tip() != Some((height, tip.hash())) {
            return Err(inconsistent("snapshot state is not at its tip block"));
        }
        if tip.header.state_root != state.state_root() {
            return Err(inconsistent("snapshot state does not hash to its tip block's state root"));
        }
        if tip.header.timestamp_ms != state.last_timestamp_ms() {
            return Err(inconsistent("snapshot timestamp differs from its tip block's"));
        }
        if *state.params() != self.network.ledger_params() {
            return Err(inconsistent("snapshot made with other ledger parameters than network.json's"));
        }
        if let Some(certificate) = &certificate {
            if !self.validators.verify_certificate(certificate, &CertificationMessage::for_header(&tip.header)) {
                return Err(ChainError::BadCertificate(height));
            }
        }
        if let Err(error) = self.store.install_snapshot(&tip, &state, certificate.as_ref(), meta) {
            self.stop_after(&error);
            return Err(error.into());
        }
        self.state = state;
        if certificate.is_some() {
            self.certified_height = Some(height);
        }
        Ok(())
    }

    /// Stores a block fetched from a peer into the history gap left by a
    /// snapshot install, after checking it like any other block: the chain
    /// id, the entries and results roots recomputed from its body, its hash
    /// linking to the stored block above, and its certificate (if any).
    /// A block that fails a check is refused with [`ChainError::BadBlock`]
    /// and nothing is stored, so the caller can ask another peer.
    pub fn backfill(&mut self, block: &Block, certificate: Option<&Certificate>) -> Result<(), ChainError> {
        self.check_running()?;
        let height = block.height();
        let refuse = |reason: String| ChainError::BadBlock { height, reason };
        let header = &block.header;
        if header.chain_id != self.network.chain_id {
            return Err(refuse(format!("chain id {} is not this network's", header.chain_id)));
        }
        if header.entry_count as usize != block.entries.len() || block.results.len() != block.entries.len() {
            return Err(refuse("entry or result count differs from the header".into()));
        }
        let entries = entries_root(&block.entries);
        if entries != header.entries_root {
            return Err(refuse(format!("entries root {entries} does not match the header's {}", header.entries_root)));
        }
        let results = results_root(&block.results);
        if results != header.results_root {
            return Err(refuse(format!("results root {results} does not match the header's {}", header.results_root)));
        }
        let Some((_, end)) = self.store.history_gap()? else {
            return Err(refuse("no history gap to fill".into()));
        };
        if height != end {
            return Err(refuse(format!("the gap's highest missing height is {end}")));
        }
        let above = self.store.block(height.next())?.ok_or_else(|| refuse("the block above is not stored".into()))?;
        if above.header.prev_hash != block.hash() {
            return Err(refuse("its hash is not the previous hash of the stored block above".into()));
        }
        if let Some(certificate) = certificate {
            if !self.validators.verify_certificate(certificate, &CertificationMessage::for_header(header)) {
                return Err(ChainError::BadCertificate(height));
            }
        }
        if let Err(error) = self.store.backfill_block(block, certificate) {
            self.stop_after(&error);
            return Err(error.into());
        }
        Ok(())
    }
}
