//! The certification round. After a block is applied here, this validator
//! signs its share (never two different blocks at one height: the signed
//! hash is persisted first), sends it to the other validators, and collects
//! theirs. With a quorum of valid shares it combines and stores the certificate;
//! the block goes from committed to certified (final). Shares are checked:
//! the optimistic combine is verified against the group key, and on failure
//! every share is verified and bad ones are dropped. Blocks left uncertified
//! (peers down, messages lost, this node restarted) are re-announced and
//! their certificates fetched from peers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use remit_proto::v1::{CertificateMessage, GetBlocksRequest, ShareMessage};
use remit_settlement::block::{Block, BlockHeader};
use remit_settlement::certify::{
    Certificate, CertificationMessage, CertifyError, Share, ValidatorKey, ValidatorSet, SIGNATURE_BYTES,
};
use remit_settlement::chain::ChainError;
use remit_settlement::hash::Digest32;
use remit_settlement::ids::Height;
use remit_settlement::replica::state_machine::lock;
use remit_settlement::replica::{AppliedBlock, FailStop, SharedChain};
use remit_settlement::store::LedgerStore;
use tokio::sync::mpsc;
use tracing::{debug, error, info, info_span, warn, Instrument};

use super::follower::CertifiedHeight;
use super::peers::Peers;
use crate::constants::{
    CATCH_UP_INTERVAL_MS, CERTIFICATE_FETCH_AFTER_MS, EARLY_SHARE_HEIGHTS_MAX, GET_BLOCKS_LIMIT_MAX,
    UNCERTIFIED_HOLE_HEIGHTS_MAX,
};
use crate::metrics::Metrics;

/// Input of the certification round.
#[derive(Debug)]
pub enum CertifierEvent {
    /// A block was applied locally.
    Applied(AppliedBlock),
    /// A peer's share.
    Share(ShareMessage),
    /// A peer's certificate.
    Certificate(CertificateMessage),
}

/// A share as held by a round: this validator's own (a point already) or a
/// peer's, kept as bytes until a quorum is there. Decoding a share (a G2
/// decompression with its subgroup check) costs about as much as signing;
/// a round decodes only the quorum it combines, and the rest only when
/// that quorum holds a bad share.
#[derive(Clone)]
enum RoundShare {
    Decoded(Share),
    Encoded(u32, [u8; SIGNATURE_BYTES]),
}

impl RoundShare {
    fn decode(&self) -> Option<Share> {
        match self {
            RoundShare::Decoded(share) => Some(share.clone()),
            RoundShare::Encoded(validator, bytes) => Share::from_bytes(*validator, bytes),
        }
    }
}

/// Combines a quorum of `shares` (own share first) into a certificate,
/// decoding only what it needs; returns the result and the validators whose
/// bytes were not a share at all.
fn certify_shares(
    validators: &ValidatorSet,
    message: &CertificationMessage,
    shares: &[RoundShare],
) -> (Result<Certificate, CertifyError>, Vec<u32>) {
    let quorum = validators.quorum();
    let mut decoded = Vec::with_capacity(shares.len());
    let mut undecodable = Vec::new();
    let mut rest = shares.iter();
    for share in rest.by_ref() {
        match share.decode() {
            Some(share) => decoded.push(share),
            None => undecodable.push(match share {
                RoundShare::Decoded(share) => share.validator,
                RoundShare::Encoded(validator, _) => *validator,
            }),
        }
        if decoded.len() == quorum {
            break;
        }
    }
    if decoded.len() == quorum {
        if let Ok(certificate) = validators.certify(message, &decoded) {
            return (Ok(certificate), undecodable);
        }
    }
    for share in rest {
        match share.decode() {
            Some(share) => decoded.push(share),
            None => {
                if let RoundShare::Encoded(validator, _) = share {
                    undecodable.push(*validator);
                }
            }
        }
    }
    (validators.certify(message, &decoded), undecodable)
}

struct Round {
    hash: Digest32,
    message: CertificationMessage,
    shares: BTreeMap<u32, RoundShare>,
    own: Option<Share>,
    applied_at: Instant,
    attempted_with: usize,
}

/// Everything the round needs.
pub struct Certifier {
    me: u64,
    key: Arc<ValidatorKey>,
    validators: ValidatorSet,
    chain: SharedChain,
    peers: Peers,
    metrics: Metrics,
    forge_shares: bool,
    rounds: BTreeMap<u64, Round>,
    /// Highest height a round was opened for. The chain's tip runs ahead of
    /// it while Applied events wait in this round's queue, so shares and
    /// certificates above it are early (kept), not stale (dropped).
    opened_max: u64,
    early: BTreeMap<u64, Vec<(Digest32, RoundShare)>>,
    early_certificates: BTreeMap<u64, Vec<CertificateMessage>>,
    certified: CertifiedHeight,
    fail_stop: FailStop,
    /// Rotates the first peer asked for history, so one peer that serves
    /// bad blocks cannot stall the backfill.
    backfill_turn: usize,
}

/// The rest of what a certification round needs besides the keys and the chain.
#[derive(Debug)]
pub struct CertifierLinks {
    /// Clients to the other validators.
    pub peers: Peers,
    /// The node's metrics.
    pub metrics: Metrics,
    /// Published when a certificate is stored (long polls wait on it).
    pub certified: CertifiedHeight,
    /// Raised when a durable write fails.
    pub fail_stop: FailStop,
    /// Fault injection: send forged shares (a Byzantine validator).
    pub forge_shares: bool,
}

impl std::fmt::Debug for Certifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Certifier(validator {}, {} open rounds)", self.me, self.rounds.len())
    }
}

fn signed_key(height: Height) -> String {
    format!("signed/{:020}", height.0)
}

async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(work).await.expect("blocking certification work does not panic")
}

impl Certifier {
    /// A round for validator `me`.
    pub fn new(
        me: u64,
        key: ValidatorKey,
        validators: ValidatorSet,
        chain: SharedChain,
        links: CertifierLinks,
    ) -> Self {
        let CertifierLinks { peers, metrics, certified, fail_stop, forge_shares } = links;
        Self {
            me,
            key: Arc::new(key),
            validators,
            chain,
            peers,
            metrics,
            forge_shares,
            rounds: BTreeMap::new(),
            opened_max: 0,
            early: BTreeMap::new(),
            early_certificates: BTreeMap::new(),
            certified,
            fail_stop,
            backfill_turn: 0,
        }
    }

    /// Runs the round for the node's lifetime.
    pub async fn run(mut self, mut events: mpsc::UnboundedReceiver<CertifierEvent>) {
        self.reopen_uncertified();
        let key = self.key.clone();
        let mut tick = tokio::time::interval(Duration::from_millis(CATCH_UP_INTERVAL_MS));
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Some(CertifierEvent::Applied(applied)) => self.on_applied(&key, applied.header).await,
                    Some(CertifierEvent::Share(share)) => self.on_share(share).await,
                    Some(CertifierEvent::Certificate(certificate)) => self.on_certificate(certificate).await,
                    None => return,
                },
                _ = tick.tick() => self.catch_up(&key).await,
            }
        }
    }

    /// After a restart: open rounds for stored blocks that have no certificate.
    /// Certificates are stored in the order they complete, not by height, so
    /// a crash can leave holes below the newest one; those are looked for too.
    fn reopen_uncertified(&mut self) {
        let chain = lock(&self.chain);
        let Some((tip, _)) = chain.tip() else { return };
        self.opened_max = tip.0;
        let from = chain.certified_height().map_or(0, |h| (h.0 + 1).saturating_sub(UNCERTIFIED_HOLE_HEIGHTS_MAX));
        let mut headers = Vec::new();
        for height in from..=tip.0 {
            match chain.store().certificate(Height(height)) {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(e) => {
                    error!(error = %e, height, "reading a certificate");
                    continue;
                }
            }
            match chain.store().block(Height(height)) {
                Ok(Some(block)) => headers.push(block.header),
                Ok(None) => {}
                Err(e) => error!(error = %e, height, "reading an uncertified block"),
            }
        }
        drop(chain);
        for header in headers {
            self.open_round(header);
        }
    }

    fn open_round(&mut self, header: BlockHeader) -> u64 {
        let height = header.height.0;
        let hash = header.hash();
        let message = CertificationMessage::for_header(&header);
        let mut round =
            Round { hash, message, shares: BTreeMap::new(), own: None, applied_at: Instant::now(), attempted_with: 0 };
        for (share_hash, share) in self.early.remove(&height).unwrap_or_default() {
            if share_hash == hash {
                if let RoundShare::Encoded(validator, _) = &share {
                    round.shares.insert(*validator, share);
                }
            }
        }
        self.rounds.insert(height, round);
        self.early.retain(|h, _| *h > height);
        self.early_certificates.retain(|h, _| *h >= height);
        self.opened_max = self.opened_max.max(height);
        height
    }

    async fn on_applied(&mut self, key: &Arc<ValidatorKey>, header: BlockHeader) {
        debug!(height = header.height.0, "round opened");
        self.metrics.height.set(i64::try_from(header.height.0).unwrap_or(i64::MAX));
        self.metrics.block_transfers.observe(f64::from(header.transfer_count));
        let height = self.open_round(header);
        for certificate in self.early_certificates.remove(&height).unwrap_or_default() {
            self.on_certificate(certificate).await;
        }
        if !self.rounds.contains_key(&height) {
            return;
        }
        self.sign_and_send(key, height).await;
        self.try_certify(height).await;
    }

    /// Signs this validator's share for `height` (unless another block was
    /// signed at that height), records it, then sends it to peers.
    async fn sign_and_send(&mut self, key: &Arc<ValidatorKey>, height: u64) {
        let Some(round) = self.rounds.get(&height) else { return };
        let hash = round.hash;
        let share = match round.own.clone() {
            Some(share) => share,
            None => {
                let chain = self.chain.clone();
                let recorded = blocking(move || {
                    let chain = lock(&chain);
                    let key = signed_key(Height(height));
                    match chain.store().meta(&key)? {
                        Some(signed) if signed != hash.0 => Ok(false),
                        Some(_) => Ok(true),
                        // Not flushed on its own: the block signed here is
                        // the one this node stored (flushed) at that
                        // height, which Raft never applies twice and a
                        // snapshot never replaces; the record, durable with
                        // the next block, guards a snapshot's tip.
                        None => chain.store().put_meta_lazily(&[(key.as_str(), hash.0.to_vec())]).map(|()| true),
                    }
                })
                .await;
                match recorded {
                    Ok(true) => {}
                    Ok(false) => {
                        error!(height, "refusing to sign: a different block was already signed at this height");
                        return;
                    }
                    Err(e) => {
                        error!(error = %e, height, "cannot record the signed height; not signing");
                        self.fail_stop.stop(format!("recording the block signed at height {height}: {e}"));
                        return;
                    }
                }
                let key = key.clone();
                let message = round.message.clone();
                let forge = self.forge_shares;
                let share = blocking(move || {
                    if forge {
                        ValidatorKey::new(key.index(), rand_share()).sign(&message)
                    } else {
                        key.sign(&message)
                    }
                })
                .await;
                let Some(round) = self.rounds.get_mut(&height) else { return };
                round.own = Some(share.clone());
                round.shares.insert(share.validator, RoundShare::Decoded(share.clone()));
                share
            }
        };
        let message = ShareMessage {
            height,
            block_hash: hash.0.to_vec(),
            validator: share.validator,
            share: share.to_bytes().to_vec(),
        };
        for (_, mut client) in self.peers.others(Some(self.me)) {
            let message = message.clone();
            tokio::spawn(async move {
                if let Err(status) = client.gossip_share(message).await {
                    debug!(%status, "share not delivered");
                }
            });
        }
    }

    async fn on_share(&mut self, message: ShareMessage) {
        let Ok(hash) = <[u8; 32]>::try_from(message.block_hash.as_slice()).map(Digest32) else {
            self.metrics.shares_rejected.inc();
            return;
        };
        if message.validator as usize >= self.validators.len() {
            self.metrics.shares_rejected.inc();
            return;
        }
        let height = message.height;
        // Shares for rounds already certified here are dropped unread.
        let opened = self.opened_max;
        if !self.rounds.contains_key(&height) && (height <= opened || height - opened > EARLY_SHARE_HEIGHTS_MAX) {
            return;
        }
        let Ok(bytes) = <[u8; SIGNATURE_BYTES]>::try_from(message.share.as_slice()) else {
            self.metrics.shares_rejected.inc();
            return;
        };
        let share = RoundShare::Encoded(message.validator, bytes);
        match self.rounds.get_mut(&height) {
            Some(round) if round.hash == hash => {
                round.shares.entry(message.validator).or_insert(share);
                self.try_certify(height).await;
            }
            Some(_) => {
                warn!(height, validator = message.validator, "share for a different block at this height");
                self.metrics.shares_rejected.inc();
            }
            None => {
                let opened = self.opened_max;
                if height > opened && height - opened <= EARLY_SHARE_HEIGHTS_MAX {
                    let early = self.early.entry(height).or_default();
                    if early.len() < 2 * self.validators.len() {
                        early.push((hash, share));
                    }
                }
            }
        }
    }

    async fn try_certify(&mut self, height: u64) {
        let Some(round) = self.rounds.get_mut(&height) else { return };
        if round.shares.len() < self.validators.quorum() || round.shares.len() <= round.attempted_with {
            return;
        }
        round.attempted_with = round.shares.len();
        // This validator's own share (already a point) first.
        let mut shares: Vec<RoundShare> = round.shares.values().cloned().collect();
        shares.sort_by_key(|share| matches!(share, RoundShare::Encoded(..)));
        let message = round.message.clone();
        let validators = self.validators.clone();
        // Instrumented, not entered: an `Entered` guard held across an await
        // stays on the worker thread's span stack while the task is parked,
        // so other tasks polled there run "inside" a span that may close
        // meanwhile, and the registry panics on their next span clone (seen
        // in the chain-apply path, where the panic poisons the chain lock).
        let span = info_span!("settlement.certify.round", height);
        async {
            let (result, undecodable) = blocking(move || certify_shares(&validators, &message, &shares)).await;
            match result {
                Ok(certificate) => self.store_certificate(height, certificate, true).await,
                Err(CertifyError::NotEnoughShares { rejected, .. }) => {
                    if let Some(round) = self.rounds.get_mut(&height) {
                        for validator in rejected.iter().chain(&undecodable) {
                            warn!(height, validator, "invalid signature share dropped");
                            round.shares.remove(validator);
                            self.metrics.shares_rejected.inc();
                        }
                        round.attempted_with = round.shares.len();
                    }
                }
                Err(error) => warn!(%error, height, "certification failed"),
            }
        }
        .instrument(span)
        .await;
    }

    async fn store_certificate(&mut self, height: u64, certificate: Certificate, announce: bool) {
        let Some(round) = self.rounds.remove(&height) else { return };
        let chain = self.chain.clone();
        let stored = {
            let certificate = certificate.clone();
            blocking(move || lock(&chain).put_verified_certificate(Height(height), &certificate)).await
        };
        if let Err(e) = stored {
            error!(error = %e, height, "storing a certificate failed");
            if matches!(e, ChainError::Store(_) | ChainError::Stopped(_)) {
                self.fail_stop.stop(format!("storing the certificate of block {height}: {e}"));
            }
            return;
        }
        self.certified.publish(height);
        self.metrics.certify_latency.observe(round.applied_at.elapsed().as_secs_f64());
        if let Some(certified) = lock(&self.chain).certified_height() {
            self.metrics.certified_height.set(i64::try_from(certified.0).unwrap_or(i64::MAX));
        }
        debug!(height, "block certified");
        if announce {
            let message = CertificateMessage {
                height,
                block_hash: round.hash.0.to_vec(),
                certificate: certificate.to_bytes().to_vec(),
            };
            for (_, mut client) in self.peers.others(Some(self.me)) {
                let message = message.clone();
                tokio::spawn(async move {
                    let _ = client.gossip_certificate(message).await;
                });
            }
        }
    }

    async fn on_certificate(&mut self, message: CertificateMessage) {
        let height = message.height;
        let Some(round) = self.rounds.get(&height) else {
            if height > self.opened_max && height - self.opened_max <= EARLY_SHARE_HEIGHTS_MAX {
                let early = self.early_certificates.entry(height).or_default();
                if early.len() < self.validators.len() {
                    early.push(message);
                }
            }
            return;
        };
        if round.hash.0.as_slice() != message.block_hash.as_slice() {
            return;
        }
        let Some(certificate) = Certificate::from_bytes(&message.certificate) else { return };
        let validators = self.validators.clone();
        let check = round.message.clone();
        let candidate = certificate.clone();
        if blocking(move || validators.verify_certificate(&candidate, &check)).await {
            self.store_certificate(message.height, certificate, false).await;
        } else {
            warn!(height = message.height, "certificate from a peer does not verify");
        }
    }

    /// Re-announces stale rounds, fetches their certificates from peers, and
    /// backfills history after a snapshot install.
    async fn catch_up(&mut self, key: &Arc<ValidatorKey>) {
        let stale: Vec<u64> = self
            .rounds
            .iter()
            .filter(|(_, r)| r.applied_at.elapsed() >= Duration::from_millis(CERTIFICATE_FETCH_AFTER_MS))
            .map(|(h, _)| *h)
            .collect();
        if let Some(&lowest) = stale.first() {
            info!(lowest, count = stale.len(), "catching up on uncertified blocks");
            self.fetch_certificates(lowest).await;
            for height in stale.iter().copied().take(GET_BLOCKS_LIMIT_MAX as usize) {
                if self.rounds.contains_key(&height) {
                    self.sign_and_send(key, height).await;
                    if let Some(round) = self.rounds.get_mut(&height) {
                        round.applied_at = Instant::now();
                    }
                }
            }
        }
        self.backfill().await;
    }

    async fn fetch_certificates(&mut self, from: u64) {
        let clients: Vec<_> = self.peers.others(Some(self.me)).collect();
        for (_, mut client) in clients {
            let request = GetBlocksRequest {
                from_height: from,
                limit: GET_BLOCKS_LIMIT_MAX,
                certificates_only: true,
                ..Default::default()
            };
            let Ok(response) = client.get_blocks(request).await else { continue };
            for encoded in response.into_inner().blocks {
                if encoded.certificate.is_empty() {
                    continue;
                }
                let Some(round) = self.rounds.get(&encoded.height) else { continue };
                let hash = round.hash.0.to_vec();
                self.on_certificate(CertificateMessage {
                    height: encoded.height,
                    block_hash: hash,
                    certificate: encoded.certificate,
                })
                .await;
            }
            if self.rounds.keys().next().is_none_or(|h| *h > from) {
                return;
            }
        }
    }

    /// Fills the history gap a snapshot install leaves, from the top down.
    /// Every block is checked like any other (`Chain::backfill`: roots
    /// recomputed from the body, link to the block above, certificate); a
    /// peer that serves one that does not verify is counted and the next
    /// peer asked.
    async fn backfill(&mut self) {
        let gap = lock(&self.chain).store().history_gap();
        let Ok(Some((start, end))) = gap else { return };
        let from = end.0.saturating_sub(u64::from(GET_BLOCKS_LIMIT_MAX) - 1).max(start.0);
        let mut clients: Vec<_> = self.peers.others(Some(self.me)).collect();
        if clients.is_empty() {
            return;
        }
        let turn = self.backfill_turn % clients.len();
        clients.rotate_left(turn);
        for (peer, mut client) in clients {
            let request = GetBlocksRequest {
                from_height: from,
                limit: GET_BLOCKS_LIMIT_MAX,
                certificates_only: false,
                ..Default::default()
            };
            let Ok(response) = client.get_blocks(request).await else { continue };
            let mut blocks = response.into_inner().blocks;
            blocks.sort_by_key(|b| std::cmp::Reverse(b.height));
            let chain = self.chain.clone();
            let (filled, uncertified, refused) = blocking(move || {
                let mut chain = lock(&chain);
                let mut filled = 0;
                let mut uncertified = Vec::new();
                let mut refused = None;
                for encoded in blocks.into_iter().filter(|b| b.height >= from && b.height <= end.0) {
                    let block = match Block::decode(&encoded.block) {
                        Ok(block) => block,
                        Err(e) => {
                            refused = Some(Err(format!("block {}: {e}", encoded.height)));
                            break;
                        }
                    };
                    let certificate = Certificate::from_bytes(&encoded.certificate);
                    match chain.backfill(&block, certificate.as_ref()) {
                        Ok(()) => {}
                        Err(error @ (ChainError::Store(_) | ChainError::Stopped(_))) => {
                            refused = Some(Ok(error.to_string()));
                            break;
                        }
                        Err(error) => {
                            refused = Some(Err(error.to_string()));
                            break;
                        }
                    }
                    if certificate.is_none() {
                        uncertified.push(block.header);
                    }
                    filled += 1;
                }
                (filled, uncertified, refused)
            })
            .await;
            // Backfilled blocks the peer had not certified yet get a round
            // here, so this node fetches or helps make their certificates.
            for header in uncertified {
                if !self.rounds.contains_key(&header.height.0) {
                    self.open_round(header);
                }
            }
            match refused {
                Some(Ok(fatal)) => {
                    self.fail_stop.stop(format!("backfill: {fatal}"));
                    return;
                }
                Some(Err(reason)) => {
                    self.metrics.blocks_refused.inc();
                    warn!(peer, %reason, "refused a backfilled block from a peer; asking the next one");
                    self.backfill_turn += 1;
                }
                None => {}
            }
            if filled > 0 {
                info!(filled, peer, "history backfilled");
                return;
            }
        }
    }
}

/// A random key share, for forged shares in fault tests.
fn rand_share() -> threshold_crypto::SecretKeyShare {
    rand07::random()
}
