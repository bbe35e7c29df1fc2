//! The HTTP edge every daemon's management API shares: who is calling (an API key or a
//! console session), CSRF checks, role checks that are written to the audit log, errors
//! as JSON, and the security headers of every answer.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};

use crate::audit::{Action, AuditLog};
use crate::role::{Allowed, Role};
use crate::sessions::{Sessions, Throttle};
use crate::users::Users;

/// The session cookie. `__Host-` makes browsers keep it only when it is Secure, has
/// `Path=/` and no domain.
pub const COOKIE: &str = "__Host-lintas-session";
/// The header an API caller with a session sends its CSRF token in.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// What every daemon's management plane holds.
pub struct Plane {
    pub users: Arc<Users>,
    pub audit: Arc<AuditLog>,
    pub sessions: Sessions,
    pub throttle: Throttle,
    /// The daemon's console: its name, words and navigation.
    pub site: &'static crate::console::Site,
}

impl Plane {
    pub fn new(
        users: Arc<Users>,
        audit: Arc<AuditLog>,
        site: &'static crate::console::Site,
    ) -> Arc<Self> {
        Arc::new(Plane {
            users,
            audit,
            sessions: Sessions::default(),
            throttle: Throttle::default(),
            site,
        })
    }
}

/// How a caller reached the plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// An API key (`Authorization: Bearer …`).
    ApiKey,
    /// A console session cookie.
    Session,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `user:NAME` or `api-key:ID (NAME)`, as the audit log names them.
    pub actor: String,
    /// The user's name (for an API key: who made it).
    pub name: String,
    pub roles: Vec<Role>,
    pub via: Via,
    /// The caller's address.
    pub from: String,
    /// The session's CSRF token (sessions only).
    pub csrf: Option<String>,
    /// The session cookie (sessions only), to end it.
    pub cookie: Option<String>,
}

/// An error answer: the HTTP status, a stable code and words for people.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    /// `invalid`, `unauthenticated`, `forbidden`, `not_found`, `conflict`,
    /// `precondition_failed`, `too_many_requests`, `unavailable` or `internal`.
    pub error: String,
    pub message: String,
    /// Seconds to wait before trying again (`too_many_requests`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        let error = match status {
            StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "invalid",
            StatusCode::UNAUTHORIZED => "unauthenticated",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PRECONDITION_FAILED => "precondition_failed",
            StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            _ => "internal",
        };
        ApiError {
            status: status.as_u16(),
            error: error.into(),
            message: message.into(),
            retry_after: None,
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }
    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "log in (POST /api/v1/session) or send an API key as `Authorization: Bearer lintas_…`",
        )
    }
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (status, axum::Json(&self)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl From<crate::users::UsersError> for ApiError {
    fn from(e: crate::users::UsersError) -> Self {
        use crate::users::UsersError as E;
        let status = match &e {
            E::Invalid { .. } => StatusCode::BAD_REQUEST,
            E::Exists(_) => StatusCode::CONFLICT,
            E::NotFound(_) => StatusCode::NOT_FOUND,
            E::LastAdministrator(_) => StatusCode::PRECONDITION_FAILED,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<crate::audit::AuditError> for ApiError {
    fn from(e: crate::audit::AuditError) -> Self {
        ApiError::internal(e.to_string())
    }
}

/// A JSON request body whose refusals (not JSON, unknown or missing fields, wrong
/// content type) are answered as [`ApiError`]s.
pub struct Body<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for Body<T>
where
    axum::Json<T>:
        axum::extract::FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Body(value)),
            Err(r) => Err(ApiError::new(r.status(), r.body_text())),
        }
    }
}

/// Query parameters whose refusals are answered as [`ApiError`]s.
pub struct Params<T>(pub T);

impl<S, T> FromRequestParts<S> for Params<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Params(value)),
            Err(r) => Err(ApiError::new(r.status(), r.body_text())),
        }
    }
}

/// The value of cookie `name` in the request's headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn is_change(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn peer(parts: &Parts) -> String {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".into(), |c| c.0.to_string())
}

/// Finds the caller of a request: an API key in `Authorization: Bearer`, else the session
/// cookie. With a session, a change (any method but GET, HEAD and OPTIONS) must carry the
/// session's CSRF token in `X-CSRF-Token`, unless `form_csrf` (the console checks the
/// token in its form instead).
pub fn authenticate(plane: &Plane, parts: &Parts, form_csrf: bool) -> Result<Caller, ApiError> {
    let from = peer(parts);
    if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
        let token = auth
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(ApiError::unauthenticated)?;
        let key = plane.users.verify_api_key(token.trim()).map_err(|e| {
            let _ = plane.audit.record(Action {
                actor: "api-key".into(),
                via: "api".into(),
                from: from.clone(),
                action: "authenticate".into(),
                target: String::new(),
                outcome: format!("refused: {e}"),
            });
            ApiError::new(StatusCode::UNAUTHORIZED, e.to_string())
        })?;
        return Ok(Caller {
            actor: format!("api-key:{} ({})", key.id, key.name),
            name: key.created_by,
            roles: key.roles,
            via: Via::ApiKey,
            from,
            csrf: None,
            cookie: None,
        });
    }
    let value = cookie(&parts.headers, COOKIE).ok_or_else(ApiError::unauthenticated)?;
    let session = plane.sessions.get(value, Instant::now()).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the session has ended; log in again",
        )
    })?;
    if is_change(&parts.method) && !form_csrf {
        let sent = parts
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !same_token(sent, &session.csrf) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "a change with a session needs the session's CSRF token in X-CSRF-Token",
            ));
        }
    }
    Ok(Caller {
        actor: format!("user:{}", session.user.name),
        name: session.user.name,
        roles: session.user.roles,
        via: Via::Session,
        from,
        csrf: Some(session.csrf),
        cookie: Some(value.to_owned()),
    })
}

/// Compares a presented token with the expected one in constant time.
pub fn same_token(presented: &str, expected: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(presented.as_bytes(), expected.as_bytes())
        .is_ok()
}

impl<S> FromRequestParts<S> for Caller
where
    Arc<Plane>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        authenticate(&Arc::<Plane>::from_ref(state), parts, false)
    }
}

impl Caller {
    fn via_name(&self) -> &'static str {
        match self.via {
            Via::ApiKey => "api",
            Via::Session => "console",
        }
    }

    /// The audit entry of this caller doing `action` on `target`.
    pub fn action(&self, action: &str, target: &str, outcome: String) -> Action {
        Action {
            actor: self.actor.clone(),
            via: self.via_name().into(),
            from: self.from.clone(),
            action: action.into(),
            target: target.into(),
            outcome,
        }
    }

    /// Refuses (and records the refusal) unless the caller holds one of `allowed`.
    pub fn require(
        &self,
        plane: &Plane,
        allowed: Allowed,
        action: &str,
        target: &str,
    ) -> Result<(), ApiError> {
        if allowed.permits(&self.roles) {
            return Ok(());
        }
        let why = format!("{action} needs the role {}", allowed.names());
        plane
            .audit
            .record(self.action(action, target, format!("refused: {why}")))?;
        Err(ApiError::new(StatusCode::FORBIDDEN, why))
    }

    /// A change by this caller: refused (and recorded) without one of `allowed`, else
    /// `op` runs and its outcome is recorded before it is returned.
    pub async fn audited<T>(
        &self,
        plane: &Plane,
        allowed: Allowed,
        action: &str,
        target: &str,
        op: impl std::future::Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        self.require(plane, allowed, action, target)?;
        let done = op.await;
        self.record(plane, action, target, done)
    }

    /// Records the end of a change the caller made: `ok`, or the error.
    pub fn record<T>(
        &self,
        plane: &Plane,
        action: &str,
        target: &str,
        result: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let outcome = match &result {
            Ok(_) => "ok".to_owned(),
            Err(e) => format!("failed: {}", e.message),
        };
        plane
            .audit
            .record(self.action(action, target, outcome))
            .map_err(|e| {
                ApiError::internal(format!(
                    "{} (the change itself {})",
                    e,
                    if result.is_ok() { "was made" } else { "failed" }
                ))
            })?;
        result
    }
}

/// Adds the headers every management answer carries: no caching, no framing, no
/// sniffing, scripts and styles only from the daemon itself, HTTPS only.
pub async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let set = |h: &mut HeaderMap, name: header::HeaderName, value: &'static str| {
        h.entry(name).or_insert(HeaderValue::from_static(value));
    };
    set(h, header::CACHE_CONTROL, "no-store");
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::X_FRAME_OPTIONS, "DENY");
    set(h, header::REFERRER_POLICY, "no-referrer");
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    );
    set(h, header::STRICT_TRANSPORT_SECURITY, "max-age=31536000");
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_by_name() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-lintas-session=abc"),
        );
        headers.append(header::COOKIE, HeaderValue::from_static("b=2"));
        let cases: &[(&str, Option<&str>)] = &[
            (COOKIE, Some("abc")),
            ("a", Some("1")),
            ("b", Some("2")),
            ("lintas-session", None),
            ("c", None),
        ];
        for (name, expected) in cases {
            assert_eq!(cookie(&headers, name), *expected, "{name}");
        }
    }

    #[test]
    fn error_codes_follow_statuses() {
        let cases: &[(StatusCode, &str)] = &[
            (StatusCode::BAD_REQUEST, "invalid"),
            (StatusCode::UNAUTHORIZED, "unauthenticated"),
            (StatusCode::FORBIDDEN, "forbidden"),
            (StatusCode::NOT_FOUND, "not_found"),
            (StatusCode::CONFLICT, "conflict"),
            (StatusCode::PRECONDITION_FAILED, "precondition_failed"),
            (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            (StatusCode::BAD_GATEWAY, "internal"),
        ];
        for (status, code) in cases {
            let e = ApiError::new(*status, "x");
            assert_eq!((e.error.as_str(), e.status()), (*code, *status));
        }
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abd", "abc") && !same_token("", "abc") && !same_token("abcd", "abc"));
    }
}
