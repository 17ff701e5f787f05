//! `/healthz`, `/readyz` and Prometheus `/metrics`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use remit_settlement::replica::state_machine::lock;
use remit_settlement::replica::{Raft, SharedChain};

use crate::metrics::Metrics;

/// What the HTTP handlers read.
#[derive(Clone)]
pub struct HttpState {
    /// The Raft instance (leader, state).
    pub raft: Raft,
    /// The chain (heights).
    pub chain: SharedChain,
    /// The metrics.
    pub metrics: Metrics,
    /// This node's validator index.
    pub me: u64,
    /// The remittance engine (operator views).
    pub engine: crate::remittance::engine::Engine,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HttpState(validator {})", self.me)
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
    let leader = state.raft.metrics().borrow().current_leader;
    let (tip, certified) = {
        let chain = lock(&state.chain);
        (chain.tip(), chain.certified_height())
    };
    // Ready means: a leader is known and this node holds a certified chain
    // (at least the genesis block carries its threshold certificate).
    match (leader, tip, certified) {
        (Some(leader), Some((height, _)), Some(certified)) => {
            (StatusCode::OK, format!("ready: height {height}, certified {certified}, leader {leader}\n"))
        }
        (None, _, _) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: no leader\n".into()),
        (_, None, _) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: no genesis block\n".into()),
        (_, _, None) => (StatusCode::SERVICE_UNAVAILABLE, "not ready: no certified block yet\n".into()),
    }
}

async fn metrics(State(state): State<HttpState>) -> String {
    let leader = state.raft.metrics().borrow().current_leader;
    state.metrics.leader.set(leader.map_or(-1, |l| i64::try_from(l).unwrap_or(-1)));
    state.metrics.is_leader.set(i64::from(leader == Some(state.me)));
    {
        let chain = lock(&state.chain);
        if let Some((height, _)) = chain.tip() {
            state.metrics.height.set(i64::try_from(height.0).unwrap_or(i64::MAX));
        }
        if let Some(certified) = chain.certified_height() {
            state.metrics.certified_height.set(i64::try_from(certified.0).unwrap_or(i64::MAX));
        }
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
