//! The operations plane every lintas daemon shares (the security server, the registry and
//! the adapters): one metrics registry ([`Metrics`], Prometheus text or OpenMetrics), one
//! health state whose components say why the daemon cannot serve ([`Health`]), and the
//! operations listener that serves them (`/metrics`, `/healthz`, `/readyz`) through the
//! same admission layer as every other listener.
//!
//! The daemons decide what their components and metrics are; this crate knows nothing of
//! exchanges or registrations.

#![forbid(unsafe_code)]

pub mod grpc;
pub mod health;
mod listener;
pub mod metrics;

pub use health::{Condition, Handle, Health, Report};
pub use listener::{Ops, serve};
pub use metrics::Metrics;
pub use prometheus_client;
