//! The wallet API of a gateway: `remit.v1.Remittances` over gRPC and the
//! same operations as REST/JSON, on one port of its own (`[api] listen`;
//! HTTP/1.1 and HTTP/2, TLS with `tls_cert` and `tls_key`), with the OpenAPI
//! document at `/openapi.json`. Operator routes (`/ops/*`, health, metrics,
//! governance) are never served here: they live on the `[http]` listener.

pub mod auth;
pub mod convert;
pub mod grpc;
pub mod listener;
pub mod openapi;
pub mod rest;

use std::net::SocketAddr;

use remit_proto::v1 as pb;
use tracing::info;

use crate::remittance::engine::Engine;
use crate::webhook::WebhookDispatcher;
use auth::Authenticator;

/// The webhook delivery log of one client, newest first (empty when
/// webhooks are not configured).
pub fn webhook_deliveries(
    webhooks: Option<&WebhookDispatcher>,
    client: &str,
    limit: usize,
) -> Vec<pb::WebhookDelivery> {
    let Some(webhooks) = webhooks else { return Vec::new() };
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
/// and `/openapi.json`. Anything else answers 404 (gRPC: UNIMPLEMENTED), and
/// every REST error is the documented JSON body. `webhooks` serves the
/// delivery log.
pub fn router(engine: Engine, auth: Authenticator, webhooks: Option<WebhookDispatcher>) -> axum::Router {
    use tonic::server::NamedService as _;
    // The gRPC service by path (as tonic's own `Routes` mounts it), without
    // tonic's catch-all fallback: a REST path must not answer gRPC.
    let grpc = axum::Router::new().route_service(
        &format!("/{}/{{*method}}", pb::remittances_server::RemittancesServer::<grpc::RemittancesService>::NAME),
        grpc::server(engine.clone(), auth.clone(), webhooks.clone()),
    );
    rest::router(engine, auth, webhooks)
        .route("/openapi.json", axum::routing::get(|| async { axum::Json(openapi::document()) }))
        .merge(grpc)
        .fallback(rest::not_found)
        .layer(axum::middleware::from_fn(rest::json_errors))
}

/// Binds `listen` and serves `app` until the task is dropped: over TLS with
/// `tls` (ALPN h2 and http/1.1), else plaintext (HTTP/1.1 and h2c).
pub async fn serve_router(
    listen: SocketAddr,
    app: axum::Router,
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    info!(%listen, tls = tls.is_some(), "wallet API listening (gRPC and REST)");
    let task = match tls {
        Some(config) => {
            let listener = listener::TlsListener::new(listener, config)?;
            tokio::spawn(async move {
                if let Err(error) = axum::serve(listener, app).await {
                    tracing::error!(%error, "wallet API server stopped");
                }
            })
        }
        None => tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "wallet API server stopped");
            }
        }),
    };
    Ok(task)
}
