//! The adapter's gRPC server: the configured service (dynamic messages), server
//! reflection and health.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use lintas_transport::RawCodec;
use prost::Message;
use prost_reflect::{DynamicMessage, MethodDescriptor};
use tonic::codegen::http;
use tonic::server::UnaryService;
use tonic::{Request, Response, Status};

use crate::{Adapter, AdapterError, Backend};

/// Largest request or response message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The listeners an adapter serves on, already bound.
pub struct Listeners {
    /// The service, reflection and health (plain gRPC, for the security server).
    pub grpc: tokio::net::TcpListener,
    /// `/metrics`, `/healthz` and `/readyz`.
    pub ops: tokio::net::TcpListener,
}

/// Serves `adapter`'s service, answering through `backend`, and the operations listener
/// until `shutdown` completes.
pub async fn serve(
    listeners: Listeners,
    adapter: &Adapter,
    backend: Arc<dyn Backend>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), AdapterError> {
    let serve_error = |e: &dyn std::fmt::Display| AdapterError::Serve(e.to_string());
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_file_descriptor_set(adapter.descriptor_set.clone())
        .build_v1()
        .map_err(|e| serve_error(&e))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_file_descriptor_set(adapter.descriptor_set.clone())
        .build_v1alpha()
        .map_err(|e| serve_error(&e))?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status(
            adapter.service.full_name(),
            tonic_health::ServingStatus::Serving,
        )
        .await;
    let methods = adapter
        .service
        .methods()
        .map(|m| {
            (
                format!("/{}/{}", adapter.service.full_name(), m.name()),
                m.clone(),
            )
        })
        .collect();
    let endpoint = Endpoint {
        methods: Arc::new(methods),
        backend,
    };
    let routes = tonic::service::Routes::new(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .prepare()
        .into_axum_router()
        .fallback_service(endpoint);
    let limits = lintas_transport::Limits::default();
    let ops = lintas_ops::Ops {
        health: lintas_ops::Health::new(),
        metrics: lintas_ops::Metrics::new("adapter"),
    };
    // The adapter holds no state of its own: it is ready while it serves. Its backend's
    // failures show as the service's error codes.
    ops.health
        .component("service", lintas_ops::Condition::Ready);
    ops.metrics.health(ops.health.clone());
    let grpc_admission = lintas_transport::Admission::new("grpc", limits);
    let ops_admission = lintas_transport::Admission::new("ops", limits);
    ops.metrics
        .listeners(vec![grpc_admission.clone(), ops_admission.clone()]);
    let requests = lintas_ops::grpc::GrpcMetricsLayer::new(
        &ops.metrics,
        &[adapter.service.full_name(), "grpc.health.v1.Health"],
    );
    let stop = lintas_transport::Stop::on(shutdown);
    let grpc = lintas_transport::grpc_server(&limits)
        .layer(requests)
        .add_routes(tonic::service::Routes::from(routes))
        .serve_with_incoming_shutdown(
            lintas_transport::incoming_plain(listeners.grpc, grpc_admission),
            stop.stopped(),
        );
    let (served, ()) = tokio::join!(
        stop.part(grpc),
        stop.part(lintas_ops::serve(
            listeners.ops,
            ops_admission,
            ops,
            stop.stopped()
        ))
    );
    served.map_err(|e| serve_error(&e))
}

/// Every path that is not health or reflection: the configured service's methods.
#[derive(Clone)]
struct Endpoint {
    methods: Arc<HashMap<String, MethodDescriptor>>,
    backend: Arc<dyn Backend>,
}

impl tower::Service<http::Request<axum::body::Body>> for Endpoint {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<axum::body::Body>) -> Self::Future {
        let path = req.uri().path();
        let Some(method) = self.methods.get(path).cloned() else {
            let status = Status::unimplemented(format!("this adapter does not serve {path}"));
            return Box::pin(async move { Ok(status.into_http()) });
        };
        let backend = self.backend.clone();
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(RawCodec)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            Ok(grpc.unary(Call { method, backend }, req).await)
        })
    }
}

struct Call {
    method: MethodDescriptor,
    backend: Arc<dyn Backend>,
}

impl UnaryService<Bytes> for Call {
    type Response = Bytes;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Bytes>, Status>> + Send>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let method = self.method.clone();
        let backend = self.backend.clone();
        Box::pin(async move {
            let input =
                DynamicMessage::decode(method.input(), request.into_inner()).map_err(|e| {
                    Status::invalid_argument(format!(
                        "request is not a valid {}: {e}",
                        method.input().full_name()
                    ))
                })?;
            let output = backend.call(&method, input).await;
            match &output {
                Ok(_) => tracing::debug!(method = method.full_name(), "answered"),
                Err(s) => {
                    tracing::warn!(method = method.full_name(), code = ?s.code(), message = s.message(), "call failed")
                }
            }
            Ok(Response::new(Bytes::from(output?.encode_to_vec())))
        })
    }
}
