//! Peer identity on devnets of real `remitd` processes: payment messages go
//! only to the participant the ledger names, whoever the caller says it is.
//!
//! Plaintext devnet (four validators; gw-us never pushes, so its
//! destinations fetch with signed requests): once a gw-us -> gw-ph
//! remittance completed, `FetchPaymentMessages` to gw-us for its UETR
//! - without credentials: `UNAUTHENTICATED`, no message;
//! - signed by gw-mx (asking for itself, or writing gw-ph in `destination`):
//!   `PERMISSION_DENIED`, no message;
//! - signed with gw-mx's key but claiming to be gw-ph, or stale, or
//!   replayed: `UNAUTHENTICATED`;
//! - signed by gw-ph: exactly its message; a UETR never certified: nothing.
//!
//! `DeliverPaymentMessages` to gw-ph: unsigned `UNAUTHENTICATED`; signed by
//! gw-mx with gw-us's envelope `PERMISSION_DENIED`; more than 1,000
//! envelopes from the true origin `INVALID_ARGUMENT`. A remittance the other
//! way (gw-ph -> gw-us, pushed with signed deliveries) completes through
//! `payout_pending`. Then every node is stopped and verified.
//!
//! TLS devnet (four validators and one member gateway): the caller is the
//! participant its certificate names, without any signature: gw-mx's
//! certificate gets `PERMISSION_DENIED`, gw-ph's gets its message, a
//! certificate for gw-mx with a signature header claiming gw-ph is
//! `UNAUTHENTICATED`; the member gateway's certificate cannot send Raft
//! votes (`PERMISSION_DENIED`) while a validator's reaches Raft.

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use remit_gateway::node::peer_identity::{method, RequestSigner, HEADER_PARTICIPANT, SIGNATURE_WINDOW_MS};
use remit_gateway::node::peers::Client;
use remit_gateway::tls::{NodeTls, CA_CERT_FILE, NODE_CERT_FILE, NODE_KEY_FILE};
use remit_proto::v1 as pb;
use remit_settlement::network::{load_identity_key, IDENTITY_KEY_FILE};
use remit_settlement::ParticipantId;
use remit_tests::net::{stop_and_verify, Acknowledged, Network, NetworkOptions};
use remit_tests::wallet::watch_to_end;
use tonic::Code;

/// gw-us: the origin, never pushes.
const ORIGIN: usize = 0;
/// gw-ph: the destination.
const DESTINATION: usize = 1;
/// gw-mx: another participant.
const OTHER: usize = 2;
/// Longest a remittance may take to complete.
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(60);

fn remittance_request(key: &str, from: (&str, &str), to: (&str, &str), amount: &str) -> pb::CreateRemittanceRequest {
    pb::CreateRemittanceRequest {
        quote_id: String::new(),
        quote: Some(pb::CreateQuoteRequest::sending(from.0, from.1, to.0, to.1, amount)),
        originator: Some(pb::Party::person_with_account("Okafor", "Ngozi", "PEERID001", from.0)),
        beneficiary: Some(pb::Party::person_with_account("Bautista", "Lea", "PEERID002", to.0)),
        purpose: "FAMI".into(),
        idempotency_key: key.into(),
        remittance_information: String::new(),
    }
}

/// Sends one remittance and waits until it completed; its UETR and history.
async fn complete(
    net: &Network,
    node: usize,
    request: pb::CreateRemittanceRequest,
    acks: &mut Acknowledged,
) -> anyhow::Result<(uuid::Uuid, Vec<String>)> {
    let mut wallet = net.wallet(node).await?;
    let created = wallet.create_remittance(request).await?.into_inner();
    acks.accepted.insert(created.uetr.parse()?);
    let done = watch_to_end(&mut wallet, &created.uetr, COMPLETE_TIMEOUT).await?;
    ensure!(done.status == "completed", "{} ended {} ({})", done.uetr, done.status, done.reason);
    Ok((created.uetr.parse()?, done.history.iter().map(|c| c.status.clone()).collect()))
}

fn signer(net: &Network, node: usize) -> anyhow::Result<RequestSigner> {
    let name = &net.node(node).name;
    let key = load_identity_key(&net.keys_dir.join(name).join(IDENTITY_KEY_FILE))?;
    Ok(RequestSigner::new(net.network.chain_id.clone(), ParticipantId::new(name)?, key))
}

fn fetch_body(uetr: &uuid::Uuid, destination: &str) -> pb::FetchPaymentMessagesRequest {
    pb::FetchPaymentMessagesRequest { uetrs: vec![uetr.as_bytes().to_vec()], destination: destination.into() }
}

/// The call must fail with `code`; prints the reason.
fn expect_code<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, what: &str) -> anyhow::Result<()> {
    match result {
        Ok(reply) => bail!("{what}: answered {reply:?}, expected {code:?}"),
        Err(status) => {
            ensure!(status.code() == code, "{what}: {:?} {}, expected {code:?}", status.code(), status.message());
            println!("{what}: {:?} ({})", status.code(), status.message());
            Ok(())
        }
    }
}

/// The one message the destination may fetch, checked to be for `uetr`.
async fn fetch_own(
    mut client: Client,
    request: tonic::Request<pb::FetchPaymentMessagesRequest>,
    uetr: &uuid::Uuid,
) -> anyhow::Result<pb::PaymentMessageEnvelope> {
    let reply = client.fetch_payment_messages(request).await.context("the destination's fetch")?.into_inner();
    ensure!(reply.messages.len() == 1 && reply.unknown.is_empty(), "destination's fetch: {reply:?}");
    let envelope = reply.messages.into_iter().next().context("one message")?;
    ensure!(envelope.uetr == uetr.as_bytes(), "message for another UETR");
    Ok(envelope)
}

async fn plaintext_scenario(net: &mut Network) -> anyhow::Result<()> {
    net.wait_ready().await?;
    let mut acks = Acknowledged::default();
    let request = remittance_request("peer-identity-1", ("US", "USD"), ("PH", "PHP"), "42.00");
    let (uetr, history) = complete(net, ORIGIN, request, &mut acks).await?;
    ensure!(!history.iter().any(|s| s == "payout_pending"), "the destination fetched: {history:?}");
    let (ph, mx, us) = (signer(net, DESTINATION)?, signer(net, OTHER)?, signer(net, ORIGIN)?);
    let mut origin = net.client(ORIGIN);

    let anonymous = origin.fetch_payment_messages(fetch_body(&uetr, "gw-ph")).await;
    expect_code(anonymous, Code::Unauthenticated, "fetch without credentials")?;
    let own = mx.request(method::FETCH_PAYMENT_MESSAGES, fetch_body(&uetr, "gw-mx"));
    expect_code(origin.fetch_payment_messages(own).await, Code::PermissionDenied, "fetch by gw-mx")?;
    let claimed = mx.request(method::FETCH_PAYMENT_MESSAGES, fetch_body(&uetr, "gw-ph"));
    let claimed = origin.fetch_payment_messages(claimed).await;
    expect_code(claimed, Code::PermissionDenied, "fetch by gw-mx naming gw-ph as destination")?;
    let impostor = RequestSigner::new(
        net.network.chain_id.clone(),
        ParticipantId::new("gw-ph")?,
        load_identity_key(&net.keys_dir.join("gw-mx").join(IDENTITY_KEY_FILE))?,
    );
    let forged = impostor.request(method::FETCH_PAYMENT_MESSAGES, fetch_body(&uetr, "gw-ph"));
    expect_code(origin.fetch_payment_messages(forged).await, Code::Unauthenticated, "gw-mx's key claiming gw-ph")?;
    let now_ms = u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_millis())?;
    let stale = ph.request_at(
        method::FETCH_PAYMENT_MESSAGES,
        fetch_body(&uetr, "gw-ph"),
        now_ms - 2 * SIGNATURE_WINDOW_MS,
        rand::random(),
    );
    expect_code(origin.fetch_payment_messages(stale).await, Code::Unauthenticated, "stale signature")?;

    let nonce: [u8; 16] = rand::random();
    let signed = || ph.request_at(method::FETCH_PAYMENT_MESSAGES, fetch_body(&uetr, "gw-ph"), now_ms, nonce);
    let envelope = fetch_own(origin.clone(), signed(), &uetr).await?;
    ensure!(envelope.origin == "gw-us", "envelope origin {}", envelope.origin);
    expect_code(origin.fetch_payment_messages(signed()).await, Code::Unauthenticated, "replayed fetch")?;
    let never = uuid::Uuid::new_v4();
    let reply = origin
        .fetch_payment_messages(ph.request(method::FETCH_PAYMENT_MESSAGES, fetch_body(&never, "gw-ph")))
        .await?
        .into_inner();
    ensure!(reply.messages.is_empty() && reply.unknown.is_empty(), "an uncertified UETR: {reply:?}");

    let mut destination = net.client(DESTINATION);
    let deliver = |messages: Vec<pb::PaymentMessageEnvelope>| pb::DeliverPaymentMessagesRequest { messages };
    let unsigned = destination.deliver_payment_messages(deliver(vec![envelope.clone()])).await;
    expect_code(unsigned, Code::Unauthenticated, "deliver without credentials")?;
    let relayed = mx.request(method::DELIVER_PAYMENT_MESSAGES, deliver(vec![envelope.clone()]));
    expect_code(destination.deliver_payment_messages(relayed).await, Code::PermissionDenied, "deliver by gw-mx")?;
    let flood = us.request(method::DELIVER_PAYMENT_MESSAGES, deliver(vec![envelope.clone(); 1_001]));
    expect_code(destination.deliver_payment_messages(flood).await, Code::InvalidArgument, "1,001 envelopes")?;
    let again = us.request(method::DELIVER_PAYMENT_MESSAGES, deliver(vec![envelope]));
    let stored = destination.deliver_payment_messages(again).await.context("the origin's delivery")?.into_inner();
    ensure!(stored.stored == 1, "the origin's own envelope: stored {}", stored.stored);

    let request = remittance_request("peer-identity-back", ("PH", "PHP"), ("US", "USD"), "5000.00");
    let (_, history) = complete(net, DESTINATION, request, &mut acks).await?;
    ensure!(history.iter().any(|s| s == "payout_pending"), "pushed with a signed delivery: {history:?}");

    let everything: Vec<usize> = (0..net.len()).collect();
    let (height, _) = net.wait_settled(&everything, Duration::from_secs(30)).await?;
    stop_and_verify(net, height, &acks)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_messages_go_only_to_the_certified_destination() {
    let options = NetworkOptions {
        node_env: vec![(ORIGIN, "REMIT__TESTING__SKIP_MESSAGE_PUSH".into(), "true".into())],
        ..NetworkOptions::default()
    };
    let mut net = Network::start(options).await.expect("the network starts");
    let result = plaintext_scenario(&mut net).await;
    net.finish(result);
}

fn tls_of(net: &Network, node: usize) -> anyhow::Result<NodeTls> {
    let dir = net.keys_dir.join(&net.node(node).name);
    Ok(NodeTls::load(&net.keys_dir.join(CA_CERT_FILE), &dir.join(NODE_CERT_FILE), &dir.join(NODE_KEY_FILE))?)
}

async fn tls_scenario(net: &mut Network) -> anyhow::Result<()> {
    net.wait_ready().await?;
    let mut acks = Acknowledged::default();
    let request = remittance_request("peer-identity-tls", ("US", "USD"), ("PH", "PHP"), "43.00");
    let (uetr, _) = complete(net, ORIGIN, request, &mut acks).await?;

    let mut as_mx = net.client_with(ORIGIN, Some(&tls_of(net, OTHER)?))?;
    let denied = as_mx.fetch_payment_messages(fetch_body(&uetr, "gw-mx")).await;
    expect_code(denied, Code::PermissionDenied, "fetch with gw-mx's certificate")?;
    let mut conflicting = tonic::Request::new(fetch_body(&uetr, "gw-ph"));
    conflicting.metadata_mut().insert(HEADER_PARTICIPANT, tonic::metadata::MetadataValue::from_static("gw-ph"));
    let conflicting = as_mx.fetch_payment_messages(conflicting).await;
    expect_code(conflicting, Code::Unauthenticated, "gw-mx's certificate claiming gw-ph")?;
    let as_ph = net.client_with(ORIGIN, Some(&tls_of(net, DESTINATION)?))?;
    fetch_own(as_ph, tonic::Request::new(fetch_body(&uetr, "gw-ph")), &uetr).await?;

    // Validators are nodes 0-3; the member gateway comes after them.
    let gateway = net.len() - 1;
    let vote = || pb::RaftRequest { payload: vec![0xff; 4] };
    let mut as_gateway = net.client_with(ORIGIN, Some(&tls_of(net, gateway)?))?;
    expect_code(as_gateway.raft_vote(vote()).await, Code::PermissionDenied, "Raft vote from the member gateway")?;
    // A validator's certificate reaches Raft (and its garbage is refused there).
    let mut as_validator = net.client_with(ORIGIN, Some(&tls_of(net, OTHER)?))?;
    expect_code(as_validator.raft_vote(vote()).await, Code::InvalidArgument, "Raft vote from a validator")?;

    let everything: Vec<usize> = (0..net.len()).collect();
    let (height, _) = net.wait_settled(&everything, Duration::from_secs(60)).await?;
    stop_and_verify(net, height, &acks)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_the_certificate_names_the_caller() {
    let options = NetworkOptions { tls: true, gateways: 1, ..NetworkOptions::default() };
    let mut net = Network::start(options).await.expect("the network starts");
    let result = tls_scenario(&mut net).await;
    net.finish(result);
}
