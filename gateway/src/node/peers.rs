//! gRPC clients to the other validators, one lazily connected channel each.

use std::collections::BTreeMap;
use std::time::Duration;

use remit_proto::v1::peer_client::PeerClient;
use tonic::transport::{Channel, Endpoint};

use crate::constants::{GRPC_MESSAGE_BYTES_MAX, PEER_RPC_TIMEOUT_MS};
use crate::tls::NodeTls;

/// A client to one peer.
pub type Client = PeerClient<Channel>;

/// Clients to every validator, by validator index.
#[derive(Clone, Debug)]
pub struct Peers {
    clients: BTreeMap<u64, Client>,
    addresses: BTreeMap<u64, String>,
}

/// Builds a lazily connecting client to `address` (host:port).
pub fn connect_lazy(address: &str, tls: Option<&NodeTls>) -> Result<Client, tonic::transport::Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{address}"))?
        .timeout(Duration::from_millis(PEER_RPC_TIMEOUT_MS))
        .connect_timeout(Duration::from_millis(1_000))
        .tcp_nodelay(true);
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls.client())?;
    }
    Ok(PeerClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX))
}

impl Peers {
    /// Clients for `(index, address)` pairs.
    pub fn new(addresses: BTreeMap<u64, String>, tls: Option<&NodeTls>) -> Result<Self, tonic::transport::Error> {
        let clients = addresses
            .iter()
            .map(|(index, address)| connect_lazy(address, tls).map(|client| (*index, client)))
            .collect::<Result<_, _>>()?;
        Ok(Self { clients, addresses })
    }

    /// The client of validator `index`.
    pub fn client(&self, index: u64) -> Option<Client> {
        self.clients.get(&index).cloned()
    }

    /// The address of validator `index`.
    pub fn address(&self, index: u64) -> Option<&str> {
        self.addresses.get(&index).map(String::as_str)
    }

    /// Every validator index except `me`.
    pub fn others(&self, me: u64) -> impl Iterator<Item = (u64, Client)> + '_ {
        self.clients.iter().filter(move |(index, _)| **index != me).map(|(index, client)| (*index, client.clone()))
    }
}
