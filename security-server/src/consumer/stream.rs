//! The consumer side of streaming calls: the client's messages are signed, chained and
//! recorded before each goes to the provider's server (`Exchange.Stream`); the
//! application's messages are verified, chained and recorded before the client sees
//! each; the signed close gives the status and must name the last message of each
//! direction. A call streams when the method's published descriptors say so
//! (`Catalogue::streams`); its messages stay opaque bytes. Channels of a few messages
//! each way leave the rest to HTTP/2 flow control; a client that goes away cancels the
//! stream at the provider, and the client's deadline travels in the signed header.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::*;
use crate::chain::{Chain, MESSAGE_DOMAIN};
use lintas_log::RecordKind;
use lintas_proto::exchange::v1 as ex;
use lintas_proto::globalconf::v1::SecurityServer as Entry;
use prost::Message;

/// Messages buffered in each direction; HTTP/2 flow control holds back the rest.
const BUFFER: usize = 4;

/// The messages answered to the client.
pub(crate) type Messages = Pin<Box<dyn tokio_stream::Stream<Item = Result<Bytes, Status>> + Send>>;

/// A streaming call of a local application, answered as a stream.
pub(super) struct StreamCall {
    pub path: String,
    pub remote: Option<SocketAddr>,
    pub peer_cert: Option<[u8; 32]>,
    pub server: Arc<Consumer>,
    /// The request's place among those in progress, held until the stream ends.
    pub ticket: Option<lintas_transport::admission::Ticket>,
}

impl tonic::server::StreamingService<Bytes> for StreamCall {
    type Response = Bytes;
    type ResponseStream = Messages;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Messages>, Status>> + Send>>;

    fn call(&mut self, request: Request<Streaming<Bytes>>) -> Self::Future {
        let path = std::mem::take(&mut self.path);
        let (remote, peer_cert, s) = (self.remote, self.peer_cert, self.server.clone());
        let ticket = self.ticket.take();
        Box::pin(async move {
            let call = call_of(&s, &path, remote, peer_cert, request.metadata())?;
            let deadline = request
                .metadata()
                .get("grpc-timeout")
                .and_then(|v| v.to_str().ok())
                .and_then(grpc_timeout);
            open(s, call, deadline, request.into_inner(), ticket)
                .await
                .map(Response::new)
        })
    }
}

/// A `grpc-timeout` value (digits and a unit: H, M, S, m, u, n) as a duration.
pub(crate) fn grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// What both directions of one stream share.
pub(super) struct Open {
    pub(super) s: Arc<Consumer>,
    pub(super) ctx: envelope::Context,
    pub(super) target: Entry,
    pub(super) conf: Arc<VerifiedConf>,
    pub(super) provider: SubsystemId,
    pub(super) request_hash: [u8; 32],
    /// The keys the opening was signed with: every message of the stream is signed with
    /// them too, even after a renewal switches in.
    pub(super) keys: Arc<crate::own::OwnKeys>,
    /// The hash of this side's end message, once sent.
    pub(super) request_end: std::sync::Mutex<Option<[u8; 32]>>,
    /// The client's messages sent so far, and their bytes.
    pub(super) sent: std::sync::atomic::AtomicU64,
    pub(super) sent_bytes: std::sync::atomic::AtomicU64,
    /// Why this server stopped sending the client's messages, if it failed to.
    pub(super) uplink_failed: std::sync::Mutex<Option<Status>>,
    /// When the client's deadline passes.
    pub(super) deadline: Option<tokio::time::Instant>,
}

/// How long after the client's deadline the provider's signed close is awaited before
/// this server ends the stream itself.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Signs and records the opening request, opens the stream on one of the provider's
/// servers (the next when one could not take it, and once more with a newer
/// configuration when none could: nothing of the client's stream was sent yet) and
/// starts both directions.
async fn open(
    s: Arc<Consumer>,
    call: Call,
    deadline: Option<Duration>,
    incoming: Streaming<Bytes>,
    ticket: Option<lintas_transport::admission::Ticket>,
) -> Result<Messages, Status> {
    let deadline_unix_ms = deadline
        .map(|d| s.recorder.now_ms().saturating_add(d.as_millis() as i64))
        .unwrap_or(0);
    let Opened {
        open,
        to_provider,
        answers,
    } = connect_any(
        &s,
        &call,
        deadline,
        |conf, target, attempt, previous| ex::RequestHeader {
            body_sha256: lintas_certs::sha256(b"").to_vec(),
            stream: true,
            deadline_unix_ms,
            attempt,
            retry_of_sha256: previous.map(|h| h.to_vec()).unwrap_or_default(),
            ..super::attempt::request_header(&s, &call, conf, target)
        },
        ex::SignedRequest::default,
        true,
        |_| {},
    )
    .await?;
    let Some(to_provider) = to_provider else {
        return Err(consumer_error(
            Code::Internal,
            "the stream to the provider's server was opened closed",
        ));
    };
    tokio::spawn(uplink(open.clone(), incoming, to_provider));
    let (to_client, messages) = mpsc::channel(BUFFER);
    tokio::spawn(async move {
        let _ticket = ticket;
        downlink(open, call, answers, to_client).await;
    });
    Ok(Box::pin(ReceiverStream::new(messages)))
}

/// A stream opened on a provider's server: what both directions share, where the
/// client's frames go, and the provider's frames.
pub(super) struct Opened {
    pub open: Arc<Open>,
    /// Where more frames go; `None` when the opening was all (the request side ended).
    pub to_provider: Option<mpsc::Sender<ex::StreamFrame>>,
    pub answers: Streaming<ex::StreamFrame>,
}

/// Opens `Exchange.Stream` on one of the provider's servers with the header
/// `header_of` makes for it (given the configuration, the server, the attempt's number
/// and the previous attempt's request hash) and the opening `opening` makes: the next
/// server when one could not take it, and, when none could be reached as the
/// configuration describes them (moved, or switched to certificates a newer one
/// lists), the servers a newer configuration names once more. With `more` false the
/// request side ends with the opening. `on_peer` hears of each server tried.
pub(super) async fn connect_any(
    s: &Arc<Consumer>,
    call: &Call,
    deadline: Option<Duration>,
    header_of: impl Fn(&VerifiedConf, &Entry, u32, Option<[u8; 32]>) -> ex::RequestHeader,
    opening: impl Fn() -> ex::SignedRequest,
    more: bool,
    on_peer: impl Fn(&str),
) -> Result<Opened, Status> {
    let (conf, order) = targets(s, call, call.method.service.as_str()).await?;
    let started = tokio::time::Instant::now();
    let mut previous: Option<[u8; 32]> = None;
    let mut failed: Option<Status> = None;
    let mut round = Some((conf, order));
    let mut refreshed = false;
    let mut attempt = 0u32;
    while let Some((conf, order)) = round.take() {
        for target in order.into_iter().take(MAX_ATTEMPTS) {
            if let Some(status) = &failed {
                s.outcomes.exchanges.retried(status.code());
            }
            // Every attempt within the client's one deadline.
            let left = deadline.map(|d| d.saturating_sub(started.elapsed()));
            if left.is_some_and(|l| l.is_zero()) {
                return Err(failed.unwrap_or_else(|| {
                    consumer_error(
                        Code::DeadlineExceeded,
                        "the deadline passed before the call could be opened",
                    )
                }));
            }
            let header = header_of(&conf, &target, attempt, previous);
            attempt += 1;
            on_peer(&target.id);
            let id = target.id.clone();
            match connect(s, call, conf.clone(), target, header, opening(), more, left).await {
                Ok(o) => return Ok(o),
                Err(f) if f.retry => {
                    tracing::warn!(server = %id, code = ?f.status.code(), reason = %f.status.message(), "the call did not reach the provider's application; another server is tried if there is one");
                    previous = Some(f.request_hash);
                    failed = Some(f.status);
                }
                Err(f) => return Err(f.status),
            }
        }
        if !refreshed && s.conf.refresh_since(Some(conf.serial())).await {
            refreshed = true;
            round = Some(targets(s, call, call.method.service.as_str()).await?);
        }
    }
    Err(failed.unwrap_or_else(|| consumer_error(Code::Internal, "no attempt was made")))
}

/// Signs `header` (for `target`) and records it, then opens `Exchange.Stream` on the
/// target with it (`opening` gives its body and credential values; with `more` false
/// the request side ends with it). A failure is recorded, and says whether another
/// server may be tried.
#[allow(clippy::too_many_arguments)]
pub(super) async fn connect(
    s: &Arc<Consumer>,
    call: &Call,
    conf: Arc<VerifiedConf>,
    target: Entry,
    header: ex::RequestHeader,
    opening: ex::SignedRequest,
    more: bool,
    deadline: Option<Duration>,
) -> Result<Opened, super::attempt::Failed> {
    let side = ErrorSource::ConsumerServer;
    let pins = super::attempt::pins_of(&target)?;
    let (body_sha256, body_len) = (header.body_sha256.clone(), header.body_len);
    let header = header.encode_to_vec();
    let request_hash = lintas_certs::sha256(&header);
    let keys = s.own.keys();
    let signature = keys
        .signer
        .sign(envelope::REQUEST_DOMAIN, &header)
        .await
        .map_err(|e| consumer_error(Code::Internal, format!("signing the request: {e}")))?;
    let ctx = envelope::Context {
        message_id: call.message_id.clone(),
        client: call.client.to_string(),
        service_provider: call.provider.to_string(),
        method: call.method.to_string(),
        peer_server: target.id.clone(),
        peer_cert_sha256: pins[0].to_vec(),
        trace_id: call.trace.trace_id().to_owned(),
    };
    let index = s
        .recorder
        .record(
            ctx.record(
                RecordKind::RequestSent,
                s.recorder.now_ms(),
                &header,
                Some(&signature),
                &keys.sign_cert,
                &body_sha256,
                body_len,
                Code::Ok,
                "",
            ),
            side,
        )
        .await?;
    s.recorder.keep_bodies(&[(index, &opening.body)]);
    let open = Arc::new(Open {
        s: s.clone(),
        ctx,
        target,
        conf: conf.clone(),
        provider: call.provider.clone(),
        request_hash,
        keys: keys.clone(),
        request_end: std::sync::Mutex::new(None),
        sent: std::sync::atomic::AtomicU64::new(0),
        sent_bytes: std::sync::atomic::AtomicU64::new(0),
        uplink_failed: std::sync::Mutex::new(None),
        deadline: deadline.map(|d| tokio::time::Instant::now() + d),
    });
    let failed = |status: Status, outcome: crate::select::Outcome| {
        let open = open.clone();
        async move {
            record_failure(&open, None, &status).await;
            super::attempt::Failed {
                retry: super::attempt::retryable(outcome, status.code()),
                status,
                request_hash,
            }
        }
    };
    let channel = match s.peers.channel(&conf, &open.target.address, &pins, &keys) {
        Ok(c) => c,
        Err(st) => return Err(failed(st, crate::select::Outcome::NotSent).await),
    };
    let limit = s.settings.max_message_bytes.max(crate::chunks::CHUNK) + envelope::ENVELOPE_MARGIN;
    let mut peer = ex::exchange_client::ExchangeClient::new(channel)
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let (to_provider, frames) = mpsc::channel(BUFFER);
    let opening = ex::StreamFrame {
        frame: Some(ex::stream_frame::Frame::Open(ex::SignedRequest {
            header,
            signature: Some(signature),
            signer_cert: keys.sign_cert.clone(),
            ..opening
        })),
    };
    // Room for it: the channel is new.
    let _ = to_provider.try_send(opening);
    // Nothing follows an opening that is all: the request side ends with it, before the
    // provider's server can finish its answer. (A stream it finishes while this side
    // holds its half open is reset, which HTTP/2 counts against the connection: after
    // 256 the provider's server closes it, and every call on it fails.)
    let to_provider = more.then_some(to_provider);
    let mut request = Request::new(ReceiverStream::new(frames));
    if let Some(d) = deadline {
        request.set_timeout(d);
    }
    // The selector learns from streams as from unary calls how the server does.
    let started = std::time::Instant::now();
    let opened = peer.stream(request).await;
    let outcome = match &opened {
        Ok(_) => crate::select::Outcome::Answered,
        Err(st) if lintas_transport::connect_failed(st) => crate::select::Outcome::NotSent,
        Err(st) if std::error::Error::source(st).is_some() => crate::select::Outcome::Lost,
        Err(st) => super::attempt::refusal_outcome(st),
    };
    s.selector.report(
        &open.target.id,
        outcome,
        started.elapsed(),
        std::time::Instant::now(),
    );
    match opened {
        Ok(r) => Ok(Opened {
            open,
            to_provider,
            answers: r.into_inner(),
        }),
        Err(st) => {
            let status = if std::error::Error::source(&st).is_some() {
                consumer_error(
                    Code::Unavailable,
                    format!(
                        "provider security server {} at {} unreachable: {}",
                        open.target.id,
                        open.target.address,
                        st.message()
                    ),
                )
            } else {
                super::attempt::passed_on(&st)
            };
            Err(failed(status, outcome).await)
        }
    }
}

/// Records why a stream failed (with the peer's frame, if one was refused).
pub(super) async fn record_failure(open: &Open, refused: Option<&[u8]>, status: &Status) {
    let s = &open.s;
    let header = refused
        .filter(|h| h.len() <= envelope::MAX_HEADER_BYTES)
        .unwrap_or(&[]);
    let _ = s
        .recorder
        .record(
            open.ctx.record(
                RecordKind::Failed,
                s.recorder.now_ms(),
                header,
                None,
                &[],
                &lintas_certs::sha256(b""),
                0,
                status.code(),
                status.message(),
            ),
            ErrorSource::ConsumerServer,
        )
        .await;
}

/// The client's messages: each signed, chained and recorded, then sent; then the end.
/// A client that fails or goes away ends the request stream without an end, which the
/// provider's server takes as a cancellation.
async fn uplink(
    open: Arc<Open>,
    mut incoming: Streaming<Bytes>,
    to_provider: mpsc::Sender<ex::StreamFrame>,
) {
    let s = &open.s;
    let mut chain = Chain::new(open.request_hash, false);
    loop {
        let (body, end) = match incoming.message().await {
            Ok(Some(body)) => (body, false),
            Ok(None) => (Bytes::new(), true),
            Err(_) => return,
        };
        let message = match crate::messages::sign_next(
            &open.keys,
            &s.recorder,
            &open.ctx,
            &mut chain,
            &body,
            end,
            ErrorSource::ConsumerServer,
        )
        .await
        {
            Ok(m) => m,
            Err(status) => {
                // The request stream ends without its end, which the provider's server
                // takes as a cancellation; the client learns the real cause.
                *open.uplink_failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
                return;
            }
        };
        if end {
            *open.request_end.lock().unwrap_or_else(|p| p.into_inner()) = Some(chain.last());
        } else {
            open.sent
                .store(chain.count(), std::sync::atomic::Ordering::SeqCst);
            open.sent_bytes
                .fetch_add(body.len() as u64, std::sync::atomic::Ordering::SeqCst);
        }
        let frame = ex::StreamFrame {
            frame: Some(ex::stream_frame::Frame::Message(message)),
        };
        if to_provider.send(frame).await.is_err() || end {
            return;
        }
    }
}

/// The provider's frames: messages verified, chained and recorded, then handed to the
/// client; the close verified and recorded, and its status given to the client.
async fn downlink(
    open: Arc<Open>,
    call: Call,
    mut answers: Streaming<ex::StreamFrame>,
    to_client: mpsc::Sender<Result<Bytes, Status>>,
) {
    let s = &open.s;
    let started = std::time::Instant::now();
    let started_unix_ms = s.recorder.now_ms();
    let progress = crate::outcome::Progress::default();
    let mut chain = Chain::new(open.request_hash, true);
    let mut signer_cert: Option<Vec<u8>> = None;
    let mut bytes_in = 0;
    let cut_off = tokio::time::sleep_until(
        open.deadline
            .map(|d| d + CLOSE_GRACE)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86400 * 365)),
    );
    tokio::pin!(cut_off);
    let outcome: Result<(), (Status, Option<Vec<u8>>)> = loop {
        let next = tokio::select! {
            next = answers.message() => next,
            // The client went away: dropping the stream cancels it at the provider.
            () = to_client.closed() => {
                break Err((
                    consumer_error(Code::Cancelled, "the client went away during the stream"),
                    None,
                ));
            }
            () = &mut cut_off, if open.deadline.is_some() => {
                break Err((
                    consumer_error(
                        Code::DeadlineExceeded,
                        "the client's deadline passed and the provider's server did not close the stream",
                    ),
                    None,
                ));
            }
        };
        let frame = match next {
            Ok(Some(f)) => f,
            Ok(None) => {
                break Err((
                    consumer_error(
                        Code::DataLoss,
                        "the provider's server ended the stream without its signed close",
                    ),
                    None,
                ));
            }
            Err(st) => {
                break Err((
                    consumer_error(
                        Code::Unavailable,
                        format!(
                            "the stream from the provider's server broke: {}",
                            st.message()
                        ),
                    ),
                    None,
                ));
            }
        };
        match frame.frame {
            Some(ex::stream_frame::Frame::Message(m)) => {
                if signer_cert.is_none() {
                    signer_cert = Some(m.signer_cert.clone());
                }
                let cert = signer_cert.as_deref().unwrap_or_default();
                let checked = verify(&open, cert, MESSAGE_DOMAIN, &m.header, m.signature.as_ref())
                    .and_then(|()| chain.accept(&m.header, Some(&m.body)));
                let header = match checked {
                    Ok(h) => h,
                    Err(why) => {
                        break Err((
                            consumer_error(
                                Code::DataLoss,
                                format!("response message refused: {why}"),
                            ),
                            Some(m.header),
                        ));
                    }
                };
                let recorded = crate::messages::record_received(
                    &s.recorder,
                    &open.ctx,
                    &m,
                    &header,
                    cert,
                    ErrorSource::ConsumerServer,
                )
                .await;
                if let Err(st) = recorded {
                    break Err((st, None));
                }
                bytes_in += m.body.len();
                if to_client.send(Ok(m.body)).await.is_err() {
                    break Err((
                        consumer_error(Code::Cancelled, "the client went away during the stream"),
                        None,
                    ));
                }
            }
            Some(ex::stream_frame::Frame::Close(close)) => {
                match accept_close(&open, &chain, &close).await {
                    Ok(Ok(_)) => break Ok(()),
                    // The provider's own verdict, recorded: the client hears it.
                    Ok(Err(status)) => {
                        let _ = to_client.send(Err(status)).await;
                        break Ok(());
                    }
                    Err(refused) => break Err(refused),
                }
            }
            _ => {
                break Err((
                    consumer_error(
                        Code::DataLoss,
                        "the provider's server sent an opening frame",
                    ),
                    None,
                ));
            }
        }
    };
    let code = match &outcome {
        Ok(()) => "Ok".to_owned(),
        Err((st, refused)) => {
            record_failure(&open, refused.as_deref(), st).await;
            let _ = to_client.send(Err(st.clone())).await;
            format!("{:?}", st.code())
        }
    };
    s.outcomes.finished(crate::outcome::Finished {
        exchanged: crate::outcome::Exchanged {
            side: "consumer",
            client: &open.ctx.client,
            provider: &open.ctx.service_provider,
            method: &open.ctx.method,
            code,
            source: match &outcome {
                Ok(()) => "",
                Err(_) => ErrorSource::ConsumerServer.as_str(),
            },
            elapsed: started.elapsed(),
            bytes_in,
            bytes_out: open.sent_bytes.load(std::sync::atomic::Ordering::SeqCst) as usize,
        },
        started_unix_ms,
        message_id: &call.message_id,
        traceparent: &call.trace.traceparent,
        user_id: &call.user_id,
        progress: &progress,
    });
}

/// Verifies and records the provider's close. The outer error: the close is refused
/// (the status, and the refused header to record); the inner one: the close is good and
/// recorded, and says the call failed, with this status.
pub(super) async fn accept_close(
    open: &Open,
    chain: &Chain,
    close: &ex::SignedResponse,
) -> Result<Result<ex::ResponseHeader, Status>, (Status, Option<Vec<u8>>)> {
    let s = &open.s;
    let refused = |why: String| {
        (
            consumer_error(Code::DataLoss, format!("response refused: {why}")),
            Some(close.header.clone()),
        )
    };
    let answer = closed(open, chain, close).map_err(refused)?;
    if !envelope::body_matches(&answer.body_sha256, answer.body_len, &close.body) {
        return Err(refused("body does not match the signed hash".into()));
    }
    let code = Code::from_i32(answer.status_code);
    let index = s
        .recorder
        .record(
            open.ctx.record(
                RecordKind::ResponseReceived,
                s.recorder.now_ms(),
                &close.header,
                close.signature.as_ref(),
                &close.signer_cert,
                &answer.body_sha256,
                answer.body_len,
                code,
                &answer.status_message,
            ),
            ErrorSource::ConsumerServer,
        )
        .await
        .map_err(|st| (st, None))?;
    s.recorder.keep_bodies(&[(index, &close.body)]);
    if code != Code::Ok {
        return Ok(Err(closed_status(open, answer)));
    }
    Ok(Ok(answer))
}

/// The status a close that did not succeed gives the client: the provider's, or this
/// server's own reason when it cut the client's direction off (the provider then saw a
/// cancellation).
fn closed_status(open: &Open, answer: ex::ResponseHeader) -> Status {
    let code = Code::from_i32(answer.status_code);
    let source = if answer.error_source == ErrorSource::ProviderServer.as_str() {
        ErrorSource::ProviderServer
    } else {
        ErrorSource::ProviderApp
    };
    let failed_here = open
        .uplink_failed
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    match failed_here {
        Some(own) if code == Code::Cancelled => own,
        _ => error(code, source, answer.status_message),
    }
}

/// A header signed by the provider's member with a certificate listed for its server.
pub(super) fn verify(
    open: &Open,
    cert: &[u8],
    domain: &str,
    header: &[u8],
    signature: Option<&ex::BatchSignature>,
) -> Result<(), String> {
    if header.len() > envelope::MAX_HEADER_BYTES {
        return Err("header too large".into());
    }
    open.s
        .verifier
        .verify_signed(
            &open.conf,
            &open.provider.member,
            &open.target.signing_certs,
            cert,
            domain,
            header,
            signature,
        )
        .map_err(|why| why.to_string())
}

/// The signed close: by the provider, bound to the request, naming the last message
/// this side received and the end this side sent (when the provider had it).
pub(super) fn closed(
    open: &Open,
    chain: &Chain,
    close: &ex::SignedResponse,
) -> Result<ex::ResponseHeader, String> {
    verify(
        open,
        &close.signer_cert,
        envelope::RESPONSE_DOMAIN,
        &close.header,
        close.signature.as_ref(),
    )?;
    let h = lintas_proto::decode_exact::<ex::ResponseHeader>(&close.header)
        .map_err(|e| format!("response header is malformed: {e}"))?;
    if h.request_header_sha256 != open.request_hash {
        return Err("it answers another request".into());
    }
    if h.provider_server != open.target.id {
        return Err(format!(
            "it names server {}, not {}",
            h.provider_server, open.target.id
        ));
    }
    let sent = open.sent.load(std::sync::atomic::Ordering::SeqCst);
    if h.request_messages > sent {
        return Err(format!(
            "it counts {} messages from the client where this server sent {sent}",
            h.request_messages
        ));
    }
    if h.messages != chain.count() || h.last_message_sha256 != chain.last() {
        return Err(format!(
            "it counts {} messages where {} arrived (one was lost or added)",
            h.messages,
            chain.count()
        ));
    }
    let sent_end = *open.request_end.lock().unwrap_or_else(|p| p.into_inner());
    if !h.request_end_sha256.is_empty() && sent_end.is_none_or(|e| h.request_end_sha256 != e) {
        return Err("it names an end of the request stream this server did not send".into());
    }
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_are_read_as_the_protocol_writes_them() {
        let cases = [
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("30S", Some(Duration::from_secs(30))),
            ("250m", Some(Duration::from_millis(250))),
            ("7u", Some(Duration::from_micros(7))),
            ("9n", Some(Duration::from_nanos(9))),
            ("", None),
            ("S", None),
            ("12", None),
            ("1x", None),
            ("-1S", None),
            ("123456789S", None),
        ];
        for (text, want) in cases {
            assert_eq!(grpc_timeout(text), want, "{text}");
        }
    }
}
