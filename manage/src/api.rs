//! The part of the management API every daemon serves alike: logging in and out, users,
//! API keys and the admin audit log. Each handler is annotated once; the OpenAPI document
//! is generated from the annotations.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::{ConnectInfo, FromRef, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::audit::{Action, AuditEntry};
use crate::role::{Allowed, Role};
use crate::sessions::Session;
use crate::users::{ApiKeyInfo, UserInfo};
use crate::web::{ApiError, Body, COOKIE, Caller, Params, Plane, Via};

/// Who may manage users and API keys.
pub const MANAGE_USERS: Allowed = Allowed(&[Role::SystemAdministrator]);
/// Who may read the list of users and the audit log.
pub const READ_AUDIT: Allowed = Allowed(&[
    Role::SystemAdministrator,
    Role::SecurityOfficer,
    Role::Auditor,
]);

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    pub name: String,
    pub password: String,
}

/// The logged-in user, and the token to send with changes (`X-CSRF-Token`).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SessionInfo {
    pub name: String,
    pub roles: Vec<Role>,
    pub csrf_token: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    pub password: String,
    pub roles: Vec<Role>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPassword {
    pub password: String,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRoles {
    pub roles: Vec<Role>,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    /// What the key is for.
    pub name: String,
    pub roles: Vec<Role>,
}

/// A new API key: the whole key is in `key`, shown this once.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreatedApiKey {
    pub info: ApiKeyInfo,
    pub key: String,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only entries older than this sequence number (0 or absent: from the newest).
    #[serde(default)]
    pub before: u64,
    /// At most this many (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Only entries whose actor, action, target, outcome or address contains this.
    #[serde(default)]
    pub filter: String,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditPage {
    /// Newest first.
    pub entries: Vec<AuditEntry>,
    /// Pass as `before` for the next page; absent after the last.
    pub next_before: Option<u64>,
}

/// The `Set-Cookie` value of a new session.
pub fn session_cookie(value: &str) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; Secure; HttpOnly; SameSite=Strict"
    ))
    .unwrap_or(HeaderValue::from_static(""))
}

/// Logs `name` in from `from` (throttled, audited) and starts a session: the cookie
/// value and the session. `via` names the edge in the audit log.
pub async fn log_in(
    plane: &Arc<Plane>,
    name: &str,
    password: &str,
    from: SocketAddr,
    via: &str,
) -> Result<(String, Session), ApiError> {
    let name: String = name.chars().take(64).collect();
    let keys = [
        format!("address {}", crate::sessions_source(from)),
        format!("user {name}"),
    ];
    let audit = |outcome: String| Action {
        actor: format!("user:{name}"),
        via: via.into(),
        from: from.to_string(),
        action: "login".into(),
        target: String::new(),
        outcome,
    };
    if let Err(wait) = plane.throttle.check(&keys, Instant::now()) {
        let secs = wait.as_secs().max(1);
        plane.audit.record(audit(format!(
            "refused: too many failed logins, wait {secs} s"
        )))?;
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many failed logins: try again in {secs} s"),
        );
        e.retry_after = Some(secs);
        return Err(e);
    }
    let (users, n, p) = (plane.users.clone(), name.clone(), password.to_owned());
    let verified = tokio::task::spawn_blocking(move || users.verify_password(&n, &p))
        .await
        .map_err(|e| ApiError::internal(format!("login task failed: {e}")))?;
    match verified {
        Ok(user) => {
            plane.throttle.succeeded(&keys);
            plane.audit.record(audit("ok".into()))?;
            Ok(plane.sessions.start(user, Instant::now()))
        }
        Err(e) => {
            plane.throttle.failed(&keys, Instant::now());
            plane.audit.record(audit(format!("refused: {e}")))?;
            Err(ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()))
        }
    }
}

/// Log in: starts a console session (an HttpOnly, Secure, SameSite=Strict cookie).
#[utoipa::path(post, path = "/api/v1/session", tag = "session", request_body = Login,
    responses((status = 200, body = SessionInfo), (status = 401, body = ApiError),
        (status = 429, description = "too many failed logins; see Retry-After", body = ApiError)))]
async fn login(
    State(plane): State<Arc<Plane>>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Body(login): Body<Login>,
) -> Result<Response, ApiError> {
    let (cookie, session) = log_in(&plane, &login.name, &login.password, from, "api").await?;
    let mut response = Json(SessionInfo {
        name: session.user.name,
        roles: session.user.roles,
        csrf_token: session.csrf,
    })
    .into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&cookie));
    Ok(response)
}

/// Who is logged in (with the session's CSRF token), or which key is calling.
#[utoipa::path(get, path = "/api/v1/session", tag = "session",
    responses((status = 200, body = SessionInfo), (status = 401, body = ApiError)))]
async fn whoami(caller: Caller) -> Json<SessionInfo> {
    Json(SessionInfo {
        name: caller.name,
        roles: caller.roles,
        csrf_token: caller.csrf.unwrap_or_default(),
    })
}

/// Log out: ends the session and clears its cookie.
#[utoipa::path(delete, path = "/api/v1/session", tag = "session",
    responses((status = 204), (status = 401, body = ApiError)))]
async fn logout(State(plane): State<Arc<Plane>>, caller: Caller) -> Result<Response, ApiError> {
    log_out(&plane, &caller)?;
    let mut headers = HeaderMap::new();
    headers.insert(header::SET_COOKIE, ended_cookie());
    Ok((StatusCode::NO_CONTENT, headers).into_response())
}

/// The `Set-Cookie` value that clears the session cookie.
pub fn ended_cookie() -> HeaderValue {
    HeaderValue::from_static(
        "__Host-lintas-session=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0",
    )
}

/// Ends the caller's session (audited).
pub fn log_out(plane: &Plane, caller: &Caller) -> Result<(), ApiError> {
    if let Some(cookie) = &caller.cookie {
        plane.sessions.end(cookie);
    }
    plane
        .audit
        .record(caller.action("logout", "", "ok".into()))?;
    Ok(())
}

/// Runs a slow users change (password hashing) on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::users::UsersError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("users task failed: {e}")))?
        .map_err(ApiError::from)
}

/// The local users.
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    responses((status = 200, body = Vec<UserInfo>), (status = 403, body = ApiError)))]
async fn list_users(
    State(plane): State<Arc<Plane>>,
    caller: Caller,
) -> Result<Json<Vec<UserInfo>>, ApiError> {
    caller.require(&plane, READ_AUDIT, "user.list", "")?;
    Ok(Json(plane.users.users()))
}

/// Adds a user.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = UserInfo), (status = 400, body = ApiError),
        (status = 403, body = ApiError), (status = 409, body = ApiError)))]
async fn add_user(
    State(plane): State<Arc<Plane>>,
    caller: Caller,
    Body(new): Body<NewUser>,
) -> Result<(StatusCode, Json<UserInfo>), ApiError> {
    let target = format!("user {} as {}", new.name, role_list(&new.roles));
    caller.require(&plane, MANAGE_USERS, "user.add", &target)?;
    let users = plane.users.clone();
    let done = blocking(move || users.add_user(&new.name, &new.password, &new.roles)).await;
    let user = caller.record(&plane, "user.add", &target, done)?;
    Ok((StatusCode::CREATED, Json(user)))
}

fn role_list(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Sets a user's password: their own (with a session), or anyone's (system
/// administrators). Ends the user's sessions.
#[utoipa::path(put, path = "/api/v1/users/{name}/password", tag = "users",
    params(("name" = String, Path, description = "user name")), request_body = NewPassword,
    responses((status = 200, body = UserInfo), (status = 400, body = ApiError),
        (status = 403, body = ApiError), (status = 404, body = ApiError)))]
async fn set_password(
    State(plane): State<Arc<Plane>>,
    caller: Caller,
    Path(name): Path<String>,
    Body(new): Body<NewPassword>,
) -> Result<Json<UserInfo>, ApiError> {
    let target = format!("user {name}");
    let own = caller.via == Via::Session && caller.name == name;
    if !own {
        caller.require(&plane, MANAGE_USERS, "user.password", &target)?;
    }
    let (users, n) = (plane.users.clone(), name.clone());
    let done = blocking(move || users.set_password(&n, &new.password)).await;
    let user = caller.record(&plane, "user.password", &target, done)?;
    plane.sessions.end_user(&name);
    Ok(Json(user))
}

/// Sets a user's roles. Ends the user's sessions.
#[utoipa::path(put, path = "/api/v1/users/{name}/roles", tag = "users",
    params(("name" = String, Path, description = "user name")), request_body = NewRoles,
    responses((status = 200, body = UserInfo), (status = 403, body = ApiError),
        (status = 404, body = ApiError), (status = 412, body = ApiError)))]
async fn set_roles(
    State(plane): State<Arc<Plane>>,
    caller: Caller,
    Path(name): Path<String>,
    Body(new): Body<NewRoles>,
) -> Result<Json<UserInfo>, ApiError> {
    let target = format!("user {name} as {}", role_list(&new.roles));
    caller.require(&plane, MANAGE_USERS, "user.roles", &target)?;
    let done = plane
        .users
        .set_roles(&name, &new.roles)
        .map_err(ApiError::from);
    let user = caller.record(&plane, "user.roles", &target, done)?;
    plane.sessions.end_user(&name);
    Ok(Json(user))
}

/// Removes a user (never the last system administrator). Ends their sessions.
#[utoipa::path(delete, path = "/api/v1/users/{name}", tag = "users",
    params(("name" = String, Path, description = "user name")),
    responses((status = 200, body = UserInfo), (status = 403, body = ApiError),
        (status = 404, body = ApiError), (status = 412, body = ApiError)))]
async fn remove_user(
    State(plane): State<Arc<Plane>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<UserInfo>, ApiError> {
    let target = format!("user {name}");
    caller.require(&plane, MANAGE_USERS, "user.remove", &target)?;
    let done = plane.users.remove_user(&name).map_err(ApiError::from);
    let user = caller.record(&plane, "user.remove", &target, done)?;
    plane.sessions.end_user(&name);
    Ok(Json(user))
}

/// The API keys (never their secrets).
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "users",
    responses((status = 200, body = Vec<ApiKeyInfo>), (status = 403, body = ApiError)))]
async fn list_api_keys(
    State(plane): State<Arc<Plane>>,
    caller: Caller,
) -> Result<Json<Vec<ApiKeyInfo>>, ApiError> {
    caller.require(&plane, READ_AUDIT, "api-key.list", "")?;
    Ok(Json(plane.users.api_keys()))
}

/// Makes an API key for automation. The whole key is in the answer, this once.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "users", request_body = NewApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 400, body = ApiError),
        (status = 403, body = ApiError)))]
async fn create_api_key(
    State(plane): State<Arc<Plane>>,
    caller: Caller,
    Body(new): Body<NewApiKey>,
) -> Result<(StatusCode, Json<CreatedApiKey>), ApiError> {
    let target = format!("API key '{}' as {}", new.name, role_list(&new.roles));
    caller.require(&plane, MANAGE_USERS, "api-key.add", &target)?;
    let done = plane
        .users
        .create_api_key(&new.name, &new.roles, &caller.actor)
        .map_err(ApiError::from);
    let (info, key) = caller.record(&plane, "api-key.add", &target, done)?;
    Ok((StatusCode::CREATED, Json(CreatedApiKey { info, key })))
}

/// Revokes an API key at once.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "users",
    params(("id" = String, Path, description = "the key's id")),
    responses((status = 200, body = ApiKeyInfo), (status = 403, body = ApiError),
        (status = 404, body = ApiError)))]
async fn revoke_api_key(
    State(plane): State<Arc<Plane>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ApiKeyInfo>, ApiError> {
    let target = format!("API key {id}");
    caller.require(&plane, MANAGE_USERS, "api-key.remove", &target)?;
    let done = plane.users.revoke_api_key(&id).map_err(ApiError::from);
    Ok(Json(caller.record(
        &plane,
        "api-key.remove",
        &target,
        done,
    )?))
}

/// The admin audit log, newest first, in pages.
#[utoipa::path(get, path = "/api/v1/audit-log", tag = "audit", params(AuditQuery),
    responses((status = 200, body = AuditPage), (status = 403, body = ApiError)))]
async fn audit_log(
    State(plane): State<Arc<Plane>>,
    caller: Caller,
    Params(q): Params<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    caller.require(&plane, READ_AUDIT, "audit-log.read", "")?;
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let entries = plane.audit.page(q.before, limit, &q.filter)?;
    let next_before = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.seq))
        .flatten()
        .filter(|seq| *seq > 1);
    Ok(Json(AuditPage {
        entries,
        next_before,
    }))
}

/// The whole admin audit log as it is on disk: JSON lines, each naming the SHA-256 of
/// the line before (`lintas audit verify-admin-log` checks the chain).
#[utoipa::path(get, path = "/api/v1/audit-log/export", tag = "audit",
    responses((status = 200, content_type = "application/jsonl", body = String),
        (status = 403, body = ApiError)))]
async fn export_audit_log(
    State(plane): State<Arc<Plane>>,
    caller: Caller,
) -> Result<Response, ApiError> {
    caller.require(&plane, READ_AUDIT, "audit-log.export", "")?;
    let bytes = plane.audit.export()?;
    plane
        .audit
        .record(caller.action("audit-log.export", "", "ok".into()))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/jsonl"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"admin-audit-log.jsonl\"",
            ),
        ],
        bytes,
    )
        .into_response())
}

/// The routes above, for a daemon whose state holds the plane.
pub fn routes<S>() -> OpenApiRouter<S>
where
    Arc<Plane>: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    OpenApiRouter::new()
        .routes(routes!(login, whoami, logout))
        .routes(routes!(list_users, add_user))
        .routes(routes!(set_password))
        .routes(routes!(set_roles))
        .routes(routes!(remove_user))
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(revoke_api_key))
        .routes(routes!(audit_log))
        .routes(routes!(export_audit_log))
}

/// Where the OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// Turns a daemon's whole API router into the served router: the OpenAPI document (with
/// its title and the two ways to authenticate) at [`OPENAPI_PATH`], the daemon's console
/// pages, and the security headers on every answer.
pub fn finish<S>(
    router: OpenApiRouter<S>,
    title: &str,
    console: axum::Router<S>,
    state: S,
) -> axum::Router
where
    S: Clone + Send + Sync + 'static,
{
    let (router, mut doc) = router.split_for_parts();
    doc.info.title = title.into();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.info.description = Some(
        "Every change is recorded in the admin audit log. Authenticate with an API key \
         (`Authorization: Bearer lintas_…`) or a console session (the cookie from \
         POST /api/v1/session, and its CSRF token in `X-CSRF-Token` on every change)."
            .into(),
    );
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "api_key",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    components.add_security_scheme(
        "session",
        SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(COOKIE))),
    );
    doc.security = Some(vec![
        utoipa::openapi::security::SecurityRequirement::new("api_key", Vec::<String>::new()),
        utoipa::openapi::security::SecurityRequirement::new("session", Vec::<String>::new()),
    ]);
    let json = doc.to_pretty_json().unwrap_or_default();
    router
        .route(
            OPENAPI_PATH,
            axum::routing::get(move || {
                let json = json.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], json) }
            }),
        )
        .merge(console)
        .layer(axum::middleware::from_fn(crate::web::security_headers))
        .with_state(state)
}
