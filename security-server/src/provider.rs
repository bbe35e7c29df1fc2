//! The provider endpoint: peer security servers call `Exchange.Call` over mutual TLS.
//!
//! Checks, in this order, each refusal recorded and answered with a precise status:
//! configuration fresh; TLS peer is a registered server hosting the client; signature by
//! a valid, unrevoked signing certificate of the client's member, from an approved CA
//! and listed for the peer server; header names this server; time within the allowed
//! skew; message id never seen; body hash; access rights. Then the request is recorded,
//! the application called, and a response header bound to the request signed, recorded
//! and returned. The work runs in its own task, so a caller that gives up cannot cut it
//! off between the application call and its record.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lintas_identifiers::{ClientId, MethodPath, ServerId, SubsystemId};
use lintas_log::RecordKind;
use lintas_proto::exchange::v1 as ex;
use prost::Message;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code, Request, Response, Status};

use crate::access::Access;
use crate::conf_view::ConfView;
use crate::config::Settings;
use crate::envelope::{self, Context, REQUEST_DOMAIN, Verifier};
use crate::errors::{ErrorSource, error, not_delivered};
use crate::idempotency::{Begun, Kept, Keyed, Ticket};
use crate::maintenance::Maintenance;
use crate::opmon::OpMon;
use crate::outcome::Outcomes;
use crate::own::Own;
use crate::pools::AppPool;
use crate::recorder::Recorder;
use crate::replay::ReplayWindow;
use lintas_transport::{Admission, RawCodec};

/// The provider side of exchanges: what checking a peer's signed request, calling the
/// application and signing and recording the answer takes.
pub struct Provider {
    pub own: Arc<Own>,
    pub conf: Arc<ConfView>,
    pub recorder: Arc<Recorder>,
    pub verifier: Arc<Verifier>,
    pub access: Arc<Access>,
    /// Message ids used within the replay window.
    pub replay: ReplayWindow,
    pub maintenance: Arc<Maintenance>,
    pub settings: Settings,
    /// Requests in progress at once, in all and per source.
    pub requests: Arc<Admission>,
    /// Pooled channels to provider applications.
    pub apps: Arc<AppPool>,
    /// Pooled HTTP clients of REST backends.
    pub backends: crate::backend::Backends,
    pub outcomes: Arc<Outcomes>,
    /// Idempotency keys and their first answers.
    pub idempotency: Arc<crate::idempotency::Idempotency>,
    /// The events of the publishers hosted here, and their subscriptions.
    pub events: Arc<crate::events::Events>,
}

pub struct ProviderService(pub Arc<Provider>);

/// What the checks established about an accepted request.
struct Accepted {
    header: ex::RequestHeader,
    /// SHA-256 of the signed header bytes: the request hash both logs hold.
    header_sha256: [u8; 32],
    client: ClientId,
    method: MethodPath,
    target: Target,
    peer: ServerId,
}

/// Who answers an accepted request.
enum Target {
    /// The application behind the service.
    App(Box<crate::access::ServiceEntry>),
    /// This server itself: its operational monitoring records.
    OperationalData,
    /// This server itself: subscriptions to its publishers' topics.
    Subscriptions,
}

/// Metadata passed on to the provider application, so it knows who calls and why, and
/// the caller's trace context, unchanged.
fn forwarded(h: &ex::RequestHeader) -> [(&'static str, &str); 8] {
    [
        ("lintas-client", &h.client),
        ("lintas-message-id", &h.message_id),
        ("lintas-idempotency-key", &h.idempotency_key),
        ("lintas-user-id", &h.user_id),
        ("lintas-purpose", &h.purpose),
        ("lintas-issue", &h.issue),
        ("traceparent", &h.traceparent),
        ("tracestate", &h.tracestate),
    ]
}

/// The application's answer: status, message, body, and whether the provider server
/// (not the application) produced the status.
struct AppAnswer {
    code: Code,
    message: String,
    body: Vec<u8>,
    by_server: bool,
    /// A REST backend's status and headers, and its credential headers' values.
    rest: Option<ex::RestResponse>,
    secrets: Vec<ex::SecretValue>,
    /// The request never left for the application (it could not be reached at all).
    unsent: bool,
}

impl AppAnswer {
    fn server(code: Code, message: impl Into<String>) -> Self {
        AppAnswer {
            code,
            message: message.into(),
            body: Vec::new(),
            by_server: true,
            rest: None,
            secrets: Vec::new(),
            unsent: false,
        }
    }

    /// The application could not be reached: the request never left.
    fn unsent(code: Code, message: impl Into<String>) -> Self {
        AppAnswer {
            unsent: true,
            ..AppAnswer::server(code, message)
        }
    }

    /// The answer kept for an idempotency key's repeats.
    fn kept(k: Kept) -> Self {
        AppAnswer {
            code: Code::from_i32(k.code),
            message: k.message,
            body: k.body,
            by_server: k.by_server,
            rest: None,
            secrets: Vec::new(),
            unsent: false,
        }
    }

    /// The same status, as the application's own.
    fn by_app(self) -> Self {
        AppAnswer {
            by_server: false,
            ..self
        }
    }
}

/// Calls the application with the request body (or answers for this server).
async fn call_app(s: &Provider, accepted: &Accepted, body: Vec<u8>) -> AppAnswer {
    let service = match &accepted.target {
        Target::App(service) => service,
        Target::OperationalData => {
            return operational_data(&s.outcomes.opmon, &accepted.method, body).await;
        }
        Target::Subscriptions => return subscriptions(s, accepted, body).await,
    };
    let channel = match s.apps.channel(service) {
        Ok(c) => c,
        Err(status) => return AppAnswer::unsent(status.code(), status.message()),
    };
    let path: PathAndQuery = match accepted.method.to_string().parse() {
        Ok(p) => p,
        Err(e) => return AppAnswer::server(Code::Internal, format!("method path: {e}")),
    };
    let mut request = Request::new(tokio_stream::once(bytes::Bytes::from(body)));
    for (key, v) in forwarded(&accepted.header) {
        if !v.is_empty()
            && let Ok(v) = v.parse()
        {
            request.metadata_mut().insert(key, v);
        }
    }
    let limit = s.settings.app_timeout;
    request.set_timeout(limit);
    let max = s.settings.max_message_bytes;
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    let started = Instant::now();
    let late = || {
        AppAnswer::server(
            Code::DeadlineExceeded,
            format!(
                "provider application did not answer within {} s",
                limit.as_secs()
            ),
        )
    };
    let call = async {
        grpc.ready().await.map_err(|e| {
            AppAnswer::unsent(
                Code::Unavailable,
                format!("provider application unreachable: {e}"),
            )
        })?;
        let mut stream = grpc
            .streaming(request, path, RawCodec)
            .await
            .map_err(app_status)?
            .into_inner();
        let too_large = |status: Status| match status.code() {
            // tonic's decoder refuses a message over the limit with OUT_OF_RANGE.
            Code::OutOfRange if status.message().contains("message length too large") => {
                AppAnswer::server(
                    Code::ResourceExhausted,
                    format!(
                        "the application's answer is larger than max_message_bytes ({max}); publish {} with --large-messages so that calls to it travel in chunks",
                        accepted.method.service
                    ),
                )
            }
            _ => app_status(status),
        };
        let first = stream.message().await.map_err(too_large)?;
        let second = stream.message().await.map_err(too_large)?;
        match (first, second) {
            (Some(b), None) => Ok(b),
            (None, _) => Err(AppAnswer::server(
                Code::Internal,
                "provider application answered without a message",
            )),
            (Some(_), Some(_)) => Err(AppAnswer::server(
                Code::Unimplemented,
                "provider application answered with more than one message; streaming is not supported yet",
            )),
        }
    };
    match tokio::time::timeout(limit + Duration::from_secs(1), call).await {
        Ok(Ok(body)) => AppAnswer {
            code: Code::Ok,
            message: String::new(),
            body: body.to_vec(),
            by_server: false,
            rest: None,
            secrets: Vec::new(),
            unsent: false,
        },
        // An application honouring the deadline this server set answers Cancelled or
        // DeadlineExceeded: the timeout is the provider server's.
        Ok(Err(a))
            if matches!(a.code, Code::Cancelled | Code::DeadlineExceeded)
                && started.elapsed() >= limit =>
        {
            late()
        }
        Ok(Err(a)) => a,
        Err(_) => late(),
    }
}

/// An error from the application's gRPC stack. Transport failures (the application is
/// down) are the provider server's to report; statuses the application sent are its own.
fn app_status(status: Status) -> AppAnswer {
    if std::error::Error::source(&status).is_some() {
        let message = format!("provider application unreachable: {}", status.message());
        // A connection that could not be made never carried the request.
        if lintas_transport::connect_failed(&status) {
            AppAnswer::unsent(Code::Unavailable, message)
        } else {
            AppAnswer::server(Code::Unavailable, message)
        }
    } else {
        AppAnswer {
            code: status.code(),
            message: status.message().to_owned(),
            body: Vec::new(),
            by_server: false,
            rest: None,
            secrets: Vec::new(),
            unsent: false,
        }
    }
}

/// The checks of a signed request, with a refusal recorded and answered: the accepted
/// request and the context its records are written in.
async fn admit_request(
    s: &Provider,
    peer_cert: Option<&[u8]>,
    signed: &ex::SignedRequest,
    progress: &crate::outcome::Progress,
    streaming: bool,
) -> Result<(Accepted, Context), Status> {
    let side = ErrorSource::ProviderServer;
    // In maintenance nothing new starts; the consumer's server records the refusal.
    s.maintenance.admit(side).map_err(not_delivered)?;
    let peer_hash = peer_cert.map(lintas_certs::sha256);
    // The configuration the checks see: a refusal is worth a fetch only if no newer one
    // arrived since.
    let seen = s.conf.client().held_serial();
    let mut checked = check(s, peer_hash, signed, streaming);
    if let Err(r) = &checked
        && r.newer_conf_may_help
        && s.conf.refresh_since(seen).await
    {
        checked = check(s, peer_hash, signed, streaming);
    }
    let peer_cert_sha256 = peer_hash.map(|h| h.to_vec()).unwrap_or_default();
    let accepted = match checked {
        Ok(a) => {
            progress.verified();
            a
        }
        Err(refusal) => return Err(refused(s, signed, refusal, peer_cert_sha256).await),
    };
    let h = &accepted.header;
    let ctx = Context {
        message_id: h.message_id.clone(),
        client: accepted.client.to_string(),
        service_provider: h.service_provider.clone(),
        method: h.method.clone(),
        peer_server: accepted.peer.to_string(),
        peer_cert_sha256,
        trace_id: crate::trace::trace_id_of(&h.traceparent)
            .unwrap_or_default()
            .to_owned(),
    };
    Ok((accepted, ctx))
}

/// Records a refused request and gives the status to answer with.
async fn refused(
    s: &Provider,
    signed: &ex::SignedRequest,
    refusal: Refusal,
    peer_cert_sha256: Vec<u8>,
) -> Status {
    let side = ErrorSource::ProviderServer;
    let claimed = if signed.header.len() <= envelope::MAX_HEADER_BYTES {
        ex::RequestHeader::decode(signed.header.as_slice()).unwrap_or_default()
    } else {
        ex::RequestHeader::default()
    };
    let trace_id = crate::trace::trace_id_of(&claimed.traceparent)
        .unwrap_or_default()
        .to_owned();
    // A client over its quota may call again and again: each refusal is recorded, but
    // not each one logged as a warning.
    if refusal.reason == Some(crate::errors::QUOTA_EXCEEDED) {
        tracing::debug!(client = %claimed.client, reason = %refusal.message, trace_id, "request over quota refused");
    } else {
        tracing::warn!(client = %claimed.client, code = ?refusal.code, reason = %refusal.message, trace_id, "request refused");
    }
    let ctx = Context {
        message_id: claimed.message_id,
        client: claimed.client,
        service_provider: claimed.service_provider,
        method: claimed.method,
        peer_server: claimed.consumer_server,
        peer_cert_sha256,
        trace_id,
    };
    // Oversized headers are not copied into the record; their hash is enough.
    let header = if signed.header.len() <= envelope::MAX_HEADER_BYTES {
        signed.header.as_slice()
    } else {
        &[]
    };
    let recorded = s
        .recorder
        .record(
            ctx.record(
                RecordKind::Rejection,
                s.recorder.now_ms(),
                header,
                signed.signature.as_ref(),
                &signed.signer_cert,
                &lintas_certs::sha256(&signed.body),
                signed.body.len() as u64,
                refusal.code,
                &refusal.message,
            ),
            side,
        )
        .await;
    if let Err(e) = recorded {
        return not_delivered(e);
    }
    let mut status = error(refusal.code, side, refusal.message);
    if let Some(reason) = refusal.reason {
        status = crate::errors::with_reason(status, reason);
    }
    if let Some(secs) = refusal.retry_after {
        status = crate::errors::with_retry_after(status, secs);
    }
    not_delivered(status)
}

async fn handle(
    s: Arc<Provider>,
    peer_cert: Option<Vec<u8>>,
    signed: ex::SignedRequest,
    progress: &crate::outcome::Progress,
) -> Result<ex::SignedResponse, Status> {
    use crate::outcome::Stage;
    let side = ErrorSource::ProviderServer;
    let (accepted, ctx) = admit_request(&s, peer_cert.as_deref(), &signed, progress, false).await?;
    let h = &accepted.header;
    let begun = keyed(&s, &accepted, &signed, &ctx).await?;
    let request_record = progress
        .time(
            Stage::Durable,
            s.recorder.record(
                ctx.record(
                    RecordKind::RequestReceived,
                    s.recorder.now_ms(),
                    &signed.header,
                    signed.signature.as_ref(),
                    &signed.signer_cert,
                    &h.body_sha256,
                    h.body_len,
                    Code::Ok,
                    "",
                ),
                side,
            ),
        )
        .await;
    let request_record = match request_record {
        Ok(r) => r,
        Err(status) => {
            if let Some(Begun::First(ticket)) = begun {
                settle(&s, ticket, None).await;
            }
            return Err(not_delivered(status));
        }
    };

    s.recorder.keep_bodies(&[(request_record, &signed.body)]);
    let (answer, repeats_message_id) = match begun {
        // A repeat under an idempotency key: the first answer, not the application.
        Some(Begun::Repeat { message_id, kept }) => (AppAnswer::kept(kept), message_id),
        first => {
            let answer = progress
                .time(Stage::App, call_app(&s, &accepted, signed.body))
                .await;
            if let Some(Begun::First(ticket)) = first {
                settle(&s, ticket, Some(&answer)).await;
            }
            (answer, String::new())
        }
    };
    let body_sha256 = lintas_certs::sha256(&answer.body).to_vec();
    let response = ex::ResponseHeader {
        request_header_sha256: lintas_certs::sha256(&signed.header).to_vec(),
        message_id: h.message_id.clone(),
        status_code: answer.code as i32,
        status_message: answer.message.clone(),
        body_sha256: body_sha256.clone(),
        body_len: answer.body.len() as u64,
        time_unix_ms: s.recorder.now_ms(),
        provider_server: s.own.id.to_string(),
        request_record,
        error_source: if answer.by_server {
            side.as_str().into()
        } else {
            String::new()
        },
        rest: answer.rest,
        repeats_message_id,
        ..Default::default()
    };
    let header = response.encode_to_vec();
    // Signed with the key of the certificate the response names.
    let keys = s.own.keys();
    let signature = progress
        .time(
            Stage::Signing,
            keys.signer.sign(envelope::RESPONSE_DOMAIN, &header),
        )
        .await
        .map_err(|e| error(Code::Internal, side, format!("signing the response: {e}")))?;
    let response_record = progress
        .time(
            Stage::Durable,
            s.recorder.record(
                ctx.record(
                    RecordKind::ResponseSent,
                    s.recorder.now_ms(),
                    &header,
                    Some(&signature),
                    &keys.sign_cert,
                    &body_sha256,
                    answer.body.len() as u64,
                    answer.code,
                    &answer.message,
                ),
                side,
            ),
        )
        .await?;
    s.recorder.keep_bodies(&[(response_record, &answer.body)]);
    Ok(ex::SignedResponse {
        header,
        signature: Some(signature),
        signer_cert: keys.sign_cert.clone(),
        body: answer.body,
        ..Default::default()
    })
}

mod builtin;
mod checks;
mod framed;
mod keyed;
mod stream;
mod transfer;

use builtin::{operational_data, subscriptions};
use checks::{Refusal, check};
use keyed::{keyed, settle};

impl ProviderService {
    /// A place among the requests in progress for a peer's request, or the refusal.
    fn admit<T>(
        &self,
        request: &Request<T>,
    ) -> Result<lintas_transport::admission::Ticket, Status> {
        let peer = request
            .remote_addr()
            .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0)));
        self.0.requests.admit(peer, false).map_err(|why| {
            not_delivered(error(
                Code::ResourceExhausted,
                ErrorSource::ProviderServer,
                format!(
                    "too many requests in progress ({}); retry later",
                    why.as_str().replace('_', " ")
                ),
            ))
        })
    }
}

#[tonic::async_trait]
impl ex::exchange_server::Exchange for ProviderService {
    type StreamStream = stream::Frames;

    async fn stream(
        &self,
        request: Request<tonic::Streaming<ex::StreamFrame>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let peer_cert = lintas_transport::peer_cert(&request);
        let ticket = self.admit(&request)?;
        stream::open(self.0.clone(), peer_cert, request.into_inner(), ticket)
            .await
            .map(Response::new)
    }

    async fn call(
        &self,
        request: Request<ex::SignedRequest>,
    ) -> Result<Response<ex::SignedResponse>, Status> {
        let peer_cert = lintas_transport::peer_cert(&request);
        // Held until the exchange ends: requests in progress are bounded.
        let ticket = self.admit(&request)?;
        let server = self.0.clone();
        let signed = request.into_inner();
        // Its own task: a peer that gives up cannot cut the exchange short between
        // calling the application and recording the outcome, nor give its place back
        // before the exchange ends.
        let work = tokio::spawn(async move {
            let _ticket = ticket;
            exchange_and_account(server, peer_cert, signed).await
        });
        work.await
            .map_err(|e| {
                error(
                    Code::Internal,
                    ErrorSource::ProviderServer,
                    format!("exchange task failed: {e}"),
                )
            })?
            .map(Response::new)
    }
}

/// The whole exchange for one request, then its metrics and monitoring record.
async fn exchange_and_account(
    s: Arc<Provider>,
    peer_cert: Option<Vec<u8>>,
    signed: ex::SignedRequest,
) -> Result<ex::SignedResponse, Status> {
    let started = std::time::Instant::now();
    let started_unix_ms = s.recorder.now_ms();
    // The header as sent; the checks decide whether it is true, and until they have,
    // the metrics and the monitoring record say so.
    let header = if signed.header.len() <= envelope::MAX_HEADER_BYTES {
        ex::RequestHeader::decode(signed.header.as_slice()).unwrap_or_default()
    } else {
        ex::RequestHeader::default()
    };
    let trace_id = crate::trace::trace_id_of(&header.traceparent)
        .unwrap_or_default()
        .to_owned();
    let bytes_in = signed.body.len();
    let span = tracing::info_span!(
        "exchange",
        side = "provider",
        trace_id = %trace_id,
        message_id = %header.message_id
    );
    let progress = crate::outcome::Progress::default();
    progress.set_peer(&header.consumer_server);
    let answer =
        tracing::Instrument::instrument(handle(s.clone(), peer_cert, signed, &progress), span)
            .await;
    let (code, source) = match &answer {
        Ok(r) => {
            let h = ex::ResponseHeader::decode(r.header.as_slice()).unwrap_or_default();
            let code = Code::from_i32(h.status_code);
            let by_server = h.error_source == ErrorSource::ProviderServer.as_str();
            let source = match code {
                Code::Ok => "",
                _ if by_server => ErrorSource::ProviderServer.as_str(),
                _ => ErrorSource::ProviderApp.as_str(),
            };
            (format!("{code:?}"), source)
        }
        Err(st) => (
            format!("{:?}", st.code()),
            ErrorSource::ProviderServer.as_str(),
        ),
    };
    s.outcomes.finished(crate::outcome::Finished {
        exchanged: crate::outcome::Exchanged {
            side: "provider",
            client: &header.client,
            provider: &header.service_provider,
            method: &header.method,
            code,
            source,
            elapsed: started.elapsed(),
            bytes_in,
            bytes_out: answer.as_ref().map(|r| r.body.len()).unwrap_or(0),
        },
        started_unix_ms,
        message_id: &header.message_id,
        traceparent: &header.traceparent,
        user_id: &header.user_id,
        progress: &progress,
    });
    answer
}
