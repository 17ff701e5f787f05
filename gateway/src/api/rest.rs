//! The wallet API as REST/JSON (axum). Bodies are the JSON forms of the
//! `remit.v1` messages; errors are
//! `{"error": {"code", "field", "reason_code", "message"}}` with 400, 401,
//! 403, 404, 409, 429, 500 or 503. A middleware authenticates every route
//! but `/openapi.json`.

use std::convert::Infallible;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use remit_proto::v1 as pb;
use serde::Deserialize;
use tokio_stream::{Stream, StreamExt};
use tracing::{info_span, Instrument};

use super::auth::{Authenticator, ClientId, RateLimit};
use super::convert;
use crate::remittance::engine::{Engine, ErrorKind, RequestError, SUBMIT_MANY_MAX};

/// A request error as an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub RequestError);

impl From<RequestError> for ApiError {
    fn from(error: RequestError) -> Self {
        Self(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = self.0;
        let body = serde_json::json!({
            "error": {
                "code": error.kind.code_name(),
                "field": error.field,
                "reason_code": error.reason_code,
                "message": error.message,
            }
        });
        (convert::http_status(error.kind), Json(body)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

fn json_error(rejection: axum::extract::rejection::JsonRejection) -> ApiError {
    // serde's message names the path of the bad field, e.g. "originator.account: invalid type".
    let text = rejection.body_text();
    let field = text
        .split_once(": ")
        .and_then(|(head, _)| head.rsplit(' ').next())
        .filter(|f| !f.is_empty() && !f.contains(char::is_whitespace))
        .map(str::to_owned);
    ApiError(RequestError::new(
        ErrorKind::InvalidArgument,
        field.as_deref(),
        Some("FF01"),
        format!("request body: {text}"),
    ))
}

/// The REST router (authenticated), without `/openapi.json`.
pub fn router(engine: Engine, auth: Authenticator) -> Router {
    Router::new()
        .route("/v1/quotes", post(create_quote))
        .route("/v1/remittances", post(create_remittance).get(list_remittances))
        .route("/v1/remittances:batch", post(submit_remittances))
        .route("/v1/remittances/{uetr}", get(get_remittance))
        .route("/v1/remittances/{uetr}/events", get(watch_remittance))
        .route("/v1/remittances/{uetr}/cancel", post(cancel_remittance))
        .route("/v1/webhooks/deliveries", get(list_deliveries))
        .layer(axum::middleware::from_fn_with_state(auth, authenticate))
        .with_state(engine)
}

fn client_of(auth: &Authenticator, headers: &HeaderMap) -> Result<(ClientId, RateLimit), RequestError> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    auth.authenticate_limited(header("authorization"), header("x-api-key"))
}

async fn authenticate(State(auth): State<Authenticator>, mut request: Request, next: Next) -> Response {
    match client_of(&auth, request.headers()) {
        Ok((client, limit)) => {
            request.extensions_mut().insert(client);
            request.extensions_mut().insert(limit);
            next.run(request).await
        }
        Err(error) => ApiError(error).into_response(),
    }
}

async fn create_quote(
    State(engine): State<Engine>,
    Extension(client): Extension<ClientId>,
    body: Result<Json<pb::CreateQuoteRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<pb::Quote> {
    let Json(body) = body.map_err(json_error)?;
    let _span = info_span!("remit.api.create_quote", client = client.0).entered();
    let request = convert::quote_request(&body)?;
    let (quote, destination) = engine.create_quote(&client.0, &request)?;
    Ok(Json(convert::quote(&quote, destination.as_ref())))
}

async fn create_remittance(
    State(engine): State<Engine>,
    Extension(client): Extension<ClientId>,
    headers: HeaderMap,
    body: Result<Json<pb::CreateRemittanceRequest>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<pb::Remittance>), ApiError> {
    let Json(mut body) = body.map_err(json_error)?;
    // The conventional Idempotency-Key header works as well as the body field.
    if let Some(key) = headers.get("idempotency-key").and_then(|v| v.to_str().ok()) {
        if !body.idempotency_key.is_empty() && body.idempotency_key != key {
            return Err(
                RequestError::invalid("idempotency_key", None, "differs from the Idempotency-Key header").into()
            );
        }
        body.idempotency_key = key.to_owned();
    }
    let span = info_span!("remit.api.create_remittance", client = client.0);
    let input = convert::create_input(&body)?;
    // 201 for the call that created it, 200 for a repeat of the same key.
    let (record, repeat) = engine.create_or_repeat(&client.0, input).instrument(span).await?;
    let status = if repeat { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(convert::remittance_json(&record))))
}

async fn submit_remittances(
    State(engine): State<Engine>,
    Extension(client): Extension<ClientId>,
    Extension(limit): Extension<RateLimit>,
    body: Result<Json<pb::SubmitRemittancesRequest>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<pb::SubmitRemittancesResponse> {
    let Json(body) = body.map_err(json_error)?;
    if body.remittances.len() > SUBMIT_MANY_MAX {
        return Err(RequestError::invalid("remittances", None, format!("at most {SUBMIT_MANY_MAX} per call")).into());
    }
    // The call paid for one remittance; each further one pays too.
    limit.charge(body.remittances.len().saturating_sub(1))?;
    Ok(Json(super::submit_all(&engine, &client.0, body.remittances).await))
}

async fn get_remittance(
    State(engine): State<Engine>,
    Extension(client): Extension<ClientId>,
    Path(uetr): Path<String>,
) -> ApiResult<pb::Remittance> {
    Ok(Json(convert::remittance_json(&engine.get(&client.0, &uetr)?)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ListQuery {
    status: Option<String>,
    created_from_ms: u64,
    created_to_ms: u64,
    page_size: u32,
    page_token: String,
}

async fn list_remittances(
    State(engine): State<Engine>,
    Extension(client): Extension<ClientId>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<pb::ListRemittancesResponse> {
    let Query(query) = query.map_err(|e| ApiError(RequestError::invalid("query", None, e.body_text())))?;
    let request = pb::ListRemittancesRequest {
        status: query.status.into_iter().collect(),
        created_from_ms: query.created_from_ms,
        created_to_ms: query.created_to_ms,
        page_size: query.page_size,
        page_token: query.page_token,
    };
    let filter = convert::list_filter(&request)?;
    let (page, token) = engine.list(&client.0, &filter)?;
    Ok(Json(pb::ListRemittancesResponse {
        remittances: page.iter().map(convert::remittance_json).collect(),
        next_page_token: token.unwrap_or_default(),
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct CancelBody {
    reason: String,
}

async fn cancel_remittance(
    State(engine): State<Engine>,
    Extension(client): Extension<ClientId>,
    Path(uetr): Path<String>,
    body: Option<Json<CancelBody>>,
) -> ApiResult<pb::Remittance> {
    let reason = body.map(|Json(b)| b.reason).unwrap_or_default();
    Ok(Json(convert::remittance_json(&engine.cancel(&client.0, &uetr, &reason).await?)))
}

async fn watch_remittance(
    State(engine): State<Engine>,
    Extension(client): Extension<ClientId>,
    Path(uetr): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let stream = super::grpc::watch_stream(engine, client.0, uetr)?;
    let events = stream.map(|record| {
        let body = convert::remittance_json(&record);
        Ok(Event::default().event("status").json_data(&body).unwrap_or_else(|_| Event::default().data("{}")))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DeliveriesQuery {
    limit: u32,
}

async fn list_deliveries(
    State(engine): State<Engine>,
    Extension(client): Extension<ClientId>,
    Query(query): Query<DeliveriesQuery>,
) -> ApiResult<pb::ListWebhookDeliveriesResponse> {
    let limit = if query.limit == 0 { 100 } else { query.limit.min(1_000) as usize };
    Ok(Json(pb::ListWebhookDeliveriesResponse { deliveries: super::webhook_deliveries(&engine, &client.0, limit) }))
}
