//! What every lintas daemon's management plane shares: local users with Argon2id
//! passwords and API keys, each holding roles after X-Road's ([`role`], [`users`]);
//! console sessions and login throttling ([`sessions`]); the append-only, hash-chained
//! admin audit log ([`audit`]); and the HTTPS edge of the management API ([`web`],
//! [`api`]): who is calling, CSRF, role checks that are audited, errors as JSON, the
//! routes for sessions, users, keys and the audit log, and the generated OpenAPI document.
//!
//! Each daemon adds its own typed operations as further routes of the same API.
#![forbid(unsafe_code)]

pub mod api;
pub mod audit;
pub mod b64;
pub mod console;
pub mod i18n;
pub mod role;
pub mod sessions;
pub mod users;
pub mod web;

pub use audit::{Action, AuditLog};
pub use role::{Allowed, Role};
pub use users::Users;
pub use web::{ApiError, Caller, Plane};

/// The throttling key of a login's source: its address (an IPv6 /64 counts as one).
fn sessions_source(from: std::net::SocketAddr) -> std::net::IpAddr {
    lintas_transport::admission::source_of(from.ip())
}
