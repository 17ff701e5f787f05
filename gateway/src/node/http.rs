//! `/healthz`, `/readyz`, Prometheus `/metrics`, the operator view of a
//! remittance, and `POST /v1/governance` (a governance proposal with its
//! approvals, put on the ledger and answered once certified).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use remit_proto::v1::SubmitGovernanceRequest;
use remit_settlement::codec::Writer;
use remit_settlement::participant::validate_cap;
use remit_settlement::replica::state_machine::lock;
use remit_settlement::replica::SharedChain;
use remit_settlement::store::LedgerStore;
use remit_settlement::{ChainId, Entry, GovernanceAction, GovernanceConfig, Height, SignedProposal};
use serde::Serialize;
use tracing::{info, info_span, Instrument};

use super::intake::LedgerIntake;
use super::RoleParts;
use crate::constants::GOVERNANCE_CERTIFY_WAIT_MS;
use crate::metrics::Metrics;

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// Validator (Raft) or gateway (leader hint).
    pub role: RoleParts,
    /// The chain (heights).
    pub chain: SharedChain,
    /// The metrics.
    pub metrics: Metrics,
    /// The remittance engine (operator views).
    pub engine: crate::remittance::engine::Engine,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpState({:?})", self.role)
    }
}

/// The router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/ops/remittances/{uetr}", get(operator_remittance))
        .with_state(state)
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, String) {
    let leader = state.role.leader();
    let (tip, certified) = {
        let chain = lock(&state.chain);
        (chain.tip(), chain.certified_height())
    };
    let role = state.role.role().as_str();
    // Ready means: a leader is known (a gateway has heard from a validator)
    // and this node holds a certified chain (at least the genesis block
    // carries its threshold certificate).
    match (leader, tip, certified) {
        (Some(leader), Some((height, _)), Some(certified)) => {
            (StatusCode::OK, format!("ready: {role}, height {height}, certified {certified}, leader {leader}\n"))
        }
        (None, _, _) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {role}, no leader known\n")),
        (_, None, _) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: no genesis block\n".into()),
        (_, _, None) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: no certified block yet\n".into()),
    }
}

async fn metrics(State(state): State<HttpState>) -> String {
    let leader = state.role.leader();
    state.metrics.leader.set(leader.map_or(-1, |l| i64::try_from(l).unwrap_or(-1)));
    let leading = state.role.validator_index().is_some() && leader == state.role.validator_index();
    state.metrics.is_leader.set(i64::from(leading));
    {
        let chain = lock(&state.chain);
        if let Some((height, _)) = chain.tip() {
            state.metrics.height.set(i64::try_from(height.0).unwrap_or(i64::MAX));
        }
        if let Some(certified) = chain.certified_height() {
            state.metrics.certified_height.set(i64::try_from(certified.0).unwrap_or(i64::MAX));
        }
        state.metrics.index_transfers.set(i64::try_from(chain.state().applied_transfer_count()).unwrap_or(i64::MAX));
    }
    state.metrics.render()
}

/// An operator's view of any remittance this gateway holds (origin or
/// destination side), parties masked. Served on the operator port only.
async fn operator_remittance(
    State(state): State<HttpState>,
    Path(uetr): Path<String>,
) -> Result<axum::Json<remit_proto::v1::Remittance>, (StatusCode, String)> {
    let uetr: remit_settlement::Uetr =
        uetr.parse().map_err(|_| (StatusCode::BAD_REQUEST, "uetr: not a UETR\n".to_owned()))?;
    let record = state.engine.record(&uetr).ok_or((StatusCode::NOT_FOUND, format!("no remittance {uetr}\n")))?;
    let mut view = crate::api::convert::remittance_json(&record);
    view.status = record.status.as_str().to_owned();
    Ok(axum::Json(view))
}

/// What `POST /v1/governance` needs.
#[derive(Clone)]
pub struct GovernanceEndpoint {
    /// This network's chain id (a proposal for another chain is refused).
    pub chain_id: ChainId,
    /// The governance keys and threshold (to report how many approvals count).
    pub governance: GovernanceConfig,
    /// Where the entry goes (the proposer, or the validators).
    pub intake: Arc<dyn LedgerIntake>,
    /// The chain (to wait for the certificate).
    pub chain: SharedChain,
}

impl std::fmt::Debug for GovernanceEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GovernanceEndpoint({})", self.chain_id)
    }
}

/// The governance route, mounted wherever the node's API is served. It needs
/// no API key: the governance signatures inside are the authorisation, and
/// the state machine checks them.
pub fn governance_router(endpoint: GovernanceEndpoint) -> Router {
    Router::new().route("/v1/governance", post(submit_governance)).with_state(endpoint)
}

/// The answer of `POST /v1/governance`.
#[derive(Debug, Serialize)]
pub struct GovernanceOutcome {
    /// What the proposal does, in words.
    pub action: String,
    /// Height of the block that holds the entry.
    pub height: u64,
    /// Hash of that block.
    pub block_hash: String,
    /// `applied` or `refused`.
    pub status: &'static str,
    /// Why it was refused (snake_case reason), when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The ISO 20022 code of the refusal, where one fits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iso_code: Option<String>,
    /// Distinct governance keys whose approval verifies.
    pub approvals: usize,
    /// Approvals needed.
    pub threshold: u32,
    /// Whether the block is certified (final).
    pub certified: bool,
}

type Refusal = (StatusCode, Json<serde_json::Value>);

fn refusal(status: StatusCode, field: &str, message: impl std::fmt::Display) -> Refusal {
    (status, Json(serde_json::json!({ "field": field, "error": format!("{field}: {message}") })))
}

/// Checks what the state machine would refuse as a malformed entry, so the
/// proposer hears about it at once and with the field.
fn check_action(action: &GovernanceAction) -> Result<(), Refusal> {
    match action {
        GovernanceAction::RegisterParticipant { participant } => participant
            .validate()
            .map_err(|e| refusal(StatusCode::BAD_REQUEST, &format!("action.participant.{}", e.field), e.reason)),
        GovernanceAction::SetNetDebitCap { currency, cap, .. } => validate_cap(*currency, *cap, "action.cap")
            .map_err(|e| refusal(StatusCode::BAD_REQUEST, &e.field, e.reason)),
        GovernanceAction::SetParticipantStatus { .. } => Ok(()),
    }
}

async fn submit_governance(
    State(endpoint): State<GovernanceEndpoint>,
    body: axum::body::Bytes,
) -> Result<Json<GovernanceOutcome>, Refusal> {
    let proposal: SignedProposal = serde_json::from_slice(&body).map_err(|e| {
        let path = e.to_string();
        refusal(StatusCode::BAD_REQUEST, "body", format!("not a governance proposal: {path}"))
    })?;
    if proposal.chain_id != endpoint.chain_id {
        return Err(refusal(
            StatusCode::BAD_REQUEST,
            "chain_id",
            format!("{} is not this network's chain ({})", proposal.chain_id, endpoint.chain_id),
        ));
    }
    check_action(&proposal.proposal.action)?;
    let approvals = endpoint.governance.approvals_counted(&endpoint.chain_id, &proposal.proposal, &proposal.approvals);
    let action = proposal.proposal.action.describe();
    let span = info_span!("remit.governance.submit", nonce = proposal.proposal.nonce, approvals);
    let entry = Entry::Governance { proposal: proposal.proposal, approvals: proposal.approvals };
    let mut w = Writer::default();
    entry.encode(&mut w);
    let request = SubmitGovernanceRequest { entry: w.into_bytes(), forwarded: false };
    let reply = endpoint.intake.submit_governance(request).instrument(span).await.map_err(|status| {
        let code = match status.code() {
            tonic::Code::InvalidArgument => StatusCode::BAD_REQUEST,
            _ => StatusCode::SERVICE_UNAVAILABLE,
        };
        refusal(code, "entry", status.message())
    })?;
    let certified = wait_certified(&endpoint.chain, Height(reply.height)).await;
    let refused = reply.batch_rejected;
    info!(height = reply.height, refused, reason = %reply.batch_reason, certified, %action, "governance entry on the ledger");
    Ok(Json(GovernanceOutcome {
        action,
        height: reply.height,
        block_hash: hex::encode(&reply.block_hash),
        status: if refused { "refused" } else { "applied" },
        reason: refused.then(|| reply.batch_reason.clone()),
        iso_code: (refused && !reply.batch_iso_code.is_empty()).then(|| reply.batch_iso_code.clone()),
        approvals,
        threshold: endpoint.governance.threshold,
        certified,
    }))
}

/// Waits until this node stores the certificate of the block at `height`.
async fn wait_certified(chain: &SharedChain, height: Height) -> bool {
    let deadline = Instant::now() + Duration::from_millis(GOVERNANCE_CERTIFY_WAIT_MS);
    loop {
        let certified = lock(chain).store().certificate(height).ok().flatten().is_some();
        if certified {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
