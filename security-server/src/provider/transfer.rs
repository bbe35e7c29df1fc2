//! REST calls and framed unary gRPC calls on `Exchange.Stream`, the provider's side.
//! The backend (or application) is sent the request's body as it comes: from the
//! opening request, or (`chunked`) chunk by chunk, each verified, chained and recorded
//! first. Its answer closes the stream with the body when that fits in one chunk; a
//! larger one goes back in messages, the first carrying a REST answer's HTTP status and
//! headers, each chunk signed and recorded as it leaves, then the signed close (with a
//! gRPC application's status, from its trailers). A chunk at most waits at each place,
//! so memory stays flat whatever the body's size, and a slow reader slows the backend.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::stream::{BUFFER, CLOSE_WAIT, Frames, Open};
use super::*;
use crate::chain::Chain;
use crate::chunks::{self, CHUNK, PENDING};

/// Starts the call of the backend for an accepted REST request; the frames to answer
/// with.
pub(super) fn start(
    open: Arc<Open>,
    signed: ex::SignedRequest,
    incoming: Streaming<ex::StreamFrame>,
    ticket: lintas_transport::admission::Ticket,
    progress: crate::outcome::Progress,
) -> Frames {
    let s = open.s.clone();
    let (to_consumer, frames) = mpsc::channel(BUFFER);
    let (body, aborted, uplink, idle) = if open.accepted.header.chunked {
        let (to_app, from_consumer) = mpsc::channel::<Bytes>(BUFFER);
        let (abort, aborted) = oneshot::channel::<Status>();
        let uplink = tokio::spawn(super::stream::uplink(
            open.clone(),
            signed.signer_cert,
            incoming,
            to_app,
            abort,
            PENDING,
        ));
        let watched = open.clone();
        let ended = move || {
            watched
                .received
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .end
                .is_some()
        };
        let body = chunks::Received::new(from_consumer, ended).boxed();
        (body, Some(aborted), Some(uplink), None)
    } else {
        s.recorder
            .keep_bodies(&[(open.request_record, &signed.body)]);
        let body = Full::new(Bytes::from(signed.body))
            .map_err(|never| match never {})
            .boxed();
        // Nothing more comes from the consumer's server; its stream stays open until
        // the close.
        (body, None, None, Some(incoming))
    };
    tokio::spawn(async move {
        let _ticket = ticket;
        let _idle = idle;
        let started = Instant::now();
        let secrets = signed.secret_headers;
        let (code, source, bytes_out) = answer(&open, body, secrets, aborted, &to_consumer).await;
        if let Some(uplink) = uplink {
            uplink.abort();
        }
        let bytes_in = open.accepted.header.body_len as usize;
        open.finished(&progress, started, code, source, (bytes_in, bytes_out));
    });
    Box::pin(ReceiverStream::new(frames))
}

/// What the close reports.
struct Outcome {
    answer: AppAnswer,
    /// The answer's body came in messages.
    chunked: bool,
}

/// Calls the backend, passes its answer back and closes the stream; the status's code,
/// who produced it and the body bytes sent.
async fn answer(
    open: &Open,
    body: crate::backend::RequestBody,
    secrets: Vec<ex::SecretValue>,
    mut aborted: Option<oneshot::Receiver<Status>>,
    to_consumer: &mpsc::Sender<Result<ex::StreamFrame, Status>>,
) -> (Code, &'static str, usize) {
    let mut chain = Chain::new(open.request_hash, true);
    let mut bytes = 0;
    let outcome = relay(open, body, &secrets, &mut chain, &mut bytes, to_consumer).await;
    // A refused chunk of the request is the outcome, whatever the backend made of the
    // cut-off body.
    let outcome = match aborted.as_mut().map(|a| a.try_recv()) {
        Some(Ok(status)) => Outcome {
            answer: AppAnswer::server(status.code(), status.message()),
            chunked: outcome.chunked,
        },
        _ => outcome,
    };
    let code = outcome.answer.code;
    let source = super::stream::source_of(&outcome.answer);
    let close = super::stream::close(open, &chain, outcome.answer, !outcome.chunked).await;
    let _ = tokio::time::timeout(CLOSE_WAIT, to_consumer.send(close)).await;
    (code, source, bytes)
}

/// The backend's answer: kept for the close when it fits in one chunk, otherwise sent
/// in signed messages.
async fn relay(
    open: &Open,
    body: crate::backend::RequestBody,
    secrets: &[ex::SecretValue],
    chain: &mut Chain,
    bytes: &mut usize,
    to_consumer: &mpsc::Sender<Result<ex::StreamFrame, Status>>,
) -> Outcome {
    let s = &open.s;
    let side = ErrorSource::ProviderServer;
    let unchunked = |answer| Outcome {
        answer,
        chunked: false,
    };
    let Target::App(service) = &open.accepted.target else {
        return unchunked(AppAnswer::server(
            Code::Unimplemented,
            "answered on Exchange.Call only",
        ));
    };
    let h = &open.accepted.header;
    // The backend's (or application's) status and headers, credential values, body,
    // and for a gRPC call where the status will be.
    let (head, head_secrets, mut body, trailers) = match &h.rest {
        Some(request) => {
            // Checked with the request; checked again where the values are restored.
            let headers = match crate::http_headers::to_map(&request.headers, secrets) {
                Ok(h) => h,
                Err(why) => return unchunked(AppAnswer::server(Code::InvalidArgument, why)),
            };
            let added = crate::http_headers::to_backend(h, &open.request_hash);
            let sent = s
                .backends
                .send(crate::backend::Send {
                    service,
                    request,
                    headers,
                    added,
                    body,
                    timeout: s.settings.app_timeout,
                })
                .await;
            match sent {
                Ok(a) => {
                    let body = a.body.map_err(crate::chunks::BoxError::from);
                    (Some(a.head), a.secrets, body.boxed_unsync(), None)
                }
                Err(u) => return unchunked(AppAnswer::server(u.code, u.message)),
            }
        }
        None => match super::framed::send(s, &open.accepted, service, body).await {
            Ok(sent) => (None, Vec::new(), sent.body, Some(sent.trailers)),
            Err(answer) => return unchunked(answer),
        },
    };
    // The application's own status, once its body was read.
    let answered = |body: Vec<u8>, secrets: Vec<ex::SecretValue>| match &trailers {
        None => AppAnswer {
            code: Code::Ok,
            message: String::new(),
            body,
            by_server: false,
            rest: head.clone(),
            secrets,
            unsent: false,
        },
        Some(t) => {
            let status = super::framed::status(t);
            AppAnswer {
                body,
                ..app_status(status)
            }
        }
    };
    let (idle, max) = (s.settings.app_timeout, s.settings.max_body_bytes);
    let failed = |why: chunks::Unread| {
        tracing::warn!(service = %service.service, error = %why, "reading the answer of a REST backend or gRPC application failed");
        AppAnswer::server(
            match why {
                chunks::Unread::Slow(_) => Code::DeadlineExceeded,
                chunks::Unread::TooLarge(_) => Code::ResourceExhausted,
                chunks::Unread::Broken(_) => Code::Unavailable,
            },
            format!(
                "reading the answer of the backend or application of service {}: {why} (max_body_bytes {max})",
                service.service
            ),
        )
    };
    let (mut buf, mut read) = (BytesMut::new(), chunks::Progress::default());
    if let Err(why) = chunks::fill(&mut body, &mut buf, &mut read, idle, max, false).await {
        return unchunked(failed(why));
    }
    if read.ended && buf.len() <= CHUNK {
        *bytes = buf.len();
        return unchunked(answered(buf.to_vec(), head_secrets));
    }
    // In messages: the first names the status and headers (of a REST answer) and the
    // signing certificate.
    let mut first = Some((head.clone(), head_secrets));
    let mut pending = VecDeque::new();
    let chunked = |answer| Outcome {
        answer,
        chunked: true,
    };
    loop {
        let chunk = chunks::take(&mut buf);
        let rest = first.as_ref().and_then(|(h, _)| h.clone());
        let signed = crate::messages::sign_soon(
            &open.keys,
            &s.recorder,
            &open.ctx,
            chain,
            &chunk,
            false,
            rest,
            side,
        )
        .await;
        let (mut message, durable) = match signed {
            Ok(m) => m,
            Err(st) => return chunked(AppAnswer::server(st.code(), st.message())),
        };
        if let Some((_, secrets)) = first.take() {
            message.signer_cert = open.keys.sign_cert.clone();
            message.secret_headers = secrets;
        }
        pending.push_back(durable);
        if pending.len() > PENDING
            && let Some(oldest) = pending.pop_front()
            && let Err(st) = oldest.await
        {
            return chunked(AppAnswer::server(st.code(), st.message()));
        }
        *bytes += chunk.len();
        let frame = ex::StreamFrame {
            frame: Some(ex::stream_frame::Frame::Message(message)),
        };
        match tokio::time::timeout(idle, to_consumer.send(Ok(frame))).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return chunked(AppAnswer::server(
                    Code::Cancelled,
                    "the consumer's server went away during the answer",
                ));
            }
            Err(_) => {
                return chunked(AppAnswer::server(
                    Code::DeadlineExceeded,
                    format!(
                        "the consumer's server took no part of the answer for {} s",
                        idle.as_secs()
                    ),
                ));
            }
        }
        if read.ended && buf.is_empty() {
            break;
        }
        if let Err(why) = chunks::fill(&mut body, &mut buf, &mut read, idle, max, true).await {
            return chunked(failed(why));
        }
        if read.ended && buf.is_empty() {
            break;
        }
    }
    // The close follows records that are durable.
    for durable in pending {
        if let Err(st) = durable.await {
            return chunked(AppAnswer::server(st.code(), st.message()));
        }
    }
    chunked(answered(Vec::new(), Vec::new()))
}
