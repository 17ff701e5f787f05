//! The peer gRPC service: Raft messages, batch submission, share and
//! certificate gossip, block and tip queries, payment messages. A gateway
//! that is not a validator serves blocks, its tip and payment messages, and
//! passes submissions on to the validators; it refuses Raft and gossip.
//!
//! Payment messages are served by the caller's identity
//! ([`super::peer_identity`]: its certificate, or its signature on a
//! plaintext devnet) under the rules of [`super::peer_access`]: no identity,
//! `UNAUTHENTICATED`; not the certified destination (fetch) or not the
//! envelope's origin (deliver), `PERMISSION_DENIED`; no data either way. A
//! Raft message from a caller whose certificate names a participant that is
//! not a validator is refused with `PERMISSION_DENIED`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use remit_proto::v1::peer_server::Peer;
use remit_proto::v1::{
    CertificateMessage, DeliverPaymentMessagesReply, DeliverPaymentMessagesRequest, EncodedBlock,
    FetchPaymentMessagesReply, FetchPaymentMessagesRequest, GetBlocksRequest, GetBlocksResponse, GetTipRequest,
    GetTipResponse, GossipAck, RaftReply, RaftRequest, ShareMessage, SubmitBatchReply, SubmitBatchRequest,
    SubmitGovernanceRequest, SubmitReportsRequest,
};
use remit_settlement::ids::{Height, Uetr};
use remit_settlement::replica::state_machine::lock;
use remit_settlement::replica::{decode_message, encode_message, Raft, SharedChain, TypeConfig};
use remit_settlement::store::LedgerStore;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use tracing::{info_span, Instrument};

use super::certifier::CertifierEvent;
use super::follower::CertifiedHeight;
use super::intake::LedgerIntake;
use super::message_exchange::{envelope, from_envelope, receive_status};
use super::peer_access;
use super::peer_identity::{method, PeerAuthenticator};
use super::RoleParts;
use crate::constants::GET_BLOCKS_LIMIT_MAX;
use crate::remittance::engine::Engine;
use crate::remittance::messages::uetr_from_bytes;

/// Pause between re-reads of a long poll whose first block has a newer
/// certified block above it but no certificate of its own yet.
const CERTIFIED_HOLE_POLL_MS: u64 = 20;

/// The service of one node, over the node's parts.
#[derive(Clone)]
pub struct PeerService {
    /// The node's role and, on a validator, its Raft.
    pub role: RoleParts,
    /// The node's chain.
    pub chain: SharedChain,
    /// Where submitted batches, reports and governance entries go.
    pub intake: Arc<dyn LedgerIntake>,
    /// The certification round (only on a validator).
    pub certifier: Option<mpsc::UnboundedSender<CertifierEvent>>,
    /// The remittance engine (payment messages between gateways).
    pub engine: Engine,
    /// The highest certified height seen here.
    pub certified: CertifiedHeight,
    /// The node's metrics.
    pub metrics: crate::metrics::Metrics,
    /// Fault injection (`testing.serve_altered_blocks`): a lying peer.
    pub serve_altered_blocks: bool,
    /// Who is calling (certificate or signature), keys from `chain`.
    pub auth: PeerAuthenticator,
}

impl std::fmt::Debug for PeerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerService")
    }
}

impl PeerService {
    fn raft(&self) -> Result<&Raft, Status> {
        self.role.raft().ok_or_else(|| Status::failed_precondition("this node is a gateway, not a validator"))
    }

    fn certifier(&self) -> Result<&mpsc::UnboundedSender<CertifierEvent>, Status> {
        self.certifier.as_ref().ok_or_else(|| Status::failed_precondition("this node is a gateway, not a validator"))
    }

    /// Reads up to `limit` stored blocks from `from` (only the run of
    /// certified ones when `certified_only`), with their certificates.
    async fn read_blocks(&self, request: &GetBlocksRequest, limit: u64) -> Result<Vec<EncodedBlock>, Status> {
        let chain = self.chain.clone();
        let (from, certificates_only, certified_only) =
            (request.from_height, request.certificates_only, request.certified_only);
        let alter = self.serve_altered_blocks;
        tokio::task::spawn_blocking(move || {
            let chain = lock(&chain);
            let Some((tip, _)) = chain.tip() else { return Ok(Vec::new()) };
            let mut blocks = Vec::new();
            let end = tip.0.min(from.saturating_add(limit - 1));
            for height in from..=end {
                let height = Height(height);
                let certificate = chain.store().certificate(height)?.map(|c| c.to_bytes().to_vec());
                if certified_only && certificate.is_none() {
                    break;
                }
                let block = if certificates_only {
                    Vec::new()
                } else {
                    match chain.store().block_bytes(height)? {
                        Some(bytes) if alter => altered(bytes),
                        Some(bytes) => bytes,
                        None if certified_only => break,
                        None => continue,
                    }
                };
                blocks.push(EncodedBlock { height: height.0, block, certificate: certificate.unwrap_or_default() });
            }
            Ok::<_, remit_settlement::store::StoreError>(blocks)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))
    }
}

/// A lying peer's version of a block: the same header, with the first
/// transfer's commitment changed (fault injection only).
fn altered(bytes: Vec<u8>) -> Vec<u8> {
    let Ok(mut block) = remit_settlement::Block::decode(&bytes) else { return bytes };
    let transfer = block.entries.iter_mut().find_map(|entry| match entry {
        remit_settlement::Entry::TransferBatch { batch } => batch.transfers.first_mut(),
        _ => None,
    });
    match transfer {
        Some(transfer) => {
            transfer.payload_commitment.0[0] ^= 0xff;
            block.encode()
        }
        None => bytes,
    }
}

fn bad_request(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

fn raft_reply<T: serde::Serialize>(result: &T) -> Result<Response<RaftReply>, Status> {
    Ok(Response::new(RaftReply { payload: encode_message(result), error: String::new() }))
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft_vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let raft = self.raft()?;
        self.auth.require_validator_if_known(&request)?;
        let rpc: VoteRequest<u64> = decode_message(&request.into_inner().payload).map_err(bad_request)?;
        raft_reply(&raft.vote(rpc).await)
    }

    async fn raft_append(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let started = Instant::now();
        let raft = self.raft()?;
        self.auth.require_validator_if_known(&request)?;
        let rpc: AppendEntriesRequest<TypeConfig> =
            decode_message(&request.into_inner().payload).map_err(bad_request)?;
        let reply = raft_reply(&raft.append_entries(rpc).await);
        self.metrics.raft_append_latency.observe(started.elapsed().as_secs_f64());
        reply
    }

    async fn raft_snapshot(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let raft = self.raft()?;
        self.auth.require_validator_if_known(&request)?;
        let rpc: InstallSnapshotRequest<TypeConfig> =
            decode_message(&request.into_inner().payload).map_err(bad_request)?;
        raft_reply(&raft.install_snapshot(rpc).await)
    }

    async fn submit_batch(&self, request: Request<SubmitBatchRequest>) -> Result<Response<SubmitBatchReply>, Status> {
        let request = request.into_inner();
        let span = info_span!("remit.peer.submit_batch", bytes = request.batch.len(), forwarded = request.forwarded);
        self.intake.submit(request).instrument(span).await.map(Response::new)
    }

    async fn gossip_share(&self, request: Request<ShareMessage>) -> Result<Response<GossipAck>, Status> {
        self.certifier()?
            .send(CertifierEvent::Share(request.into_inner()))
            .map_err(|_| Status::unavailable("node shutting down"))?;
        Ok(Response::new(GossipAck {}))
    }

    async fn gossip_certificate(&self, request: Request<CertificateMessage>) -> Result<Response<GossipAck>, Status> {
        self.certifier()?
            .send(CertifierEvent::Certificate(request.into_inner()))
            .map_err(|_| Status::unavailable("node shutting down"))?;
        Ok(Response::new(GossipAck {}))
    }

    async fn get_blocks(&self, request: Request<GetBlocksRequest>) -> Result<Response<GetBlocksResponse>, Status> {
        let request = request.into_inner();
        let limit = u64::from(request.limit.clamp(1, GET_BLOCKS_LIMIT_MAX));
        let wait = Duration::from_millis(u64::from(request.wait_ms).min(crate::constants::FOLLOW_WAIT_MS));
        let deadline = Instant::now() + wait;
        loop {
            let blocks = self.read_blocks(&request, limit).await?;
            let now = Instant::now();
            if !blocks.is_empty() || !request.certified_only || now >= deadline {
                return Ok(Response::new(GetBlocksResponse { blocks }));
            }
            // Long poll: wait for the first block's certificate.
            if self.certified.current().is_some_and(|c| c >= request.from_height) {
                tokio::time::sleep(Duration::from_millis(CERTIFIED_HOLE_POLL_MS).min(deadline - now)).await;
            } else {
                self.certified.wait_for(request.from_height, deadline - now).await;
            }
        }
    }

    async fn get_tip(&self, _request: Request<GetTipRequest>) -> Result<Response<GetTipResponse>, Status> {
        let leader = self.role.leader();
        let chain = lock(&self.chain);
        let tip = chain.tip();
        Ok(Response::new(GetTipResponse {
            height: tip.map(|(h, _)| h.0),
            block_hash: tip.map(|(_, hash)| hash.0.to_vec()).unwrap_or_default(),
            certified_height: chain.certified_height().map(|h| h.0),
            leader,
            transfers_accepted_total: chain.state().transfers_accepted_total(),
        }))
    }

    async fn submit_reports(
        &self,
        request: Request<SubmitReportsRequest>,
    ) -> Result<Response<SubmitBatchReply>, Status> {
        let request = request.into_inner();
        let span = info_span!("remit.peer.submit_reports", bytes = request.batch.len(), forwarded = request.forwarded);
        self.intake.submit_reports(request).instrument(span).await.map(Response::new)
    }

    async fn submit_governance(
        &self,
        request: Request<SubmitGovernanceRequest>,
    ) -> Result<Response<SubmitBatchReply>, Status> {
        let request = request.into_inner();
        let span =
            info_span!("remit.peer.submit_governance", bytes = request.entry.len(), forwarded = request.forwarded);
        self.intake.submit_governance(request).instrument(span).await.map(Response::new)
    }

    async fn deliver_payment_messages(
        &self,
        request: Request<DeliverPaymentMessagesRequest>,
    ) -> Result<Response<DeliverPaymentMessagesReply>, Status> {
        let caller = self.auth.authenticate(method::DELIVER_PAYMENT_MESSAGES, &request)?;
        let messages = request.into_inner().messages;
        let span = info_span!("remit.peer.deliver_messages", count = messages.len(), %caller);
        peer_access::check_delivery(&caller, &messages)?;
        let messages = messages
            .into_iter()
            .enumerate()
            .map(|(i, e)| from_envelope(e).map_err(|e| Status::invalid_argument(format!("messages[{i}].{e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let stored = self.engine.receive_messages(&caller, messages).instrument(span).await.map_err(receive_status)?;
        Ok(Response::new(DeliverPaymentMessagesReply { stored: u32::try_from(stored).unwrap_or(u32::MAX) }))
    }

    async fn fetch_payment_messages(
        &self,
        request: Request<FetchPaymentMessagesRequest>,
    ) -> Result<Response<FetchPaymentMessagesReply>, Status> {
        let caller = self.auth.authenticate(method::FETCH_PAYMENT_MESSAGES, &request)?;
        let request = request.into_inner();
        let span = info_span!("remit.peer.fetch_messages", count = request.uetrs.len(), %caller);
        let _guard = span.enter();
        let allowed = peer_access::fetchable(&self.chain, &caller, &request.destination, &request.uetrs)?;
        // Parsed (and refused if malformed) by `fetchable`.
        let allowed: Vec<Uetr> = allowed.iter().filter_map(|bytes| uetr_from_bytes(bytes)).collect();
        let (messages, unknown) = self.engine.messages_for(&allowed, &caller).map_err(receive_status)?;
        Ok(Response::new(FetchPaymentMessagesReply {
            messages: messages.iter().map(envelope).collect(),
            unknown: unknown.iter().map(|uetr| uetr.as_bytes().to_vec()).collect(),
        }))
    }
}
