//! A framed unary gRPC call (`grpc_framed`), the provider's side: the application is
//! called over HTTP/2 with the request body as it came (gRPC's length prefix
//! included), and its answer is read the same way, the gRPC status from its trailers,
//! so neither message has to be whole in memory.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame};
use tonic::codegen::http::{self, HeaderMap, HeaderValue};

use super::*;

/// An answer's body, from a REST backend or a gRPC application.
pub(super) type AnswerBody =
    http_body_util::combinators::UnsyncBoxBody<Bytes, crate::chunks::BoxError>;

/// Where the answer's trailers land once its body has been read.
pub(super) type Trailers = Arc<Mutex<Option<HeaderMap>>>;

/// The application's answer: its body, and where its trailers will be.
pub(super) struct Sent {
    pub body: AnswerBody,
    pub trailers: Trailers,
}

/// Calls `service`'s application with `body` for the accepted request; its answer once
/// the headers came, or the status it answered with at once.
pub(super) async fn send(
    s: &Provider,
    accepted: &Accepted,
    service: &crate::access::ServiceEntry,
    body: crate::backend::RequestBody,
) -> Result<Sent, AppAnswer> {
    use tower::ServiceExt;
    let channel = s
        .apps
        .channel(service)
        .map_err(|st| AppAnswer::server(st.code(), st.message()))?;
    let limit = s.settings.app_timeout;
    let mut request = http::Request::builder()
        .method(http::Method::POST)
        .uri(accepted.method.to_string())
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .header("grpc-timeout", format!("{}m", limit.as_millis()))
        .body(tonic::body::Body::new(body))
        .map_err(|e| AppAnswer::server(Code::Internal, format!("method path: {e}")))?;
    for (key, v) in forwarded(&accepted.header) {
        if !v.is_empty()
            && let Ok(v) = HeaderValue::from_str(v)
        {
            request.headers_mut().insert(key, v);
        }
    }
    let unreachable = |e: &dyn std::fmt::Display| {
        AppAnswer::server(
            Code::Unavailable,
            format!("provider application unreachable: {e}"),
        )
    };
    let call = async {
        let mut channel = channel.ready_oneshot().await.map_err(|e| unreachable(&e))?;
        tower::Service::call(&mut channel, request)
            .await
            .map_err(|e| unreachable(&e))
    };
    let response = tokio::time::timeout(limit, call).await.map_err(|_| {
        AppAnswer::server(
            Code::DeadlineExceeded,
            format!(
                "provider application did not answer within {} s",
                limit.as_secs()
            ),
        )
    })??;
    let (head, body) = response.into_parts();
    if head.status != http::StatusCode::OK {
        return Err(AppAnswer::server(
            Code::Unavailable,
            format!(
                "provider application answered HTTP {} instead of gRPC",
                head.status
            ),
        ));
    }
    // A status in the headers is an answer with no message (trailers only).
    if let Some(status) = Status::from_header_map(&head.headers) {
        return Err(app_status(status));
    }
    let trailers = Trailers::default();
    let body = Trailed {
        inner: body,
        trailers: trailers.clone(),
    }
    .boxed_unsync();
    Ok(Sent { body, trailers })
}

/// The application's status once its answer's body was read: from its trailers.
pub(super) fn status(trailers: &Trailers) -> Status {
    let held = trailers.lock().unwrap_or_else(|p| p.into_inner()).take();
    held.as_ref()
        .and_then(Status::from_header_map)
        .unwrap_or_else(|| {
            Status::internal("the provider application's answer ended without a gRPC status")
        })
}

/// An answer body that keeps its trailers aside when they come.
struct Trailed {
    inner: tonic::body::Body,
    trailers: Trailers,
}

impl Body for Trailed {
    type Data = Bytes;
    type Error = crate::chunks::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        use std::task::Poll;
        match std::pin::Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_trailers() {
                Ok(trailers) => {
                    *self.trailers.lock().unwrap_or_else(|p| p.into_inner()) = Some(trailers);
                    Poll::Ready(None)
                }
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
