//! Unary gRPC calls whose message is too large for one message between the servers:
//! the consumer endpoint reads the 5-byte prefix of the request's first message, and
//! a message longer than `max_message_bytes`, or any call to a service whose provider
//! declared its messages large, is carried as a framed call (`grpc_framed`) on
//! `Exchange.Stream`, as REST bodies are: the request's HTTP/2 body,
//! prefix included, in signed chunks, and the application's answer likewise, its gRPC
//! status in the provider's signed close. Neither message is ever whole in memory.
//! Smaller messages go on to the ordinary unary path with the bytes read so far put
//! back in front of the rest.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use tonic::codegen::http::{self, HeaderMap, HeaderValue};

use super::transfer::{Failed, Upload};
use super::*;
use crate::chunks::{self, BoxError};

/// Length of gRPC's message prefix: a compression flag and a big-endian length.
const PREFIX: usize = 5;

/// What the start of a request body says of its first message.
#[derive(Debug, PartialEq, Eq)]
enum First {
    /// A message of this many bytes (its prefix read).
    Message { compressed: bool, len: u32 },
    /// The body ended before a whole prefix.
    Short,
}

/// The first message's prefix in `bytes`, if they hold one.
fn first(bytes: &[u8]) -> First {
    match bytes {
        [flag, a, b, c, d, ..] => First::Message {
            compressed: *flag != 0,
            len: u32::from_be_bytes([*a, *b, *c, *d]),
        },
        _ => First::Short,
    }
}

/// Reads the start of `body` until it holds a message prefix or ends, within `limit`.
async fn peek(
    body: &mut axum::body::Body,
    limit: Duration,
) -> Result<(BytesMut, chunks::Progress), Status> {
    let mut buf = BytesMut::new();
    let mut read = chunks::Progress::default();
    let reading = async {
        while buf.len() < PREFIX && !read.ended {
            match body.frame().await {
                None => read.ended = true,
                Some(Err(e)) => {
                    return Err(consumer_error(
                        Code::Cancelled,
                        format!("the request body was cut off: {e}"),
                    ));
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        read.total += data.len() as u64;
                        buf.extend_from_slice(&data);
                    }
                }
            }
        }
        Ok(())
    };
    tokio::time::timeout(limit, reading)
        .await
        .map_err(|_| late_request(limit))??;
    Ok((buf, read))
}

/// A body that gives back what was read of it first, then the rest.
struct Replayed {
    first: Option<Bytes>,
    rest: axum::body::Body,
}

impl Body for Replayed {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if let Some(first) = self.first.take().filter(|b| !b.is_empty()) {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        Pin::new(&mut self.rest).poll_frame(cx)
    }
}

/// How a unary call travels.
pub(super) enum Route {
    /// On `Exchange.Call`: the request, its body's start put back.
    Unary(http::Request<axum::body::Body>),
    /// Framed: the request's head, and its body with what was read of it.
    Framed(http::request::Parts, Upload),
    /// Neither: why.
    Refused(Status),
}

/// Reads the start of a unary call's request (to `provider`) and decides how it
/// travels: framed when its message is over `max_message_bytes` or its service's
/// messages are declared large.
pub(super) async fn route(
    s: &Consumer,
    req: http::Request<axum::body::Body>,
    provider: Option<&str>,
) -> Route {
    let (parts, mut body) = req.into_parts();
    let limit = s.settings.connection_limits.request_timeout();
    let (read, progress) = match peek(&mut body, limit).await {
        Ok(r) => r,
        Err(status) => return Route::Refused(status),
    };
    let start = first(&read);
    let large = || {
        let method = parts.uri.path().parse::<MethodPath>().ok()?;
        let conf = s.conf.current(ErrorSource::ConsumerServer).ok()?;
        Some(conf.large_messages(provider?, method.service.as_str()))
    };
    let framed = framed(&start, s.settings.max_message_bytes)
        || (start != First::Short && large() == Some(true));
    if !framed {
        let body = Replayed {
            first: Some(read.freeze()),
            rest: body,
        };
        return Route::Unary(http::Request::from_parts(
            parts,
            axum::body::Body::new(body),
        ));
    }
    if let First::Message {
        compressed: true, ..
    } = start
    {
        return Route::Refused(consumer_error(
            Code::Unimplemented,
            "compressed messages are not carried: send them uncompressed",
        ));
    }
    let upload = Upload {
        first: read,
        read: progress,
        rest: body,
    };
    Route::Framed(parts, upload)
}

/// Carries the unary call whose request starts with `upload` as a framed call, and
/// answers the client: the application's message as it comes, then its status.
pub(super) async fn call(
    s: Arc<Consumer>,
    path: String,
    (remote, peer_cert): (Option<SocketAddr>, Option<[u8; 32]>),
    headers: &HeaderMap,
    mut upload: Upload,
) -> http::Response<tonic::body::Body> {
    let md = MetadataMap::from_headers(headers.clone());
    let call = match call_of(&s, &path, remote, peer_cert, &md) {
        Ok(c) => c,
        Err(status) => return status.into_http(),
    };
    let trace = call.trace.clone();
    if let Ok(conf) = s.conf.current(ErrorSource::ConsumerServer)
        && transcode::rest_entry(&conf, &call).is_some()
    {
        return consumer_error(
            Code::ResourceExhausted,
            format!(
                "a message for a REST service published from its OpenAPI document is at most {} bytes (max_message_bytes)",
                s.settings.max_message_bytes
            ),
        )
        .into_http();
    }
    // The rest of the first chunk before the call opens, as REST bodies are read.
    let (idle, max) = (
        s.settings.connection_limits.request_timeout(),
        s.settings.max_body_bytes,
    );
    if let First::Message { len, .. } = first(&upload.first)
        && u64::from(len) + PREFIX as u64 > max
    {
        return consumer_error(
            Code::ResourceExhausted,
            format!(
                "the request message is {len} bytes; at most {max} are carried (max_body_bytes)"
            ),
        )
        .into_http();
    }
    if let Err(why) = chunks::fill(
        &mut upload.rest,
        &mut upload.first,
        &mut upload.read,
        idle,
        max,
        false,
    )
    .await
    {
        return super::transfer::unread(why).into_http();
    }
    let answered = match super::transfer::call(&s, call, upload).await {
        Ok(a) => a,
        Err(status) => return status.into_http(),
    };
    let mut response = http::Response::new(tonic::body::Body::new(Answer::new(
        answered.body,
        answered.failed,
    )));
    let h = response.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    if let Ok(v) = HeaderValue::from_str(&answered.answer.message_id) {
        h.insert("lintas-message-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&trace.traceparent) {
        h.insert("traceparent", v);
    }
    response
}

/// Whether a request whose body starts with `first` travels as a framed call by its
/// size: when its message is over the servers' message size.
fn framed(first: &First, max_message_bytes: usize) -> bool {
    matches!(first, First::Message { len, .. } if *len as usize > max_message_bytes)
}

/// The answer's body for the client: the application's bytes, then trailers with its
/// status, or with why the answer failed partway.
struct Answer {
    body: Option<axum::body::Body>,
    failed: Failed,
}

impl Answer {
    fn new(body: axum::body::Body, failed: Failed) -> Self {
        Answer {
            body: Some(body),
            failed,
        }
    }

    fn trailers(status: &Status) -> HeaderMap {
        let mut map = HeaderMap::new();
        if status.add_header(&mut map).is_err() {
            map.insert("grpc-status", HeaderValue::from_static("13"));
        }
        map
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            let Some(body) = self.body.as_mut() else {
                return Poll::Ready(None);
            };
            let status = match std::task::ready!(Pin::new(body).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.has_remaining() => {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    // Empty data and the body's own trailers are not passed on.
                    _ => continue,
                },
                None => Status::ok(""),
                Some(Err(e)) => self
                    .failed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take()
                    .unwrap_or_else(|| {
                        consumer_error(Code::DataLoss, format!("the answer was cut off: {e}"))
                    }),
            };
            self.body = None;
            return Poll::Ready(Some(Ok(Frame::trailers(Self::trailers(&status)))));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_decides_how_a_unary_call_travels() {
        let max = 4 << 20;
        let cases: &[(&[u8], First, bool)] = &[
            (b"", First::Short, false),
            (&[0, 0, 0], First::Short, false),
            (
                &[0, 0, 0, 0, 0],
                First::Message {
                    compressed: false,
                    len: 0,
                },
                false,
            ),
            (
                &[0, 0, 0x40, 0, 0, 9],
                First::Message {
                    compressed: false,
                    len: 4 << 20,
                },
                false,
            ),
            (
                &[0, 0, 0x40, 0, 1],
                First::Message {
                    compressed: false,
                    len: (4 << 20) + 1,
                },
                true,
            ),
            (
                &[1, 0x40, 0, 0, 0],
                First::Message {
                    compressed: true,
                    len: 1 << 30,
                },
                true,
            ),
            (
                &[0, 0xff, 0xff, 0xff, 0xff],
                First::Message {
                    compressed: false,
                    len: u32::MAX,
                },
                true,
            ),
        ];
        for (bytes, want, is_framed) in cases {
            let got = first(bytes);
            assert_eq!(&got, want, "{bytes:?}");
            assert_eq!(framed(&got, max), *is_framed, "{bytes:?}");
        }
    }

    #[tokio::test]
    async fn a_replayed_body_gives_back_what_was_read_then_the_rest() {
        let mut body = axum::body::Body::from(vec![0u8, 0, 0, 0, 3, b'a', b'b', b'c']);
        let (read, progress) = peek(&mut body, Duration::from_secs(1)).await.unwrap();
        assert!(read.len() >= PREFIX);
        assert_eq!(progress.total as usize, read.len());
        let replayed = Replayed {
            first: Some(read.freeze()),
            rest: body,
        };
        let all = replayed.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], &[0u8, 0, 0, 0, 3, b'a', b'b', b'c']);
    }

    #[tokio::test]
    async fn an_answer_ends_with_its_status_or_why_it_failed() {
        // Whole: the bytes, then grpc-status 0.
        let ok = Answer::new(axum::body::Body::from("abc"), Failed::default());
        let frames: Vec<_> =
            tokio_stream::StreamExt::collect(http_body_util::BodyStream::new(ok)).await;
        assert_eq!(frames.len(), 2);
        let t = frames[1].as_ref().unwrap().trailers_ref().unwrap();
        assert_eq!(t["grpc-status"], "0");
        // Cut off after the provider's close said why: that status.
        let failed = Failed::default();
        *failed.lock().unwrap() = Some(Status::permission_denied("revoked"));
        let stream = tokio_stream::iter(vec![
            Ok::<_, std::io::Error>(Bytes::from_static(b"ab")),
            Err(std::io::Error::other("gone")),
        ]);
        let cut = Answer::new(axum::body::Body::from_stream(stream), failed);
        let frames: Vec<_> =
            tokio_stream::StreamExt::collect(http_body_util::BodyStream::new(cut)).await;
        let t = frames
            .last()
            .unwrap()
            .as_ref()
            .unwrap()
            .trailers_ref()
            .unwrap();
        assert_eq!(t["grpc-status"], "7");
        // Cut off for no known reason: DATA_LOSS.
        let stream = tokio_stream::iter(vec![Err::<Bytes, _>(std::io::Error::other("gone"))]);
        let cut = Answer::new(axum::body::Body::from_stream(stream), Failed::default());
        let frames: Vec<_> =
            tokio_stream::StreamExt::collect(http_body_util::BodyStream::new(cut)).await;
        let t = frames
            .last()
            .unwrap()
            .as_ref()
            .unwrap()
            .trailers_ref()
            .unwrap();
        assert_eq!(t["grpc-status"], "15");
    }
}
