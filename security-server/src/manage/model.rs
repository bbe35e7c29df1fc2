//! What administration takes and returns: plain structs that every edge (the admin
//! socket, the management REST API, the console) maps to its own wire.

use serde::{Deserialize, Serialize};

mod events;
pub use events::*;

/// A service to provide (what `lintas ss service add` and `POST /api/v1/services` give).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Provider subsystem, INSTANCE/CLASS/MEMBER/SUBSYSTEM (hosted on this server).
    pub provider: String,
    /// gRPC service name (package.Service), or a REST service's code.
    pub service: String,
    /// `http://host:port`, or `https://host:port` with `ca_pem`, of the application; for
    /// a REST service the base URL of its backend.
    pub endpoint: String,
    /// PEM certificates trusted for an https endpoint.
    #[serde(default)]
    pub ca_pem: Option<String>,
    /// A REST service: calls are passed through to the backend.
    #[serde(default)]
    pub rest: bool,
    /// Encoded google.protobuf.FileDescriptorSet, base64; when absent the server asks
    /// the application by gRPC reflection.
    #[serde(default, with = "lintas_manage::b64::option")]
    #[schema(value_type = Option<String>, format = Byte)]
    pub descriptor_set: Option<Vec<u8>>,
    /// A REST service's OpenAPI 3.0 document (JSON or YAML text).
    #[serde(default)]
    pub openapi: Option<String>,
    /// Instead of `openapi`: the path under the backend's base URL where it serves the
    /// document.
    #[serde(default)]
    pub openapi_path: Option<String>,
    /// The service's messages may exceed max_message_bytes: every unary call to it
    /// travels in signed chunks.
    #[serde(default)]
    pub large_messages: bool,
    /// A topic this provider publishes events on (no endpoint); its grants say who may
    /// subscribe.
    #[serde(default)]
    pub topic: bool,
}

/// A service provided here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceInfo {
    pub provider: String,
    pub service: String,
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    pub rest: bool,
    pub large_messages: bool,
    /// A topic events are published on.
    #[serde(default)]
    pub topic: bool,
    /// From its descriptors (for a REST service with an OpenAPI document: the generated
    /// gRPC methods); empty when none are published.
    pub methods: Vec<String>,
    /// Whether descriptors are published (consumers can discover and transcode).
    pub described: bool,
}

/// What adding a service did.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceAdded {
    pub service: ServiceInfo,
    /// Why no descriptors are published, when they are not (consumers then cannot
    /// discover its methods or call it by REST).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_descriptors: Option<String>,
}

/// Who may call what: one access right.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GrantSpec {
    /// Provider subsystem hosted here.
    pub provider: String,
    pub service: String,
    /// A client (INSTANCE/CLASS/MEMBER[/SUBSYSTEM]) or a global group (`group:CODE`).
    pub subject: String,
    /// One method (for a REST service an HTTP method); absent for every method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// For a REST service: a path pattern (`/persons/*`, `/persons/**`); absent for any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// How often clients may call a service, or one of its methods: a token bucket per
/// client, holding `burst` calls and refilled at `rate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QuotaSpec {
    /// Provider subsystem hosted here.
    pub provider: String,
    pub service: String,
    /// One method (for a REST service an HTTP method); absent for the service's calls
    /// together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// One client (INSTANCE/CLASS/MEMBER[/SUBSYSTEM]); absent for every client, each on
    /// its own. A client's own quota replaces the one for every client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Calls per period: `10/s`, `600/min`, `5000/h`, `100000/day`, `1/week`,
    /// `1/month`, `100/30s`.
    pub rate: String,
    /// Calls that may come at once; absent when setting: the rate's number of calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// Which quota: its service, method and client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct QuotaKey {
    pub provider: String,
    pub service: String,
    pub method: Option<String>,
    pub client: Option<String>,
}

/// A local application's TLS client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClientCertInfo {
    /// The client it may act for.
    pub client: String,
    /// SHA-256 of the certificate, hex.
    pub fingerprint: String,
    /// Unix seconds.
    pub not_after: i64,
}

/// A client certificate to register.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientCertSpec {
    pub client: String,
    /// The certificate, PEM.
    pub certificate_pem: String,
}

/// Which page of a list: items whose text contains `filter`, at most `page_size`
/// (default 500, at most 5000), after `page_token`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[serde(default)]
    pub filter: String,
    #[serde(default)]
    pub page_size: u32,
    #[serde(default)]
    pub page_token: String,
}

/// One page of a list.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass as `page_token` for the next page; absent after the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// Maintenance mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceState {
    pub on: bool,
    /// The operator's reason (one line), while on.
    #[serde(default)]
    pub reason: String,
}

/// Readiness, as `/readyz` says it, with maintenance.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthInfo {
    pub ready: bool,
    pub components: Vec<HealthComponent>,
    pub maintenance: MaintenanceState,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HealthComponent {
    pub name: String,
    /// `ready`, `warning` or `not_ready`.
    pub state: String,
    #[serde(default)]
    pub reason: String,
}

/// The global configuration this server holds.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConfStatus {
    pub serial: u64,
    /// Unix seconds.
    pub generated_at: i64,
    pub expires_at: i64,
    pub members: usize,
    pub servers: usize,
}

/// The message log's state.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogStatus {
    pub records: u64,
    /// The newest checkpoint's size and time (Unix ms).
    pub checkpoint_size: u64,
    pub checkpoint_unix_ms: i64,
    /// The size the witness holds.
    pub witnessed_size: u64,
    /// The newest time-stamped checkpoint's size.
    pub timestamped_size: u64,
    pub seconds_without_timestamp: i64,
    pub timestamp_failures: u64,
    /// The server refuses calls: it has been without a time-stamp too long.
    pub failing_closed: bool,
    pub timestamp_fail_closed_secs: i64,
}

/// Which exchanges' evidence to export: every given field must match, at least one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct EvidenceQuery {
    #[serde(default)]
    pub message_id: String,
    /// The calling client, INSTANCE/CLASS/MEMBER/SUBSYSTEM.
    #[serde(default)]
    pub client: String,
    /// The provider, INSTANCE/CLASS/MEMBER/SUBSYSTEM.
    #[serde(default)]
    pub service_provider: String,
    /// Record times, Unix milliseconds.
    #[serde(default)]
    pub from_unix_ms: i64,
    #[serde(default)]
    pub to_unix_ms: i64,
    /// Include the message bodies still kept.
    #[serde(default)]
    pub with_bodies: bool,
    /// `/evidence/bundles`: exchanges per bundle (default and at most 10,000).
    #[serde(default)]
    pub exchanges_per_bundle: u32,
}

/// Which operational-monitoring records: exchanges started in [from, to) (Unix ms),
/// optionally of one client or service, after `cursor`, at most `limit` (default 100).
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OpQuery {
    #[serde(default)]
    pub from_unix_ms: i64,
    #[serde(default)]
    pub to_unix_ms: i64,
    #[serde(default)]
    pub client: String,
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub cursor: String,
    #[serde(default)]
    pub limit: u32,
}

/// One exchange this server took part in (never bodies).
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OpRecord {
    pub time_unix_ms: i64,
    /// `consumer` or `provider`.
    pub side: String,
    pub server: String,
    pub message_id: String,
    pub client: String,
    pub provider: String,
    pub service: String,
    pub method: String,
    pub peer_server: String,
    pub trace_id: String,
    pub user_id: String,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// The gRPC status code's name.
    pub code: String,
    /// consumer-server, provider-server or provider-app, for an error.
    pub error_source: String,
    /// Microseconds.
    pub total_us: u64,
    pub signing_us: u64,
    pub durable_us: u64,
    pub peer_us: u64,
    pub app_us: u64,
    pub unverified: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OpPage {
    pub records: Vec<OpRecord>,
    /// Pass as `cursor` for the next page; absent when no more records follow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

// The admin socket's messages read as these structs, so that the command line's
// `--json` prints what the management API answers.

impl From<lintas_proto::ss::v1::LogStatusReply> for LogStatus {
    fn from(s: lintas_proto::ss::v1::LogStatusReply) -> Self {
        LogStatus {
            records: s.records,
            checkpoint_size: s.checkpoint_size,
            checkpoint_unix_ms: s.checkpoint_unix_ms,
            witnessed_size: s.witnessed_size,
            timestamped_size: s.timestamped_size,
            seconds_without_timestamp: s.seconds_without_timestamp,
            timestamp_failures: s.timestamp_failures,
            failing_closed: s.failing_closed,
            timestamp_fail_closed_secs: s.timestamp_fail_closed_secs,
        }
    }
}

impl From<lintas_proto::ss::v1::Service> for ServiceInfo {
    fn from(s: lintas_proto::ss::v1::Service) -> Self {
        ServiceInfo {
            provider: s.provider,
            service: s.service,
            endpoint: s.endpoint,
            ca_pem: (!s.ca_pem.is_empty()).then_some(s.ca_pem),
            rest: s.rest,
            large_messages: s.large_messages,
            topic: s.topic,
            methods: s.methods,
            described: s.described,
        }
    }
}

impl From<lintas_proto::ss::v1::ClientCert> for ClientCertInfo {
    fn from(c: lintas_proto::ss::v1::ClientCert) -> Self {
        ClientCertInfo {
            client: c.client,
            fingerprint: c.fingerprint,
            not_after: c.not_after,
        }
    }
}

impl From<lintas_proto::ss::v1::Grant> for GrantSpec {
    fn from(g: lintas_proto::ss::v1::Grant) -> Self {
        let some = |s: String| (!s.is_empty()).then_some(s);
        GrantSpec {
            provider: g.provider,
            service: g.service,
            subject: g.subject,
            method: some(g.method),
            path: some(g.path),
        }
    }
}

impl From<QuotaSpec> for QuotaKey {
    fn from(q: QuotaSpec) -> Self {
        QuotaKey {
            provider: q.provider,
            service: q.service,
            method: q.method,
            client: q.client,
        }
    }
}

impl From<lintas_proto::ss::v1::Quota> for QuotaSpec {
    fn from(q: lintas_proto::ss::v1::Quota) -> Self {
        let some = |s: String| (!s.is_empty()).then_some(s);
        QuotaSpec {
            provider: q.provider,
            service: q.service,
            method: some(q.method),
            client: some(q.client),
            rate: q.rate,
            burst: (q.burst != 0).then_some(q.burst),
        }
    }
}

impl From<QuotaSpec> for lintas_proto::ss::v1::Quota {
    fn from(q: QuotaSpec) -> Self {
        lintas_proto::ss::v1::Quota {
            provider: q.provider,
            service: q.service,
            method: q.method.unwrap_or_default(),
            client: q.client.unwrap_or_default(),
            rate: q.rate,
            burst: q.burst.unwrap_or_default(),
        }
    }
}
