//! The wallet API of a gateway: `remit.v1.Remittances` over gRPC and the
//! same operations as REST/JSON, on one port (HTTP/1.1 and HTTP/2), with
//! the OpenAPI document at `/openapi.json`.

pub mod auth;
pub mod convert;
pub mod grpc;
pub mod openapi;
pub mod rest;

use std::net::SocketAddr;

use remit_proto::v1 as pb;
use tracing::info;

use crate::remittance::engine::Engine;
use auth::Authenticator;

/// The webhook delivery log of one client, newest first.
pub fn webhook_deliveries(engine: &Engine, client: &str, limit: usize) -> Vec<pb::WebhookDelivery> {
    let Some(webhooks) = engine.webhooks() else { return Vec::new() };
    webhooks
        .deliveries(client, limit)
        .into_iter()
        .map(|d| pb::WebhookDelivery {
            event_id: d.event_id,
            uetr: d.uetr.to_string(),
            status: d.status.as_str().to_owned(),
            attempts: d.attempts,
            state: serde_json::to_value(d.state).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default(),
            last_http_status: d.last_http_status.map_or(0, u32::from),
            last_error: d.last_error.unwrap_or_default(),
            created_at_ms: d.created_at_ms,
            updated_at_ms: d.updated_at_ms,
        })
        .collect()
}

/// Creates a batch of remittances for `client`, each judged on its own:
/// one result per request, in order (SubmitRemittances, StreamRemittances
/// and `POST /v1/remittances:batch`).
pub async fn submit_all(
    engine: &Engine,
    client: &str,
    requests: Vec<pb::CreateRemittanceRequest>,
) -> pb::SubmitRemittancesResponse {
    let mut slots: Vec<Option<pb::SubmitResult>> = Vec::with_capacity(requests.len());
    let mut inputs = Vec::new();
    let mut positions = Vec::new();
    for request in &requests {
        match convert::create_input(request) {
            Ok(input) => {
                positions.push(slots.len());
                slots.push(None);
                inputs.push(input);
            }
            Err(error) => slots.push(Some(convert::submit_error(&error))),
        }
    }
    let results = engine.create_many(client, inputs).await;
    for (position, result) in positions.into_iter().zip(results) {
        slots[position] = Some(match result {
            Ok(record) => {
                pb::SubmitResult { remittance: Some(convert::remittance_json(&record)), ..Default::default() }
            }
            Err(error) => convert::submit_error(&error),
        });
    }
    pb::SubmitRemittancesResponse { results: slots.into_iter().map(Option::unwrap_or_default).collect() }
}

/// The whole API as one router: gRPC (content-type application/grpc), REST
/// and `/openapi.json`.
pub fn router(engine: Engine, auth: Authenticator) -> axum::Router {
    let grpc = tonic::service::Routes::new(grpc::server(engine.clone(), auth.clone())).into_axum_router();
    rest::router(engine, auth)
        .route("/openapi.json", axum::routing::get(|| async { axum::Json(openapi::document()) }))
        .merge(grpc)
}

/// Binds and serves the API until the task is dropped.
pub async fn serve(
    listen: SocketAddr,
    engine: Engine,
    auth: Authenticator,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    serve_router(listen, router(engine, auth)).await
}

/// Binds and serves `app` (the API, possibly with more routes) until the task is dropped.
pub async fn serve_router(listen: SocketAddr, app: axum::Router) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    info!(%listen, "wallet API listening (gRPC and REST)");
    Ok(tokio::spawn(async move {
        if let Err(error) = axum::serve(listener, app).await {
            tracing::error!(%error, "wallet API server stopped");
        }
    }))
}
