//! What an authenticated caller ([`super::peer_identity`]) may do with
//! payment messages. The rules, by identity only:
//!
//! - **Fetch.** A message goes only to the participant that is the
//!   destination of the *certified* transfer with its UETR (this node's
//!   chain: the transfer index, at or below the certified height). A request
//!   naming any UETR certified to another destination is refused whole with
//!   `PERMISSION_DENIED` (a destination never asks for a transfer that is
//!   not its own, so only a wrong caller does; the ledger is shared, so the
//!   refusal tells it nothing it could not read there). A UETR not yet
//!   certified here, or no longer remembered, is left out of the answer
//!   (neither a message nor `unknown`): the destination asks again later.
//!   A `destination` field naming someone other than the caller is refused
//!   with `PERMISSION_DENIED`; the field is never what authorises.
//! - **Deliver.** At most [`PEER_DELIVER_MESSAGES_MAX`] envelopes per call
//!   (`INVALID_ARGUMENT` above it), and every envelope's `origin` must be the
//!   caller (`PERMISSION_DENIED` otherwise); either refusal stores nothing.

use remit_proto::v1::PaymentMessageEnvelope;
use remit_settlement::ids::Uetr;
use remit_settlement::replica::state_machine::lock;
use remit_settlement::replica::SharedChain;
use remit_settlement::ParticipantId;
use tonic::Status;

pub use crate::constants::PEER_DELIVER_MESSAGES_MAX;
use crate::remittance::engine::FETCH_MESSAGES_MAX;

fn parse_uetr(bytes: &[u8], i: usize) -> Result<Uetr, Status> {
    let array: [u8; 16] =
        bytes.try_into().map_err(|_| Status::invalid_argument(format!("uetrs[{i}]: expected a 16-byte UUID v4")))?;
    Uetr::from_bytes(array).map_err(|e| Status::invalid_argument(format!("uetrs[{i}]: {e}")))
}

/// The UETRs among `uetrs` whose certified transfer goes to `caller`, in
/// request order; `PERMISSION_DENIED` when any is certified to another
/// participant, `INVALID_ARGUMENT` for a malformed or oversized list.
pub fn fetchable(
    chain: &SharedChain,
    caller: &ParticipantId,
    destination_field: &str,
    uetrs: &[Vec<u8>],
) -> Result<Vec<Vec<u8>>, Status> {
    if !destination_field.is_empty() && destination_field != caller.as_str() {
        return Err(Status::permission_denied(format!(
            "destination: names {destination_field}, but the caller is {caller}"
        )));
    }
    if uetrs.len() > FETCH_MESSAGES_MAX {
        return Err(Status::invalid_argument(format!("uetrs: at most {FETCH_MESSAGES_MAX}, got {}", uetrs.len())));
    }
    let parsed = uetrs.iter().enumerate().map(|(i, bytes)| parse_uetr(bytes, i)).collect::<Result<Vec<_>, _>>()?;
    let chain = lock(chain);
    let Some(certified) = chain.certified_height() else { return Ok(Vec::new()) };
    let mut allowed = Vec::with_capacity(parsed.len());
    for (i, uetr) in parsed.iter().enumerate() {
        let Some(transfer) = chain.state().applied_transfer(uetr) else { continue };
        if transfer.height > certified {
            continue;
        }
        if transfer.destination != *caller {
            return Err(Status::permission_denied(format!(
                "uetrs[{i}]: the certified transfer {uetr} is not addressed to {caller}"
            )));
        }
        allowed.push(uetrs[i].clone());
    }
    Ok(allowed)
}

/// Whether `caller` may deliver `envelopes`: within the cap, and the
/// origin of every one.
pub fn check_delivery(caller: &ParticipantId, envelopes: &[PaymentMessageEnvelope]) -> Result<(), Status> {
    if envelopes.len() > PEER_DELIVER_MESSAGES_MAX {
        return Err(Status::invalid_argument(format!(
            "messages: at most {PEER_DELIVER_MESSAGES_MAX} per call, got {}",
            envelopes.len()
        )));
    }
    if let Some((i, envelope)) = envelopes.iter().enumerate().find(|(_, e)| e.origin != caller.as_str()) {
        return Err(Status::permission_denied(format!(
            "messages[{i}].origin: {} is not the caller {caller}; a gateway delivers only its own messages",
            envelope.origin
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use remit_settlement::chain::Chain;
    use remit_settlement::network::{generate_network, write_network, Keyring, NetworkShape};
    use remit_settlement::store::SledLedgerStore;
    use remit_settlement::{Entry, SignatureCheck};
    use remit_simulations::traffic::{TrafficConfig, TrafficGenerator};

    use super::*;

    const GENESIS_MS: u64 = 1_800_000_000_000;

    /// Accepted transfers: (UETR, destination).
    type Accepted = Vec<(Uetr, ParticipantId)>;

    /// The accepted transfers among `entries`.
    fn accepted(chain: &Chain<SledLedgerStore>, entries: &[Entry]) -> Accepted {
        let batches = entries.iter().filter_map(|e| match e {
            Entry::TransferBatch { batch } => Some(batch),
            _ => None,
        });
        let transfers = batches.flat_map(|b| b.transfers.iter());
        transfers
            .filter(|t| chain.state().applied_transfer(&t.uetr).is_some())
            .map(|t| (t.uetr, t.destination.clone()))
            .collect()
    }

    /// A chain with one certified block of traffic above genesis and one
    /// uncertified block above it: (chain, certified transfers, uncertified ones).
    fn chain(dir: &std::path::Path) -> (SharedChain, Accepted, Accepted) {
        let generated = generate_network(NetworkShape::validators(4), GENESIS_MS).expect("network");
        write_network(&generated, &dir.join("keys")).expect("keys written");
        let keyring = Keyring::load(&dir.join("keys")).expect("keyring");
        let store = SledLedgerStore::open(&dir.join("ledger")).expect("store");
        let mut chain = Chain::open(store, Some(&keyring.network)).expect("chain");
        let certify = |block: &remit_settlement::Block| keyring.certify(&block.header).ok();
        chain.append(keyring.network.genesis_proposal(), SignatureCheck::Verify, certify).expect("genesis");
        let config = TrafficConfig { seed: 7, ..TrafficConfig::default() };
        let mut traffic = TrafficGenerator::new(&keyring.network, &keyring.identities, config);
        let mut block = |certified: bool, at_ms: u64| {
            let entries = traffic.entries(32, at_ms);
            let proposal = chain.next_proposal(at_ms, entries.clone());
            let (_, certificate) = chain
                .append(proposal, SignatureCheck::Verify, |b| if certified { certify(b) } else { None })
                .expect("appended");
            assert_eq!(certificate.is_some(), certified);
            accepted(&chain, &entries)
        };
        let certified = block(true, GENESIS_MS + 1_000);
        let uncertified = block(false, GENESIS_MS + 2_000);
        assert!(!certified.is_empty() && !uncertified.is_empty(), "traffic was accepted");
        (Arc::new(Mutex::new(chain)), certified, uncertified)
    }

    #[test]
    fn fetch_is_only_for_the_certified_destination() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (chain, certified, uncertified) = chain(dir.path());
        let (uetr, destination) = certified[0].clone();
        let bytes = |u: &Uetr| u.as_bytes().to_vec();
        // The destination gets its UETR; the `destination` field may be empty or itself.
        assert_eq!(fetchable(&chain, &destination, "", &[bytes(&uetr)]).expect("allowed"), vec![bytes(&uetr)]);
        let named = fetchable(&chain, &destination, destination.as_str(), &[bytes(&uetr)]).expect("allowed");
        assert_eq!(named, vec![bytes(&uetr)]);
        // Anybody else is refused, whatever the field says, for the whole request.
        let other = certified.iter().map(|(_, d)| d).find(|d| **d != destination).cloned().unwrap_or_else(|| {
            ParticipantId::new(if destination.as_str() == "gw-zz" { "gw-yy" } else { "gw-zz" }).expect("valid")
        });
        let denied = fetchable(&chain, &other, "", &[bytes(&uetr)]).expect_err("not the destination");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let own: Vec<Vec<u8>> = certified.iter().filter(|(_, d)| *d == other).map(|(u, _)| bytes(u)).collect();
        let mixed = [own, vec![bytes(&uetr)]].concat();
        assert_eq!(fetchable(&chain, &other, "", &mixed).expect_err("mixed").code(), tonic::Code::PermissionDenied);
        let field = fetchable(&chain, &other, destination.as_str(), &[bytes(&uetr)]).expect_err("field lies");
        assert_eq!(field.code(), tonic::Code::PermissionDenied);
        // Not yet certified, or never on the ledger: left out, for anyone.
        let (pending, pending_destination) = uncertified[0].clone();
        let never = Uetr::new_random();
        let asked = [bytes(&pending), bytes(&never), bytes(&uetr)];
        assert_eq!(fetchable(&chain, &pending_destination, "", &asked[..2]).expect("nothing"), Vec::<Vec<u8>>::new());
        assert_eq!(fetchable(&chain, &destination, "", &asked).expect("own only"), vec![bytes(&uetr)]);
        // Malformed or too many.
        let malformed = fetchable(&chain, &destination, "", &[vec![1, 2, 3]]).expect_err("malformed");
        assert_eq!(malformed.code(), tonic::Code::InvalidArgument);
        let many = vec![bytes(&uetr); FETCH_MESSAGES_MAX + 1];
        assert_eq!(
            fetchable(&chain, &destination, "", &many).expect_err("too many").code(),
            tonic::Code::InvalidArgument
        );
    }

    fn envelope(origin: &str) -> PaymentMessageEnvelope {
        PaymentMessageEnvelope { uetr: vec![0; 16], origin: origin.into(), salt: vec![0; 32], message: vec![1] }
    }

    #[test]
    fn delivery_only_from_the_origin_within_the_cap() {
        let us = ParticipantId::new("gw-us").expect("valid id");
        assert!(check_delivery(&us, &[envelope("gw-us"), envelope("gw-us")]).is_ok());
        assert!(check_delivery(&us, &[]).is_ok());
        let mixed = check_delivery(&us, &[envelope("gw-us"), envelope("gw-ph")]).expect_err("not the origin");
        assert_eq!(mixed.code(), tonic::Code::PermissionDenied);
        assert!(mixed.message().starts_with("messages[1].origin: gw-ph"), "{}", mixed.message());
        let full = vec![envelope("gw-us"); PEER_DELIVER_MESSAGES_MAX];
        assert!(check_delivery(&us, &full).is_ok());
        let over = vec![envelope("gw-us"); PEER_DELIVER_MESSAGES_MAX + 1];
        assert_eq!(check_delivery(&us, &over).expect_err("over the cap").code(), tonic::Code::InvalidArgument);
    }
}
