//! gRPC clients to the other nodes (validators and member gateways), one
//! lazily connected channel each, by participant id; validators are also
//! reachable by their validator index (Raft, certification).
//!
//! Payment-message calls (deliver, fetch) go through [`Peers::deliver_payment_messages`]
//! and [`Peers::fetch_payment_messages`], which sign each request with the
//! node's identity key ([`super::peer_identity::RequestSigner`]) so that the
//! receiving node knows who calls even without TLS; deliveries are cut into
//! calls of at most [`PEER_DELIVER_MESSAGES_MAX`] envelopes.

use std::collections::BTreeMap;
use std::time::Duration;

use remit_proto::v1::peer_client::PeerClient;
use remit_proto::v1::{
    DeliverPaymentMessagesReply, DeliverPaymentMessagesRequest, FetchPaymentMessagesReply, FetchPaymentMessagesRequest,
    PaymentMessageEnvelope,
};
use remit_settlement::ParticipantId;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use super::peer_identity::{method, RequestSigner};
use crate::constants::{GRPC_MESSAGE_BYTES_MAX, HTTP2_WINDOW_BYTES, PEER_DELIVER_MESSAGES_MAX, PEER_RPC_TIMEOUT_MS};
use crate::tls::NodeTls;

/// A client to one peer.
pub type Client = PeerClient<Channel>;

/// One node of the network as this node knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAddress {
    /// The participant that runs it.
    pub participant: ParticipantId,
    /// Host and port of its peer server.
    pub address: String,
    /// Its validator index, when it is a validator.
    pub validator: Option<u64>,
}

#[derive(Clone, Debug)]
struct Peer {
    address: String,
    client: Client,
}

/// Clients to every known node.
#[derive(Clone, Debug)]
pub struct Peers {
    by_participant: BTreeMap<ParticipantId, Peer>,
    validators: BTreeMap<u64, ParticipantId>,
    tls: Option<NodeTls>,
    signer: Option<RequestSigner>,
}

/// Builds a lazily connecting client to `address` (host:port).
pub fn connect_lazy(address: &str, tls: Option<&NodeTls>) -> Result<Client, tonic::transport::Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))?
        .timeout(Duration::from_millis(PEER_RPC_TIMEOUT_MS))
        .connect_timeout(Duration::from_millis(1_000))
        .tcp_nodelay(true)
        // Raft appends carry whole blocks (hundreds of KB to MB): with
        // HTTP/2's default 64 KB windows they crawl through flow control.
        .initial_stream_window_size(Some(HTTP2_WINDOW_BYTES))
        .initial_connection_window_size(Some(HTTP2_WINDOW_BYTES));
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.client())?;
    }
    Ok(PeerClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX))
}

impl Peers {
    /// Clients for every listed node.
    pub fn new(addresses: &[PeerAddress], tls: Option<&NodeTls>) -> Result<Self, tonic::transport::Error> {
        Self::connect(addresses, tls.cloned())
    }

    /// The same peers over new connections of their own.
    pub fn reconnect(&self) -> Result<Self, tonic::transport::Error> {
        let addresses: Vec<PeerAddress> = self
            .by_participant
            .iter()
            .map(|(participant, peer)| PeerAddress {
                participant: participant.clone(),
                address: peer.address.clone(),
                validator: self.validators.iter().find(|(_, id)| *id == participant).map(|(index, _)| *index),
            })
            .collect();
        let mut peers = Self::connect(&addresses, self.tls.clone())?;
        peers.signer = self.signer.clone();
        Ok(peers)
    }

    /// The same peers, signing payment-message requests with `signer`.
    pub fn with_signer(mut self, signer: RequestSigner) -> Self {
        self.signer = Some(signer);
        self
    }

    fn signed<T: prost::Message>(&self, method: &str, body: T) -> Request<T> {
        match &self.signer {
            Some(signer) => signer.request(method, body),
            None => Request::new(body),
        }
    }

    /// Delivers `envelopes` to `destination`, signed, in calls of at most
    /// [`PEER_DELIVER_MESSAGES_MAX`]; the number stored, or the first
    /// failure (earlier calls may have been stored: a retry sends them
    /// again, and storing one twice is harmless).
    pub async fn deliver_payment_messages(
        &self,
        destination: &ParticipantId,
        mut envelopes: Vec<PaymentMessageEnvelope>,
    ) -> Result<u64, Status> {
        let mut client = self
            .participant(destination)
            .ok_or_else(|| Status::unavailable(format!("no address for {destination}")))?;
        let mut stored = 0u64;
        while !envelopes.is_empty() {
            let rest = envelopes.split_off(envelopes.len().min(PEER_DELIVER_MESSAGES_MAX));
            let body = DeliverPaymentMessagesRequest { messages: std::mem::replace(&mut envelopes, rest) };
            let reply: DeliverPaymentMessagesReply = client
                .deliver_payment_messages(self.signed(method::DELIVER_PAYMENT_MESSAGES, body))
                .await?
                .into_inner();
            stored += u64::from(reply.stored);
        }
        Ok(stored)
    }

    /// Asks `origin` for payment messages, signed.
    pub async fn fetch_payment_messages(
        &self,
        origin: &ParticipantId,
        body: FetchPaymentMessagesRequest,
    ) -> Result<FetchPaymentMessagesReply, Status> {
        let mut client =
            self.participant(origin).ok_or_else(|| Status::unavailable(format!("no address for {origin}")))?;
        Ok(client.fetch_payment_messages(self.signed(method::FETCH_PAYMENT_MESSAGES, body)).await?.into_inner())
    }

    fn connect(addresses: &[PeerAddress], tls: Option<NodeTls>) -> Result<Self, tonic::transport::Error> {
        let mut by_participant = BTreeMap::new();
        let mut validators = BTreeMap::new();
        for peer in addresses {
            let client = connect_lazy(&peer.address, tls.as_ref())?;
            by_participant.insert(peer.participant.clone(), Peer { address: peer.address.clone(), client });
            if let Some(index) = peer.validator {
                validators.insert(index, peer.participant.clone());
            }
        }
        Ok(Self { by_participant, validators, tls, signer: None })
    }

    /// The client of validator `index`.
    pub fn client(&self, index: u64) -> Option<Client> {
        self.validators.get(&index).and_then(|id| self.participant(id))
    }

    /// The address of validator `index`.
    pub fn address(&self, index: u64) -> Option<&str> {
        let id = self.validators.get(&index)?;
        self.by_participant.get(id).map(|peer| peer.address.as_str())
    }

    /// The client of any node by participant id.
    pub fn participant(&self, id: &ParticipantId) -> Option<Client> {
        self.by_participant.get(id).map(|peer| peer.client.clone())
    }

    /// Every validator index except `me` (none when this node is not a validator).
    pub fn others(&self, me: Option<u64>) -> impl Iterator<Item = (u64, Client)> + '_ {
        self.validators().filter(move |(index, _)| Some(*index) != me)
    }

    /// Every validator, by index.
    pub fn validators(&self) -> impl Iterator<Item = (u64, Client)> + '_ {
        self.validators.keys().filter_map(|index| self.client(*index).map(|client| (*index, client)))
    }

    /// Number of validators known.
    pub fn validator_count(&self) -> usize {
        self.validators.len()
    }
}
