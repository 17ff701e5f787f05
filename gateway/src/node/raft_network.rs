//! openraft's network over the peer gRPC service. Raft messages travel as
//! bincode inside `RaftRequest`; replies carry `Result<response, RaftError>`.

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use remit_proto::v1::RaftRequest;
use remit_settlement::replica::{decode_message, encode_message, TypeConfig};
use serde::de::DeserializeOwned;

use super::peers::{Client, Peers};

/// Creates a [`RaftPeer`] per target validator.
#[derive(Clone, Debug)]
pub struct RaftNetworkFactoryImpl {
    peers: Peers,
}

impl RaftNetworkFactoryImpl {
    /// Over the given clients.
    pub fn new(peers: Peers) -> Self {
        Self { peers }
    }
}

/// The Raft connection to one peer.
#[derive(Debug)]
pub struct RaftPeer {
    target: u64,
    client: Option<Client>,
}

impl RaftNetworkFactory<TypeConfig> for RaftNetworkFactoryImpl {
    type Network = RaftPeer;

    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Self::Network {
        RaftPeer { target, client: self.peers.client(target) }
    }
}

enum Rpc {
    Vote,
    Append,
    Snapshot,
}

impl RaftPeer {
    async fn call<Resp, E>(&mut self, rpc: Rpc, payload: Vec<u8>) -> Result<Resp, RPCError<u64, BasicNode, E>>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let Some(client) = self.client.as_mut() else {
            let error = std::io::Error::other(format!("no address for validator {}", self.target));
            return Err(RPCError::Unreachable(Unreachable::new(&error)));
        };
        let request = RaftRequest { payload };
        let reply = match rpc {
            Rpc::Vote => client.raft_vote(request).await,
            Rpc::Append => client.raft_append(request).await,
            Rpc::Snapshot => client.raft_snapshot(request).await,
        };
        let reply = reply.map_err(|status| {
            let error = std::io::Error::other(status.message().to_owned());
            if status.code() == tonic::Code::Unavailable || status.code() == tonic::Code::DeadlineExceeded {
                RPCError::Unreachable(Unreachable::new(&error))
            } else {
                RPCError::Network(NetworkError::new(&error))
            }
        })?;
        let result: Result<Resp, E> =
            decode_message(&reply.into_inner().payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for RaftPeer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(Rpc::Append, encode_message(&rpc)).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        self.call(Rpc::Snapshot, encode_message(&rpc)).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.call(Rpc::Vote, encode_message(&rpc)).await
    }
}
