//! `remit.v1.Remittances` over gRPC. An interceptor authenticates every call
//! and puts the [`ClientId`] in the request extensions.

use std::pin::Pin;

use remit_proto::v1 as pb;
use remit_proto::v1::remittances_server::{Remittances, RemittancesServer};
use tokio_stream::{Stream, StreamExt};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};
use tracing::{info_span, Instrument};

use super::auth::{Authenticator, ClientId, RateLimit};
use super::convert;
use crate::remittance::engine::{Engine, RequestError, SUBMIT_MANY_MAX};
use crate::webhook::WebhookDispatcher;

/// The gRPC service.
#[derive(Clone, Debug)]
pub struct RemittancesService {
    engine: Engine,
    webhooks: Option<WebhookDispatcher>,
}

/// Adds `authorization: Bearer <key>` to every call (for clients of the API:
/// `remit send`, the load generator, tests).
#[derive(Clone, Debug)]
pub struct BearerAuth(pub tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl BearerAuth {
    /// The interceptor for `key`; fails if the key is not ASCII.
    pub fn new(key: &str) -> Result<Self, tonic::metadata::errors::InvalidMetadataValue> {
        Ok(Self(format!("Bearer {key}").parse()?))
    }
}

impl tonic::service::Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert("authorization", self.0.clone());
        Ok(request)
    }
}

/// Authenticates a call and records the client in its extensions.
#[derive(Clone, Debug)]
pub struct AuthInterceptor(Authenticator);

impl tonic::service::Interceptor for AuthInterceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = |name: &str| request.metadata().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (authorization, api_key) = (header("authorization"), header("x-api-key"));
        let (client, limit) = self
            .0
            .authenticate_limited(authorization.as_deref(), api_key.as_deref())
            .map_err(|e| convert::grpc_status(&e))?;
        request.extensions_mut().insert(client);
        request.extensions_mut().insert(limit);
        Ok(request)
    }
}

/// The authenticated gRPC server.
pub fn server(
    engine: Engine,
    auth: Authenticator,
    webhooks: Option<WebhookDispatcher>,
) -> InterceptedService<RemittancesServer<RemittancesService>, AuthInterceptor> {
    InterceptedService::new(RemittancesServer::new(RemittancesService { engine, webhooks }), AuthInterceptor(auth))
}

fn client<T>(request: &Request<T>) -> Result<String, Status> {
    request
        .extensions()
        .get::<ClientId>()
        .map(|c| c.0.clone())
        .ok_or_else(|| Status::unauthenticated("missing API key"))
}

/// The caller's rate limit (set with its [`ClientId`] by the interceptor).
fn rate_limit<T>(request: &Request<T>) -> Result<RateLimit, Status> {
    request.extensions().get::<RateLimit>().cloned().ok_or_else(|| Status::unauthenticated("missing API key"))
}

fn status(error: RequestError) -> Status {
    convert::grpc_status(&error)
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Remittance, Status>> + Send>>;

#[tonic::async_trait]
impl Remittances for RemittancesService {
    async fn create_quote(&self, request: Request<pb::CreateQuoteRequest>) -> Result<Response<pb::Quote>, Status> {
        let client = client(&request)?;
        let _span = info_span!("remit.api.create_quote", client).entered();
        let parsed = convert::quote_request(request.get_ref()).map_err(status)?;
        let (quote, destination) = self.engine.create_quote(&client, &parsed).map_err(status)?;
        Ok(Response::new(convert::quote(&quote, destination.as_ref())))
    }

    async fn create_remittance(
        &self,
        request: Request<pb::CreateRemittanceRequest>,
    ) -> Result<Response<pb::Remittance>, Status> {
        let client = client(&request)?;
        let span = info_span!("remit.api.create_remittance", client);
        let input = convert::create_input(request.get_ref()).map_err(status)?;
        let record = self.engine.create(&client, input).instrument(span).await.map_err(status)?;
        Ok(Response::new(convert::remittance_json(&record)))
    }

    async fn get_remittance(
        &self,
        request: Request<pb::GetRemittanceRequest>,
    ) -> Result<Response<pb::Remittance>, Status> {
        let client = client(&request)?;
        let record = self.engine.get(&client, &request.get_ref().uetr).map_err(status)?;
        Ok(Response::new(convert::remittance_json(&record)))
    }

    async fn list_remittances(
        &self,
        request: Request<pb::ListRemittancesRequest>,
    ) -> Result<Response<pb::ListRemittancesResponse>, Status> {
        let client = client(&request)?;
        let filter = convert::list_filter(request.get_ref()).map_err(status)?;
        let (page, token) = self.engine.list(&client, &filter).map_err(status)?;
        Ok(Response::new(pb::ListRemittancesResponse {
            remittances: page.iter().map(convert::remittance_json).collect(),
            next_page_token: token.unwrap_or_default(),
        }))
    }

    type WatchRemittanceStream = WatchStream;

    async fn watch_remittance(
        &self,
        request: Request<pb::WatchRemittanceRequest>,
    ) -> Result<Response<Self::WatchRemittanceStream>, Status> {
        let client = client(&request)?;
        let uetr = request.get_ref().uetr.clone();
        let stream = watch_stream(self.engine.clone(), client, uetr).map_err(status)?;
        Ok(Response::new(Box::pin(stream.map(|record| Ok(convert::remittance_json(&record))))))
    }

    async fn cancel_remittance(
        &self,
        request: Request<pb::CancelRemittanceRequest>,
    ) -> Result<Response<pb::Remittance>, Status> {
        let client = client(&request)?;
        let body = request.get_ref();
        let record = self.engine.cancel(&client, &body.uetr, &body.reason).await.map_err(status)?;
        Ok(Response::new(convert::remittance_json(&record)))
    }

    async fn submit_remittances(
        &self,
        request: Request<pb::SubmitRemittancesRequest>,
    ) -> Result<Response<pb::SubmitRemittancesResponse>, Status> {
        let client = client(&request)?;
        let limit = rate_limit(&request)?;
        let requests = request.into_inner().remittances;
        if requests.len() > SUBMIT_MANY_MAX {
            return Err(Status::invalid_argument(format!("remittances: at most {SUBMIT_MANY_MAX} per call")));
        }
        // The call paid for one remittance; each further one pays too.
        limit.charge(requests.len().saturating_sub(1)).map_err(status)?;
        let span = info_span!("remit.api.submit_remittances", client, count = requests.len());
        Ok(Response::new(super::submit_all(&self.engine, &client, requests).instrument(span).await))
    }

    async fn stream_remittances(
        &self,
        request: Request<tonic::Streaming<pb::CreateRemittanceRequest>>,
    ) -> Result<Response<pb::SubmitRemittancesResponse>, Status> {
        let client = client(&request)?;
        let limit = rate_limit(&request)?;
        let mut stream = request.into_inner();
        let mut all = pb::SubmitRemittancesResponse::default();
        let mut chunk = Vec::new();
        // The call paid for its first remittance; every further one pays
        // before its chunk is submitted. Past the limit the call fails with
        // RESOURCE_EXHAUSTED: what was submitted stays (retries with the same
        // idempotency keys return it), nothing more is taken.
        let mut first_chunk = true;
        while let Some(item) = stream.next().await {
            chunk.push(item?);
            if chunk.len() == SUBMIT_MANY_MAX {
                let chunk = std::mem::take(&mut chunk);
                limit.charge(chunk.len() - usize::from(std::mem::take(&mut first_chunk))).map_err(status)?;
                all.results.extend(super::submit_all(&self.engine, &client, chunk).await.results);
            }
        }
        if !chunk.is_empty() {
            limit.charge(chunk.len() - usize::from(first_chunk)).map_err(status)?;
            all.results.extend(super::submit_all(&self.engine, &client, chunk).await.results);
        }
        Ok(Response::new(all))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let client = client(&request)?;
        let limit = match request.get_ref().limit {
            0 => 100,
            n => n.min(1_000) as usize,
        };
        Ok(Response::new(pb::ListWebhookDeliveriesResponse {
            deliveries: super::webhook_deliveries(self.webhooks.as_ref(), &client, limit),
        }))
    }
}

/// The current state, then each change of one remittance, ending after a
/// terminal status. A watcher that falls behind re-reads the current state.
pub fn watch_stream(
    engine: Engine,
    client: String,
    uetr: String,
) -> Result<impl Stream<Item = crate::remittance::record::Remittance> + Send, RequestError> {
    let (first, mut updates) = engine.watch(&client, &uetr)?;
    let target = first.uetr;
    Ok(async_stream::stream! {
        let mut last = first.status;
        let mut last_len = first.history.len();
        let done = last.is_terminal();
        yield first;
        if done { return; }
        loop {
            let next = match updates.recv().await {
                Ok(record) if record.uetr == target => (*record).clone(),
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => match engine.get(&client, &uetr) {
                    Ok(record) => record,
                    Err(_) => return,
                },
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            };
            if next.status == last && next.history.len() == last_len {
                continue;
            }
            last = next.status;
            last_len = next.history.len();
            let terminal = last.is_terminal();
            yield next;
            if terminal { return; }
        }
    })
}
