//! The consumer endpoint: local applications call any `/package.Service/Method` here as
//! they would call the provider, adding metadata:
//!
//! | key | required | meaning |
//! |---|---|---|
//! | `lintas-client` | yes | the calling subsystem, INSTANCE/CLASS/MEMBER/SUBSYSTEM |
//! | `lintas-service` | yes | the provider subsystem |
//! | `lintas-message-id` | no | unique id (generated when absent) |
//! | `lintas-user-id`, `lintas-purpose`, `lintas-issue` | no | user, legal basis, case |
//!
//! The message bytes are relayed without a schema. Unary calls only: a request with more
//! than one message is refused.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use lintas_globalconf::VerifiedConf;
use lintas_identifiers::{MethodPath, SubsystemId};
use lintas_log::RecordKind;
use lintas_proto::exchange::v1 as ex;
use prost::Message;
use tonic::codegen::http;
use tonic::metadata::MetadataMap;
use tonic::server::ClientStreamingService;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::conf_view::ConfView;
use crate::config::Settings;
use crate::envelope::{self, REQUEST_DOMAIN, RESPONSE_DOMAIN, Verifier};
use crate::errors::{ERROR_SOURCE, ErrorSource, error};
use crate::local::{LocalApps, caller};
use crate::maintenance::Maintenance;
use crate::outcome::Outcomes;
use crate::own::Own;
use crate::pools::PeerPool;
use crate::recorder::Recorder;
use lintas_transport::{Admission, RawCodec};

/// Longest optional text field (user id, purpose, issue).
pub(crate) const MAX_FIELD: usize = 256;

/// The consumer side of exchanges: what authenticating a local application's call,
/// signing it, relaying it to the provider's server and recording it takes.
pub struct Consumer {
    pub own: Arc<Own>,
    pub conf: Arc<ConfView>,
    pub recorder: Arc<Recorder>,
    pub verifier: Arc<Verifier>,
    pub local: Arc<LocalApps>,
    pub maintenance: Arc<Maintenance>,
    pub settings: Settings,
    /// Requests in progress at once, in all and per source.
    pub requests: Arc<Admission>,
    /// Pooled channels to peer security servers.
    pub peers: PeerPool,
    pub outcomes: Arc<Outcomes>,
}

/// Catches every path that is not the health service.
#[derive(Clone)]
pub struct ConsumerEndpoint(pub Arc<Consumer>);

impl tower::Service<http::Request<axum::body::Body>> for ConsumerEndpoint {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<axum::body::Body>) -> Self::Future {
        let server = self.0.clone();
        Box::pin(async move {
            let (remote, peer_cert) = caller(req.extensions());
            // Held until the call ends: requests in progress are bounded.
            let _ticket = match server.admit(remote) {
                Ok(t) => t,
                Err(status) => return Ok(status.into_http()),
            };
            let call = ConsumerCall {
                path: req.uri().path().to_owned(),
                remote,
                peer_cert,
                server: server.clone(),
            };
            let max = server.settings.max_message_bytes;
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max);
            Ok(grpc.client_streaming(call, req).await)
        })
    }
}

impl Consumer {
    /// A place among the consumer endpoint's requests in progress, or why there is none.
    pub fn admit(
        &self,
        remote: Option<SocketAddr>,
    ) -> Result<lintas_transport::admission::Ticket, Status> {
        let peer = remote.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        self.requests.admit(peer, false).map_err(|why| {
            consumer_error(
                Code::ResourceExhausted,
                format!(
                    "too many requests in progress ({}); retry later",
                    why.as_str().replace('_', " ")
                ),
            )
        })
    }
}

struct ConsumerCall {
    path: String,
    remote: Option<SocketAddr>,
    /// SHA-256 of the TLS client certificate, when the endpoint speaks TLS.
    peer_cert: Option<[u8; 32]>,
    server: Arc<Consumer>,
}

impl ClientStreamingService<Bytes> for ConsumerCall {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Bytes>, Status>> + Send>>;

    fn call(&mut self, request: Request<Streaming<Bytes>>) -> Self::Future {
        let path = std::mem::take(&mut self.path);
        let (remote, peer_cert) = (self.remote, self.peer_cert);
        let server = self.server.clone();
        // Its own task: an application that gives up cannot cut the exchange off between
        // sending the request and recording the outcome.
        let work =
            tokio::spawn(async move { relay(server, path, remote, peer_cert, request).await });
        Box::pin(async move {
            work.await
                .map_err(|e| consumer_error(Code::Internal, format!("exchange task failed: {e}")))?
        })
    }
}

fn consumer_error(code: Code, message: impl Into<String>) -> Status {
    error(code, ErrorSource::ConsumerServer, message)
}

fn text<'a>(metadata: &'a MetadataMap, key: &str) -> Result<Option<&'a str>, Status> {
    match metadata.get(key) {
        None => Ok(None),
        Some(v) => {
            let s = v.to_str().map_err(|_| {
                consumer_error(
                    Code::InvalidArgument,
                    format!("metadata {key} is not ASCII text"),
                )
            })?;
            if s.len() > MAX_FIELD {
                return Err(consumer_error(
                    Code::InvalidArgument,
                    format!("metadata {key} is longer than {MAX_FIELD} characters"),
                ));
            }
            Ok(Some(s))
        }
    }
}

fn subsystem(metadata: &MetadataMap, key: &str) -> Result<SubsystemId, Status> {
    text(metadata, key)?
        .ok_or_else(|| {
            consumer_error(Code::InvalidArgument, format!("metadata {key} is required"))
        })?
        .parse()
        .map_err(|e| consumer_error(Code::InvalidArgument, format!("metadata {key}: {e}")))
}

pub(crate) fn random_id() -> Result<String, Status> {
    use aws_lc_rs::rand::SecureRandom;
    let mut b = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| consumer_error(Code::Internal, "random number generator failed"))?;
    Ok(lintas_certs::hex(&b))
}

async fn relay(
    s: Arc<Consumer>,
    path: String,
    remote: Option<SocketAddr>,
    peer_cert: Option<[u8; 32]>,
    request: Request<Streaming<Bytes>>,
) -> Result<Response<Bytes>, Status> {
    let md = request.metadata();
    let client = subsystem(md, "lintas-client")?;
    s.local.authenticate(&client, remote, peer_cert)?;
    let provider = subsystem(md, "lintas-service")?;
    let method: MethodPath = path
        .parse()
        .map_err(|e| consumer_error(Code::Unimplemented, format!("{e}")))?;
    let message_id = match text(md, "lintas-message-id")? {
        Some(id) => {
            envelope::check_message_id(id).map_err(|why| {
                consumer_error(Code::InvalidArgument, format!("lintas-message-id {why}"))
            })?;
            id.to_owned()
        }
        None => random_id()?,
    };
    let field = |key| text(md, key).map(|v| v.unwrap_or_default().to_owned());
    let (user_id, purpose, issue) = (
        field("lintas-user-id")?,
        field("lintas-purpose")?,
        field("lintas-issue")?,
    );
    let trace = crate::trace::TraceContext::continue_or_start(
        text(md, "traceparent").ok().flatten(),
        text(md, "tracestate").ok().flatten(),
    );

    let mut stream = request.into_inner();
    // A request that arrives slowly holds a stream: it gets a deadline.
    let limit = s.settings.connection_limits.request_timeout();
    let body = tokio::time::timeout(limit, async {
        let body = stream.message().await?.ok_or_else(|| {
            consumer_error(Code::InvalidArgument, "the call carried no request message")
        })?;
        if stream.message().await?.is_some() {
            return Err(consumer_error(
                Code::Unimplemented,
                "the call carried more than one request message; only unary calls are supported yet",
            ));
        }
        Ok(body)
    })
    .await
    .map_err(|_| {
        consumer_error(
            Code::DeadlineExceeded,
            format!(
                "the request message did not arrive within {} s (connection_limits.request_timeout_secs)",
                limit.as_secs()
            ),
        )
    })??;
    let call = Call {
        client,
        provider,
        method,
        message_id,
        user_id,
        purpose,
        issue,
        trace: trace.clone(),
    };
    let answer = call_provider(&s, call, body).await?;
    let mut reply = Response::new(answer.body);
    if let Ok(v) = answer.message_id.parse() {
        reply.metadata_mut().insert("lintas-message-id", v);
    }
    // The caller learns the trace it is part of (one may have been started for it).
    if let Ok(v) = trace.traceparent.parse() {
        reply.metadata_mut().insert("traceparent", v);
    }
    Ok(reply)
}

/// One call of a local application, authenticated, with its metadata checked.
pub(crate) struct Call {
    pub client: SubsystemId,
    pub provider: SubsystemId,
    pub method: MethodPath,
    pub message_id: String,
    pub user_id: String,
    pub purpose: String,
    pub issue: String,
    pub trace: crate::trace::TraceContext,
}

/// The provider's answer to a call.
pub(crate) struct Answer {
    pub body: Bytes,
    pub message_id: String,
    /// SHA-256 of the signed request header, which the signed response names.
    pub request_hash: [u8; 32],
}

/// Signs and logs the request, exchanges it with the provider's server, verifies and
/// logs the answer: the whole consumer side of an exchange, counted in the metrics.
pub(crate) async fn call_provider(s: &Consumer, call: Call, body: Bytes) -> Result<Answer, Status> {
    let started = std::time::Instant::now();
    let started_unix_ms = s.recorder.now_ms();
    let (client, provider, method) = (
        call.client.to_string(),
        call.provider.to_string(),
        call.method.to_string(),
    );
    let (message_id, traceparent, user_id) = (
        call.message_id.clone(),
        call.trace.traceparent.clone(),
        call.user_id.clone(),
    );
    let trace_id = call.trace.trace_id().to_owned();
    let bytes_out = body.len();
    // Every log line of the exchange names its trace and message.
    let span = tracing::info_span!(
        "exchange",
        side = "consumer",
        trace_id = %trace_id,
        message_id = %message_id
    );
    let progress = crate::outcome::Progress::default();
    let answer =
        tracing::Instrument::instrument(exchange_with_provider(s, call, body, &progress), span)
            .await;
    s.outcomes.finished(crate::outcome::Finished {
        exchanged: crate::outcome::Exchanged {
            side: "consumer",
            client: &client,
            provider: &provider,
            method: &method,
            code: match &answer {
                Ok(_) => "Ok".into(),
                Err(status) => format!("{:?}", status.code()),
            },
            source: answer
                .as_ref()
                .err()
                .and_then(|st| st.metadata().get(ERROR_SOURCE))
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
            elapsed: started.elapsed(),
            bytes_in: answer.as_ref().map(|a| a.body.len()).unwrap_or(0),
            bytes_out,
        },
        started_unix_ms,
        message_id: &message_id,
        traceparent: &traceparent,
        user_id: &user_id,
        progress: &progress,
    });
    answer
}

async fn exchange_with_provider(
    s: &Consumer,
    call: Call,
    body: Bytes,
    progress: &crate::outcome::Progress,
) -> Result<Answer, Status> {
    use crate::outcome::Stage;
    let Call {
        client,
        provider,
        method,
        message_id,
        user_id,
        purpose,
        issue,
        trace,
    } = call;
    s.maintenance.admit(ErrorSource::ConsumerServer)?;
    let mut conf = s.conf.current(ErrorSource::ConsumerServer)?;
    s.recorder.check_trusted_time(ErrorSource::ConsumerServer)?;
    // A provider or client admitted since the last poll: fetch once before refusing.
    let listed = |c: &VerifiedConf| {
        c.has_client(&client.clone().into()) && c.servers_hosting(&provider).next().is_some()
    };
    if !listed(&conf) && s.conf.refresh_now().await {
        conf = s.conf.current(ErrorSource::ConsumerServer)?;
    }
    if !conf.has_client(&client.clone().into()) {
        return Err(consumer_error(
            Code::FailedPrecondition,
            format!("client {client} is not registered in the global configuration"),
        ));
    }
    let target = conf
        .servers_hosting(&provider)
        .find(|e| e.tls_cert_sha256.len() == 32)
        .ok_or_else(|| {
            consumer_error(
                Code::NotFound,
                format!("no security server in the global configuration hosts {provider}"),
            )
        })?
        .clone();
    let pin: [u8; 32] = target
        .tls_cert_sha256
        .as_slice()
        .try_into()
        .map_err(|_| consumer_error(Code::Internal, "configuration: bad certificate hash"))?;

    let body_sha256 = lintas_certs::sha256(&body);
    let header = ex::RequestHeader {
        message_id: message_id.clone(),
        client: client.to_string(),
        service_provider: provider.to_string(),
        method: method.to_string(),
        consumer_server: s.own.id.to_string(),
        provider_server: target.id.clone(),
        time_unix_ms: s.recorder.now_ms(),
        body_sha256: body_sha256.to_vec(),
        body_len: body.len() as u64,
        conf_serial: conf.serial(),
        user_id,
        purpose,
        issue,
        traceparent: trace.traceparent.clone(),
        tracestate: trace.tracestate.clone(),
    }
    .encode_to_vec();
    let request_hash = lintas_certs::sha256(&header);
    progress.set_peer(&target.id);
    let signature = progress
        .time(Stage::Signing, s.own.signer.sign(REQUEST_DOMAIN, &header))
        .await
        .map_err(|e| consumer_error(Code::Internal, format!("signing the request: {e}")))?;
    let ctx = envelope::Context {
        message_id: message_id.clone(),
        client: client.to_string(),
        service_provider: provider.to_string(),
        method: method.to_string(),
        peer_server: target.id.clone(),
        peer_cert_sha256: pin.to_vec(),
        trace_id: trace.trace_id().to_owned(),
    };
    // The record of what was signed is written while the request travels: the
    // application is answered only after a later record of this exchange is durable,
    // and records become durable in order.
    let sent = s.recorder.record_soon(
        ctx.record(
            RecordKind::RequestSent,
            s.recorder.now_ms(),
            &header,
            Some(&signature),
            &s.own.sign_cert,
            &body_sha256,
            body.len() as u64,
            Code::Ok,
            "",
        ),
        ErrorSource::ConsumerServer,
    )?;
    let signed = ex::SignedRequest {
        header,
        signature: Some(signature),
        signer_cert: s.own.sign_cert.clone(),
        body: body.to_vec(),
    };

    // From here every outcome is recorded before the application hears of it.
    let exchanged = progress.time(
        Stage::Peer,
        exchange(s, &conf, &target, &provider, pin, &message_id, signed),
    );
    match exchanged.await {
        Ok((response, answer)) => {
            let code = Code::from_i32(answer.status_code);
            let durable = std::time::Instant::now();
            let received = s
                .recorder
                .record(
                    ctx.record(
                        RecordKind::ResponseReceived,
                        s.recorder.now_ms(),
                        &response.header,
                        response.signature.as_ref(),
                        &response.signer_cert,
                        &answer.body_sha256,
                        answer.body_len,
                        code,
                        &answer.status_message,
                    ),
                    ErrorSource::ConsumerServer,
                )
                .await?;
            let sent = sent.await?;
            progress.add(Stage::Durable, durable.elapsed());
            s.recorder
                .keep_bodies(&[(sent, &body), (received, &response.body)]);
            if code != Code::Ok {
                let source = if answer.error_source == ErrorSource::ProviderServer.as_str() {
                    ErrorSource::ProviderServer
                } else {
                    ErrorSource::ProviderApp
                };
                return Err(error(code, source, answer.status_message));
            }
            Ok(Answer {
                body: Bytes::from(response.body),
                message_id,
                request_hash,
            })
        }
        Err((status, received)) => {
            let empty = ex::SignedResponse::default();
            let r = received.as_ref().unwrap_or(&empty);
            // An oversized header from a hostile peer is not copied; its hash is enough.
            let header: &[u8] = if r.header.len() <= envelope::MAX_HEADER_BYTES {
                &r.header
            } else {
                &[]
            };
            s.recorder
                .record(
                    ctx.record(
                        RecordKind::Failed,
                        s.recorder.now_ms(),
                        header,
                        r.signature.as_ref(),
                        &r.signer_cert,
                        &lintas_certs::sha256(&r.body),
                        r.body.len() as u64,
                        status.code(),
                        status.message(),
                    ),
                    ErrorSource::ConsumerServer,
                )
                .await?;
            sent.await?;
            Err(status)
        }
    }
}

/// Sends the signed request to the provider server and verifies the signed response.
/// On failure returns the status for the application and, if one arrived, the
/// response that was refused.
async fn exchange(
    s: &Consumer,
    conf: &VerifiedConf,
    target: &lintas_proto::globalconf::v1::SecurityServer,
    provider: &SubsystemId,
    pin: [u8; 32],
    message_id: &str,
    signed: ex::SignedRequest,
) -> Result<(ex::SignedResponse, ex::ResponseHeader), (Status, Option<ex::SignedResponse>)> {
    let fail = |status: Status| (status, None);
    let request_header_sha256 = lintas_certs::sha256(&signed.header);
    let channel = s
        .peers
        .channel(
            conf,
            &target.address,
            pin,
            (&s.own.tls_cert, &s.own.tls_key),
        )
        .map_err(fail)?;
    let limit = s.settings.max_message_bytes + envelope::ENVELOPE_MARGIN;
    let mut peer = ex::exchange_client::ExchangeClient::new(channel)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let deadline = s.settings.app_timeout + std::time::Duration::from_secs(5);
    let mut call = Request::new(signed);
    call.set_timeout(deadline);
    let response = match tokio::time::timeout(deadline, peer.call(call)).await {
        Err(_) => {
            return Err(fail(consumer_error(
                Code::DeadlineExceeded,
                format!(
                    "provider security server {} did not answer within {} s",
                    target.id,
                    deadline.as_secs()
                ),
            )));
        }
        Ok(Ok(r)) => r.into_inner(),
        // The connection failed: this side's problem to report.
        Ok(Err(status)) if std::error::Error::source(&status).is_some() => {
            return Err(fail(consumer_error(
                Code::Unavailable,
                format!(
                    "provider security server {} at {} unreachable: {}",
                    target.id,
                    target.address,
                    status.message()
                ),
            )));
        }
        // The provider server refused. Its answer is unsigned: only the code and the
        // message are passed on, under this server's own source tag.
        Ok(Err(status)) => {
            return Err(fail(error(
                status.code(),
                ErrorSource::ProviderServer,
                status.message(),
            )));
        }
    };

    // The answer must be signed by the provider's member and bound to this request.
    let refused = |why: String, response: ex::SignedResponse| {
        (
            consumer_error(Code::DataLoss, format!("response refused: {why}")),
            Some(response),
        )
    };
    if response.header.len() > envelope::MAX_HEADER_BYTES {
        return Err(refused("header too large".into(), response));
    }
    let verify = |conf: &VerifiedConf, listed: &[Vec<u8>]| {
        s.verifier.verify_signed(
            conf,
            &provider.member,
            listed,
            &response.signer_cert,
            RESPONSE_DOMAIN,
            &response.header,
            response.signature.as_ref(),
        )
    };
    if let Err(why) = verify(conf, &target.signing_certs) {
        // A renewed provider certificate is listed from the next configuration on.
        let newer = if why.not_listed && s.conf.refresh_now().await {
            s.conf.client().current().ok()
        } else {
            None
        };
        let listed_now = newer.as_ref().and_then(|c| {
            c.conf
                .servers
                .iter()
                .find(|e| e.id == target.id)
                .map(|e| verify(c, &e.signing_certs))
        });
        if !matches!(listed_now, Some(Ok(()))) {
            return Err(refused(why.to_string(), response));
        }
    }
    let answer = match ex::ResponseHeader::decode(response.header.as_slice()) {
        Ok(a) => a,
        Err(e) => return Err(refused(format!("header is malformed: {e}"), response)),
    };
    if answer.request_header_sha256 != request_header_sha256
        || answer.message_id != message_id
        || answer.provider_server != target.id
    {
        return Err(refused("it does not answer this request".into(), response));
    }
    if !envelope::body_matches(&answer.body_sha256, answer.body_len, &response.body) {
        return Err(refused(
            "body does not match the signed hash".into(),
            response,
        ));
    }
    Ok((response, answer))
}
