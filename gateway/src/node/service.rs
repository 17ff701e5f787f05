//! The peer gRPC service: Raft messages, batch submission, share and
//! certificate gossip, block and tip queries.

use std::sync::Arc;

use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};
use remit_proto::v1::peer_server::Peer;
use remit_proto::v1::{
    CertificateMessage, DeliverPaymentMessagesReply, DeliverPaymentMessagesRequest, EncodedBlock,
    FetchPaymentMessagesReply, FetchPaymentMessagesRequest, GetBlocksRequest, GetBlocksResponse, GetTipRequest,
    GetTipResponse, GossipAck, RaftReply, RaftRequest, ShareMessage, SubmitBatchReply, SubmitBatchRequest,
    SubmitReportsRequest,
};
use remit_settlement::ids::Height;
use remit_settlement::replica::state_machine::lock;
use remit_settlement::replica::{decode_message, encode_message, Raft, SharedChain, TypeConfig};
use remit_settlement::store::LedgerStore;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};
use tracing::{info_span, Instrument};

use super::certifier::CertifierEvent;
use super::proposer::Proposer;
use crate::constants::GET_BLOCKS_LIMIT_MAX;
use crate::remittance::engine::Engine;

/// The service of one node.
#[derive(Clone)]
pub struct PeerService {
    raft: Raft,
    chain: SharedChain,
    proposer: Arc<Proposer>,
    certifier: mpsc::UnboundedSender<CertifierEvent>,
    engine: Engine,
}

impl std::fmt::Debug for PeerService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerService")
    }
}

impl PeerService {
    /// A service over the node's parts.
    pub fn new(
        raft: Raft,
        chain: SharedChain,
        proposer: Arc<Proposer>,
        certifier: mpsc::UnboundedSender<CertifierEvent>,
        engine: Engine,
    ) -> Self {
        Self { raft, chain, proposer, certifier, engine }
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
        let rpc: VoteRequest<u64> = decode_message(&request.into_inner().payload).map_err(bad_request)?;
        raft_reply(&self.raft.vote(rpc).await)
    }

    async fn raft_append(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc: AppendEntriesRequest<TypeConfig> =
            decode_message(&request.into_inner().payload).map_err(bad_request)?;
        raft_reply(&self.raft.append_entries(rpc).await)
    }

    async fn raft_snapshot(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let rpc: InstallSnapshotRequest<TypeConfig> =
            decode_message(&request.into_inner().payload).map_err(bad_request)?;
        raft_reply(&self.raft.install_snapshot(rpc).await)
    }

    async fn submit_batch(&self, request: Request<SubmitBatchRequest>) -> Result<Response<SubmitBatchReply>, Status> {
        let request = request.into_inner();
        let span = info_span!("remit.peer.submit_batch", bytes = request.batch.len(), forwarded = request.forwarded);
        self.proposer.submit(request).instrument(span).await.map(Response::new)
    }

    async fn gossip_share(&self, request: Request<ShareMessage>) -> Result<Response<GossipAck>, Status> {
        self.certifier
            .send(CertifierEvent::Share(request.into_inner()))
            .map_err(|_| Status::unavailable("node shutting down"))?;
        Ok(Response::new(GossipAck {}))
    }

    async fn gossip_certificate(&self, request: Request<CertificateMessage>) -> Result<Response<GossipAck>, Status> {
        self.certifier
            .send(CertifierEvent::Certificate(request.into_inner()))
            .map_err(|_| Status::unavailable("node shutting down"))?;
        Ok(Response::new(GossipAck {}))
    }

    async fn get_blocks(&self, request: Request<GetBlocksRequest>) -> Result<Response<GetBlocksResponse>, Status> {
        let request = request.into_inner();
        let limit = u64::from(request.limit.clamp(1, GET_BLOCKS_LIMIT_MAX));
        let chain = self.chain.clone();
        let blocks = tokio::task::spawn_blocking(move || {
            let chain = lock(&chain);
            let Some((tip, _)) = chain.tip() else { return Ok(Vec::new()) };
            let mut blocks = Vec::new();
            let end = tip.0.min(request.from_height.saturating_add(limit - 1));
            for height in request.from_height..=end {
                let height = Height(height);
                let certificate = chain.store().certificate(height)?.map(|c| c.to_bytes().to_vec()).unwrap_or_default();
                let block = if request.certificates_only {
                    Vec::new()
                } else {
                    match chain.store().block_bytes(height)? {
                        Some(bytes) => bytes,
                        None => continue,
                    }
                };
                blocks.push(EncodedBlock { height: height.0, block, certificate });
            }
            Ok::<_, remit_settlement::store::StoreError>(blocks)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(GetBlocksResponse { blocks }))
    }

    async fn get_tip(&self, _request: Request<GetTipRequest>) -> Result<Response<GetTipResponse>, Status> {
        let leader = self.raft.metrics().borrow().current_leader;
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
        self.proposer.submit_reports(request).instrument(span).await.map(Response::new)
    }

    async fn deliver_payment_messages(
        &self,
        request: Request<DeliverPaymentMessagesRequest>,
    ) -> Result<Response<DeliverPaymentMessagesReply>, Status> {
        let messages = request.into_inner().messages;
        let span = info_span!("remit.peer.deliver_messages", count = messages.len());
        let stored = self.engine.receive_messages(messages).instrument(span).await?;
        Ok(Response::new(DeliverPaymentMessagesReply { stored: u32::try_from(stored).unwrap_or(u32::MAX) }))
    }

    async fn fetch_payment_messages(
        &self,
        request: Request<FetchPaymentMessagesRequest>,
    ) -> Result<Response<FetchPaymentMessagesReply>, Status> {
        let request = request.into_inner();
        let span = info_span!("remit.peer.fetch_messages", count = request.uetrs.len());
        let _guard = span.enter();
        let messages = self.engine.messages_for(&request.uetrs, &request.destination)?;
        Ok(Response::new(FetchPaymentMessagesReply { messages }))
    }
}
