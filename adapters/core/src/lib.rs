//! The core of every lintas adapter: a gRPC server whose service is defined by a `.proto`
//! file compiled when the adapter starts (no generated code), handing each request as a
//! dynamic message to a [`Backend`] that speaks the legacy system's protocol.
//!
//! An adapter's configuration file has one `[adapter]` section, read here, and one
//! backend section (`[rest]`, `[soap]` or `[sql]`) that the backend's own crate reads:
//!
//! ```toml
//! [adapter]
//! listen = "127.0.0.1:7101"                  # where the security server reaches it
//! ops_listen = "127.0.0.1:7191"              # /metrics, /healthz, /readyz (default: an OS-chosen port)
//! proto = "kependudukan/v1/penduduk.proto"   # relative to an import path
//! import_paths = ["proto"]                   # relative to this file; default: its folder
//! service = "kependudukan.v1.Penduduk"
//! ```
//!
//! The adapter also serves gRPC server reflection (v1 and v1alpha) for its service, which
//! is how its security server learns the descriptors it publishes to the catalogue, and
//! the standard health service.
#![forbid(unsafe_code)]

mod config;
pub mod http;
mod server;
pub mod values;

use std::future::Future;
use std::pin::Pin;

pub use config::{Adapter, BackendSection, compile, load, method_mappings};
use prost_reflect::{DynamicMessage, MethodDescriptor};
pub use server::{Listeners, serve};
use tonic::Status;

/// What a backend's call returns.
pub type CallFuture = Pin<Box<dyn Future<Output = Result<DynamicMessage, Status>> + Send>>;

/// A legacy system behind the adapter.
pub trait Backend: Send + Sync + 'static {
    /// Answers one call of `method` (unary) with a message of its output type.
    fn call(&self, method: &MethodDescriptor, request: DynamicMessage) -> CallFuture;
}

#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    /// The configuration, the proto file or a mapping is wrong; the text says where.
    #[error("{0}")]
    Config(String),
    #[error("serving: {0}")]
    Serve(String),
}

/// A backend error for the application, with the backend's own words (bounded).
pub fn backend_status(code: tonic::Code, what: impl std::fmt::Display) -> Status {
    Status::new(code, values::shorten(&what.to_string(), 1024))
}
