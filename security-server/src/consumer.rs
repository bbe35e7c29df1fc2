//! The consumer endpoint: local applications call any `/package.Service/Method` here as
//! they would call the provider, adding metadata:
//!
//! | key | required | meaning |
//! |---|---|---|
//! | `lintas-client` | yes | the calling subsystem, INSTANCE/CLASS/MEMBER/SUBSYSTEM |
//! | `lintas-service` | yes | the provider subsystem |
//! | `lintas-message-id` | no | unique id (generated when absent) |
//! | `lintas-user-id`, `lintas-purpose`, `lintas-issue` | no | user, legal basis, case |
//! | `lintas-idempotency-key` | no | a retry under it is answered with the first answer |
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
use lintas_identifiers::{ClientId, MethodPath, SubsystemId};
use tonic::codegen::http;
use tonic::metadata::MetadataMap;
use tonic::server::ClientStreamingService;
use tonic::{Code, Request, Response, Status, Streaming};

use crate::conf_view::ConfView;
use crate::config::Settings;
use crate::envelope::{self, Verifier};
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
    /// Which of a provider's servers to try, learnt from the calls.
    pub selector: Arc<crate::select::Selector>,
    pub outcomes: Arc<Outcomes>,
    /// The published descriptors, which say whether a method streams.
    pub catalogue: Arc<crate::catalogue::Catalogue>,
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
            let grpc = req
                .headers()
                .get(http::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
            if !grpc {
                let answer = crate::xroad_error::unknown_path(req.headers(), req.uri().path());
                return Ok(answer.map(tonic::body::Body::new));
            }
            let (remote, peer_cert) = caller(req.extensions());
            // Held until the call ends: requests in progress are bounded.
            let ticket = match server.admit(remote) {
                Ok(t) => t,
                Err(status) => return Ok(status.into_http()),
            };
            let max = server.settings.max_message_bytes;
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max);
            let provider = req
                .headers()
                .get("lintas-service")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let path = req.uri().path().to_owned();
            // Only for a caller that may call at all: the decision may fetch descriptors.
            let known = server
                .local
                .authenticate_connection(remote, peer_cert)
                .is_ok();
            if known && streams(&server, &path, provider.as_deref()).await {
                let call = stream::StreamCall {
                    path: req.uri().path().to_owned(),
                    remote,
                    peer_cert,
                    server: server.clone(),
                    // A stream holds its place until it ends, not until it starts.
                    ticket: Some(ticket),
                };
                return Ok(grpc.streaming(call, req).await);
            }
            let _ticket = ticket;
            // A message too large for one message between the servers travels framed.
            let req = match framed::route(&server, req, provider.as_deref()).await {
                framed::Route::Unary(req) => req,
                framed::Route::Framed(parts, upload) => {
                    let caller = (remote, peer_cert);
                    let answer = framed::call(server, path, caller, &parts.headers, upload);
                    return Ok(answer.await);
                }
                framed::Route::Refused(status) => return Ok(status.into_http()),
            };
            let call = ConsumerCall {
                path: req.uri().path().to_owned(),
                remote,
                peer_cert,
                server: server.clone(),
            };
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

/// Whether a call is to a streaming method, by the descriptors the provider published;
/// a call the checks will refuse anyway goes the unary way, which says why.
async fn streams(s: &Consumer, path: &str, provider: Option<&str>) -> bool {
    let Ok(method) = path.parse::<MethodPath>() else {
        return false;
    };
    let Some(provider) = provider.and_then(|v| v.parse::<SubsystemId>().ok()) else {
        return false;
    };
    let Ok(conf) = s.conf.current(ErrorSource::ConsumerServer) else {
        return false;
    };
    s.catalogue.streams(&conf, &provider, &method).await
}

mod attempt;
mod framed;
mod stream;
mod transcode;
pub(crate) mod transfer;

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

/// A request message that did not arrive within `limit`.
fn late_request(limit: std::time::Duration) -> Status {
    consumer_error(
        Code::DeadlineExceeded,
        format!(
            "the request message did not arrive within {} s (connection_limits.request_timeout_secs)",
            limit.as_secs()
        ),
    )
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

fn identifier<T: std::str::FromStr<Err = lintas_identifiers::IdError>>(
    metadata: &MetadataMap,
    key: &str,
) -> Result<T, Status> {
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

/// The call a local application's gRPC request makes: the authenticated client, the
/// provider and method, and the metadata the exchange carries.
fn call_of(
    s: &Consumer,
    path: &str,
    remote: Option<SocketAddr>,
    peer_cert: Option<[u8; 32]>,
    md: &MetadataMap,
) -> Result<Call, Status> {
    let client: ClientId = identifier(md, "lintas-client")?;
    s.local.authenticate(&client, remote, peer_cert)?;
    let provider: SubsystemId = identifier(md, "lintas-service")?;
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
    let idempotency_key = field("lintas-idempotency-key")?;
    if !idempotency_key.is_empty() {
        crate::idempotency::check_key(&idempotency_key).map_err(|why| {
            consumer_error(
                Code::InvalidArgument,
                format!("lintas-idempotency-key {why}"),
            )
        })?;
    }
    Ok(Call {
        client,
        provider,
        method,
        message_id,
        user_id,
        purpose,
        issue,
        trace,
        rest: None,
        rest_secrets: Vec::new(),
        represented_party: String::new(),
        server: None,
        idempotency_key,
    })
}

async fn relay(
    s: Arc<Consumer>,
    path: String,
    remote: Option<SocketAddr>,
    peer_cert: Option<[u8; 32]>,
    request: Request<Streaming<Bytes>>,
) -> Result<Response<Bytes>, Status> {
    let call = call_of(&s, &path, remote, peer_cert, request.metadata())?;
    let trace = call.trace.clone();
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
    .map_err(|_| late_request(limit))??;
    // A REST service published from its OpenAPI document is called by its HTTP rules.
    let rest = s
        .conf
        .current(ErrorSource::ConsumerServer)
        .ok()
        .and_then(|conf| transcode::rest_entry(&conf, &call));
    let answer = match rest {
        Some(entry) => transcode::call(&s, call, body, entry).await?,
        None => call_provider(&s, call, body).await?,
    };
    let mut reply = Response::new(answer.body);
    if let Ok(v) = answer.message_id.parse() {
        reply.metadata_mut().insert("lintas-message-id", v);
    }
    if !answer.repeats_message_id.is_empty()
        && let Ok(v) = answer.repeats_message_id.parse()
    {
        reply.metadata_mut().insert("lintas-repeats-message-id", v);
    }
    // The caller learns the trace it is part of (one may have been started for it).
    if let Ok(v) = trace.traceparent.parse() {
        reply.metadata_mut().insert("traceparent", v);
    }
    Ok(reply)
}

/// One call of a local application, authenticated, with its metadata checked.
pub(crate) struct Call {
    pub client: ClientId,
    pub provider: SubsystemId,
    pub method: MethodPath,
    pub message_id: String,
    pub user_id: String,
    pub purpose: String,
    pub issue: String,
    pub trace: crate::trace::TraceContext,
    /// A REST call passed through: the HTTP request (its body is the call's body), and
    /// the values of its credential headers (signed as commitments, never logged).
    pub rest: Option<lintas_proto::exchange::v1::RestRequest>,
    pub rest_secrets: Vec<lintas_proto::exchange::v1::SecretValue>,
    /// The party the client acts for (X-Road-Represented-Party), or empty.
    pub represented_party: String,
    /// The provider's security server the client asked for (X-Road-Security-Server):
    /// only it is tried.
    pub server: Option<String>,
    /// The client's idempotency key (`lintas-idempotency-key`), or empty.
    pub idempotency_key: String,
}

/// The provider's answer to a call.
pub(crate) struct Answer {
    pub body: Bytes,
    pub message_id: String,
    /// SHA-256 of the signed request header, which the signed response names.
    pub request_hash: [u8; 32],
    /// A REST backend's status and headers, and its credential headers' values.
    pub rest: Option<lintas_proto::exchange::v1::RestResponse>,
    pub rest_secrets: Vec<lintas_proto::exchange::v1::SecretValue>,
    /// The answer repeats the one given to this message id under the same idempotency
    /// key; empty otherwise.
    pub repeats_message_id: String,
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

/// Most servers one call is tried on.
const MAX_ATTEMPTS: usize = 3;

/// What ties `call` to one of the provider's servers: a request under an idempotency
/// key and its repeats go to the server that keeps the key (client, service and key);
/// a subscription call to one server of those that list its topic (client and topic),
/// so that a subscription and its end meet. Other calls spread.
fn stick_key(call: &Call, listed_as: &str) -> Option<String> {
    if !call.idempotency_key.is_empty() {
        Some(format!(
            "{}\n{}\n{}",
            call.client, call.method.service, call.idempotency_key
        ))
    } else if listed_as != call.method.service.as_str() {
        Some(format!("{}\n{listed_as}", call.client))
    } else {
        None
    }
}

/// The configuration and the provider's servers to try for `call`, best first: the
/// checks every exchange starts with (maintenance, a fresh configuration, trusted time,
/// a registered client, a server hosting the provider), narrowed to the servers the
/// catalogue lists `listed_as` on (the called service, or the topic a subscription
/// call names).
pub(crate) async fn targets(
    s: &Consumer,
    call: &Call,
    listed_as: &str,
) -> Result<
    (
        Arc<VerifiedConf>,
        Vec<lintas_proto::globalconf::v1::SecurityServer>,
    ),
    Status,
> {
    s.maintenance.admit(ErrorSource::ConsumerServer)?;
    let mut conf = s.conf.current(ErrorSource::ConsumerServer)?;
    s.recorder.check_trusted_time(ErrorSource::ConsumerServer)?;
    let (client, provider) = (&call.client, &call.provider);
    // A provider or client admitted since the last poll: fetch once before refusing.
    let listed =
        |c: &VerifiedConf| c.has_client(client) && c.servers_hosting(provider).next().is_some();
    if !listed(&conf) && s.conf.refresh_since(Some(conf.serial())).await {
        conf = s.conf.current(ErrorSource::ConsumerServer)?;
    }
    if !conf.has_client(client) {
        return Err(crate::errors::with_reason(
            consumer_error(
                Code::FailedPrecondition,
                format!("client {client} is not registered in the global configuration"),
            ),
            "UnknownMember",
        ));
    }
    let mut servers = crate::select::candidates(
        conf.servers_hosting(provider).collect(),
        &conf.conf.services,
        &provider.to_string(),
        listed_as,
    );
    if let Some(asked) = &call.server {
        servers.retain(|e| &e.id == asked);
        if servers.is_empty() {
            return Err(crate::errors::with_reason(
                consumer_error(
                    Code::NotFound,
                    format!("security server {asked} does not host {provider}"),
                ),
                "InvalidSecurityServer",
            ));
        }
    }
    if servers.is_empty() {
        return Err(crate::errors::with_reason(
            consumer_error(
                Code::NotFound,
                format!("no security server in the global configuration hosts {provider}"),
            ),
            "UnknownMember",
        ));
    }
    // The server a call's key belongs to: for an idempotency key, of every server
    // hosting the provider (not only those the catalogue lists yet, so that a key keeps
    // its server as they come to list the service); for a subscription, of those that
    // list its topic.
    let owner = stick_key(call, listed_as).and_then(|key| {
        let ids: Vec<&str> = if call.idempotency_key.is_empty() {
            servers.iter().map(|e| e.id.as_str()).collect()
        } else {
            conf.servers_hosting(provider)
                .filter(|e| e.tls_cert_sha256.len() == 32)
                .map(|e| e.id.as_str())
                .collect()
        };
        crate::select::key_owner(&ids, &key).map(|i| ids[i].to_owned())
    });
    let order: Vec<_> = s
        .selector
        .order_keyed(
            servers,
            std::time::Instant::now(),
            random_u64()?,
            owner.as_deref(),
        )
        .into_iter()
        .cloned()
        .collect();
    Ok((conf, order))
}

async fn exchange_with_provider(
    s: &Consumer,
    call: Call,
    body: Bytes,
    progress: &crate::outcome::Progress,
) -> Result<Answer, Status> {
    let listed_as = crate::select::listed_as(&call.method, &body);
    let (conf, order) = targets(s, &call, &listed_as).await?;
    let mut previous = None;
    let mut failed: Option<Status> = None;
    // When no server could be reached as the configuration describes it (it moved, or
    // switched to certificates a newer configuration lists), a newer one is fetched
    // (at most so often) and the servers it names are tried once more.
    let mut round = Some((conf, order));
    let mut refreshed = false;
    let mut attempt = 0;
    while let Some((conf, order)) = round.take() {
        for target in order.iter().take(MAX_ATTEMPTS) {
            if let Some(status) = &failed {
                s.outcomes.exchanges.retried(status.code());
            }
            let tried = attempt::Attempt {
                call: &call,
                body: &body,
                conf: &conf,
                target,
                attempt,
                retry_of: previous,
            };
            attempt += 1;
            match attempt::run(s, tried, progress).await {
                Ok(answer) => return Ok(answer),
                Err(f) if f.retry => {
                    tracing::warn!(server = %target.id, code = ?f.status.code(), reason = %f.status.message(), "attempt did not reach the provider's application; another server is tried if there is one");
                    previous = Some(f.request_hash);
                    failed = Some(f.status);
                }
                Err(f) => return Err(f.status),
            }
        }
        if !refreshed && s.conf.refresh_since(Some(conf.serial())).await {
            refreshed = true;
            round = Some(targets(s, &call, &listed_as).await?);
        }
    }
    Err(failed.unwrap_or_else(|| consumer_error(Code::Internal, "no attempt was made")))
}

fn random_u64() -> Result<u64, Status> {
    use aws_lc_rs::rand::SecureRandom;
    let mut b = [0u8; 8];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| consumer_error(Code::Internal, "random number generator failed"))?;
    Ok(u64::from_le_bytes(b))
}
