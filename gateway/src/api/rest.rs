//! The wallet API as REST/JSON (axum). Bodies are the JSON forms of the
//! `remit.v1` messages; every error, axum's own rejections included, is
//! `{"error": {"code", "message", "field"?, "reason_code"?}}`:
//!
//! - 400: the request does not fit the documented shape (malformed JSON, a
//!   value of the wrong type, a query parameter out of its documented range);
//! - 422: it fits, but a value is refused (an amount above the corridor's
//!   limit, an unknown country...), `field` naming it;
//! - 401, 403, 404, 405, 409, 413, 415, 429, 500, 503 as documented in
//!   `/openapi.json`.
//!
//! A middleware authenticates every route but `/openapi.json`.

use std::convert::Infallible;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
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
use crate::webhook::WebhookDispatcher;

/// Most statuses one `status` filter may name.
const STATUS_FILTER_MAX: usize = 16;
/// Longest body of a non-JSON error response carried into the JSON body's message.
const ERROR_TEXT_BYTES_MAX: usize = 4_096;

/// A request error as an HTTP response.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What was refused.
    pub error: RequestError,
}

impl From<RequestError> for ApiError {
    fn from(error: RequestError) -> Self {
        // A value the engine refuses came in a well-formed request: 422.
        let status = match error.kind {
            ErrorKind::InvalidArgument => StatusCode::UNPROCESSABLE_ENTITY,
            kind => convert::http_status(kind),
        };
        Self { status, error }
    }
}

impl ApiError {
    /// A request that does not fit the documented shape (400).
    fn malformed(field: &str, message: impl Into<String>) -> Self {
        let error = RequestError::new(ErrorKind::InvalidArgument, Some(field), Some("FF01"), message.into());
        Self { status: StatusCode::BAD_REQUEST, error }
    }
}

/// The JSON error body: `field` and `reason_code` only when there is one.
fn error_body(code: &str, field: Option<&str>, reason_code: Option<&str>, message: &str) -> serde_json::Value {
    let mut error = serde_json::Map::new();
    error.insert("code".into(), code.into());
    if let Some(field) = field {
        error.insert("field".into(), field.into());
    }
    if let Some(reason_code) = reason_code {
        error.insert("reason_code".into(), reason_code.into());
    }
    error.insert("message".into(), message.into());
    serde_json::json!({ "error": error })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = self.error;
        let body =
            error_body(error.kind.code_name(), error.field.as_deref(), error.reason_code.as_deref(), &error.message);
        (self.status, Json(body)).into_response()
    }
}

type ApiResult<T> = Result<Json<T>, ApiError>;

fn json_error(rejection: JsonRejection) -> ApiError {
    // serde's message names the path of the bad field, e.g. "originator.account: invalid type".
    let text = rejection.body_text();
    let field = text
        .split_once(": ")
        .and_then(|(head, _)| head.rsplit(' ').next())
        .filter(|f| !f.is_empty() && !f.contains(char::is_whitespace))
        .unwrap_or("body")
        .to_owned();
    let field =
        if matches!(rejection, JsonRejection::MissingJsonContentType(_)) { "content-type".to_owned() } else { field };
    let mut error = ApiError::malformed(&field, format!("request body: {text}"));
    // A missing content type is 415, a body over the limit 413; a value of
    // the wrong type is 400 like bad syntax (axum would answer 422).
    if let JsonRejection::MissingJsonContentType(_) | JsonRejection::BytesRejection(_) = rejection {
        error.status = rejection.status();
    }
    error
}

/// A JSON body of the documented types (`schema` in the OpenAPI document),
/// then as the message `T`; anything else is 400 naming the field.
fn typed_body<T: serde::de::DeserializeOwned>(
    body: Result<Json<serde_json::Value>, JsonRejection>,
    schema: &str,
) -> Result<T, ApiError> {
    let Json(value) = body.map_err(json_error)?;
    super::openapi::check_types(schema, &value)
        .map_err(|(field, reason)| ApiError::malformed(&field, format!("{field}: {reason}")))?;
    serde_json::from_value(value).map_err(|e| ApiError::malformed("body", format!("request body: {e}")))
}

fn query_error(rejection: QueryRejection) -> ApiError {
    let text = rejection.body_text();
    // "Failed to deserialize query string: created_from_ms: invalid digit found in string"
    let detail = text.split_once(": ").map_or(text.as_str(), |(_, rest)| rest);
    let field = detail.split_once(": ").map_or("query", |(head, _)| head);
    ApiError::malformed(field, format!("query: {detail}"))
}

/// Whether `text` is a UUID version 4 in its hyphenated form, as the
/// document's `UETR_PATTERN` says.
fn is_uetr_text(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            14 => *b == b'4',
            19 => matches!(b, b'8' | b'9' | b'a' | b'b' | b'A' | b'B'),
            _ => b.is_ascii_hexdigit(),
        })
}

/// The `{uetr}` of a path, refused with 400 unless it has the documented form.
fn uetr_path(uetr: String) -> Result<String, ApiError> {
    if is_uetr_text(&uetr) {
        Ok(uetr)
    } else {
        Err(ApiError::malformed("uetr", "not a UETR (a UUID version 4, xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx)"))
    }
}

/// A `page_token` of the documented form `<ms>_<uetr>` (a token from
/// `next_page_token`).
fn page_token(token: Option<String>) -> Result<String, ApiError> {
    let Some(token) = token else { return Ok(String::new()) };
    let valid = token.split_once('_').is_some_and(|(at, uetr)| {
        (1..=19).contains(&at.len()) && at.bytes().all(|b| b.is_ascii_digit()) && is_uetr_text(uetr)
    });
    if valid {
        Ok(token)
    } else {
        Err(ApiError::malformed("page_token", "not a token from a previous page's next_page_token"))
    }
}

/// The code name of an HTTP error status, for errors axum answers itself.
fn code_of(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 413 | 415 | 422 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        405 => "UNIMPLEMENTED",
        409 => "FAILED_PRECONDITION",
        429 => "RESOURCE_EXHAUSTED",
        503 => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

/// Any path the API does not serve: 404 as the JSON error body (a gRPC
/// call to an unknown method: UNIMPLEMENTED, as tonic answers it).
pub async fn not_found(request: Request) -> Response {
    let grpc = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"));
    if grpc {
        let (parts, ()) = tonic::Status::unimplemented("no such method").into_http::<()>().into_parts();
        return Response::from_parts(parts, axum::body::Body::empty());
    }
    let message = format!("no route {} {}", request.method(), request.uri().path());
    (StatusCode::NOT_FOUND, Json(error_body("NOT_FOUND", None, None, &message))).into_response()
}

/// Makes every error response that is not already JSON (axum's 405 and
/// rejections, whatever a layer answers in plain text) the JSON error body,
/// keeping its status and headers (`allow`, `www-authenticate`). gRPC
/// responses pass untouched.
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !(status.is_client_error() || status.is_server_error())
        || content_type.starts_with("application/json")
        || content_type.starts_with("application/grpc")
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, ERROR_TEXT_BYTES_MAX).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text };
    let body = serde_json::to_vec(&error_body(code_of(status), None, None, &message)).unwrap_or_default();
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// The REST router (authenticated), without `/openapi.json`; `webhooks`
/// serves the delivery log.
pub fn router(engine: Engine, auth: Authenticator, webhooks: Option<WebhookDispatcher>) -> Router {
    Router::new()
        .route("/v1/quotes", post(create_quote))
        .route("/v1/remittances", post(create_remittance).get(list_remittances))
        .route("/v1/remittances:batch", post(submit_remittances))
        .route("/v1/remittances/{uetr}", get(get_remittance))
        .route("/v1/remittances/{uetr}/events", get(watch_remittance))
        .route("/v1/remittances/{uetr}/cancel", post(cancel_remittance))
        .route("/v1/webhooks/deliveries", get(list_deliveries).layer(Extension(Webhooks(webhooks))))
        // On the routes only: an unknown path is 404 whoever asks.
        .route_layer(axum::middleware::from_fn_with_state(auth, authenticate))
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
        Err(error) => ApiError::from(error).into_response(),
    }
}

async fn create_quote(
    State(engine): State<Engine>,
    Extension(client): Extension<ClientId>,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> ApiResult<pb::Quote> {
    let body: pb::CreateQuoteRequest = typed_body(body, "CreateQuoteRequest")?;
    let _span = info_span!("remit.api.create_quote", client = client.0).entered();
    let request = convert::quote_request(&body)?;
    let (quote, destination) = engine.create_quote(&client.0, &request)?;
    Ok(Json(convert::quote(&quote, destination.as_ref())))
}

async fn create_remittance(
    State(engine): State<Engine>,
    Extension(client): Extension<ClientId>,
    headers: HeaderMap,
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> Result<(StatusCode, Json<pb::Remittance>), ApiError> {
    let mut body: pb::CreateRemittanceRequest = typed_body(body, "CreateRemittanceRequest")?;
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
    body: Result<Json<serde_json::Value>, JsonRejection>,
) -> ApiResult<pb::SubmitRemittancesResponse> {
    let body: pb::SubmitRemittancesRequest = typed_body(body, "SubmitRemittancesRequest")?;
    if body.remittances.is_empty() || body.remittances.len() > SUBMIT_MANY_MAX {
        return Err(ApiError::malformed("remittances", format!("must hold 1 to {SUBMIT_MANY_MAX} remittances")));
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
    let uetr = uetr_path(uetr)?;
    Ok(Json(convert::remittance_json(&engine.get(&client.0, &uetr)?)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ListQuery {
    status: Option<String>,
    created_from_ms: Option<u64>,
    created_to_ms: Option<u64>,
    page_size: Option<u32>,
    page_token: Option<String>,
}

/// The `status` filter: comma-separated statuses, none empty.
fn status_filter(status: Option<String>) -> Result<Vec<String>, ApiError> {
    let Some(text) = status else { return Ok(Vec::new()) };
    let parts: Vec<&str> = text.split(',').collect();
    if parts.len() > STATUS_FILTER_MAX || parts.iter().any(|part| part.is_empty()) {
        return Err(ApiError::malformed(
            "status",
            format!("comma-separated statuses, 1 to {STATUS_FILTER_MAX}, none empty"),
        ));
    }
    let known: Vec<&str> = crate::remittance::record::Status::ALL.iter().map(|s| s.as_str()).collect();
    if let Some(unknown) = parts.iter().find(|part| !known.contains(part)) {
        return Err(ApiError::malformed("status", format!("unknown status {unknown:?}; one of {}", known.join(", "))));
    }
    Ok(vec![text])
}

async fn list_remittances(
    State(engine): State<Engine>,
    Extension(client): Extension<ClientId>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<pb::ListRemittancesResponse> {
    let Query(query) = query.map_err(query_error)?;
    // The documented ranges; 0 means "unset" only on the gRPC side.
    if query.page_size.is_some_and(|size| !(1..=500).contains(&size)) {
        return Err(ApiError::malformed("page_size", "must be 1 to 500"));
    }
    for (field, value) in [("created_from_ms", query.created_from_ms), ("created_to_ms", query.created_to_ms)] {
        if value.is_some_and(|ms| ms > i64::MAX as u64) {
            return Err(ApiError::malformed(field, "must be 0 to 9223372036854775807"));
        }
    }
    let request = pb::ListRemittancesRequest {
        status: status_filter(query.status)?,
        created_from_ms: query.created_from_ms.unwrap_or(0),
        created_to_ms: query.created_to_ms.unwrap_or(0),
        page_size: query.page_size.unwrap_or(0),
        page_token: page_token(query.page_token)?,
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
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<pb::Remittance> {
    let uetr = uetr_path(uetr)?;
    // The body is optional; when there is one it is JSON.
    let reason = if body.is_empty() {
        String::new()
    } else {
        let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        if !content_type.starts_with("application/json") {
            let error = RequestError::new(
                ErrorKind::InvalidArgument,
                Some("content-type"),
                None,
                "a cancel request's body, when there is one, is application/json".to_owned(),
            );
            return Err(ApiError { status: StatusCode::UNSUPPORTED_MEDIA_TYPE, error });
        }
        let value = Json::<serde_json::Value>::from_bytes(&body);
        let body: CancelBody = typed_body(value, "CancelRequest")?;
        body.reason
    };
    Ok(Json(convert::remittance_json(&engine.cancel(&client.0, &uetr, &reason).await?)))
}

async fn watch_remittance(
    State(engine): State<Engine>,
    Extension(client): Extension<ClientId>,
    Path(uetr): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let stream = super::grpc::watch_stream(engine, client.0, uetr_path(uetr)?)?;
    let events = stream.map(|record| {
        let body = convert::remittance_json(&record);
        Ok(Event::default().event("status").json_data(&body).unwrap_or_else(|_| Event::default().data("{}")))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DeliveriesQuery {
    limit: Option<u32>,
}

/// The webhook dispatcher of the delivery log route.
#[derive(Clone)]
struct Webhooks(Option<WebhookDispatcher>);

async fn list_deliveries(
    Extension(webhooks): Extension<Webhooks>,
    Extension(client): Extension<ClientId>,
    query: Result<Query<DeliveriesQuery>, QueryRejection>,
) -> ApiResult<pb::ListWebhookDeliveriesResponse> {
    let Query(query) = query.map_err(query_error)?;
    let limit = match query.limit {
        None => 100,
        Some(limit @ 1..=1_000) => limit as usize,
        Some(_) => return Err(ApiError::malformed("limit", "must be 1 to 1000")),
    };
    Ok(Json(pb::ListWebhookDeliveriesResponse {
        deliveries: super::webhook_deliveries(webhooks.0.as_ref(), &client.0, limit),
    }))
}
