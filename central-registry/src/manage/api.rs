//! The registry's management REST API: each operation checked against the caller's roles
//! and recorded in the admin audit log, with the shared routes (sessions, users, API
//! keys, the audit log) and the generated OpenAPI document.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use lintas_manage::web::{Body, Params};
use lintas_manage::{Allowed, ApiError, Caller, Plane, Role};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Manage;
use super::model::*;

/// Who may decide registrations and keep members, subsystems, groups and enrolment
/// tokens.
pub const REGISTRATION: Allowed = Allowed(&[Role::SystemAdministrator, Role::RegistrationOfficer]);
/// Who may revoke certificates, list time-stamping authorities and issue administrator
/// certificates.
pub const SECURITY: Allowed = Allowed(&[Role::SystemAdministrator, Role::SecurityOfficer]);

/// The API's state.
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

/// Registration requests (pending first to decide).
#[utoipa::path(get, path = "/api/v1/registrations", tag = "registrations", params(RegistrationQuery),
    responses((status = 200, body = Page<Registration>), (status = 401, body = ApiError)))]
async fn registrations(
    State(api): State<Api>,
    _caller: Caller,
    Params(q): Params<RegistrationQuery>,
) -> Result<Json<Page<Registration>>, ApiError> {
    Ok(Json(api.manage.registrations(q).await?))
}

/// Approves a request: certificates are issued and the server is published.
#[utoipa::path(post, path = "/api/v1/registrations/{id}/approve", tag = "registrations",
    params(("id" = String, Path, description = "request id")),
    responses((status = 200, body = Registration), (status = 403, body = ApiError),
        (status = 404, body = ApiError), (status = 412, body = ApiError)))]
async fn approve(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Registration>, ApiError> {
    let target = format!("registration {id}");
    let op = api.manage.approve(&caller.actor, &id);
    Ok(Json(
        audited(
            &api,
            &caller,
            REGISTRATION,
            "registration.approve",
            &target,
            op,
        )
        .await?,
    ))
}

/// Rejects a request with a reason the server's operator sees.
#[utoipa::path(post, path = "/api/v1/registrations/{id}/reject", tag = "registrations",
    params(("id" = String, Path, description = "request id")), request_body = Rejection,
    responses((status = 200, body = Registration), (status = 403, body = ApiError),
        (status = 404, body = ApiError)))]
async fn reject(
    State(api): State<Api>,
    caller: Caller,
    Path(id): Path<String>,
    Body(r): Body<Rejection>,
) -> Result<Json<Registration>, ApiError> {
    let target = format!("registration {id}: {}", r.reason);
    let op = api.manage.reject(&caller.actor, &id, &r.reason);
    Ok(Json(
        audited(
            &api,
            &caller,
            REGISTRATION,
            "registration.reject",
            &target,
            op,
        )
        .await?,
    ))
}

/// Members and their subsystems.
#[utoipa::path(get, path = "/api/v1/members", tag = "members", params(ListQuery),
    responses((status = 200, body = Page<Member>), (status = 401, body = ApiError)))]
async fn members(
    State(api): State<Api>,
    _caller: Caller,
    Params(q): Params<ListQuery>,
) -> Result<Json<Page<Member>>, ApiError> {
    Ok(Json(api.manage.members(q).await?))
}

/// Adds a member organisation.
#[utoipa::path(post, path = "/api/v1/members", tag = "members", request_body = NewMember,
    responses((status = 201, body = Published), (status = 400, body = ApiError),
        (status = 403, body = ApiError), (status = 409, body = ApiError)))]
async fn add_member(
    State(api): State<Api>,
    caller: Caller,
    Body(m): Body<NewMember>,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    let target = format!("member {} ({})", m.id, m.name);
    let op = api.manage.add_member(&caller.actor, m);
    let done = audited(&api, &caller, REGISTRATION, "member.add", &target, op).await?;
    Ok((StatusCode::CREATED, Json(done)))
}

/// Adds a subsystem to a member.
#[utoipa::path(post, path = "/api/v1/subsystems", tag = "members", request_body = NewSubsystem,
    responses((status = 201, body = Published), (status = 400, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError)))]
async fn add_subsystem(
    State(api): State<Api>,
    caller: Caller,
    Body(s): Body<NewSubsystem>,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    let target = format!("subsystem {}", s.id);
    let op = api.manage.add_subsystem(&caller.actor, s);
    let done = audited(&api, &caller, REGISTRATION, "subsystem.add", &target, op).await?;
    Ok((StatusCode::CREATED, Json(done)))
}

/// Security servers with their certificates.
#[utoipa::path(get, path = "/api/v1/servers", tag = "servers", params(ListQuery),
    responses((status = 200, body = Page<Server>), (status = 401, body = ApiError)))]
async fn servers(
    State(api): State<Api>,
    _caller: Caller,
    Params(q): Params<ListQuery>,
) -> Result<Json<Page<Server>>, ApiError> {
    Ok(Json(api.manage.servers(q).await?))
}

/// Revokes a certificate (published at once).
#[utoipa::path(post, path = "/api/v1/revocations", tag = "servers", request_body = NewRevocation,
    responses((status = 201, body = Published), (status = 403, body = ApiError),
        (status = 404, body = ApiError)))]
async fn revoke(
    State(api): State<Api>,
    caller: Caller,
    Body(v): Body<NewRevocation>,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    let target = format!("certificate {}: {}", v.serial, v.reason);
    let op = api.manage.revoke(&caller.actor, v);
    let done = audited(&api, &caller, SECURITY, "certificate.revoke", &target, op).await?;
    Ok((StatusCode::CREATED, Json(done)))
}

/// Global groups.
#[utoipa::path(get, path = "/api/v1/groups", tag = "groups",
    responses((status = 200, body = Vec<Group>), (status = 401, body = ApiError)))]
async fn groups(State(api): State<Api>, _caller: Caller) -> Json<Vec<Group>> {
    Json(api.manage.groups())
}

/// Adds a global group.
#[utoipa::path(post, path = "/api/v1/groups", tag = "groups", request_body = NewGroup,
    responses((status = 201, body = Published), (status = 403, body = ApiError),
        (status = 409, body = ApiError)))]
async fn add_group(
    State(api): State<Api>,
    caller: Caller,
    Body(g): Body<NewGroup>,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    let target = format!("group {}", g.code);
    let op = api.manage.add_group(&caller.actor, g);
    let done = audited(&api, &caller, REGISTRATION, "group.add", &target, op).await?;
    Ok((StatusCode::CREATED, Json(done)))
}

/// Adds a client to a group.
#[utoipa::path(post, path = "/api/v1/groups/{code}/members", tag = "groups",
    params(("code" = String, Path, description = "group code")), request_body = GroupMember,
    responses((status = 201, body = Published), (status = 403, body = ApiError),
        (status = 404, body = ApiError)))]
async fn add_group_member(
    State(api): State<Api>,
    caller: Caller,
    Path(code): Path<String>,
    Body(m): Body<GroupMember>,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    let target = format!("group {code} + {}", m.client);
    let op = api
        .manage
        .set_group_member(&caller.actor, &code, &m.client, true);
    let done = audited(&api, &caller, REGISTRATION, "group.member.add", &target, op).await?;
    Ok((StatusCode::CREATED, Json(done)))
}

/// Removes a client from a group.
#[utoipa::path(delete, path = "/api/v1/groups/{code}/members", tag = "groups",
    params(("code" = String, Path, description = "group code"), GroupMember),
    responses((status = 200, body = Published), (status = 403, body = ApiError),
        (status = 404, body = ApiError)))]
async fn remove_group_member(
    State(api): State<Api>,
    caller: Caller,
    Path(code): Path<String>,
    Params(m): Params<GroupMember>,
) -> Result<Json<Published>, ApiError> {
    let target = format!("group {code} - {}", m.client);
    let op = api
        .manage
        .set_group_member(&caller.actor, &code, &m.client, false);
    Ok(Json(
        audited(
            &api,
            &caller,
            REGISTRATION,
            "group.member.remove",
            &target,
            op,
        )
        .await?,
    ))
}

/// Makes a one-time enrolment token for a server (shown once).
#[utoipa::path(post, path = "/api/v1/enrolment-tokens", tag = "registrations", request_body = NewToken,
    responses((status = 201, body = Token), (status = 400, body = ApiError),
        (status = 403, body = ApiError)))]
async fn create_token(
    State(api): State<Api>,
    caller: Caller,
    Body(t): Body<NewToken>,
) -> Result<(StatusCode, Json<Token>), ApiError> {
    let target = format!("enrolment token for {}", t.server_id);
    let op = api.manage.create_token(&caller.actor, t);
    let done = audited(&api, &caller, REGISTRATION, "token.add", &target, op).await?;
    Ok((StatusCode::CREATED, Json(done)))
}

/// Time-stamping authorities listed besides the registry's own.
#[utoipa::path(get, path = "/api/v1/timestamping-authorities", tag = "timestamping",
    responses((status = 200, body = Vec<Tsa>), (status = 401, body = ApiError)))]
async fn tsas(State(api): State<Api>, _caller: Caller) -> Json<Vec<Tsa>> {
    Json(api.manage.tsas())
}

/// Lists a time-stamping authority (or replaces the one of that name).
#[utoipa::path(post, path = "/api/v1/timestamping-authorities", tag = "timestamping",
    request_body = NewTsa,
    responses((status = 201, body = Published), (status = 400, body = ApiError),
        (status = 403, body = ApiError)))]
async fn add_tsa(
    State(api): State<Api>,
    caller: Caller,
    Body(t): Body<NewTsa>,
) -> Result<(StatusCode, Json<Published>), ApiError> {
    let target = format!("time-stamping authority {} at {}", t.name, t.url);
    let op = api.manage.add_tsa(&caller.actor, t);
    let done = audited(&api, &caller, SECURITY, "tsa.add", &target, op).await?;
    Ok((StatusCode::CREATED, Json(done)))
}

/// Removes a time-stamping authority from the configuration.
#[utoipa::path(delete, path = "/api/v1/timestamping-authorities/{name}", tag = "timestamping",
    params(("name" = String, Path, description = "its name")),
    responses((status = 200, body = Published), (status = 403, body = ApiError),
        (status = 404, body = ApiError)))]
async fn remove_tsa(
    State(api): State<Api>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<Published>, ApiError> {
    let target = format!("time-stamping authority {name}");
    let op = api.manage.remove_tsa(&caller.actor, &name);
    Ok(Json(
        audited(&api, &caller, SECURITY, "tsa.remove", &target, op).await?,
    ))
}

/// Issues an administrator certificate (for `lintas registry admin`) for a CSR's key.
#[utoipa::path(post, path = "/api/v1/admin-certificates", tag = "servers",
    request_body = AdminCertRequest,
    responses((status = 201, body = AdminCert), (status = 400, body = ApiError),
        (status = 403, body = ApiError)))]
async fn issue_admin_cert(
    State(api): State<Api>,
    caller: Caller,
    Body(req): Body<AdminCertRequest>,
) -> Result<(StatusCode, Json<AdminCert>), ApiError> {
    let target = format!("administrator certificate for {}", req.name);
    let op = api.manage.issue_admin_cert(&caller.actor, req);
    let done = audited(&api, &caller, SECURITY, "admin-cert.add", &target, op).await?;
    Ok((StatusCode::CREATED, Json(done)))
}

/// The configuration being published, what it holds, and readiness.
#[utoipa::path(get, path = "/api/v1/configuration", tag = "status",
    responses((status = 200, body = Generation), (status = 401, body = ApiError)))]
async fn configuration(State(api): State<Api>, _caller: Caller) -> Json<Generation> {
    Json(api.manage.generation())
}

/// Every generation of the configuration this registry published, newest first: when,
/// by whom and why, and the SHA-256 of the signed document.
#[utoipa::path(get, path = "/api/v1/configuration/generations", tag = "status",
    params(ListQuery),
    responses((status = 200, body = Page<ConfGeneration>), (status = 400, body = ApiError),
        (status = 401, body = ApiError)))]
async fn generations(
    State(api): State<Api>,
    _caller: Caller,
    Params(q): Params<ListQuery>,
) -> Result<Json<Page<ConfGeneration>>, ApiError> {
    Ok(Json(api.manage.generations(q).await?))
}

/// The whole API and the console.
pub fn router(manage: Arc<Manage>) -> axum::Router {
    let routes = OpenApiRouter::new()
        .merge(lintas_manage::api::routes())
        .routes(routes!(registrations))
        .routes(routes!(approve))
        .routes(routes!(reject))
        .routes(routes!(members, add_member))
        .routes(routes!(add_subsystem))
        .routes(routes!(servers))
        .routes(routes!(revoke))
        .routes(routes!(groups, add_group))
        .routes(routes!(add_group_member, remove_group_member))
        .routes(routes!(create_token))
        .routes(routes!(tsas, add_tsa))
        .routes(routes!(remove_tsa))
        .routes(routes!(issue_admin_cert))
        .routes(routes!(configuration))
        .routes(routes!(generations));
    lintas_manage::api::finish(
        routes,
        "lintas registry management API",
        super::console::routes(),
        Api { manage },
    )
}
