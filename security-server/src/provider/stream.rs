//! The provider side of streaming calls (`Exchange.Stream`): the signed request is
//! checked like a unary one and recorded; then the client's messages, each verified,
//! chained and recorded before the application sees it, flow to the application while
//! its messages, each signed and recorded before it leaves, flow back; a signed
//! response with the status closes the stream and names the last message of each
//! direction. Channels of a few messages each way leave the rest to HTTP/2 flow
//! control, so a slow consumer slows the application and memory stays bounded.

use std::pin::Pin;
use std::sync::Mutex;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::*;
use crate::chain::{Chain, MESSAGE_DOMAIN};

/// The frames answered to the consumer's server.
pub(super) type Frames =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<ex::StreamFrame, Status>> + Send>>;

/// Messages buffered in each direction; HTTP/2 flow control holds back the rest.
pub(super) const BUFFER: usize = 4;

pub(super) fn protocol(message: impl Into<String>) -> Status {
    error(Code::InvalidArgument, ErrorSource::ProviderServer, message)
}

/// What both directions of one stream share.
pub(super) struct Open {
    pub(super) s: Arc<Provider>,
    pub(super) ctx: Context,
    pub(super) request_hash: [u8; 32],
    pub(super) request_record: u64,
    pub(super) accepted: Accepted,
    /// The client's messages received so far: their number and the last one's header
    /// hash, and the end message's once received. The close names them.
    pub(super) received: Mutex<Received>,
    /// The configuration the stream was opened under, and the signing certificates it
    /// lists for the consumer's server: the client's messages are checked against them.
    conf: Arc<lintas_globalconf::VerifiedConf>,
    listed: Vec<Vec<u8>>,
    /// The keys this side's messages and close are signed with, for the whole stream
    /// (its first message names their certificate), even after a renewal switches in.
    pub(super) keys: Arc<crate::own::OwnKeys>,
}

impl Open {
    /// The metrics and monitoring record of the call, once it ended with `code` (from
    /// `source`), having taken and given `bytes` (in, out) of bodies.
    pub(super) fn finished(
        &self,
        progress: &crate::outcome::Progress,
        started: Instant,
        code: Code,
        source: &str,
        (bytes_in, bytes_out): (usize, usize),
    ) {
        let h = &self.accepted.header;
        self.s.outcomes.finished(crate::outcome::Finished {
            exchanged: crate::outcome::Exchanged {
                side: "provider",
                client: &h.client,
                provider: &h.service_provider,
                method: &h.method,
                code: format!("{code:?}"),
                source,
                elapsed: started.elapsed(),
                bytes_in,
                bytes_out,
            },
            started_unix_ms: h.time_unix_ms,
            message_id: &h.message_id,
            traceparent: &h.traceparent,
            user_id: &h.user_id,
            progress,
        });
    }
}

#[derive(Default)]
pub(super) struct Received {
    pub(super) messages: u64,
    /// The bytes of their bodies.
    pub(super) bytes: usize,
    pub(super) last: Option<[u8; 32]>,
    pub(super) end: Option<[u8; 32]>,
}

/// How long the signed close waits for a consumer's server that does not read.
pub(super) const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// Checks the opening request and starts both directions; the frames to answer with.
pub(super) async fn open(
    s: Arc<Provider>,
    peer_cert: Option<Vec<u8>>,
    mut incoming: Streaming<ex::StreamFrame>,
    ticket: lintas_transport::admission::Ticket,
) -> Result<Frames, Status> {
    let side = ErrorSource::ProviderServer;
    // A peer that opens a stream and sends nothing holds a request slot: it gets the
    // deadline slow requests get.
    let limit = s.settings.connection_limits.request_timeout();
    let first = tokio::time::timeout(limit, incoming.message())
        .await
        .map_err(|_| {
            error(
                Code::DeadlineExceeded,
                side,
                format!(
                    "the stream was not opened within {} s (connection_limits.request_timeout_secs)",
                    limit.as_secs()
                ),
            )
        })??
        .ok_or_else(|| protocol("the stream ended before it was opened"))?;
    let Some(ex::stream_frame::Frame::Open(signed)) = first.frame else {
        return Err(protocol("a stream opens with a signed request"));
    };
    let progress = crate::outcome::Progress::default();
    let (accepted, ctx) = admit_request(&s, peer_cert.as_deref(), &signed, &progress, true).await?;
    let request_record = s
        .recorder
        .record(
            ctx.record(
                RecordKind::RequestReceived,
                s.recorder.now_ms(),
                &signed.header,
                signed.signature.as_ref(),
                &signed.signer_cert,
                &accepted.header.body_sha256,
                accepted.header.body_len,
                Code::Ok,
                "",
            ),
            side,
        )
        .await
        .map_err(not_delivered)?;
    let conf = s.conf.current(side).map_err(not_delivered)?;
    let peer = accepted.peer.to_string();
    let listed = conf
        .conf
        .servers
        .iter()
        .find(|e| e.id == peer)
        .map(|e| e.signing_certs.clone())
        .unwrap_or_default();
    let open = Arc::new(Open {
        conf,
        listed,
        keys: s.own.keys(),
        request_hash: accepted.header_sha256,
        s,
        ctx,
        request_record,
        accepted,
        received: Mutex::default(),
    });
    if open.accepted.header.rest.is_some() || open.accepted.header.grpc_framed {
        return Ok(super::transfer::start(
            open, signed, incoming, ticket, progress,
        ));
    }
    let (to_app, from_consumer) = mpsc::channel::<Bytes>(BUFFER);
    let (to_consumer, frames) = mpsc::channel(BUFFER);
    let (abort, aborted) = oneshot::channel::<Status>();
    let uplink = tokio::spawn(uplink(
        open.clone(),
        signed.signer_cert,
        incoming,
        to_app,
        abort,
        0,
    ));
    tokio::spawn(async move {
        let _ticket = ticket;
        let started = Instant::now();
        let (code, source, bytes) = downlink(&open, from_consumer, to_consumer, aborted).await;
        // After the close nothing more of the client's is taken or recorded.
        uplink.abort();
        let received = open
            .received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .bytes;
        open.finished(&progress, started, code, source, (received, bytes));
    });
    Ok(Box::pin(ReceiverStream::new(frames)))
}

/// The client's messages: verified, chained, recorded, then handed to the application.
/// A message that does not verify ends the call (`abort`). With `pending` above zero
/// (a body's chunks), a message is handed on while its record is written, at most
/// `pending` records waiting, and the end only once every record is durable; with zero
/// (a stream's messages), each only once its record is durable.
pub(super) async fn uplink(
    open: Arc<Open>,
    signer_cert: Vec<u8>,
    mut incoming: Streaming<ex::StreamFrame>,
    to_app: mpsc::Sender<Bytes>,
    abort: oneshot::Sender<Status>,
    pending: usize,
) {
    let s = &open.s;
    let mut chain = Chain::new(open.request_hash, false);
    let mut waiting = std::collections::VecDeque::new();
    let failed = loop {
        let frame = match incoming.message().await {
            Ok(Some(f)) => f,
            // The client or its server gave up: the call is cancelled.
            Ok(None) => {
                break Some(error(
                    Code::Cancelled,
                    ErrorSource::ProviderServer,
                    "the request stream ended without its signed end: the client or its server cancelled",
                ));
            }
            Err(e) => {
                break Some(error(
                    Code::Cancelled,
                    ErrorSource::ProviderServer,
                    format!(
                        "the consumer's server cancelled the stream: {}",
                        e.message()
                    ),
                ));
            }
        };
        let Some(ex::stream_frame::Frame::Message(m)) = frame.frame else {
            break Some(protocol("only messages follow the opening request"));
        };
        if !m.signer_cert.is_empty() && m.signer_cert != signer_cert {
            break Some(protocol(
                "the messages of a stream are signed with the request's certificate",
            ));
        }
        if let Err(why) = verify(&open, &signer_cert, &m) {
            break Some(error(
                Code::Unauthenticated,
                ErrorSource::ProviderServer,
                why,
            ));
        }
        let header = match chain.accept(&m.header, Some(&m.body)) {
            Ok(h) => h,
            Err(why) => break Some(protocol(why)),
        };
        if let Err(st) = still_allowed(&open) {
            break Some(st);
        }
        let durable = match crate::messages::record_received_soon(
            &s.recorder,
            &open.ctx,
            &m,
            &header,
            &signer_cert,
            ErrorSource::ProviderServer,
        ) {
            Ok(d) => d,
            Err(st) => break Some(st),
        };
        waiting.push_back(durable);
        let mut durable_failed = None;
        while waiting.len() > pending || (header.end && !waiting.is_empty()) {
            if let Some(oldest) = waiting.pop_front()
                && let Err(st) = oldest.await
            {
                durable_failed = Some(st);
                break;
            }
        }
        if let Some(st) = durable_failed {
            break Some(st);
        }
        {
            let mut received = open.received.lock().unwrap_or_else(|p| p.into_inner());
            if header.end {
                received.end = Some(chain.last());
            } else {
                received.messages = chain.count();
                received.bytes += m.body.len();
                received.last = Some(chain.last());
            }
        }
        if header.end {
            // Dropping the sender ends the application's request stream.
            break None;
        }
        if to_app.send(m.body).await.is_err() {
            // The application's call ended; nothing more goes to it.
            break None;
        }
    };
    if let Some(status) = failed {
        let _ = abort.send(status);
    }
}

/// Whether the client may still call the method: a grant revoked, or a group or
/// membership changed in the configuration, ends a stream at its next message.
fn still_allowed(open: &Open) -> Result<(), Status> {
    let s = &open.s;
    let refused = |why: String| error(Code::PermissionDenied, ErrorSource::ProviderServer, why);
    let conf = s
        .conf
        .current(ErrorSource::ProviderServer)
        .map_err(|st| refused(st.message().to_owned()))?;
    let provider: SubsystemId = open
        .accepted
        .header
        .service_provider
        .parse()
        .map_err(|e| refused(format!("service provider: {e}")))?;
    let a = &open.accepted;
    let path = a.header.rest.as_ref().map(|r| r.path.as_str());
    if s.access
        .allowed(&conf, &a.client, &provider, &a.method, path)
    {
        Ok(())
    } else {
        Err(refused(format!(
            "{} may no longer call {} of {provider}: access was revoked during the stream",
            a.client, a.method
        )))
    }
}

/// A client's message is signed by its member with the request's certificate.
fn verify(open: &Open, signer_cert: &[u8], m: &ex::SignedMessage) -> Result<(), String> {
    if m.header.len() > envelope::MAX_HEADER_BYTES {
        return Err("message header too large".into());
    }
    open.s
        .verifier
        .verify_signed(
            &open.conf,
            open.accepted.client.member(),
            &open.listed,
            signer_cert,
            MESSAGE_DOMAIN,
            &m.header,
            m.signature.as_ref(),
        )
        .map_err(|why| format!("request message {why}"))
}

/// Calls the application and passes its messages back, each signed and recorded, then
/// closes the stream with the signed status. Returns the status's code, who produced
/// it and the bytes sent.
async fn downlink(
    open: &Open,
    from_consumer: mpsc::Receiver<Bytes>,
    to_consumer: mpsc::Sender<Result<ex::StreamFrame, Status>>,
    mut aborted: oneshot::Receiver<Status>,
) -> (Code, &'static str, usize) {
    let s = &open.s;
    let side = ErrorSource::ProviderServer;
    let mut chain = Chain::new(open.request_hash, true);
    let mut bytes = 0;
    let answer = async {
        let Target::App(service) = &open.accepted.target else {
            return AppAnswer::server(Code::Unimplemented, "not a streaming method");
        };
        let channel = match s.apps.channel(service) {
            Ok(c) => c,
            Err(st) => return AppAnswer::server(st.code(), st.message()),
        };
        let path: PathAndQuery = match open.accepted.method.to_string().parse() {
            Ok(p) => p,
            Err(e) => return AppAnswer::server(Code::Internal, format!("method path: {e}")),
        };
        let h = &open.accepted.header;
        let mut request = Request::new(ReceiverStream::new(from_consumer));
        for (key, v) in forwarded(h) {
            if !v.is_empty()
                && let Ok(v) = v.parse()
            {
                request.metadata_mut().insert(key, v);
            }
        }
        // The client's deadline: the application hears of it, and this server ends the
        // call when it passes (a stream's body is not bounded by gRPC's own timeout).
        let left = (h.deadline_unix_ms > 0).then(|| {
            Duration::from_millis(
                h.deadline_unix_ms
                    .saturating_sub(s.recorder.now_ms())
                    .max(1) as u64,
            )
        });
        if let Some(left) = left {
            request.set_timeout(left);
        }
        let deadline = tokio::time::sleep(left.unwrap_or(Duration::MAX / 4));
        tokio::pin!(deadline);
        let max = s.settings.max_message_bytes;
        let mut grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max);
        let opened = async {
            grpc.ready().await.map_err(|e| {
                AppAnswer::server(
                    Code::Unavailable,
                    format!("provider application unreachable: {e}"),
                )
            })?;
            grpc.streaming(request, path, RawCodec)
                .await
                .map(|r| r.into_inner())
                .map_err(app_status)
        };
        let opened = tokio::select! {
            opened = opened => opened,
            () = &mut deadline, if left.is_some() => Err(AppAnswer::server(
                Code::DeadlineExceeded,
                "the client's deadline passed before the application answered",
            )),
        };
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(answer) => return answer,
        };
        // Open until the client's direction ends, well or badly.
        let mut watching = true;
        loop {
            let next = tokio::select! {
                next = stream.message() => next,
                // Nothing more comes from the client: notice its server leaving.
                () = to_consumer.closed(), if !watching => {
                    return AppAnswer::server(
                        Code::Cancelled,
                        "the consumer's server went away during the stream",
                    );
                }
                () = &mut deadline, if left.is_some() => {
                    return AppAnswer::server(
                        Code::DeadlineExceeded,
                        "the client's deadline passed during the stream",
                    );
                }
                abort = &mut aborted, if watching => match abort {
                    Ok(status) => return AppAnswer::server(status.code(), status.message()),
                    Err(_) => {
                        watching = false;
                        continue;
                    }
                },
            };
            // A refused client message ends the application's request stream too: the
            // refusal, sent before that end, is the stream's outcome.
            if watching
                && !matches!(next, Ok(Some(_)))
                && let Ok(status) = aborted.try_recv()
            {
                return AppAnswer::server(status.code(), status.message());
            }
            let body = match next {
                Ok(Some(body)) => body,
                Ok(None) => return AppAnswer::server(Code::Ok, "").by_app(),
                Err(st) => return app_status(st),
            };
            if let Err(st) = still_allowed(open) {
                return AppAnswer::server(st.code(), st.message());
            }
            let mut message = match crate::messages::sign_next(
                &open.keys,
                &s.recorder,
                &open.ctx,
                &mut chain,
                &body,
                false,
                side,
            )
            .await
            {
                Ok(m) => m,
                Err(st) => return AppAnswer::server(st.code(), st.message()),
            };
            // The first message names the certificate; the rest use it too.
            if chain.count() == 1 {
                message.signer_cert = open.keys.sign_cert.clone();
            }
            bytes += body.len();
            let frame = ex::StreamFrame {
                frame: Some(ex::stream_frame::Frame::Message(message)),
            };
            // A consumer's server that does not read holds this send: the deadline
            // still ends the call.
            let sent = tokio::select! {
                sent = to_consumer.send(Ok(frame)) => sent.is_ok(),
                () = &mut deadline, if left.is_some() => {
                    return AppAnswer::server(
                        Code::DeadlineExceeded,
                        "the client's deadline passed during the stream",
                    );
                }
            };
            if !sent {
                // The consumer's server is gone: dropping the call cancels it.
                return AppAnswer::server(
                    Code::Cancelled,
                    "the consumer's server went away during the stream",
                );
            }
        }
    }
    .await;
    let source = source_of(&answer);
    let code = answer.code;
    let close = close(open, &chain, answer, false).await;
    let _ = tokio::time::timeout(CLOSE_WAIT, to_consumer.send(close)).await;
    (code, source, bytes)
}

/// Who produced an answer's status, as the metrics name it ("" when it succeeded).
pub(super) fn source_of(answer: &AppAnswer) -> &'static str {
    match (answer.code, answer.by_server) {
        (Code::Ok, _) => "",
        (_, true) => ErrorSource::ProviderServer.as_str(),
        (_, false) => ErrorSource::ProviderApp.as_str(),
    }
}

/// The signed, recorded close of a stream: the status (and a REST backend's status and
/// headers), the answer's body when `body_in_close` (a REST answer of one chunk), and
/// the last message of each direction.
pub(super) async fn close(
    open: &Open,
    chain: &Chain,
    answer: AppAnswer,
    body_in_close: bool,
) -> Result<ex::StreamFrame, Status> {
    let s = &open.s;
    let side = ErrorSource::ProviderServer;
    let (request_end, request_messages, request_last) = {
        let r = open.received.lock().unwrap_or_else(|p| p.into_inner());
        (r.end, r.messages, r.last.unwrap_or(open.request_hash))
    };
    let h = &open.accepted.header;
    let (body, secrets) = if body_in_close {
        (answer.body, answer.secrets)
    } else {
        (Vec::new(), Vec::new())
    };
    let body_sha256 = lintas_certs::sha256(&body).to_vec();
    let response = ex::ResponseHeader {
        request_header_sha256: open.request_hash.to_vec(),
        message_id: h.message_id.clone(),
        status_code: answer.code as i32,
        status_message: answer.message.clone(),
        body_sha256: body_sha256.clone(),
        body_len: body.len() as u64,
        time_unix_ms: s.recorder.now_ms(),
        provider_server: s.own.id.to_string(),
        request_record: open.request_record,
        error_source: if answer.by_server {
            side.as_str().into()
        } else {
            String::new()
        },
        rest: answer.rest,
        request_end_sha256: request_end.map(|h| h.to_vec()).unwrap_or_default(),
        request_messages,
        request_last_sha256: request_last.to_vec(),
        last_message_sha256: chain.last().to_vec(),
        messages: chain.count(),
        ..Default::default()
    };
    let header = response.encode_to_vec();
    let signature = open
        .keys
        .signer
        .sign(envelope::RESPONSE_DOMAIN, &header)
        .await
        .map_err(|e| error(Code::Internal, side, format!("signing the response: {e}")))?;
    let index = s
        .recorder
        .record(
            open.ctx.record(
                RecordKind::ResponseSent,
                s.recorder.now_ms(),
                &header,
                Some(&signature),
                &open.keys.sign_cert,
                &body_sha256,
                body.len() as u64,
                answer.code,
                &answer.message,
            ),
            side,
        )
        .await?;
    s.recorder.keep_bodies(&[(index, &body)]);
    Ok(ex::StreamFrame {
        frame: Some(ex::stream_frame::Frame::Close(ex::SignedResponse {
            header,
            signature: Some(signature),
            signer_cert: open.keys.sign_cert.clone(),
            body,
            secret_headers: secrets,
        })),
    })
}
