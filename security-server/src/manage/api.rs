//! The security server's management REST API: its typed operations over HTTPS, each
//! checked against the caller's roles and recorded in the admin audit log. Served with
//! the routes every daemon shares (sessions, users, API keys, the audit log) and the
//! OpenAPI document generated from the annotations here.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRef, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use lintas_manage::web::{Body, Params};
use lintas_manage::{Allowed, ApiError, Caller, Plane, Role};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Manage;
use super::model::*;

/// Who may provide services and grant access to them.
pub const SERVICES: Allowed = Allowed(&[Role::SystemAdministrator, Role::ServiceAdministrator]);
/// Who may register local applications' certificates.
pub const CERTIFICATES: Allowed = Allowed(&[Role::SystemAdministrator, Role::SecurityOfficer]);
/// Who may put the server in maintenance.
pub const MAINTENANCE: Allowed = Allowed(&[Role::SystemAdministrator]);
/// Who may export evidence (it names clients and may hold bodies).
pub const EVIDENCE: Allowed = Allowed(&[
    Role::SystemAdministrator,
    Role::SecurityOfficer,
    Role::Auditor,
]);

/// The API's state: the operations and the plane.
#[derive(Clone)]
pub struct Api {
    pub manage: Arc<Manage>,
}

impl FromRef<Api> for Arc<Plane> {
    fn from_ref(api: &Api) -> Self {
        api.manage.plane.clone()
    }
}

/// Checks the role, runs the change, records it.
async fn audited<T>(
    api: &Api,
    caller: &Caller,
    allowed: Allowed,
    action: &str,
    target: &str,
    op: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    caller
        .audited(&api.manage.plane, allowed, action, target, op)
        .await
}

mod events;
mod quotas;
pub use quotas::quota_target;

/// The audit log's words for a grant.
pub fn grant_target(g: &GrantSpec) -> String {
    let mut t = format!("{} {} for {}", g.provider, g.service, g.subject);
    if let Some(m) = &g.method {
        t.push_str(&format!(" method {m}"));
    }
    if let Some(p) = &g.path {
        t.push_str(&format!(" path {p}"));
    }
    t
}

/// Services provided here.
#[utoipa::path(get, path = "/api/v1/services", tag = "services", params(ListQuery),
    responses((status = 200, body = Page<ServiceInfo>), (status = 401, body = ApiError)))]
async fn list_services(
    State(api): State<Api>,
    _caller: Caller,
    Params(q): Params<ListQuery>,
) -> Result<Json<Page<ServiceInfo>>, ApiError> {
    Ok(Json(api.manage.services(&q)?))
}

/// Provides a service (gRPC, or REST with `rest: true`).
#[utoipa::path(post, path = "/api/v1/services", tag = "services", request_body = ServiceSpec,
    responses((status = 201, body = ServiceAdded), (status = 400, body = ApiError),
        (status = 403, body = ApiError), (status = 412, body = ApiError)))]
async fn add_service(
    State(api): State<Api>,
    caller: Caller,
    Body(spec): Body<ServiceSpec>,
) -> Result<(StatusCode, Json<ServiceAdded>), ApiError> {
    let target = format!("{} {}", spec.provider, spec.service);
    let op = async { Ok(api.manage.add_service(spec).await?) };
    let added = audited(&api, &caller, SERVICES, "service.add", &target, op).await?;
    Ok((StatusCode::CREATED, Json(added)))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct ServiceKey {
    /// INSTANCE/CLASS/MEMBER/SUBSYSTEM
    provider: String,
    service: String,
}

/// Stops providing a service.
#[utoipa::path(delete, path = "/api/v1/services", tag = "services", params(ServiceKey),
    responses((status = 200, body = ServiceInfo), (status = 403, body = ApiError),
        (status = 404, body = ApiError)))]
async fn remove_service(
    State(api): State<Api>,
    caller: Caller,
    Params(key): Params<ServiceKey>,
) -> Result<Json<ServiceInfo>, ApiError> {
    let target = format!("{} {}", key.provider, key.service);
    let op = async {
        Ok(api
            .manage
            .remove_service(&key.provider, &key.service)
            .await?)
    };
    Ok(Json(
        audited(&api, &caller, SERVICES, "service.remove", &target, op).await?,
    ))
}

/// Access rights.
#[utoipa::path(get, path = "/api/v1/grants", tag = "access", params(ListQuery),
    responses((status = 200, body = Page<GrantSpec>), (status = 401, body = ApiError)))]
async fn list_grants(
    State(api): State<Api>,
    _caller: Caller,
    Params(q): Params<ListQuery>,
) -> Result<Json<Page<GrantSpec>>, ApiError> {
    Ok(Json(api.manage.grants(&q)?))
}

/// Grants a client or group access to a service, a method or a REST path.
#[utoipa::path(post, path = "/api/v1/grants", tag = "access", request_body = GrantSpec,
    responses((status = 201, body = GrantSpec), (status = 400, body = ApiError),
        (status = 403, body = ApiError), (status = 409, body = ApiError)))]
async fn add_grant(
    State(api): State<Api>,
    caller: Caller,
    Body(g): Body<GrantSpec>,
) -> Result<(StatusCode, Json<GrantSpec>), ApiError> {
    let target = grant_target(&g);
    let op = async { Ok(api.manage.grant(g).await?) };
    let granted = audited(&api, &caller, SERVICES, "grant.add", &target, op).await?;
    Ok((StatusCode::CREATED, Json(granted)))
}

/// Takes a grant back (the same fields it was given with).
#[utoipa::path(delete, path = "/api/v1/grants", tag = "access", params(GrantKey),
    responses((status = 200, body = GrantSpec), (status = 403, body = ApiError),
        (status = 404, body = ApiError)))]
async fn remove_grant(
    State(api): State<Api>,
    caller: Caller,
    Params(key): Params<GrantKey>,
) -> Result<Json<GrantSpec>, ApiError> {
    let g = GrantSpec {
        provider: key.provider,
        service: key.service,
        subject: key.subject,
        method: key.method,
        path: key.path,
    };
    let target = grant_target(&g);
    let op = async { Ok(api.manage.revoke(g).await?) };
    Ok(Json(
        audited(&api, &caller, SERVICES, "grant.remove", &target, op).await?,
    ))
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
struct GrantKey {
    provider: String,
    service: String,
    subject: String,
    method: Option<String>,
    path: Option<String>,
}

/// Local applications' TLS client certificates.
#[utoipa::path(get, path = "/api/v1/client-certs", tag = "client certificates", params(ListQuery),
    responses((status = 200, body = Page<ClientCertInfo>), (status = 401, body = ApiError)))]
async fn list_client_certs(
    State(api): State<Api>,
    _caller: Caller,
    Params(q): Params<ListQuery>,
) -> Result<Json<Page<ClientCertInfo>>, ApiError> {
    Ok(Json(api.manage.client_certs(&q)?))
}

/// Registers a local application's certificate for a client hosted here.
#[utoipa::path(post, path = "/api/v1/client-certs", tag = "client certificates",
    request_body = ClientCertSpec,
    responses((status = 201, body = ClientCertInfo), (status = 400, body = ApiError),
        (status = 403, body = ApiError), (status = 412, body = ApiError)))]
async fn add_client_cert(
    State(api): State<Api>,
    caller: Caller,
    Body(spec): Body<ClientCertSpec>,
) -> Result<(StatusCode, Json<ClientCertInfo>), ApiError> {
    let target = format!("client certificate for {}", spec.client);
    let op = async {
        let der = lintas_certs::pem::cert_from_pem(&spec.certificate_pem, "certificate_pem")
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        Ok(api.manage.add_client_cert(&spec.client, der).await?)
    };
    let cert = audited(&api, &caller, CERTIFICATES, "client-cert.add", &target, op).await?;
    Ok((StatusCode::CREATED, Json(cert)))
}

/// Removes a client certificate.
#[utoipa::path(delete, path = "/api/v1/client-certs/{fingerprint}", tag = "client certificates",
    params(("fingerprint" = String, Path, description = "SHA-256 of the certificate, hex")),
    responses((status = 200, body = ClientCertInfo), (status = 403, body = ApiError),
        (status = 404, body = ApiError)))]
async fn remove_client_cert(
    State(api): State<Api>,
    caller: Caller,
    Path(fingerprint): Path<String>,
) -> Result<Json<ClientCertInfo>, ApiError> {
    let target = format!("client certificate {fingerprint}");
    let op = async { Ok(api.manage.remove_client_cert(&fingerprint).await?) };
    Ok(Json(
        audited(
            &api,
            &caller,
            CERTIFICATES,
            "client-cert.remove",
            &target,
            op,
        )
        .await?,
    ))
}

/// Readiness with each component's state and reason, and maintenance.
#[utoipa::path(get, path = "/api/v1/health", tag = "status",
    responses((status = 200, body = HealthInfo), (status = 401, body = ApiError)))]
async fn health(State(api): State<Api>, _caller: Caller) -> Json<HealthInfo> {
    Json(api.manage.health())
}

/// The global configuration this server holds.
#[utoipa::path(get, path = "/api/v1/configuration", tag = "status",
    responses((status = 200, body = ConfStatus), (status = 401, body = ApiError),
        (status = 503, description = "no valid configuration is held", body = ApiError)))]
async fn configuration(
    State(api): State<Api>,
    _caller: Caller,
) -> Result<Json<ConfStatus>, ApiError> {
    api.manage.conf_status().map(Json).ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no valid global configuration is held (see /api/v1/health)",
        )
    })
}

/// The message log: size, checkpoints, witness, trusted time.
#[utoipa::path(get, path = "/api/v1/log", tag = "status",
    responses((status = 200, body = LogStatus), (status = 401, body = ApiError)))]
async fn log_status(State(api): State<Api>, _caller: Caller) -> Json<LogStatus> {
    Json(api.manage.log_status())
}

/// Maintenance on (with a reason) or off.
#[utoipa::path(put, path = "/api/v1/maintenance", tag = "status", request_body = MaintenanceState,
    responses((status = 200, body = MaintenanceState), (status = 400, body = ApiError),
        (status = 403, body = ApiError)))]
async fn set_maintenance(
    State(api): State<Api>,
    caller: Caller,
    Body(state): Body<MaintenanceState>,
) -> Result<Json<MaintenanceState>, ApiError> {
    let action = if state.on {
        "maintenance.on"
    } else {
        "maintenance.off"
    };
    let target = state.reason.clone();
    let op = async { Ok(api.manage.set_maintenance(state)?) };
    Ok(Json(
        audited(&api, &caller, MAINTENANCE, action, &target, op).await?,
    ))
}

/// Operational-monitoring records (one per exchange, never bodies).
#[utoipa::path(get, path = "/api/v1/opmon", tag = "monitoring", params(OpQuery),
    responses((status = 200, body = OpPage), (status = 400, body = ApiError),
        (status = 401, body = ApiError)))]
async fn opmon(
    State(api): State<Api>,
    _caller: Caller,
    Params(q): Params<OpQuery>,
) -> Result<Json<OpPage>, ApiError> {
    let page = api
        .manage
        .operational_data(lintas_proto::opmon::v1::OpQuery {
            from_unix_ms: q.from_unix_ms,
            to_unix_ms: q.to_unix_ms,
            client: q.client,
            service: q.service,
            cursor: q.cursor,
            limit: q.limit,
        })
        .await?;
    Ok(Json(OpPage {
        next_cursor: (!page.next_cursor.is_empty()).then_some(page.next_cursor),
        records: page.records.into_iter().map(op_record).collect(),
    }))
}

fn op_record(r: lintas_proto::opmon::v1::OpRecord) -> OpRecord {
    OpRecord {
        time_unix_ms: r.time_unix_ms,
        side: r.side,
        server: r.server,
        message_id: r.message_id,
        client: r.client,
        provider: r.provider,
        service: r.service,
        method: r.method,
        peer_server: r.peer_server,
        trace_id: r.trace_id,
        user_id: r.user_id,
        request_bytes: r.request_bytes,
        response_bytes: r.response_bytes,
        code: r.code,
        error_source: r.error_source,
        total_us: r.total_us,
        signing_us: r.signing_us,
        durable_us: r.durable_us,
        peer_us: r.peer_us,
        app_us: r.app_us,
        unverified: r.unverified,
    }
}

/// An evidence bundle of the matching exchanges (binary protobuf, as `lintas audit
/// verify` reads it).
#[utoipa::path(get, path = "/api/v1/evidence", tag = "evidence", params(EvidenceQuery),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, body = ApiError), (status = 403, body = ApiError),
        (status = 412, body = ApiError)))]
async fn evidence(
    State(api): State<Api>,
    caller: Caller,
    Params(q): Params<EvidenceQuery>,
) -> Result<Response, ApiError> {
    let target = evidence_target(&q);
    let disposition = format!(
        "attachment; filename=\"{}\"",
        bundle_file_name(&q.message_id)
    );
    let query = lintas_proto::ss::v1::EvidenceQuery {
        message_id: q.message_id,
        client: q.client,
        service_provider: q.service_provider,
        from_unix_ms: q.from_unix_ms,
        to_unix_ms: q.to_unix_ms,
        with_bodies: q.with_bodies,
        exchanges_per_bundle: 0,
    };
    let op = async { Ok(api.manage.export_evidence(&query).await?) };
    let bundle = audited(&api, &caller, EVIDENCE, "evidence.export", &target, op).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CONTENT_DISPOSITION, disposition.as_str()),
        ],
        prost::Message::encode_to_vec(&bundle),
    )
        .into_response())
}

/// The name a browser saves a bundle under: `evidence-<message id>.bundle`, with any
/// character other than a letter, a digit, `.`, `_` or `-` as `_` (the id is the
/// client's), or `evidence.bundle` for a query without one.
fn bundle_file_name(message_id: &str) -> String {
    if message_id.is_empty() {
        return "evidence.bundle".into();
    }
    let safe: String = message_id
        .chars()
        .take(100)
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '_' | '-' => c,
            _ => '_',
        })
        .collect();
    format!("evidence-{safe}.bundle")
}

/// The first line of an evidence file of several bundles (as `lintas audit export`
/// writes them); each bundle follows length-delimited.
pub const BUNDLES_MAGIC: &[u8] = b"lintas-evidence-bundles/v1\n";

/// Any number of exchanges' evidence, streamed as it is made: the line
/// `lintas-evidence-bundles/v1`, then each bundle length-delimited (the file `lintas
/// audit export` writes and `lintas audit verify` reads). A failure while streaming
/// cuts the answer short, which the verifier reports.
#[utoipa::path(get, path = "/api/v1/evidence/bundles", tag = "evidence", params(EvidenceQuery),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, body = ApiError), (status = 403, body = ApiError),
        (status = 412, body = ApiError)))]
async fn evidence_bundles(
    State(api): State<Api>,
    caller: Caller,
    Params(q): Params<EvidenceQuery>,
) -> Result<Response, ApiError> {
    use tokio_stream::StreamExt;
    let target = format!("{} (bundles)", evidence_target(&q));
    let query = lintas_proto::ss::v1::EvidenceQuery {
        message_id: q.message_id,
        client: q.client,
        service_provider: q.service_provider,
        from_unix_ms: q.from_unix_ms,
        to_unix_ms: q.to_unix_ms,
        with_bodies: q.with_bodies,
        exchanges_per_bundle: q.exchanges_per_bundle,
    };
    let per = q.exchanges_per_bundle;
    let op = async { Ok(api.manage.export_bundles(&query, per).await?) };
    let bundles = audited(&api, &caller, EVIDENCE, "evidence.export", &target, op).await?;
    let body = tokio_stream::once(Ok(bytes::Bytes::from_static(BUNDLES_MAGIC))).chain(
        tokio_stream::wrappers::ReceiverStream::new(bundles).map(|b| {
            b.map(|bundle| {
                bytes::Bytes::from(prost::Message::encode_length_delimited_to_vec(&bundle))
            })
            .map_err(|e| std::io::Error::other(e.to_string()))
        }),
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"evidence.bundles\"",
            ),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

fn evidence_target(q: &EvidenceQuery) -> String {
    let mut parts = Vec::new();
    for (name, value) in [
        ("message", &q.message_id),
        ("client", &q.client),
        ("provider", &q.service_provider),
    ] {
        if !value.is_empty() {
            parts.push(format!("{name} {value}"));
        }
    }
    if q.from_unix_ms != 0 || q.to_unix_ms != 0 {
        parts.push(format!("time {}..{}", q.from_unix_ms, q.to_unix_ms));
    }
    if q.with_bodies {
        parts.push("with bodies".into());
    }
    parts.join(", ")
}

/// The whole API: the shared routes and the security server's own.
pub fn router(manage: Arc<Manage>) -> axum::Router {
    let routes = OpenApiRouter::new()
        .merge(lintas_manage::api::routes())
        .routes(routes!(list_services, add_service, remove_service))
        .routes(routes!(list_grants, add_grant, remove_grant))
        .routes(routes!(
            quotas::list_quotas,
            quotas::set_quota,
            quotas::remove_quota
        ))
        .routes(routes!(
            events::list_subscriptions,
            events::end_subscription
        ))
        .routes(routes!(events::list_dead_letters))
        .routes(routes!(events::redeliver_dead_letters))
        .routes(routes!(events::discard_dead_letters))
        .routes(routes!(list_client_certs, add_client_cert))
        .routes(routes!(remove_client_cert))
        .routes(routes!(health))
        .routes(routes!(configuration))
        .routes(routes!(log_status))
        .routes(routes!(set_maintenance))
        .routes(routes!(opmon))
        .routes(routes!(evidence))
        .routes(routes!(evidence_bundles));
    lintas_manage::api::finish(
        routes,
        "lintas security server management API",
        super::console::routes(),
        Api { manage },
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_bundle_is_saved_under_a_name_made_of_safe_characters() {
        let long = "x".repeat(300);
        let cases = [
            ("", "evidence.bundle"),
            ("3f2a-01.b_c", "evidence-3f2a-01.b_c.bundle"),
            ("../../etc/passwd", "evidence-.._.._etc_passwd.bundle"),
            ("a\"b\r\nc;d", "evidence-a_b__c_d.bundle"),
            ("pembayaran/ü", "evidence-pembayaran__.bundle"),
        ];
        for (id, name) in cases {
            assert_eq!(super::bundle_file_name(id), name, "{id:?}");
        }
        assert_eq!(super::bundle_file_name(&long).len(), 100 + 16);
    }
}
