//! `/healthz`, `/readyz`, Prometheus `/metrics`, the operator view of a
//! remittance (`/ops/*`, for the node's operators only: `authorization:
//! Bearer <operator token>`), and `POST /v1/governance` (a governance
//! proposal with its approvals, put on the ledger and answered once
//! certified).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
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
    /// Who may read the operator views.
    pub operators: Operators,
}

/// The operators allowed to read `/ops/*`, by the SHA-256 of their tokens.
#[derive(Clone, Debug, Default)]
pub struct Operators {
    by_hash: Arc<std::collections::HashMap<[u8; 32], String>>,
}

impl Operators {
    /// From `[[http.operators]]`; an error names the entry and the reason.
    pub fn new(configs: &[crate::config::OperatorConfig]) -> Result<Self, String> {
        let mut by_hash = std::collections::HashMap::new();
        for (i, operator) in configs.iter().enumerate() {
            let hash: [u8; 32] = hex::decode(&operator.token_sha256)
                .ok()
                .and_then(|bytes| bytes.try_into().ok())
                .ok_or_else(|| format!("config key `http.operators[{i}].token_sha256`: not 64 hex digits"))?;
            if by_hash.insert(hash, operator.id.clone()).is_some() {
                return Err(format!("config key `http.operators[{i}].token_sha256`: the same token twice"));
            }
        }
        Ok(Self { by_hash: Arc::new(by_hash) })
    }

    /// The operator presenting `authorization: Bearer <token>`, or why not.
    fn authenticate(&self, headers: &HeaderMap) -> Result<&str, &'static str> {
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(crate::api::auth::bearer)
            .ok_or("operator views need `authorization: Bearer <operator token>`")?;
        let hash = crate::api::auth::key_digest(token);
        self.by_hash.get(&hash).map(String::as_str).ok_or("unknown operator token")
    }
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
async fn operator_remittance(State(state): State<HttpState>, headers: HeaderMap, Path(uetr): Path<String>) -> Response {
    use axum::response::IntoResponse as _;
    let operator = match state.operators.authenticate(&headers) {
        Ok(operator) => operator,
        Err(reason) => {
            let challenge = [(axum::http::header::WWW_AUTHENTICATE, "Bearer")];
            return (StatusCode::UNAUTHORIZED, challenge, format!("{reason}\n")).into_response();
        }
    };
    let Ok(uetr) = uetr.parse::<remit_settlement::Uetr>() else {
        return (StatusCode::BAD_REQUEST, "uetr: not a UETR\n").into_response();
    };
    info!(operator, %uetr, "operator view of a remittance");
    let Some(record) = state.engine.record(&uetr) else {
        return (StatusCode::NOT_FOUND, format!("no remittance {uetr}\n")).into_response();
    };
    let mut view = crate::api::convert::remittance_json(&record);
    view.status = record.status.as_str().to_owned();
    axum::Json(view).into_response()
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

#[cfg(test)]
mod operator_tests {
    use super::*;
    use crate::config::OperatorConfig;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::AUTHORIZATION, format!("Bearer {token}").parse().expect("header value"));
        headers
    }

    #[test]
    fn only_a_configured_operator_token_is_accepted() {
        let config = OperatorConfig { id: "ops-a".into(), token_sha256: crate::api::auth::hash_key("secret-token") };
        let operators = Operators::new(&[config]).expect("valid");
        assert_eq!(operators.authenticate(&bearer("secret-token")), Ok("ops-a"));
        assert_eq!(operators.authenticate(&bearer("other-token")), Err("unknown operator token"));
        assert!(operators.authenticate(&HeaderMap::new()).is_err_and(|reason| reason.contains("Bearer")));
        assert!(Operators::default().authenticate(&bearer("secret-token")).is_err(), "none configured: none accepted");
    }

    #[test]
    fn a_bad_or_repeated_token_hash_names_its_entry() {
        let good = OperatorConfig { id: "a".into(), token_sha256: crate::api::auth::hash_key("t") };
        let short = OperatorConfig { id: "b".into(), token_sha256: "abcd".into() };
        let error = Operators::new(&[good.clone(), short]).expect_err("refused");
        assert!(error.contains("http.operators[1].token_sha256"), "{error}");
        let error = Operators::new(&[good.clone(), good]).expect_err("refused");
        assert!(error.contains("the same token twice"), "{error}");
    }
}
