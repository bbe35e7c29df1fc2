//! REST calls and framed unary gRPC calls (`consumer/framed.rs`) on `Exchange.Stream`,
//! the consumer's side. A body that fits in one chunk
//! travels in the signed opening request; a larger one is marked `chunked` and follows
//! in messages, each chunk read from the client, signed, chained and recorded as it
//! goes, then a signed end. The answer comes in the signed close, or in messages whose
//! first names the backend's status and headers, each verified, chained and recorded
//! before the client gets its bytes, then the close, which must name the last of them;
//! the client's body ends well only after that close. Opening is retried on another
//! server of the provider as a unary call is: nothing reaches the backend until a
//! server has accepted the call.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::stream::{Open, Opened, accept_close, record_failure, verify};
use super::*;
use crate::chain::{Chain, MESSAGE_DOMAIN};
use crate::chunks::{self, CHUNK, PENDING};
use lintas_proto::exchange::v1 as ex;

/// The client's request body: what was read of it, and the rest, still to read.
pub(crate) struct Upload {
    pub first: BytesMut,
    pub read: chunks::Progress,
    pub rest: axum::body::Body,
}

/// The answer to a REST call: the backend's status and headers, and its body, whole or
/// arriving.
pub(crate) struct Answered {
    pub answer: Answer,
    pub body: axum::body::Body,
    /// Why an answer that came in chunks failed after its first, once known.
    pub failed: Failed,
}

/// Where the status of an answer that failed after its first chunk lands.
pub(crate) type Failed = Arc<std::sync::Mutex<Option<Status>>>;

/// The reason given when a client's body is over `max_body_bytes`.
pub(crate) const BODY_TOO_LARGE: &str = "BodyTooLarge";

/// A failure reading the client's body, as a status.
pub(crate) fn unread(why: chunks::Unread) -> Status {
    match why {
        chunks::Unread::Slow(_) => consumer_error(
            Code::DeadlineExceeded,
            format!("{why} (connection_limits.request_timeout_secs)"),
        ),
        chunks::Unread::TooLarge(max) => crate::errors::with_reason(
            consumer_error(
                Code::InvalidArgument,
                format!("the request body is larger than {max} bytes (max_body_bytes)"),
            ),
            BODY_TOO_LARGE,
        ),
        chunks::Unread::Broken(why) => consumer_error(
            Code::Cancelled,
            format!("the request body was cut off: {why}"),
        ),
    }
}

/// The metrics and monitoring record of one call, written when it ends.
struct Account {
    s: Arc<Consumer>,
    client: String,
    provider: String,
    method: String,
    message_id: String,
    traceparent: String,
    user_id: String,
    started: std::time::Instant,
    started_unix_ms: i64,
    progress: crate::outcome::Progress,
    /// Bytes of the client's body sent on, as the upload goes.
    uploaded: Arc<std::sync::atomic::AtomicU64>,
}

impl Account {
    fn finish(self, outcome: Result<(), &Status>, bytes_in: usize) {
        let bytes_out = self.uploaded.load(Ordering::SeqCst) as usize;
        let (code, source) = match outcome {
            Ok(()) => ("Ok".to_owned(), ""),
            Err(st) => (
                format!("{:?}", st.code()),
                st.metadata()
                    .get(ERROR_SOURCE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or(""),
            ),
        };
        self.s.outcomes.finished(crate::outcome::Finished {
            exchanged: crate::outcome::Exchanged {
                side: "consumer",
                client: &self.client,
                provider: &self.provider,
                method: &self.method,
                code,
                source,
                elapsed: self.started.elapsed(),
                bytes_in,
                bytes_out,
            },
            started_unix_ms: self.started_unix_ms,
            message_id: &self.message_id,
            traceparent: &self.traceparent,
            user_id: &self.user_id,
            progress: &self.progress,
        });
    }
}

/// Makes the REST call `call` (or, without `call.rest`, the framed gRPC call) with the
/// client's body; the answer, once its status and headers are verified.
pub(crate) async fn call(
    s: &Arc<Consumer>,
    call: Call,
    upload: Upload,
) -> Result<Answered, Status> {
    let account = Account {
        s: s.clone(),
        client: call.client.to_string(),
        provider: call.provider.to_string(),
        method: call.method.to_string(),
        message_id: call.message_id.clone(),
        traceparent: call.trace.traceparent.clone(),
        user_id: call.user_id.clone(),
        started: std::time::Instant::now(),
        started_unix_ms: s.recorder.now_ms(),
        progress: crate::outcome::Progress::default(),
        uploaded: Arc::default(),
    };
    let chunked = !upload.read.ended || upload.first.len() > CHUNK;
    let inline = if chunked {
        Bytes::new()
    } else {
        upload.first.clone().freeze()
    };
    let opened = match open(s, &call, &inline, chunked, &account.progress).await {
        Ok(o) => o,
        Err(st) => {
            account.finish(Err(&st), 0);
            return Err(st);
        }
    };
    let Opened {
        open,
        to_provider,
        mut answers,
    } = opened;
    match to_provider {
        Some(to_provider) if chunked => {
            tokio::spawn(uplink(
                open.clone(),
                upload,
                to_provider,
                account.uploaded.clone(),
            ));
        }
        // Nothing more goes to the provider's server: the request side ended with the
        // opening.
        _ => account
            .uploaded
            .store(inline.len() as u64, Ordering::SeqCst),
    }
    let answer = |rest, rest_secrets, body| Answer {
        body,
        message_id: call.message_id.clone(),
        request_hash: open.request_hash,
        rest,
        rest_secrets,
        repeats_message_id: String::new(),
    };
    let rest = call.rest.is_some();
    match head(&open, &mut answers, rest).await {
        Err((status, refused)) => {
            record_failure(&open, refused.as_deref(), &status).await;
            account.finish(Err(&status), 0);
            Err(status)
        }
        Ok(Head::Failed(status)) => {
            account.finish(Err(&status), 0);
            Err(status)
        }
        Ok(Head::Whole(head, secrets, body)) => {
            account.finish(Ok(()), body.len());
            Ok(Answered {
                body: axum::body::Body::from(body.clone()),
                answer: answer(head, secrets, body),
                failed: Failed::default(),
            })
        }
        Ok(Head::Chunks {
            head,
            secrets,
            chain,
            cert,
            first,
        }) => {
            // One chunk waits for the client; HTTP/2 flow control holds back the rest.
            let (to_client, chunks) = mpsc::channel(1);
            let ended = Arc::new(AtomicBool::new(false));
            let body = chunks::Received::new(chunks, {
                let ended = ended.clone();
                move || ended.load(Ordering::SeqCst)
            });
            let failed = Failed::default();
            let answered = Answered {
                answer: answer(head, secrets, Bytes::new()),
                body: axum::body::Body::new(body),
                failed: failed.clone(),
            };
            tokio::spawn(async move {
                let received = downlink(
                    &open,
                    answers,
                    (chain, &cert, rest),
                    first,
                    to_client,
                    &ended,
                )
                .await;
                let status = match received {
                    Ok(Ok(bytes_in)) => return account.finish(Ok(()), bytes_in),
                    Ok(Err(status)) => status,
                    Err((status, refused)) => {
                        record_failure(&open, refused.as_deref(), &status).await;
                        status
                    }
                };
                account.finish(Err(&status), 0);
                *failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
            });
            Ok(answered)
        }
    }
}

/// Opens the call on one of the provider's servers, trying the next when one could not
/// take it.
async fn open(
    s: &Arc<Consumer>,
    call: &Call,
    inline: &Bytes,
    chunked: bool,
    progress: &crate::outcome::Progress,
) -> Result<Opened, Status> {
    super::stream::connect_any(
        s,
        call,
        None,
        |conf, target, attempt, previous| ex::RequestHeader {
            body_sha256: lintas_certs::sha256(inline).to_vec(),
            body_len: inline.len() as u64,
            chunked,
            grpc_framed: call.rest.is_none(),
            attempt,
            retry_of_sha256: previous.map(|h| h.to_vec()).unwrap_or_default(),
            rest: call.rest.clone(),
            ..super::attempt::request_header(s, call, conf, target)
        },
        || ex::SignedRequest {
            body: inline.to_vec(),
            secret_headers: call.rest_secrets.clone(),
            ..Default::default()
        },
        chunked,
        |id| progress.set_peer(id),
    )
    .await
}

/// The client's body after its first chunk: each chunk signed, chained and sent while
/// its record is written, then the signed end once all are durable. A client whose body
/// fails ends the request stream without its end, which the provider's server takes as
/// a cancellation; the client learns the cause.
async fn uplink(
    open: Arc<Open>,
    upload: Upload,
    to_provider: mpsc::Sender<ex::StreamFrame>,
    uploaded: Arc<std::sync::atomic::AtomicU64>,
) {
    let s = &open.s;
    let side = ErrorSource::ConsumerServer;
    let Upload {
        first: mut buf,
        mut read,
        rest: mut body,
    } = upload;
    let idle = s.settings.connection_limits.request_timeout();
    let mut chain = Chain::new(open.request_hash, false);
    let mut pending = VecDeque::new();
    let failed = |status: Status| {
        *open.uplink_failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(status);
    };
    loop {
        let end = read.ended && buf.is_empty();
        if end {
            for durable in pending.drain(..) {
                if let Err(st) = durable.await {
                    return failed(st);
                }
            }
        }
        let chunk = chunks::take(&mut buf);
        let signed = crate::messages::sign_soon(
            &open.keys,
            &s.recorder,
            &open.ctx,
            &mut chain,
            &chunk,
            end,
            None,
            side,
        )
        .await;
        let (message, durable) = match signed {
            Ok(m) => m,
            Err(st) => return failed(st),
        };
        pending.push_back(durable);
        if pending.len() > PENDING
            && let Some(oldest) = pending.pop_front()
            && let Err(st) = oldest.await
        {
            return failed(st);
        }
        if end {
            *open.request_end.lock().unwrap_or_else(|p| p.into_inner()) = Some(chain.last());
        } else {
            open.sent.store(chain.count(), Ordering::SeqCst);
            uploaded.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        }
        let frame = ex::StreamFrame {
            frame: Some(ex::stream_frame::Frame::Message(message)),
        };
        if to_provider.send(frame).await.is_err() || end {
            // The request stream ends with the end message, not once the records are
            // durable: the provider's server may answer first, and a stream it finishes
            // while this side still holds its half open is reset, which HTTP/2 counts
            // against the connection (after 256 the provider's server closes it, and
            // every call on it fails).
            drop(to_provider);
            // Its records are durable before the provider's close is taken.
            for durable in pending {
                let _ = durable.await;
            }
            return;
        }
        let max = s.settings.max_body_bytes;
        if let Err(why) = chunks::fill(&mut body, &mut buf, &mut read, idle, max, false).await {
            return failed(unread(why));
        }
    }
}

/// How the answer starts.
enum Head {
    /// The provider's signed close says the call failed (recorded as such).
    Failed(Status),
    /// In the close: the backend's status and headers (of a REST call), credential
    /// values, body.
    Whole(Option<ex::RestResponse>, Vec<ex::SecretValue>, Bytes),
    /// In messages: the status and headers (of a REST call) from the first, which is
    /// verified and recorded (its chunk still to pass on).
    Chunks {
        head: Option<ex::RestResponse>,
        secrets: Vec<ex::SecretValue>,
        chain: Chain,
        /// The certificate the first chunk names, which signs them all.
        cert: Vec<u8>,
        first: Bytes,
    },
}

/// A refusal: the status, and the provider's header that was refused, if any.
type Refused = (Status, Option<Vec<u8>>);

fn refused(why: impl std::fmt::Display, header: Vec<u8>) -> Refused {
    (
        consumer_error(Code::DataLoss, format!("response refused: {why}")),
        Some(header),
    )
}

/// The provider's next frame, or why there is none.
async fn next_frame(answers: &mut Streaming<ex::StreamFrame>) -> Result<ex::StreamFrame, Refused> {
    match answers.message().await {
        Ok(Some(f)) => Ok(f),
        Ok(None) => Err((
            consumer_error(
                Code::DataLoss,
                "the provider's server ended the call without its signed close",
            ),
            None,
        )),
        Err(st) => Err((
            consumer_error(
                Code::Unavailable,
                format!(
                    "the call's stream from the provider's server broke: {}",
                    st.message()
                ),
            ),
            None,
        )),
    }
}

/// A message of the answer: signed by the provider's member (with the certificate its
/// first message names), next in `chain`, naming an HTTP status if and only if it is
/// the first of a REST call's (`rest`) answer; its record handed to the log.
fn accept_message(
    open: &Open,
    chain: &mut Chain,
    (cert, rest): (&[u8], bool),
    m: &ex::SignedMessage,
) -> Result<
    (
        ex::MessageHeader,
        impl Future<Output = Result<u64, Status>> + Send + use<>,
    ),
    Refused,
> {
    if !m.signer_cert.is_empty() && m.signer_cert != cert {
        return Err(refused(
            "the chunks of an answer are signed with one certificate",
            m.header.clone(),
        ));
    }
    let header = verify(open, cert, MESSAGE_DOMAIN, &m.header, m.signature.as_ref())
        .and_then(|()| chain.accept(&m.header, Some(&m.body)))
        .map_err(|why| refused(why, m.header.clone()))?;
    if header.rest.is_some() != (rest && header.seq == 0) {
        return Err(refused(
            if rest {
                "only the first chunk of a REST call's answer names its HTTP status"
            } else {
                "the answer of a gRPC call names no HTTP status"
            },
            m.header.clone(),
        ));
    }
    let durable = crate::messages::record_received_soon(
        &open.s.recorder,
        &open.ctx,
        m,
        &header,
        cert,
        ErrorSource::ConsumerServer,
    )
    .map_err(|st| (st, None))?;
    Ok((header, durable))
}

/// The start of the answer to a REST call (`rest`) or a framed gRPC call: the whole of
/// it in the close, or its first chunk.
async fn head(
    open: &Open,
    answers: &mut Streaming<ex::StreamFrame>,
    rest: bool,
) -> Result<Head, Refused> {
    let frame = next_frame(answers).await?;
    match frame.frame {
        Some(ex::stream_frame::Frame::Close(close)) => {
            let chain = Chain::new(open.request_hash, true);
            let answer = match accept_close(open, &chain, &close).await? {
                Ok(answer) => answer,
                Err(status) => return Ok(Head::Failed(status)),
            };
            if answer.rest.is_some() != rest {
                return Err((
                    error(
                        Code::Internal,
                        ErrorSource::ProviderServer,
                        if rest {
                            "the provider server answered a REST call without an HTTP status"
                        } else {
                            "the provider server answered a gRPC call with an HTTP status"
                        },
                    ),
                    None,
                ));
            }
            Ok(Head::Whole(
                answer.rest,
                close.secret_headers,
                Bytes::from(close.body),
            ))
        }
        Some(ex::stream_frame::Frame::Message(m)) => {
            let mut chain = Chain::new(open.request_hash, true);
            let (header, durable) = accept_message(open, &mut chain, (&m.signer_cert, rest), &m)?;
            durable.await.map_err(|st| (st, None))?;
            Ok(Head::Chunks {
                head: header.rest,
                secrets: m.secret_headers,
                chain,
                cert: m.signer_cert,
                first: m.body,
            })
        }
        _ => Err((
            consumer_error(
                Code::DataLoss,
                "the provider's server sent an opening frame",
            ),
            None,
        )),
    }
}

/// The rest of a chunked answer: each chunk verified and recorded, then passed to the
/// client; the close verified once every record is durable, and only then does the
/// client's body end well (`ended`). The body bytes received, or the status of a close
/// that says the call failed.
async fn downlink(
    open: &Open,
    mut answers: Streaming<ex::StreamFrame>,
    (mut chain, cert, rest): (Chain, &[u8], bool),
    first: Bytes,
    to_client: mpsc::Sender<Bytes>,
    ended: &AtomicBool,
) -> Result<Result<usize, Status>, Refused> {
    let gone = || {
        (
            consumer_error(Code::Cancelled, "the client went away during the answer"),
            None,
        )
    };
    let mut received = first.len();
    let mut pending = VecDeque::new();
    to_client.send(first).await.map_err(|_| gone())?;
    loop {
        let frame = tokio::select! {
            frame = next_frame(&mut answers) => frame?,
            // Dropping the stream cancels it at the provider.
            () = to_client.closed() => return Err(gone()),
        };
        match frame.frame {
            Some(ex::stream_frame::Frame::Message(m)) => {
                let (_, durable) = accept_message(open, &mut chain, (cert, rest), &m)?;
                pending.push_back(durable);
                if pending.len() > PENDING
                    && let Some(oldest) = pending.pop_front()
                {
                    oldest.await.map_err(|st| (st, None))?;
                }
                received += m.body.len();
                to_client.send(m.body).await.map_err(|_| gone())?;
            }
            Some(ex::stream_frame::Frame::Close(close)) => {
                for durable in pending {
                    durable.await.map_err(|st| (st, None))?;
                }
                if let Err(status) = accept_close(open, &chain, &close).await? {
                    // The provider's verdict, recorded; the client's body is cut off.
                    return Ok(Err(status));
                }
                ended.store(true, Ordering::SeqCst);
                return Ok(Ok(received));
            }
            _ => {
                return Err((
                    consumer_error(
                        Code::DataLoss,
                        "the provider's server sent an opening frame",
                    ),
                    None,
                ));
            }
        }
    }
}
